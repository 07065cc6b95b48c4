"""``v2r calib ...``: intrinsics, hand-eye, workspace and show, all on one calibration YAML.

    v2r calib handeye out=calibration.yaml                        # the twin, camera pose unknown
    v2r calib handeye backend=xarm ip=192.168.1.208 camera=realsense board_z_flange_m=0.0526 \
        save_dir=runs/calib/2026-11-24                    # keep the views
    v2r calib handeye backend=replay data=runs/calib/2026-11-24 board_z_flange_m=0.0526
    v2r calib intrinsics source=factory recording=run.db3 out=calibration.yaml
    v2r calib intrinsics source=images images=shots/ out=calibration.yaml
    v2r calib workspace corners="[[0.2,-0.25,0.01],[0.55,0.25,0.3]]" out=calibration.yaml
    v2r calib show file=calibration.yaml

Options and their defaults are in configs/calib_*.yaml. Exit codes: 0 done, 1 the
calibration failed (the message says why and what to change), 2 a bad option.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from video2reward.calibration.board import BoardMount, CharucoBoardSpec, detect_board
from video2reward.calibration.collect import (
    ArmNotSettledError,
    BoardNeverSeenError,
)
from video2reward.calibration.handeye import HandEyeError
from video2reward.calibration.handeye_run import (
    HandEyeRunConfig,
    box_from_file,
    pose_text,
    run_handeye,
)
from video2reward.calibration.intrinsics import (
    IntrinsicsConfig,
    IntrinsicsError,
    estimate_intrinsics,
    factory_intrinsics,
)
from video2reward.calibration.result import (
    CalibrationFileError,
    IntrinsicsRecord,
    load_calibration,
    to_dict,
    update_calibration,
)
from video2reward.calibration.workspace import (
    WorkspaceToolConfig,
    box_from_corners,
    jog_and_record,
)
from video2reward.configs.compose import ConfigError, compose, run_cli, to_dataclass
from video2reward.robot.camera import CameraError
from video2reward.robot.kinematics import UnreachableError
from video2reward.robot.safety import (
    EnvelopeConfig,
    InvalidCommandError,
    LatchedFaultError,
    WorkspaceBox,
)

Vec3 = tuple[float, float, float]


def _fail(msg: str) -> int:
    print(f"calibration failed: {msg}", file=sys.stderr)
    return 1


def _help(cls: type, flags: list[str]) -> bool:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print("options (key=value):", ", ".join(f.name for f in dataclasses.fields(cls)))
        return True
    return False


# ----------------------------------------------------------------------------- handeye
def _handeye(overrides: list[str], flags: list[str]) -> int:
    if _help(HandEyeRunConfig, flags):
        return 0
    cfg = to_dataclass(HandEyeRunConfig, compose("calib_handeye", overrides))
    try:
        if cfg.backend == "twin":
            from video2reward.calibration.sim_rig import TwinRig, TwinRigConfig
            from video2reward.sim.twin import CameraConfig

            rig_cfg = TwinRigConfig(
                camera=CameraConfig(eye_m=cfg.twin_eye_m, target_m=cfg.twin_target_m),
                board=cfg.board,
                mount=BoardMount(tilt_deg=cfg.mount_tilt_deg),
                width=cfg.width,
                height=cfg.height,
            )
            with TwinRig(rig_cfg) as rig:
                if cfg.board_z_flange_m is None:  # the twin knows its mount exactly
                    cfg = _replace(cfg, board_z_flange_m=float(rig.T_flange_board_true[2, 3]))
                run_handeye(cfg, rig.arm, rig.camera, (rig.T_base_cam_true, rig.intrinsics_true))
            return 0
        if cfg.backend == "replay":
            run_handeye(cfg, None, None)
            return 0
        from video2reward.robot.realsense import RealSenseCamera, RealSenseConfig
        from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig

        box = box_from_file(cfg.out, WorkspaceBox())
        driver = XArmDriver(XArmDriverConfig(ip=cfg.ip, envelope=EnvelopeConfig(box=box)))
        cam = RealSenseCamera(
            RealSenseConfig(serial=cfg.serial, width=cfg.width, height=cfg.height)
        )
        with driver as arm, cam:
            run_handeye(cfg, arm, cam)
        return 0
    except (
        HandEyeError,
        IntrinsicsError,
        BoardNeverSeenError,
        ArmNotSettledError,
        CalibrationFileError,
        CameraError,
        FileNotFoundError,
        InvalidCommandError,
        UnreachableError,
        LatchedFaultError,
        ConnectionError,
    ) as e:
        return _fail(f"{type(e).__name__}: {e}")


def _replace(cfg: HandEyeRunConfig, **kw: Any) -> HandEyeRunConfig:
    return dataclasses.replace(cfg, **kw)


# ----------------------------------------------------------------------------- intrinsics
@dataclass(frozen=True)
class IntrinsicsCliConfig:
    out: str = "calibration.yaml"
    source: str = "factory"  # factory (RealSense, live or recording) | images (ChArUco PNG/JPG)
    serial: str = ""
    recording: str = ""  # a .db3 to read the factory intrinsics from, instead of a camera
    width: int = 640
    height: int = 480
    fps: int = 30
    images: str = ""  # directory of ChArUco images (source=images)
    distortion: str = "k1k2"
    squares_x: int = 6
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.source not in ("factory", "images"):
            raise ValueError(f"source must be factory|images, got {self.source!r}")
        if self.source == "images" and not self.images:
            raise ValueError("source=images needs images=<directory of PNG/JPG board photos>")


def _intrinsics(overrides: list[str], flags: list[str]) -> int:
    if _help(IntrinsicsCliConfig, flags):
        return 0
    cfg = to_dataclass(IntrinsicsCliConfig, compose("calib_intrinsics", overrides))
    try:
        if cfg.source == "factory":
            from video2reward.robot.realsense import RealSenseConfig

            intr = factory_intrinsics(
                RealSenseConfig(
                    serial=cfg.serial,
                    recording=cfg.recording,
                    width=cfg.width,
                    height=cfg.height,
                    fps=cfg.fps,
                )
            )
            rec = IntrinsicsRecord(intr, "factory")
            where = f"realsense {cfg.recording or cfg.serial or '(first)'}"
        else:
            import cv2

            spec = CharucoBoardSpec(
                cfg.squares_x, cfg.squares_y, cfg.square_m, cfg.marker_m, cfg.dictionary
            )
            files = sorted(
                p
                for p in Path(cfg.images).glob("*")
                if p.suffix.lower() in (".png", ".jpg", ".jpeg")
            )
            if not files:
                return _fail(f"no PNG/JPG images in {cfg.images}")
            dets = []
            for f in files:
                img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                if img is None:
                    return _fail(f"cannot read image {f}")
                dets.append(detect_board(img, spec))
            est = estimate_intrinsics(dets, spec, IntrinsicsConfig(distortion=cfg.distortion))
            intr = est.intrinsics
            rec = IntrinsicsRecord(intr, "charuco", est.rms_px)
            where = f"charuco images {cfg.images}"
            print(
                f"{est.n_views} of {len(files)} images used, reprojection RMS {est.rms_px:.3f} px"
            )
    except (IntrinsicsError, CameraError, CalibrationFileError) as e:
        return _fail(str(e))
    update_calibration(cfg.out, where, camera=rec)
    print(
        f"intrinsics ({rec.source}): {intr.width}x{intr.height} fx {intr.fx:.2f} "
        f"fy {intr.fy:.2f} cx {intr.cx:.2f} cy {intr.cy:.2f} "
        f"coeffs {np.round(intr.coeffs, 5).tolist()}; wrote {cfg.out}"
    )
    return 0


# ----------------------------------------------------------------------------- workspace
@dataclass(frozen=True)
class WorkspaceCliConfig:
    out: str = "calibration.yaml"
    backend: str = "twin"  # twin | xarm
    ip: str = "192.168.1.208"
    corners: list[list[float]] = field(default_factory=list)  # given corners: no jogging
    # Envelope while jogging: the arm cannot leave this box, so make it contain the new one.
    jog_lo_m: Vec3 = (0.15, -0.35, 0.0)
    jog_hi_m: Vec3 = (0.60, 0.35, 0.40)
    min_extent_m: float = 0.05
    min_z_m: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in ("twin", "xarm"):
            raise ValueError(f"backend must be twin|xarm, got {self.backend!r}")


def _workspace(overrides: list[str], flags: list[str]) -> int:
    if _help(WorkspaceCliConfig, flags):
        return 0
    cfg = to_dataclass(WorkspaceCliConfig, compose("calib_workspace", overrides))
    tool_cfg = WorkspaceToolConfig(min_extent_m=cfg.min_extent_m, min_z_m=cfg.min_z_m)
    try:
        jog_box = WorkspaceBox(cfg.jog_lo_m, cfg.jog_hi_m)
    except ValueError as e:
        raise ConfigError(f"jog box: {e}") from e
    if Path(cfg.out).exists():  # a broken file must fail now, not after the jogging
        try:
            load_calibration(cfg.out)
        except CalibrationFileError as e:
            return _fail(str(e))
    if cfg.corners:
        corners = [np.asarray(c, dtype=float) for c in cfg.corners]
        where = "given corners"
    elif cfg.backend == "twin":
        from video2reward.calibration.sim_rig import TwinArm, TwinArmConfig
        from video2reward.sim.twin import XArm5Twin

        with XArm5Twin() as twin:
            twin.reset()
            arm = TwinArm(twin, TwinArmConfig(envelope=EnvelopeConfig(box=jog_box)))
            corners = jog_and_record(arm, input)
        where = "jogged corners (twin)"
    else:
        from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig

        driver = XArmDriver(XArmDriverConfig(ip=cfg.ip, envelope=EnvelopeConfig(box=jog_box)))
        with driver as arm:
            corners = jog_and_record(arm, input)
        where = f"jogged corners (xarm@{cfg.ip})"
    try:
        box = box_from_corners(corners, tool_cfg)
    except ValueError as e:
        pts = [np.round(c, 4).tolist() for c in corners]
        return _fail(f"{e}\nrecorded corners (reuse with corners=...): {pts}")
    update_calibration(cfg.out, where, workspace=box)
    print(
        f"workspace box: lo {np.round(box.lo, 4).tolist()} m, hi {np.round(box.hi, 4).tolist()}"
        f" m ({len(corners)} corners); wrote {cfg.out}"
    )
    return 0


# ----------------------------------------------------------------------------- show
def _show(overrides: list[str], flags: list[str]) -> int:
    opts = dict(o.split("=", 1) for o in overrides)
    unknown = sorted(set(opts) - {"file"})
    if unknown or "--help" in flags:
        print("usage: v2r calib show file=calibration.yaml [--json]", file=sys.stderr)
        return 2 if unknown else 0
    path = opts.get("file", "calibration.yaml")
    try:
        cal = load_calibration(path)
    except CalibrationFileError as e:
        return _fail(str(e))
    if "--json" in flags:
        print(json.dumps(to_dict(cal), indent=1))
        return 0
    print(f"{path}: format {cal.format_version}, written {cal.date_utc} by {cal.source}")
    if cal.camera is None:
        print("  camera: (none) -> v2r calib intrinsics")
    else:
        i = cal.camera.intrinsics
        rms = cal.camera.reprojection_rms_px
        print(
            f"  camera ({cal.camera.source}): {i.width}x{i.height} fx {i.fx:.2f} fy {i.fy:.2f} "
            f"cx {i.cx:.2f} cy {i.cy:.2f}" + (f", RMS {rms:.3f} px" if rms is not None else "")
        )
    if cal.extrinsics is None:
        print("  T_base_cam: (none) -> v2r calib handeye")
    else:
        ex = cal.extrinsics
        print(f"  T_base_cam: {pose_text(ex.T_base_cam)}")
        print(
            f"  board: {ex.board.squares_x}x{ex.board.squares_y} {ex.board.square_m * 1000:g} mm "
            f"{ex.board.dictionary}; residuals {ex.residuals}"
        )
    if cal.extrinsics is not None and cal.camera is not None:
        from video2reward.calibration.sim_rig import twin_camera_from_calibration

        twin_cam, roll_deg = twin_camera_from_calibration(cal)
        print(
            f"  twin camera: CameraConfig(eye_m={np.round(twin_cam.eye_m, 4).tolist()}, "
            f"target_m={np.round(twin_cam.target_m, 4).tolist()}, "
            f"fovy_deg={twin_cam.fovy_deg:.3f}); roll not representable: {roll_deg:.2f} deg"
        )
    if cal.workspace is None:
        print("  workspace: (none) -> v2r calib workspace")
    else:
        w = cal.workspace
        print(f"  workspace: lo {list(w.lo_m)} m, hi {list(w.hi_m)} m")
    return 0


def handeye_main(argv: list[str]) -> int:
    return run_cli(_handeye, argv)


def intrinsics_main(argv: list[str]) -> int:
    return run_cli(_intrinsics, argv)


def workspace_main(argv: list[str]) -> int:
    return run_cli(_workspace, argv)


def show_main(argv: list[str]) -> int:
    return run_cli(_show, argv)
