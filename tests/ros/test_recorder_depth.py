"""The recorder node with depth: each colour frame is stored with the depth of its stamp (the
two topics may deliver in either order) and a new store carries the calibration's camera pose,
so point-map demonstrations can be recorded on the robot (``v2r record teleop depth=true`` is
the in-process path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
DOMAIN = 72


def _calibration(path: Path, T: np.ndarray) -> Path:
    from video2reward.calibration.board import CharucoBoardSpec
    from video2reward.calibration.result import (
        CalibrationResult,
        ExtrinsicsRecord,
        now_utc,
        save_calibration,
    )

    ext = ExtrinsicsRecord(T_base_cam=T, T_flange_board=np.eye(4), board=CharucoBoardSpec(),
                           board_z_flange_m=None, residuals={})  # fmt: skip
    return save_calibration(CalibrationResult(now_utc(), "test", extrinsics=ext), path)


def test_the_recorder_node_stores_each_frame_with_the_depth_of_its_stamp(
    tmp_path: Path, wait_matched: Callable[..., None]
) -> None:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_srvs.srv import SetBool, Trigger
    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.robot.camera import CameraIntrinsics
    from video2reward.ros import convert

    T = np.eye(4)
    T[:3, 3] = [0.8, -0.5, 0.6]
    cal = _calibration(tmp_path / "cal.yaml", T)
    out = tmp_path / "demos.zarr"
    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "video2reward.robot.ros.recorder_node", "--ros-args",
         "-p", f"out:={out}", "-p", "depth:=true", "-p", f"calibration:={cal}",
         "-p", "min_free_mb:=0.0", "-p", "flush_every:=2", "-p", "source:=twin"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rclpy.init(domain_id=DOMAIN)
    node = rclpy.create_node("recorder_depth_test")
    pubs = {name: node.create_publisher(typ, name, 10) for name, typ in (
        ("image", Image), ("depth", Image), ("camera_info", CameraInfo), ("ee_pose", PoseStamped),
        ("joint_states", JointState))}  # fmt: skip

    def call(typ, name, req):  # type: ignore[no-untyped-def]
        cli = node.create_client(typ, name)
        assert cli.wait_for_service(timeout_sec=30), name
        fut = cli.call_async(req)
        rclpy.spin_until_future_complete(node, fut, timeout_sec=30)
        return fut.result()

    intr = CameraIntrinsics(8, 8, 10.0, 10.0, 3.5, 3.5)
    try:
        wait_matched(node, list(pubs.values()))
        for _ in range(20):  # the store opens on the first camera_info
            pubs["camera_info"].publish(convert.camera_info_msg(intr, 1.0, "cam"))
            rclpy.spin_once(node, timeout_sec=0.05)
            if (out / "meta").exists():
                break
        assert call(Trigger, "/recorder/start", Trigger.Request()).success
        q = np.zeros(5)
        for i in range(6):
            t = 10.0 + i / 30
            pubs["ee_pose"].publish(convert.pose_msg(np.array([0.3, 0, 0.2]), np.zeros(3), t, "b"))
            pubs["joint_states"].publish(convert.joint_state_msg(q, 1.0, t))
            rgb = np.full((8, 8, 3), i, np.uint8)
            depth = convert.depth_msg(np.full((8, 8), 0.5 + i / 1000, np.float32), t, "cam")
            image = convert.image_msg(rgb, t, "cam")
            first, second = (depth, image) if i % 2 else (image, depth)  # either order
            pubs["depth" if i % 2 else "image"].publish(first)
            rclpy.spin_once(node, timeout_sec=0.02)
            pubs["image" if i % 2 else "depth"].publish(second)
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.02)
        time.sleep(0.5)
        assert call(SetBool, "/recorder/stop", SetBool.Request(data=True)).success
    finally:
        proc.terminate()
        log = proc.communicate(timeout=20)[0]
        node.destroy_node()
        rclpy.try_shutdown()
    s = EpisodeStore.open(out)
    assert s.n_episodes == 1, log[-2000:]
    ep = s.episode(0, [keys.IMAGE, keys.DEPTH])
    assert len(ep[keys.IMAGE]) >= 5, log[-2000:]
    # every stored frame carries the depth sent with its stamp (frame i: 500 + i mm)
    sent_mm = 500 + ep[keys.IMAGE][:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(ep[keys.DEPTH][:, 0, 0], sent_mm)
    np.testing.assert_allclose(s.attrs[keys.ATTR_T_BASE_CAM], T)
