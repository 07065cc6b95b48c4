"""Depth aligned to colour -> where each pixel's surface is in the robot's base frame, as an image.

    xyz = xyz_image(depth_m, (fx, fy, cx, cy), T_base_cam, lo_m, hi_m)   # (H, W, 3) uint8
    frame = np.concatenate([rgb, xyz], axis=-1)                            # what the policy sees

A calibrated RGB-D camera (a RealSense's depth aligned to colour, the intrinsics and the
hand-eye ``T_base_cam`` of the calibration file) says, for every pixel, where the surface it
shows sits in the base frame: the frame the tool position (proprioception) and the commands
are in. One colour view leaves that position ambiguous along the camera ray, by centimetres
at the table; here it is read off the pixel. The three coordinates are quantised over a box
(the workspace with a margin: about 2-3 mm a level) so that a point map is stored, shifted,
stacked and resized exactly like a colour frame. Pixels without a depth reading (a RealSense
reports 0) are 0 in all three channels; points outside the box sit on its faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["base_points", "depth_mm", "intrinsics_at", "xyz_image"]


def depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres -> the episode store's uint16 millimetres (``keys.DEPTH``; 0: no
    reading, as a RealSense's z16), for every recorder of depth."""
    from video2reward.data import keys

    d = np.asarray(depth_m, np.float64) / keys.DEPTH_SCALE_M
    d = np.where(np.isfinite(d) & (d > 0), np.clip(np.rint(d), 0, 65535), 0)
    return d.astype(np.uint16)


def intrinsics_at(k: Mapping[str, float], width: int, height: int) -> tuple[float, ...]:
    """(fx, fy, cx, cy) for an image of ``width`` x ``height`` from intrinsics calibrated at
    ``k["width"]`` x ``k["height"]`` (the same sensor mode, scaled: a 640x480 calibration
    serves the twin's 84x84 renders of the same field of view only if the aspect matches)."""
    w0, h0 = float(k["width"]), float(k["height"])
    if abs(width / w0 - height / h0) > 1e-3 * max(width / w0, height / h0):
        raise ValueError(f"depth {width}x{height} is not a scaled {w0:g}x{h0:g} calibration")
    s = width / w0
    return (k["fx"] * s, k["fy"] * s, (k["cx"] + 0.5) * s - 0.5, (k["cy"] + 0.5) * s - 0.5)


def base_points(
    depth_m: np.ndarray, intrinsics: Sequence[float], T_base_cam: np.ndarray
) -> np.ndarray:
    """(H, W) depth in metres along the optical axis -> (H, W, 3) float32 base-frame points.

    ``intrinsics`` is (fx, fy, cx, cy) of an image of the depth's size (OpenCV pixel centres);
    ``T_base_cam`` the camera's 4x4 pose in the base frame, OpenCV axes (x right, y down,
    z forward). Pixels without a reading (0 or not finite) come out NaN."""
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"expected one (H, W) depth image, got shape {d.shape}")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    T = np.asarray(T_base_cam, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_base_cam must be 4x4, got shape {T.shape}")
    h, w = d.shape
    u = (np.arange(w, dtype=np.float32) - cx) / fx
    v = (np.arange(h, dtype=np.float32) - cy) / fy
    valid = np.isfinite(d) & (d > 0)
    z = np.where(valid, d, np.nan).astype(np.float32)
    cam = np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1)  # (H, W, 3), camera frame
    pts = cam @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
    return pts.astype(np.float32)


def xyz_image(
    depth_m: np.ndarray,
    intrinsics: Sequence[float],
    T_base_cam: np.ndarray,
    lo_m: Sequence[float],
    hi_m: Sequence[float],
) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8: base-frame x, y, z quantised over [lo_m, hi_m]
    (0 at ``lo_m``, 255 at ``hi_m``), 0 where the depth has no reading."""
    lo, hi = np.asarray(lo_m, np.float32), np.asarray(hi_m, np.float32)
    if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
        raise ValueError(f"the point map's box needs lo_m < hi_m on x, y, z; got {lo_m}, {hi_m}")
    pts = base_points(depth_m, intrinsics, T_base_cam)
    q = np.clip((pts - lo) / (hi - lo), 0.0, 1.0) * 255.0
    q = np.where(np.isfinite(q), np.rint(q), 0.0)
    return q.astype(np.uint8)
