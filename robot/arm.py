"""The arm interface every controller, env and ROS node programs against.

    with XArmDriver(XArmDriverConfig(ip="192.168.1.208")) as arm:   # any Arm
        arm.enable()
        arm.move_to(np.array([0.35, 0.0, 0.20]))       # reset pose, position mode
        cmd = arm.send_action([0.5, 0.0, -0.2, 1.0])   # normalized delta EE + gripper
        record(cmd.applied_action)                     # what was actually sent
    # leaving the block stops the arm, whatever happened inside

Implementations: ``robot.xarm_driver.XArmDriver`` (xarm-python-sdk; the same code drives the
lab robot and the twin-backed controller emulator). Every command passes through the safety
envelope; a controller error, a collision or an emergency stop latches a fault that only
``reset_fault`` clears.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import TracebackType

import numpy as np
from video2reward.robot.safety import SafeCommand


@dataclass(frozen=True)
class ArmState:
    t_mono: float  # time.monotonic() when the state was read
    ee_pos_m: np.ndarray  # (3,) tool-centre point in the base frame, metres
    ee_rpy_rad: np.ndarray  # (3,) tool orientation, roll-pitch-yaw (xArm convention), radians
    joint_pos_rad: np.ndarray  # (5,) joint angles, radians
    gripper_open_frac: float  # 0 closed ... 1 fully open (NaN when there is no gripper)
    controller_state: int  # xArm state: 1 moving, 2 ready, 4 stopped
    mode: int  # xArm mode: 0 position, 1 servo
    error_code: int  # controller error code, 0 = none
    warn_code: int  # controller warning code, 0 = none
    fault: str | None  # the driver's latched fault, None when clear

    @property
    def ready(self) -> bool:
        return self.fault is None and self.error_code == 0 and self.controller_state in (1, 2)


class Arm(abc.ABC):
    """A Cartesian arm with a gripper, commanded in normalized delta end-effector actions."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection; the arm stays as it is (no motion, no enable)."""

    @abc.abstractmethod
    def enable(self) -> None:
        """Motors on, streaming (servo) mode, ready for ``send_action``."""

    @abc.abstractmethod
    def state(self) -> ArmState:
        """Measured state, read now."""

    @abc.abstractmethod
    def send_action(self, action: object) -> SafeCommand:
        """Validate, clip and send one normalized action; returns what was actually sent."""

    @abc.abstractmethod
    def move_to(
        self, p_base_tcp_m: np.ndarray, yaw_rad: float = 0.0, gripper_open_frac: float | None = None
    ) -> ArmState:
        """Blocking move to a pose inside the workspace (episode resets)."""

    @abc.abstractmethod
    def set_gripper(self, open_frac: float) -> float:
        """Command the gripper opening (0 closed ... 1 open); returns the command sent."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop motion now and hold; ``enable`` resumes."""

    @abc.abstractmethod
    def emergency_stop(self) -> None:
        """Controller emergency stop; latches a fault."""

    @abc.abstractmethod
    def reset_fault(self) -> None:
        """Clear controller errors and the latched fault (after the cause is fixed)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect (after ``stop``)."""

    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.close()
