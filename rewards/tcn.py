"""TCN: single-view Time-Contrastive Networks (Sermanet et al., ICRA 2018).

    v2r reward train method=tcn data=demos.zarr out=runs/tcn
    model = load_reward_model("runs/tcn"); model.score(frames, goal).reward

Frames close in time should embed close together, frames far apart far away. Each sample is a
triplet from one video: an anchor at t, a positive at t + k with 1 <= |k| <= ``pos_window``,
and a negative at t' with |t' - t| > ``neg_window``. With f the L2-normalised embedding scaled
by ``alpha`` (as kekeblom/tcn's PyTorch implementation does), the loss is

    L = mean(max(0, ||f(a) - f(p)||^2 - ||f(a) - f(n)||^2 + margin))

Reward (paper Sec. IV-B, with the goal embedding in place of the demo frame being imitated):
r_t = -a d_t^2 - b sqrt(c + d_t^2), d_t = ||f(o_t) - f(g)||, a Huber-like shaping.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from video2reward.rewards.base import GoalDistanceModel, RewardConfig, RewardError
from video2reward.rewards.data import VideoDataset, augment
from video2reward.rewards.encoders import Normalized, build_encoder


@dataclasses.dataclass(frozen=True)
class TCNConfig(RewardConfig):
    method: str = "tcn"
    augment: str = "shift"
    pos_window: int = 2  # frames: positives within this distance of the anchor
    neg_window: int = 6  # frames: negatives farther than this from the anchor
    margin: float = 2.0  # triplet margin on squared distances (kekeblom/tcn default)
    alpha: float = 10.0  # embedding norm after L2 normalisation (kekeblom/tcn)
    reward_a: float = 1.0  # weight of the squared distance in the reward
    reward_b: float = 1.0  # weight of the sqrt term
    reward_c: float = 1e-3  # inside the sqrt, keeps its gradient finite at d = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.pos_window < self.neg_window:
            raise ValueError(f"need 1 <= pos_window < neg_window, got {self.pos_window}, "
                             f"{self.neg_window}")
        if self.margin <= 0 or self.alpha <= 0:
            raise ValueError("margin and alpha must be > 0")


def triplet_loss(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float) -> torch.Tensor:
    d_ap = (a - p).pow(2).sum(-1)
    d_an = (a - n).pow(2).sum(-1)
    return torch.clamp(d_ap - d_an + margin, min=0.0).mean()


class TCN(GoalDistanceModel):
    method = "tcn"
    config_cls = TCNConfig
    config: TCNConfig

    def __init__(self, config: TCNConfig):
        super().__init__(config)
        backbone = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                 config.pretrained_path)
        self.encoder = Normalized(backbone, config.alpha)

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        b = cfg.batch_size
        usable = np.flatnonzero(data.lengths > cfg.neg_window + 1)  # room for a negative
        if usable.size == 0:
            raise RewardError(
                f"TCN needs videos longer than neg_window+1={cfg.neg_window + 1} frames; "
                f"the longest has {int(data.lengths.max())}: lower neg_window"
            )
        ep = usable[rng.integers(0, usable.size, size=b)]
        n = data.lengths[ep]
        t = (rng.random(b) * n).astype(np.int64)
        k = rng.integers(1, cfg.pos_window + 1, size=b) * rng.choice([-1, 1], size=b)
        pos = np.clip(t + k, 0, n - 1)
        pos = np.where(pos == t, t - k, pos)  # at an edge, step the other way
        # Negative: uniform over frames with |t' - t| > neg_window (exists: n > neg_window+1
        # guarantees one side has room unless t is central in a short video; resample then).
        neg = (rng.random(b) * n).astype(np.int64)
        for _ in range(100):
            bad = np.abs(neg - t) <= cfg.neg_window
            if not bad.any():
                break
            neg[bad] = (rng.random(int(bad.sum())) * n[bad]).astype(np.int64)
        far = np.where(t < n / 2, n - 1, 0)  # fallback: the far end of the video
        neg = np.where(np.abs(neg - t) <= cfg.neg_window, far, neg)
        idx = np.stack([t, pos, neg], 1)
        x = data.frames_tensor(np.repeat(ep, 3), idx.reshape(-1), self.device)
        s = data.size_px
        x = augment(x.view(b, 3, 3, s, s), cfg.augment, rng, cfg.crop_scale_min)
        return {"frames": x}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["frames"]
        b = x.shape[0]
        e = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        e = e.view(b, 3, -1)
        loss = triplet_loss(e[:, 0], e[:, 1], e[:, 2], self.config.margin)
        active = ((e[:, 0] - e[:, 1]).pow(2).sum(-1) + self.config.margin
                  > (e[:, 0] - e[:, 2]).pow(2).sum(-1)).float().mean()
        return loss, {"loss": loss.item(), "active_triplets": active.item()}

    def reward_from_distance(self, d: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return -cfg.reward_a * d.pow(2) - cfg.reward_b * torch.sqrt(cfg.reward_c + d.pow(2))

