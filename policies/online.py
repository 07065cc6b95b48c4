"""DrQ-v2 learning online from a live stream (the learner node's core, no ROS).

    learner = OnlineLearner(OnlineConfig(out="runs/learner"))
    a = learner.begin(rgb, proprio)            # first frame of an episode -> first action
    a = learner.step(rgb, proprio)             # every control tick: record, then act
    learner.finish(rewards, success=True)      # one reward per step, once they are all known
    learner.close()                            # checkpoint; a restart resumes from here

Rewards reach a live learner after the frames they score (they come from another process), so
transitions enter the replay with their rewards when the episode ends: the episode is
committed (persisted to ``out/replay/episodes.zarr``, then sampleable) by :meth:`finish`, or
dropped by :meth:`abandon` when its inputs were interrupted. The agent (``out/agent.pt``) and
counters (``out/state.json``) are written atomically after every ``checkpoint_every_episodes``
episodes, so a restart loses at most the episode in progress.

Updates run in :class:`policies.train.LearnerThread` on the agent while acting uses a
synchronised policy copy: a control tick never waits for an update.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from video2reward.compute.device import check_device_name, resolve_device
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config, NonFiniteError
from video2reward.policies.replay import ReplayBuffer, ReplayConfig
from video2reward.policies.train import PROPRIO_DIM, LearnerThread

AGENT_FILE = "agent.pt"
STATE_FILE = "state.json"
ACTION_DIM = 4


@dataclass(frozen=True)
class OnlineConfig:
    out: str = "runs/learner"  # run folder: agent.pt, state.json, replay/
    image_size: int = 84  # frames are resized to this square before the agent sees them
    frame_stack: int = 3
    proprio: bool = True  # ee_pos (3) + gripper open fraction (1) beside the pixels
    eval_mode: bool = False  # act with the mean action; no replay, no updates
    replay_capacity_steps: int = 100_000
    checkpoint_every_episodes: int = 1
    update_threads: int = 1  # torch threads of the update thread (the CPU is shared)
    max_learner_lag_updates: int = 8  # owed updates beyond which new ones are skipped
    device: str = "auto"
    seed: int = 0
    success_bonus: float = 0.0  # added to the last reward of a successful episode
    seed_steps: int = 500  # agent steps recorded before the first update
    agent: DrQV2Config = field(default_factory=DrQV2Config)

    def __post_init__(self) -> None:
        if isinstance(self.agent, dict):
            object.__setattr__(self, "agent", DrQV2Config(**self.agent))
        if not 16 <= self.image_size <= 480:
            raise ValueError(f"image_size must be in [16, 480], got {self.image_size}")
        if self.frame_stack < 1 or self.checkpoint_every_episodes < 1:
            raise ValueError("frame_stack and checkpoint_every_episodes must be >= 1")
        if self.replay_capacity_steps < 100:
            raise ValueError("replay_capacity_steps must be >= 100")
        check_device_name(self.device)


class OnlineLearner:
    def __init__(self, config: OnlineConfig):
        self.config = c = config
        self.out = Path(c.out)
        self.device = resolve_device(c.device)
        obs_shape = (3 * c.frame_stack, c.image_size, c.image_size)
        proprio_dim = PROPRIO_DIM if c.proprio else 0
        self.agent = DrQV2Agent(
            c.agent, obs_shape, ACTION_DIM, proprio_dim, seed=c.seed, device=self.device
        )
        self.state: dict[str, Any] = {
            "agent_steps": 0,
            "episodes": 0,
            "successes": 0,
            "returns": [],
        }
        if (self.out / AGENT_FILE).exists():
            self.agent.load(self.out / AGENT_FILE)
            self.state.update(json.loads((self.out / STATE_FILE).read_text()))
        elif c.eval_mode:
            raise FileNotFoundError(f"eval_mode needs a trained agent: {self.out / AGENT_FILE}")
        self.policy = self.agent.policy_snapshot(seed=c.seed + 7)
        self.policy_lock = threading.Lock()
        self.replay_lock = threading.Lock()
        self.replay: ReplayBuffer | None = None
        self.learner: LearnerThread | None = None
        self.restored_steps = 0
        if not c.eval_mode:
            self.replay = ReplayBuffer(
                ReplayConfig(
                    capacity_steps=c.replay_capacity_steps,
                    frame_stack=c.frame_stack,
                    nstep=c.agent.nstep,
                    discount=c.agent.discount,
                ),
                (3, c.image_size, c.image_size),
                ACTION_DIM,
                proprio_dim,
                directory=self.out / "replay",
                seed=c.seed,
                task="online",
            )
            self.restored_steps = self.replay.restore()
            self.learner = LearnerThread(
                self.agent,
                self.replay,
                self.replay_lock,
                self.policy,
                self.policy_lock,
                c.agent.batch_size,
                c.update_threads,
            )
            self.learner.start()
        self._stack: list[np.ndarray] = []
        self._last_action: np.ndarray | None = None
        self.episode_steps = 0
        self.skipped_updates = 0  # updates dropped because the learner lagged (slow CPU)

    # ----------------------------------------------------------------- observations
    def _frame(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype}{rgb.shape}")
        s = self.config.image_size
        if rgb.shape[:2] != (s, s):
            rgb = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))

    def _proprio(self, proprio: np.ndarray | None) -> np.ndarray | None:
        if not self.config.proprio:
            return None
        p = np.asarray(proprio, np.float32).reshape(-1)
        if p.shape != (PROPRIO_DIM,) or not np.isfinite(p).all():
            raise NonFiniteError(f"proprio must be {PROPRIO_DIM} finite numbers, got {proprio!r}")
        return p

    def _act(self, proprio: np.ndarray | None) -> np.ndarray:
        obs = np.concatenate(self._stack[-self.config.frame_stack :])
        with self.policy_lock:
            a = self.policy.act(
                obs, proprio, int(self.state["agent_steps"]), eval_mode=self.config.eval_mode
            )
        self._last_action = a
        return a

    # ----------------------------------------------------------------- episode
    def begin(self, rgb: np.ndarray, proprio: np.ndarray | None) -> np.ndarray:
        frame, p = self._frame(rgb), self._proprio(proprio)
        self._stack = [frame] * self.config.frame_stack
        self.episode_steps = 0
        if self.replay is not None:
            with self.replay_lock:
                self.replay.start_episode(frame, p)
        return self._act(p)

    def step(self, rgb: np.ndarray, proprio: np.ndarray | None) -> np.ndarray:
        """Record the transition into this frame (reward filled in by finish), then act."""
        if self._last_action is None:
            raise RuntimeError("call begin() before step()")
        frame, p = self._frame(rgb), self._proprio(proprio)
        self._stack.append(frame)
        del self._stack[: -self.config.frame_stack]
        self.episode_steps += 1
        if self.replay is not None and self.learner is not None:
            with self.replay_lock:
                self.replay.add(self._last_action, 0.0, frame, p)
            self.state["agent_steps"] += 1
            step = int(self.state["agent_steps"])
            cfg = self.config.agent
            if (
                step >= self.config.seed_steps
                and step % cfg.update_every_steps == 0
                and self.replay.n_episodes > 0
            ):
                # Never block a control tick on learning: when the learner is this far behind
                # (a slow CPU), the update is skipped instead, lowering the update ratio.
                if len(self.learner.owed) < self.config.max_learner_lag_updates:
                    self.learner.request(step)
                else:
                    self.skipped_updates += 1
        return self._act(p)

    def finish(self, rewards: np.ndarray, success: bool) -> dict[str, Any]:
        """Commit the episode with one reward per step (NaN/inf: the episode is dropped)."""
        r = np.asarray(rewards, np.float32).copy()
        if r.shape != (self.episode_steps,):
            raise ValueError(f"need {self.episode_steps} rewards, got {r.shape}")
        summary = {
            "steps": self.episode_steps,
            "return": float(r.sum()) if r.size else 0.0,
            "success": bool(success),
        }
        if success and r.size:
            r[-1] += self.config.success_bonus
        if self.replay is not None:
            with self.replay_lock:
                try:
                    self.replay.set_episode_rewards(r)
                except NonFiniteError:
                    self.replay.abandon_episode()
                    raise
                self.replay.end_episode(success=success)
        self.state["episodes"] += 1
        self.state["successes"] += int(success)
        self.state["returns"] = [*self.state["returns"][-999:], summary["return"]]
        self._last_action = None
        if (
            not self.config.eval_mode
            and self.state["episodes"] % self.config.checkpoint_every_episodes == 0
        ):
            self.checkpoint()
        return summary

    def abandon(self) -> None:
        if self.replay is not None:
            with self.replay_lock:
                self.replay.abandon_episode()
        self._last_action = None

    # ----------------------------------------------------------------- persistence
    def checkpoint(self) -> None:
        if self.learner is not None:
            self.learner.wait(0)  # no update in flight while the weights are written
        self.agent.save(self.out / AGENT_FILE)
        tmp = self.out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({**self.state, "config": asdict(self.config)}, default=str))
        os.replace(tmp, self.out / STATE_FILE)

    @property
    def update_metrics(self) -> dict[str, float]:
        return dict(self.learner.metrics) if self.learner is not None else {}

    def close(self) -> None:
        if self.learner is not None:
            self.learner.stop()
            self.learner = None
