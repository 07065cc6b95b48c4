"""Teleop recording in one process: a teleop source drives an arm while a recorder writes.

    v2r record teleop task=push out=demos.zarr                 # keyboard, the twin
    v2r record teleop task=push out=demos.zarr sim=false ip=192.168.1.208 source=gamepad

    robot = TwinTeleopRobot(make_env("push", image_size=84), rate_hz=30)
    with KeyboardTeleop(TeleopConfig()) as src, Recorder(cfg, robot.intrinsics()) as rec:
        run_session(src, robot, rec, rate_hz=30)

One tick: poll the source; handle ``start``/``enable``/``disable``/``home``; observe (camera
frame + arm state) and hand it to the recorder; handle ``success``/``failure``/``discard``
(so an episode ends on an observation: N commands, N + 1 rows); send the command when enabled
and record what the envelope actually applied. The ROS nodes (``robot/ros/teleop_node.py``,
``robot/ros/recorder_node.py``) do the same across processes.
"""

from __future__ import annotations

import abc
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from video2reward.robot.adapters import adapter
from video2reward.robot.arm import Arm
from video2reward.robot.camera import Camera, CameraError, CameraIntrinsics
from video2reward.robot.kinematics import quat_wxyz_from_rpy
from video2reward.robot.recorder import (
    Observation,
    Recorder,
    RecorderConfig,
    RecorderError,
    RecorderStatus,
)
from video2reward.robot.teleop import SOURCES, TeleopConfig, TeleopDeviceError, TeleopSource
from video2reward.robot.teleop_keyboard import KEY_HELP
from video2reward.robot.teleop_sources import help_text, make_source

HOME_M = np.array([0.35, 0.0, 0.20])  # the driver node's default home pose


class TeleopRobot(abc.ABC):
    """What a teleop session needs from an arm and its camera."""

    @abc.abstractmethod
    def observe(self) -> Observation: ...

    @abc.abstractmethod
    def send(self, action: np.ndarray) -> np.ndarray:
        """Send one normalized action; returns the action actually applied."""

    @abc.abstractmethod
    def idle(self, period_s: float) -> None:
        """A tick without a command (disabled): let time pass, the arm holds or stops."""

    def enable(self) -> None:  # noqa: B027 (the twin needs no enabling)
        """Make the arm ready to stream commands."""

    def disable(self) -> None:  # noqa: B027
        """Stop streaming (the real arm stops and holds)."""

    @abc.abstractmethod
    def home(self) -> None:
        """Move to the start pose (twin: reset the task scene)."""

    @abc.abstractmethod
    def intrinsics(self) -> CameraIntrinsics: ...


