"""xArm5 driver over xarm-python-sdk: servo-cartesian streaming behind the safety envelope.

    from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig
    with XArmDriver(XArmDriverConfig(ip="192.168.1.208")) as arm:
        arm.move_to(np.array([0.35, 0.0, 0.20]), gripper_open_frac=1.0)   # reset, position mode
        for action in policy:                                             # 10-30 Hz
            cmd = arm.send_action(action)        # envelope -> set_servo_cartesian (mode 1)
    # the arm is stopped (set_state(4)) on leaving the block, even on an exception

In CI the same class talks to ``sim.xarm_emulator`` (``v2r sim emulator -- ...``).

Safety, in the order a command meets it:
1. a latched fault (controller error, collision, emergency stop, a failed read, a lost
   connection or report stream) refuses every command until ``reset_fault`` (which reconnects
   when the connection dropped); a stop by the watchdog refuses commands until ``enable``;
2. the envelope refuses NaN/inf/malformed actions and components beyond +-1.5
   (``InvalidCommandError``, nothing is sent) and limits the target: inside the workspace box
   less a margin, braking towards its faces, one step (<= 10 mm) from the previous target,
   ``max_speed_m_s`` times the time since the previous command, speed gained at most
   ``max_accel_m_s2`` (the first command after an enable starts from rest);
3. the controller's reply and error codes are read after every command; any error latches;
4. a monitor thread stops the arm when no command arrived for ``watchdog.deadline_s``
   (monotonic time), polls the controller's error code (collisions raise error 31 with no
   command in flight) and latches a fault when the connection or the report stream is lost.

The command path makes one round trip to the controller (the servo target; a gripper write
when the gripper command changes): the measured pose comes from the SDK's 100 Hz report stream
(``report_type='real'``), not from a request, so state reads never delay a command.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from video2reward.robot.arm import Arm, ArmState
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M
from video2reward.robot.safety import (
    CommandWatchdog,
    EnvelopeConfig,
    FaultLatch,
    InvalidCommandError,
    LatchedFaultError,
    SafeCommand,
    SafetyEnvelope,
    WatchdogConfig,
    validate_action,
)

MODE_POSITION, MODE_SERVO = 0, 1
STATE_STOP = 4
# xarm.core.config.x_config.XCONF.UxbusState: no reply in time, request not sent.
SDK_REPLY_TIMEOUT, SDK_SEND_FAILED = 3, 8


class ArmNotReadyError(RuntimeError):
    """The arm is stopped (watchdog, ``stop``) or not enabled: call ``enable`` first."""


class ControllerLostError(ConnectionError):
    """No fresh state from the controller (connection dropped, reports stopped, read failed).

    The driver latches a fault when it raises this: the arm is stopped and ``reset_fault``
    reconnects. State is never served stale in its place."""


@dataclass(frozen=True)
class _Report:
    """The latest report from the controller's stream, replaced whole (one atomic store)."""

    t_mono: float
    pose: tuple[float, ...]  # x, y, z mm, roll, pitch, yaw rad
    joints: tuple[float, ...]  # rad


