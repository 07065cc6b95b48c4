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
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
from video2reward.robot.arm import Arm
from video2reward.robot.camera import Camera, CameraIntrinsics
from video2reward.robot.recorder import Observation, Recorder, RecorderError, quat_wxyz_from_rpy
from video2reward.robot.teleop import KEY_HELP, TeleopSource

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

    def __init__(self, env: Any, rate_hz: float, seed: int = 0):
        self.env = env
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
        return CameraIntrinsics(int(k["width"]), int(k["height"]), k["fx"], k["fy"], k["cx"],
                                k["cy"])  # fmt: skip


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
) -> int:
    """Run until ``quit`` (or ``max_ticks``); returns the number of episodes saved."""
    period = 1.0 / rate_hz
    tick = 0
    t_next = time.monotonic()
    message = KEY_HELP
    while max_ticks is None or tick < max_ticks:
        cmd = source.poll()
        quit_now = False
        for ev in cmd.events:
            if ev not in PRE_EVENTS:
                continue
            try:
                if ev == "start":
                    message = f"recording episode {recorder.start()}"
                elif ev == "enable":
                    robot.enable()
                elif ev == "disable":
                    robot.disable()
                elif ev == "home":
                    robot.home()
                elif ev == "help":
                    message = KEY_HELP
                elif ev == "quit":
                    quit_now = True
            except (RecorderError, RuntimeError) as e:
                message = f"{ev}: {e}"
        if quit_now:
            break
        recorder.observe(robot.observe())
        for ev in cmd.events:
            try:
                if ev in ("success", "failure"):
                    i = recorder.stop(success=ev == "success")
                    message = f"saved episode {i} as {ev}"
                elif ev == "discard":
                    recorder.discard()
                    message = "discarded"
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
        if out is not None:
            out.write(f"\r{recorder.status_line()} | {message}\x1b[K")
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
