"""Gymnasium environment over the twin: pixels + proprioception in, normalized EE deltas out.

    env = make_env("push", image_size=84, seed=0)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    obs["img"]          # (84, 84, 3) uint8 from the RealSense-like camera
    obs["depth"]        # (84, 84) float32 metres aligned to it, with EnvConfig(depth=True)
    info["success"]     # task predicate; reward is the dense oracle (baselines only)
    info["applied_action"]  # the command actually executed after safety clipping

One step is one command at ``control_hz`` (10 Hz default, up to 30 Hz), with physics substeps
in between. A NaN/inf or wrongly shaped action raises ``InvalidCommandError`` before anything
moves, as the real driver refuses it; so does a component beyond +-1.5. The envelope is the
driver's: targets keep ``envelope.margin_m`` inside the workspace box and brake towards it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from video2reward.data import keys
from video2reward.robot.safety import EnvelopeConfig, SafetyEnvelope
from video2reward.sim.controller import CartesianController
from video2reward.sim.tasks import Task, make_task
from video2reward.sim.twin import CameraConfig, TwinConfig, XArm5Twin


@dataclass(frozen=True)
class EnvConfig:
    task: str = "reach"
    image_size: int = 84  # square render; 84, 128 and 224 are the usual sizes
    control_hz: float = 10.0  # one env step = one command
    max_episode_steps: int | None = None  # None: the task's default
    camera: CameraConfig = field(default_factory=CameraConfig)
    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    physics_dt_s: float = 0.002
    # Also observe depth aligned to the image (obs["depth"], float32 metres), as a RealSense
    # with rs.align gives: the point-map policy's input (data/pointmap.py).
    depth: bool = False

    def __post_init__(self) -> None:
        if not 1.0 <= self.control_hz <= 30.0:
            raise ValueError(f"control_hz must be in [1, 30], got {self.control_hz}")
        if not 16 <= self.image_size <= 480:
            raise ValueError(f"image_size must be in [16, 480], got {self.image_size}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError("max_episode_steps must be at least 1")
        make_task(self.task)  # validates the name


class XArm5Env(gym.Env[dict[str, np.ndarray], np.ndarray]):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 (gymnasium API)

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = "rgb_array"):
        self.config = config or EnvConfig()
        self.render_mode = render_mode
        self.task: Task = make_task(self.config.task)
        self.twin = XArm5Twin(
            TwinConfig(physics_dt_s=self.config.physics_dt_s, camera=self.config.camera),
            task_objects_xml=self.task.objects_xml(),
        )
        self.controller = CartesianController(self.twin, SafetyEnvelope(self.config.envelope))
        self.max_episode_steps = self.config.max_episode_steps or self.task.max_episode_steps
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        s = self.config.image_size
        self.observation_space: spaces.Dict = spaces.Dict(  # type: ignore[assignment]
            {
                keys.OBS_IMAGE: spaces.Box(0, 255, (s, s, 3), np.uint8),
                keys.OBS_EE_POS: spaces.Box(-2.0, 2.0, (3,), np.float32),
                keys.OBS_GRIPPER: spaces.Box(0.0, 1.0, (1,), np.float32),
                keys.OBS_JOINT_POS: spaces.Box(-7.0, 7.0, (5,), np.float32),
                **({keys.OBS_DEPTH: spaces.Box(0.0, np.inf, (s, s), np.float32)}
                   if self.config.depth else {}),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (keys.ACTION_DIM,), np.float32)
        self._steps = 0
        self._rng = np.random.default_rng()

    @property
    def dt_s(self) -> float:
        return 1.0 / self.config.control_hz

    def intrinsics(self) -> dict[str, float]:
        s = self.config.image_size
        return self.config.camera.intrinsics(s, s)

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {
            keys.OBS_IMAGE: self.twin.render(self.config.image_size),
            keys.OBS_EE_POS: self.controller.tcp_pos().astype(np.float32),
            keys.OBS_GRIPPER: np.array([self.twin.gripper_open_frac()], dtype=np.float32),
            keys.OBS_JOINT_POS: self.twin.joint_pos().astype(np.float32),
        }
        if self.config.depth:
            obs[keys.OBS_DEPTH] = self.twin.render_depth(self.config.image_size)
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "success": self.task.success(self.twin),
            "oracle_reward": self.task.oracle_reward(self.twin),
            "time_s": self.twin.time_s,
            "goal_pos": self.task.goal_pos(self.twin),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.task.reset(self._rng, self.twin)
        self.controller.reset()
        self.twin.hold(0.05)  # let contacts settle before the first frame
        self.twin.time_s = 0.0
        self._steps = 0
        return self._obs(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cmd = self.controller.step(action, self.dt_s)  # raises on malformed input, nothing moves
        self._steps += 1
        obs = self._obs()
        info = self._info()
        info["applied_action"] = cmd.applied_action
        info["clamped"] = cmd.clamped
        truncated = self._steps >= self.max_episode_steps
        return obs, float(info["oracle_reward"]), False, truncated, info

    def render(self) -> np.ndarray:
        return self.twin.render(self.config.image_size)

    def goal_image(self, size: int | None = None) -> np.ndarray:
        """This episode's goal as a camera frame, as a user would photograph it for VIP.

        The scripted expert is run from the current state until the task succeeds (or the
        episode's step budget ends), its frame is rendered, and the state is put back exactly:
        the episode continues as if nothing happened.
        """
        from video2reward.sim.experts import make_policy

        snap, steps = self.twin.snapshot(), self._steps
        v_last = self.controller.last_velocity_m_s
        try:
            expert = make_policy(self, "expert", np.random.default_rng(0))
            expert.reset()
            obs = self._obs()
            for _ in range(self.max_episode_steps):
                if self.task.success(self.twin):
                    break
                self.controller.step(expert(obs), self.dt_s)
                obs = self._obs()
            return self.twin.render(size or self.config.image_size)
        finally:
            self.twin.restore(snap)
            self._steps = steps
            self.controller.set_last_velocity(v_last)

    def close(self) -> None:
        self.twin.close()


def make_env(
    task: str = "reach", image_size: int = 84, seed: int | None = None, **kwargs: Any
) -> XArm5Env:
    """Build a twin env; ``kwargs`` go to :class:`EnvConfig`."""
    env = XArm5Env(EnvConfig(task=task, image_size=image_size, **kwargs))
    if seed is not None:
        env.reset(seed=seed)
    return env