@dataclass(frozen=True)
class XArmDriverConfig:
    ip: str = "127.0.0.1"  # controller address (the emulator listens on loopback)
    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    # Gripper TCP below the flange (mm), set on the controller so poses are the gripper's.
    tcp_offset_mm: float = GRIPPER_TCP_OFFSET_M * 1000.0
    reset_speed_mm_s: float = 100.0  # set_position speed for resets; slow enough to watch
    move_timeout_s: float = 20.0  # longest reset move before giving up
    use_gripper: bool = True
    gripper_speed: int = 3000  # xArm Gripper speed units (r/min of its motor, 1000-5000)
    gripper_deadband: float = 5.0  # gripper units; smaller changes are not re-sent (RS-485 time)
    gripper_poll_hz: float = 10.0  # gripper position reads are RS-485 round trips: cached
    monitor_hz: float = 20.0  # error-code polling and watchdog checks
    report_type: str = "real"  # SDK report stream: 'real' is 100 Hz on port 30003
    # A report older than this is not used (for a command or for state()); the pose is then
    # read with a request instead. 0.05 s is five report periods at 100 Hz.
    report_max_age_s: float = 0.05
    # reset_fault reconnects when the last report is older than this (the report socket was
    # lost while the command socket lives). A failed read latches "controller lost" at once:
    # the arm is stopped and state topics stop rather than repeat stale values.
    state_timeout_s: float = 0.5
    # SDK request timeout (set and get), seconds; the SDK's own default is 2 s.
    io_timeout_s: float = 1.0
    # How long the monitor's error polls (its idle check) may go unanswered before "controller
    # not answering" latches; 0: at the first unanswered poll. A command that times out latches
    # at once, so this only decides how long an idle arm's silent controller is tolerated. One
    # late reply is what a starved process looks like: the twin on a 2-core machine under load
    # missed one 1 s reply, and a latch on it stopped the learning graph for good.
    poll_silence_to_fault_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.ip:
            raise ValueError("ip must name the controller (e.g. 192.168.1.208)")
        if not 0.0 <= self.tcp_offset_mm <= 400.0:
            raise ValueError(f"tcp_offset_mm must be in [0, 400], got {self.tcp_offset_mm}")
        if not 1.0 <= self.reset_speed_mm_s <= 250.0:
            raise ValueError(f"reset_speed_mm_s must be in [1, 250], got {self.reset_speed_mm_s}")
        if not 0.5 <= self.move_timeout_s <= 120.0:
            raise ValueError(f"move_timeout_s must be in [0.5, 120], got {self.move_timeout_s}")
        if not 1000 <= self.gripper_speed <= 5000:
            raise ValueError(f"gripper_speed must be in [1000, 5000], got {self.gripper_speed}")
        if not 0.0 <= self.gripper_deadband <= 100.0:
            raise ValueError(f"gripper_deadband must be in [0, 100], got {self.gripper_deadband}")
        if not 1.0 <= self.gripper_poll_hz <= 100.0 or not 2.0 <= self.monitor_hz <= 200.0:
            raise ValueError("gripper_poll_hz must be in [1, 100] and monitor_hz in [2, 200]")
        if self.report_type not in ("real", "rich", "normal"):
            raise ValueError(f"report_type must be real, rich or normal, got {self.report_type}")
        if 1.0 / self.monitor_hz > self.watchdog.deadline_s / 2:
            raise ValueError("monitor_hz must poll at least twice per watchdog deadline")
        if not 0.005 <= self.report_max_age_s <= self.state_timeout_s <= 5.0:
            raise ValueError("need 0.005 <= report_max_age_s <= state_timeout_s <= 5 s, got "
                             f"{self.report_max_age_s} and {self.state_timeout_s}")
        if not 0.05 <= self.io_timeout_s <= 10.0:
            raise ValueError(f"io_timeout_s must be in [0.05, 10] s, got {self.io_timeout_s}")
        if not 0.0 <= self.poll_silence_to_fault_s <= 30.0:
            raise ValueError("poll_silence_to_fault_s must be in [0, 30] s, got "
                             f"{self.poll_silence_to_fault_s}")


def controller_error_text(code: int) -> str:
    from xarm.core.config.x_code import ControllerErrorCodeMap

    entry = ControllerErrorCodeMap.get(code)
    return f"controller error {code}: {entry['en']['title'] if entry else 'unknown'}"


