"""Cartesian control of the twin with the real robot's command semantics.

    ctrl = CartesianController(twin, SafetyEnvelope(EnvelopeConfig()))
    cmd = ctrl.step(np.array([1.0, 0.0, -0.5, -1.0]), duration_s=0.1)
    cmd.applied_action     # what was actually commanded after clipping (record this)

An action is a normalized delta end-effector command in [-1, 1]^4: dx, dy, dz scaled by the
envelope's ``max_step_m`` and a gripper command (-1 open ... +1 closed). The target is the
*measured* tool position plus the delta, limited by the same envelope the xArm driver runs
(margin inside the box, braking towards its faces, speed and per-axis acceleration limits from
the previous command's velocity), then solved with the
closed-form tool-down IK inside the joint limits. A target the arm cannot reach is pulled back
along the step towards the current position until it can: clamped, never passed through.
"""

from __future__ import annotations

import numpy as np
from video2reward.robot.kinematics import (
    GRIPPER_TCP_OFFSET_M,
    UnreachableError,
    fk,
    ik_tool_down,
)
from video2reward.robot.safety import SafeCommand, SafetyEnvelope
from video2reward.sim.twin import XArm5Twin


class CartesianController:
    def __init__(self, twin: XArm5Twin, envelope: SafetyEnvelope, yaw_rad: float = 0.0):
        self.twin = twin
        self.envelope = envelope
        self.yaw_rad = yaw_rad
        self._v_last = np.zeros(3)  # previous command's target velocity, m/s

    def reset(self) -> None:
        """Forget the previous command (episode reset): the next one starts from rest."""
        self._v_last = np.zeros(3)

    @property
    def last_velocity_m_s(self) -> np.ndarray:
        return self._v_last.copy()

    def set_last_velocity(self, v_m_s: np.ndarray) -> None:
        """Restore the previous command's velocity (snapshot/restore of an episode)."""
        self._v_last = np.asarray(v_m_s, dtype=float).copy()

    def tcp_pos(self) -> np.ndarray:
        """Measured tool-centre point from the joint encoders, base frame, metres."""
        return fk(self.twin.joint_pos(), GRIPPER_TCP_OFFSET_M)[:3, 3]

    def solve(self, p_now: np.ndarray, p_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles for ``p_target``, or for the farthest reachable point towards it."""
        q_ref = self.twin.commanded_joint_pos()
        try:
            return p_target, ik_tool_down(p_target, self.yaw_rad, q_ref, GRIPPER_TCP_OFFSET_M)
        except UnreachableError:
            pass
        lo, hi = 0.0, 1.0
        best: tuple[np.ndarray, np.ndarray] | None = None
        for _ in range(20):  # bisection on the fraction of the step that stays reachable
            mid = (lo + hi) / 2
            p = p_now + mid * (p_target - p_now)
            try:
                best = (p, ik_tool_down(p, self.yaw_rad, q_ref, GRIPPER_TCP_OFFSET_M))
                lo = mid
            except UnreachableError:
                hi = mid
        if best is None:  # not even the current position: hold the last commanded joints
            return p_now, q_ref
        return best

    def step(self, action: object, duration_s: float) -> SafeCommand:
        """Validate, clip, solve and execute one command over ``duration_s`` of physics."""
        p_now = self.tcp_pos()
        # raises before anything moves
        cmd = self.envelope.apply(p_now, action, dt_s=duration_s, v_last_m_s=self._v_last)
        p_goal, q_goal = self.solve(p_now, cmd.p_base_target)
        if not np.allclose(p_goal, cmd.p_base_target):
            applied = cmd.applied_action.copy()
            applied[:3] = (p_goal - p_now) / self.envelope.config.max_step_m
            velocity = (p_goal - p_now) / duration_s
            cmd = SafeCommand(p_goal, cmd.gripper_target, applied, True, velocity)
        self._v_last = cmd.velocity_m_s
        open_frac = (cmd.gripper_target - 0.0) / 850.0
        self.twin.servo(q_goal, open_frac, duration_s)
        return cmd
