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

import errno
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import resolve_device
from video2reward.data import keys
from video2reward.data.images import prepare_frame
from video2reward.data.pointmap import intrinsics_at, xyz_image
from video2reward.policies.demos import demo_replay, load_demo_episodes, rows_per_step
from video2reward.policies.drqv2 import DrQV2Agent, NonFiniteError
from video2reward.policies.learner import LearnerCore, LearnSpec, agent_frame, relabelled_demos
from video2reward.policies.replay import ReplayBuffer, ReplayConfig
from video2reward.policies.train import PROPRIO_DIM, EpisodeRewarder, RewardSpec

AGENT_FILE = "agent.pt"
STATE_FILE = "state.json"
ACTION_DIM = 4


class ReplayWriteError(RuntimeError):
    """The replay store could not persist an episode (a full disk, a lost mount): that episode
    is not in the replay, the ones committed before are unchanged, and the learner must stop
    acting (robot time spent now would not be recorded)."""


@dataclass(frozen=True)
class OnlineConfig(LearnSpec):
    """The learner node's run: :class:`~video2reward.policies.learner.LearnSpec` (seed, device,
    frame stack, proprio, replay, seed steps, success bonus, ``demos``, ``agent``: the same
    fields as ``v2r rl train``'s) plus what only the node has."""

    out: str = "runs/learner"  # run folder: agent.pt, state.json, replay/
    image_size: int = 84  # frames are resized to this square before the agent sees them
    eval_mode: bool = False  # act with the mean action; no replay, no updates
    # eval_mode with a VPDD policy (`v2r policy finetune`'s out/) instead of out/agent.pt: its
    # checkpoint sets the frames it sees (image_size, frame_stack), and control_hz must be
    # the rate it was fine-tuned at (its demos' row rate over its frame_skip)
    policy_ckpt: str = ""
    checkpoint_every_episodes: int = 1
    update_threads: int = 1  # torch threads of the update thread (the CPU is shared)
    max_learner_lag_updates: int = 8  # owed updates beyond which new ones are skipped
    # Between episodes (the arm at rest) make the updates skipped while the learner lagged,
    # so the updates per frame are the schedule's on any CPU, as in the twin trainer, which
    # waits for them; the reset takes longer instead (a GPU skips none). On 2 CPU cores the
    # learner makes about half of its updates during an episode.
    catch_up_updates: bool = True
    # The reward model: it rewards the demonstrations (demos.path) through the twin trainer's
    # relabelling path, and tells the node how to gather a step's frame rewards.
    reward_ckpt: str = ""
    demo_rows_per_step: int = 0  # recorded rows per control step (0: from the store's timestamps)
    control_hz: float = 10.0  # control steps per second (to cut demos into steps)
    # An operator may take over (the node's intervention topic): their steps are flagged in
    # the replay and join the demo buffer, which keeps room for this many of them.
    interventions: bool = False
    intervention_capacity_steps: int = 20_000
    # Score each finished episode here with reward_ckpt (EpisodeRewarder, the twin trainer's
    # path) instead of taking the reward node's per-frame rewards: for methods whose reward
    # reads a window of earlier frames and sums progress over the episode (VIPER, Diffusion
    # Reward), which the reward node refuses. The node keeps the episode's camera frames (one
    # per step) until it ends.
    episode_rewards: bool = False
    # pointmap: the calibration file (v2r calib: intrinsics and hand-eye T_base_cam) that
    # places the live camera's pixels; '' = the demonstration store's own camera attributes
    # (the twin's demos carry the twin camera's; the same mount must serve both), else the
    # camera the run folder's policy was trained with (out/pointmap_camera.json).
    camera_calibration: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 16 <= self.image_size <= 480:
            raise ValueError(f"image_size must be in [16, 480], got {self.image_size}")
        if self.checkpoint_every_episodes < 1:
            raise ValueError("checkpoint_every_episodes must be >= 1")
        if self.demos.path and not self.reward_ckpt:
            raise ValueError("demos need reward_ckpt: demonstrations are rewarded by the model "
                             "that rewards the live stream")  # fmt: skip
        if self.demo_rows_per_step < 0 or self.control_hz <= 0:
            raise ValueError("demo_rows_per_step must be >= 0 and control_hz > 0")
        if self.episode_rewards and not self.reward_ckpt:
            raise ValueError("episode_rewards needs reward_ckpt: the model that scores episodes")
        if self.policy_ckpt and not self.eval_mode:
            raise ValueError("policy_ckpt (a VPDD policy) only acts: set eval_mode too (the "
                             "learner trains DrQ-v2's agent)")  # fmt: skip


