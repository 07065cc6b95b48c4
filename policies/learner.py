"""One learner core for every driver: the twin trainer (``v2r rl train``) and the learner node.

    core = LearnerCore(spec.core_config(learner="thread"), agent, replay, demos=demo_buffer)
    a = core.begin(frame, proprio)              # an episode's first agent frame -> first action
    core.record(a, frame, proprio)              # each agent step: the transition, reward pending
    a = core.act(proprio)                       # on the frame stack the core keeps
    core.maybe_update()                         # updates when due (seed steps, update ratio)
    core.finish(rewards, success_calls)         # relabelled rewards; commits the episode

One config for what learning is: :class:`LearnSpec` (seed, device, frame stack, proprio,
replay size, seed steps, success bonus, the demonstrations, the DrQ-v2 agent). The twin
trainer's ``TrainConfig`` and the learner node's ``OnlineConfig`` are subclasses that add only
what their driver has; ``LearnSpec.core_config`` builds the core's config from it.

What the core owns, so that both drivers mean the same by every option:
- the frame stack the policy acts on and the replay's episode in progress;
- the update schedule: ``seed_steps`` agent steps before the first update, one update every
  ``agent.update_every_steps`` agent steps, run in place (``learner=sync``) or on a learner
  thread with a policy copy (``learner=thread``); a lagging thread makes the driver wait
  (``when_lagging=wait``, the twin) or skips the update (``skip``: a robot never waits);
- every batch: ``demo_fraction`` of it from the demonstration buffer (when there is one);
- the success bonus: added to the reward of **every step the success call says is successful**
  (the reward model's, or the operator's key; never the twin's predicate unless the run says
  ``oracle_in_learning``);
- with ``end_on_success`` (SERL, HIL-SERL), an episode the success call ends: its last step is
  terminal, nothing bootstraps past it, and each demonstration's last step is terminal too;
- interventions: flagged steps are persisted with the episode and each run of them joins the
  demonstration buffer with the episode's rewards.

The drivers keep what differs: where frames, proprioception, rewards and success calls come
from (an in-process env and :class:`~video2reward.policies.train.EpisodeRewarder`, or ROS
topics), and their own counters and logs.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from video2reward.compute.device import Staged, check_device_name, training_stream
from video2reward.data.images import prepare_frame
from video2reward.policies.demos import (
    DemoEpisode,
    DemoSpec,
    add_segment,
    demo_replay,
    sample_mixed,
)
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config, NonFiniteError, Policy
from video2reward.policies.replay import Batch, ReplayBuffer, ReplayConfig

__all__ = ["CoreConfig", "LearnSpec", "LearnerCore", "LearnerThread", "agent_frame", "with_bonus"]


def with_bonus(rewards: np.ndarray, success_calls: np.ndarray, bonus: float) -> np.ndarray:
    """The rewards learning stores: ``bonus`` added on every step called successful. The one
    place the bonus is added, for agent episodes (:meth:`LearnerCore.finish`) and demos alike."""
    r = np.asarray(rewards, np.float32).reshape(-1)
    return (r + bonus * np.asarray(success_calls, bool).reshape(-1)).astype(np.float32)


@dataclass(frozen=True)
class CoreConfig:
    frame_stack: int = 3
    seed_steps: int = 500  # agent steps recorded before the first update
    learner: str = "sync"  # "sync" (updates in place) or "thread" (a learner thread)
    max_learner_lag_updates: int = 4  # thread: owed updates beyond which...
    when_lagging: str = "wait"  # ...the driver waits ("wait") or the update is dropped ("skip")
    update_threads: int = 0  # torch threads of the learner thread (0: unchanged)
    log_every_updates: int = 100  # metrics are read back from the device this often
    success_bonus: float = 0.0  # added on every step the success call says is successful
    demo_fraction: float = 0.5  # share of every batch from the demonstrations (if any)
    demo_add_successes: bool = False  # called-successful episodes join the demos (DemoSpec)
    end_on_success: bool = False  # a called last step is terminal (LearnSpec.end_on_success)
    act_seed: int = 0  # seed of the acting policy copy's noise (thread learner)

    def __post_init__(self) -> None:
        if self.learner not in ("sync", "thread"):
            raise ValueError(f"learner must be 'sync' or 'thread', got {self.learner!r}")
        if self.when_lagging not in ("wait", "skip"):
            raise ValueError(f"when_lagging must be 'wait' or 'skip', got {self.when_lagging!r}")
        if self.frame_stack < 1 or self.max_learner_lag_updates < 1 or self.log_every_updates < 1:
            raise ValueError(
                "frame_stack, max_learner_lag_updates and log_every_updates must be >= 1"
            )
        if self.seed_steps < 0 or self.update_threads < 0:
            raise ValueError("seed_steps and update_threads must be >= 0")
        if not np.isfinite(self.success_bonus):
            raise ValueError(f"success_bonus must be finite, got {self.success_bonus}")
        if not 0.0 <= self.demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1), got {self.demo_fraction}")


@dataclass(frozen=True)
class LearnSpec:
    """What learning is, one definition for both drivers: the twin trainer's
    :class:`~video2reward.policies.train.TrainConfig` and the learner node's
    :class:`~video2reward.policies.online.OnlineConfig` are this class plus what only their
    driver has (the twin's budgets and evaluations; the node's topics' timing and its
    checkpoints per episode). A field means the same in both, with the same default and the
    same checks; the node's ROS parameters carry these names (``demos.*`` as ``demos``,
    ``demo_fraction``, ``demo_max_episodes``, ``pretrain_updates``) and the agent's fields
    flat. Counts are agent steps (one agent step = ``action_repeat`` twin frames)."""

    seed: int = 0
    device: str = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N
    frame_stack: int = 3  # frames per observation (DrQ-v2: 3)
    proprio: bool = True  # ee position (3) + gripper opening (1) beside the pixels
    replay_capacity_steps: int = 100_000  # agent steps kept (np.empty: unused rows cost nothing)
    seed_steps: int = 2000  # agent steps recorded before the first update (DrQ-v2: 4000 frames)
    # Added to the reward of every step the success call says is successful: the reward
    # model's call or the operator's key (which calls the episode's last step only).
    success_bonus: float = 0.0
    # The success call ends the episode (SERL's reward classifier, HIL-SERL's operator key):
    # the driver stops the episode at the step the call fires on (the twin trainer scores each
    # step as it comes; the learner node ends on the operator's success key or, with
    # success_source reward, a step or two after the reward node's call), that step is
    # terminal (no bootstrapping past it) and the arm resets; each demonstration's last step
    # is terminal too (a demonstration ends at its success). Robot time goes to new scenes
    # instead of hovering at a reached goal. False: episodes run their full length.
    end_on_success: bool = False
    # The policy also sees where each pixel's surface is in the robot's base frame
    # (data/pointmap.py): the camera's depth aligned to colour, back-projected with its
    # calibration (intrinsics, hand-eye T_base_cam), as 3 more channels per frame quantised
    # over [pointmap_lo_m, pointmap_hi_m] (the default workspace box with 10 cm around it:
    # ~2 mm a level). One colour view leaves a target's distance along the camera ray to be
    # guessed; this reads it off the pixel. Demonstrations must carry depth (v2r sim demos
    # depth=true; the recorder with a depth camera).
    pointmap: bool = False
    pointmap_lo_m: tuple[float, float, float] = (0.10, -0.35, -0.10)
    pointmap_hi_m: tuple[float, float, float] = (0.65, 0.35, 0.40)
    demos: DemoSpec = field(default_factory=DemoSpec)
    agent: DrQV2Config = field(default_factory=DrQV2Config)

    def __post_init__(self) -> None:
        if isinstance(self.demos, dict):
            object.__setattr__(self, "demos", DemoSpec(**self.demos))
        if isinstance(self.agent, dict):
            object.__setattr__(self, "agent", DrQV2Config(**self.agent))
        check_device_name(self.device)
        for name in ("pointmap_lo_m", "pointmap_hi_m"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != 3 or not np.isfinite(v).all():
                raise ValueError(f"{name} needs 3 finite numbers (x, y, z metres), got {v}")
            object.__setattr__(self, name, v)
        if any(a >= b for a, b in zip(self.pointmap_lo_m, self.pointmap_hi_m, strict=True)):
            raise ValueError(f"pointmap_lo_m {self.pointmap_lo_m} must be below pointmap_hi_m "
                             f"{self.pointmap_hi_m} on every axis")  # fmt: skip
        if self.frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        if self.replay_capacity_steps < 100:
            raise ValueError(f"replay_capacity_steps must be >= 100, got "
                             f"{self.replay_capacity_steps}")  # fmt: skip
        if self.seed_steps < 0 or self.seed < 0:
            raise ValueError("seed_steps and seed must be >= 0")
        if not np.isfinite(self.success_bonus):
            raise ValueError(f"success_bonus must be finite, got {self.success_bonus}")
        if self.demos.pretrain_updates and not self.demos.path:
            raise ValueError("demos.pretrain_updates needs demonstrations (demos.path)")
        if self.demos.pretrain_updates and self.agent.num_expl_steps:
            # a policy pretrained on the demos acts from the first frame: no uniform phase
            object.__setattr__(self, "agent", dataclasses.replace(self.agent, num_expl_steps=0))

    @property
    def frame_channels(self) -> int:
        """Channels of one agent frame: RGB, and the point map's x, y, z with ``pointmap``."""
        return 6 if self.pointmap else 3

    def core_config(self, **driver: Any) -> CoreConfig:
        """The core's config: this spec's learning options and the driver's scheduling
        (``learner``, ``when_lagging``, ...); ``driver`` may override the bonus (the oracle
        baseline adds its own per frame)."""
        return CoreConfig(**{"frame_stack": self.frame_stack, "seed_steps": self.seed_steps,
                             "success_bonus": self.success_bonus,
                             "demo_fraction": self.demos.fraction,
                             "demo_add_successes": self.demos.add_successes,
                             "end_on_success": self.end_on_success, **driver})  # fmt: skip


