"""Scripted policies for the twin tasks: experts, labelled failures and random motion.

    policy = make_policy(env, kind="expert", rng=np.random.default_rng(0))
    obs, info = env.reset(seed=0); policy.reset()
    action = policy(obs)          # normalized [-1, 1]^4, like every other command source

The experts read the simulator state (privileged) and emit the same normalized commands a
learner or an operator would, so everything they do goes through the safety envelope.
``kind="failed"`` runs the same expert towards a decoy goal: plausible motion that does not
complete the task, which is what a reward model must tell apart from success.
"""

from __future__ import annotations

import numpy as np
from video2reward.sim.env import XArm5Env
from video2reward.sim.tasks import BLOCK_HALF_M, ButtonPress, Push, Reach

KINDS = ("expert", "failed", "random")
_FINGER_HALF_M = 0.012
_GRIP_OPEN, _GRIP_CLOSED = -1.0, 1.0


class ScriptedPolicy:
    def __init__(self, env: XArm5Env, rng: np.random.Generator, noise: float = 0.0):
        self.env = env
        self.rng = rng
        self.noise = noise

    def reset(self) -> None:
        pass

    def _toward(self, p_des: np.ndarray, grip: float, gain: float = 1.0) -> np.ndarray:
        step = self.env.config.envelope.max_step_m
        d = (np.asarray(p_des) - self.env.controller.tcp_pos()) * gain / step
        n = np.max(np.abs(d))
        if n > 1.0:
            d /= n  # keep the direction, saturate the largest axis
        a = np.append(d, grip)
        if self.noise:
            a[:3] += self.rng.normal(0.0, self.noise, 3)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class ReachExpert(ScriptedPolicy):
    def __init__(
        self, env: XArm5Env, rng: np.random.Generator, noise: float = 0.0, decoy: bool = False
    ):
        super().__init__(env, rng, noise)
        self.decoy = decoy
        self.goal = np.zeros(3)

    def reset(self) -> None:
        task = self.env.task
        assert isinstance(task, Reach)
        self.goal = task.goal_pos(self.env.twin)
        if self.decoy:  # a point clearly away from the target, still inside the workspace
            offset = self.rng.normal(size=3) * np.array([1.0, 1.0, 0.3])
            offset = offset / np.linalg.norm(offset) * self.rng.uniform(0.10, 0.16)
            self.goal = self.env.config.envelope.box.clip(self.goal + offset)
            self.goal[2] = max(self.goal[2], 0.04)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self._toward(self.goal, _GRIP_OPEN, gain=0.8)


class PushExpert(ScriptedPolicy):
    """Get behind the block (away from the goal), lower, and push along block->goal."""

    def __init__(
        self, env: XArm5Env, rng: np.random.Generator, noise: float = 0.0, decoy: bool = False
    ):
        super().__init__(env, rng, noise)
        self.decoy = decoy
        self.goal = np.zeros(2)
        self.pushing = False

    def reset(self) -> None:
        task = self.env.task
        assert isinstance(task, Push)
        self.pushing = False
        self.goal = task.goal_pos(self.env.twin)[:2]
        if self.decoy:  # push the block the wrong way: rotate block->goal by 90-180 degrees
            block = task.block_pos(self.env.twin)[:2]
            v = self.goal - block
            ang = self.rng.choice([-1, 1]) * self.rng.uniform(np.pi / 2, np.pi)
            c, s = np.cos(ang), np.sin(ang)
            self.goal = block + np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])
            box = self.env.config.envelope.box
            self.goal = np.clip(self.goal, box.lo[:2] + 0.08, box.hi[:2] - 0.08)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        task = self.env.task
        assert isinstance(task, Push)
        block = task.block_pos(self.env.twin)[:2]
        tcp = self.env.controller.tcp_pos()
        to_goal = self.goal - block
        dist = np.linalg.norm(to_goal)
        if dist < 0.01:
            return self._toward(np.append(tcp[:2], 0.06), _GRIP_CLOSED)
        u = to_goal / dist
        standoff = BLOCK_HALF_M + _FINGER_HALF_M + 0.012
        behind = block - u * standoff
        rel = tcp[:2] - block
        along, lateral = rel @ u, abs(rel[0] * u[1] - rel[1] * u[0])
        if self.pushing and (lateral > 0.02 or along > -BLOCK_HALF_M):
            self.pushing = False  # lost the block: back off and line up again
        if not self.pushing:
            if np.linalg.norm(tcp[:2] - behind) > 0.012:
                # travel high, so the fingers never sweep the block on the way
                z = 0.08 if np.linalg.norm(tcp[:2] - behind) > 0.03 else 0.02
                if tcp[2] < 0.05 and along > -standoff + 0.005:
                    return self._toward(np.append(tcp[:2] - u * 0.01, 0.08), _GRIP_CLOSED)
                return self._toward(np.append(behind, z), _GRIP_CLOSED)
            if tcp[2] > 0.03:
                return self._toward(np.append(behind, 0.02), _GRIP_CLOSED)
            self.pushing = True
        # push: aim where the tool stands when the block sits on the goal, correcting sideways
        target = self.goal - u * (BLOCK_HALF_M + _FINGER_HALF_M)
        return self._toward(np.append(target, 0.02), _GRIP_CLOSED, gain=0.7)


class ButtonExpert(ScriptedPolicy):
    def __init__(
        self, env: XArm5Env, rng: np.random.Generator, noise: float = 0.0, decoy: bool = False
    ):
        super().__init__(env, rng, noise)
        self.decoy = decoy
        self.top = np.zeros(3)
        self.pressing = False

    def reset(self) -> None:
        task = self.env.task
        assert isinstance(task, ButtonPress)
        self.pressing = False
        self.top = task.goal_pos(self.env.twin)
        if self.decoy:  # hover near the button without pressing it
            self.top = self.top + np.array([*self.rng.uniform(-0.03, 0.03, 2), 0.05])

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        tcp = self.env.controller.tcp_pos()
        above = self.top + np.array([0.0, 0.0, 0.03])
        # hysteresis: line up within 8 mm, keep pressing while within 18 mm of the axis
        if np.linalg.norm(tcp[:2] - self.top[:2]) > (0.018 if self.pressing else 0.008):
            self.pressing = False
            return self._toward(above, _GRIP_CLOSED)
        if self.decoy:
            return self._toward(above, _GRIP_CLOSED)
        self.pressing = True
        return self._toward(self.top - np.array([0.0, 0.0, 0.025]), _GRIP_CLOSED, gain=0.6)


class RandomPolicy(ScriptedPolicy):
    """Smoothed random motion (an Ornstein-Uhlenbeck walk), gripper random."""

    def reset(self) -> None:
        self.a = self.rng.uniform(-1, 1, 4)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.a = 0.8 * self.a + 0.2 * self.rng.uniform(-1, 1, 4) * 2.0
        return np.clip(self.a, -1, 1).astype(np.float32)


_EXPERTS = {"reach": ReachExpert, "push": PushExpert, "button-press": ButtonExpert}


def make_policy(
    env: XArm5Env, kind: str = "expert", rng: np.random.Generator | None = None, noise: float = 0.0
) -> ScriptedPolicy:
    rng = rng or np.random.default_rng()
    if kind not in KINDS:
        raise ValueError(f"unknown policy kind {kind!r}; choose one of {KINDS}")
    if kind == "random":
        return RandomPolicy(env, rng)
    cls = _EXPERTS[env.task.name]
    return cls(env, rng, noise=noise, decoy=(kind == "failed"))
