"""The calibration file: one versioned YAML with intrinsics, T_base_cam, board and workspace.

    cal = load_calibration("configs/calibration/lab.yaml")     # CalibrationFileError if bad
    cal.camera.intrinsics.K(), cal.extrinsics.T_base_cam, cal.workspace   # each may be None
    save_calibration(dataclasses.replace(cal, workspace=box), path)       # rewrite one section

Each ``v2r calib`` command rewrites its own section and keeps the others, so the camera node,
the twin's camera placement (``calibration.sim_rig.camera_config_from_T_base_cam``) and the
workspace tools all read the same file. Matrices are row-major 4x4 lists in metres; the
camera frame uses OpenCV axes (x right, y down, z forward). Loading checks everything
(version, shapes, rigid transforms, positive focal lengths) and names the offending key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from video2reward.calibration.board import CharucoBoardSpec
from video2reward.robot.camera import CameraIntrinsics
from video2reward.robot.safety import WorkspaceBox

FORMAT_VERSION = 1


class CalibrationFileError(ValueError):
    """A calibration file that is missing, malformed or from an unknown format version."""


def check_rigid(T: np.ndarray, what: str, tol: float = 1e-6) -> np.ndarray:
    """Return ``T`` as a float (4, 4) array; raise ValueError unless it is a rigid transform."""
    M = np.asarray(T, dtype=float)
    if M.shape != (4, 4) or not np.all(np.isfinite(M)):
        raise ValueError(f"{what} must be a finite 4x4 matrix, got shape {M.shape}")
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise ValueError(f"{what}: last row must be [0, 0, 0, 1], got {M[3].tolist()}")
    R = M[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise ValueError(f"{what}: the 3x3 block is not a rotation (orthonormal, det +1)")
    if np.linalg.norm(M[:3, 3]) > 10.0:
        raise ValueError(f"{what}: translation {M[:3, 3].tolist()} m is implausibly far (> 10 m)")
    return M


@dataclass(frozen=True)
class IntrinsicsRecord:
    intrinsics: CameraIntrinsics
    source: str  # "charuco", "factory" (RealSense), "handeye" (refined with the robot), "twin"
    reprojection_rms_px: float | None = None

    def __post_init__(self) -> None:
        i = self.intrinsics
        if not (i.width > 0 and i.height > 0 and i.fx > 0 and i.fy > 0):
            raise ValueError("camera width, height, fx and fy must be positive")
        if not (0 <= i.cx < i.width and 0 <= i.cy < i.height):
            raise ValueError(f"principal point ({i.cx}, {i.cy}) lies outside the image")
        if len(i.coeffs) != 5 or not np.all(np.isfinite(i.coeffs)):
            raise ValueError("camera coeffs must be 5 finite numbers (k1 k2 p1 p2 k3)")
        if self.source not in ("charuco", "factory", "handeye", "twin"):
            raise ValueError(f"camera source must be charuco/factory/handeye/twin: {self.source}")


@dataclass(frozen=True)
class ExtrinsicsRecord:
    T_base_cam: np.ndarray  # (4, 4) camera in the robot base frame, metres
    T_flange_board: np.ndarray  # (4, 4) board on the flange, metres
    board: CharucoBoardSpec
    board_z_flange_m: float | None  # the height prior used (tool-down arms), None if none
    residuals: dict[str, Any]  # HandEyeResult.summary(): RMS px, mm, deg, views, 1-sigma

    def __post_init__(self) -> None:
        object.__setattr__(self, "T_base_cam", check_rigid(self.T_base_cam, "T_base_cam"))
        object.__setattr__(
            self, "T_flange_board", check_rigid(self.T_flange_board, "T_flange_board")
        )


@dataclass(frozen=True)
class CalibrationResult:
    date_utc: str  # ISO 8601, when the file was last written
    source: str  # what wrote the file last, e.g. "xarm@192.168.1.208 + realsense 1234" or "twin"
    camera: IntrinsicsRecord | None = None
    extrinsics: ExtrinsicsRecord | None = None
    workspace: WorkspaceBox | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (this code reads "
                f"{FORMAT_VERSION}); re-run the calibration or convert the file"
            )


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _mat(T: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(T)]


def to_dict(cal: CalibrationResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format_version": cal.format_version,
        "date_utc": cal.date_utc,
        "source": cal.source,
        "camera": None,
        "extrinsics": None,
        "workspace": None,
    }
    if cal.camera is not None:
        i = cal.camera.intrinsics
        out["camera"] = {
            "width": i.width,
            "height": i.height,
            "fx": float(i.fx),
            "fy": float(i.fy),
            "cx": float(i.cx),
            "cy": float(i.cy),
            "distortion_model": i.distortion_model,
            "coeffs": [float(c) for c in i.coeffs],
            "source": cal.camera.source,
            "reprojection_rms_px": cal.camera.reprojection_rms_px,
        }
    if cal.extrinsics is not None:
        e = cal.extrinsics
        out["extrinsics"] = {
            "T_base_cam": _mat(e.T_base_cam),
            "T_flange_board": _mat(e.T_flange_board),
            "board": e.board.to_dict(),
            "board_z_flange_m": e.board_z_flange_m,
            "residuals": e.residuals,
        }
    if cal.workspace is not None:
        out["workspace"] = {
            "lo_m": [float(v) for v in cal.workspace.lo_m],
            "hi_m": [float(v) for v in cal.workspace.hi_m],
        }
    return out


def save_calibration(cal: CalibrationResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "# Video2Reward calibration (v2r calib ...). Matrices: row-major, metres.\n"
    text += yaml.safe_dump(to_dict(cal), sort_keys=False, default_flow_style=None)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)  # atomic: a crash never leaves half a calibration behind
    return p


def _section(raw: dict[str, Any], key: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    sec = raw.get(key)
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise ValueError(f"'{key}' must be a mapping, got {type(sec).__name__}")
    missing = [f for f in fields if f not in sec]
    if missing:
        raise ValueError(f"'{key}' is missing {missing}")
    unknown = sorted(set(sec) - set(fields) - {"distortion_model", "reprojection_rms_px"})
    if unknown:
        raise ValueError(f"'{key}' has unknown keys {unknown}")
    return sec


def from_dict(raw: Any) -> CalibrationResult:
    if not isinstance(raw, dict):
        raise ValueError("the file must hold a YAML mapping")
    if "format_version" not in raw:
        raise ValueError("missing 'format_version' (not a v2r calibration file?)")
    if raw["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"format_version {raw['format_version']!r} is not supported (expected "
            f"{FORMAT_VERSION}); re-run the calibration or convert the file"
        )
    unknown = sorted(
        set(raw) - {"format_version", "date_utc", "source", "camera", "extrinsics", "workspace"}
    )
    if unknown:
        raise ValueError(f"unknown top-level keys {unknown}")
    camera = None
    cam = _section(raw, "camera", ("width", "height", "fx", "fy", "cx", "cy", "coeffs", "source"))
    if cam is not None:
        intr = CameraIntrinsics(
            int(cam["width"]),
            int(cam["height"]),
            float(cam["fx"]),
            float(cam["fy"]),
            float(cam["cx"]),
            float(cam["cy"]),
            distortion_model=str(cam.get("distortion_model", "plumb_bob")),
            coeffs=tuple(float(c) for c in cam["coeffs"]),
        )
        rms = cam.get("reprojection_rms_px")
        camera = IntrinsicsRecord(intr, str(cam["source"]), None if rms is None else float(rms))
    extr = None
    ex = _section(
        raw,
        "extrinsics",
        ("T_base_cam", "T_flange_board", "board", "board_z_flange_m", "residuals"),
    )
    if ex is not None:
        if not isinstance(ex["board"], dict):
            raise ValueError("'extrinsics.board' must be a mapping of the board spec")
        z = ex["board_z_flange_m"]
        extr = ExtrinsicsRecord(
            T_base_cam=np.asarray(ex["T_base_cam"], dtype=float),
            T_flange_board=np.asarray(ex["T_flange_board"], dtype=float),
            board=CharucoBoardSpec(**ex["board"]),
            board_z_flange_m=None if z is None else float(z),
            residuals=dict(ex["residuals"] or {}),
        )
    ws = _section(raw, "workspace", ("lo_m", "hi_m"))
    box = None
    if ws is not None:
        box = WorkspaceBox(
            lo_m=tuple(float(v) for v in ws["lo_m"]),
            hi_m=tuple(float(v) for v in ws["hi_m"]),
        )
    return CalibrationResult(
        date_utc=str(raw.get("date_utc", "")),
        source=str(raw.get("source", "")),
        camera=camera,
        extrinsics=extr,
        workspace=box,
    )


def load_calibration(path: str | Path) -> CalibrationResult:
    p = Path(path)
    if not p.is_file():
        raise CalibrationFileError(f"calibration file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CalibrationFileError(f"{p} is not valid YAML: {e}") from e
    try:
        return from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CalibrationFileError(f"{p}: {e}") from e


def driver_workspace(
    calibration: str | Path, lo_m: Sequence[float], hi_m: Sequence[float]
) -> tuple[WorkspaceBox, str]:
    """The box the arm's envelope uses, and where it came from: the calibration file's
    workspace (``v2r calib workspace``) when a file is given, else ``lo_m``/``hi_m``. A file
    without a workspace section is refused: the arm must not silently fall back to a default
    box the operator did not measure."""
    if not str(calibration):
        return WorkspaceBox(lo_m=tuple(lo_m), hi_m=tuple(hi_m)), "parameters"
    cal = load_calibration(calibration)
    if cal.workspace is None:
        raise CalibrationFileError(
            f"{calibration} has no workspace section: run `v2r calib workspace out={calibration}`"
        )
    return cal.workspace, f"{calibration} ({cal.source}, {cal.date_utc})"


def camera_pose(calibration: str | Path | None, depth: bool = False) -> np.ndarray | None:
    """The hand-eye ``T_base_cam`` of a calibration file (``v2r calib handeye``), None without
    a file or when it has no extrinsics section: what recorders store with depth so its pixels
    can be placed in the base frame. ``depth`` (the recording will hold depth) refuses both."""
    cal = load_calibration(calibration) if calibration else None
    pose = None if cal is None or cal.extrinsics is None else cal.extrinsics.T_base_cam
    if depth and pose is None:
        where = (f"{calibration} has no hand-eye extrinsics (v2r calib handeye)" if calibration
                 else "no calibration file was given (the node's calibration:=, v2r record "
                 "teleop's calibration=)")  # fmt: skip
        raise ValueError(f"recording depth needs the camera's hand-eye T_base_cam, but {where}: "
                         "recorded depth must come with the camera's pose")
    return pose


def update_calibration(path: str | Path, source: str, **sections: Any) -> CalibrationResult:
    """Rewrite some sections (camera=, extrinsics=, workspace=) and keep the rest of the file."""
    p = Path(path)
    base = load_calibration(p) if p.exists() else CalibrationResult(date_utc="", source="")
    cal = dataclasses.replace(base, date_utc=now_utc(), source=source, **sections)
    save_calibration(cal, p)
    return cal
