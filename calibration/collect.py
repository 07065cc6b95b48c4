"""Automatic hand-eye collection: move the arm through safe poses, capture and detect the board.

    with XArmDriver(XArmDriverConfig(ip=...)) as arm, RealSenseCamera() as cam:   # or TwinRig
        run = collect_views(arm, cam, spec, CollectConfig(box=box))
        res = solve_handeye(run.handeye_views(), spec, K, dist, HandEyeConfig(board_z_flange_m=..))

Everything moves through ``robot.arm.Arm.move_to`` (the driver's position mode, its
workspace-box check and fault handling): poses are chosen inside ``box`` shrunk by
``margin_m`` and the arm refuses any other. The xArm5 keeps the tool pointing down, so the
pose set varies what it can: positions over a 3 x 3 x ``z_levels`` lattice of the box (the
translations that fix the camera's horizontal position and orientation) and the tool yaw
(joint 5) around the yaw at which the tilted board faces the camera (found by a sweep when
not given). The camera height comes from the mount (see ``calibration.handeye``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from video2reward.calibration.board import BoardDetection, CharucoBoardSpec, detect_board
from video2reward.calibration.handeye import HandEyeView
from video2reward.robot.arm import Arm
from video2reward.robot.camera import Camera
from video2reward.robot.kinematics import fk
from video2reward.robot.safety import WorkspaceBox


class BoardNeverSeenError(RuntimeError):
    """The yaw sweep found no tool yaw at which the camera sees the board."""


class ArmNotSettledError(RuntimeError):
    """The arm kept moving while an image was captured."""


@dataclass(frozen=True)
class CollectConfig:
    box: WorkspaceBox = field(default_factory=WorkspaceBox)  # the arm's workspace (TCP), metres
    margin_m: float = 0.03  # poses stay this far inside the box
    z_levels: int = 2  # heights of the pose lattice (3 x 3 positions per height)
    n_views: int = 18  # poses visited (<= 9 * z_levels; spread evenly over the lattice)
    facing_yaw_deg: float | None = None  # tool yaw at which the board faces the camera; None: sweep
    yaw_spread_deg: float = 35.0  # poses turn the tool by up to +- this around the facing yaw
    sweep_step_deg: float = 30.0  # yaw step of the facing-yaw sweep
    min_corners: int = 8  # a view with fewer ChArUco corners counts as "board not seen"
    flush_frames: int = 1  # frames dropped after each move (camera queues hold stale frames)
    keep_images: bool = False  # keep the RGB images in the result (debugging, saving)
    # A capture counts when the joints moved less than this between the reads around it
    # (2e-4 rad moves a board 0.5 m out by 0.1 mm); otherwise wait and capture again.
    settle_tol_rad: float = 2e-4
    settle_wait_s: float = 0.2
    settle_retries: int = 10

    def __post_init__(self) -> None:
        extent = self.box.hi - self.box.lo
        if not self.margin_m >= 0.0 or np.any(extent - 2 * self.margin_m < 0.05):
            raise ValueError(
                f"margin_m {self.margin_m} leaves less than 5 cm of the box {extent.round(3)} "
                "on some axis; lower margin_m or enlarge the workspace box"
            )
        if not 1 <= self.z_levels <= 4:
            raise ValueError(f"z_levels must be in [1, 4], got {self.z_levels}")
        if not 3 <= self.n_views <= 9 * self.z_levels:
            raise ValueError(f"n_views must be in [3, {9 * self.z_levels}], got {self.n_views}")
        if not 5.0 <= self.yaw_spread_deg <= 90.0:
            raise ValueError(f"yaw_spread_deg must be in [5, 90], got {self.yaw_spread_deg}")
        if not 5.0 <= self.sweep_step_deg <= 90.0:
            raise ValueError(f"sweep_step_deg must be in [5, 90], got {self.sweep_step_deg}")
        if self.min_corners < 4 or not 0 <= self.flush_frames <= 30:
            raise ValueError("min_corners must be >= 4 and flush_frames in [0, 30]")
        if not (self.settle_tol_rad > 0 and self.settle_wait_s >= 0 and self.settle_retries >= 1):
            raise ValueError("settle_tol_rad > 0, settle_wait_s >= 0 and settle_retries >= 1")


@dataclass(frozen=True)
class PoseTarget:
    p_base_tcp_m: np.ndarray  # (3,)
    yaw_rad: float


@dataclass(frozen=True)
class CollectedView:
    target: PoseTarget
    q_rad: np.ndarray  # (5,) measured joints after the move
    T_base_flange: np.ndarray  # (4, 4) FK of the measured joints
    detection: BoardDetection
    image: np.ndarray | None  # RGB, when keep_images


@dataclass(frozen=True)
class CollectRun:
    views: list[CollectedView]
    facing_yaw_rad: float
    image_size: tuple[int, int]  # (width, height)
    duration_s: float

    def seen(self, min_corners: int) -> list[CollectedView]:
        return [v for v in self.views if v.detection.count >= min_corners]

    def handeye_views(self) -> list[HandEyeView]:
        return [HandEyeView(v.T_base_flange, v.detection) for v in self.views]


def pose_set(config: CollectConfig, facing_yaw_rad: float) -> list[PoseTarget]:
    """Lattice positions in the shrunk box, visited in a serpentine, with varied tool yaws.

    Yaw offsets cycle through 4 values while the lattice rows have 3 positions, so each row,
    column and height sees several yaws (translation and rotation are not confounded).
    """
    lo = config.box.lo + config.margin_m
    hi = config.box.hi - config.margin_m
    xs = np.linspace(lo[0], hi[0], 3)
    ys = np.linspace(lo[1], hi[1], 3)
    zs = np.linspace(hi[2], lo[2], config.z_levels) if config.z_levels > 1 else [hi[2]]
    lattice: list[np.ndarray] = []
    for iz, z in enumerate(zs):
        for ix, x in enumerate(xs if iz % 2 == 0 else xs[::-1]):
            row = ys if (ix + iz) % 2 == 0 else ys[::-1]
            lattice.extend(np.array([x, y, z]) for y in row)
    pick = np.round(np.linspace(0, len(lattice) - 1, config.n_views)).astype(int)
    offsets = np.deg2rad(config.yaw_spread_deg) * np.array([-1.0, 1.0 / 3, 1.0, -1.0 / 3])
    return [
        PoseTarget(lattice[k], float(facing_yaw_rad + offsets[n % len(offsets)]))
        for n, k in enumerate(pick)
    ]


def _capture(camera: Camera, flush_frames: int) -> np.ndarray:
    for _ in range(flush_frames):
        camera.read()
    return camera.read().color


def _visit(
    arm: Arm, camera: Camera, spec: CharucoBoardSpec, target: PoseTarget, config: CollectConfig
) -> CollectedView:
    arm.move_to(target.p_base_tcp_m, target.yaw_rad)
    # The joints are read just before and just after the image: if they differ, the arm was
    # still settling (servo lag after a move) and the pair would not describe one pose.
    for _ in range(config.settle_retries):
        q0 = np.asarray(arm.state().joint_pos_rad, dtype=float)
        rgb = _capture(camera, config.flush_frames)
        q = np.asarray(arm.state().joint_pos_rad, dtype=float)
        if float(np.max(np.abs(q - q0))) <= config.settle_tol_rad:
            break
        time.sleep(config.settle_wait_s)
    else:
        raise ArmNotSettledError(
            f"the arm kept moving at {target.p_base_tcp_m.round(3).tolist()} (joints changed by "
            f"{np.max(np.abs(q - q0)):.2e} rad during a capture); check for vibration"
        )
    return CollectedView(
        target, q, fk(q), detect_board(rgb, spec), rgb if config.keep_images else None
    )


def _facing_score(det: BoardDetection, min_corners: int) -> float:
    """Image area (px^2) of the detected corners' hull: largest when the board faces the camera."""
    if det.count < min_corners:
        return 0.0
    hull = cv2.convexHull(det.corners_px.astype(np.float32))
    return float(cv2.contourArea(hull))