def agent_frame(rgb: np.ndarray, size: int, xyz: np.ndarray | None = None) -> np.ndarray:
    """What the agent stores and sees of one camera frame, for both drivers and the demos:
    (C, size, size) uint8, the centre square of ``rgb`` (H, W, 3) resized
    (``data.images.prepare_frame``), then with a point map (``xyz``: (H, W, 3) uint8 of the
    same frame, ``data.pointmap.xyz_image``) its three channels prepared the same way."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype}{rgb.shape}")
    f = prepare_frame(rgb, size)
    if xyz is not None:
        if xyz.shape != rgb.shape or xyz.dtype != np.uint8:
            raise ValueError(f"a point map must match its frame {rgb.shape} uint8, got "
                             f"{xyz.dtype}{xyz.shape}")  # fmt: skip
        f = np.concatenate([f, prepare_frame(xyz, size)], axis=2)
    return np.ascontiguousarray(f.transpose(2, 0, 1))


class DemoRewarder(Protocol):
    """What relabels demonstrations: :class:`video2reward.policies.train.EpisodeRewarder`."""

    def calibrate_success(self, demo_images: list[np.ndarray]) -> float: ...

    def episode_rewards(
        self, frames: np.ndarray, *, agent_frames: bool = True
    ) -> tuple[np.ndarray, np.ndarray]: ...


def relabelled_demos(
    demos: list[DemoEpisode],
    views: list[np.ndarray],
    rewarder: DemoRewarder,
    bonus: float,
    replay_cfg: ReplayConfig,
    frame: Callable[[np.ndarray], np.ndarray],
    proprio_dim: int,
    frame_shape: tuple[int, ...],
    extra_steps: int = 0,
    terminal_last: bool = False,
) -> tuple[ReplayBuffer, float]:
    """The one relabelling path of demonstrations, for both drivers: the success call
    calibrated on their ``views`` (the frames the reward model scores, one per demo), then each
    demo's rewards and success calls through ``rewarder`` with the core's bonus. Returns the
    demo buffer (``frame`` makes what the agent stores) and the success threshold.
    ``terminal_last``: each demo's last step is terminal (``LearnSpec.end_on_success``)."""
    thr = rewarder.calibrate_success(views)
    by_id = {id(d): v for d, v in zip(demos, views, strict=True)}
    buffer = demo_replay(
        demos,
        replay_cfg,
        frame,
        lambda d: with_bonus(*rewarder.episode_rewards(by_id[id(d)], agent_frames=False), bonus),
        proprio_dim,
        frame_shape,
        extra_steps,
        terminal_last,
    )
    return buffer, thr


