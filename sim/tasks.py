"""Twin tasks: objects, seeded randomized resets, success predicates and dense oracle rewards.

    task = make_task("push")
    twin = XArm5Twin(task_objects_xml=task.objects_xml())
    task.reset(np.random.default_rng(0), twin)
    task.success(twin), task.oracle_reward(twin)

The oracle reward is for baselines and evaluation only: learned rewards never see it.
Positions are in the robot base frame (table top at z = 0), metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, ik_tool_down
from video2reward.sim.model import OBJECT_COLLISION, VISUAL_ONLY
from video2reward.sim.twin import READY_TCP_M, XArm5Twin


def _uniform(rng: np.random.Generator, lo: tuple[float, ...], hi: tuple[float, ...]) -> np.ndarray:
    return rng.uniform(np.asarray(lo), np.asarray(hi))


def _reset_arm(rng: np.random.Generator, twin: XArm5Twin, jitter_m: float = 0.03) -> None:
    p = READY_TCP_M + rng.uniform(-jitter_m, jitter_m, 3)
    twin.reset(q=ik_tool_down(p, 0.0, tcp_offset_m=GRIPPER_TCP_OFFSET_M), gripper_open_frac=1.0)


@dataclass
class Task:
    """Base class; subclasses define the objects and the three functions of the state."""

    name: str = "task"
    max_episode_steps: int = 50

    def objects_xml(self) -> str:
        return ""

    def reset(self, rng: np.random.Generator, twin: XArm5Twin) -> None:
        """A new episode: objects re-randomized, arm near the ready pose."""
        _reset_arm(rng, twin)
        self.reset_objects(rng, twin)

    def reset_objects(self, rng: np.random.Generator, twin: XArm5Twin) -> None:
        """Re-randomize the task's objects only (the arm is homed by its controller)."""

    def success(self, twin: XArm5Twin) -> bool:
        raise NotImplementedError

    def oracle_reward(self, twin: XArm5Twin) -> float:
        raise NotImplementedError

    def goal_pos(self, twin: XArm5Twin) -> np.ndarray:
        """Where the task wants the key object (or the tool) to be; for experts and plots."""
        raise NotImplementedError


@dataclass
class Reach(Task):
    """Bring the gripper's tool-centre point within ``radius_m`` of a red sphere."""

    name: str = "reach"
    max_episode_steps: int = 50
    radius_m: float = 0.03

    def objects_xml(self) -> str:
        return (
            '<body name="target" pos="0.4 0 0.1">'
            f'<geom name="target" type="sphere" size="0.02" rgba="0.9 0.1 0.1 1" {VISUAL_ONLY}/>'
            # A thin stand down through the table top (which hides the rest): without it a
            # floating sphere's distance along the camera ray is ambiguous by ~10 cm in one view.
            '<geom name="target_stand" type="cylinder" fromto="0 0 -0.3 0 0 -0.018" size="0.004"'
            f' rgba="0.2 0.2 0.22 1" {VISUAL_ONLY}/>'
            "</body>"
        )

    def reset_objects(self, rng: np.random.Generator, twin: XArm5Twin) -> None:
        twin.model.body("target").pos = _uniform(rng, (0.28, -0.15, 0.04), (0.48, 0.15, 0.18))

    def goal_pos(self, twin: XArm5Twin) -> np.ndarray:
        return twin.model.body("target").pos.copy()

    def success(self, twin: XArm5Twin) -> bool:
        return bool(np.linalg.norm(twin.tcp_pos() - self.goal_pos(twin)) < self.radius_m)

    def oracle_reward(self, twin: XArm5Twin) -> float:
        return -float(np.linalg.norm(twin.tcp_pos() - self.goal_pos(twin)))


BLOCK_HALF_M = 0.025


