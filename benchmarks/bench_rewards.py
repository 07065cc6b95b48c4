"""Reward-model benchmarks on this machine: scoring throughput and one VIP training step
against the official facebookresearch/vip loss.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python benchmarks/bench_rewards.py [--official /tmp/vip_official] [--threads 2]

``--official`` points at a checkout of facebookresearch/vip holding ``vip/trainer.py`` and
``vip/models/model_vip.py`` (kept outside this repository; never committed). That code imports
torchvision, whose PyPI wheel does not import beside the CPU torch 2.13.0 wheel this project
installs (the matching torchvision pairs with a 5.5 GB CUDA torch build), so this script
installs a minimal stand-in module before importing it: ``Normalize`` and the ResNet
constructors (this project's torchvision-layout ResNet, with its own normalisation turned off
so the official code normalises once). The official ``Trainer.update`` then runs unmodified
on the same batch and the same initial weights as this project's ``VIP.loss``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn
from video2reward.rewards.base import build_model
from video2reward.rewards.encoders import ResNet
from video2reward.rewards.vip import VIPConfig


def _timeit(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_scoring() -> list[tuple[str, float]]:
    rows = []
    cases = [("conv (default) @84", "conv", 84, 256), ("conv (default) @128", "conv", 128, 256),
             ("resnet18 @224", "resnet18", 224, 64)]
    rng = np.random.default_rng(0)
    for name, enc, size, n in cases:
        model = build_model(VIPConfig(encoder=enc, image_size_px=size, embed_dim=64),
                            torch.device("cpu"))
        frames = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        s = _timeit(lambda m=model, f=frames: m.score(f, f[-1]), repeats=3)
        rows.append((name, n / s))
    return rows


def _torchvision_stand_in() -> None:
    """Just enough of torchvision for vip/trainer.py and vip/models/model_vip.py."""

    class Normalize(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("m", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("s", torch.tensor(std).view(1, -1, 1, 1))

        def forward(self, x):
            return (x - self.m) / self.s

    def unsupported(*_a, **_k):
        raise NotImplementedError("stand-in: feed 224x224 frames")

    def resnet(depth):
        def make(pretrained=False):
            net = ResNet(depth)
            net.mean.zero_()
            net.std.fill_(1.0)  # the official model applies its own Normalize first
            return net
        return make

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(resnet18=resnet(18), resnet34=resnet(34),
                                      resnet50=resnet(50))
    transforms = types.ModuleType("torchvision.transforms")
    transforms.Normalize = Normalize
    transforms.Resize = transforms.CenterCrop = transforms.RandomResizedCrop = unsupported
    utils = types.ModuleType("torchvision.utils")
    utils.save_image = unsupported
    tv.transforms, tv.utils = transforms, utils
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.utils": utils})


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_vip_step(official: Path, batch: int, repeats: int) -> dict[str, float]:
    _torchvision_stand_in()
    model_vip = _load(official / "vip/models/model_vip.py", "official_model_vip")
    trainer_mod = _load(official / "vip/trainer.py", "official_trainer")

    # Same encoder for both: ResNet-18 at 224 px with VIP's 1024-d head (the official
    # architecture at size=18), same initial weights, same batch, same Adam settings.
    torch.manual_seed(0)
    theirs = model_vip.VIP(device="cpu", lr=1e-4, hidden_dim=1024, size=18, l2weight=0.0,
                           l1weight=0.0, gamma=0.98, num_negatives=0)
    ours = build_model(VIPConfig(encoder="resnet18", image_size_px=224, embed_dim=1024, lr=1e-4,
                                 batch_size=batch, augment="none"), torch.device("cpu"))
    sd = {k: v for k, v in theirs.convnet.state_dict().items()}
    ours.encoder.load_state_dict(sd)
    wrapped = nn.DataParallel(theirs)  # the official trainer reaches through .module
    trainer = trainer_mod.Trainer(eval_freq=0)
    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (batch, 4, 3, 224, 224)), dtype=torch.float32)
    reward = -torch.ones(batch)

    # Loss values on identical weights before any step.
    with torch.no_grad():
        their_metrics, _ = trainer.update(copy.deepcopy(wrapped), (frames, reward), 0, eval=True)
        ours.eval()
        our_loss, _ = ours.loss({"frames": frames, "reward": reward})
        ours.train()
    opt = torch.optim.Adam(ours.parameters(), lr=1e-4)

    def our_step():
        loss, _ = ours.loss({"frames": frames.contiguous(), "reward": reward})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def their_step():
        trainer.update(wrapped, (frames, reward), 0)

    t_ours = _timeit(our_step, repeats)
    t_theirs = _timeit(their_step, repeats)
    return {"our_loss": float(our_loss), "official_loss": float(their_metrics["full_loss"]),
            "our_step_s": t_ours, "official_step_s": t_theirs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=Path("/tmp/vip_official"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="VIP samples per step (4 frames each)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("scoring throughput (VIP score(), frames/s, batch of one video):")
    for name, fps in bench_scoring():
        print(f"  {name:<22} {fps:8.1f}")
    if (args.official / "vip/trainer.py").exists():
        r = bench_vip_step(args.official, args.batch, args.repeats)
        print(f"VIP training step, ResNet-18 @224, batch {args.batch} x 4 frames:")
        diff = abs(r["our_loss"] - r["official_loss"])
        print(f"  loss on identical weights: ours {r['our_loss']:.6f}  "
              f"official {r['official_loss']:.6f}  (diff {diff:.2e})")
        print(f"  step time: ours {r['our_step_s']:.3f} s  official {r['official_step_s']:.3f} s  "
              f"ratio ours/official {r['our_step_s'] / r['official_step_s']:.2f}")
    else:
        print(f"(no official VIP code at {args.official}; skipping the step comparison)")


if __name__ == "__main__":
    main()