class LearnerThread(threading.Thread):
    """Runs ``agent.update`` off the acting thread; acting uses a synchronised policy copy.

    On CUDA the updates run on this thread's own stream, so acting never queues behind them;
    the next batch is sampled and its copy started while the current update computes, and the
    policy copy made after each update is handed to acting through an event
    (:class:`~video2reward.compute.device.WeightHandoff`). Metrics are read back from the
    device every ``log_every`` updates only.
    """

    def __init__(
        self,
        agent: DrQV2Agent,
        replay: ReplayBuffer,
        replay_lock: threading.Lock,
        policy: Policy,
        policy_lock: threading.Lock,
        batch_size: int,
        threads: int,
        log_every: int = 100,
        demos: ReplayBuffer | None = None,
        demo_fraction: float = 0.0,
    ):
        super().__init__(name="drqv2-learner", daemon=True)
        self.agent, self.replay, self.replay_lock = agent, replay, replay_lock
        self.policy, self.policy_lock = policy, policy_lock
        self.batch_size, self.threads, self.log_every = batch_size, threads, log_every
        self.demos, self.demo_fraction = demos, demo_fraction
        self.cv = threading.Condition()
        self.owed: deque[int] = deque()  # agent steps of requested updates
        self.metrics: dict[str, float] = {}  # of the last logged update
        self._fresh = False  # metrics not yet taken by take_metrics()
        self.nonfinite = 0
        self.error: BaseException | None = None
        self._stopping = False

    def request(self, step: int) -> None:
        with self.cv:
            if self.error is not None:
                raise RuntimeError("learner thread failed") from self.error
            self.owed.append(step)
            self.cv.notify_all()

    def wait(self, max_owed: int) -> None:
        with self.cv:
            while len(self.owed) > max_owed and self.error is None:
                self.cv.wait(0.5)
            if self.error is not None:
                raise RuntimeError("learner thread failed") from self.error

    def take_metrics(self) -> dict[str, float]:
        """The metrics of a logged update once (``{}`` until the next logged update)."""
        with self.cv:
            fresh, self._fresh = self._fresh, False
            return dict(self.metrics) if fresh else {}

    def stop(self) -> None:
        self.wait(0)
        with self.cv:
            self._stopping = True
            self.cv.notify_all()
        self.join()

    def run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with training_stream(self.agent.device):
                self._loop()
        except BaseException as e:  # reported to the acting thread on its next call
            with self.cv:
                self.error = e
                self.cv.notify_all()

    def _stage(self) -> Staged | None:
        """Sample a batch and start its copy to the device (``None``: refused as NaN/inf)."""
        with self.replay_lock:
            batch: Batch = sample_mixed(
                self.replay, self.demos, self.batch_size, self.demo_fraction
            )
        try:
            return self.agent.to_device(batch)
        except NonFiniteError:
            self.nonfinite += 1
            return None

    def _loop(self) -> None:
        staged: Staged | None = None
        have_next = False  # staged holds the batch for the next owed update
        while True:
            with self.cv:
                while not self.owed and not self._stopping:
                    self.cv.wait()
                if not self.owed:
                    return
                step = self.owed[0]
            if not have_next:
                staged = self._stage()
            m: dict[str, float] = {}
            if staged is not None:
                log = (self.agent.num_updates + 1) % self.log_every == 0
                m = self.agent.update(staged, step, log=log)
            with self.policy_lock:
                self.policy.sync_from(self.agent)
            with self.cv:
                self.owed.popleft()
                if m:
                    self.metrics, self._fresh = m, True
                have_next = bool(self.owed)
                self.cv.notify_all()
            if have_next:  # prefetch: copy the next batch while this update computes
                staged = self._stage()


