"""The emulator's controller state machine, in-process and without sockets (fast)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk
from video2reward.sim.xarm_controller_model import (
    EmulatedController,
    EmulatorConfig,
    rpy_from_matrix,
)
from video2reward.sim.xarm_protocol import (
    ERR_JOINT_LIMIT,
    ERR_KINEMATIC,
    ERR_SPEED,
    FN_GET_TCP_POSE,
    FN_MOVE_LINE,
    FN_MOVE_SERVO_CART,
    STATE_READY,
    STATE_STOPPED,
)


@pytest.fixture(scope="module")
def ctrl() -> EmulatedController:
    return EmulatedController(EmulatorConfig())


def _ready(c: EmulatedController, mode: int) -> None:
    c.clean_error()
    c.motion_enable(True)
    c.set_mode(mode)
    c.set_state(0)
    c.tcp_offset = np.array([0, 0, GRIPPER_TCP_OFFSET_M * 1000, 0, 0, 0])
    assert c.state == STATE_READY


def _servo(c: EmulatedController, pose: list[float]) -> bytes:
    return c.handle(FN_MOVE_SERVO_CART, struct.pack("<9f", *pose, 100, 1000, 0), 1) or b""


def test_rpy_roundtrip_matches_kinematics() -> None:
    from video2reward.robot.kinematics import rpy_matrix

    for rpy in [(math.pi, 0, 0.3), (0.2, -0.4, 1.0), (-2.0, 0.1, -3.0)]:
        np.testing.assert_allclose(rpy_matrix(rpy_from_matrix(rpy_matrix(rpy))), rpy_matrix(rpy),
                                   atol=1e-12)


def test_servo_target_moves_twin_to_the_ik_solution(ctrl: EmulatedController) -> None:
    _ready(ctrl, 1)
    p0 = ctrl.tcp_pose()
    target = [p0[0] + 5.0, p0[1] - 5.0, p0[2], math.pi, 0.0, 0.0]
    _servo(ctrl, target)
    for _ in range(25):
        ctrl.tick(0.004)
    assert ctrl.error_code == 0
    tcp = fk(ctrl.twin.joint_pos(), GRIPPER_TCP_OFFSET_M)[:3, 3] * 1000
    np.testing.assert_allclose(tcp, target[:3], atol=0.5)
    got = struct.unpack("<6f", ctrl.handle(FN_GET_TCP_POSE, b"", 2) or b"")
    np.testing.assert_allclose(got[:3], target[:3], atol=0.5)


@pytest.mark.parametrize(
    ("offset_mm", "code"),
    [
        ((100.0, 0.0, 0.0), ERR_SPEED),  # one servo jump far larger than a step
        ((0.0, 0.0, 0.0), None),
    ],
)
def test_servo_jump_gives_speed_error(
    ctrl: EmulatedController, offset_mm: tuple, code: int | None
) -> None:
    _ready(ctrl, 1)
    p0 = ctrl.tcp_pose()
    _servo(ctrl, [p0[0] + offset_mm[0], p0[1], p0[2], math.pi, 0.0, 0.0])
    assert ctrl.error_code == (code or 0)
    assert (ctrl.state == STATE_STOPPED) == (code is not None)


def test_unreachable_and_limit_targets_give_controller_errors(ctrl: EmulatedController) -> None:
    _ready(ctrl, 0)
    far = struct.pack("<10f", 1200.0, 0, 200, math.pi, 0, 0, 100, 1000, 0, -1) + b"\0\0\0"
    ctrl.handle(FN_MOVE_LINE, far, 3)
    assert ctrl.error_code == ERR_KINEMATIC and ctrl.state == STATE_STOPPED
    # A motion command while the error stands is refused, not executed.
    n_before = sum(e["accepted"] for e in ctrl.motion_log)
    ok = struct.pack("<10f", 350.0, 0, 200, math.pi, 0, 0, 100, 1000, 0, -1) + b"\0\0\0"
    ctrl.handle(FN_MOVE_LINE, ok, 4)
    assert sum(e["accepted"] for e in ctrl.motion_log) == n_before
    assert ctrl.state_flags() & 0x40  # the reply carries the error flag
    _ready(ctrl, 0)
    # Tool tilted: the 5-axis arm cannot do it.
    tilted = struct.pack("<10f", 350.0, 0, 200, math.pi / 2, 0, 0, 100, 1000, 0, -1) + b"\0\0\0"
    ctrl.handle(FN_MOVE_LINE, tilted, 5)
    assert ctrl.error_code == ERR_KINEMATIC
    _ready(ctrl, 0)
    # Behind the base, below the shoulder: needs joint angles outside the xArm5 limits.
    behind = struct.pack("<10f", -150.0, 0, 30, math.pi, 0, 0, 100, 1000, 0, -1) + b"\0\0\0"
    ctrl.handle(FN_MOVE_LINE, behind, 6)
    assert ctrl.error_code in (ERR_JOINT_LIMIT, ERR_KINEMATIC)


def test_gripper_registers_follow_target(ctrl: EmulatedController) -> None:
    _ready(ctrl, 1)
    write_en = bytes([8, 0x10, 0x01, 0x00, 0x00, 0x01, 0x02, 0x00, 0x01])
    assert ctrl.gripper_rtu(write_en)[:2] == bytes([8, 0x10])
    write_pos = bytes([8, 0x10, 0x07, 0x00, 0x00, 0x02, 0x04]) + struct.pack(">i", 200)
    ctrl.gripper_rtu(write_pos)
    for _ in range(200):
        ctrl.tick(0.004)
    reply = ctrl.gripper_rtu(bytes([8, 0x03, 0x07, 0x02, 0x00, 0x02]))
    assert struct.unpack(">i", reply[3:7])[0] == 200
    assert ctrl.twin.gripper_open_frac() == pytest.approx(200 / 850, abs=0.03)


@pytest.mark.parametrize(("kind", "length"), [("real", 87), ("normal", 145), ("rich", 288)])
def test_report_frames_have_declared_length(
    ctrl: EmulatedController, kind: str, length: int
) -> None:
    frame = ctrl.report(kind)
    assert len(frame) == length == struct.unpack(">I", frame[:4])[0]
    angles = struct.unpack("<7f", frame[7:35])
    np.testing.assert_allclose(angles[:5], ctrl.twin.joint_pos(), atol=1e-5)


def test_pushing_into_an_object_raises_collision_error_and_stops() -> None:
    from video2reward.sim.model import OBJECT_COLLISION
    from video2reward.sim.twin import XArm5Twin
    from video2reward.sim.xarm_protocol import ERR_COLLISION

    wall = (f'<body name="wall" pos="0.35 0 0.06"><geom name="wall" type="box" '
            f'size="0.05 0.05 0.06" {OBJECT_COLLISION}/></body>')  # top face at z = 0.12 m
    c = EmulatedController(EmulatorConfig(), XArm5Twin(task_objects_xml=wall))
    _ready(c, 1)
    pose = list(c.tcp_pose())
    for _ in range(40):  # servo straight down at 5 mm / 20 ms
        pose[2] -= 5.0
        _servo(c, pose)
        for _ in range(5):
            c.tick(0.004)
        if c.error_code:
            break
    assert c.error_code == ERR_COLLISION and c.state == STATE_STOPPED
    assert c.tcp_pose()[2] > 110.0  # stopped on the wall, not through it
    q = c.twin.joint_pos()
    for _ in range(25):
        c.tick(0.004)
    assert np.max(np.abs(c.twin.joint_pos() - q)) < 5e-3  # and holds there
    c.twin.close()
