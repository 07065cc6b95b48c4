"""Rank2Reward (Yang et al., RSS 2024): a progress ranker from expert videos plus an online
expert-vs-agent discriminator.

    v2r reward train method=rank2reward data=demos.zarr out=runs/r2r
    model = load_reward_model("runs/r2r")
    model.update(agent_frames)                  # online, during RL: (N, H, W, 3) uint8
    model.score(frames).reward                  # log p_RF(s) + alpha (log D(s) - log(1 - D(s)))

Ranker: p_RF(s) = sigmoid(u(s)), trained on pairs (s_i, s_j) drawn from the same expert video,
the later frame preferred. Two forms of the loss (``rank_loss``):
- ``per_frame`` (default; the official ``_train_ranking_step``): each frame's own logit is pushed
  toward "I am the later one of the pair": BCE(u(s_i), [i > j]) + BCE(u(s_j), [j > i]).
- ``bradley_terry`` (the paper's equation): P(s_j later than s_i) = sigmoid(u(s_j) - u(s_i)),
  BCE on the difference.
The default is ``per_frame`` because the reward uses log p_RF(s) itself, not differences: the
Bradley-Terry loss only sees u(s_j) - u(s_i), so u is free up to an additive constant and
sigmoid(u) has no fixed meaning; the per-frame loss pins sigmoid(u(s)) to the probability that s
is later than a random frame of the same demo, i.e. an absolute progress in [0, 1].
Pairs are sampled as in the official code (both indices uniform over the video); ties are
redrawn. The official mixup option is not implemented.

Goal-conditioned variant (``goal_conditioned=true``): u(s, g) reads [e_s, e_g], trained with g =
the demo's last frame; scoring uses the given goal or the training demos' medoid last frame.
Trained on its own goals only (the official code), the ranker learns to ignore g: a goal from
another task still gives a rising progress (twin reach: counterfactual Spearman 1.0). So, not in
the paper and off with ``other_goal_fraction=0``: that fraction of each batch pairs the frames
with another demo's last frame (another scene), and neither frame is progress toward it
(per-frame form: both labels 0; Bradley-Terry form: target 1/2, no order).

Discriminator: D(s) = sigmoid(w(s)) separates expert frames (label 1; a bank of training-demo
frames kept in the checkpoint) from agent frames (label 0) with balanced BCE; ``update`` takes
one Adam step on a batch of agent frames. Its last layer starts at zero, so D = 1/2 and the
alpha term is 0 until the first update. Reward (official ``_calculate_reward``):
r = log clip(p, eps, 1-eps) + alpha (log clip(D) - log(1 - clip(D))), eps = 1e-6 by default.
Progress = p_RF(s).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from video2reward.compute.device import from_host, host_scalars
from video2reward.data.images import prepare_frames
from video2reward.rewards.base import (
    RewardConfig,
    RewardModel,
    check_frames,
    hwc_to_input,
    medoid_last_frame,
    to_tensor,
)
from video2reward.rewards.data import VideoDataset, augment
from video2reward.rewards.encoders import build_encoder


@dataclasses.dataclass(frozen=True)
class Rank2RewardConfig(RewardConfig):
    method: str = "rank2reward"
    augment: str = "shift"  # the official code uses DrQ-v2's random shift
    rank_loss: str = "per_frame"  # "per_frame" (official code) or "bradley_terry" (paper)
    goal_conditioned: bool = False
    # goal_conditioned only: fraction of pairs given another demo's goal, labelled "no
    # progress" (see the module docstring; 0 = the official code)
    other_goal_fraction: float = 0.25
    hidden_dim: int = 256
    alpha: float = 1.0  # weight of the discriminator log-odds in the reward
    prob_eps: float = 1e-6  # probabilities are clipped to [eps, 1 - eps] before logs
    disc_lr: float = 3e-4
    expert_bank_frames: int = 512  # expert frames kept for discriminator updates

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank_loss not in ("per_frame", "bradley_terry"):
            raise ValueError(
                f"rank_loss must be per_frame or bradley_terry, got {self.rank_loss!r}"
            )
        if not 0 < self.prob_eps < 0.5:
            raise ValueError("prob_eps must be in (0, 0.5)")
        if not 0.0 <= self.other_goal_fraction < 1.0:
            raise ValueError(f"other_goal_fraction must be in [0, 1), got "
                             f"{self.other_goal_fraction}")
        if self.alpha < 0 or self.disc_lr <= 0 or self.expert_bank_frames < 1:
            raise ValueError("alpha must be >= 0, disc_lr > 0, expert_bank_frames >= 1")


def per_frame_rank_loss(u_i: torch.Tensor, u_j: torch.Tensor, i_later: torch.Tensor,
                        wrong_goal: torch.Tensor | None = None) -> torch.Tensor:
    """Official form: each logit is a classifier of "this frame is the later one".

    Pairs marked ``wrong_goal`` (goal from another demo) label both frames 0.
    """
    y_i, y_j = i_later.float(), 1.0 - i_later.float()
    if wrong_goal is not None:
        y_i, y_j = y_i * ~wrong_goal, y_j * ~wrong_goal
    return 0.5 * (F.binary_cross_entropy_with_logits(u_i, y_i)
                  + F.binary_cross_entropy_with_logits(u_j, y_j))


def bradley_terry_loss(u_i: torch.Tensor, u_j: torch.Tensor, i_later: torch.Tensor,
                       wrong_goal: torch.Tensor | None = None) -> torch.Tensor:
    """Paper form: P(i later than j) = sigmoid(u_i - u_j); a wrong goal's target is 1/2."""
    y = i_later.float()
    if wrong_goal is not None:
        y = torch.where(wrong_goal, torch.full_like(y, 0.5), y)
    return F.binary_cross_entropy_with_logits(u_i - u_j, y)


