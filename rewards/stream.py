"""Score a live image stream with a reward model, updating Rank2Reward's discriminator online.

    stream = RewardStream(RewardStreamConfig(ckpt="runs/r2r"))
    for stamp_ns, reward, progress, success in stream.score([(stamp_ns, rgb), ...]):
        publish(...)
    stream.close()

The core of the reward node, without ROS. Frames are scored in arrival order, each together
with the frame before it, so ``reward`` is the model's reward for arriving at a frame from the
previous camera frame. For potential-based rewards (VIP: S(o_t+1) - S(o_t)) the per-frame
rewards between two control steps sum exactly to the transition's reward, whatever the camera
rate; the learner therefore sums the rewards of the frames in (o_t, o_t+1]. Per-state rewards
(HOLD, Rank2Reward, TCN) become the sum over those frames, a constant rescaling.

Rank2Reward's discriminator separates expert frames from the agent's. Agent frames are kept in
a ring buffer; whenever the discriminator's frame schedule owes a burst, a background thread
trains a *copy* of the model on them and swaps the new discriminator weights into the scoring
model under a lock held only for the copy, so scoring never waits for a training step. On
CUDA the trainer runs on a stream of its own (scoring stays on the default stream and never
queues behind a training step), and scoring waits on an event for the swapped-in weights to be
copied.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from video2reward.compute.device import (
    WeightHandoff,
    check_device_name,
    resolve_device,
    training_stream,
)
from video2reward.rewards.base import RewardError, RewardModel, load_reward_model
from video2reward.rewards.rank2reward import OnlineDiscriminator, Rank2Reward


@dataclass(frozen=True)
class RewardStreamConfig:
    ckpt: str = ""  # run folder or .pt of a trained reward model (required)
    goal_image: str = ""  # optional goal image (PNG/JPG) for goal-conditioned methods
    device: str = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N
    bf16: bool = False  # CUDA only: score under bf16 autocast (ResNet encoders)
    # progress at or above which the model calls a frame success; None: the checkpoint's
    # (calibrated on the reward model's demos when it was trained), else 0.9
    success_progress: float | None = None
    online_updates: bool = True  # Rank2Reward: train the discriminator on agent frames
    # The discriminator's schedule (rewards/rank2reward.py OnlineDiscriminator, as in the twin
    # trainer): disc_steps steps each time disc_every_frames more scored frames have been
    # seen. Counted in frames, not seconds, so the same robot time trains it the same amount
    # whatever the CPU's speed; the trainer shows it one frame per agent step, so at a camera
    # rate of C Hz, control rate H and action repeat R its `disc_update_every_steps` N is
    # N * R * C / H frames here.
    disc_every_frames: int = 30
    disc_steps: int = 1
    disc_batch: int = 64  # agent frames per discriminator step
    disc_min_frames: int = 128  # agent frames needed before the first step
    agent_buffer: int = 10_000  # agent frames kept for discriminator training
    torch_threads: int = 1  # intra-op threads of this process (nodes share the CPU)

    def __post_init__(self) -> None:
        if not self.ckpt:
            raise ValueError("ckpt is required: the run folder or .pt of a trained reward model")
        check_device_name(self.device)
        if self.disc_every_frames < 1 or self.disc_steps < 1:
            raise ValueError(f"need disc_every_frames >= 1 and disc_steps >= 1, got "
                             f"{self.disc_every_frames}, {self.disc_steps}")
        if self.disc_batch < 2 or self.disc_min_frames < self.disc_batch:
            raise ValueError("need disc_batch >= 2 and disc_min_frames >= disc_batch")
        if self.agent_buffer < self.disc_min_frames:
            raise ValueError("agent_buffer must hold at least disc_min_frames frames")
        if not 1 <= self.torch_threads <= 64:
            raise ValueError(f"torch_threads must be in [1, 64], got {self.torch_threads}")


@dataclass(frozen=True)
class ScoredFrame:
    stamp_ns: int
    reward: float
    progress: float
    success: bool


def _read_goal(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise RewardError(f"goal image {path!r} is missing or not an image")
    return np.ascontiguousarray(img[..., ::-1])


class RewardStream:
    def __init__(self, config: RewardStreamConfig, model: RewardModel | None = None):
        self.config = config
        torch.set_num_threads(config.torch_threads)
        try:
            device = resolve_device(config.device)
        except ValueError as e:
            raise RewardError(str(e)) from e
        self.model = model if model is not None else load_reward_model(config.ckpt, device)
        if self.model.needs_episode:
            # this stream keeps one earlier frame and knows no episode boundaries
            raise RewardError(
                f"{self.model.method} scores windows of {self.model.context_frames + 1} frames "
                "and sums progress over an episode, which the reward node does not keep yet "
                "(one earlier frame, no episode bounds); the learner node scores whole "
                "episodes with it instead (episode_rewards:=true on the launch files, no reward "
                "node), as do `v2r rl train` and `v2r reward score`"
            )
        self._handoff = WeightHandoff(self.model.device)
        if config.bf16:
            self.model.set_bf16(True)
        self.goal = _read_goal(config.goal_image) if config.goal_image else None
        if self.goal is not None:  # a goal from another scene would reward the wrong motion
            self.model.refuse_unlike_goal(self.goal, f"goal image {config.goal_image!r}")
        thr = config.success_progress
        self.success_progress = thr if thr is not None else self.model.success_progress or 0.9
        self._prev: np.ndarray | None = None
        self._lock = threading.Lock()  # guards the scoring model's weights
        self.version = 0  # bumps whenever new discriminator weights are swapped in
        self.disc_metrics: dict[str, float] = {}
        self._stop = threading.Event()
        self._due = threading.Event()  # set by score() when a discriminator burst is owed
        self._trainer: threading.Thread | None = None
        self._disc: OnlineDiscriminator | None = None
        self.score_latency_s: deque[float] = deque(maxlen=500)
        if config.online_updates and isinstance(self.model, Rank2Reward):
            # the trainer updates a copy; its discriminator weights are swapped in
            self._disc = OnlineDiscriminator(
                copy.deepcopy(self.model), config.disc_batch, config.agent_buffer,
                every_frames=config.disc_every_frames, steps=config.disc_steps,
                min_frames=config.disc_min_frames,
            )  # fmt: skip
            self._trainer = threading.Thread(
                target=self._train_loop, args=(self._disc,), daemon=True, name="disc-trainer"
            )
            self._trainer.start()

    @property
    def method(self) -> str:
        return self.model.method

    @property
    def online(self) -> bool:
        return self._trainer is not None

    @property
    def agent_frames(self) -> int:
        """Frames the online discriminator has been shown (0 without one)."""
        return self._disc.shown if self._disc is not None else 0

    def reset(self) -> None:
        """Forget the previous frame (the next frame is scored on its own)."""
        self._prev = None

    def score(
        self, frames: Sequence[tuple[int, np.ndarray]], agent: bool = True
    ) -> list[ScoredFrame]:
        """Score frames in order; each is paired with the one before it. Rank2Reward's online
        discriminator learns from them only when they are the ``agent``'s (an episode's): a
        camera watching an idle arm (the learner pretraining, resets) shows it no policy."""
        if not frames:
            return []
        t0 = time.perf_counter()
        imgs = np.stack([f for _, f in frames])
        goal = None
        if self.goal is not None:
            goal = cv2.resize(
                self.goal, (imgs.shape[2], imgs.shape[1]), interpolation=cv2.INTER_AREA
            )
        lead = 0
        if self._prev is not None and self._prev.shape == imgs.shape[1:]:
            imgs = np.concatenate([self._prev[None], imgs])
            lead = 1
        with self._lock:
            self._handoff.acquire()
            out = self.model.score(imgs, goal=goal)
        self._prev = imgs[-1]
        if self._disc is not None and agent:
            self._disc.observe(imgs[lead:])
            if self._disc.due:
                self._due.set()
        self.score_latency_s.append(time.perf_counter() - t0)
        return [
            ScoredFrame(stamp, float(r), float(p), bool(p >= self.success_progress))
            for (stamp, _), r, p in zip(frames, out.reward[lead:], out.progress[lead:], strict=True)
        ]

    # ------------------------------------------------------------ online discriminator
    def _train_loop(self, trainer: OnlineDiscriminator) -> None:
        with training_stream(self.model.device):
            self._train(trainer)

    def _train(self, trainer: OnlineDiscriminator) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stop.is_set():
                return
            metrics = trainer.train_if_due()
            if not metrics:
                continue
            disc = {
                k: v.detach().clone()
                for k, v in trainer.model.state_dict().items()
                if k.startswith("disc_")
            }
            with self._lock:
                self.model.load_state_dict(disc, strict=False)
                self._handoff.publish()
                self.version += 1
            self.disc_metrics = dict(metrics)

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        if self._trainer is not None:
            self._trainer.join(timeout=10)
