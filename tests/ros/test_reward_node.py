"""The reward node scores images from another process and stamps each reward with its image."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    from video2reward.ros.convert import image_msg

    proc = _start_node(reward_ckpt, DOMAIN)
    rclpy.init(domain_id=DOMAIN)
    node = rclpy.create_node("reward_test_client")  # only standard messages, as any tool
    rewards, diags, sub, pub = _client(node)
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
    got = [_ns(m) for m in rewards]
    assert got == sent, out[-2000:]
    values = np.array([[m.vector.x, m.vector.y, m.vector.z] for m in rewards])
    assert np.all(np.isfinite(values))
    assert set(np.unique(values[:, 2])) <= {0.0, 1.0}
    assert rewards[0].header.frame_id == "rank2reward"
    assert any(_version(d) > 0 for d in diags), "the discriminator never updated"
    keys = {kv.key for d in diags for s in d.status for kv in s.values}
    assert {"score_latency_p95_ms", "rate_hz", "disc_loss", "disc_accuracy"} <= keys


def _client(node: Any) -> tuple[list[Any], list[Any], Any, Any]:
    """What a test watches and feeds: rewards, diagnostics, the reward subscription, the
    image publisher."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Vector3Stamped
    from sensor_msgs.msg import Image

    rewards: list[Any] = []
    diags: list[Any] = []
    sub = node.create_subscription(Vector3Stamped, "/reward/reward", rewards.append, 200)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    return rewards, diags, sub, node.create_publisher(Image, "/camera/color/image_raw", 10)


def _start_node(ckpt: Path, domain: int, *params: str) -> subprocess.Popen[str]:
    """The reward node in a process of its own, a discriminator step every 4 scored frames."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    args = [f"ckpt:={ckpt}", "disc_every_frames:=4", "disc_batch:=8", "disc_min_frames:=8",
            *params]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "video2reward.rewards.ros.reward_node", "--ros-args",
         *[a for p in args for a in ("-p", p)], "-r", "image:=/camera/color/image_raw",
         "-r", "acting:=/learner/acting"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_frames_while_no_policy_acts_are_scored_sparsely_and_never_train_the_discriminator(
    reward_ckpt: Path, wait_matched: Callable[..., None]
) -> None:
    """The learner's latched ``acting`` false (pretraining, resets): a few frames are scored
    (the learner sees rewards flowing) and none is shown to the discriminator as the agent's;
    once it is true every frame is scored and shown."""
    import rclpy
    from std_msgs.msg import Bool
    from video2reward.ros.convert import LATCHED, image_msg

    domain = DOMAIN + 2
    rclpy.init(domain_id=domain)
    node = rclpy.create_node("learner_stand_in")
    acting = node.create_publisher(Bool, "/learner/acting", LATCHED)
    acting.publish(Bool(data=False))  # before the reward node exists: it must be latched
    # one idle frame per 10 s: a test publishing 40 frames in a few seconds sees one or two
    proc = _start_node(reward_ckpt, domain, "idle_hz:=0.1")
    rewards, diags, sub, pub = _client(node)
    frames = blob_episode(np.random.default_rng(6), size_px=SIZE, length=40)[0]

    def send(t0: float) -> list[int]:
        sent = []
        for i, f in enumerate(frames):
            pub.publish(image_msg(f, t0 + i / 30, "camera_color_optical_frame"))
            sent.append(round((t0 + i / 30) * 1e9))
            rclpy.spin_once(node, timeout_sec=0.03)
        return sent

    def diag_until(ok: Callable[[dict[str, str]], bool], timeout_s: float = 60) -> dict[str, str]:
        deadline, last = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            if diags:
                last = {kv.key: kv.value for s in diags[-1].status for kv in s.values}
                if ok(last):
                    break
        return last

    try:
        wait_matched(node, [pub], [sub])
        assert diag_until(lambda d: d.get("acting") == "no")["acting"] == "no", "not latched"
        idle_sent = send(100.0)
        idle = diag_until(lambda d: int(d["frames_scored"]) >= 1)
        scored_idle = [m for m in rewards if _ns(m) in idle_sent]
        assert 1 <= len(scored_idle) <= 2, [_ns(m) for m in scored_idle]
        assert idle["agent_frames"] == "0" and idle["model_version"] == "0"

        acting.publish(Bool(data=True))
        assert diag_until(lambda d: d.get("acting") == "yes")["acting"] == "yes"
        agent_sent = send(200.0)
        done = diag_until(lambda d: int(d["agent_frames"]) >= len(agent_sent)
                          and int(d["model_version"]) > 0)  # fmt: skip
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        node.destroy_node()
        rclpy.try_shutdown()
    assert [_ns(m) for m in rewards if _ns(m) >= agent_sent[0]] == agent_sent, out[-2000:]
    assert done["agent_frames"] == str(len(agent_sent)), done
    assert int(done["model_version"]) > 0, "the discriminator never trained on agent frames"


def _ns(m: object) -> int:
    from video2reward.ros.convert import ns_from_stamp

    return ns_from_stamp(m.header.stamp)  # type: ignore[attr-defined]


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
