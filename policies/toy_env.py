"""A tiny pixel reaching task with the twin's observation layout, for tests and smoke runs.

    env = PointReachEnv(image_size=36, seed=0)
    expert_store("toy.zarr", episodes=3)   # its expert's episodes, actions recorded, in a store
    obs, info = env.reset()            # {"img": (36, 36, 3) uint8, "ee_pos": (3,), "gripper": (1,)}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

A white point moves in the unit square by ``max_step_m`` times the first two action components
(the other two are ignored, as a 4-d action is the twin's); the goal is a red square drawn in
the image (fixed unless ``random_goal``). The point starts at a random position, so a policy must
read where it is from the pixels when it gets no proprioception. Reward is the negative
distance to the goal (``info["oracle_reward"]``); ``info["success"]`` within ``success_radius_m``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from video2reward.data import keys


class PointReachEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        image_size: int = 36,
        seed: int = 0,
        episode_steps: int = 25,
        max_step_m: float = 0.15,
        success_radius_m: float = 0.1,
        random_goal: bool = False,
    ):
        if image_size < 17 or episode_steps < 1 or max_step_m <= 0 or success_radius_m <= 0:
            raise ValueError("need image_size >= 17 and positive episode_steps, step and radius")
        self.image_size = image_size
        self.episode_steps = episode_steps
        self.max_step_m = max_step_m
        self.success_radius_m = success_radius_m
        self.random_goal = random_goal
        s = image_size
        self.observation_space = gym.spaces.Dict(  # type: ignore[assignment]
            {
                keys.OBS_IMAGE: gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
                keys.OBS_EE_POS: gym.spaces.Box(-1.0, 2.0, (3,), np.float32),
                keys.OBS_GRIPPER: gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (keys.ACTION_DIM,), np.float32)
        self._rng = np.random.default_rng(seed)
        self._pos = np.zeros(2)
        self._goal = np.array([0.75, 0.25])
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            keys.OBS_IMAGE: self.render(),
            keys.OBS_EE_POS: np.array([*self._pos, 0.0], np.float32),
            keys.OBS_GRIPPER: np.ones(1, np.float32),
        }

    def _info(self) -> dict[str, Any]:
        dist = float(np.linalg.norm(self._pos - self._goal))
        return {"success": dist < self.success_radius_m, "oracle_reward": -dist}

    def expert_action(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A scripted expert (straight to the goal), the toy's stand-in for an operator."""
        a = np.zeros(keys.ACTION_DIM, np.float32)
        a[:2] = np.clip((self._goal - self._pos) / self.max_step_m, -1.0, 1.0)
        return a

    def render(self) -> np.ndarray:
        s = self.image_size
        img = np.zeros((s, s, 3), np.uint8)
        r = max(1, s // 12)
        gx, gy = (self._goal * (s - 1)).round().astype(int)
        img[max(gy - r, 0) : gy + r + 1, max(gx - r, 0) : gx + r + 1] = (220, 30, 30)
        px, py = (self._pos * (s - 1)).round().astype(int)
        img[max(py - r, 0) : py + r + 1, max(px - r, 0) : px + r + 1] = (255, 255, 255)
        return img

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._pos = self._rng.uniform(0.0, 1.0, 2)
        if self.random_goal:
            self._goal = self._rng.uniform(0.1, 0.9, 2)
        self._t = 0
        return self._obs(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, np.float64).reshape(-1)[:2], -1.0, 1.0)
        self._pos = np.clip(self._pos + self.max_step_m * a, 0.0, 1.0)
        self._t += 1
        info = self._info()
        return self._obs(), float(info["oracle_reward"]), False, self._t >= self.episode_steps, info


def expert_store(path: str | Path, episodes: int = 3, seed: int = 0, image_size: int = 24,
                 **override: Any) -> Path:
    """Episodes of the expert driving towards the target (actions recorded, the episode layout:
    row t the action taken at observation t, the last row zeros) in a new episode store;
    ``override`` replaces whole arrays of every episode (bad-input tests)."""
    from video2reward.data.episode_store import EpisodeStore

    env = PointReachEnv(image_size=image_size, seed=seed)
    store = EpisodeStore.create(str(path), fps=10.0, overwrite=True)
    observed = (keys.IMAGE, keys.EE_POS, keys.GRIPPER)
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        rows: dict[str, list[np.ndarray]] = {k: [] for k in (*observed, keys.ACTION)}
        done = False
        while not done:
            a = env.expert_action()
            for k in observed:
                rows[k].append(obs[k])
            rows[keys.ACTION].append(a)
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
        for k in observed:
            rows[k].append(obs[k])
        rows[keys.ACTION].append(np.zeros(4, np.float32))
        data = {k: np.stack(v) for k, v in rows.items()}
        data.update(override)
        store.append_episode(data, task="toy", success=True, kind="expert")
    return Path(path)
