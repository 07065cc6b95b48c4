"""ChArUco calibration board: spec, printable PNG, detection and board pose.

    spec = CharucoBoardSpec(squares_x=6, squares_y=5, square_m=0.04, marker_m=0.03)
    write_board_png(spec, "board.png", px_per_square=200)     # print at 100% scale
    det = detect_board(rgb, spec)                             # BoardDetection: corners + ids
    pose = board_pose(det, spec, K, dist)                     # BoardPose.T_cam_board (4x4)

Board frame (OpenCV's): origin at the board's top-left outer corner as printed, x along the
columns, y down the rows, z into the board (the printed side faces -z). Corner ids follow
``cv2.aruco.CharucoBoard.getChessboardCorners``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class BoardNotSeenError(ValueError):
    """Too few ChArUco corners were detected to use a view."""


@dataclass(frozen=True)
class CharucoBoardSpec:
    squares_x: int = 6  # chessboard squares along the board's x (columns)
    squares_y: int = 5  # squares along y (rows)
    square_m: float = 0.04  # printed side of one chessboard square, metres
    marker_m: float = 0.03  # printed side of one ArUco marker (inside a white square), metres
    dictionary: str = "DICT_4X4_50"  # cv2.aruco predefined dictionary name

    def __post_init__(self) -> None:
        if not (3 <= self.squares_x <= 30 and 3 <= self.squares_y <= 30):
            raise ValueError(
                f"board needs 3..30 squares per side, got {self.squares_x}x{self.squares_y}"
            )
        if not 0.002 <= self.square_m <= 0.5:
            raise ValueError(f"square_m must be in [0.002, 0.5] m, got {self.square_m}")
        if not 0.3 * self.square_m <= self.marker_m < self.square_m:
            raise ValueError(
                f"marker_m ({self.marker_m}) must be in [0.3, 1) x square_m ({self.square_m})"
            )
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(
                f"unknown ArUco dictionary {self.dictionary!r}; use a cv2.aruco name such as "
                "DICT_4X4_50, DICT_5X5_100 or DICT_6X6_250"
            )
        n_markers = (self.squares_x * self.squares_y) // 2
        dict_size = int(self._dictionary().bytesList.shape[0])
        if n_markers > dict_size:
            raise ValueError(
                f"a {self.squares_x}x{self.squares_y} board needs {n_markers} markers but "
                f"{self.dictionary} has {dict_size}; pick a larger dictionary"
            )

    def _dictionary(self) -> cv2.aruco.Dictionary:
        return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))

    def cv_board(self) -> cv2.aruco.CharucoBoard:
        return cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y), self.square_m, self.marker_m, self._dictionary()
        )

    @property
    def size_m(self) -> tuple[float, float]:
        """Printed width (x) and height (y) of the chessboard area, metres."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def corners_board_m(self) -> np.ndarray:
        """(n_corners, 3) inner chessboard corners in the board frame, indexed by corner id."""
        return np.asarray(self.cv_board().getChessboardCorners(), dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        return {
            "squares_x": self.squares_x,
            "squares_y": self.squares_y,
            "square_m": self.square_m,
            "marker_m": self.marker_m,
            "dictionary": self.dictionary,
        }


def board_image(spec: CharucoBoardSpec, px_per_square: int = 100) -> np.ndarray:
    """Greyscale image of the chessboard area only (no margin): edges are the board's edges."""
    if not 10 <= px_per_square <= 2000:
        raise ValueError(f"px_per_square must be in [10, 2000], got {px_per_square}")
    size = (spec.squares_x * px_per_square, spec.squares_y * px_per_square)
    return spec.cv_board().generateImage(size, marginSize=0, borderBits=1)


def write_board_png(spec: CharucoBoardSpec, path: str | Path, px_per_square: int = 100) -> Path:
    """Write the board as a PNG (for printing, or as a MuJoCo texture)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), board_image(spec, px_per_square)):
        raise OSError(f"could not write {p}")
    return p


@dataclass(frozen=True)
class BoardDetection:
    corners_px: np.ndarray  # (N, 2) float64 sub-pixel ChArUco corners (OpenCV pixel centres)
    ids: np.ndarray  # (N,) int corner ids (rows of CharucoBoardSpec.corners_board_m())
    image_size: tuple[int, int]  # (width, height) of the image, pixels

    @property
    def count(self) -> int:
        return int(self.ids.shape[0])


def detect_board(image: np.ndarray, spec: CharucoBoardSpec) -> BoardDetection:
    """ChArUco corners in an RGB or greyscale image; an empty detection when none are found."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif img.ndim == 2:
        gray = img
    else:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {img.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {gray.dtype}")
    corners, ids, _, _ = cv2.aruco.CharucoDetector(spec.cv_board()).detectBoard(gray)
    size = (int(gray.shape[1]), int(gray.shape[0]))
    if ids is None or len(ids) == 0:
        return BoardDetection(np.zeros((0, 2)), np.zeros(0, dtype=int), size)
    return BoardDetection(
        np.asarray(corners, dtype=np.float64).reshape(-1, 2),
        np.asarray(ids, dtype=int).reshape(-1),
        size,
    )


@dataclass(frozen=True)
class BoardPose:
    T_cam_board: np.ndarray  # (4, 4) board pose in the camera frame (OpenCV axes), metres
    rms_px: float  # reprojection RMS of the detected corners under this pose
    n_corners: int


def check_detection(det: BoardDetection, spec: CharucoBoardSpec, min_corners: int = 6) -> None:
    """Raise BoardNotSeenError unless ``det`` has enough non-collinear corners for a pose."""
    if det.count < min_corners:
        raise BoardNotSeenError(
            f"board not seen: {det.count} ChArUco corners detected, need >= {min_corners} "
            "(check that the board faces the camera, is in focus and well lit, and that the "
            f"spec matches the print: {spec.squares_x}x{spec.squares_y} {spec.dictionary})"
        )
    if spec.cv_board().checkCharucoCornersCollinear(det.ids.reshape(-1, 1).astype(np.int32)):
        raise BoardNotSeenError("the detected ChArUco corners are collinear: no pose")


def board_pose(
    det: BoardDetection,
    spec: CharucoBoardSpec,
    K: np.ndarray,
    dist: np.ndarray | None = None,
    min_corners: int = 6,
) -> BoardPose:
    """Board pose by solvePnP (IPPE for a plane, then Levenberg-Marquardt refinement)."""
    check_detection(det, spec, min_corners)
    obj = spec.corners_board_m()[det.ids]
    img = det.corners_px
    d = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, d, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise BoardNotSeenError("solvePnP found no board pose for the detected corners")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, d, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, d)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.reshape(3)
    return BoardPose(T, rms, det.count)


@dataclass(frozen=True)
class BoardMount:
    """Where the board sits on the gripper: a plate tilted about the flange y axis.

    The printed face points along flange +x and tilts up (towards the flange) by
    ``tilt_deg``; with the tool pointing down it looks outwards and upwards, at a camera
    above and beside the table. Board x runs along flange y. The hand-eye solver needs the
    board origin's height along the flange axis (``T_flange_board[2, 3]``) for a tool-down
    arm: on the lab robot, measure it on the mount.
    """

    tilt_deg: float = 45.0  # printed-face normal above the flange's horizontal plane, degrees
    center_flange_m: tuple[float, float, float] = (0.10, 0.0, 0.09)  # board centre, flange frame

    def __post_init__(self) -> None:
        if not 0.0 <= self.tilt_deg <= 90.0:
            raise ValueError(f"tilt_deg must be in [0, 90], got {self.tilt_deg}")
        if len(self.center_flange_m) != 3 or not np.all(np.isfinite(self.center_flange_m)):
            raise ValueError("center_flange_m needs 3 finite numbers (metres)")

    def T_flange_board(self, spec: CharucoBoardSpec) -> np.ndarray:
        t = np.deg2rad(self.tilt_deg)
        z_board = -np.array([np.cos(t), 0.0, -np.sin(t)])  # into the board
        x_board = np.array([0.0, 1.0, 0.0])
        y_board = np.cross(z_board, x_board)
        R = np.stack([x_board, y_board, z_board], axis=1)
        w, h = spec.size_m
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = np.asarray(self.center_flange_m) - R @ np.array([w / 2, h / 2, 0.0])
        return T
