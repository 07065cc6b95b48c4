"""The xArm controller's state machine over the MuJoCo twin: no sockets, thread-safe.

    ctrl = EmulatedController(EmulatorConfig())      # a twin at the ready pose
    data = ctrl.handle(FN_GET_TCP_POSE, b"", trans_id=1)   # reply data, as the SDK reads it
    ctrl.tick(0.004)                                 # one control period of the twin

It answers requests by function code (sim/xarm_protocol.py), moves the twin (servo and linear
moves, the gripper behind the tool RS-485), raises the controller's errors and stops, and
encodes the report frames. sim/xarm_emulator.py serves it on the SDK's ports.
"""

from __future__ import annotations

import logging
import math
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
from video2reward.sim.xarm_protocol import (
    BAUD_INDEX_2M,
    ERR_COLLISION,
    ERR_JOINT_LIMIT,
    ERR_KINEMATIC,
    ERR_SPEED,
    FB_MOTION_FINISH,
    FLAG_ERROR,
    FLAG_NOT_READY,
    FLAG_WARN,
    FN_CLEAN_ERR,
    FN_CLEAN_WAR,
    FN_FEEDBACK_CHECK,
    FN_GET_CMDNUM,
    FN_GET_ERROR,
    FN_GET_JOINT_POS,
    FN_GET_ROBOT_SN,
    FN_GET_STATE,
    FN_GET_TCP_POSE,
    FN_GET_VERSION,
    FN_MOTION_EN,
    FN_MOVE_LINE,
    FN_MOVE_SERVO_CART,
    FN_RS485_RTU,
    FN_SET_FEEDBACK_TYPE,
    FN_SET_LOAD_PARAM,
    FN_SET_MODE,
    FN_SET_STATE,
    FN_SET_TCP_OFFSET,
    FN_TGPIO_MB_TIOUT,
    FN_TGPIO_R16B,
    FN_TGPIO_W16B,
    GRIP_EN,
    GRIP_ERR,
    GRIP_POS,
    GRIP_TARGET,
    GRIPPER_FULL_OPEN,
    PROT_FEEDBACK,
    STATE_MOVING,
    STATE_READY,
    STATE_STOPPED,
    TOOL_BAUD_REG,
    pack_frame,
)

log = logging.getLogger("xarm_emulator")


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
            flags |= FLAG_ERROR
        if self.warn_code:
            flags |= FLAG_WARN
        if not self.ready:
            flags |= FLAG_NOT_READY
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
        self.outbox.append(pack_frame(trans_id, PROT_FEEDBACK, body))

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
            return struct.pack(">i", BAUD_INDEX_2M if addr == TOOL_BAUD_REG else 0)
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
