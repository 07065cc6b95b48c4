"""Images in the encodings common camera drivers publish become the same RGB array, in the one
conversion module every node uses (reward, learner, recorder, calibration)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _raw(pixels: np.ndarray, encoding: str, pad: int = 0):  # type: ignore[no-untyped-def]
    from sensor_msgs.msg import Image

    h, w = pixels.shape[:2]
    px = pixels.reshape(h, w, -1)
    rows = np.zeros((h, w * px.shape[2] + pad), np.uint8)  # a driver may pad each row
    rows[:, : w * px.shape[2]] = px.reshape(h, -1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


def test_every_colour_encoding_gives_the_same_rgb() -> None:
    from video2reward.data.images import IMAGE_ENCODINGS
    from video2reward.ros.convert import image_from_msg, image_msg

    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    alpha = np.full((12, 10, 1), 200, np.uint8)
    as_sent = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    for enc, px in as_sent.items():
        for pad in (0, 4):
            np.testing.assert_array_equal(image_from_msg(_raw(px, enc, pad)), rgb, err_msg=enc)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(image_from_msg(_raw(grey, "mono8")), np.stack([grey] * 3, 2))
    assert set(as_sent) | {"mono8"} == set(IMAGE_ENCODINGS)
    np.testing.assert_array_equal(image_from_msg(image_msg(rgb, 1.0, "cam")), rgb)

    with pytest.raises(ValueError, match=r"'yuv422'.*rgb8, bgr8"):
        image_from_msg(_raw(rgb, "yuv422"))
    short = _raw(rgb, "bgr8")
    short.data = short.data[: len(short.data) // 2]
    with pytest.raises(ValueError, match="needs step"):
        image_from_msg(short)


def test_compressed_images_decode_to_rgb() -> None:
    from sensor_msgs.msg import CompressedImage
    from video2reward.ros.convert import compressed_image_from_msg

    yy, xx = np.mgrid[0:32, 0:40]
    rgb = np.stack([xx * 6, yy * 7, (xx + yy) * 3], axis=2).astype(np.uint8)  # smooth: jpeg-able
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    png = CompressedImage(format="rgb8; png compressed bgr8")
    png.data = cv2.imencode(".png", bgr)[1].tobytes()
    np.testing.assert_array_equal(compressed_image_from_msg(png), rgb)  # lossless
    jpg = CompressedImage(format="jpeg")
    jpg.data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    got = compressed_image_from_msg(jpg)
    assert got.shape == rgb.shape
    assert np.abs(got.astype(int) - rgb).mean() < 3.0  # jpeg at quality 95

    bad = CompressedImage(format="jpeg")
    bad.data = b"not a jpeg"
    with pytest.raises(ValueError, match="does not decode"):
        compressed_image_from_msg(bad)
    with pytest.raises(ValueError, match="not supported"):
        compressed_image_from_msg(CompressedImage(format="theora"))
    with pytest.raises(ValueError, match="depth"):
        compressed_image_from_msg(CompressedImage(format="16UC1; compressedDepth png"))


@pytest.mark.parametrize("transport", ["raw", "compressed"])  # bgr8 frames; png frames
def test_reward_node_scores_other_encodings_as_it_scores_rgb8(
    reward_ckpt: Path, transport: str, wait_matched: Callable[..., None]
) -> None:
    """A bgr8 camera and a compressed (png) stream give the rewards the rgb8 frames give."""
    import os
    import subprocess
    import sys
    import time

    import rclpy
    from geometry_msgs.msg import Vector3Stamped
    from sensor_msgs.msg import CompressedImage, Image
    from video2reward.rewards.stream import RewardStream, RewardStreamConfig
    from video2reward.rewards.synthetic import blob_episode
    from video2reward.ros.convert import header

    domain = 73 if transport == "raw" else 74
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    frames = blob_episode(np.random.default_rng(6), size_px=40, length=12)[0]
    stamps = [round((50.0 + i / 10) * 1e9) for i in range(len(frames))]
    offline = RewardStream(RewardStreamConfig(ckpt=str(reward_ckpt), online_updates=False))
    expected = np.array([(s.reward, s.progress) for s in offline.score(list(zip(stamps, frames,
                                                                             strict=True)))])
    offline.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "video2reward.rewards.ros.reward_node", "--ros-args",
         "-p", f"ckpt:={reward_ckpt}", "-p", "online_updates:=false",
         "-p", f"image_transport:={transport}", "-r", "image:=/cam/image"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rclpy.init(domain_id=domain)
    node = rclpy.create_node("encoding_test_client")
    got: list[Vector3Stamped] = []
    sub = node.create_subscription(Vector3Stamped, "/reward/reward", got.append, 100)
    pub = node.create_publisher(Image if transport == "raw" else CompressedImage, "/cam/image", 20)
    try:
        wait_matched(node, [pub], [sub])
        assert pub.get_subscription_count() == 1, "reward node never subscribed"
        deadline = time.monotonic() + 60
        for f, ns in zip(frames, stamps, strict=True):
            if transport == "raw":
                msg = _raw(f[..., ::-1], "bgr8")
            else:
                msg = CompressedImage(format="png")
                msg.data = cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()
            msg.header = header(ns * 1e-9, "camera_color_optical_frame")
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.05)
        while len(got) < len(frames) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        node.destroy_node()
        rclpy.try_shutdown()
    assert [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in got] == stamps, \
        out[-2000:]
    values = np.array([(m.vector.x, m.vector.y) for m in got])
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-4)
