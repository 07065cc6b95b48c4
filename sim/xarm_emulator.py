"""xArm controller emulator: the xArm SDK's own wire protocol, served from the MuJoCo twin.

    # Ports 502 and 30001-30003 are fixed by the SDK, so run it in a private network namespace
    # (no root needed). One command starts the emulator and a client inside one namespace:
    v2r sim emulator -- python my_client.py
    # which is sim.emulator_netns; by hand it is:
    unshare -rn sh -c 'ip link set lo up; python -m video2reward.sim.xarm_emulator &
                       sleep 3; python my_client.py'

    # my_client.py, unchanged from the lab robot except the address:
    from xarm.wrapper import XArmAPI
    arm = XArmAPI("127.0.0.1"); arm.motion_enable(True); arm.set_mode(1); arm.set_state(0)
    arm.set_servo_cartesian([350, 0, 200, 180, 0, 0])      # mm and degrees, tool down

The emulated subset is what ``robot.xarm_driver`` uses: version and serial number, motion
enable, mode, state, error/warning codes and clearing, TCP offset, set_position (linear moves
in position mode, with motion-finished feedback), servo-cartesian (mode 1), get_position and
joint angles, emergency stop (set_state(4)), the report streams on 30001/30002/30003, and the
xArm Gripper's Modbus-RTU registers on the tool RS-485. Targets the xArm5 cannot reach give
controller error 21 (kinematic error), joint-limit violations 23, a servo jump larger than
``servo_max_step_mm`` 24 (speed exceeds limit), and arm contact above ``collision_force_n``
31 (collision); like the real controller, an error stops the arm (state 4) and every motion
command is refused until the error is cleared, the motors re-enabled and the state set to 0.

A small JSON-lines probe on 127.0.0.1:``probe_port`` (not part of the xArm protocol) lets tests
read the twin's true joint angles, the log of every motion command received and of every stop
of the arm (``log``, monotonic times), record the true TCP at every control tick
(``trace_start`` / ``trace``), and inject faults: a controller
error (``inject_error``), report streams that fall silent (``stall_reports``), dropped
connections (``drop_connections``). Killing the process is the remaining fault: see
``sim.emulator_netns`` (``EMULATOR_PID_ENV``, ``start_emulator``). The SDK calls
``socket.setdefaulttimeout(1)`` process-wide, so the emulator always runs in its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from video2reward.robot.kinematics import (
    LOWER_RAD,
    UPPER_RAD,
    UnreachableError,
    fk,
    ik_tool_down,
    rpy_matrix,
)
from video2reward.sim.twin import READY_Q, TwinConfig, XArm5Twin

log = logging.getLogger("xarm_emulator")

CONTROL_PORT = 502  # xarm.core.config.x_config.XCONF.SocketConf
REPORT_NORMAL_PORT, REPORT_RICH_PORT, REPORT_REAL_PORT = 30001, 30002, 30003

# Function codes (XCONF.UxbusReg) of the emulated subset.
FN_GET_VERSION, FN_GET_ROBOT_SN = 1, 2
FN_MOTION_EN, FN_SET_STATE, FN_GET_STATE, FN_GET_CMDNUM, FN_GET_ERROR = 11, 12, 13, 14, 15
FN_CLEAN_ERR, FN_CLEAN_WAR, FN_SET_MODE = 16, 17, 19
FN_MOVE_LINE, FN_MOVE_SERVO_CART = 21, 30
FN_SET_TCP_OFFSET, FN_SET_LOAD_PARAM = 35, 36
FN_GET_TCP_POSE, FN_GET_JOINT_POS = 41, 42
FN_TGPIO_MB_TIOUT, FN_RS485_RTU, FN_TGPIO_W16B, FN_TGPIO_R16B = 123, 124, 127, 128
FN_FEEDBACK_CHECK, FN_SET_FEEDBACK_TYPE = 253, 254
FB_MOTION_FINISH = 2  # XCONF.FeedbackType.MOTION_FINISH

# Controller error codes (xarm.core.config.x_code.ControllerErrorCodeMap).
ERR_KINEMATIC, ERR_JOINT_LIMIT, ERR_SPEED, ERR_COLLISION = 21, 23, 24, 31

# Controller states as the SDK reads them: 1 moving, 2 ready and idle, 4 stopped.
STATE_MOVING, STATE_READY, STATE_STOPPED = 1, 2, 4

# Reply state-byte flags (UxbusCmdTcp.check_private_protocol).
_FLAG_ERROR, _FLAG_WARN, _FLAG_NOT_READY = 0x40, 0x20, 0x10

# xArm Gripper registers (XCONF.ServoConf) behind the tool RS-485 (host id 9, slave id 8).
GRIP_EN, GRIP_MODE, GRIP_SPEED, GRIP_RESET_ERR = 0x0100, 0x0101, 0x0303, 0x0109
GRIP_TARGET, GRIP_POS, GRIP_ERR = 0x0700, 0x0702, 0x000F
TOOL_BAUD_REG = 0x0A0B
GRIPPER_FULL_OPEN = 850.0
_BAUD_INDEX_2M = 11  # index of 2_000_000 in UxbusCmd.BAUDRATES: the SDK's default gripper baud


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"  # loopback only: an emulator has no business on a real network
    # Parsed by the SDK's _check_version: axis, type, arm SN, control-box SN, firmware.
    # Firmware >= 2.0.102 makes the SDK wait on motion-finished feedback, as on current robots.
    version: str = "5,5,XF1300,AC1300,v2.5.0"
    robot_sn: str = "XF5EMULATED0001"
    control_hz: float = 250.0  # physics/servo update rate; the real controller runs 250 Hz
    real_report_hz: float = 100.0  # 30003, as on the robot
    rich_report_hz: float = 5.0  # 30001 / 30002, as on the robot
    servo_max_step_mm: float = 30.0  # a servo target this far from the last one -> error 24
    default_speed_mm_s: float = 100.0  # set_position when the client sends speed 0
    max_speed_mm_s: float = 1000.0  # xArm5 Cartesian speed limit
    collision_force_n: float = 80.0  # arm-object contact force that raises error 31
    gripper_speed_units_s: float = 1500.0  # how fast the gripper position follows its target
    probe_port: int = 30010  # JSON-lines test probe (not part of the xArm protocol)
    twin: TwinConfig = field(default_factory=TwinConfig)

    def __post_init__(self) -> None:
        if not 50.0 <= self.control_hz <= 1000.0:
            raise ValueError(f"control_hz must be in [50, 1000], got {self.control_hz}")
        if not 1.0 <= self.real_report_hz <= 250.0 or not 1.0 <= self.rich_report_hz <= 50.0:
            raise ValueError("report rates must be in [1, 250] Hz (real) and [1, 50] Hz (rich)")
        if self.servo_max_step_mm <= 0 or self.collision_force_n <= 0:
            raise ValueError("servo_max_step_mm and collision_force_n must be positive")
        if not 0 < self.default_speed_mm_s <= self.max_speed_mm_s:
            raise ValueError("need 0 < default_speed_mm_s <= max_speed_mm_s")
        if not 1024 <= self.probe_port <= 65535 or self.probe_port in (30001, 30002, 30003):
            raise ValueError(f"probe_port must be a free unprivileged port, got {self.probe_port}")


def rpy_from_matrix(R: np.ndarray) -> np.ndarray:
    """Inverse of ``kinematics.rpy_matrix``: R = Rz(yaw) Ry(pitch) Rx(roll), the xArm convention."""
    pitch = math.asin(-float(np.clip(R[2, 0], -1.0, 1.0)))
    if abs(R[2, 0]) < 1.0 - 1e-9:
        roll = math.atan2(R[2, 1], R[2, 2])
        yaw = math.atan2(R[1, 0], R[0, 0])
    else:  # gimbal lock: put everything in yaw
        roll = 0.0
        yaw = math.atan2(-R[0, 1], R[1, 1])
    return np.array([roll, pitch, yaw])


class ControllerError(Exception):
    def __init__(self, code: int, why: str):
        super().__init__(f"controller error {code}: {why}")
        self.code = code


@dataclass
class _LinearMove:
    p0_m: np.ndarray
    p1_m: np.ndarray
    yaw_rad: float
    duration_s: float
    trans_id: int | None  # for motion-finished feedback (requested when the move arrived)
    t_s: float = 0.0


class EmulatedController:
    """The controller's state machine over the twin; thread-safe, no sockets."""

    def __init__(self, config: EmulatorConfig, twin: XArm5Twin | None = None):
        self.config = config
        self.twin = twin or XArm5Twin(config.twin)
        self.twin.reset(READY_Q, gripper_open_frac=1.0)
        self.lock = threading.RLock()
        self.state = STATE_STOPPED
        self.mode = 0
        self.error_code = 0
        self.warn_code = 0
        self.motors_enabled = False
        self.tcp_offset = np.zeros(6)  # mm, rad, in the flange frame
        self.feedback_type = 0
        self.q_goal = self.twin.joint_pos()
        self.yaw_rad = 0.0
        self.move: _LinearMove | None = None
        self.feedback_waiters: list[int] = []  # FEEDBACK_CHECK trans ids, sent when idle
        self.outbox: list[bytes] = []  # feedback frames for the control connection
        self.gripper_enabled = False
        self.gripper_target = GRIPPER_FULL_OPEN
        self.gripper_pos = GRIPPER_FULL_OPEN
        self.motion_log: list[dict[str, Any]] = []  # every motion command received
        # every stop of the arm (set_state(4), a mode change, motors off, an error), with its
        # monotonic time: tests time "the arm was stopped" here, not by the driver's word
        self.stop_log: list[dict[str, Any]] = []
        self.tcp_trace: list[list[float]] | None = None  # [t_mono, x, y, z mm] per tick
        arm_bodies = {self.twin.model.body(f"link{i + 1}").id for i in range(5)}
        arm_bodies.add(self.twin.model.body("gripper").id)
        for b in range(self.twin.model.nbody):  # fingers and anything else under the gripper
            parent = b
            while parent > 0:
                if parent in arm_bodies:
                    arm_bodies.add(b)
                    break
                parent = int(self.twin.model.body_parentid[parent])
        self._arm_bodies = arm_bodies

    # ----------------------------------------------------------------- kinematics
    @property
    def tcp_offset_z_m(self) -> float:
        return float(self.tcp_offset[2]) / 1000.0

    def tcp_pose(self, q: np.ndarray | None = None) -> np.ndarray:
        """x, y, z (mm), roll, pitch, yaw (rad) of the TCP, as get_position reports."""
        T = fk(self.twin.joint_pos() if q is None else q)
        R = T[:3, :3] @ rpy_matrix(self.tcp_offset[3:])
        p = T[:3, 3] + T[:3, :3] @ (self.tcp_offset[:3] / 1000.0)
        return np.concatenate([p * 1000.0, rpy_from_matrix(R)])

    def solve(self, pose: np.ndarray, q_ref: np.ndarray) -> tuple[np.ndarray, float]:
        """Joint angles for a tool-down pose, or the controller's error for it."""
        if not np.all(np.isfinite(pose)):
            raise ControllerError(ERR_KINEMATIC, f"non-finite target {pose.tolist()}")
        R = rpy_matrix(pose[3:])
        if R[2, 2] > -0.999:  # 5 axes: the tool can only point straight down (2.6 deg slack)
            raise ControllerError(ERR_KINEMATIC, "xArm5 cannot tilt the tool away from vertical")
        yaw = math.atan2(R[1, 0], R[0, 0])
        try:
            q = ik_tool_down(pose[:3] / 1000.0, yaw, q_ref, self.tcp_offset_z_m)
        except UnreachableError as e:
            code = ERR_JOINT_LIMIT if "limits" in str(e) else ERR_KINEMATIC
            raise ControllerError(code, str(e)) from e
        if np.any(q < LOWER_RAD - 1e-9) or np.any(q > UPPER_RAD + 1e-9):
            raise ControllerError(ERR_JOINT_LIMIT, f"joint angles {q.round(3).tolist()}")
        return q, yaw

    # ----------------------------------------------------------------- state
    def cmdnum(self) -> int:
        return 0 if self.move is None else 1

    @property
    def ready(self) -> bool:
        return self.motors_enabled and self.error_code == 0 and self.state != STATE_STOPPED

    def state_flags(self) -> int:
        flags = 0
        if self.error_code:
            flags |= _FLAG_ERROR
        if self.warn_code:
            flags |= _FLAG_WARN
        if not self.ready:
            flags |= _FLAG_NOT_READY
        return flags

    def raise_error(self, code: int, why: str) -> None:
        log.warning("controller error %d: %s", code, why)
        self.error_code = code
        self._stop(f"error {code}")

    def _stop(self, why: str) -> None:
        """Stop where the arm is: hold the measured joints, drop any motion in progress."""
        self.stop_log.append({"t_mono": time.monotonic(), "why": why})
        self.state = STATE_STOPPED
        self.q_goal = self.twin.joint_pos()
        if self.move is not None:
            self._finish_move()

    def _finish_move(self) -> None:
        move, self.move = self.move, None
        if move is not None and move.trans_id is not None:
            self._send_feedback(move.trans_id, FB_MOTION_FINISH, force=True)
        if self.state == STATE_MOVING:
            self.state = STATE_READY
        for tid in self.feedback_waiters:
            self._send_feedback(tid, FB_MOTION_FINISH, force=True)
        self.feedback_waiters.clear()

    def _send_feedback(self, trans_id: int, fb_type: int, force: bool = False) -> None:
        # The SDK clears the feedback type right after the move is accepted, so a move's
        # feedback is decided when it arrives (force), not when it finishes.
        if not (force or self.feedback_type & fb_type):
            return
        body = bytes([0xFF, 0x00, fb_type, 0x00, 0x00, 0x00, 0x00, 0x00])  # [12] = code 0: ok
        self.outbox.append(struct.pack(">HHH", trans_id, 3, len(body)) + body)

    def set_state(self, value: int) -> None:
        if value == 4:
            self._stop("set_state(4)")
        elif value == 0 and self.motors_enabled and self.error_code == 0:
            self.state = STATE_MOVING if self.move else STATE_READY
            self.q_goal = self.twin.commanded_joint_pos()
        # 3 (pause) is not emulated: the driver never pauses.

    def set_mode(self, mode: int) -> None:
        # As on the robot: a new mode takes effect with the next set_state(0).
        self.mode = mode
        self._stop(f"set_mode({mode})")

    def motion_enable(self, enable: bool) -> None:
        self.motors_enabled = enable
        if not enable:
            self._stop("motion_enable(False)")

    def clean_error(self) -> None:
        self.error_code = 0  # the arm stays stopped: motion_enable + set_state(0) restart it

    # ----------------------------------------------------------------- motion commands
    def servo_cartesian(self, pose: np.ndarray) -> None:
        if self.mode != 1:
            raise ControllerError(0, "servo-cartesian needs mode 1")  # ignored, like the robot
        q_ref = self.q_goal
        p_last = self.tcp_pose(q_ref)[:3]
        jump = float(np.linalg.norm(pose[:3] - p_last)) if np.all(np.isfinite(pose)) else 0.0
        if jump > self.config.servo_max_step_mm:
            raise ControllerError(ERR_SPEED, f"servo target {jump:.1f} mm from the last one")
        q, yaw = self.solve(pose, q_ref)
        self.q_goal = q
        self.yaw_rad = yaw

    def move_line(self, pose: np.ndarray, speed_mm_s: float, trans_id: int | None) -> None:
        if self.mode != 0:
            raise ControllerError(0, "set_position needs mode 0")
        p_now_pose = self.tcp_pose(self.q_goal)
        pose = np.where(np.isfinite(pose), pose, p_now_pose)  # inf means "keep" (fw >= 2.4.101)
        q_end, yaw = self.solve(pose, self.q_goal)  # refuse unreachable goals before moving
        del q_end
        speed = speed_mm_s if speed_mm_s > 0 else self.config.default_speed_mm_s
        speed = min(speed, self.config.max_speed_mm_s)
        dist = float(np.linalg.norm(pose[:3] - p_now_pose[:3]))
        self.move = _LinearMove(p_now_pose[:3] / 1000.0, pose[:3] / 1000.0, yaw,
                                max(dist / speed, 0.05), trans_id)
        self.state = STATE_MOVING

    # ----------------------------------------------------------------- time
    def tick(self, dt_s: float) -> None:
        """Advance the arm by ``dt_s`` of physics (called at control_hz in real time)."""
        if self.move is not None and self.ready:
            m = self.move
            m.t_s = min(m.t_s + dt_s, m.duration_s)
            a = m.t_s / m.duration_s
            s = a * a * (3 - 2 * a)  # smooth start and stop
            p = m.p0_m + s * (m.p1_m - m.p0_m)
            pose = np.concatenate([p * 1000.0, [math.pi, 0.0, m.yaw_rad]])
            try:
                self.q_goal, _ = self.solve(pose, self.q_goal)
            except ControllerError as e:
                self.raise_error(e.code, str(e))
            if m.t_s >= m.duration_s and self.move is m:
                self._finish_move()
        if self.gripper_enabled:
            step = self.config.gripper_speed_units_s * dt_s
            self.gripper_pos += float(np.clip(self.gripper_target - self.gripper_pos, -step, step))
        self.twin.servo(self.q_goal, self.gripper_pos / GRIPPER_FULL_OPEN, dt_s)
        if self.tcp_trace is not None:
            self.tcp_trace.append([time.monotonic(), *self.tcp_pose()[:3].tolist()])
        force = self._arm_contact_force()
        if force > self.config.collision_force_n and self.error_code == 0:
            self.raise_error(ERR_COLLISION, f"arm contact force {force:.0f} N")

    def _arm_contact_force(self) -> float:
        m, d = self.twin.model, self.twin.data
        worst = 0.0
        f6 = np.zeros(6)
        for i in range(d.ncon):
            c = d.contact[i]
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            if (b1 in self._arm_bodies) != (b2 in self._arm_bodies):
                mujoco.mj_contactForce(m, d, i, f6)
                worst = max(worst, float(np.linalg.norm(f6[:3])))
        return worst

    # ----------------------------------------------------------------- gripper (Modbus RTU)
    def gripper_rtu(self, frame: bytes) -> bytes:
        """Answer a Modbus-RTU request addressed to the gripper (slave 8), without CRC."""
        slave, fc = frame[0], frame[1]
        addr = struct.unpack(">H", frame[2:4])[0]
        count = struct.unpack(">H", frame[4:6])[0]
        if fc == 0x10:  # write multiple registers
            regs = struct.unpack(f">{count}H", frame[7:7 + 2 * count])
            self._gripper_write(addr, regs)
            return bytes([slave, fc]) + frame[2:6]
        if fc == 0x03:  # read holding registers
            values = [self._gripper_read(addr + k) for k in range(count)]
            return bytes([slave, fc, 2 * count]) + struct.pack(f">{count}H", *values)
        return bytes([slave, fc | 0x80, 0x01])  # illegal function

    def _gripper_write(self, addr: int, regs: tuple[int, ...]) -> None:
        if addr == GRIP_EN:
            self.gripper_enabled = bool(regs[0])
        elif addr == GRIP_TARGET and len(regs) >= 2:
            pulse = struct.unpack(">i", struct.pack(">HH", regs[0], regs[1]))[0]
            self.gripper_target = float(np.clip(pulse, 0, GRIPPER_FULL_OPEN))
        # mode, speed and error reset are accepted and need no emulation

    def _gripper_read(self, addr: int) -> int:
        pos = round(self.gripper_pos)
        hi, lo = struct.unpack(">HH", struct.pack(">i", pos))
        regs = {GRIP_POS: hi, GRIP_POS + 1: lo, GRIP_ERR: 0, GRIP_EN: int(self.gripper_enabled)}
        return regs.get(addr, 0)

    # ----------------------------------------------------------------- dispatch
    def handle(self, fn: int, payload: bytes, trans_id: int) -> bytes | None:
        """Reply data for one request, or None for no reply. Runs under ``self.lock``."""
        if fn == FN_GET_VERSION:
            return self.config.version.encode().ljust(40, b"\0")
        if fn == FN_GET_ROBOT_SN:
            return self.config.robot_sn.encode().ljust(40, b"\0")
        if fn == FN_GET_STATE:
            return bytes([self.state])
        if fn == FN_GET_CMDNUM:
            return struct.pack(">H", self.cmdnum())
        if fn == FN_GET_ERROR:
            return bytes([self.error_code, self.warn_code])
        if fn == FN_CLEAN_ERR:
            self.clean_error()
        elif fn == FN_CLEAN_WAR:
            self.warn_code = 0
        elif fn == FN_MOTION_EN:
            self.motion_enable(bool(payload[1]))
        elif fn == FN_SET_STATE:
            self.set_state(payload[0])
        elif fn == FN_SET_MODE:
            self.set_mode(payload[0])
        elif fn == FN_SET_TCP_OFFSET:
            self.tcp_offset = np.array(struct.unpack("<6f", payload[:24]), dtype=float)
        elif fn == FN_SET_FEEDBACK_TYPE:
            self.feedback_type = payload[0]
        elif fn == FN_FEEDBACK_CHECK:
            if self.move is None:
                self._send_feedback(trans_id, FB_MOTION_FINISH, force=True)
            else:
                self.feedback_waiters.append(trans_id)
        elif fn == FN_GET_TCP_POSE:
            return struct.pack("<6f", *self.tcp_pose())
        elif fn == FN_GET_JOINT_POS:
            q = np.zeros(7)
            q[:5] = self.twin.joint_pos()
            if payload:  # get_joint_states: positions, velocities, efforts
                v = np.zeros(7)
                v[:5] = self.twin.joint_vel()
                return struct.pack("<21f", *q, *v, *np.zeros(7))
            return struct.pack("<7f", *q)
        elif fn in (FN_MOVE_SERVO_CART, FN_MOVE_LINE):
            return self._motion(fn, payload, trans_id)
        elif fn == FN_RS485_RTU:
            return bytes([payload[0]]) + self.gripper_rtu(payload[1:])
        elif fn == FN_TGPIO_R16B:
            addr = struct.unpack(">H", payload[1:3])[0]
            return struct.pack(">i", _BAUD_INDEX_2M if addr == TOOL_BAUD_REG else 0)
        elif fn in (FN_TGPIO_W16B, FN_TGPIO_MB_TIOUT, FN_SET_LOAD_PARAM):
            pass
        else:
            log.info("function code %d not emulated; replying OK with no data", fn)
        return b""

    def _motion(self, fn: int, payload: bytes, trans_id: int) -> bytes:
        n = 9 if fn == FN_MOVE_SERVO_CART else 10
        vals = np.array(struct.unpack(f"<{n}f", payload[: 4 * n]), dtype=float)
        pose = vals[:6]
        entry: dict[str, Any] = {
            "fn": fn, "pose": [float(v) for v in pose], "t_mono": time.monotonic(),
            "accepted": False, "error": 0,
        }
        self.motion_log.append(entry)
        reply = b"\0\0\0" if fn == FN_MOVE_LINE else b""
        if not self.ready:  # refused: the reply's state byte says "not ready" / "error"
            return reply
        try:
            if fn == FN_MOVE_SERVO_CART:
                self.servo_cartesian(pose)
            else:
                wants_fb = bool(self.feedback_type & FB_MOTION_FINISH)
                self.move_line(pose, float(vals[6]), trans_id if wants_fb else None)
            entry["accepted"] = True
        except ControllerError as e:
            if e.code:
                self.raise_error(e.code, str(e))
                entry["error"] = e.code
        return reply

    # ----------------------------------------------------------------- reports
    def report(self, kind: str) -> bytes:
        """One report frame: 'real' (87 B, 30003), 'normal' (145 B) or 'rich' (288 B)."""
        q = np.zeros(7)
        q[:5] = self.twin.joint_pos()
        pose = self.tcp_pose()
        state_mode = (self.state & 0x0F) | ((self.mode & 0x0F) << 4)
        # cmdnum is the controller's queue of pending motion commands (the SDK throttles on
        # it), not a request counter: one linear move at most is queued here.
        body = struct.pack(">BH", state_mode, self.cmdnum())
        body += struct.pack("<7f6f7f", *q, *pose, *np.zeros(7))
        if kind != "real":
            mt = 0x1F if self.motors_enabled else 0x00
            body += bytes([mt, mt, self.error_code, self.warn_code])
            body += struct.pack("<6f4f", *self.tcp_offset, *np.zeros(4))
            body += bytes([3, 3]) + struct.pack("<3f", 0.0, 0.0, -1.0)
        if kind == "rich":
            body += bytes([5, 5, 0, 0, 0, 0]) + b"\0" * 30
            body += struct.pack("<5f5f2f", 0, 0, 50000, 0, 1000, 0, 0, 20, 0, 3.14, 0, 0)
            body += b"\0" * 16 + bytes([30] * 7)
            v = np.zeros(7)
            v[:5] = self.twin.joint_vel()
            body += struct.pack("<8f", 0.0, *v) + struct.pack(">I", 0)
        return struct.pack(">I", len(body) + 4) + body


