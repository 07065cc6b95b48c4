"""The camera node plays a recording to a subscriber in another process, frame by frame."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from video2reward.robot.camera import CameraIntrinsics
from video2reward.robot.realsense import write_recording

pytestmark = pytest.mark.ros
W, H, FPS, N, T0 = 84, 84, 15, 20, 1000.0  # 15 fps: slack for a loaded CI machine
INTR = CameraIntrinsics(W, H, fx=90.0, fy=91.0, cx=41.5, cy=41.5)


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", "63")
    return dict(os.environ)


def _node(env: dict[str, str], **params: object) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "video2reward.robot.ros.camera_node", "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_camera_node_publishes_every_recorded_frame_with_its_stamp(
    tmp_path: Path, ros_env: dict[str, str]
) -> None:
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image
    from video2reward.ros.convert import image_from_msg, seconds_from_stamp

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)]
    path = tmp_path / "rec.db3"
    write_recording(path, frames, FPS, INTR, t0_s=T0)

    rclpy.init(domain_id=63)
    node = rclpy.create_node("camera_test_sub")
    images: list[Image] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, "/camera/color/image_raw", images.append, 100)
    node.create_subscription(CameraInfo, "/camera/color/camera_info", infos.append, 100)
    proc = _node(ros_env, source="recording", recording=str(path), width=W, height=H, fps=FPS,
                 wait_for_subscribers=1)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (proc.poll() is None or len(images) < N):
            rclpy.spin_once(node, timeout_sec=0.05)
            if proc.poll() is not None and len(images) < N:
                for _ in range(20):  # drain what is still in flight
                    rclpy.spin_once(node, timeout_sec=0.05)
                break
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.terminate()
        node.destroy_node()
        rclpy.try_shutdown()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert len(images) == N
    stamps = [seconds_from_stamp(m.header.stamp) for m in images]
    np.testing.assert_allclose(stamps, T0 + np.arange(N) / FPS, atol=1e-6)
    for msg, ref in zip(images, frames, strict=True):
        np.testing.assert_array_equal(image_from_msg(msg), ref)
        assert msg.header.frame_id == "camera_color_optical_frame"
    assert len(infos) == N
    assert [seconds_from_stamp(m.header.stamp) for m in infos] == pytest.approx(stamps, abs=1e-9)
    np.testing.assert_allclose(np.reshape(infos[0].k, (3, 3)), INTR.K())


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"\x00not a bag" * 50, "not a RealSense")],
)
def test_camera_node_bad_recording_exits_with_clear_error(
    tmp_path: Path, ros_env: dict[str, str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.db3"
    if content is not None:
        path.write_bytes(content)
    proc = _node(ros_env, source="recording", recording=str(path), width=W, height=H)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert message in err


def test_camera_node_twin_source_same_topics_and_host_aligned_stamps(
    ros_env: dict[str, str],
) -> None:
    import signal

    import rclpy
    from sensor_msgs.msg import CameraInfo, Image
    from video2reward.ros.convert import seconds_from_stamp
    from video2reward.sim.emulator_camera import twin_intrinsics

    rclpy.init(domain_id=63)
    node = rclpy.create_node("camera_twin_sub")
    images: list[tuple[float, Image]] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, "/camera/color/image_raw",
                             lambda m: images.append((time.time(), m)), 10)
    node.create_subscription(CameraInfo, "/camera/color/camera_info", infos.append, 10)
    proc = _node(ros_env, source="twin", width=64, height=48, fps=30, wait_for_subscribers=1)
    try:
        deadline = time.monotonic() + 40
        while len(images) < 15 and time.monotonic() < deadline and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        node.destroy_node()
        rclpy.try_shutdown()
    assert len(images) >= 15, proc.stderr.read() if proc.stderr else ""
    assert rc == 0
    stamps = np.array([seconds_from_stamp(m.header.stamp) for _, m in images])
    gaps = np.diff(stamps) * 30
    assert np.all(np.abs(gaps - np.round(gaps)) < 1e-3) and np.all(gaps >= 1 - 1e-3)  # 1/30 grid
    latency = np.array([t for t, _ in images]) - stamps  # host-aligned device clock
    assert np.all(latency > 0) and np.median(latency) < 0.2
    assert (images[0][1].width, images[0][1].height, images[0][1].encoding) == (64, 48, "rgb8")
    np.testing.assert_allclose(np.reshape(infos[0].k, (3, 3)), twin_intrinsics(64, 48).K())
