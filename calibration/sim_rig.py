"""The calibration rig in the MuJoCo twin: a ChArUco board on the gripper, an Arm, a Camera.

    with TwinRig(TwinRigConfig()) as rig:              # board PNG written to a temp dir
        views = collect_views(rig.arm, rig.camera, spec, CollectConfig())
        rig.T_base_cam_true, rig.T_flange_board_true   # ground truth to compare against

    cam_cfg, roll_deg = twin_camera_from_calibration(load_calibration("calibration.yaml"))
    twin.set_camera(cam_cfg)                           # place the twin's camera from a result

``TwinArm`` implements ``robot.arm.Arm`` over the twin (tool-down IK, the same workspace-box
refusal as the xArm driver), so the collection routine that drives the lab robot through
``XArmDriver`` runs unchanged here. Twin imports stay inside this module: the rest of
calibration/ works without MuJoCo.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import BoardMount, CharucoBoardSpec, write_board_png
from video2reward.calibration.result import CalibrationResult
from video2reward.robot.arm import Arm, ArmState
from video2reward.robot.camera import CameraIntrinsics, TwinCamera, TwinCameraConfig
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk, ik_tool_down
from video2reward.robot.safety import (
    EnvelopeConfig,
    FaultLatch,
    InvalidCommandError,
    SafeCommand,
    SafetyEnvelope,
)
from video2reward.sim.controller import CartesianController
from video2reward.sim.twin import CameraConfig, TwinConfig, XArm5Twin


def board_mjcf(spec: CharucoBoardSpec, mount: BoardMount, png: Path) -> tuple[str, str]:
    """(tool_xml, assets_xml) for a textured, visual-only board in the gripper (flange) frame.

    A thin box: MuJoCo maps a 2D texture onto each face of a box with image rows running
    down the face's -y, so the geom's axes are board (x, -y, -z) and its +z face is the print.
    """
    T = mount.T_flange_board(spec)
    R_board = T[:3, :3]
    R_geom = np.stack([R_board[:, 0], -R_board[:, 1], -R_board[:, 2]], axis=1)
    w, h = spec.size_m
    center = T[:3, 3] + R_board @ np.array([w / 2, h / 2, 0.0])
    thick_m = 0.001
    center = center + R_board[:, 2] * (thick_m / 2)  # the +z (printed) face on the board plane
    x, y, z, qw = Rotation.from_matrix(R_geom).as_quat()
    tool_xml = (
        f'<geom name="calib_board" type="box" size="{w / 2:.9g} {h / 2:.9g} {thick_m / 2:.9g}" '
        f'pos="{center[0]:.9g} {center[1]:.9g} {center[2]:.9g}" '
        f'quat="{qw:.12g} {x:.12g} {y:.12g} {z:.12g}" material="calib_board" '
        'contype="0" conaffinity="0" group="1"/>'
    )
    assets_xml = (
        f'<texture name="calib_board" type="2d" file="{png}"/>'
        '<material name="calib_board" texture="calib_board" texrepeat="1 1" '
        'texuniform="false" specular="0" shininess="0"/>'
    )
    return tool_xml, assets_xml


@dataclass(frozen=True)
class TwinArmConfig:
    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    joint_speed_rad_s: float = 1.0  # fastest joint's speed during a move_to (interpolated)
    settle_s: float = 0.3  # simulated hold after a move, so the servo lag dies out

    def __post_init__(self) -> None:
        if not 0.05 <= self.joint_speed_rad_s <= 3.0:
            raise ValueError(
                f"joint_speed_rad_s must be in [0.05, 3], got {self.joint_speed_rad_s}"
            )
        if not 0.0 <= self.settle_s <= 5.0:
            raise ValueError(f"settle_s must be in [0, 5], got {self.settle_s}")


class TwinArm(Arm):
    """``robot.arm.Arm`` over an in-process twin, with the xArm driver's refusal rules."""

    def __init__(self, twin: XArm5Twin, config: TwinArmConfig | None = None):
        self.config = config or TwinArmConfig()
        self.twin = twin
        self.envelope = SafetyEnvelope(self.config.envelope)
        self.controller = CartesianController(twin, self.envelope)
        self.fault = FaultLatch()
        self._enabled = False

    def connect(self) -> None:
        self.fault.check()

    def enable(self) -> None:
        self.fault.check()
        self._enabled = True

    def state(self) -> ArmState:
        q = self.twin.joint_pos()
        T = fk(q, GRIPPER_TCP_OFFSET_M)
        yaw = float(np.arctan2(T[1, 0], T[0, 0]))
        return ArmState(
            t_mono=time.monotonic(),
            ee_pos_m=T[:3, 3].copy(),
            ee_rpy_rad=np.array([np.pi, 0.0, yaw]),
            joint_pos_rad=q,
            gripper_open_frac=self.twin.gripper_open_frac(),
            controller_state=2,
            mode=1 if self._enabled else 0,
            error_code=0,
            warn_code=0,
            fault=self.fault.reason,
        )

    def send_action(self, action: object) -> SafeCommand:
        self.fault.check()
        if not self._enabled:
            raise InvalidCommandError("arm is stopped; call enable() (or move_to) first")
        self.controller.yaw_rad = float(self.state().ee_rpy_rad[2])
        return self.controller.step(action, duration_s=0.1)

    def move_to(
        self, p_base_tcp_m: np.ndarray, yaw_rad: float = 0.0, gripper_open_frac: float | None = None
    ) -> ArmState:
        p = np.asarray(p_base_tcp_m, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)) or not np.isfinite(yaw_rad):
            raise InvalidCommandError(f"reset target must be 3 finite numbers, got {p}")
        if not self.envelope.config.box.contains(p):
            raise InvalidCommandError(f"reset target {p.tolist()} is outside the workspace box")
        self.fault.check()
        q0 = self.twin.commanded_joint_pos()
        q1 = ik_tool_down(p, yaw_rad, q0, GRIPPER_TCP_OFFSET_M)
        duration = max(0.05, float(np.max(np.abs(q1 - q0))) / self.config.joint_speed_rad_s)
        g = self.twin.gripper_open_frac() if gripper_open_frac is None else gripper_open_frac
        self.twin.servo(q1, g, duration)
        self.twin.hold(self.config.settle_s)
        self._enabled = True
        return self.state()

    def set_gripper(self, open_frac: float) -> float:
        self.fault.check()
        self.twin.servo(self.twin.commanded_joint_pos(), open_frac, 0.2)
        return float(np.clip(open_frac, 0.0, 1.0)) * 850.0

    def stop(self) -> None:
        self._enabled = False

    def emergency_stop(self) -> None:
        self._enabled = False
        self.fault.trip("emergency stop")

    def reset_fault(self) -> None:
        self.fault.reset()

    def close(self) -> None:
        self._enabled = False