class EmulatorServer:
    """Sockets and threads around an :class:`EmulatedController`; ``with`` starts and stops it."""

    def __init__(self, config: EmulatorConfig | None = None, twin: XArm5Twin | None = None):
        self.config = config or EmulatorConfig()
        self.controller = EmulatedController(self.config, twin)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._conns: list[socket.socket] = []  # client connections (drop_connections)
        self._reports_paused_until = 0.0  # monotonic; report streams send nothing before it

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        slow, fast = self.config.rich_report_hz, self.config.real_report_hz
        self._listen(CONTROL_PORT, self._serve_control)
        self._listen(REPORT_NORMAL_PORT, lambda s: self._serve_report(s, "normal", slow))
        self._listen(REPORT_RICH_PORT, lambda s: self._serve_report(s, "rich", slow))
        self._listen(REPORT_REAL_PORT, lambda s: self._serve_report(s, "real", fast))
        self._spawn(self._control_loop)
        self._listen(self.config.probe_port, self._serve_probe)  # last: its port says "ready"

    def close(self) -> None:
        self._stop.set()
        for s in self._listeners:
            s.close()
        for t in self._threads:
            t.join(timeout=1.0)
        self.controller.twin.close()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _listen(self, port: int, serve: Any) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.config.host, port))
        s.listen(4)
        s.settimeout(0.5)
        self._listeners.append(s)

        def accept_loop() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = s.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if port != self.config.probe_port:
                    self._conns.append(conn)
                self._spawn(serve, conn)

        self._spawn(accept_loop)

    def _control_loop(self) -> None:
        ctrl = self.controller
        dt = 1.0 / self.config.control_hz
        t_next = time.monotonic()
        while not self._stop.is_set():
            t_next += dt
            with ctrl.lock:
                ctrl.tick(dt)
            lag = time.monotonic() - t_next
            if lag > 0.25:  # far behind (machine busy): drop the backlog, keep real time
                t_next = time.monotonic()
            self._stop.wait(max(0.0, t_next - time.monotonic()))

    def _serve_control(self, conn: socket.socket) -> None:
        ctrl = self.controller
        conn.settimeout(0.05)  # also the latency of motion-finished feedback between requests
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                except TimeoutError:
                    chunk = b""
                except OSError:
                    return
                out = b""
                while len(buf) >= 6:
                    length = struct.unpack(">H", buf[4:6])[0]
                    if len(buf) < 6 + length:
                        break
                    frame, buf = buf[: 6 + length], buf[6 + length :]
                    trans_id, prot_id = struct.unpack(">HH", frame[:4])
                    if prot_id == 1 or length < 1:  # the SDK's heartbeat: no reply
                        continue
                    fn, payload = frame[6], frame[7:]
                    with ctrl.lock:
                        try:
                            data = ctrl.handle(fn, payload, trans_id)
                        except (struct.error, IndexError) as e:
                            log.warning("malformed request fn=%d: %s", fn, e)
                            data = None
                            flags = 0x08  # INVALID
                        else:
                            flags = ctrl.state_flags()
                    if data is None:
                        data = b""
                    body = bytes([fn, flags]) + data
                    out += struct.pack(">HHH", trans_id, prot_id, len(body)) + body
                with ctrl.lock:
                    pending, ctrl.outbox = ctrl.outbox, []
                out += b"".join(pending)
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        return

    def _serve_report(self, conn: socket.socket, kind: str, hz: float) -> None:
        period = 1.0 / hz
        with conn:
            t_next = time.monotonic()
            while not self._stop.is_set():
                with self.controller.lock:
                    frame = self.controller.report(kind)
                try:
                    if time.monotonic() >= self._reports_paused_until:
                        conn.sendall(frame)
                except OSError:
                    return
                t_next += period
                self._stop.wait(max(0.0, t_next - time.monotonic()))

    def _serve_probe(self, conn: socket.socket) -> None:
        ctrl = self.controller
        with conn, conn.makefile("rwb") as f:
            for line in f:
                req = json.loads(line)
                with ctrl.lock:
                    reply = self._probe(req)
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def _probe(self, req: dict[str, Any]) -> dict[str, Any]:
        ctrl = self.controller
        op = req.get("op")
        if op == "state":
            return {
                "joint_pos": ctrl.twin.joint_pos().tolist(),
                "tcp_pose": ctrl.tcp_pose().tolist(),
                "gripper_pos": ctrl.gripper_pos,
                "state": ctrl.state, "mode": ctrl.mode, "error_code": ctrl.error_code,
                "motors_enabled": ctrl.motors_enabled, "sim_time_s": ctrl.twin.time_s,
            }
        if op == "log":
            last = -int(req.get("last", 100000))
            return {"motion_log": ctrl.motion_log[last:], "stop_log": ctrl.stop_log[last:]}
        if op == "clear_log":
            ctrl.motion_log.clear()
            ctrl.stop_log.clear()
            return {"ok": True}
        if op == "inject_error":
            ctrl.raise_error(int(req["code"]), "injected by the test probe")
            return {"ok": True}
        if op == "stall_reports":  # the report streams fall silent; connections stay open
            self._reports_paused_until = time.monotonic() + float(req["seconds"])
            return {"ok": True}
        if op == "drop_connections":  # as if the cable were pulled and put back
            conns, self._conns = self._conns, []
            for c in conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            return {"ok": True, "dropped": len(conns)}
        if op == "trace_start":  # record the true TCP at every control tick from now on
            ctrl.tcp_trace = []
            return {"ok": True}
        if op == "trace":  # the ticks recorded since the last call (the trace keeps going)
            trace = ctrl.tcp_trace or []
            if ctrl.tcp_trace is not None:
                ctrl.tcp_trace = []
            return {"trace": trace}
        return {"error": f"unknown op {op!r}"}


