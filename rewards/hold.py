"""HOLD: functional distances learned from video (Alakuijala et al., ICRA 2023), HOLD-R and HOLD-C.

    v2r reward train method=hold_r data=demos.zarr out=runs/holdr
    v2r reward train method=hold_c data=demos.zarr out=runs/holdc
    model = load_reward_model("runs/holdr"); model.score(frames, goal).reward

Both learn a distance d(s, g) that counts how many steps an expert needs to get from s to g.

HOLD-R regresses it directly: for a frame s_t of a demo, every later frame s_k (k >= t, the
paper's third sum, which uses all future frames as goals) is a goal with target k - t steps;
the loss is the mean squared error (official ``loss_type='mse'``). Targets are divided by
``distance_scale_steps`` during training only, for a well-scaled regression; d is in steps.
The official model is a ViViT over the stacked (s, g) pair; here a shared image encoder embeds
s and g and an MLP reads [e_s, e_g, |e_s - e_g|]. Three additions, each a quarter of a batch
by default (all 0 = the paper):
- wrong goals (``other_goal_fraction``): s paired with a frame of another demo (another scene)
  from before that demo's goal set, regressed to twice the longest demo, so that the distance
  depends on the goal;
- another demo's goal (``demo_goal_fraction``): s paired with a frame of another demo's goal
  set, regressed to the steps s's own demo still needs to its goal. What a lab scores against
  is one goal photographed once, in another episode than the one being scored; trained only on
  its own episode's goals (and every other demo's frames as wrong goals), the head scored 4 of
  5 Meta-World validation tasks at AUROC 0.37-0.50 against such a goal (docs/results.md);
- at-goal pairs (``at_goal_fraction``, data with per-step success labels only): a frame from
  the first successful one to the end of the recording, paired with that first successful
  frame and regressed to 0 steps. The task's goal is a set of states (block on the disc), not
  one frame, and the held-out success episodes of twin push spend 90 steps in that set after
  the expert lifts its tool. Trained only on frames up to the goal, the head reads such a frame,
  which has passed the goal frame, as another scene's: progress -1 on seed 1, push AUROC 0.39
  (0.91, 0.79 on seeds 0, 2). With at-goal pairs: 0.98 (0.94, 0.94). On reach seed 0 a push
  goal then gives a flat progress of -2.2 that rises by 0.04 over an episode (1.03 with the
  true goal); Spearman ranks that as monotonic (0.94), and the counterfactual check passes it
  as flat (``rewards/evaluate.py``).
HOLD-R therefore reads whole recorded episodes (``default_trim_after_success = -1``): the
regression pairs and wrong goals use frames up to ``KEEP_AFTER_SUCCESS`` after the first
successful one (as the other methods' demos are cut), the rest feeds the at-goal pairs only.

HOLD-C learns an embedding with the single-view time-contrastive loss of the official
``holdc_utils.tc_loss``: all frames in a batch of clips are anchors; positives are frames of the
same clip within ``pos_radius`` steps; negatives are frames of the same clip farther than
``neg_radius``, chosen by semi-hard mining (the closest negative farther than the positive, else
the farthest negative), on squared Euclidean distances with ``margin`` (official 2 / 4 / 0.2);
the summed hinge is divided by the number of positive pairs. d(s, g) = ||phi(s) - phi(g)||.
The official loss can also take other clips' frames as negatives, but its batches hold one clip
per device, so it never does; ``cross_clip_negatives=true`` turns that on (see its comment).

Reward for both (paper Eq. 2): r_t = -max(0, d(s_t, g) - d(g, g)) / T, T the mean demo length,
plus an optional sparse bonus ``success_bonus`` when d(s_t, g) - d(g, g) < ``success_threshold``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import from_host
from video2reward.rewards.base import (
    GoalDistanceModel,
    RewardConfig,
    RewardModel,
    medoid_last_frame,
    to_tensor,
)
from video2reward.rewards.data import KEEP_AFTER_SUCCESS, VideoDataset, augment
from video2reward.rewards.encoders import build_encoder, pair_head
from video2reward.rewards.tcn import sample_clips, tc_loss


def _check_bonus(success_bonus: float, success_threshold: float) -> None:
    if success_bonus < 0 or success_threshold < 0:
        raise ValueError("success_bonus and success_threshold must be >= 0")


def hold_reward(excess: torch.Tensor, horizon: float, bonus: float, threshold: float
                ) -> torch.Tensor:
    """excess = max(0, d(s_t, g) - d(g, g)) -> r_t = -excess / T (+ bonus near the goal)."""
    r = -excess / horizon
    if bonus:
        r = r + bonus * (excess < threshold).float()
    return r


# ----------------------------------------------------------------------------- HOLD-R
@dataclasses.dataclass(frozen=True)
class HoldRConfig(RewardConfig):
    method: str = "hold_r"
    augment: str = "rctraj"
    hidden_dim: int = 256  # MLP width of the distance head
    distance_scale_steps: float = 20.0  # targets are divided by this while training
    success_bonus: float = 0.0  # sparse bonus added when within success_threshold steps
    success_threshold: float = 1.0  # steps
    # Not in the paper: this fraction of each batch pairs a frame with a goal from another
    # demo (another scene), regressed to ``other_goal_steps`` x the longest demo. With 0 (the
    # paper) the head never sees a wrong goal, learns to ignore g, and a goal from another task
    # still yields a rising reward (twin reach: counterfactual Spearman 0.95, check fails).
    other_goal_fraction: float = 0.25
    other_goal_steps: float = 2.0
    # Not in the paper either: this fraction of each batch pairs a frame at or after the first
    # successful one with that frame, regressed to 0 (see the module docstring). Needs success
    # labels per step (the recorder and twin write them); without them it draws nothing.
    at_goal_fraction: float = 0.25
    # Not in the paper: this fraction of each batch pairs a frame of one demo with a frame of
    # *another* demo's goal set (its first successful frame to its end; its last frame without
    # labels), regressed to the steps this demo still needs to its own goal. A lab photographs
    # one goal and every episode's scene differs a little; without these pairs the wrong-goal
    # pairs above teach that another demo's frames are all far, and one goal image from another
    # episode scored Meta-World validation tasks at AUROC 0.37-0.50 (4 of 5). With them, wrong
    # goals come from before the other demo's goal set only. 0 = the behaviour before.
    demo_goal_fraction: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_dim < 1 or self.distance_scale_steps <= 0:
            raise ValueError("hidden_dim and distance_scale_steps must be > 0")
        if not 0.0 <= self.other_goal_fraction < 1.0 or self.other_goal_steps <= 0:
            raise ValueError("need 0 <= other_goal_fraction < 1 and other_goal_steps > 0")
        fractions = self.other_goal_fraction + self.at_goal_fraction + self.demo_goal_fraction
        if self.at_goal_fraction < 0 or self.demo_goal_fraction < 0 or fractions >= 1:
            raise ValueError("need at_goal_fraction, demo_goal_fraction >= 0 and "
                             "other_goal_fraction + at_goal_fraction + demo_goal_fraction < 1")
        _check_bonus(self.success_bonus, self.success_threshold)


class HoldR(RewardModel):
    method = "hold_r"
    config_cls = HoldRConfig
    default_trim_after_success = -1  # whole episodes: the tail feeds the at-goal pairs
    # the demos' goal set (embeddings of their last frames): with no goal given, a frame's
    # distance is to the nearest of them (base.py); older checkpoints use the medoid goal
    data_sized_buffers = ("goal_set",)
    optional_buffers = ("goal_set",)
    config: HoldRConfig
    default_goal: torch.Tensor
    goal_set: torch.Tensor
    distance_ref: torch.Tensor
    horizon_ref: torch.Tensor

    def __init__(self, config: HoldRConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                     config.pretrained_path)
        self.head = pair_head(config.embed_dim, config.hidden_dim, 1)
        s = config.image_size_px
        self.register_buffer("default_goal", torch.zeros(1, 3, s, s))
        self.register_buffer("goal_set", torch.zeros(0, config.embed_dim))
        self.register_buffer("distance_ref", torch.ones(()))
        self.register_buffer("horizon_ref", torch.ones(()))

    def distance_steps(self, es: torch.Tensor, eg: torch.Tensor) -> torch.Tensor:
        """Predicted steps from s to g for embeddings (B, D) -> (B,)."""
        h = torch.cat([es, eg, (es - eg).abs()], -1)
        return self.head(h).squeeze(-1) * self.config.distance_scale_steps

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        b = cfg.batch_size
        cut = data.cut_lengths(KEEP_AFTER_SUCCESS)  # the frames regressed over
        ep = rng.integers(0, len(data), size=b)
        n = cut[ep]
        t = (rng.random(b) * n).astype(np.int64)
        k = t + (rng.random(b) * (n - t)).astype(np.int64)  # any future frame, k >= t
        target = (k - t).astype(np.float32)
        ep_goal: np.ndarray = np.asarray(ep).copy()
        # kind < other_goal_fraction: a wrong goal; then at_goal_fraction: at the goal; then
        # demo_goal_fraction: another demo's goal; the rest: a later frame of the same demo.
        kind = rng.random(b)
        bounds = np.cumsum([cfg.other_goal_fraction, cfg.at_goal_fraction,
                            cfg.demo_goal_fraction])  # fmt: skip
        others = data.other_episodes(ep, rng) if len(data) > 1 else ep
        if cfg.other_goal_fraction and len(data) > 1:
            other = kind < bounds[0]
            ep_goal = np.where(other, others, ep)
            # with demo goals, only frames before the other demo's goal set are wrong goals
            before = data.sample_at_goal(others, rng)[0] if cfg.demo_goal_fraction else cut[others]
            k = np.where(other, (rng.random(b) * np.maximum(before, 1)).astype(np.int64), k)
            far = cfg.other_goal_steps * float(cut.max())
            target = np.where(other, far, target).astype(np.float32)
        if cfg.at_goal_fraction:
            at_goal = (kind >= bounds[0]) & (kind < bounds[1]) & (data.first_success[ep] >= 0)
            first, after = data.sample_at_goal(ep, rng)
            t = np.where(at_goal, after, t)
            k = np.where(at_goal, first, k)
            target = np.where(at_goal, 0.0, target).astype(np.float32)
        if cfg.demo_goal_fraction and len(data) > 1:
            demo_goal = (kind >= bounds[1]) & (kind < bounds[2])
            own_goal = data.sample_at_goal(ep, rng)[0]
            ep_goal = np.where(demo_goal, others, ep_goal)
            k = np.where(demo_goal, data.sample_at_goal(others, rng)[1], k)
            steps_left = np.maximum(own_goal - t, 0).astype(np.float32)
            target = np.where(demo_goal, steps_left, target).astype(np.float32)
        x = data.frames_tensor(np.stack([ep, ep_goal], 1).reshape(-1),
                               np.stack([t, k], 1).reshape(-1), self.device)
        s = data.size_px
        x = augment(x.view(b, 2, 3, s, s), self.config.augment, rng, self.config.crop_scale_min)
        return {"frames": x, "target_steps": from_host(target, self.device)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        b = x.shape[0]
        e = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        e = e.view(b, 2, -1)
        pred = self.distance_steps(e[:, 0], e[:, 1])
        scale = self.config.distance_scale_steps
        loss = ((pred - batch["target_steps"]) / scale).pow(2).mean()
        mae = (pred - batch["target_steps"]).abs().mean()
        return loss, {"loss": loss.detach(), "mae_steps": mae.detach()}

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        was_training = self.training
        self.eval()
        data = data.trimmed(KEEP_AFTER_SUCCESS)  # demos end at the goal, as in training pairs
        self.default_goal.copy_(to_tensor(medoid_last_frame(data)[None], self.device))
        ep = np.arange(len(data))
        first = self.embed_frames(data.frames_tensor(ep, np.zeros_like(ep), self.device))
        last = self.embed_frames(data.frames_tensor(ep, data.lengths - 1, self.device))
        excess = (self.distance_steps(first, last) - self.distance_steps(last, last)).clamp_min(0)
        self.distance_ref.fill_(float(excess.median().clamp_min(1e-3)))
        self.horizon_ref.fill_(float(data.lengths.mean()))
        self.goal_set = last.clone()
        self.train(was_training)

    def excess_steps(self, e: torch.Tensor, eg: torch.Tensor) -> torch.Tensor:
        """(T, D) frame and (K, D) goal embeddings -> (T,) predicted steps to the nearest goal,
        less each goal's own reading (d(g, g), the network's offset at the goal), >= 0."""
        t, k = len(e), len(eg)
        d = self.distance_steps(e[:, None].expand(t, k, -1).reshape(t * k, -1),
                                eg[None].expand(t, k, -1).reshape(t * k, -1)).view(t, k)
        return (d - self.distance_steps(eg, eg)[None]).clamp_min(0).amin(1)

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        e = self.embed_frames(frames)
        if goal is None and len(self.goal_set):
            eg = self.goal_set
        else:
            eg = self.embed_frames(self.default_goal if goal is None else goal)
        excess = self.excess_steps(e, eg)
        cfg = self.config
        r = hold_reward(excess, float(self.horizon_ref), cfg.success_bonus, cfg.success_threshold)
        return r.cpu().numpy(), (1.0 - excess / self.distance_ref).cpu().numpy()


# ----------------------------------------------------------------------------- HOLD-C
@dataclasses.dataclass(frozen=True)
class HoldCConfig(RewardConfig):
    method: str = "hold_c"
    augment: str = "rctraj"
    steps: int = 1500  # seeds 0-2 on twin push: Spearman 0.91-0.95; with 600: 0.76-0.99
    batch_size: int = 4  # clips per batch (each clip holds clip_frames frames)
    clip_frames: int = 16  # frames per clip, evenly strided over the whole video
    pos_radius: int = 2  # clip steps (official: 2)
    neg_radius: int = 4  # clip steps (official: 2 * pos_radius)
    margin: float = 0.2  # official pos_neg_margin
    # Frames of other clips as negatives too. The official loss runs on one clip per device
    # (batch 1), so its negatives are frames of the same video; across clips, the same phase
    # of another demo becomes a negative and the embedding learns to tell scenes apart
    # (twin push, 600 steps, seed 0: held-out Spearman 0.70 with, 0.99 without). Meta-World
    # drawer-open goes the other way: 0.85 with (600 steps), 0.03 without (1500 steps).
    cross_clip_negatives: bool = False
    success_bonus: float = 0.0
    success_threshold: float = 0.0  # embedding distance

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.pos_radius < self.neg_radius:
            raise ValueError("need 1 <= pos_radius < neg_radius")
        if self.clip_frames <= self.neg_radius:
            raise ValueError("clip_frames must exceed neg_radius")
        if self.margin <= 0:
            raise ValueError("margin must be > 0")
        _check_bonus(self.success_bonus, self.success_threshold)


class HoldC(GoalDistanceModel):
    method = "hold_c"
    config_cls = HoldCConfig
    config: HoldCConfig

    def __init__(self, config: HoldCConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                     config.pretrained_path)

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        b, k = cfg.batch_size, cfg.clip_frames
        x, _, _ = sample_clips(data, rng, b, k, self.device)
        x = augment(x, cfg.augment, rng, cfg.crop_scale_min)
        steps = torch.arange(k, device=self.device).repeat(b)  # clip steps (stride units)
        seq = torch.arange(b, device=self.device).repeat_interleave(k)
        return {"frames": x, "timesteps": steps, "sequence_ids": seq}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        e = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        cfg = self.config
        loss, n_pos = tc_loss(e, batch["timesteps"], batch["sequence_ids"], cfg.pos_radius,
                              cfg.neg_radius, cfg.margin, cfg.cross_clip_negatives)
        return loss, {"loss": loss.detach(), "positives": n_pos}

    def reward_from_distance(self, d: torch.Tensor) -> torch.Tensor:
        cfg = self.config  # d(g, g) = 0 for an embedding distance
        return hold_reward(d, float(self.horizon_ref), cfg.success_bonus, cfg.success_threshold)
