"""TimeRewarder: progress as the temporal distance between two frames (Liu et al., 2025,
"Learning Dense Reward from Passive Videos via Frame-wise Temporal Distance").

    v2r reward train method=timerewarder data=demos.zarr out=runs/tr
    model = load_reward_model("runs/tr")
    model.score(frames).reward        # r_t = E[F(o_t-1, o_t)]: progress made by the last step

A model F(o_u, o_v) predicts the normalised time between two frames of an expert video,
d_uv = (v - u) / (T - 1) in [-1, 1]: positive when o_v comes later, negative when it comes
earlier (the paper's implicit negatives: going backwards is scored as regress, with no failure
videos needed). As in the paper the target is a two-hot distribution over ``bins`` (20)
evenly spaced values on [-1, 1], trained with cross-entropy, and F's prediction is the
expectation over the bins. Pairs are drawn with the gap |v - u| weighted towards short
intervals (the paper's exponentially weighted sampling): the normalised gap follows an
exponential of mean ~``gap_scale`` truncated to [0, 1] (our parametrisation; the paper gives
no formula we could follow), the order of the two frames is a coin flip.

Reward (paper): r_t = F(o_t-1, o_t), the progress the last step made; r_0 = 0. It is a
potential-like difference: a control step's reward is the sum of its camera frames' rewards,
as for VIP. The paper adds the environment's sparse success signal; here the success call
learned from the demos (``success_progress``) and the learner's success bonus play that part,
so no oracle information enters.

Progress (this project's convention, ~0 at a demo's start and ~1 at its end): F from the
training demos' first frames to o_t, averaged over up to ``start_bank`` of them and divided by
its median at the demos' last frames. A frame is scored on its own (no episode bounds), so the
reward node serves it like any other method.

Architecture: the paper fine-tunes a ViT on the frame pair. Here the project's shared image
encoder embeds each frame once and an MLP reads [e_u, e_v, e_v - e_u] (as HOLD-R's head does),
so scoring a stream costs one encoder pass per frame.

Not in the paper, and both off at 0 (the paper's setting):
- ``cross_episode_fraction``: a share of each batch pairs frames of two different demos, with
  the difference of their normalised times (phases) as the target. Progress is read from other
  demos' first frames, a pairing that same-video pairs alone never train. Twin reach, seed 0
  (bench_reward_quality.py): AUROC 1.00 with them, 0.58 without (Spearman 1.00 both); push
  0.99 / 1.00 either way.
- ``at_goal_fraction``: a share of each batch pairs the first
successful frame of a demo with a later frame of its recording, target 0 in either order. The
held-out successes of twin push stay ~90 frames at the goal after the expert lifts its tool,
which no frame up to the goal shows (the same addition HOLD-R and TCN carry, for the same
reason; rewards/hold.py). Training therefore reads whole episodes
(``default_trim_after_success = -1``); the time pairs use frames up to ``KEEP_AFTER_SUCCESS``
after the first success, as the other methods' demos are cut.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from video2reward.compute.device import from_host
from video2reward.rewards.base import RewardConfig, RewardError, RewardModel
from video2reward.rewards.data import KEEP_AFTER_SUCCESS, VideoDataset, augment
from video2reward.rewards.encoders import build_encoder, pair_head

MIN_END_PROGRESS = 0.05  # calibration scales progress only when the demos' ends read above this


@dataclasses.dataclass(frozen=True)
class TimeRewarderConfig(RewardConfig):
    method: str = "timerewarder"
    augment: str = "shift"
    batch_size: int = 64  # frame pairs per step
    bins: int = 20  # two-hot bins over [-1, 1] (paper: K = 20)
    hidden_dim: int = 256  # MLP width of the pair head
    gap_scale: float = 0.25  # mean of the normalised gap's exponential, before truncation
    at_goal_fraction: float = 0.25  # pairs inside the goal set, target 0 (module docstring)
    cross_episode_fraction: float = 0.25  # pairs from two demos, target their phase difference
    start_bank: int = 16  # demo first frames progress is measured from

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bins < 3:
            raise ValueError(f"bins must be >= 3, got {self.bins}")
        if self.hidden_dim < 1 or self.start_bank < 1:
            raise ValueError("hidden_dim and start_bank must be >= 1")
        if not (self.gap_scale > 0 and math.isfinite(self.gap_scale)):
            raise ValueError(f"gap_scale must be a positive number, got {self.gap_scale}")
        if not 0.0 <= self.at_goal_fraction < 1.0:
            raise ValueError(f"at_goal_fraction must be in [0, 1), got {self.at_goal_fraction}")
        if not 0.0 <= self.cross_episode_fraction < 1.0:
            raise ValueError("cross_episode_fraction must be in [0, 1), got "
                             f"{self.cross_episode_fraction}")


def bin_values(bins: int) -> torch.Tensor:
    """The ``bins`` evenly spaced values on [-1, 1] the two-hot target lives on."""
    return torch.linspace(-1.0, 1.0, bins)


def two_hot(d: torch.Tensor, bins: int) -> torch.Tensor:
    """(N,) values in [-1, 1] -> (N, bins) two-hot rows: the mass split between the two nearest
    bins so that the expectation over the bins is d exactly (values outside are clipped)."""
    pos = (d.clamp(-1.0, 1.0) + 1.0) * (bins - 1) / 2.0  # fractional bin index
    lo = pos.floor().long().clamp(0, bins - 2)
    w_hi = (pos - lo.to(pos.dtype)).clamp(0.0, 1.0)
    out = torch.zeros(len(d), bins, dtype=d.dtype, device=d.device)
    out.scatter_(1, lo[:, None], (1.0 - w_hi)[:, None])
    out.scatter_add_(1, (lo + 1)[:, None], w_hi[:, None])
    return out


def expected_value(logits: torch.Tensor) -> torch.Tensor:
    """(N, bins) logits -> (N,) expectation over the bins: the inverse of :func:`two_hot`."""
    values = bin_values(logits.shape[-1]).to(logits.device, logits.dtype)
    return torch.softmax(logits, -1) @ values


def sample_gaps(rng: np.random.Generator, n: np.ndarray, scale: float) -> np.ndarray:
    """Frame gaps in [0, n-1] for episodes of n frames: the normalised gap is exponential with
    mean ``scale`` truncated to [0, 1] (inverse CDF), so short intervals dominate."""
    u = rng.random(len(n))
    x = -scale * np.log1p(-u * (1.0 - math.exp(-1.0 / scale)))
    return np.minimum(np.rint(x * (n - 1)).astype(np.int64), n - 1)


class TimeRewarder(RewardModel):
    method = "timerewarder"
    config_cls = TimeRewarderConfig
    config: TimeRewarderConfig
    potential_difference = True  # a step's reward is the sum of its frames' rewards
    default_trim_after_success = -1  # whole episodes: the tail feeds the at-goal pairs
    start_embeddings: torch.Tensor
    progress_ref: torch.Tensor
    data_sized_buffers = ("start_embeddings",)  # its size is only known once calibrated

    def __init__(self, config: TimeRewarderConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                     config.pretrained_path)
        self.head = pair_head(config.embed_dim, config.hidden_dim, config.bins)
        self.register_buffer("start_embeddings", torch.zeros(1, config.embed_dim))
        self.register_buffer("progress_ref", torch.ones(()))

    @property
    def uses_goal(self) -> bool:
        return False

    def pair_logits(self, eu: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of the earlier-or-not frame u and frame v -> (N, bins) logits."""
        return self.head(torch.cat([eu, ev, ev - eu], -1))

    def distance(self, eu: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        """Predicted normalised time from u to v, in [-1, 1]."""
        return expected_value(self.pair_logits(eu, ev))

    # -- training
    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        b = cfg.batch_size
        cut = data.cut_lengths(KEEP_AFTER_SUCCESS)
        if int(cut.max()) < 2:
            raise RewardError("TimeRewarder needs videos of at least 2 frames")
        ep = rng.integers(0, len(data), size=b)
        n = np.maximum(cut[ep], 2)
        gap = sample_gaps(rng, n, cfg.gap_scale)
        a = (rng.random(b) * (n - gap)).astype(np.int64)  # the pair (a, a + gap) fits the video
        flip = rng.random(b) < 0.5
        u, v = np.where(flip, a + gap, a), np.where(flip, a, a + gap)
        target = ((v - u) / (n - 1)).astype(np.float32)
        ep_v = ep.copy()
        if cfg.cross_episode_fraction and len(data) > 1:
            cross = rng.random(b) < cfg.cross_episode_fraction
            ep_v = np.where(cross, data.other_episodes(ep, rng), ep)
            n_v = np.maximum(cut[ep_v], 2)
            u = np.where(cross, (rng.random(b) * n).astype(np.int64), u)
            v = np.where(cross, (rng.random(b) * n_v).astype(np.int64), v)
            target = np.where(cross, v / (n_v - 1) - u / (n - 1), target).astype(np.float32)
        if cfg.at_goal_fraction:
            at_goal = (rng.random(b) < cfg.at_goal_fraction) & (data.first_success[ep] >= 0)
            ep_v = np.where(at_goal, ep, ep_v)
            first, after = data.sample_at_goal(ep, rng)
            u = np.where(at_goal, np.where(flip, after, first), u)
            v = np.where(at_goal, np.where(flip, first, after), v)
            target = np.where(at_goal, 0.0, target).astype(np.float32)
        x = data.frames_tensor(np.stack([ep, ep_v], 1).reshape(-1), np.stack([u, v], 1).reshape(-1),
                               self.device)
        s = data.size_px
        x = augment(x.view(b, 2, 3, s, s), cfg.augment, rng, cfg.crop_scale_min)
        return {"frames": x, "target": from_host(target, self.device)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        b = x.shape[0]
        e = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        e = e.view(b, 2, -1)
        logits = self.pair_logits(e[:, 0], e[:, 1])
        target = two_hot(batch["target"], self.config.bins)
        loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()
        with torch.no_grad():
            err = (expected_value(logits) - batch["target"]).abs().mean()
        return loss, {"loss": loss.detach(), "abs_err": err}

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        """Keep up to ``start_bank`` demo first frames' embeddings, then scale progress so the
        demos' last frames (cut as the time pairs were) read 1 at the median."""
        was_training = self.training
        self.eval()
        demos = data.trimmed(KEEP_AFTER_SUCCESS)
        k = min(len(demos), self.config.start_bank)
        ep = np.linspace(0, len(demos) - 1, k).round().astype(np.int64)
        first = self.embed_frames(demos.frames_tensor(ep, np.zeros_like(ep), self.device))
        self.start_embeddings = first.detach().clone()
        all_ep = np.arange(len(demos))
        last = self.embed_frames(demos.frames_tensor(all_ep, demos.lengths - 1, self.device))
        self.progress_ref.fill_(1.0)
        end = float(self._progress(last).median())
        if end < MIN_END_PROGRESS:  # scaling that up would only amplify noise
            warnings.warn(f"TimeRewarder: the demos' last frames read a progress of {end:.3f} "
                          "from their first frames: progress left unscaled; train longer",
                          stacklevel=2)
        else:
            self.progress_ref.fill_(end)
        self.train(was_training)

    # -- scoring
    def _progress(self, e: torch.Tensor) -> torch.Tensor:
        """(T, D) embeddings -> (T,) mean predicted time from the demos' starts, scaled."""
        s = self.start_embeddings
        t, k = len(e), len(s)
        d = self.distance(s.repeat(t, 1), e.repeat_interleave(k, 0)).view(t, k).mean(1)
        return d / self.progress_ref

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        e = self.embed_frames(frames)
        reward = torch.zeros(len(e), device=e.device)
        if len(e) > 1:
            reward[1:] = self.distance(e[:-1], e[1:])
        return reward.cpu().numpy(), self._progress(e).cpu().numpy()
