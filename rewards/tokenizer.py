"""A video tokenizer: a VQ autoencoder from frames to a grid of discrete codes.

    tok = VQTokenizer(TokenizerConfig(image_size=64, code_grid=8, codebook_size=256))
    loss, metrics = tok.loss(frames)          # (N, 3, 64, 64) float in [0, 255]
    codes = tok.encode(frames)                # (N, 8, 8) int64 in [0, codebook_size)
    frames_back = tok.decode(codes)           # (N, 3, 64, 64) float in [0, 255]

The generative rewards (VIPER in ``rewards/viper.py``; Diffusion Reward) model videos as
sequences of these codes, as their papers do with a VQ-GAN: 64x64 frames to 8x8 codes
(``code_grid=16``: 16x16), trained on the same demonstration videos as every reward model.

The quantizer is ``vector_quantize_pytorch.VectorQuantize`` (MIT, maintained, used by many
VQ models): an EMA codebook (``ema_decay``), k-means initialisation from the first batch, a
commitment term (``commitment_weight``) and dead-code restarts (a code whose EMA usage falls
below ``dead_code_threshold`` is replaced by an encoder output from the batch). Writing those
by hand would repeat a well-tested library for no gain; its state is plain tensors (``embed``,
``embed_avg``, ``cluster_size``, ``initted``), so checkpoints still load with
``weights_only=True``.

Losses: reconstruction (mean squared error on [-1, 1] images) plus the quantizer's commitment
term (the codebook itself moves by EMA, not by gradient). The papers' tokenizers (VQ-GAN) add a
perceptual (LPIPS) and an adversarial loss. LPIPS needs pretrained VGG weights, which cannot be
fetched here: ``perceptual_path`` loads torchvision-layout VGG16 weights from a local file
(``features.N.weight``/``bias`` keys) and ``perceptual_weight`` adds the mean squared distance
of their relu1_2, relu2_2 and relu3_3 features (LPIPS without its learned per-channel weights).
Off by default; the adversarial loss is not implemented. At 64 px on twin scenes the
reconstruction loss alone keeps the arm and objects legible (``tests/unit/test_tokenizer.py``
checks that it falls).
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from video2reward.rewards.base import RewardConfig, RewardError, RewardModel, to_tensor
from video2reward.rewards.data import VideoDataset, augment


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    image_size: int = 64  # square frames in, pixels
    code_grid: int = 8  # codes per side (8: 64 -> 8x8 as in VIPER and Diffusion Reward)
    codebook_size: int = 256  # VIPER's DMC setting; Diffusion Reward uses 1024
    code_dim: int = 64  # codebook vector size
    channels: int = 64  # width of the first conv stage (doubled once after it)
    ema_decay: float = 0.99
    commitment_weight: float = 0.25
    dead_code_threshold: float = 2.0  # EMA usage below which a code is restarted
    perceptual_path: str = ""  # local torchvision VGG16 weights (never fetched)
    perceptual_weight: float = 0.0

    def __post_init__(self) -> None:
        down = self.image_size // max(self.code_grid, 1)
        if (self.code_grid < 2 or self.image_size % self.code_grid
                or down < 2 or down & (down - 1)):
            raise ValueError(
                f"image_size ({self.image_size}) / code_grid ({self.code_grid}) must be a power "
                "of two >= 2 (64 px: code_grid 8 or 16)"
            )
        if self.codebook_size < 2 or self.code_dim < 1 or self.channels < 1:
            raise ValueError("codebook_size >= 2, code_dim >= 1 and channels >= 1 are needed")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment_weight < 0 or self.dead_code_threshold < 0:
            raise ValueError("commitment_weight and dead_code_threshold must be >= 0")
        if self.perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {self.perceptual_weight}")
        if self.perceptual_weight > 0 and not self.perceptual_path:
            raise ValueError(
                "perceptual_weight > 0 needs perceptual_path: local torchvision VGG16 weights "
                "(vgg16-397923af.pth); they are never downloaded"
            )
        if self.perceptual_path and not Path(self.perceptual_path).is_file():
            raise ValueError(f"perceptual_path {self.perceptual_path!r} is not a file")

    @property
    def stages(self) -> int:
        """Stride-2 stages from image_size down to code_grid."""
        return int(math.log2(self.image_size // self.code_grid))


class _Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _encoder(cfg: TokenizerConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    ch_in, ch = 3, cfg.channels
    for i in range(cfg.stages):
        layers += [nn.Conv2d(ch_in, ch, 4, stride=2, padding=1), nn.ReLU()]
        ch_in, ch = ch, (2 * cfg.channels if i == 0 else ch)
    layers += [nn.Conv2d(ch_in, ch_in, 3, padding=1), _Res(ch_in), _Res(ch_in), nn.ReLU(),
               nn.Conv2d(ch_in, cfg.code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: TokenizerConfig) -> nn.Sequential:
    top = 2 * cfg.channels if cfg.stages > 1 else cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, top, 3, padding=1), _Res(top), _Res(top)]
    ch = top
    for i in range(cfg.stages):
        last = i == cfg.stages - 1
        out = 3 if last else (cfg.channels if i == cfg.stages - 2 else ch)
        layers += [nn.ReLU(), nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1)]
        ch = out
    return nn.Sequential(*layers)


class _VGGFeatures(nn.Module):
    """VGG16's conv trunk up to relu3_3 with torchvision's ``features.N`` layout."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256)
    TAPS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3 in torchvision's numbering

    def __init__(self, path: str):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(ch, int(v), 3, padding=1), nn.ReLU()]
                ch = int(v)
        self.features = nn.Sequential(*layers)
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = {k: v for k, v in state.items() if k.split(".")[0] == "features"
               and int(k.split(".")[1]) < len(layers)}
        missing = set(self.state_dict()) - set(own)
        if missing:
            raise ValueError(
                f"{path} is not torchvision VGG16 weights (missing {sorted(missing)[:3]})"
            )
        self.load_state_dict(own)
        self.requires_grad_(False)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
        h, outs = (x01 - self.mean) / self.std, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.TAPS:
                outs.append(h)
        return outs


class VQTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.cfg = cfg
        self.encoder = _encoder(cfg)
        self.decoder = _decoder(cfg)
        self.quantizer = VectorQuantize(
            dim=cfg.code_dim, codebook_size=cfg.codebook_size, decay=cfg.ema_decay,
            commitment_weight=cfg.commitment_weight, kmeans_init=True,
            threshold_ema_dead_code=cfg.dead_code_threshold, accept_image_fmap=True,
        )  # fmt: skip
        # Not a submodule: the VGG weights stay out of checkpoints (they are the user's file).
        self._vgg: list[_VGGFeatures] = (
            [_VGGFeatures(cfg.perceptual_path)] if cfg.perceptual_weight > 0 else []
        )

    @staticmethod
    def normalise(frames: torch.Tensor) -> torch.Tensor:
        return frames / 127.5 - 1.0

    def _check(self, frames: torch.Tensor) -> None:
        s = self.cfg.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, s, s):
            raise ValueError(
                f"the tokenizer takes (N, 3, {s}, {s}) frames, got {tuple(frames.shape)}"
            )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float in [0, 255] -> (N, G, G) int64 codes (no EMA update: eval)."""
        self._check(frames)
        was = self.quantizer.training
        self.quantizer.eval()
        try:
            _, idx, _ = self.quantizer(self.encoder(self.normalise(frames)))
        finally:
            self.quantizer.train(was)
        return idx

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, G, G) codes -> (N, 3, S, S) float in [0, 255]."""
        z = self.quantizer.get_output_from_indices(codes)
        return ((self.decoder(z).clamp(-1, 1) + 1.0) * 127.5)

    def loss(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction + commitment (+ perceptual) on a batch; updates the EMA codebook."""
        self._check(frames)
        x = self.normalise(frames)
        zq, idx, commit = self.quantizer(self.encoder(x))
        recon = self.decoder(zq)
        rec = F.mse_loss(recon, x)
        loss = rec + commit.sum()
        metrics = {"tok_recon": rec.detach(), "tok_commit": commit.detach().sum()}
        if self._vgg:
            vgg = self._vgg[0].to(x.device)
            fa, fb = vgg((recon + 1) / 2), vgg((x + 1) / 2)
            perc = torch.stack([F.mse_loss(a, b) for a, b in zip(fa, fb, strict=True)]).mean()
            loss = loss + self.cfg.perceptual_weight * perc
            metrics["tok_perceptual"] = perc.detach()
        # share of the codebook used by this batch (collapse shows as a small number)
        used = torch.zeros(self.cfg.codebook_size, device=x.device).index_fill_(0, idx.flatten(), 1)
        metrics["tok_usage"] = used.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics


# ------------------------------------------------------------- rewards built on the codes
def window_indices(t: np.ndarray, length: int, frame_skip: int = 1) -> np.ndarray:
    """(N,) end frames -> (N, length) frame indices t-(L-1)k, ..., t-k, t, clamped at 0
    (a window that would start before the episode repeats its first frame)."""
    offsets = frame_skip * np.arange(length - 1, -1, -1)
    return np.maximum(np.asarray(t)[:, None] - offsets[None], 0)


@dataclasses.dataclass(frozen=True)
class TokenRewardConfig(RewardConfig):
    """Fields of the rewards that model videos as tokenizer codes (VIPER, Diffusion Reward)."""

    image_size_px: int = 64  # the papers' tokenizer input
    augment: str = "none"  # "none" lets training encode every frame once
    lr: float = 5e-4
    batch_size: int = 16
    steps: int = 3000  # tokenizer steps first, then the video model's
    tokenizer_steps: int = 1000
    code_grid: int = 8
    codebook_size: int = 256
    code_dim: int = 32
    tokenizer_channels: int = 32
    score_batch: int = 32  # samples per forward pass when scoring
    # Every Nth demonstration is kept out of the video model's training and fits the
    # standardisation (0: train and fit on all). Fitted on the training demos, the z-scores
    # read the model's memory of them: on twin reach, held-out expert videos then scored
    # z = -20 to -35 per frame.
    holdout_every: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokenizer_config()  # validates the tokenizer fields
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ValueError(f"holdout_every must be 0 or >= 2, got {self.holdout_every}")
        if not 0 < self.tokenizer_steps < self.steps:
            raise ValueError(
                f"tokenizer_steps ({self.tokenizer_steps}) must be in [1, steps={self.steps}): "
                "the tokenizer trains first, then the video model"
            )
        if self.score_batch < 1:
            raise ValueError(f"score_batch must be >= 1, got {self.score_batch}")

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(
            image_size=self.image_size_px, code_grid=self.code_grid,
            codebook_size=self.codebook_size, code_dim=self.code_dim,
            channels=self.tokenizer_channels,
        )  # fmt: skip


class TokenRewardModel(RewardModel):
    """A tokenizer trained first, then a video model on its frozen codes; a raw per-frame
    score standardised on the demonstrations.

    Subclasses give :meth:`sample_frames` (the frame indices of one training sample, ending
    at t), :meth:`video_loss` (on the codes of a batch of samples) and :meth:`raw_scores`
    (the raw score of every frame of one episode from its codes). Training runs the first
    ``tokenizer_steps`` steps on the tokenizer, the rest on the video model (on all demos but
    every ``holdout_every``-th). ``reward`` is the raw score's z-score over the frames of the
    held-out demos; ``progress`` the standardised
    cumulative reward: sum over s <= t of (z[s] - z_low) over the demos' median total, z_low
    the demos' 5th percentile of z, so a demonstration ends near 1.
    """

    config: TokenRewardConfig
    cumulative_progress = True
    # Whole recordings, the hold at the goal included: a frame the model never saw is
    # unlikely, and the hold is what a successful episode ends with.
    default_trim_after_success = -1
    trained_steps: torch.Tensor
    raw_mean: torch.Tensor
    raw_std: torch.Tensor
    z_low: torch.Tensor
    progress_ref: torch.Tensor

    def __init__(self, config: TokenRewardConfig):
        super().__init__(config)
        self.tokenizer = VQTokenizer(config.tokenizer_config())
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        for name, value in (("raw_mean", 0.0), ("raw_std", 1.0), ("z_low", -2.0),
                            ("progress_ref", 1.0)):
            self.register_buffer(name, torch.tensor(value))
        self._step: int | None = 0  # host copy of trained_steps (None: read it once)
        self._cache: tuple[VideoDataset, torch.Tensor] | None = None
        self._checked: VideoDataset | None = None  # the dataset whose lengths were checked

    @property
    def uses_goal(self) -> bool:
        return False

    # -- what a method defines
    @abstractmethod
    def sample_frames(self, t: np.ndarray) -> np.ndarray:
        """(N,) end frames -> (N, W) frame indices of each training sample (clamped at 0)."""

    @property
    @abstractmethod
    def min_frames(self) -> int:
        """Shortest training video the method accepts."""

    @abstractmethod
    def video_loss(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """codes (B, W, G, G) of a batch of samples -> (loss, metrics)."""

    @abstractmethod
    def raw_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (T, G, G) of one episode's frames -> (T,) raw scores, higher = more
        demonstration-like."""

    # -- training
    @property
    def phase(self) -> str:
        if self._step is None:
            self._step = int(self.trained_steps)
        return "tokenizer" if self._step < self.config.tokenizer_steps else "video"

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._step = None  # re-read after a resume

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        b, s = self.config.batch_size, self.config.image_size_px
        if self._checked is not data:
            short = np.flatnonzero(data.lengths < self.min_frames)
            if len(short):
                i = int(short[0])
                raise RewardError(
                    f"{self.method} needs videos of at least {self.min_frames} frames; "
                    f"{data.infos[i].source} has {int(data.lengths[i])} ({len(short)} too short)"
                )
            self._checked = data
        tokenizer_phase = self.phase == "tokenizer"
        if tokenizer_phase:
            ep = np.asarray(rng.integers(0, len(data), size=b))
        else:  # the video model never sees the calibration demos
            ep = np.asarray(rng.choice(self.split(len(data))[0], size=b))
        t = (rng.random(b) * data.lengths[ep]).astype(np.int64)
        if tokenizer_phase:
            x = data.frames_tensor(ep, t, self.device)
            return {"frames": augment(x, self.config.augment, rng, self.config.crop_scale_min)}
        idx = self.sample_frames(t)
        if self.config.augment == "none":  # the frozen tokenizer's codes, computed once
            rows = torch.from_numpy(data.starts[ep][:, None] + idx).to(self.device)
            return {"codes": self._dataset_codes(data)[rows]}
        x = data.frames_tensor(np.repeat(ep, idx.shape[1]), idx.reshape(-1), self.device)
        x = augment(x.view(b, -1, 3, s, s), self.config.augment, rng, self.config.crop_scale_min)
        return {"windows": x.reshape(-1, 3, s, s), "width": idx.shape[1]}

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the demos the video model trains on and of those that fit the
        standardisation (every ``holdout_every``-th; all of them when there are too few)."""
        idx = np.arange(n)
        k = self.config.holdout_every
        if k == 0 or n < k:
            return idx, idx
        held = idx % k == k - 1
        return idx[~held], idx[held]

    def _dataset_codes(self, data: VideoDataset) -> torch.Tensor:
        """Codes of every frame of ``data`` (N, G, G), kept while the same dataset trains."""
        if self._cache is None or self._cache[0] is not data:
            n = int(data.lengths.sum())
            codes = torch.cat([
                self.codes(to_tensor(data.frames[c], self.device))
                for c in np.array_split(np.arange(n), max(1, n // self.score_chunk))
            ])  # fmt: skip
            self._cache = (data, codes)
        return self._cache[1]

    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) frames -> (N, G, G) codes of the (frozen, eval-mode) tokenizer."""
        with torch.no_grad():
            return self.tokenizer.encode(frames)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        phase = self.phase
        self.trained_steps += 1
        self._step = (self._step or 0) + 1
        if phase == "tokenizer":
            loss, metrics = self.tokenizer.loss(batch["frames"])
            return loss, {**metrics, "video_loss": torch.full_like(loss.detach(), float("nan"))}
        self.tokenizer.eval()
        g = self.config.code_grid
        if "codes" in batch:
            codes = batch["codes"]
        else:
            codes = self.codes(batch["windows"]).view(-1, int(batch["width"]), g, g)
        loss, metrics = self.video_loss(codes)
        nan = torch.full_like(loss.detach(), float("nan"))
        return loss, {"tok_recon": nan, "tok_commit": nan, "tok_usage": nan,
                      "loss": loss.detach(), "video_loss": loss.detach(), **metrics}

    # -- scoring
    def raw(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, S, S) frames of one episode -> (T,) raw scores."""
        codes = torch.cat([self.codes(c) for c in frames.split(self.score_chunk)])
        return self.raw_scores(codes)

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        z = (self.raw(frames) - self.raw_mean) / self.raw_std
        progress = torch.cumsum(z - self.z_low, 0) / self.progress_ref
        return self.reward_from_z(z, frames).cpu().numpy(), progress.cpu().numpy()

    def reward_from_z(self, z: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The reward of each frame from its standardised score (methods may add terms)."""
        return z

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        """Fit the standardisation and the progress scale on the held-out demonstrations."""
        was = self.training
        self.eval()
        try:
            raws = [self.raw(to_tensor(data.episode(int(i)), self.device))
                    for i in self.split(len(data))[1]]
        finally:
            self.train(was)
        flat = torch.cat(raws)
        if not bool(torch.isfinite(flat).all()):
            raise RewardError(f"{self.method}: non-finite scores on the demonstrations")
        self.raw_mean.fill_(float(flat.mean()))
        self.raw_std.fill_(float(flat.std().clamp_min(1e-3)) if len(flat) > 1 else 1.0)
        zs = [(r - self.raw_mean) / self.raw_std for r in raws]
        self.z_low.fill_(float(torch.quantile(torch.cat(zs), 0.05)))
        totals = torch.stack([(z - self.z_low).sum() for z in zs])
        self.progress_ref.fill_(float(totals.median().clamp_min(1e-3)))
