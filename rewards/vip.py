"""VIP: Value-Implicit Pre-training (Ma et al., ICLR 2023), trained on task demos.

    v2r reward train method=vip data=demos.zarr out=runs/vip
    model = load_reward_model("runs/vip"); model.score(frames, goal).reward

The embedding phi defines a goal-conditioned value V(o; g) = -||phi(o) - phi(g)||_2. Training
samples, from one video, a sub-trajectory start o_0 (index i), a goal g (index j > i), and a
transition (o_t, o_t+1) with i <= t < j, o_t+1 = min(t+1, j); the reward is r = -1 (the official
loader's ``float(t == j) - 1``, always -1 since t < j). The loss (paper Eq. 5, official
``trainer.py``) is

    L = (1 - gamma) E[-V(o_0; g)] + log E[exp(-(r + gamma V(o_t+1; g) - V(o_t; g)))]

with gamma = 0.98. The log-mean-exp is computed with ``logsumexp - log N`` (the official code
adds 1e-8 inside the log instead; the two agree unless the mean underflows). Optional terms, as
in the official code: ``num_negatives`` extra log-mean-exp terms on transitions shuffled across
the batch (pairing them with other samples' goals, r = -1), and L1/L2 penalties on the mean
embedding norms. Augmentation is the trajectory-consistent random resized crop ("rctraj"):
o_0, g, o_t, o_t+1 of a sample share one crop.

Demos are cut 10 frames after their first successful frame (``default_trim_after_success``),
not 2 as for the other methods. When every sampled transition makes progress (demos cut right
at success), scaling the embedding up lowers the log-mean-exp term without bound faster than
the (1 - gamma) start term grows, and the loss diverges (seen on 40 twin reach demos: -1e4
after 200 steps). A few idle frames that look alike but lie at different times pin
d(o_t) ~ d(o_t+1) and keep the scale bounded; keeping the whole idle tail (push: 90 of 121
frames) instead drowns the task in it (held-out Spearman 0.14 vs 0.80 at 10 frames).

Batch size (twin push, seeds 0-2, 600 steps; Spearman / AUROC / counterfactual Spearman): at
the official 32, 0.97 / 0.95 / -0.28, 0.99 / 0.92 / 0.58 (fails: a reach goal still raises
progress) and 0.87 / 0.92 / -0.18; at 64, 0.99 / 1.00 / -0.28, 0.97 / 1.00 / 0.37 and
0.98 / 0.98 / -0.12. 1500 steps at 32 (1.25x the samples of 600 at 64) fix seed 2 but not
seed 1 (counterfactual 0.68), so it is the log-mean-exp estimate, not the sample count.

RL reward (paper Sec. 5): R(o_t, o_t+1; g) = S(o_t+1; g) - S(o_t; g), S = -||phi(o) - phi(g)||.
Differences from the official setup, for this machine: the default encoder is the small
DrQ-v2 conv net at 84 px trained from scratch for ``steps`` (the paper pre-trains a ResNet-50 on
Ego4D); ``encoder=resnet50 pretrained_path=...`` loads the official weights for fine-tuning.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import from_host
from video2reward.rewards.base import GoalDistanceModel, RewardConfig
from video2reward.rewards.data import VideoDataset, augment
from video2reward.rewards.encoders import build_encoder


@dataclasses.dataclass(frozen=True)
class VIPConfig(RewardConfig):
    method: str = "vip"
    lr: float = 3e-4  # official 1e-4 for a ResNet over 10k+ steps; the small conv net takes more
    # The official config uses 32. The TD term is a log-mean-exp over the batch, a biased
    # estimate of log E[exp(.)] that gets better with more samples; 64 is what made twin push
    # meet the bar on every seed (module docstring).
    batch_size: int = 64
    gamma: float = 0.98  # discount of the implicit value function (paper)
    num_negatives: int = 0  # shuffled-negative terms (official option, default 0)
    l1_weight: float = 0.0  # weight of mean ||phi||_1 (official config: 0)
    l2_weight: float = 0.0  # weight of mean ||phi||_2 (official config: 0)
    # Share of samples whose goal is the task's goal photographed in another demo: the goal
    # index is the sample's own first successful frame (o_0 and o_t come before it), the goal
    # image a frame of another demo's goal set. A lab scores against one goal photograph
    # while every scene differs a little; the paper always takes the goal from the same
    # video (0 = the paper).
    demo_goal_fraction: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.demo_goal_fraction <= 1.0:
            raise ValueError(f"demo_goal_fraction must be in [0, 1], got {self.demo_goal_fraction}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        if self.l1_weight < 0 or self.l2_weight < 0:
            raise ValueError("l1_weight and l2_weight must be >= 0")


def log_mean_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, dim=0) - math.log(x.shape[0])


def vip_loss(
    e0: torch.Tensor, eg: torch.Tensor, es0: torch.Tensor, es1: torch.Tensor,
    reward: torch.Tensor, gamma: float, num_negatives: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The VIP objective on embeddings (B, D) of o_0, g, o_t, o_t+1; reward (B,)."""

    def value(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(a - g, dim=-1)

    v0, vs, vs1 = value(e0, eg), value(es0, eg), value(es1, eg)
    start_term = (1 - gamma) * (-v0).mean()
    td_term = log_mean_exp(-(reward + gamma * vs1 - vs))
    loss = start_term + td_term
    for _ in range(num_negatives):
        perm = torch.randperm(es0.shape[0], generator=generator).to(es0.device, non_blocking=True)
        vn, vn1 = value(es0[perm], eg), value(es1[perm], eg)
        loss = loss + log_mean_exp(-(-1.0 + gamma * vn1 - vn))
    return loss, {"vip_loss": loss.detach(), "start_term": start_term.detach(),
                  "td_term": td_term.detach(), "v0": v0.mean().detach()}


class VIP(GoalDistanceModel):
    method = "vip"
    config_cls = VIPConfig
    config: VIPConfig
    potential_difference = True  # r = S(o_t+1) - S(o_t)
    default_trim_after_success = 10  # see the module docstring

    def __init__(self, config: VIPConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                     config.pretrained_path)
        self._perm_gen = torch.Generator().manual_seed(config.seed)

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        b = self.config.batch_size
        ep = rng.integers(0, len(data), size=b)
        n = data.lengths[ep]
        # Official sampler: start in [0, T-2), goal in (start, T), o_t in [start, goal).
        start = np.floor(rng.random(b) * np.maximum(n - 2, 1)).astype(np.int64)
        goal = start + 1 + np.floor(rng.random(b) * np.maximum(n - start - 1, 1)).astype(np.int64)
        goal = np.minimum(goal, n - 1)
        t = start + np.floor(rng.random(b) * np.maximum(goal - start, 1)).astype(np.int64)
        goal_idx, ep_goal = goal, ep
        if self.config.demo_goal_fraction and len(data) > 1:
            first = data.first_success[ep]
            # another demo's goal image; this demo's own success frame as the goal index
            swap = (rng.random(b) < self.config.demo_goal_fraction) & (first >= 1)
            start = np.where(swap, np.floor(rng.random(b) * np.maximum(first - 1, 1)), start
                             ).astype(np.int64)  # fmt: skip
            goal = np.where(swap, first, goal)
            t = np.where(swap, start + np.floor(rng.random(b) * np.maximum(goal - start, 1)), t
                         ).astype(np.int64)  # fmt: skip
            others = data.other_episodes(ep, rng)
            ep_goal = np.where(swap, others, ep)
            goal_idx = np.where(swap, data.sample_at_goal(others, rng)[1], goal)
        t1 = np.minimum(t + 1, goal)
        idx = np.stack([start, goal_idx, t, t1], 1)  # (B, 4)
        eps = np.stack([ep, ep_goal, ep, ep], 1)
        x = data.frames_tensor(eps.reshape(-1), idx.reshape(-1), self.device)
        s = data.size_px
        x = augment(x.view(b, 4, 3, s, s), self.config.augment, rng, self.config.crop_scale_min)
        reward = from_host((t == goal).astype(np.float32) - 1.0, self.device)
        return {"frames": x, "reward": reward}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        b = x.shape[0]
        emb = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        e = emb.view(b, 4, -1)
        loss, metrics = vip_loss(e[:, 0], e[:, 1], e[:, 2], e[:, 3], batch["reward"],
                                 self.config.gamma, self.config.num_negatives, self._perm_gen)
        if self.config.l1_weight or self.config.l2_weight:
            l1 = torch.linalg.vector_norm(emb, ord=1, dim=-1).mean()
            l2 = torch.linalg.vector_norm(emb, ord=2, dim=-1).mean()
            loss = loss + self.config.l1_weight * l1 + self.config.l2_weight * l2
        metrics["loss"] = loss.detach()
        return loss, metrics

    def reward_from_distance(self, d: torch.Tensor) -> torch.Tensor:
        s = -d  # S(o; g)
        r = torch.zeros_like(s)
        r[1:] = s[1:] - s[:-1]
        return r