def find_facing_yaw(
    arm: Arm, camera: Camera, spec: CharucoBoardSpec, config: CollectConfig
) -> float:
    """Sweep the tool yaw at the centre of the box; the yaw at which the board looks largest.

    Corner counts saturate over a wide range of yaws, so the score is the image area of the
    detected corners, which peaks when the board faces the camera.
    """
    p = config.box.center.copy()
    yaws = np.deg2rad(np.arange(-180.0, 180.0, config.sweep_step_deg))
    dets = [_visit(arm, camera, spec, PoseTarget(p, float(y)), config).detection for y in yaws]
    scores = [_facing_score(d, config.min_corners) for d in dets]
    best = int(np.argmax(scores))
    if scores[best] <= 0.0:
        raise BoardNeverSeenError(
            f"board not seen at any tool yaw from the centre of the box {p.round(3)} "
            f"(most corners: {max(d.count for d in dets)}); check that the camera looks at the "
            "workspace and the board spec matches the mounted board"
        )
    # Refine between the neighbours: the vertex of a parabola through three scores.
    s0, s1, s2 = scores[best - 1], scores[best], scores[(best + 1) % len(scores)]
    denom = s0 - 2 * s1 + s2
    shift = 0.5 * (s0 - s2) / denom if denom != 0 else 0.0
    return float(yaws[best] + np.clip(shift, -0.5, 0.5) * np.deg2rad(config.sweep_step_deg))