class XArmDriver(Arm):
    def __init__(
        self,
        config: XArmDriverConfig | None = None,
        api: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``api``: an ``xarm.wrapper.XArmAPI`` (connected or not); created from ``ip`` if None."""
        self.config = config or XArmDriverConfig()
        self.envelope = SafetyEnvelope(self.config.envelope)
        self.watchdog = CommandWatchdog(self.config.watchdog, clock)
        self.fault = FaultLatch()
        self._api = api
        self._clock = clock
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._streaming = False
        self._resetting = False  # a blocking move_to is travelling (runs outside the lock)
        self._t_last_cmd: float | None = None
        self._last_target: np.ndarray | None = None  # chained while streaming, else measured
        self._v_last = np.zeros(3)  # previous command's target velocity (envelope's limits)
        self._report: _Report | None = None  # latest report; written by the SDK's thread
        self._yaw_rad = 0.0
        self._gripper_sent: float | None = None
        self._gripper_pos = math.nan
        self._t_gripper_read = -math.inf
        self._monitor: threading.Thread | None = None
        self._closing = threading.Event()
        self.watchdog_stops = 0  # how often the watchdog stopped the arm
        self.rejected_commands = 0  # actions the envelope refused (never sent)
        self.reconnects = 0  # successful reconnections by reset_fault
        self.unanswered_polls = 0  # error polls that got no answer

    # ------------------------------------------------------------------ lifecycle
    @property
    def api(self) -> Any:
        if self._api is None:
            raise RuntimeError(
                "not connected: call connect() or use the driver as a context manager"
            )
        return self._api

    def connect(self) -> None:
        if self._api is None:
            from xarm.wrapper import XArmAPI

            self._api = XArmAPI(
                self.config.ip,
                is_radian=True,
                do_not_open=True,
                report_type=self.config.report_type,
            )
        if not self._api.connected:
            try:
                self._api.connect()
            except Exception as e:  # the SDK raises a bare Exception("connect socket failed")
                raise ConnectionError(
                    f"cannot reach the xArm controller at {self.config.ip}: {e}"
                ) from e
        if not self._api.connected:
            raise ConnectionError(f"cannot reach the xArm controller at {self.config.ip}")
        self._report = None
        self._api.set_timeout(self.config.io_timeout_s)
        self._api.release_report_location_callback(self._on_report)
        self._api.register_report_location_callback(self._on_report)
        try:
            self._check(
                self.api.set_tcp_offset(
                    [0, 0, self.config.tcp_offset_mm, 0, 0, 0], is_radian=True, wait=False
                ),
                "set_tcp_offset",
            )
            if self.config.use_gripper:
                self._check(self.api.set_gripper_enable(True), "set_gripper_enable")
                self._check(
                    self.api.set_gripper_speed(self.config.gripper_speed), "set_gripper_speed"
                )
        except BaseException:
            # __exit__ does not run when __enter__ fails: leave nothing connected behind.
            self._api.disconnect()
            raise
        if self._monitor is None:
            self._closing.clear()
            self._monitor = threading.Thread(
                target=self._monitor_loop, name="xarm-monitor", daemon=True
            )
            self._monitor.start()

    def close(self) -> None:
        try:
            self.stop()  # idempotent: close() alone also leaves the arm stopped
        finally:
            self._close_connection()

    def _close_connection(self) -> None:
        self._closing.set()
        if self._monitor is not None:
            self._monitor.join(timeout=2.0)
            self._monitor = None
        if self._api is not None and self._api.connected:
            self._api.disconnect()

    def enable(self) -> None:
        with self._lock:
            self.fault.check()
            if self._resetting:
                raise ArmNotReadyError("a reset move is in progress")
            code, err, warn = self._err_warn()
            self._check(code, "get_err_warn_code")
            if err:
                self._latch(controller_error_text(err))
                self.fault.check()
            if warn:
                self.api.clean_warn()
            self._check(self.api.motion_enable(True), "motion_enable")
            self._switch_mode(MODE_SERVO)
            self._start_stream()

    # ------------------------------------------------------------------ commands
    def check_action(self, action: object) -> np.ndarray:
        """Validate an action without sending it (counted in ``rejected_commands`` when it is
        refused): a caller that queues actions refuses garbage before it can displace a valid
        one. ``send_action`` checks again."""
        try:
            return validate_action(action)
        except InvalidCommandError:
            self.rejected_commands += 1
            raise

    def send_action(self, action: object) -> SafeCommand:
        with self._lock:
            self.fault.check()
            if not self._streaming:
                raise ArmNotReadyError("arm is stopped; call enable() (or move_to) first")
            t = self._clock()
            self.check_action(action)  # before anything is read: garbage costs no round trip
            p_now = self._measured_tcp_m()
            # The first command after an enable has no previous one to time: it starts from
            # rest over one nominal period, so it cannot jump a full step.
            t_prev = self._t_last_cmd
            dt = self.envelope.config.start_period_s if t_prev is None else t - t_prev
            cmd = self.envelope.apply(p_now, action, dt, self._last_target, self._v_last)
            pose = [*(cmd.p_base_target * 1000.0), math.pi, 0.0, self._yaw_rad]
            self._check(self.api.set_servo_cartesian(pose, is_radian=True), "set_servo_cartesian")
            if self.config.use_gripper:
                self._send_gripper(cmd.gripper_target)
            self.watchdog.kick()
            self._t_last_cmd = t
            self._last_target = cmd.p_base_target
            self._v_last = cmd.velocity_m_s
            return cmd

    def move_to(
        self, p_base_tcp_m: np.ndarray, yaw_rad: float = 0.0, gripper_open_frac: float | None = None
    ) -> ArmState:
        p = np.asarray(p_base_tcp_m, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)) or not math.isfinite(yaw_rad):
            raise InvalidCommandError(f"reset target must be 3 finite numbers, got {p}")
        if not self.envelope.config.box.contains(p):
            raise InvalidCommandError(f"reset target {p.tolist()} is outside the workspace box")
        with self._lock:
            self.fault.check()
            if self._resetting:
                raise ArmNotReadyError("a reset move is already in progress")
            self.watchdog.disarm()
            self._streaming = False
            self._check(self.api.motion_enable(True), "motion_enable")
            self._switch_mode(MODE_POSITION)
            self._resetting = True
        # The blocking move runs without the lock: state reads, error polling and an
        # emergency stop stay live while the arm travels; send_action and enable are refused.
        try:
            x, y, z = p * 1000.0
            code = self.api.set_position(
                x,
                y,
                z,
                math.pi,
                0.0,
                yaw_rad,
                is_radian=True,
                speed=self.config.reset_speed_mm_s,
                wait=True,
                timeout=self.config.move_timeout_s,
            )
        finally:
            self._resetting = False
        with self._lock:
            self._check(code, "set_position")
            self.fault.check()  # an e-stop or error that arrived during the move
            self._yaw_rad = float(yaw_rad)
            if gripper_open_frac is not None and self.config.use_gripper:
                self._wait_gripper(self.set_gripper(gripper_open_frac))
            self._switch_mode(MODE_SERVO)
            self._start_stream()
        return self.state()

    def _start_stream(self) -> None:
        """Servo mode is on: accept commands, the watchdog arming with the first one. (Disarmed
        here: a stream that went quiet while enable's SDK calls ran, which can outlast the
        deadline, tripped the watchdog the moment enable returned, stopping the arm it had just
        enabled.) Call with the lock held."""
        self.watchdog.disarm()
        self._streaming = True
        self._t_last_cmd = None
        self._last_target = None
        self._v_last = np.zeros(3)

    def set_gripper(self, open_frac: float) -> float:
        if not math.isfinite(open_frac):
            raise InvalidCommandError(f"gripper opening must be finite, got {open_frac}")
        c = self.envelope.config
        g = c.gripper_min + float(np.clip(open_frac, 0.0, 1.0)) * (c.gripper_max - c.gripper_min)
        with self._lock:
            self.fault.check()
            self._gripper_sent = None  # force the send
            self._send_gripper(g)
        return g

    def stop(self) -> None:
        with self._lock:
            self.watchdog.disarm()
            self._streaming = False
            if self._api is not None and self._api.connected:
                self._api.set_state(STATE_STOP)

    def emergency_stop(self) -> None:
        # Not under the lock: an e-stop must not wait behind a command in flight.
        self._streaming = False
        self.watchdog.disarm()
        self.fault.trip("emergency stop")
        self.api.emergency_stop()

    def reset_fault(self) -> None:
        """Clear the controller's errors and the latched fault; reconnect first when the
        connection or the report stream was lost (the controller may have restarted)."""
        with self._lock:
            if not self.api.connected or self._report_age_s() > self.config.state_timeout_s:
                self._reconnect()
            self._check(self.api.clean_error(), "clean_error")
            self._check(self.api.clean_warn(), "clean_warn")
            code, err, _ = self._err_warn()
            if code == 0 and err:
                raise LatchedFaultError(f"{controller_error_text(err)} persists after clean_error")
            self.fault.reset()

    # ------------------------------------------------------------------ state
    def state(self) -> ArmState:
        """The latest reported state; raises ``ControllerLostError`` (and latches a fault)
        instead of returning a stale one."""
        api = self.api
        with self._state_lock:  # not the command lock: state stays readable during a reset
            t = self._clock()
            if (
                self.config.use_gripper
                and t - self._t_gripper_read >= 1.0 / self.config.gripper_poll_hz
            ):
                code, g = api.get_gripper_position()
                if code == 0 and g is not None:
                    self._gripper_pos = float(g)
                self._t_gripper_read = t
            # Taken after the gripper read, which can wait behind a request that times out
            # (a dead controller): the age check must come after any wait, never before.
            rep = self._fresh_report(self.config.report_max_age_s)
            c = self.envelope.config
            frac = (self._gripper_pos - c.gripper_min) / (c.gripper_max - c.gripper_min)
            return ArmState(
                t_mono=rep.t_mono,
                ee_pos_m=np.asarray(rep.pose[:3], dtype=float) / 1000.0,
                ee_rpy_rad=np.asarray(rep.pose[3:6], dtype=float),
                joint_pos_rad=np.asarray(rep.joints[:5], dtype=float),
                gripper_open_frac=float(frac),
                controller_state=int(api.state),
                mode=int(api.mode),
                error_code=int(api.error_code),
                warn_code=int(api.warn_code),
                fault=self.fault.reason,
            )

    @property
    def streaming(self) -> bool:
        return self._streaming

    # ------------------------------------------------------------------ internals
    def _on_report(self, data: dict[str, Any]) -> None:
        """SDK report thread: keep the latest pose and joints, stamped on monotonic time."""
        pose, joints = data.get("cartesian"), data.get("joints")
        if pose is None or joints is None:
            return
        self._report = _Report(time.monotonic(), tuple(pose), tuple(joints))

    def _report_age_s(self) -> float:
        rep = self._report
        return math.inf if rep is None else time.monotonic() - rep.t_mono

    def _fresh_report(self, max_age_s: float) -> _Report:
        """The latest report if it is at most ``max_age_s`` old, else latch and raise."""
        rep = self._report
        api = self._api
        if api is None or not api.connected:
            reason = "controller connection lost"
        elif rep is None or time.monotonic() - rep.t_mono > max_age_s:
            # Reports not yet started (just connected) or late: one request before giving up.
            code, pose = api.get_position(is_radian=True)
            code_q, q = api.get_servo_angle(is_radian=True) if code == 0 else (code, None)
            if code == 0 and code_q == 0 and q is not None:
                return _Report(time.monotonic(), tuple(pose), tuple(q))
            reason = f"controller not answering (state read: SDK code {code or code_q})"
        else:
            return rep
        self._latch(reason)
        raise ControllerLostError(reason)

    def _measured_tcp_m(self) -> np.ndarray:
        rep = self._fresh_report(self.config.report_max_age_s)
        return np.asarray(rep.pose[:3], dtype=float) / 1000.0

    def _reconnect(self) -> None:
        """Drop the old connection and connect again (set_tcp_offset and gripper setup too)."""
        api = self.api
        # A broken socket may raise anything on the way down; we reconnect regardless.
        with contextlib.suppress(Exception):
            api.disconnect()
        self.connect()
        self.reconnects += 1

    def _send_gripper(self, g: float) -> None:
        if (
            self._gripper_sent is not None
            and abs(g - self._gripper_sent) < self.config.gripper_deadband
        ):
            return
        # wait_motion/check_err off: one RS-485 write per change, never a blocking wait.
        code = self.api.set_gripper_position(g, wait=False, wait_motion=False, check_err=False)
        self._check(code, "set_gripper_position")
        self._gripper_sent = g

    def _wait_gripper(self, g: float, timeout_s: float = 3.0) -> None:
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            code, pos = self.api.get_gripper_position()
            if code == 0 and pos is not None and abs(pos - g) <= 2 * self.config.gripper_deadband:
                return
            time.sleep(0.05)

    def _switch_mode(self, mode: int) -> None:
        api = self.api
        self._check(api.set_mode(mode), "set_mode")
        self._check(api.set_state(0), "set_state")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            code, state = api.get_state()
            if code == 0 and api.mode == mode and state in (1, 2):
                return
            time.sleep(0.01)
        raise ArmNotReadyError(
            f"controller did not enter mode {mode} (mode {api.mode}, state {api.state})"
        )

    def _err_warn(self) -> tuple[int, int, int]:
        """(SDK code, controller error, warning); a disconnected SDK answers with a bare code
        instead of (code, [err, warn]), and that must not raise here."""
        reply = self.api.get_err_warn_code()
        if isinstance(reply, (list, tuple)) and len(reply) == 2:
            codes = reply[1]
            if isinstance(codes, (list, tuple)) and len(codes) >= 2:
                return int(reply[0]), int(codes[0]), int(codes[1])
        code = reply[0] if isinstance(reply, (list, tuple)) else reply
        return int(code) or -1, 0, 0

    def _check(self, code: int, what: str) -> None:
        """Any non-zero SDK code on a command: read the controller's error, latch, stop."""
        if code == 0:
            return
        if not self.api.connected:
            reason = f"controller connection lost ({what} returned code {code})"
        elif code in (SDK_REPLY_TIMEOUT, SDK_SEND_FAILED):
            reason = f"controller not answering ({what} returned code {code})"
        else:
            err_code, err, _ = self._err_warn()
            reason = (
                controller_error_text(err)
                if err_code == 0 and err
                else f"{what} returned code {code}"
            )
        self._latch(reason)
        raise LatchedFaultError(f"{what} failed: {reason}")

    def _latch(self, reason: str) -> None:
        self.fault.trip(reason)
        self.watchdog.disarm()
        self._streaming = False
        if self._api is not None and self._api.connected:
            self._api.set_state(STATE_STOP)  # best effort: the link may be what failed

    def _monitor_loop(self) -> None:
        period = 1.0 / self.config.monitor_hz
        deadline_s = self.config.watchdog.deadline_s
        t_poll = -math.inf
        t_answered = time.monotonic()  # the last answered error poll (or fault cleared)
        while True:
            # Wake at the watchdog deadline itself (not up to a period later), else every period.
            gap = self.watchdog.since_last_s()
            wait = period if gap is None else min(period, max(deadline_s - gap + 1e-3, 1e-3))
            if self._closing.wait(wait):
                return
            api = self._api
            if api is None or not api.connected:
                # Nothing to poll, so no silence to count: after a reconnect the first late
                # reply must start the count, not end it.
                t_answered = time.monotonic()
                if api is not None and not self.fault.active and not self._closing.is_set():
                    self._latch("controller connection lost")
                continue
            with self._lock:  # only the decision: the stop is one short request
                if self.watchdog.expired():  # commands stopped arriving: stop and hold
                    self.watchdog.disarm()
                    self._streaming = False
                    self.watchdog_stops += 1  # counted first: observers may see the stop at once
                    api.set_state(STATE_STOP)
            if time.monotonic() - t_poll < period:
                continue
            t_poll = time.monotonic()
            # Outside the command lock: a slow reply must not hold up commands.
            code, err, _ = self._err_warn()
            now = time.monotonic()
            if code == 0:
                t_answered = now
                if err and not self.fault.active:
                    self._latch(controller_error_text(err))
            elif not self.fault.active and not self._closing.is_set():
                # Late reports alone are no fault (the state falls back to requests; a
                # starved process must not stop the arm), nor is one late reply; a controller
                # that answers no poll for poll_silence_to_fault_s is.
                self.unanswered_polls += 1
                if now - t_answered >= self.config.poll_silence_to_fault_s:
                    self._latch(f"controller not answering (SDK code {code}; no error poll "
                                f"answered for {now - t_answered:.1f} s)")
            else:
                t_answered = now
