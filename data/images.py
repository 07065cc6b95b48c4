"""The one way an image becomes a model input: centre square crop, then resize.

    from video2reward.data.images import prepare_frame, prepare_frames
    x = prepare_frame(rgb, 84)              # (480, 640, 3) uint8 -> (84, 84, 3) uint8
    xs = prepare_frames(video, 84)          # (T, H, W, 3) uint8 -> (T, 84, 84, 3) uint8

Every door an image comes in by uses it: video import, the readers of recordings (reward
training), reward scoring (``v2r reward score``, the reward node's stream), the learner (in
process and in the learner node) and the twin trainer's observer. The twin renders the centre
square of its 640x480 view, so a RealSense frame cropped here shows the scene the way
twin-trained and video-imported rewards saw it; squashing 4:3 to 1:1 would not.

Shrinking uses area interpolation (each output pixel averages the pixels it covers, so a
small target or the gripper stays visible at 84 px); enlarging uses bilinear. A square frame
already at the size is returned as it is (a contiguous array, no copy when it already is one).
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_square(frames: np.ndarray) -> np.ndarray:
    """The centre square of (..., H, W, C) frames: a view, side min(H, W).

    An odd leftover goes to the bottom/right (offset ``(H - S) // 2``), as the twin's render
    and video import have always cut it.
    """
    h, w = frames.shape[-3], frames.shape[-2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return frames[..., y0 : y0 + s, x0 : x0 + s, :]


def _resize_square(square: np.ndarray, size_px: int) -> np.ndarray:
    # area averaging when shrinking; INTER_AREA when enlarging is close to nearest neighbour
    interp = cv2.INTER_AREA if square.shape[0] > size_px else cv2.INTER_LINEAR
    return cv2.resize(square, (size_px, size_px), interpolation=interp)


def prepare_frame(rgb: np.ndarray, size_px: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size_px, size_px, 3) uint8: centre square crop, then resize."""
    if rgb.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) frame, got shape {rgb.shape}")
    square = crop_square(rgb)
    if square.shape[0] == size_px:
        return np.ascontiguousarray(square)
    return _resize_square(square, size_px)


def prepare_frames(frames: np.ndarray, size_px: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size_px, size_px, 3) uint8, each frame as :func:`prepare_frame`."""
    if frames.ndim != 4:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    square = crop_square(frames)
    if square.shape[1] == size_px:
        return np.ascontiguousarray(square)
    if len(square) == 0:
        return np.zeros((0, size_px, size_px, frames.shape[-1]), frames.dtype)
    return np.stack([_resize_square(f, size_px) for f in square])