def reward_from_probs(p: torch.Tensor, d: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    p = p.clamp(eps, 1 - eps)
    d = d.clamp(eps, 1 - eps)
    return torch.log(p) + alpha * (torch.log(d) - torch.log1p(-d))


class Rank2Reward(RewardModel):
    method = "rank2reward"
    config_cls = Rank2RewardConfig
    config: Rank2RewardConfig
    default_goal: torch.Tensor
    expert_bank: torch.Tensor
    data_sized_buffers = ("expert_bank",)  # its size is only known once calibrated

    def __init__(self, config: Rank2RewardConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                     config.pretrained_path)
        d_in = config.embed_dim * (2 if config.goal_conditioned else 1)
        self.ranker = nn.Sequential(nn.Linear(d_in, config.hidden_dim), nn.ReLU(),
                                    nn.Linear(config.hidden_dim, 1))
        self.disc_encoder = build_encoder("conv", config.image_size_px, config.embed_dim)
        self.disc_head = nn.Sequential(nn.ReLU(), nn.Linear(config.embed_dim, 1))
        last = self.disc_head[-1]
        if isinstance(last, nn.Linear):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        s = config.image_size_px
        self.register_buffer("default_goal", torch.zeros(1, 3, s, s))
        self.register_buffer("expert_bank", torch.zeros(0, s, s, 3, dtype=torch.uint8))
        self._disc_opt: torch.optim.Optimizer | None = None
        self._disc_rng = np.random.default_rng(config.seed + 7)

    @property
    def uses_goal(self) -> bool:
        return self.config.goal_conditioned

    # -- ranker
    def logits(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        e = self.encoder(x)
        if self.config.goal_conditioned:
            if g is None:
                raise ValueError("goal-conditioned ranker needs goal frames")
            eg = self.encoder(g)
            e = torch.cat([e, eg.expand_as(e)], -1)
        return self.ranker(e).squeeze(-1)

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        b = self.config.batch_size
        ep: np.ndarray = np.asarray(rng.integers(0, len(data), size=b))
        n = data.lengths[ep]
        i = (rng.random(b) * n).astype(np.int64)
        j = (rng.random(b) * n).astype(np.int64)
        for _ in range(100):
            tie = i == j
            if not tie.any():
                break
            j[tie] = (rng.random(int(tie.sum())) * n[tie]).astype(np.int64)
        wrong: np.ndarray = np.zeros(b, dtype=bool)
        ep_goal = ep
        if self.config.goal_conditioned and self.config.other_goal_fraction and len(data) > 1:
            wrong = np.asarray(rng.random(b) < self.config.other_goal_fraction)
            ep_goal = np.where(wrong, data.other_episodes(ep, rng), ep)
        cols: list[tuple[np.ndarray, np.ndarray]] = [(ep, i), (ep, j)]
        if self.config.goal_conditioned:
            cols.append((ep_goal, data.lengths[ep_goal] - 1))
        k = len(cols)
        eps, ts = (np.stack(c, 1).reshape(-1) for c in zip(*cols, strict=True))
        s = data.size_px
        x = data.frames_tensor(eps, ts, self.device).view(b, k, 3, s, s)
        x = augment(x, self.config.augment, rng, self.config.crop_scale_min)
        return {"frames": x, "i_later": from_host(i > j, self.device),
                "wrong_goal": from_host(wrong, self.device)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        b, k = x.shape[:2]
        flat = x.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        e = self.encoder(flat).view(b, k, -1)
        if self.config.goal_conditioned:
            u_i = self.ranker(torch.cat([e[:, 0], e[:, 2]], -1)).squeeze(-1)
            u_j = self.ranker(torch.cat([e[:, 1], e[:, 2]], -1)).squeeze(-1)
        else:
            u_i, u_j = self.ranker(e[:, 0]).squeeze(-1), self.ranker(e[:, 1]).squeeze(-1)
        y, wrong = batch["i_later"], batch["wrong_goal"]
        if self.config.rank_loss == "per_frame":
            loss = per_frame_rank_loss(u_i, u_j, y, wrong)
        else:
            loss = bradley_terry_loss(u_i, u_j, y, wrong)
        right = ~wrong
        # Mean over the right-goal pairs, 0 when there are none (no host read to branch on).
        acc = (((u_i > u_j) == y) & right).sum() / right.sum().clamp_min(1)
        return loss, {"loss": loss.detach(), "rank_accuracy": acc.detach()}

    # -- discriminator
    def disc_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.disc_head(self.disc_encoder(x)).squeeze(-1))

    def update(self, agent_frames: np.ndarray) -> dict[str, float]:
        """One discriminator step: agent frames (N, H, W, 3) uint8 vs as many expert frames."""
        frames = check_frames(agent_frames, "agent_frames")
        if self.expert_bank.shape[0] == 0:
            raise RuntimeError("no expert frames: train or calibrate the model before update()")
        if self._disc_opt is None:
            params = list(self.disc_encoder.parameters()) + list(self.disc_head.parameters())
            self._disc_opt = torch.optim.Adam(params, lr=self.config.disc_lr)
        n = len(frames)
        pick = self._disc_rng.integers(0, self.expert_bank.shape[0], size=n)
        # The bank lives on the model's device: index it there (no round trip via the host).
        expert = hwc_to_input(self.expert_bank[from_host(pick, self.expert_bank.device)])
        agent = to_tensor(prepare_frames(frames, self.config.image_size_px), self.device)
        x = torch.stack([expert, agent], 1)  # (N, 2, 3, S, S)
        x = augment(x, "shift", self._disc_rng).flatten(0, 1)
        labels = (torch.arange(2 * n, device=self.device) % 2 == 0).float()  # expert 1, agent 0
        was_training = self.training
        self.train()
        with torch.enable_grad():
            logits = self.disc_head(self.disc_encoder(x.contiguous(
                memory_format=torch.channels_last))).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            self._disc_opt.zero_grad(set_to_none=True)
            loss.backward()
            self._disc_opt.step()
        self.train(was_training)
        acc = ((logits > 0).float() == labels).float().mean()
        return host_scalars({"disc_loss": loss.detach(), "disc_accuracy": acc})

    # -- calibration and scoring
    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        self.default_goal.copy_(to_tensor(medoid_last_frame(data)[None], self.device))
        rng = np.random.default_rng(self.config.seed)
        idx = rng.choice(len(data.frames), size=min(self.config.expert_bank_frames,
                                                    len(data.frames)), replace=False)
        self.expert_bank = torch.from_numpy(data.frames[np.sort(idx)]).to(self.device)

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        g = None
        if self.config.goal_conditioned:
            g = self.default_goal if goal is None else goal
        u = torch.cat([self.logits(c, g) for c in frames.split(self.score_chunk)])
        p = torch.sigmoid(u)
        d = torch.cat([self.disc_prob(c) for c in frames.split(self.score_chunk)])
        r = reward_from_probs(p, d, self.config.alpha, self.config.prob_eps)
        return r.cpu().numpy(), p.cpu().numpy()


class OnlineDiscriminator:
    """Rank2Reward's discriminator trained online on the agent's recent frames, and the one
    owner of its schedule: ``steps`` discriminator steps each time ``every_frames`` more agent
    frames have been shown to it (:meth:`observe`), once it holds ``min_frames``.

    Both places it runs use it the same way: the twin trainer shows it one frame per agent
    step (so ``reward.disc_update_every_steps`` agent steps; the official code: 20 steps every
    2000), the reward node every camera frame it scores, and each calls :meth:`train_if_due`.
    Frames are kept in a ring of ``capacity``; each step draws ``batch`` of them uniformly.
    """

    def __init__(
        self,
        model: Any,  # Rank2Reward, or any reward model with update(frames) -> metrics (RND)
        batch: int,
        capacity: int,
        every_frames: int = 0,
        steps: int = 1,
        min_frames: int = 0,
        seed: int = 0,
    ):
        if every_frames < 0 or steps < 1:
            raise ValueError(f"need every_frames >= 0 and steps >= 1, got {every_frames}, {steps}")
        self.model, self.batch = model, batch
        self.every_frames, self.steps = every_frames, steps
        self.min_frames = max(batch, min_frames)
        self.frames: deque[np.ndarray] = deque(maxlen=capacity)
        self._rng = np.random.default_rng(seed)
        self.num_updates = 0
        self.shown = 0  # agent frames observed so far
        self._next_burst = every_frames

    def observe(self, frames: np.ndarray) -> None:
        """Agent frames (N, H, W, 3) uint8, newest last."""
        self.frames.extend(frames)
        self.shown += len(frames)

    @property
    def due(self) -> bool:
        """A burst is owed (``every_frames`` shown since the last) and enough frames are held."""
        return bool(self.every_frames) and self.shown >= self._next_burst and (
            len(self.frames) >= self.min_frames
        )

    def train_if_due(self) -> dict[str, float]:
        """One burst of ``steps`` steps when :attr:`due` (at most one per call: frames shown
        in a lump, e.g. a whole episode, owe one burst); its mean metrics, else ``{}``."""
        if not self.due:
            return {}
        self._next_burst = (self.shown // self.every_frames + 1) * self.every_frames
        return self.train(self.steps)

    def __len__(self) -> int:
        return len(self.frames)

    def train(self, steps: int = 1) -> dict[str, float]:
        """``steps`` discriminator steps (none before ``batch`` frames); mean metrics."""
        if len(self.frames) < self.batch:
            return {}
        sums: dict[str, float] = {}
        for _ in range(steps):
            pick = self._rng.integers(0, len(self.frames), self.batch)
            self.num_updates += 1
            for k, v in self.model.update(np.stack([self.frames[i] for i in pick])).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / steps for k, v in sums.items()}