def collect_views(
    arm: Arm, camera: Camera, spec: CharucoBoardSpec, config: CollectConfig | None = None
) -> CollectRun:
    """Visit the pose set, capturing and detecting at each pose; returns every view."""
    cfg = config or CollectConfig()
    t0 = time.monotonic()
    if cfg.facing_yaw_deg is None:
        facing = find_facing_yaw(arm, camera, spec, cfg)
    else:
        facing = float(np.deg2rad(cfg.facing_yaw_deg))
    views = [_visit(arm, camera, spec, target, cfg) for target in pose_set(cfg, facing)]
    size = views[0].detection.image_size
    return CollectRun(views, facing, size, time.monotonic() - t0)


RUN_FORMAT_VERSION = 1


def save_run(run: CollectRun, directory: str | Path) -> Path:
    """Images (PNG) and measured joints (views.yaml), to solve again without the robot."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, v in enumerate(run.views):
        if v.image is None:
            raise ValueError("save_run needs the images: collect with keep_images=True")
        name = f"view_{k:03d}.png"
        if not cv2.imwrite(str(d / name), cv2.cvtColor(v.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {d / name}")
        entries.append(
            {
                "image": name,
                "q_rad": [float(a) for a in v.q_rad],
                "target_p_base_tcp_m": [float(a) for a in v.target.p_base_tcp_m],
                "target_yaw_rad": float(v.target.yaw_rad),
            }
        )
    doc = {
        "format_version": RUN_FORMAT_VERSION,
        "image_size": list(run.image_size),
        "facing_yaw_rad": float(run.facing_yaw_rad),
        "views": entries,
    }
    (d / "views.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def load_run(directory: str | Path, spec: CharucoBoardSpec) -> CollectRun:
    """A run saved by ``save_run``; the board is detected again in every image."""
    d = Path(directory)
    index = d / "views.yaml"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: not a directory written by save_run")
    doc = yaml.safe_load(index.read_text())
    if not isinstance(doc, dict) or doc.get("format_version") != RUN_FORMAT_VERSION:
        raise ValueError(f"{index}: expected format_version {RUN_FORMAT_VERSION}")
    views = []
    for e in doc["views"]:
        bgr = cv2.imread(str(d / e["image"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read {d / e['image']}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        q = np.asarray(e["q_rad"], dtype=float)
        target = PoseTarget(np.asarray(e["target_p_base_tcp_m"], float), e["target_yaw_rad"])
        views.append(CollectedView(target, q, fk(q), detect_board(rgb, spec), rgb))
    w, h = doc["image_size"]
    return CollectRun(views, float(doc["facing_yaw_rad"]), (int(w), int(h)), 0.0)