class TwinTeleopRobot(TeleopRobot):
    """The MuJoCo twin (an ``XArm5Env``) stepped one command period per tick."""

    def __init__(self, env: Any, rate_hz: float, seed: int = 0, depth: bool = False):
        self.env = env
        self.depth = depth  # render aligned depth with each frame (point-map demonstrations)
        self.dt_s = 1.0 / rate_hz
        self._seed = seed
        env.reset(seed=seed)

    def clock(self) -> float:
        """Simulated time: scripted keys and the recorder follow the twin, not the wall."""
        return float(self.env.twin.time_s)

    def observe(self) -> Observation:
        env = self.env
        return Observation(
            image=env.twin.render(env.config.image_size),
            ee_pos_m=env.controller.tcp_pos(),
            ee_quat_wxyz=env.twin.tcp_quat(),
            joint_pos_rad=env.twin.joint_pos(),
            gripper_open_frac=env.twin.gripper_open_frac(),
            t_wall_s=self.clock(),
            depth_m=env.twin.render_depth(env.config.image_size) if self.depth else None,
        )

    def send(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(self.env.controller.step(action, self.dt_s).applied_action)

    def idle(self, period_s: float) -> None:
        self.env.twin.hold(period_s)

    def home(self) -> None:
        self._seed += 1
        t = self.env.twin.time_s
        self.env.reset(seed=self._seed)
        self.env.twin.time_s = t  # keep the clock monotonic across resets

    def intrinsics(self) -> CameraIntrinsics:
        k = self.env.intrinsics()
        return CameraIntrinsics(
            int(k["width"]), int(k["height"]), k["fx"], k["fy"], k["cx"], k["cy"]
        )


class ArmCameraRobot(TeleopRobot):
    """Any ``Arm`` (the xArm driver, also against the emulator) and any ``Camera``."""

    def __init__(self, arm: Arm, camera: Camera, home_m: np.ndarray = HOME_M):
        self.arm = arm
        self.camera = camera
        self.home_m = np.asarray(home_m, float)

    def observe(self) -> Observation:
        frame = self.camera.read()  # paces the loop at the camera's rate
        s = self.arm.state()
        return Observation(
            image=frame.color,
            ee_pos_m=s.ee_pos_m,
            ee_quat_wxyz=quat_wxyz_from_rpy(s.ee_rpy_rad),
            joint_pos_rad=s.joint_pos_rad,
            gripper_open_frac=s.gripper_open_frac,
            t_wall_s=time.time(),
            frame_number=frame.frame_number,
            depth_m=frame.depth_m,
        )

    def send(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(self.arm.send_action(action).applied_action)

    def idle(self, period_s: float) -> None:
        pass  # the camera read paces the loop

    def enable(self) -> None:
        self.arm.enable()

    def disable(self) -> None:
        self.arm.stop()

    def home(self) -> None:
        self.arm.move_to(self.home_m, gripper_open_frac=1.0)
        self.arm.enable()

    def intrinsics(self) -> CameraIntrinsics:
        return self.camera.intrinsics()


PRE_EVENTS = ("start", "enable", "disable", "home", "quit", "help")


def fit_line(text: str, columns: int) -> str:
    """``text`` on one line of at most ``columns - 1`` characters, cut with '...' when longer.

    The last column stays free: a line that fills it leaves the cursor waiting to wrap, and the
    next refresh (``\\r``) would then start a new line instead of rewriting this one.
    """
    text = text.replace("\r", " ").replace("\n", " ")
    room = max(columns - 1, 4)
    return text if len(text) <= room else text[: room - 3] + "..."


def status_text(s: RecorderStatus, message: str = "") -> str:
    """The operator's status line: state, episode, time, frames, rate, episodes saved, then
    ``message`` (a key or command that was refused) or else the recorder's last event."""
    state = "REC " if s.recording else "idle"
    line = (
        f"{state} ep {s.episode} {s.duration_s:5.1f} s {s.frames:4d} fr {s.rate_hz:4.1f} Hz"
        f" | saved {s.saved}"
    )
    line += f" | dropped {s.dropped}" if s.dropped else ""
    line += f" | ERROR: {s.error}" if s.error else ""
    return f"{line} | {message or s.last_event}"


def wrap_help(text: str, columns: int) -> list[str]:
    """Key help (items joined by ' | ', groups by ' || ') as lines that fit ``columns``."""
    lines: list[str] = []
    for group in text.split(" || "):
        line = ""
        for item in group.split(" | "):
            joined = f"{line} | {item}" if line else item
            if line and len(joined) > columns - 1:
                lines.append(line)
                joined = item
            line = joined
        lines.append(line)
    return [fit_line(line, columns) for line in lines]


def _terminal_columns(out: TextIO, columns: int | None) -> int | None:
    """The width to fit: ``columns`` when given, the terminal's for a terminal, else none."""
    if columns is not None:
        return columns
    return shutil.get_terminal_size().columns if out.isatty() else None


def _write_help(out: TextIO, text: str, columns: int | None) -> None:
    lines = wrap_help(text, columns) if columns is not None else [text]
    out.write("\r\x1b[K" + "\n".join(lines) + "\n")


def run_session(
    source: TeleopSource,
    robot: TeleopRobot,
    recorder: Recorder,
    rate_hz: float,
    *,
    max_ticks: int | None = None,
    real_time: bool = True,
    out: TextIO | None = sys.stderr,
    on_tick: Callable[[int], None] | None = None,
    notes: str = "",
    columns: int | None = None,
) -> int:
    """Run until ``quit`` (or ``max_ticks``); returns the number of episodes saved.

    ``out`` gets the key help once (again on ``help``) and a status line rewritten in place,
    both fitted to ``columns`` (default: the terminal's width, read at every refresh so a
    resized window is followed; no fitting when ``out`` is not a terminal).
    """
    period = 1.0 / rate_hz
    tick = 0
    t_next = time.monotonic()
    if out is not None:
        _write_help(out, help_text(source.config.source), _terminal_columns(out, columns))
    message = "h: keys"
    while max_ticks is None or tick < max_ticks:
        cmd = source.poll()
        quit_now = False
        for ev in cmd.events:
            if ev not in PRE_EVENTS:
                continue
            try:
                if ev == "start":
                    recorder.start(notes)
                    message = ""  # the recorder's last event says it
                elif ev == "enable":
                    robot.enable()
                elif ev == "disable":
                    robot.disable()
                elif ev == "home":
                    robot.home()
                elif ev == "help" and out is not None:
                    width = _terminal_columns(out, columns)
                    _write_help(out, help_text(source.config.source), width)
                elif ev == "quit":
                    quit_now = True
            except (RecorderError, RuntimeError) as e:
                message = f"{ev}: {e}"
        if quit_now:
            break
        recorder.observe(robot.observe())
        for ev in cmd.events:
            try:
                if ev in ("success", "failure") and recorder.recording:
                    recorder.stop(success=ev == "success")
                    message = ""
                elif ev in ("success", "failure"):  # after the fact: relabel the last one
                    recorder.mark(ev == "success")
                    message = ""
                elif ev == "discard":
                    recorder.discard()
                    message = ""
            except RecorderError as e:
                message = f"{ev}: {e}"
        if cmd.enabled:
            try:
                recorder.command(robot.send(cmd.action))
            except (RuntimeError, ValueError) as e:  # refused or arm fault: nothing was sent
                message = f"command not sent: {e}"
                robot.idle(period)
        else:
            robot.idle(period)
        if out is not None and (tick % 3 == 0 or cmd.events):  # ~10 Hz is enough to read
            line = status_text(recorder.status(), message)
            width = _terminal_columns(out, columns)
            out.write(f"\r{fit_line(line, width) if width is not None else line}\x1b[K")
            out.flush()
        if on_tick is not None:
            on_tick(tick)
        tick += 1
        if real_time:
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
    if recorder.recording:
        recorder.discard()
    if out is not None:
        out.write("\n")
    return recorder.status().saved


@dataclass(frozen=True)
class TeleopRecordConfig:
    task: str = "push"  # task name stored with every episode (twin: also the scene)
    out: str = "runs/teleop.zarr"  # the store; appended to when it exists
    source: str = "keyboard"  # keyboard | gamepad | spacemouse
    sim: bool = True  # the MuJoCo twin in this process, else the xArm + RealSense
    rate_hz: float = 30.0  # commands per second (twin: also frames; at most 30)
    speed: float = 0.5  # initial speed scale
    image_size: int = 84  # twin render, pixels
    ip: str = "192.168.1.208"  # robot: controller address
    camera_serial: str = ""  # robot: RealSense serial ('' = the only one)
    width: int = 640  # robot camera, pixels
    height: int = 480
    camera_fps: int = 30  # robot: RealSense rate
    flush_every: int = 30  # rows per chunk; a crash loses at most this many rows
    notes: str = ""  # stored with every episode of the session
    device: str = ""  # gamepad / SpaceMouse event device ('' = first found)
    # Record aligned depth with every frame, and the camera's pose with a new store: the
    # demonstrations of a point-map policy (LearnSpec.pointmap). The robot's pose comes from
    # the calibration file (v2r calib handeye); the twin knows its own.
    depth: bool = False
    calibration: str = ""

    def __post_init__(self) -> None:
        if self.depth and not self.sim and not self.calibration:
            raise ValueError("depth=true on the robot needs calibration= (the v2r calib file "
                             "with the hand-eye T_base_cam): without the camera's pose the "
                             "recorded depth cannot place pixels in the base frame")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.sim and not 1.0 <= self.rate_hz <= 30.0:
            raise ValueError(f"rate_hz must be in [1, 30] in the twin, got {self.rate_hz}")

    def teleop(self) -> TeleopConfig:
        return TeleopConfig(
            source=self.source, rate_hz=self.rate_hz, speed=self.speed, device=self.device
        )

    def recorder(self) -> RecorderConfig:
        return RecorderConfig(
            out=self.out,
            task=self.task,
            source="twin" if self.sim else "robot",
            fps_hz=self.rate_hz if self.sim else float(self.camera_fps),
            flush_every=self.flush_every,
            depth=self.depth,
        )


def record_teleop(cfg: TeleopRecordConfig) -> int:
    """Open the source, the arm (twin or robot) and the recorder; run until quit."""
    with make_source(cfg.teleop()) as source:
        if cfg.sim:
            make_env = adapter("twin_env")  # sim.env.make_env, registered by the twin
            env = make_env(cfg.task, image_size=cfg.image_size, control_hz=cfg.rate_hz)
            try:
                robot = TwinTeleopRobot(env, cfg.rate_hz, depth=cfg.depth)
                with Recorder(cfg.recorder(), robot.intrinsics(),
                              T_base_cam=env.config.camera.T_base_cam()) as rec:  # fmt: skip
                    return run_session(source, robot, rec, cfg.rate_hz, notes=cfg.notes)
            finally:
                env.close()
        from video2reward.robot.realsense import RealSenseCamera, RealSenseConfig
        from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig

        cam_cfg = RealSenseConfig(serial=cfg.camera_serial, width=cfg.width, height=cfg.height,
                                  fps=cfg.camera_fps, enable_depth=cfg.depth)  # fmt: skip
        from video2reward.calibration.result import camera_pose

        T_base_cam = camera_pose(cfg.calibration, depth=cfg.depth)
        with XArmDriver(XArmDriverConfig(ip=cfg.ip)) as arm, RealSenseCamera(cam_cfg) as cam:
            robot_ = ArmCameraRobot(arm, cam)
            with Recorder(cfg.recorder(), robot_.intrinsics(), T_base_cam=T_base_cam) as rec:
                return run_session(
                    source, robot_, rec, cfg.rate_hz, real_time=False, notes=cfg.notes
                )


def _run(overrides: list[str], flags: list[str]) -> int:
    from video2reward.configs.compose import compose, to_dataclass

    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print(KEY_HELP)
        return 0
    cfg = to_dataclass(TeleopRecordConfig, compose("record_teleop", overrides))
    try:
        saved = record_teleop(cfg)
    except (TeleopDeviceError, RecorderError, ConnectionError, CameraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{saved} episodes saved to {cfg.out}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    from video2reward.configs.compose import run_cli

    return run_cli(_run, argv)