POINTMAP_CAMERA_FILE = "pointmap_camera.json"


def _pointmap_camera(c: OnlineConfig) -> tuple[dict[str, float], np.ndarray]:
    """The live camera's intrinsics (with their width and height) and T_base_cam: from the
    calibration file, else the demonstration store's attributes, else the run folder's
    record of the camera its policy learned with."""
    if c.camera_calibration:
        from video2reward.calibration.result import load_calibration

        cal = load_calibration(c.camera_calibration)
        if cal.camera is None or cal.extrinsics is None:
            raise ValueError(f"{c.camera_calibration} lacks the intrinsics or the hand-eye "
                             "T_base_cam that pointmap needs (v2r calib intrinsics / handeye)")
        i = cal.camera.intrinsics
        k = {"width": i.width, "height": i.height, "fx": i.fx, "fy": i.fy, "cx": i.cx, "cy": i.cy}
        return k, np.asarray(cal.extrinsics.T_base_cam, np.float64)
    if not c.demos.path:
        f = Path(c.out) / POINTMAP_CAMERA_FILE
        if not f.exists():
            raise ValueError("pointmap needs the camera's calibration: camera_calibration (a "
                             "v2r calib file), demos whose store carries it, or a run folder "
                             f"that recorded it ({f})")  # fmt: skip
        rec = json.loads(f.read_text())
        return dict(rec["intrinsics"]), np.asarray(rec["T_base_cam"], np.float64)
    from video2reward.data.episode_store import EpisodeStore

    attrs = EpisodeStore.open(c.demos.path).attrs
    k, T = attrs.get(keys.ATTR_INTRINSICS), attrs.get(keys.ATTR_T_BASE_CAM)
    if not k or T is None:
        raise ValueError(f"pointmap: {c.demos.path} carries no camera calibration "
                         f"({keys.ATTR_INTRINSICS}, {keys.ATTR_T_BASE_CAM}); pass "
                         "camera_calibration")  # fmt: skip
    return dict(k), np.asarray(T, np.float64)


def _vpdd_policy(c: OnlineConfig) -> tuple[Any, OnlineConfig]:
    """A VPDD policy for ``eval_mode`` and the config it observes with: its checkpoint's image
    size and history as ``image_size`` and ``frame_stack``. Refuses a pre-trained-only model
    and a control rate other than the one it was fine-tuned at (its actions are steps of
    that period: at another rate the arm would move faster or slower than it learned)."""
    from video2reward.policies.vpdd import VPDDPolicy, load

    model = load(c.policy_ckpt, c.device)
    agent_hz = model.info.get("agent_hz")
    if agent_hz and abs(c.control_hz - agent_hz) > 0.05 * agent_hz:
        raise ValueError(
            f"the VPDD policy {c.policy_ckpt} was fine-tuned on steps of "
            f"{1.0 / agent_hz:.3g} s (its demos' rows times frame_skip "
            f"{model.config.frame_skip}): run the learner node at control_hz {agent_hz:.3g}, "
            f"not {c.control_hz:g}"
        )
    policy = VPDDPolicy(model, c.seed)  # refuses a model that is not fine-tuned
    mc = model.config
    seen = {"image_size": mc.image_size, "frame_stack": mc.history, "proprio": mc.proprio}
    return policy, replace(c, **seen)