class LearnerCore:
    """Replay, demonstrations, updates and episode commits for one agent (see the module)."""

    def __init__(
        self,
        cfg: CoreConfig,
        agent: DrQV2Agent | None,
        replay: ReplayBuffer | None,
        demos: ReplayBuffer | None = None,
        agent_steps: int = 0,
        policy: Any = None,
    ):
        """``policy``: anything with DrQ-v2's ``Policy.act`` signature that acts instead of an
        agent (a VPDD policy in evaluation): then the core only acts (``agent=None``, no
        replay, no demos, no updates)."""
        if (policy is None) == (agent is None) or (
            policy is not None and (replay is not None or demos is not None)
        ):
            raise ValueError("give a core an agent to train, or a policy that only acts (then "
                             "no replay or demos)")  # fmt: skip
        self.cfg, self.replay, self.demos = cfg, replay, demos
        self._agent = agent
        self.demo_steps_left_out = 0  # operator/success steps the full demo buffer had no room for
        if demos is not None and replay is not None:  # what a resumed run's demos had gained
            for ep in replay.restored_steps:
                self._left_out(_join_demos(demos, ep.intervened, ep.called,
                                           cfg.demo_add_successes, cfg.end_on_success, ep.frames,
                                           ep.proprio or [None] * len(ep.frames), ep.actions,
                                           ep.rewards))  # fmt: skip
            replay.restored_steps = []  # their frames are in the demo buffer now
        self.agent_steps = agent_steps  # agent steps recorded so far (the update schedule)
        self.replay_lock, self.policy_lock = threading.Lock(), threading.Lock()
        self.learner: LearnerThread | None = None
        self.policy = policy if agent is None else agent.policy
        if cfg.learner == "thread" and replay is not None and agent is not None:
            self.policy = agent.policy_snapshot(seed=cfg.act_seed)
            self.learner = LearnerThread(
                agent, replay, self.replay_lock, self.policy, self.policy_lock,
                agent.cfg.batch_size, cfg.update_threads, cfg.log_every_updates, demos,
                cfg.demo_fraction,
            )  # fmt: skip
            self.learner.start()
        self._stack: deque[np.ndarray] = deque(maxlen=cfg.frame_stack)
        self._last_action: np.ndarray | None = None
        self.episode_steps = 0
        self.nonfinite_batches = 0
        self.skipped_updates = 0  # dropped because the learner thread lagged (when_lagging=skip)
        self.caught_up_updates = 0  # skipped ones made up later (catch_up)

    @property
    def agent(self) -> DrQV2Agent:
        if self._agent is None:
            raise RuntimeError("this core acts with a given policy and has no agent to train")
        return self._agent

    def pretrain(
        self,
        updates: int,
        on_metrics: Callable[[dict[str, float], int], None] | None = None,
        progress_bar: bool = False,
    ) -> None:
        """``updates`` updates on demonstration batches alone (every row a demo row, so the
        BC term applies to all) before the first frame: no robot time is spent. The acting
        policy copy is synchronised afterwards."""
        from tqdm import tqdm

        if self.demos is None or not len(self.demos):
            raise ValueError("pretraining needs demonstrations (demos with actions)")
        b, every = self.agent.cfg.batch_size, self.cfg.log_every_updates
        for i in tqdm(range(updates), desc="pretrain on demos", unit="update",
                      disable=not progress_bar):  # fmt: skip
            batch = self.demos.sample(b)._replace(is_demo=np.ones(b, np.float32))
            m = self.agent.update(batch, step=0, log=(i + 1) % every == 0 or i == updates - 1)
            if m and on_metrics is not None:
                on_metrics(m, i + 1)
        if self.policy is not self.agent.policy:
            with self.policy_lock:
                self.policy.sync_from(self.agent)

    # ----------------------------------------------------------------- acting
    def act(self, proprio: np.ndarray | None, eval_mode: bool = False) -> np.ndarray:
        """The policy's action on the current frame stack (exploring unless ``eval_mode``)."""
        obs = np.concatenate(self._stack)
        with self.policy_lock:
            a = self.policy.act(obs, proprio, self.agent_steps, eval_mode=eval_mode)
        self._last_action = a
        return a

    # ----------------------------------------------------------------- episodes
    def begin(self, frame: np.ndarray, proprio: np.ndarray | None) -> None:
        """Start an episode with its first agent frame (the stack repeats it)."""
        self._stack.clear()
        for _ in range(self.cfg.frame_stack):
            self._stack.append(frame)
        self.episode_steps = 0
        if self.replay is not None:
            with self.replay_lock:
                self.replay.start_episode(frame, proprio)

    def record(
        self,
        action: np.ndarray,
        frame: np.ndarray,
        proprio: np.ndarray | None,
        *,
        reward: float = 0.0,
        terminated: bool = False,
    ) -> None:
        """One agent step: ``action`` taken (the applied command), ``frame`` reached. The
        reward is usually set at :meth:`finish`; raises NonFiniteError (nothing written)."""
        self._stack.append(frame)
        self.episode_steps += 1
        if self.replay is None:
            return
        with self.replay_lock:
            self.replay.add(action, reward, frame, proprio, terminated=terminated)
        self.agent_steps += 1

    def maybe_update(self) -> dict[str, float]:
        """Run (or request) the update due at this agent step; the metrics of a logged one."""
        step, cfg = self.agent_steps, self.cfg
        if (
            self.replay is None
            or step < cfg.seed_steps
            or step % self.agent.cfg.update_every_steps
            or not len(self.replay)
        ):
            return {}
        m: dict[str, float] = {}
        for _ in range(self.agent.cfg.updates_per_step):
            if self.learner is not None:
                owed = len(self.learner.owed)
                if cfg.when_lagging == "skip" and owed >= cfg.max_learner_lag_updates:
                    self.skipped_updates += 1  # a robot's control tick never waits for learning
                    continue
                self.learner.request(step)
                if cfg.when_lagging == "wait":
                    self.learner.wait(cfg.max_learner_lag_updates)
                m = self.learner.take_metrics() or m
            else:
                log = (self.agent.num_updates + 1) % cfg.log_every_updates == 0
                batch = sample_mixed(self.replay, self.demos, self.agent.cfg.batch_size,
                                     cfg.demo_fraction)  # fmt: skip
                try:
                    m = self.agent.update(batch, step, log=log) or m
                except NonFiniteError:
                    self.nonfinite_batches += 1
        return m

    def catch_up(self) -> int:
        """Make the updates skipped while the learner thread lagged (``when_lagging=skip``)
        and wait for them; returns how many. For a driver between episodes, when nothing
        acts: the updates per agent step are then the schedule's (the twin trainer's, which
        waits instead) on any CPU, at the cost of wall time between episodes, not robot
        time."""
        owed = self.skipped_updates - self.caught_up_updates
        if self.learner is None or owed <= 0:
            return 0
        for _ in range(owed):
            self.learner.request(self.agent_steps)
        self.learner.wait(0)
        self.caught_up_updates += owed
        return owed

    def finish(
        self,
        rewards: np.ndarray,
        success_calls: np.ndarray,
        intervened: np.ndarray | None = None,
        actions: list[np.ndarray] | None = None,
        frames: list[np.ndarray] | None = None,
        proprio: list[np.ndarray | None] | None = None,
        note: str = "",
    ) -> np.ndarray:
        """Commit the episode with one reward and one success call per step; returns the
        rewards stored (the bonus added on every called step). With ``end_on_success`` a
        called last step is terminal. NaN/inf drops the episode and raises NonFiniteError.
        With the episode's frames, proprio and applied actions, what :func:`_join_demos`
        picks joins the demonstrations (the operator's steps; with ``demo_add_successes`` the
        steps up to the last called one)."""
        r = np.asarray(rewards, np.float32).reshape(-1)
        calls = np.asarray(success_calls, bool).reshape(-1)
        if r.shape != (self.episode_steps,) or calls.shape != r.shape:
            raise ValueError(
                f"need {self.episode_steps} rewards and success calls, got {r.shape}, "
                f"{calls.shape}"
            )
        stored = with_bonus(r, calls, self.cfg.success_bonus)
        self._last_action = None
        if self.replay is None:
            return stored
        with self.replay_lock:
            try:
                self.replay.set_episode_rewards(stored)
            except NonFiniteError:
                self.replay.abandon_episode()
                raise
            self.replay.end_episode(
                success=bool(calls.any()), intervened=intervened, note=note, called=calls,
                terminated=self.cfg.end_on_success and bool(calls.size and calls[-1]),
            )
            if self.demos is not None and actions is not None and frames is not None \
                    and proprio is not None:
                self._left_out(_join_demos(self.demos, intervened, calls,
                                           self.cfg.demo_add_successes,
                                           self.cfg.end_on_success, frames, proprio,
                                           actions, stored))  # fmt: skip
        return stored

    def abandon(self) -> None:
        """Drop the episode in progress (inputs interrupted, NaN): nothing of it is kept."""
        if self.replay is not None:
            with self.replay_lock:
                self.replay.abandon_episode()
        self._last_action = None

    def _left_out(self, steps: int) -> None:
        if steps and not self.demo_steps_left_out:
            warnings.warn("the demonstration buffer is full: further operator steps and "
                          "called successes stay in the replay only (the teleoperated demos "
                          "are kept)", stacklevel=3)  # fmt: skip
        self.demo_steps_left_out += steps

    # ----------------------------------------------------------------- lifecycle
    def wait_idle(self) -> None:
        """No update in flight (before a checkpoint is written). On CUDA the learner thread's
        last update is only queued when it hands back, so the device is waited for too."""
        if self.learner is not None:
            self.learner.wait(0)
            self._device_idle()

    def close(self) -> None:
        if self.learner is not None:
            self.learner.stop()
            self._device_idle()
            self.nonfinite_batches += self.learner.nonfinite
            self.learner = None

    def _device_idle(self) -> None:
        if self._agent is not None and self._agent.device.type == "cuda":
            torch.cuda.synchronize(self._agent.device)