@dataclass
class Push(Task):
    """Push a 5 cm block until its centre is within ``radius_m`` of a green goal disc."""

    name: str = "push"
    max_episode_steps: int = 120
    radius_m: float = 0.04

    def objects_xml(self) -> str:
        h = BLOCK_HALF_M
        return (
            f'<body name="block" pos="0.35 0 {h}"><freejoint name="block"/>'
            f'<geom name="block" type="box" size="{h} {h} {h}" mass="0.1" rgba="0.15 0.35 0.85 1" '
            f'friction="0.5 0.005 0.0001" {OBJECT_COLLISION}/></body>'
            '<body name="goal" pos="0.45 0 0.0005">'
            f'<geom name="goal" type="cylinder" size="0.045 0.0005" rgba="0.1 0.75 0.2 1" {VISUAL_ONLY}/>'
            "</body>"
        )

    def reset_objects(self, rng: np.random.Generator, twin: XArm5Twin) -> None:
        while True:
            block = _uniform(rng, (0.31, -0.10), (0.41, 0.10))
            angle = rng.uniform(-np.pi, np.pi)
            dist = rng.uniform(0.10, 0.15)
            goal = block + dist * np.array([np.cos(angle), np.sin(angle)])
            behind = block - 0.07 * np.array([np.cos(angle), np.sin(angle)])
            if (
                0.27 <= goal[0] <= 0.50
                and abs(goal[1]) <= 0.17
                and 0.22 <= behind[0] <= 0.53
                and abs(behind[1]) <= 0.23
            ):
                break
        twin.model.body("goal").pos = (*goal, 0.0005)
        adr = twin.model.joint("block").qposadr[0]
        twin.data.qpos[adr : adr + 7] = (*block, BLOCK_HALF_M, 1, 0, 0, 0)
        mujoco.mj_forward(twin.model, twin.data)

    def goal_pos(self, twin: XArm5Twin) -> np.ndarray:
        return twin.model.body("goal").pos.copy()

    def block_pos(self, twin: XArm5Twin) -> np.ndarray:
        return twin.body_pos("block")

    def success(self, twin: XArm5Twin) -> bool:
        d = self.block_pos(twin)[:2] - self.goal_pos(twin)[:2]
        return bool(np.linalg.norm(d) < self.radius_m)

    def oracle_reward(self, twin: XArm5Twin) -> float:
        block = self.block_pos(twin)
        d_goal = np.linalg.norm(block[:2] - self.goal_pos(twin)[:2])
        d_tool = np.linalg.norm(twin.tcp_pos() - block)
        return -float(2.0 * d_goal + 0.5 * d_tool)


@dataclass
class ButtonPress(Task):
    """Press a spring-loaded button (travel 20 mm) down by at least ``press_m``."""

    name: str = "button-press"
    max_episode_steps: int = 60
    press_m: float = 0.012

    def objects_xml(self) -> str:
        return (
            '<body name="button_box" pos="0.4 0 0">'
            f'<geom name="button_box" type="box" size="0.04 0.04 0.025" pos="0 0 0.025" rgba="0.25 0.25 0.28 1" {OBJECT_COLLISION}/>'
            '<body name="button" pos="0 0 0.05">'
            '<joint name="button" type="slide" axis="0 0 1" range="-0.02 0" stiffness="150" springref="0" damping="3"/>'
            # the cap slides into its housing: it touches the gripper (bit 2) but not the housing
            '<geom name="button" type="cylinder" size="0.022 0.01" pos="0 0 0.01" mass="0.1" '
            'solref="0.004 1" rgba="0.9 0.15 0.1 1" contype="4" conaffinity="2"/>'
            "</body></body>"
        )

    def reset_objects(self, rng: np.random.Generator, twin: XArm5Twin) -> None:
        xy = _uniform(rng, (0.30, -0.15), (0.45, 0.15))
        twin.model.body("button_box").pos = (*xy, 0.0)
        adr = twin.model.joint("button").qposadr[0]
        twin.data.qpos[adr] = 0.0
        twin.data.qvel[twin.model.joint("button").dofadr[0]] = 0.0
        mujoco.mj_forward(twin.model, twin.data)

    def goal_pos(self, twin: XArm5Twin) -> np.ndarray:
        """Top of the button cap at rest."""
        return twin.model.body("button_box").pos + np.array([0.0, 0.0, 0.07])

    def depression_m(self, twin: XArm5Twin) -> float:
        return -float(twin.data.qpos[twin.model.joint("button").qposadr[0]])

    def success(self, twin: XArm5Twin) -> bool:
        return self.depression_m(twin) >= self.press_m

    def oracle_reward(self, twin: XArm5Twin) -> float:
        top = self.goal_pos(twin)
        d_xy = np.linalg.norm(twin.tcp_pos()[:2] - top[:2])
        return -float(
            d_xy + abs(twin.tcp_pos()[2] - top[2]) * 0.5 + (0.02 - self.depression_m(twin)) * 5
        )


TASKS: dict[str, type[Task]] = {"reach": Reach, "push": Push, "button-press": ButtonPress}


def make_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