def step_rewards(
    edges_ns: np.ndarray,
    frame_ns: np.ndarray,
    frame_reward: np.ndarray,
    frame_success: np.ndarray,
    potential_difference: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The learner node's per-step rewards and success calls from the reward node's per-frame
    ones. Step t spans the frames stamped in (edges[t], edges[t+1]] (``edges_ns``: the stamps
    of the images the steps acted on, int64 ns). Its reward is their sum for
    potential-difference rewards (exact at any camera rate) and their mean for rewards of the
    state (one frame's scale, as the twin trainer and the demos give it); its success call is
    any of them called successful. Steps without a scored frame get 0 and no call."""
    edges = np.asarray(edges_ns, np.int64)
    t = np.asarray(frame_ns, np.int64)  # int64 throughout: ns stamps do not fit a float64
    n = len(edges) - 1
    inside = (t > edges[0]) & (t <= edges[-1])
    which = np.searchsorted(edges, t[inside], side="left") - 1
    r = np.asarray(frame_reward, np.float64)[inside]
    rewards = np.bincount(which, weights=r, minlength=n).astype(np.float64)
    if not potential_difference:
        rewards = rewards / np.maximum(np.bincount(which, minlength=n), 1)
    called = np.bincount(which, weights=np.asarray(frame_success, bool)[inside], minlength=n)
    return rewards.astype(np.float32), called > 0


class OnlineLearner:
    """The learner node's driver of :class:`~video2reward.policies.learner.LearnerCore`:
    frames resized here, rewards and success calls from the reward node, updates on the
    learner thread (a control tick never waits: a lagging update is skipped)."""

    def __init__(self, config: OnlineConfig):
        self.device = resolve_device(config.device)
        vpdd = None
        if config.policy_ckpt:
            vpdd, config = _vpdd_policy(config)
        self.config = c = config
        self.out = Path(c.out)
        self.out.mkdir(parents=True, exist_ok=True)  # an evaluation's first output lands here
        self.camera = _pointmap_camera(c) if c.pointmap else None
        if self.camera is not None and not c.eval_mode:  # evaluation places pixels alike
            (self.out / POINTMAP_CAMERA_FILE).write_text(json.dumps(
                {"intrinsics": self.camera[0], "T_base_cam": self.camera[1].tolist()}, indent=1))
        obs_shape = (c.frame_channels * c.frame_stack, c.image_size, c.image_size)
        proprio_dim = PROPRIO_DIM if c.proprio else 0
        # a VPDD policy acts alone (eval_mode): no DrQ-v2 agent is built
        self.agent = None if vpdd is not None else DrQV2Agent(
            c.agent, obs_shape, ACTION_DIM, proprio_dim, seed=c.seed, device=self.device
        )  # fmt: skip
        self.state: dict[str, Any] = {
            "agent_steps": 0,
            "episodes": 0,
            "successes": 0,
            "returns": [],
        }
        if self.agent is not None and (self.out / AGENT_FILE).exists():  # VPDD ignores it
            self.agent.load(self.out / AGENT_FILE)
            self.state.update(json.loads((self.out / STATE_FILE).read_text()))
        elif c.eval_mode and vpdd is None:
            raise FileNotFoundError(f"eval_mode needs a trained agent: {self.out / AGENT_FILE}")
        replay = None
        self.restored_steps = 0
        self.demo_info: dict[str, Any] = {}  # what the demonstrations gave (empty without)
        self.reward_method: str | None = None  # the reward model's method, once loaded
        # The reward model in this process (demos and episode_rewards), loaded once
        self._rewarder: EpisodeRewarder | None = None
        if not c.eval_mode:
            replay = ReplayBuffer(
                ReplayConfig(
                    capacity_steps=c.replay_capacity_steps,
                    frame_stack=c.frame_stack,
                    nstep=c.agent.nstep,
                    discount=c.agent.discount,
                ),
                (c.frame_channels, c.image_size, c.image_size),
                ACTION_DIM,
                proprio_dim,
                directory=self.out / "replay",
                seed=c.seed,
                task="online",
                fps=c.control_hz,
            )
            self.restored_steps = replay.restore(with_calls=c.demos.add_successes)
        demos = None
        if replay is not None and (c.demos.path or c.interventions or c.demos.add_successes):
            demos = self._demo_buffer(replay.cfg, proprio_dim)
        self.core = LearnerCore(
            c.core_config(
                learner="thread",
                max_learner_lag_updates=c.max_learner_lag_updates,
                when_lagging="skip",
                update_threads=c.update_threads,
                act_seed=c.seed + 7,
            ),
            self.agent,
            replay,
            demos=demos,
            agent_steps=int(self.state["agent_steps"]),
            policy=vpdd,
        )
        self.replay = replay
        self._last_action: np.ndarray | None = None  # the policy's, until finish/abandon
        self._ep: dict[str, list[Any]] = {"frames": [], "proprio": [], "actions": [],
                                          "intervened": []}  # fmt: skip

    def pretrain(self, progress_bar: bool = False) -> int:
        """``pretrain_updates`` updates on the demos alone, once per run (a restart does not
        repeat them), then a checkpoint; returns the updates made."""
        c = self.config
        if self.core.demos is None or not c.demos.pretrain_updates or self.state.get("pretrained"):
            return 0
        # torch's intra-op thread count is per calling thread here: two threads beside the
        # graph's other processes run many times slower than one
        torch.set_num_threads(c.update_threads)
        self.core.pretrain(c.demos.pretrain_updates, progress_bar=progress_bar)
        self.state["pretrained"] = True
        self.checkpoint()
        return c.demos.pretrain_updates

    @property
    def episode_steps(self) -> int:
        return self.core.episode_steps

    @property
    def skipped_updates(self) -> int:
        """Updates dropped because the learner lagged (a slow CPU)."""
        return self.core.skipped_updates

    def _demo_buffer(self, replay_cfg: ReplayConfig, proprio_dim: int) -> ReplayBuffer:
        """The demos as this learner would have recorded them: frames through :meth:`_frame`,
        one step per control period, rewards and success calls by the reward model through
        the twin trainer's :class:`EpisodeRewarder` (its checkpoint's success threshold); room
        for the operator's take-overs when ``interventions`` is on."""
        c = self.config
        extra = (c.intervention_capacity_steps if c.interventions or c.demos.add_successes
                 else 0)
        shape = (c.frame_channels, c.image_size, c.image_size)
        if not c.demos.path:
            return demo_replay([], replay_cfg, self._frame, lambda d: np.zeros(0), proprio_dim,
                               shape, extra)  # fmt: skip
        rows = self._rows_per_step()
        demos = load_demo_episodes(c.demos.path, rows, c.demos.max_episodes,
                                   (c.image_size,) * 2,
                                   (c.pointmap_lo_m, c.pointmap_hi_m) if c.pointmap else None)
        rewarder = self.rewarder
        buffer, thr = relabelled_demos(demos, [d.images for d in demos], rewarder,
                                       c.success_bonus, replay_cfg, self._frame, proprio_dim,
                                       shape, extra, c.end_on_success)  # fmt: skip
        self.demo_info = {"episodes": len(demos), "transitions": len(buffer),
                          "rows_per_step": rows, "success_progress": thr}  # fmt: skip
        return buffer

    def _rows_per_step(self) -> int:
        """Recorded rows of the demos per control step (1 without demos)."""
        c = self.config
        if not c.demos.path:
            return c.demo_rows_per_step or 1
        return c.demo_rows_per_step or rows_per_step(c.demos.path, c.control_hz)

    @property
    def rewarder(self) -> EpisodeRewarder:
        """``reward_ckpt`` loaded once. Its frames are one control step apart: the demos'
        recorded rows per step (``demo_rows_per_step`` or their timestamps), else 1."""
        if self._rewarder is None:
            c = self.config
            self._rewarder = EpisodeRewarder(
                RewardSpec(source="model", ckpt=c.reward_ckpt, success="model"), self.device
            )
            self._rewarder.model.set_frame_stride(self._rows_per_step())
            self.reward_method = self._rewarder.model.method
        return self._rewarder

    def score_episode(self, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``episode_rewards``: the episode's camera frames (the first one and one per step)
        -> one reward and one success call per step, by the path that rewards the demos."""
        if len(frames) < 2:
            raise ValueError("an episode needs its first frame and at least one step")
        size = self.rewarder.model.config.image_size_px
        video = np.stack([prepare_frame(np.asarray(f), size) for f in frames])
        return self.rewarder.episode_rewards(video, agent_frames=False)

    # ----------------------------------------------------------------- observations
    def _frame(self, rgb: np.ndarray, xyz: np.ndarray | None = None) -> np.ndarray:
        if self.config.pointmap and xyz is None:
            raise ValueError("pointmap: a frame needs its point map (pointmap_xyz of its depth)")
        # a 640x480 camera: its centre square
        return agent_frame(rgb, self.config.image_size, xyz if self.config.pointmap else None)

    def pointmap_xyz(self, depth_m: np.ndarray) -> np.ndarray:
        """A frame's aligned depth (metres) -> its point map, with the camera's calibration."""
        if self.camera is None:
            raise RuntimeError("pointmap_xyz needs pointmap")
        k, T = self.camera
        h, w = depth_m.shape
        c = self.config
        return xyz_image(depth_m, intrinsics_at(k, w, h), T, c.pointmap_lo_m, c.pointmap_hi_m)

    def _proprio(self, proprio: np.ndarray | None) -> np.ndarray | None:
        if not self.config.proprio:
            return None
        p = np.asarray(proprio, np.float32).reshape(-1)
        if p.shape != (PROPRIO_DIM,) or not np.isfinite(p).all():
            raise NonFiniteError(f"proprio must be {PROPRIO_DIM} finite numbers, got {proprio!r}")
        return p

    def _act(self, p: np.ndarray | None) -> np.ndarray:
        action = self.core.act(p, eval_mode=self.config.eval_mode)
        self._last_action = action
        return action

    # ----------------------------------------------------------------- episode
    def begin(
        self, rgb: np.ndarray, proprio: np.ndarray | None, xyz: np.ndarray | None = None
    ) -> np.ndarray:
        frame, p = self._frame(rgb, xyz), self._proprio(proprio)
        if torch.get_num_threads() != self.config.update_threads:
            torch.set_num_threads(self.config.update_threads)  # the acting thread: see pretrain
        self.core.begin(frame, p)
        # What an operator's take-over needs to join the demonstrations at finish
        self._ep = {"frames": [frame], "proprio": [p], "actions": [], "intervened": []}
        return self._act(p)

    def step(
        self,
        rgb: np.ndarray,
        proprio: np.ndarray | None,
        applied_action: np.ndarray | None = None,
        intervened: bool = False,
        xyz: np.ndarray | None = None,
    ) -> np.ndarray:
        """Record the transition into this frame (reward filled in by finish), then act.
        ``xyz``: the frame's point map (:meth:`pointmap_xyz`) with ``pointmap``.

        ``applied_action``: the command sent for the last step when it was not the policy's
        last action (``intervened``: an operator's) or the driver reports what it executed
        (what the arm did, after the safety envelope); else the policy's."""
        last = self._last_action
        if last is None:
            raise RuntimeError("call begin() before step()")
        frame, p = self._frame(rgb, xyz), self._proprio(proprio)
        applied = np.asarray(last if applied_action is None else applied_action, np.float32)
        self.core.record(applied, frame, p)
        for k, v in zip(("frames", "proprio", "actions", "intervened"),
                        (frame, p, applied, bool(intervened)), strict=True):  # fmt: skip
            self._ep[k].append(v)
        self.state["agent_steps"] = self.core.agent_steps
        self.core.maybe_update()
        return self._act(p)

    def finish(
        self, rewards: np.ndarray, success: bool | np.ndarray, note: str = ""
    ) -> dict[str, Any]:
        """Commit the episode with one reward per step (NaN/inf: the episode is dropped).

        ``success``: a success call per step (the reward node's), or one bool for the whole
        episode (an operator's key), which calls the last step. The bonus is the core's:
        added on every called step. Steps recorded as ``intervened`` are flagged in the replay
        and each run of them joins the demonstrations. ``note`` is kept with the episode."""
        r = np.asarray(rewards, np.float32).reshape(-1)
        if np.ndim(success) == 0:
            calls = np.zeros(r.shape, bool)
            if r.size:
                calls[-1] = bool(success)
        else:
            calls = np.asarray(success, bool).reshape(-1)
        ok = bool(calls.any())
        ep = self._ep
        flags = np.asarray(ep["intervened"], bool)
        summary = {
            "steps": self.core.episode_steps,
            "return": float(r.sum()) if r.size else 0.0,
            "success": ok,
            "intervened_steps": int(flags.sum()),
        }
        try:
            self.core.finish(r, calls, flags, ep["actions"], ep["frames"], ep["proprio"],
                             note=note)  # fmt: skip
        except OSError as e:  # ENOSPC: zarr's writes name no file, so the store's path is given
            code = errno.errorcode.get(e.errno or 0, str(e.errno))
            where = e.filename or self.out / "replay"
            raise ReplayWriteError(
                f"replay commit failed: {code} ({e.strerror}) writing {where}; the episode was "
                "dropped, the episodes committed before it are kept"
            ) from e
        self._last_action = None
        if self.config.catch_up_updates:
            summary["caught_up_updates"] = self.core.catch_up()
        self.state["episodes"] += 1
        self.state["successes"] += int(ok)
        self.state["returns"] = [*self.state["returns"][-999:], summary["return"]]
        if (
            not self.config.eval_mode
            and self.state["episodes"] % self.config.checkpoint_every_episodes == 0
        ):
            self.checkpoint()
        return summary

    def abandon(self) -> None:
        self.core.abandon()
        self._last_action = None

    # ----------------------------------------------------------------- persistence
    def checkpoint(self) -> None:
        self.core.wait_idle()  # no update in flight while the weights are written
        self.state["agent_steps"] = self.core.agent_steps
        if self.agent is None:
            return  # a VPDD policy in evaluation: nothing learned to save
        self.agent.save(self.out / AGENT_FILE)
        tmp = self.out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({**self.state, "config": asdict(self.config)}, default=str))
        os.replace(tmp, self.out / STATE_FILE)

    @property
    def num_updates(self) -> int:
        """DrQ-v2 updates made so far (0 while a VPDD policy acts: nothing is trained)."""
        return 0 if self.agent is None else self.agent.num_updates

    @property
    def update_metrics(self) -> dict[str, float]:
        learner = self.core.learner
        return dict(learner.metrics) if learner is not None else {}

    def close(self) -> None:
        self.core.close()
