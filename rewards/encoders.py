"""Image encoders in plain torch: a DrQ-v2-style conv net and torchvision-layout ResNets.

    enc = build_encoder("conv", image_size_px=84, embed_dim=64)        # CPU default
    enc = build_encoder("resnet50", 224, 1024, pretrained_path="vip_resnet50.pt")
    z = enc(frames)          # frames (B, 3, H, W) float in [0, 255] -> (B, embed_dim)

The ResNets use torchvision's module names (conv1, bn1, layer1.0.conv1, ..., downsample.0, fc),
so their ``state_dict`` keys are identical to ``torchvision.models.resnet*``. A lab can point
``pretrained_path`` at a locally downloaded official VIP or R3M ResNet checkpoint: the
``module.`` / ``convnet.`` prefixes those files carry are stripped, and the head (``fc``) is
kept only when its shape fits. Nothing is downloaded at run time. torchvision itself is not
used: its PyPI wheel does not import beside the CPU torch 2.13.0 wheel this project installs,
and the matching torch 2.14.1 + torchvision 0.29.1 pair is a 5.5 GB CUDA build.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

# ImageNet statistics: what torchvision-trained ResNets (and VIP, R3M) expect.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvEncoder(nn.Module):
    """DrQ-v2's encoder (4 conv 3x3 layers, 32 channels, first with stride 2) + a linear head.

    The head has no tanh/LayerNorm: distance-based rewards (VIP, TCN) need embedding distances
    that can grow with the number of steps to the goal.
    """

    def __init__(self, image_size_px: int, embed_dim: int):
        super().__init__()
        self.convnet = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )  # fmt: skip
        side = (image_size_px - 3) // 2 + 1 - 6
        self.repr_dim = 32 * side * side
        self.fc = nn.Linear(self.repr_dim, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convnet(x / 255.0 - 0.5)
        return self.fc(h.flatten(1))


class Normalized(nn.Module):
    """``scale * net(x) / ||net(x)||``: embeddings on a sphere of radius ``scale`` (TCN's, as in
    kekeblom/tcn), so a triplet margin keeps its meaning instead of being met by scaling up."""

    def __init__(self, net: nn.Module, scale: float = 1.0):
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1) * self.scale


# ----------------------------------------------------------------------------- ResNet
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as torchvision and VIP/R3M use."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * 4)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_RESNET_LAYOUT: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50 with torchvision's names; ``fc`` maps pooled features to ``out_dim``.

    ``out_dim=None`` keeps torchvision's 1000-way head (to compare keys with torchvision).
    Input: (B, 3, H, W) float in [0, 255]; ImageNet normalisation happens inside.
    """

    mean: torch.Tensor
    std: torch.Tensor
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, depth: int, out_dim: int | None = None):
        super().__init__()
        # bf16 autocast of the conv trunk on CUDA (RewardModel.set_bf16); the head stays fp32.
        self.bf16 = False
        if depth not in _RESNET_LAYOUT:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_LAYOUT)}, got {depth}")
        block, counts = _RESNET_LAYOUT[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if j == 0 and (s != 1 or cin != width * block.expansion):
                    down = nn.Sequential(
                        _conv1x1(cin, width * block.expansion, s),
                        nn.BatchNorm2d(width * block.expansion),
                    )
                blocks.append(block(cin, width, s, down))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.out_dim = 1000 if out_dim is None else out_dim
        self.fc = nn.Linear(cin, self.out_dim)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bf16 and x.is_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                h = self.features(x)
            return self.fc(h.float())
        return self.fc(self.features(x))


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DataParallel) and ``convnet.`` (VIP/R3M wrapper) key prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "convnet."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_torchvision_weights(model: ResNet, path: str | os.PathLike[str]) -> list[str]:
    """Load a torchvision-layout ResNet state dict from a local file (weights_only).

    Returns the keys that were not loaded (the ``fc`` head when its shape differs). Raises
    ValueError naming the first backbone key that is missing or has the wrong shape.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weights {p} do not exist")
    raw = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and isinstance(raw.get("vip"), dict):
        raw = raw["vip"]  # the official VIP file nests its state dict under "vip"
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise ValueError(f"{p} does not hold a state dict")
    sd = strip_prefixes(raw)
    own = model.state_dict()
    skipped = []
    for k, v in own.items():
        if k not in sd:
            if k.startswith("fc."):
                skipped.append(k)
                continue
            raise ValueError(f"{p}: key {k!r} missing; is this a ResNet-{_depth(model)} file?")
        if tuple(sd[k].shape) != tuple(v.shape):
            if k.startswith("fc."):
                skipped.append(k)
                continue
            raise ValueError(f"{p}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict({k: sd[k] for k in own if k not in skipped}, strict=False)
    return skipped


def _depth(model: ResNet) -> int:
    n = sum(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    if isinstance(model.layer1[0], Bottleneck):
        return 50
    return 18 if n == 8 else 34


def build_encoder(
    name: str, image_size_px: int, embed_dim: int, pretrained_path: str = ""
) -> nn.Module:
    """``conv`` or ``resnet18``/``resnet34``/``resnet50``; output (B, embed_dim)."""
    if name == "conv":
        if pretrained_path:
            raise ValueError("pretrained_path applies to ResNet encoders only")
        return ConvEncoder(image_size_px, embed_dim)
    if name.startswith("resnet") and name[6:].isdigit():
        model = ResNet(int(name[6:]), out_dim=embed_dim)
        if pretrained_path:
            load_torchvision_weights(model, pretrained_path)
        return model
    raise ValueError(f"unknown encoder {name!r}; use conv, resnet18, resnet34 or resnet50")


def pair_head(embed_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The MLP that reads a frame pair's embeddings side by side with their difference (3 x
    ``embed_dim`` inputs): HOLD-R's distance head, TimeRewarder's time head."""
    return nn.Sequential(nn.Linear(3 * embed_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, out_dim))
