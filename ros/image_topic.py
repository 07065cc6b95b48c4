"""The camera stream a node listens to, raw or compressed, subscribed and converted in one place.

    PARAMS = (..., IMAGE_TRANSPORT)                 # the node's "image_transport" parameter
    subscribe_image(node, p["image_transport"], on_rgb, qos)
    def on_rgb(rgb: np.ndarray, msg: Image | CompressedImage) -> None: ...   # (H, W, 3) RGB

``raw``: sensor_msgs/Image on ``image`` in any encoding ``ros.convert.image_from_msg`` accepts
(rgb8, bgr8, rgba8, bgra8, mono8). ``compressed``: sensor_msgs/CompressedImage (jpeg or png)
on the same topic name ``image``; remap it to the camera's compressed topic, e.g.
``-r image:=/camera/color/image_raw/compressed`` (what image_transport's compressed plugin
publishes). A frame that does not convert is dropped with a throttled error naming the
problem; it never reaches the callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeAlias

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image
from video2reward.ros.convert import compressed_image_from_msg, depth_from_msg, image_from_msg

ImageMsg: TypeAlias = Image | CompressedImage
TRANSPORTS = ("raw", "compressed")
IMAGE_TRANSPORT = (
    "image_transport",
    "raw",
    "raw (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8) | compressed "
    "(sensor_msgs/CompressedImage: jpeg, png), both on the topic `image`",
    None,
    True,
)


def subscribe_image(
    node: Node,
    transport: str,
    on_rgb: Callable[[np.ndarray, ImageMsg], None],
    qos: QoSProfile | int = 10,
) -> None:
    """Subscribe ``node`` to ``image`` as ``transport``; ``on_rgb`` gets each frame as RGB."""
    if transport not in TRANSPORTS:
        raise ValueError(f"image_transport must be one of {TRANSPORTS}, got {transport!r}")
    log = node.get_logger()

    def convert(msg: ImageMsg) -> None:
        try:
            rgb = image_from_msg(msg) if isinstance(msg, Image) else compressed_image_from_msg(msg)
        except ValueError as e:
            log.error(f"dropping image: {e}", throttle_duration_sec=5.0)
            return
        on_rgb(rgb, msg)

    typ = Image if transport == "raw" else CompressedImage
    node.create_subscription(typ, "image", convert, qos)


def subscribe_depth(node: Node, on_depth: Callable[[np.ndarray, Image], None],
                    qos: QoSProfile | int = 10) -> None:  # fmt: skip
    """Subscribe ``node`` to ``depth`` (sensor_msgs/Image aligned to colour: 32FC1 metres or
    16UC1 millimetres); ``on_depth`` gets (H, W) float32 metres. A frame that does not
    convert is dropped with a throttled error."""
    log = node.get_logger()

    def convert(msg: Image) -> None:
        try:
            depth = depth_from_msg(msg)
        except ValueError as e:
            log.error(f"dropping depth: {e}", throttle_duration_sec=5.0)
            return
        on_depth(depth, msg)

    node.create_subscription(Image, "depth", convert, qos)


class StampPairs:
    """Colour frames and their aligned depth come on two topics with the same stamp (a
    RealSense with rs.align, the twin): :meth:`add` either one, and the colour frame is
    handed back with its depth once both have come, whichever came first. Unmatched frames
    older than ``max_age_ns`` behind the newest are forgotten. Thread-safe."""

    def __init__(self, max_age_ns: int = 1_000_000_000):
        self.max_age_ns = max_age_ns
        self._lock = threading.Lock()
        self._waiting: dict[str, dict[int, np.ndarray]] = {"rgb": {}, "depth": {}}

    def add(self, kind: str, stamp_ns: int, array: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
        """``kind`` "rgb" or "depth"; (rgb, depth) when this completes a pair, else None."""
        other = "depth" if kind == "rgb" else "rgb"
        with self._lock:
            mate = self._waiting[other].pop(stamp_ns, None)
            if mate is None:
                self._waiting[kind][stamp_ns] = array
                for waiting in self._waiting.values():
                    for old in [t for t in waiting if t < stamp_ns - self.max_age_ns]:
                        del waiting[old]
                return None
        return (array, mate) if kind == "rgb" else (mate, array)
