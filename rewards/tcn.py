"""TCN: single-view Time-Contrastive Networks (Sermanet et al., ICRA 2018).

    v2r reward train method=tcn data=demos.zarr out=runs/tcn
    model = load_reward_model("runs/tcn"); model.score(frames, goal).reward

Frames close in time should embed close together, frames far apart far away. The loss is the
authors' single-view one (``singleview_tcn_loss`` of their TensorFlow code, which HOLD-C's
official loss is ported from): a batch holds ``batch_size`` clips of ``clip_frames`` frames,
each evenly strided over one video; every frame is an anchor, its positives are the frames of
its video within ``pos_window`` frames, its negatives the frames of its video farther than
``neg_window`` and (``cross_clip_negatives``, the authors' multi-sequence mode) every frame of
the other videos; each (anchor, positive) pair takes its semi-hard negative (the closest
negative farther than the positive, else the farthest). With f the L2-normalised embedding
scaled by ``alpha`` (as in kekeblom/tcn), the loss is the mean over pairs of
max(0, ||f(a) - f(p)||^2 + margin - ||f(a) - f(n)||^2).

Settings, measured on 50 twin demos (held-out Spearman of progress against time; counterfactual
check): kekeblom/tcn's sampler (one random triplet per sample, margin 2) reaches zero loss
within 200 steps and gives push 0.56. The semi-hard loss with margin 0.2 (HOLD-C's official
margin) and windows 4 / 8 frames gives push 0.94 and reach 1.00 (seed 0); with negatives from
the anchor's own video only, push 0.96 but a push goal still raises progress on reach
(counterfactual Spearman 0.65: nothing static in a video, such as the reach target, is ever
contrasted).

Windows and at-goal frames (twin push, seeds 0-4, Spearman / AUROC). Twin demos reach the
goal in 30-45 frames. With windows of 4 / 8 frames over 16-frame clips, progress stayed within
~0.1 over the first half of an episode: the loss orders frames only up to the negative window,
and beyond it every frame is just "far". Spearman 0.94 / 0.86 / 0.90 / 0.92 / 0.82. Windows of
6 / 12 frames over 24-frame clips (``pos_window``, ``neg_window``, ``clip_frames``) order more
of an episode. 8 / 16 over 32-frame clips with at-goal frames read 0.97-0.99, but a reach goal
then raised progress on push seed 1 (counterfactual Spearman 0.66).
The other half is the AUROC (0.91 / 0.91 / 0.96 / 0.82 / 0.88 at 4 / 8): held-out push
successes run ~90 steps past success with the tool lifted, which no training frame showed, so
progress fell from 1 to ~0.5 there. ``at_goal_frames`` (4) adds to each clip frames from the
first successful one to the end of the recording, all at the first success's time, so they
are positives of the goal frame: AUROC 1.00 on all five seeds at 4 / 8 windows (Spearman
0.87-0.95). Both together (the defaults): Spearman 0.94 / 0.95 / 0.98 / 0.91 / 0.94, AUROC
1.00 / 0.99 / 1.00 / 0.99 / 0.97, counterfactual passing on every seed. Unlabelled videos
(no per-step success) repeat their last frame instead. TCN therefore reads whole episodes
(``default_trim_after_success = -1``); clips stride over the frames up to
``KEEP_AFTER_SUCCESS`` after the first success, as the other methods' demos are cut.

Reward (paper Sec. IV-B, with the goal embedding in place of the demo frame being imitated):
r_t = -a d_t^2 - b sqrt(c + d_t^2), d_t = ||f(o_t) - f(g)||, a Huber-like shaping.

"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import from_host
from video2reward.rewards.base import GoalDistanceModel, RewardConfig, RewardError
from video2reward.rewards.data import KEEP_AFTER_SUCCESS, VideoDataset, augment
from video2reward.rewards.encoders import Normalized, build_encoder


@dataclasses.dataclass(frozen=True)
class TCNConfig(RewardConfig):
    method: str = "tcn"
    augment: str = "shift"
    batch_size: int = 4  # clips per batch, one video each
    clip_frames: int = 24  # frames per clip, strided over the video up to just after the goal
    pos_window: int = 6  # frames: positives within this distance of the anchor
    neg_window: int = 12  # frames: negatives farther than this from the anchor
    margin: float = 0.2  # triplet margin on squared distances (kekeblom/tcn: 2.0, see above)
    alpha: float = 10.0  # embedding norm after L2 normalisation (kekeblom/tcn)
    cross_clip_negatives: bool = True  # frames of the batch's other videos are negatives too
    # Frames added to each clip from the first successful frame to the end of the recording,
    # all at the time of that first success (module docstring). Episodes without per-step
    # success labels (e.g. plain videos) add copies of their last frame, at its time.
    at_goal_frames: int = 4
    # The at-goal frames of different clips are positives of each other (never negatives), as
    # simultaneous views are in multi-view TCN: every demo's goal set is one state of the task.
    # With cross-clip negatives alone another demo's goal frames are pushed away from this
    # demo's, and one goal image from another episode (what a lab has) scored 3 of 5 Meta-World
    # validation tasks at AUROC 0.30-0.73. False = the behaviour before. Needs at_goal_frames.
    cross_clip_goal_positives: bool = True
    reward_a: float = 1.0  # weight of the squared distance in the reward
    reward_b: float = 1.0  # weight of the sqrt term
    reward_c: float = 1e-3  # inside the sqrt, keeps its gradient finite at d = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.pos_window < self.neg_window:
            raise ValueError(f"need 1 <= pos_window < neg_window, got {self.pos_window}, "
                             f"{self.neg_window}")
        if self.clip_frames < 3:
            raise ValueError(f"clip_frames must be >= 3, got {self.clip_frames}")
        if self.margin <= 0 or self.alpha <= 0:
            raise ValueError("margin and alpha must be > 0")
        if self.at_goal_frames < 0:
            raise ValueError(f"at_goal_frames must be >= 0, got {self.at_goal_frames}")


def sample_clips(data: VideoDataset, rng: np.random.Generator, clips: int, frames: int,
                 device: torch.device, lengths: np.ndarray | None = None,
                 ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``clips`` random videos, ``frames`` frames each, evenly strided over the video (its
    first ``lengths[i]`` frames if given) from a random offset -> (clips, frames, 3, S, S)
    float frames, their (clips, frames) indices and the (clips,) episode indices."""
    ep = rng.integers(0, len(data), size=clips)
    n = (data.lengths if lengths is None else lengths)[ep]
    stride = np.maximum(1, n // frames)
    start = (rng.random(clips) * np.maximum(1, n - stride * (frames - 1))).astype(np.int64)
    t = np.minimum(start[:, None] + stride[:, None] * np.arange(frames)[None], n[:, None] - 1)
    x = data.frames_tensor(np.repeat(ep, frames), t.reshape(-1), device)
    s = data.size_px
    return x.view(clips, frames, 3, s, s), t, ep


def tc_loss(emb: torch.Tensor, timesteps: torch.Tensor, sequence_ids: torch.Tensor,
            pos_radius: int, neg_radius: int, margin: float, cross_clip_negatives: bool = True,
            goal: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-contrastive triplet loss with semi-hard negatives; returns (loss, #positive pairs).

    ``cross_clip_negatives=False`` takes negatives from the anchor's own clip only. ``goal``
    (N,) bool marks frames of the goal set: two of them are positives across clips too, never
    negatives.
    """
    d = torch.cdist(emb, emb).pow(2)  # squared pairwise distances (N, N)
    same = sequence_ids[:, None] == sequence_ids[None, :]
    dt = (timesteps[:, None] - timesteps[None, :]).abs()
    pos = same & (dt <= pos_radius)
    neg = (same & (dt > neg_radius)) | (~same if cross_clip_negatives else torch.zeros_like(same))
    if goal is not None:
        both = goal[:, None] & goal[None, :]
        pos |= both
        neg &= ~both
    pos.fill_diagonal_(False)
    pos &= neg.any(1, keepdim=True)  # an anchor without any negative (short video) adds nothing
    # For anchor i and positive j: semi-hard negative = min over k in neg(i) with d[i,k] > d[i,j];
    # if none exists, the farthest negative of i.
    big = torch.finfo(d.dtype).max
    d_ik = d[:, None, :]  # (i, 1, k)
    cand = neg[:, None, :] & (d_ik > d[:, :, None])  # (i, j, k)
    semi = torch.where(cand, d_ik.expand_as(cand), torch.full_like(d_ik, big).expand_as(cand))
    semi_min = semi.min(-1).values  # (i, j)
    hardest = torch.where(neg, d, torch.full_like(d, -big)).max(-1).values  # (i,)
    negatives = torch.where(cand.any(-1), semi_min, hardest[:, None].expand_as(semi_min))
    hinge = torch.clamp(margin + d - negatives, min=0.0) * pos.float()
    n_pos = pos.sum()
    return hinge.sum() / n_pos.clamp_min(1), n_pos


class TCN(GoalDistanceModel):
    method = "tcn"
    config_cls = TCNConfig
    config: TCNConfig
    default_trim_after_success = -1  # whole episodes: clips end KEEP_AFTER_SUCCESS after it

    def __init__(self, config: TCNConfig):
        super().__init__(config)
        backbone = build_encoder(config.encoder, config.image_size_px, config.embed_dim,
                                 config.pretrained_path)
        self.encoder = Normalized(backbone, config.alpha)

    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        cut = data.cut_lengths(KEEP_AFTER_SUCCESS)  # the frames a clip strides over
        if int(cut.max()) <= cfg.neg_window + 1:
            raise RewardError(
                f"TCN needs videos longer than neg_window+1={cfg.neg_window + 1} frames; "
                f"the longest has {int(cut.max())}: lower neg_window"
            )
        x, t, ep = sample_clips(data, rng, cfg.batch_size, cfg.clip_frames, self.device, cut)
        goal = np.zeros((cfg.batch_size, cfg.clip_frames + cfg.at_goal_frames), bool)
        goal[:, cfg.clip_frames:] = cfg.cross_clip_goal_positives
        if cfg.at_goal_frames:
            # Frames from the first success to the end, at its time; unlabelled episodes repeat
            # their last frame at its time.
            k = cfg.at_goal_frames
            t0, after = data.sample_at_goal(ep, rng, k)
            xa = data.frames_tensor(np.repeat(ep, k), after.reshape(-1), self.device)
            x = torch.cat([x, xa.view(len(ep), k, *x.shape[2:])], 1)
            t = np.concatenate([t, np.repeat(t0[:, None], k, 1)], 1)
        x = augment(x, cfg.augment, rng, cfg.crop_scale_min)
        seq = torch.arange(cfg.batch_size, device=self.device).repeat_interleave(x.shape[1])
        return {"frames": x, "timesteps": from_host(t.reshape(-1), self.device),
                "sequence_ids": seq, "goal": from_host(goal.reshape(-1), self.device)}

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        super().calibrate(data.trimmed(KEEP_AFTER_SUCCESS))  # demos end at the goal

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["frames"]
        e = self.encoder(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        cfg = self.config
        loss, n_pos = tc_loss(e, batch["timesteps"], batch["sequence_ids"], cfg.pos_window,
                              cfg.neg_window, cfg.margin, cfg.cross_clip_negatives,
                              batch.get("goal"))
        return loss, {"loss": loss.detach(), "positives": n_pos}

    def reward_from_distance(self, d: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return -cfg.reward_a * d.pow(2) - cfg.reward_b * torch.sqrt(cfg.reward_c + d.pow(2))
