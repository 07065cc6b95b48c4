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


# --------------------------------------------------------------------------- camera messages
# Colour encodings camera drivers publish (sensor_msgs/image_encodings.hpp names): bytes per
# pixel and the OpenCV conversion to RGB (None: already RGB). Plain numpy, no ROS: the nodes
# (ros/convert.py) and the bag reader (ros/bag.py, which runs without ROS) both decode here.
_TO_RGB: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}
IMAGE_ENCODINGS = tuple(_TO_RGB)


def rgb_from_raw(encoding: str, height: int, width: int, step: int, data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a raw image message's fields: a view of ``data`` for rgb8,
    converted once for bgr8, rgba8, bgra8 and mono8; other encodings are refused."""
    if encoding not in _TO_RGB:
        raise ValueError(f"image encoding {encoding!r} is not supported; "
                         f"publish one of {', '.join(IMAGE_ENCODINGS)}")  # fmt: skip
    channels, code = _TO_RGB[encoding]
    row = width * channels
    if step < row or len(data) < height * step:
        raise ValueError(f"{encoding} image of {width}x{height} needs step >= {row} and "
                         f"{height} rows; got step {step}, {len(data)} bytes")  # fmt: skip
    buf = np.frombuffer(data, dtype=np.uint8)[: height * step]
    px = buf.reshape(height, step)[:, :row].reshape(height, width, channels)
    return px if code is None else cv2.cvtColor(px, code)


def rgb_from_compressed(fmt: str, data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a compressed image message (jpeg or png, as image_transport's
    compressed plugin publishes them); ``fmt`` is the message's format field."""
    low = fmt.lower()
    if "depth" in low:
        raise ValueError(f"compressed image format {fmt!r} is a depth image, not colour")
    if "jpeg" not in low and "jpg" not in low and "png" not in low:
        raise ValueError(f"compressed image format {fmt!r} is not supported (jpeg, png)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"compressed image ({fmt}, {len(data)} bytes) does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
