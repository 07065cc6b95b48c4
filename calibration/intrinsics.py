"""Camera intrinsics: estimated from ChArUco views, or the RealSense factory calibration.

    res = estimate_intrinsics([detect_board(img, spec) for img in images], spec)
    res.intrinsics.K(), res.intrinsics.coeffs, res.rms_px        # OpenCV pinhole + distortion
    intr = factory_intrinsics(RealSenseConfig(recording="run.db3"))  # live camera or a .db3

``estimate_intrinsics`` runs ``cv2.calibrateCamera`` on the ChArUco corners (board-frame
3D points matched by id). Views need the board at different tilts and image positions;
``distortion`` chooses how many coefficients are free: the D435 colour stream is close to
distortion-free (factory coefficients are zero), so "k1k2" is the default and "none" gives
the most stable focal length from few views.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from video2reward.calibration.board import BoardDetection, CharucoBoardSpec
from video2reward.robot.camera import CameraIntrinsics
from video2reward.robot.realsense import RealSenseCamera, RealSenseConfig

DISTORTION_MODELS = ("none", "k1k2", "k1k2k3", "full")


class IntrinsicsError(ValueError):
    """The views cannot determine the intrinsics; the message says what to change."""


@dataclass(frozen=True)
class IntrinsicsConfig:
    min_views: int = 8  # views with the board seen
    min_corners: int = 8  # corners for a view to count
    distortion: str = "k1k2"  # free distortion coefficients: none | k1k2 | k1k2k3 | full
    max_rms_px: float = 1.0  # refuse a calibration whose reprojection RMS is above this

    def __post_init__(self) -> None:
        if self.min_views < 3 or self.min_corners < 6:
            raise ValueError("min_views must be >= 3 and min_corners >= 6")
        if self.distortion not in DISTORTION_MODELS:
            raise ValueError(
                f"distortion must be one of {DISTORTION_MODELS}, got {self.distortion!r}"
            )
        if not self.max_rms_px > 0:
            raise ValueError(f"max_rms_px must be positive, got {self.max_rms_px}")


@dataclass(frozen=True)
class IntrinsicsResult:
    intrinsics: CameraIntrinsics
    rms_px: float  # reprojection RMS over all corners of the used views
    per_view_rms_px: np.ndarray
    n_views: int
    source: str  # "charuco" or "factory"


_FLAGS = {
    "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2k3": cv2.CALIB_ZERO_TANGENT_DIST,
    "full": 0,
}


def estimate_intrinsics(
    detections: list[BoardDetection],
    spec: CharucoBoardSpec,
    config: IntrinsicsConfig | None = None,
) -> IntrinsicsResult:
    cfg = config or IntrinsicsConfig()
    used = [d for d in detections if d.count >= cfg.min_corners]
    if len(used) < cfg.min_views:
        raise IntrinsicsError(
            f"too few views: the board was seen (>= {cfg.min_corners} corners) in {len(used)} "
            f"of {len(detections)} images, need >= {cfg.min_views}"
        )
    sizes = {d.image_size for d in used}
    if len(sizes) != 1:
        raise IntrinsicsError(f"all images must have the same size, got {sorted(sizes)}")
    (w, h) = sizes.pop()
    corners = spec.corners_board_m().astype(np.float32)
    obj = [corners[d.ids].reshape(-1, 1, 3) for d in used]
    img = [d.corners_px.astype(np.float32).reshape(-1, 1, 2) for d in used]
    # The pinhole starting point matters for planar targets: a focal length from the image
    # size (~55 deg horizontal field of view) instead of OpenCV's homography guess.
    f0 = 0.9 * w
    K0 = np.array([[f0, 0.0, (w - 1) / 2.0], [0.0, f0, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    flags = _FLAGS[cfg.distortion] | cv2.CALIB_USE_INTRINSIC_GUESS
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(
        obj, img, (w, h), K0, np.zeros(5), flags=flags, criteria=crit
    )
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError("calibration diverged: add views with the board tilted differently")
    if rms > cfg.max_rms_px:
        raise IntrinsicsError(
            f"reprojection RMS {rms:.2f} px exceeds {cfg.max_rms_px} px: check the board spec "
            "(square and marker sizes) and remove blurred images"
        )
    intr = CameraIntrinsics(
        int(w),
        int(h),
        float(K[0, 0]),
        float(K[1, 1]),
        float(K[0, 2]),
        float(K[1, 2]),
        coeffs=tuple(float(c) for c in np.asarray(dist).ravel()[:5]),
    )
    return IntrinsicsResult(intr, float(rms), np.asarray(per_view).ravel(), len(used), "charuco")


def factory_intrinsics(config: RealSenseConfig) -> CameraIntrinsics:
    """The colour stream's factory intrinsics (pyrealsense2 stream profile), live or recorded."""
    cam = RealSenseCamera(config)
    cam.connect()
    try:
        return cam.intrinsics()
    finally:
        cam.close()
