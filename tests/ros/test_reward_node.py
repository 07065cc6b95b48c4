"""The reward node scores images from another process and stamps each reward with its image."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from video2reward.rewards.synthetic import blob_episode

pytestmark = pytest.mark.ros
DOMAIN = 71
SIZE = 40  # the conftest reward model's image size


def test_every_image_gets_one_reward_with_its_stamp_and_the_discriminator_updates(
    reward_ckpt: Path, wait_matched: Callable[..., None]
) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Vector3Stamped
    from sensor_msgs.msg import Image
    from video2reward.ros.convert import image_msg

    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "video2reward.rewards.ros.reward_node",
            "--ros-args",
            "-p",
            f"ckpt:={reward_ckpt}",
            "-p",
            "disc_every_frames:=4",
            "-p",
            "disc_batch:=8",
            "-p",
            "disc_min_frames:=8",
            "-r",
            "image:=/camera/color/image_raw",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rclpy.init(domain_id=DOMAIN)
    node = rclpy.create_node("reward_test_client")  # only standard messages, as any tool
    rewards: list[Vector3Stamped] = []
    diags: list[DiagnosticArray] = []
    sub = node.create_subscription(Vector3Stamped, "/reward/reward", rewards.append, 200)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    pub = node.create_publisher(Image, "/camera/color/image_raw", 10)
    frames = blob_episode(np.random.default_rng(5), size_px=SIZE, length=40)[0]
    sent = []
    try:
        wait_matched(node, [pub], [sub])
        assert pub.get_subscription_count() == 1, "reward node never subscribed"
        deadline = time.monotonic() + 60
        for i, f in enumerate(frames):
            t = 100.0 + i / 30
            pub.publish(image_msg(f, t, "camera_color_optical_frame"))
            sent.append(round(t * 1e9))
            rclpy.spin_once(node, timeout_sec=0.03)
        while time.monotonic() < deadline and (
            len(rewards) < len(sent) or not any(_version(d) > 0 for d in diags)
        ):
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        node.destroy_node()
        rclpy.try_shutdown()
    got = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in rewards]
    assert got == sent, out[-2000:]
    values = np.array([[m.vector.x, m.vector.y, m.vector.z] for m in rewards])
    assert np.all(np.isfinite(values))
    assert set(np.unique(values[:, 2])) <= {0.0, 1.0}
    assert rewards[0].header.frame_id == "rank2reward"
    assert any(_version(d) > 0 for d in diags), "the discriminator never updated"
    keys = {kv.key for d in diags for s in d.status for kv in s.values}
    assert {"score_latency_p95_ms", "rate_hz", "disc_loss", "disc_accuracy"} <= keys


def _version(d: object) -> int:
    for s in d.status:  # type: ignore[attr-defined]
        for kv in s.values:
            if kv.key == "model_version":
                return int(kv.value)
    return -1


def test_missing_checkpoint_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN + 1)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "video2reward.rewards.ros.reward_node",
            "--ros-args",
            "-p",
            f"ckpt:={tmp_path / 'nope'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "nope" in done.stderr