@dataclass(frozen=True)
class TwinRigConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)  # the "unknown" camera pose
    board: CharucoBoardSpec = field(default_factory=CharucoBoardSpec)
    mount: BoardMount = field(default_factory=BoardMount)
    width: int = 640  # render size, pixels (the D435 colour mode)
    height: int = 480
    msaa_samples: int = 4  # anti-aliased edges give sub-pixel corners (0 = jagged, biased)
    px_per_square: int = 100  # texture resolution of the board
    arm: TwinArmConfig = field(default_factory=TwinArmConfig)

    def __post_init__(self) -> None:
        if not (64 <= self.width <= 640 and 48 <= self.height <= 480):
            raise ValueError(f"render size {self.width}x{self.height} outside 64..640x48..480")


class TwinRig:
    """The twin with a board on the gripper, wrapped as an ``Arm`` and a ``Camera``."""

    def __init__(self, config: TwinRigConfig | None = None):
        self.config = c = config or TwinRigConfig()
        self._tmp = Path(tempfile.mkdtemp(prefix="v2r_calib_"))
        png = write_board_png(c.board, self._tmp / "board.png", c.px_per_square)
        tool_xml, assets_xml = board_mjcf(c.board, c.mount, png)
        self.twin = XArm5Twin(
            TwinConfig(camera=c.camera, msaa_samples=c.msaa_samples),
            tool_xml=tool_xml,
            assets_xml=assets_xml,
        )
        self.arm = TwinArm(self.twin, c.arm)
        k = c.camera.intrinsics(c.width, c.height)
        self.intrinsics_true = CameraIntrinsics(
            c.width, c.height, k["fx"], k["fy"], k["cx"], k["cy"]
        )
        self.camera = TwinCamera(
            TwinCameraConfig(c.width, c.height, fps=120.0), self.twin.render, self.intrinsics_true
        )

    @property
    def T_base_cam_true(self) -> np.ndarray:
        return self.config.camera.T_base_cam()

    @property
    def T_flange_board_true(self) -> np.ndarray:
        return self.config.mount.T_flange_board(self.config.board)

    def close(self) -> None:
        self.twin.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TwinRig:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def camera_config_from_T_base_cam(
    T_base_cam: np.ndarray, fy_px: float, height_px: int, look_distance_m: float = 0.5
) -> tuple[CameraConfig, float]:
    """The twin's ``CameraConfig`` closest to a calibrated camera, and its roll error (degrees).

    ``CameraConfig`` is a look-at camera with the image's up towards base +z, so a camera
    rolled about its optical axis cannot be represented exactly: the returned angle is the
    rotation between the calibrated and the placed camera (0 for an unrolled camera). The
    vertical field of view comes from ``fy_px``; fx != fy and an off-centre principal point
    are not representable in the twin either.
    """
    T = np.asarray(T_base_cam, dtype=float)
    eye = T[:3, 3]
    target = eye + look_distance_m * T[:3, 2]
    fovy_deg = float(np.rad2deg(2.0 * np.arctan((height_px / 2.0) / fy_px)))
    cfg = CameraConfig(
        eye_m=(float(eye[0]), float(eye[1]), float(eye[2])),
        target_m=(float(target[0]), float(target[1]), float(target[2])),
        fovy_deg=fovy_deg,
    )
    dR = cfg.T_base_cam()[:3, :3].T @ T[:3, :3]
    return cfg, float(np.rad2deg(Rotation.from_matrix(dR).magnitude()))


def twin_camera_from_calibration(cal: CalibrationResult) -> tuple[CameraConfig, float]:
    """The twin's camera from a calibration file's T_base_cam and intrinsics (and roll error)."""
    if cal.extrinsics is None or cal.camera is None:
        raise ValueError("the calibration needs both the camera and the extrinsics sections")
    i = cal.camera.intrinsics
    return camera_config_from_T_base_cam(cal.extrinsics.T_base_cam, i.fy, i.height)
