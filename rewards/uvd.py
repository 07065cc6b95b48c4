"""UVD: Universal Visual Decomposer (Zhang et al., ICRA 2024): subgoals from any embedding and a
phase-aware goal-conditioned reward over them.

    v2r reward train method=uvd data=demos.zarr out=runs/uvd      # VIP embedding + subgoals
    subgoal_idx = decompose(embeddings)         # (T, D) from any model -> [i_1, ..., T-1]
    model = load_reward_model("runs/uvd"); model.score(frames, goal).progress

Decomposition (official ``embedding_decomp``, training-free): start with the last frame as the
goal; take the embedding-distance-to-goal curve of the frames before it, smooth it with RBF
kernel regression (gamma = 0.08), and find its local maxima. Walking back from the latest, the
first maximum that lies more than ``min_interval`` frames before the current goal and after
frame ``min_interval`` becomes the new goal (a point where the distance stopped growing, i.e.
where an earlier phase ended); recurse until no such maximum exists. A pre-trained embedding
that falls monotonically towards the goal within a phase gives exactly one milestone per phase.

This module trains the embedding with the VIP objective (it subclasses :class:`VIP`); any
embedding works for ``decompose``. Calibration decomposes every training demo, keeps the most
common number of subgoals K, and stores the mean embedding of each subgoal over the demos with
K subgoals plus the median embedding distance covered by each phase.

Reward: the agent is in phase k (it starts in phase 0 and only moves forward). Phase k is done
when the distance to subgoal k falls below ``pass_fraction`` of that phase's reference distance,
or when the frame is relatively closer to subgoal k+1 than to subgoal k (it went past).
Progress = (k + 1 - d_k / ref_k) / K, a potential whose difference is the reward, so completing
a phase is never penalised and progress inside a phase is VIP's distance shaping. A given goal
image replaces the last subgoal; with none, the last phase's distance is to the nearest goal of
the demos' goal set (base.py), as VIP's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.signal import argrelextrema
from video2reward.rewards.data import VideoDataset
from video2reward.rewards.vip import VIP, VIPConfig


@dataclasses.dataclass(frozen=True)
class UVDConfig(VIPConfig):
    method: str = "uvd"
    min_interval: int = 18  # frames between milestones (official default, 30 fps video)
    smooth_gamma: float = 0.08  # RBF kernel-regression bandwidth (official default)
    max_subgoals: int = 8
    pass_fraction: float = 0.2  # a subgoal is reached within this fraction of its phase distance

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_interval < 1 or self.smooth_gamma <= 0 or self.max_subgoals < 1:
            raise ValueError("min_interval, smooth_gamma and max_subgoals must be positive")
        if not 0 < self.pass_fraction < 1:
            raise ValueError("pass_fraction must be in (0, 1)")


def kernel_smooth(y: np.ndarray, gamma: float) -> np.ndarray:
    """Nadaraya-Watson regression of y over x = 0..T-1 with an RBF kernel exp(-gamma dx^2)."""
    x = np.arange(len(y), dtype=np.float64)
    w = np.exp(-gamma * (x[:, None] - x[None, :]) ** 2)
    return (w @ y) / w.sum(1)


def decompose(embeddings: np.ndarray, min_interval: int = 18, gamma: float = 0.08,
              normalize_curve: bool = False) -> list[int]:
    """Milestone frame indices (ascending, the last is T-1) of one video's embeddings (T, D)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"embeddings must be (T, D) with T >= 1, got {emb.shape}")
    goal = len(emb) - 1
    goals = [goal]
    while goal > min_interval:
        d = np.linalg.norm(emb[: goal + 1] - emb[goal], axis=1)
        if normalize_curve:
            d = d / max(float(d[0]), 1e-12)
        maxima = argrelextrema(kernel_smooth(d, gamma), np.greater)[0]
        new = next((int(m) for m in maxima[::-1]
                    if goal - m > min_interval and m > min_interval), None)
        if new is None:
            break
        goal = new
        goals.append(goal)
    return goals[::-1]


class UVD(VIP):
    method = "uvd"
    config_cls = UVDConfig
    config: UVDConfig
    subgoals: torch.Tensor
    phase_ref: torch.Tensor
    n_subgoals: torch.Tensor

    def __init__(self, config: UVDConfig):
        super().__init__(config)
        m, d = config.max_subgoals, config.embed_dim
        self.register_buffer("subgoals", torch.zeros(m, d))
        self.register_buffer("phase_ref", torch.ones(m))
        self.register_buffer("n_subgoals", torch.ones((), dtype=torch.long))

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        super().calibrate(data)
        was_training = self.training
        self.eval()
        per_demo = []
        for i in range(len(data)):
            x = data.frames_tensor(np.full(data.lengths[i], i), np.arange(data.lengths[i]),
                                   self.device)
            e = self.embed_frames(x).cpu().numpy()
            idx = decompose(e, self.config.min_interval, self.config.smooth_gamma)
            per_demo.append((e, idx[-self.config.max_subgoals:]))
        counts = np.bincount([len(idx) for _, idx in per_demo])
        k = int(counts.argmax())
        chosen = [(e, idx) for e, idx in per_demo if len(idx) == k]
        sub = np.stack([e[idx] for e, idx in chosen]).mean(0)  # (K, D)
        prev = [np.array([0, *idx[:-1]], dtype=np.int64) for _, idx in chosen]
        ref = np.median(np.stack([np.linalg.norm(e[idx] - e[p], axis=1)
                                  for (e, idx), p in zip(chosen, prev, strict=True)]), 0)
        self.subgoals.zero_()
        self.subgoals[:k] = torch.as_tensor(sub, dtype=torch.float32)
        self.phase_ref.fill_(1.0)
        self.phase_ref[:k] = torch.as_tensor(np.maximum(ref, 1e-6), dtype=torch.float32)
        self.n_subgoals.fill_(k)
        self.train(was_training)

    def subgoal_sequence(self, goal: torch.Tensor | None) -> torch.Tensor:
        k = int(self.n_subgoals)
        sub = self.subgoals[:k].clone()
        if goal is not None:
            sub[-1] = self.embed_frames(goal)[0]
        return sub

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        e = self.embed_frames(frames)
        sub = self.subgoal_sequence(goal)
        dist_t = torch.cdist(e, sub)  # (T, K)
        if goal is None and len(self.goal_set):  # older checkpoints: the mean last subgoal
            dist_t[:, -1] = self.goal_distance(e, None)
        dist = dist_t.cpu().numpy()
        ref = self.phase_ref[: len(sub)].cpu().numpy()
        rel = dist / ref[None]
        k_total = len(sub)
        progress = np.empty(len(e), np.float32)
        phase = 0
        for t in range(len(e)):
            while phase < k_total - 1 and (rel[t, phase] < self.config.pass_fraction
                                           or rel[t, phase + 1] < rel[t, phase]):
                phase += 1
            progress[t] = (phase + 1.0 - rel[t, phase]) / k_total
        reward = np.zeros_like(progress)
        reward[1:] = np.diff(progress)
        return reward, progress