def _join_demos(
    demos: ReplayBuffer,
    intervened: np.ndarray | None,
    called: np.ndarray,
    add_successes: bool,
    end_on_success: bool,
    frames: list[np.ndarray],
    proprio: list[np.ndarray | None],
    actions: list[np.ndarray],
    rewards: np.ndarray,
) -> int:
    """What of a finished episode joins the demonstrations, with the rewards it was stored
    with: with ``add_successes`` and a success call, its steps up to the last called one
    (self-imitation: the robot's own success is a demonstration of a new scene); then each run
    of the operator's steps not among them, as one segment (its first frame stack repeats its
    first frame, as at an episode start). A segment that no longer fits is left out rather
    than evict the oldest demonstrations (the teleoperated ones); returns the steps left out.
    With ``end_on_success`` a segment that ends where the episode's called last step ended it
    is terminal there, as in the replay."""
    segments = []
    flags = np.zeros(len(called), bool) if intervened is None else np.array(intervened, bool)
    if add_successes and np.any(called):
        k = int(np.flatnonzero(called)[-1]) + 1  # steps 0 .. k-1; frame k is the called one
        segments.append((0, k))
        flags[:k] = False
    padded = np.append(flags, False)
    t = 0
    while t < len(flags):
        if not padded[t]:
            t += 1
            continue
        end = t + int(np.argmin(padded[t:]))  # the first step after the run
        segments.append((t, end))
        t = end
    left_out = 0
    for t, end in segments:
        if demos.room() < end - t + 1:
            left_out += end - t
            continue
        p = None if proprio[0] is None else np.stack(proprio[t : end + 1])  # type: ignore[arg-type]
        add_segment(demos, frames[t : end + 1], p, np.stack(actions[t:end]), rewards[t:end],
                    terminated=end_on_success and end == len(called) and bool(called[-1]))
    return left_out