class EmulatorProbe:
    """Client of the emulator's JSON-lines probe (tests and benchmarks, same namespace)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 30010, timeout_s: float = 5.0):
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._f = self._sock.makefile("rwb")

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        self._f.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self._f.flush()
        reply: dict[str, Any] = json.loads(self._f.readline())
        return reply

    def close(self) -> None:
        self._f.close()
        self._sock.close()

    def __enter__(self) -> EmulatorProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="xArm controller emulator backed by the MuJoCo twin. "
                                 "Binds 127.0.0.1:502 and 30001-30003: run it in a private "
                                 "network namespace (see `v2r sim emulator`).")
    ap.add_argument("--probe-port", type=int, default=EmulatorConfig.probe_port)
    ap.add_argument("--servo-max-step-mm", type=float, default=EmulatorConfig.servo_max_step_mm)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="[emulator] %(levelname)s %(message)s")
    cfg = EmulatorConfig(probe_port=args.probe_port, servo_max_step_mm=args.servo_max_step_mm)
    server = EmulatorServer(cfg)
    signal.signal(signal.SIGTERM, lambda *_: server._stop.set())
    try:
        server.start()
    except PermissionError:
        print("error: cannot bind port 502; run inside `unshare -rn` (see `v2r sim emulator`)")
        return 2
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
