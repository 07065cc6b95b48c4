"""The hand-eye pipeline: collect views (or replay a saved run), calibrate, write the file.

    cfg = HandEyeRunConfig(out="calibration.yaml", backend="xarm", camera="realsense",
                           board_z_flange_m=0.0526)
    summary = run_handeye(cfg, arm, camera)      # any robot.arm.Arm and robot.camera.Camera

``v2r calib handeye`` (calibration/cli.py) and the ROS collect node (calibration/ros/) both
build a ``HandEyeRunConfig`` and call :func:`run_handeye`; only how they get the arm and the
camera differs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import CharucoBoardSpec
from video2reward.calibration.collect import CollectConfig, collect_views, load_run, save_run
from video2reward.calibration.handeye import HandEyeConfig, solve_handeye
from video2reward.calibration.intrinsics import IntrinsicsConfig, estimate_intrinsics
from video2reward.calibration.result import (
    CalibrationFileError,
    ExtrinsicsRecord,
    IntrinsicsRecord,
    load_calibration,
    update_calibration,
)
from video2reward.robot.arm import Arm
from video2reward.robot.camera import Camera, CameraIntrinsics
from video2reward.robot.safety import WorkspaceBox

Vec3 = tuple[float, float, float]


def box_from_file(out: str, default: WorkspaceBox) -> WorkspaceBox:
    """The workspace box stored in the calibration file ``out``, else ``default``."""
    if Path(out).exists():
        cal = load_calibration(out)
        if cal.workspace is not None:
            return cal.workspace
    return default


@dataclass(frozen=True)
class HandEyeRunConfig:
    out: str = "calibration.yaml"
    backend: str = "twin"  # twin (in-process MuJoCo twin) | xarm (XArmDriver at ip) | replay
    data: str = ""  # backend=replay: a directory written with save_dir (no arm, no camera)
    ip: str = "192.168.1.208"
    camera: str = "twin"  # twin | realsense
    serial: str = ""  # RealSense serial ("" = the only one)
    width: int = 640
    height: int = 480
    intrinsics: str = "refine"  # refine (ChArUco, then jointly with the robot) | factory | file
    board_z_flange_m: float | None = None  # board origin height on the flange axis (mount), m
    squares_x: int = 6
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_4X4_50"
    mount_tilt_deg: float = 45.0  # twin: board tilt on the gripper (BoardMount)
    n_views: int = 18
    z_levels: int = 2
    facing_yaw_deg: float | None = None  # None: found by a yaw sweep
    yaw_spread_deg: float = 35.0
    margin_m: float = 0.03
    twin_eye_m: Vec3 = (0.80, -0.50, 0.60)  # twin: the camera pose to recover
    twin_target_m: Vec3 = (0.32, 0.0, 0.10)
    save_dir: str = ""  # save the run (images + joints) here, to re-solve with backend=replay
    report: str = ""  # also write the summary as JSON here

    def __post_init__(self) -> None:
        if self.backend not in ("twin", "xarm", "replay"):
            raise ValueError(f"backend must be twin|xarm|replay, got {self.backend!r}")
        if self.camera not in ("twin", "realsense"):
            raise ValueError(f"camera must be twin|realsense, got {self.camera!r}")
        if self.backend != "replay" and (self.backend == "twin") != (self.camera == "twin"):
            raise ValueError("the twin camera only sees the twin arm: use both or neither")
        if self.backend == "replay" and (not self.data or self.intrinsics == "factory"):
            raise ValueError(
                "backend=replay needs data=<save_dir of a run> and intrinsics "
                "refine or file (a replay has no camera to ask)"
            )
        if self.intrinsics not in ("refine", "factory", "file"):
            raise ValueError(f"intrinsics must be refine|factory|file, got {self.intrinsics!r}")
        if self.backend in ("xarm", "replay") and self.board_z_flange_m is None:
            raise ValueError(
                "board_z_flange_m is required on the robot: the height of the board origin "
                "(its top-left outer corner) along the flange axis, measured on the mount"
            )

    @property
    def board(self) -> CharucoBoardSpec:
        return CharucoBoardSpec(
            self.squares_x, self.squares_y, self.square_m, self.marker_m, self.dictionary
        )


def pose_text(T: np.ndarray) -> str:
    """A 4x4 pose as "position [...] m, rpy(xyz) [...] deg", for the printed summary."""
    rpy = Rotation.from_matrix(T[:3, :3]).as_euler("xyz", degrees=True)
    return f"position {np.round(T[:3, 3], 4).tolist()} m, rpy(xyz) {np.round(rpy, 3).tolist()} deg"


def run_handeye(
    cfg: HandEyeRunConfig, arm: Arm | None, camera: Camera | None, truth: Any = None
) -> dict:
    """Collect (or replay), calibrate, write the file; returns the summary (also printed)."""
    spec = cfg.board
    box = box_from_file(cfg.out, WorkspaceBox())
    collect_cfg = CollectConfig(
        box=box,
        margin_m=cfg.margin_m,
        z_levels=cfg.z_levels,
        n_views=cfg.n_views,
        facing_yaw_deg=cfg.facing_yaw_deg,
        yaw_spread_deg=cfg.yaw_spread_deg,
        keep_images=bool(cfg.save_dir),
    )
    t0 = time.monotonic()
    if arm is None or camera is None:
        run = load_run(cfg.data, spec)
    else:
        run = collect_views(arm, camera, spec, collect_cfg)
    t_collect = time.monotonic() - t0
    if cfg.save_dir:  # before solving: a refused solve must not cost the robot time again
        save_run(run, cfg.save_dir)
        print(f"saved {len(run.views)} views to {cfg.save_dir} (re-solve: backend=replay)")
    dets = [v.detection for v in run.views]
    charuco = None
    if cfg.intrinsics == "refine":
        charuco = estimate_intrinsics(dets, spec, IntrinsicsConfig())
        intr = charuco.intrinsics
    elif cfg.intrinsics == "factory" and camera is not None:
        intr = camera.intrinsics()
    else:
        cal = load_calibration(cfg.out)
        if cal.camera is None:
            raise CalibrationFileError(f"{cfg.out} has no camera section for intrinsics=file")
        intr = cal.camera.intrinsics
    he_cfg = HandEyeConfig(
        board_z_flange_m=cfg.board_z_flange_m, refine_intrinsics=cfg.intrinsics == "refine"
    )
    t1 = time.monotonic()
    res = solve_handeye(run.handeye_views(), spec, intr.K(), np.asarray(intr.coeffs), he_cfg)
    t_solve = time.monotonic() - t1
    if cfg.intrinsics == "refine":
        K, d = res.K, res.dist
        intr = CameraIntrinsics(
            intr.width,
            intr.height,
            K[0, 0],
            K[1, 1],
            K[0, 2],
            K[1, 2],
            coeffs=tuple(float(c) for c in d),
        )
    source = {"refine": "handeye", "factory": "factory", "file": "file"}[cfg.intrinsics]
    where = {
        "twin": "twin",
        "xarm": f"xarm@{cfg.ip} + realsense {cfg.serial or '(first)'}",
        "replay": f"replay of {cfg.data}",
    }[cfg.backend]
    prior = cfg.board_z_flange_m if res.planar_motion else None
    sections: dict[str, Any] = {
        "extrinsics": ExtrinsicsRecord(
            res.T_base_cam, res.T_flange_board, spec, prior, res.summary()
        )
    }
    if source != "file":
        sections["camera"] = IntrinsicsRecord(intr, source, res.reprojection_rms_px)
    update_calibration(cfg.out, where, **sections)
    summary: dict[str, Any] = {
        "views_visited": len(run.views),
        "facing_yaw_deg": round(float(np.rad2deg(run.facing_yaw_rad)), 2),
        **res.summary(),
        "T_base_cam": np.round(res.T_base_cam, 6).tolist(),
        "intrinsics": {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy},
        "collect_s": round(t_collect, 2),
        "solve_s": round(t_solve, 3),
    }
    print(
        f"views: {len(run.views)} visited, {len(res.used)} used, "
        f"board not seen in {list(res.not_seen)}, rejected {list(res.rejected)}"
    )
    if charuco is not None:
        print(
            f"intrinsics (ChArUco only): fx {charuco.intrinsics.fx:.2f} fy "
            f"{charuco.intrinsics.fy:.2f} cx {charuco.intrinsics.cx:.2f} cy "
            f"{charuco.intrinsics.cy:.2f}, RMS {charuco.rms_px:.3f} px"
        )
    print(
        f"intrinsics ({source}): fx {intr.fx:.2f} fy {intr.fy:.2f} cx {intr.cx:.2f} "
        f"cy {intr.cy:.2f} coeffs {np.round(intr.coeffs, 5).tolist()}"
    )
    print(f"T_base_cam: {pose_text(res.T_base_cam)}")
    print(
        f"residuals: reprojection {res.reprojection_rms_px:.3f} px, pose chain "
        f"{res.rms_trans_mm:.2f} mm / {res.rms_rot_deg:.3f} deg, predicted 1-sigma "
        f"{res.std_cam_mm:.2f} mm / {res.std_cam_deg:.3f} deg"
        + (" (camera height from board_z_flange_m)" if res.planar_motion else "")
    )
    if truth is not None:
        T_true, intr_true = truth
        err_mm = 1000.0 * float(np.linalg.norm(res.T_base_cam[:3, 3] - T_true[:3, 3]))
        dR = res.T_base_cam[:3, :3].T @ T_true[:3, :3]
        err_deg = float(np.rad2deg(Rotation.from_matrix(dR).magnitude()))
        f_err = 100.0 * max(abs(intr.fx / intr_true.fx - 1), abs(intr.fy / intr_true.fy - 1))
        summary["twin_error"] = {"mm": err_mm, "deg": err_deg, "focal_pct": f_err}
        print(
            f"twin ground truth: camera error {err_mm:.3f} mm, {err_deg:.4f} deg; "
            f"focal length error {f_err:.3f} %"
        )
    print(f"collection {t_collect:.1f} s, solve {t_solve:.2f} s; wrote {cfg.out}")
    if cfg.report:
        Path(cfg.report).write_text(json.dumps(summary, indent=1))
    return summary
