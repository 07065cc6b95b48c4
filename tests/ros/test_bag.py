"""MCAP bags: the bag node records a published stream that the mcap reader, rosbag2's schema
format and the importer read back as it was sent; a cut bag reads its intact prefix; a full
disk leaves a readable, properly ended bag and a bag node that keeps running."""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros
DOMAIN_STREAM = 81
DOMAIN_FULL = 82
N_FRAMES = 16
W, H = 64, 48


def _env(domain: int) -> dict[str, str]:
    return {**os.environ, "ROS_DOMAIN_ID": str(domain),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}  # fmt: skip


def _frame(i: int) -> np.ndarray:
    """Smooth, distinct frames (JPEG keeps them within a few grey levels)."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 2 + i * 4, y * 3 + i * 2, np.full_like(x, 40 + 8 * i)], -1)  # < 256
    return img.astype(np.uint8)


def _write_small_bag(path: Path, n: int = 400, chunk_bytes: int = 2048) -> list[float]:
    from geometry_msgs.msg import Vector3Stamped
    from rclpy.serialization import serialize_message
    from video2reward.ros.bag import BagWriter

    sent = []
    with BagWriter(path, chunk_bytes=chunk_bytes) as w:
        w.add_topic("/reward/reward", "geometry_msgs/msg/Vector3Stamped")
        for i in range(n):
            m = Vector3Stamped()
            m.header.stamp.sec, m.vector.x = i, 0.5 * i
            w.write("/reward/reward", serialize_message(m), 1_000 + i)
            sent.append(0.5 * i)
    return sent


# ------------------------------------------------------------------ schemas
def test_every_graph_type_has_a_ros2msg_schema_that_decodes_rclpy_bytes(tmp_path: Path) -> None:
    from geometry_msgs.msg import PoseStamped
    from mcap_ros2._dynamic import generate_dynamic
    from rclpy.serialization import serialize_message
    from video2reward.ros.bag import (
        COMPRESSED_TYPE,
        GRAPH_TOPICS,
        BagReader,
        BagWriter,
        MessageDefinitionError,
        message_definition,
    )

    for typ in {*GRAPH_TOPICS.values(), COMPRESSED_TYPE, "std_msgs/msg/String"}:
        text = message_definition(typ)
        assert typ in generate_dynamic(typ, text), typ  # every dependency is in the text
    assert "MSG: builtin_interfaces/Time" in message_definition("geometry_msgs/msg/PoseStamped")
    with pytest.raises(MessageDefinitionError, match=r"no_such_pkg/msg/Thing.*Thing\.msg"):
        message_definition("no_such_pkg/msg/Thing")

    pose = PoseStamped()
    pose.header.frame_id, pose.pose.position.y, pose.pose.orientation.w = "base", 0.25, 1.0
    with BagWriter(tmp_path / "p.mcap") as w:
        w.add_topic("/p", "geometry_msgs/msg/PoseStamped")
        w.write("/p", serialize_message(pose), 5)
    (got,) = list(BagReader(tmp_path / "p.mcap").messages())
    back = got.decode()
    assert (back.header.frame_id, back.pose.position.y, back.pose.orientation.w) == ("base", 0.25,
                                                                                     1.0)
    with pytest.raises(Exception, match="already exists"):
        BagWriter(tmp_path / "p.mcap")


# ------------------------------------------------------------------ cut and full bags
def test_a_cut_bag_reads_its_intact_prefix_and_a_non_bag_is_refused(tmp_path: Path) -> None:
    from video2reward.data.bag_import import BagImportError, import_bag
    from video2reward.ros.bag import BagError, BagReader

    full = tmp_path / "full.mcap"
    sent = _write_small_bag(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 4 // 10])  # inside a chunk of the data
    reader = BagReader(cut)
    got = [m.decode().vector.x for m in reader.messages()]
    assert 0 < len(got) < len(sent)
    assert got == sent[: len(got)]  # a prefix, in order, nothing garbled
    assert reader.truncated is not None and "ends early" in reader.truncated
    assert BagReader(full).truncated is None

    header_only = tmp_path / "header.mcap"
    header_only.write_bytes(data[:12])
    with pytest.raises(BagError, match="header does not read"):
        list(BagReader(header_only).messages())
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not a bag at all")
    with pytest.raises(BagImportError, match="not an MCAP file"):
        import_bag(junk, tmp_path / "s.zarr", task="reach")
    with pytest.raises(BagImportError, match="no image topic"):
        import_bag(cut, tmp_path / "s.zarr", task="reach")


class _SmallDisk(io.FileIO):
    """A file on a disk with ``capacity`` bytes: writes past it are cut short, then ENOSPC."""

    capacity = 0

    def write(self, b: Any) -> int:
        room = self.capacity - self.tell()
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(bytes(memoryview(b))[:room])


def test_a_full_disk_ends_the_bag_where_the_last_write_completed(tmp_path: Path) -> None:
    from geometry_msgs.msg import Vector3Stamped
    from mcap.reader import make_reader
    from rclpy.serialization import serialize_message
    from video2reward.ros.bag import BagReader, BagWriteError, BagWriter

    path = tmp_path / "full_disk.mcap"
    f = _SmallDisk(path, "xb")
    f.capacity = 30_000
    w = BagWriter(path, stream=f, chunk_bytes=4096)  # type: ignore[arg-type]
    w.add_topic("/r", "geometry_msgs/msg/Vector3Stamped")
    written, failure = 0, ""
    for i in range(100_000):
        m = Vector3Stamped()
        m.vector.x = float(i)
        try:
            w.write("/r", serialize_message(m), 1_000 + i)
        except BagWriteError as e:
            failure = str(e)
            break
        written += 1
    assert "No space left on device" in failure and "readable" in failure
    assert w.closed and f.closed
    with pytest.raises(BagWriteError):  # nothing more is accepted, and says why
        w.write("/r", b"", 0)
    assert path.stat().st_size <= 30_000
    reader = BagReader(path)
    xs = [m.decode().vector.x for m in reader.messages()]
    assert reader.truncated is None  # ended properly: DataEnd + Footer after the last chunk
    # (with a Metadata record naming the error when the space freed by the cut holds it)
    assert 0 < len(xs) <= written and xs == [float(i) for i in range(len(xs))]
    with open(path, "rb") as fh:  # the mcap library's own reader scans it too (no summary)
        assert sum(1 for _ in make_reader(fh).iter_messages()) == len(xs)


# ------------------------------------------------------------------ episode markers
def test_episode_markers_follow_the_learners_commands_and_the_recorders_calls() -> None:
    from video2reward.ros.bag import EpisodeTracker

    tr = EpisodeTracker()
    ms = 1_000_000
    assert tr.on_learner(0, "reset", 0) == []
    for t in range(100, 200, 10):  # episode 1 acts at 100..190 ms
        tr.on_action(t * ms)
    for t in range(600, 700, 10):  # episode 2 at 600..690 ms, after a reset pause
        tr.on_action(t * ms)
    out = tr.on_learner(700 * ms, "run", 1)  # one committed, the next running
    assert [(m["event"], m["t_ns"] // ms, m.get("committed")) for m in out] == [
        ("start", 100, None), ("end", 190, True), ("start", 600, None)]
    out = tr.on_learner(1700 * ms, "reset", 1)  # dropped: left run without a commit
    assert [(m["event"], m["t_ns"] // ms, m["committed"]) for m in out] == [("end", 690, False)]

    rec = EpisodeTracker()
    assert rec.on_recorder(10, False, 0, "idle") == []
    assert rec.on_recorder(20, True, 0, "recording ep 0")[0]["event"] == "start"
    (end,) = rec.on_recorder(30, False, 1, "saved ep 0 (success)")
    assert (end["t_ns"], end["committed"], end["success"]) == (30, True, True)


# ------------------------------------------------------------------ launch
def test_every_launch_file_starts_the_bag_node_only_when_asked() -> None:
    from video2reward.cli.launch import load, package_share

    for f in sorted((package_share("video2reward") / "launch").glob("[!_]*.launch.xml")):
        assert "bag" not in {n.name for n in load(f, {})}, f.name
        nodes = {n.name: n for n in load(f, {"with_bag": "true", "record_bag": "/tmp/b.mcap"})}
        assert ("path", "/tmp/b.mcap") in nodes["bag"].params, f.name


# ------------------------------------------------------------------ the node, end to end
def _start_node(args: list[str], domain: int, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "video2reward.robot.ros.bag_node", "--ros-args", *args],
        env=_env(domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


def _publish_episode(bag: Path) -> dict[str, Any]:
    """A learner-like stream: state, frame, its reward and the command after it, per step."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseStamped, Vector3Stamped
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float32MultiArray
    from video2reward.robot.camera import CameraIntrinsics
    from video2reward.ros import convert

    proc = _start_node(["-p", f"path:={bag}"], DOMAIN_STREAM)
    rclpy.init(domain_id=DOMAIN_STREAM)
    node = rclpy.create_node("bag_test_graph")
    pub = {t: node.create_publisher(typ, t, 50) for t, typ in (
        ("/camera/color/image_raw", Image), ("/camera/color/camera_info", CameraInfo),
        ("/reward/reward", Vector3Stamped), ("/xarm_driver/ee_pose", PoseStamped),
        ("/xarm_driver/joint_states", JointState), ("/xarm_driver/action", Float32MultiArray),
        ("/xarm_driver/applied_action", Float32MultiArray), ("/diagnostics", DiagnosticArray))}

    def diag(phase: str, episodes: int) -> None:
        st = DiagnosticStatus(name="learner", message=phase, values=[
            KeyValue(key="phase", value=phase), KeyValue(key="episodes", value=str(episodes))])
        pub["/diagnostics"].publish(DiagnosticArray(status=[st]))

    def settle(s: float = 0.02) -> None:
        t_end = time.monotonic() + s
        while time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.005)

    intr = CameraIntrinsics(W, H, 50.0, 50.0, W / 2, H / 2)
    sent: dict[str, Any] = {"stamps": [], "frames": [], "rewards": [], "pos": [], "actions": []}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            p.get_subscription_count() == 0 for t, p in pub.items()
        ):
            settle(0.1)
        assert all(p.get_subscription_count() for p in pub.values()), proc.stdout
        diag("reset", 0)
        settle(0.3)
        for i in range(N_FRAMES):
            t = 200.0 + i / 20
            pos = np.array([0.3 + 0.01 * i, 0.0, 0.2])
            pub["/xarm_driver/ee_pose"].publish(convert.pose_msg(pos, np.zeros(3), t, "base"))
            pub["/xarm_driver/joint_states"].publish(
                convert.joint_state_msg(np.full(5, 0.1 * i), 0.5, t))
            settle()
            frame = _frame(i)
            pub["/camera/color/image_raw"].publish(convert.image_msg(frame, t, "cam"))
            pub["/camera/color/camera_info"].publish(convert.camera_info_msg(intr, t, "cam"))
            settle()
            stamp = round(t * 1e9)
            pub["/reward/reward"].publish(convert.reward_msg(stamp, "vip", 0.1 * i, 0.0, i > 12))
            last = i == N_FRAMES - 1
            a = np.zeros(4, np.float32) if last else np.array([0.1, -0.1, 0.0, i / 20], np.float32)
            pub["/xarm_driver/action"].publish(convert.array_msg(a))
            pub["/xarm_driver/applied_action"].publish(convert.array_msg(a))
            if i == 2:
                diag("run", 0)
            settle(0.01)
            for k, v in (("stamps", stamp), ("frames", frame), ("rewards", 0.1 * i),
                         ("pos", pos), ("actions", a)):
                sent[k].append(v)
        settle(0.3)
        diag("wait_inputs", 1)
        settle(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        sent["log"] = proc.communicate(timeout=60)[0]
        sent["rc"] = proc.returncode
        node.destroy_node()
        rclpy.try_shutdown()
    return sent


def test_the_bag_node_records_the_stream_and_the_importer_gives_it_back(tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from video2reward.data import keys
    from video2reward.data.bag_import import (
        REWARD,
        BagImportConfig,
        import_bag,
        import_bag_config,
        is_bag_file,
    )
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.ros import convert
    from video2reward.ros.bag import BagReader, image_from_message

    bag = tmp_path / "graph.mcap"
    sent = _publish_episode(bag)
    log = sent["log"][-3000:]
    assert sent["rc"] == 0, log

    with open(bag, "rb") as f:  # the summary a Foxglove / rosbag2 reader uses
        summary = make_reader(f).get_summary()
    assert summary is not None and summary.statistics is not None
    counts = {summary.channels[c].topic: n
              for c, n in summary.statistics.channel_message_counts.items()}  # fmt: skip
    for topic in ("/camera/color/image_raw/compressed", "/camera/color/camera_info",
                  "/reward/reward", "/xarm_driver/ee_pose", "/xarm_driver/joint_states",
                  "/xarm_driver/action", "/xarm_driver/applied_action"):
        assert counts.get(topic) == N_FRAMES, (topic, counts, log)
    assert counts["/bag/episode"] == 2  # start + end of the one episode
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
    assert {s.name for s in summary.schemas.values()} >= {
        "sensor_msgs/msg/CompressedImage", "geometry_msgs/msg/Vector3Stamped",
        "std_msgs/msg/Float32MultiArray", "geometry_msgs/msg/PoseStamped",
        "sensor_msgs/msg/JointState", "diagnostic_msgs/msg/DiagnosticArray",
        "std_msgs/msg/String"}

    reader = BagReader(bag)
    images = [m for m in reader.messages(["/camera/color/image_raw/compressed"])]
    assert reader.truncated is None
    assert [convert.ns_from_stamp(m.decode().header.stamp) for m in images] == sent["stamps"]
    log_times = [m.log_time_ns for m in images]
    assert log_times == sorted(log_times)
    for m, frame in zip(images, sent["frames"], strict=True):
        rgb = image_from_message(m.type_name, m.decode())
        assert rgb.shape == frame.shape
        assert np.abs(rgb.astype(int) - frame).mean() < 3.0  # JPEG q90 of smooth frames

    report = import_bag(bag, tmp_path / "bag.zarr", task="reach")
    assert report.truncated is None and report.skipped == [], report
    store = EpisodeStore.open(tmp_path / "bag.zarr")
    assert store.n_episodes == 1 and report.imported == [0]
    ep = store.episode(0)
    n = len(ep[keys.IMAGE])
    assert N_FRAMES - 1 <= n <= N_FRAMES  # from the frame before the first command to the last
    first = N_FRAMES - n
    np.testing.assert_allclose(ep[keys.TIMESTAMP], np.arange(n) / 20, atol=1e-6)
    np.testing.assert_allclose(ep[REWARD], sent["rewards"][first:], atol=1e-6)  # by stamp
    assert store.episode_meta(0)[keys.EPISODE_SUCCESS]  # the reward model called it at i > 12
    assert store.episode_meta(0)[keys.EPISODE_KIND] == "agent"
    for j in range(n):
        i = first + j
        assert np.abs(ep[keys.IMAGE][j].astype(int) - sent["frames"][i]).mean() < 3.0
        # the newest state and the commands after the frame, as they arrived (one step late
        # at most when the machine delays a delivery)
        assert any(np.allclose(ep[keys.EE_POS][j], sent["pos"][k]) for k in (i, i - 1)), j
    np.testing.assert_allclose(ep[keys.ACTION][-1], 0.0)
    matched = sum(np.allclose(ep[keys.ACTION][j], sent["actions"][first + j]) for j in range(n))
    assert matched >= n - 2, ep[keys.ACTION]
    np.testing.assert_allclose(ep[keys.JOINT_POS][-1], np.full(5, 0.1 * (N_FRAMES - 1)),
                               atol=0.11)  # fmt: skip
    assert store.attrs[keys.ATTR_INTRINSICS]["fx"] == 50.0
    # `v2r record import` finds the bag by its magic bytes and gives the same store
    from video2reward.robot.recorder_cli import import_main

    assert import_main([str(bag), f"out={tmp_path / 'cli.zarr'}", "task=reach"]) == 0
    via_cli = EpisodeStore.open(tmp_path / "cli.zarr").episode(0)
    for k in (keys.IMAGE, keys.ACTION, keys.EE_POS, REWARD):
        np.testing.assert_array_equal(via_cli[k], ep[k])
    assert import_main([str(bag), f"out={tmp_path / 'cli.zarr'}", "task=reach"]) == 2  # exists

    # Cut inside the last chunk (a crash before close): the importer reads the prefix, and the
    # episode is either imported (its end marker was in an earlier chunk) or skipped, named.
    last_chunk = max(c.chunk_start_offset for c in summary.chunk_indexes)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(bag.read_bytes()[: last_chunk + 100])
    assert is_bag_file(cut) and not is_bag_file(tmp_path / "bag.zarr")
    cut_report = import_bag_config(BagImportConfig(str(cut), str(tmp_path / "cut.zarr"), "reach"))
    assert cut_report.truncated is not None and "ends early" in cut_report.truncated
    lost = [s for s in cut_report.skipped if "ends before its end marker (truncated)" in s]
    assert len(cut_report.imported) + len(lost) == 1, cut_report


def test_a_full_disk_stops_the_bag_node_not_the_graph(tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image
    from video2reward.ros import convert
    from video2reward.ros.bag import BagReader

    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True, check=False
    ).returncode:
        pytest.skip("needs unprivileged user + mount namespaces (unshare -rm) for a tiny tmpfs")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    # The node writes to a 192 KiB tmpfs in its own mount namespace; when it has exited, the
    # shell copies the bag out (the tmpfs goes with the namespace).
    script = (f"mount -t tmpfs -o size=192k none {disk} && "
              f"{sys.executable} -m video2reward.robot.ros.bag_node --ros-args "
              f"-p path:={disk}/full.mcap -p flush_period_s:=0.2 & pid=$!; echo PID $pid; "
              f"wait $pid; rc=$?; cp {disk}/full.mcap {out}/; exit $rc")  # fmt: skip
    proc = subprocess.Popen(["unshare", "-rm", "sh", "-c", script], env=_env(DOMAIN_FULL),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline().split()[1])
    rclpy.init(domain_id=DOMAIN_FULL)
    node = rclpy.create_node("bag_full_test")
    pub = node.create_publisher(Image, "/camera/color/image_raw", 10)
    errors: list[DiagnosticStatus] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: errors.extend(
        s for s in m.status if s.name == "bag" and s.level == DiagnosticStatus.ERROR), 10)
    rng = np.random.default_rng(0)
    sent = 0
    try:
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        while not errors and time.monotonic() < deadline:  # noise: JPEG cannot shrink it
            noise = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            pub.publish(convert.image_msg(noise, 300.0 + sent / 30, "cam"))
            sent += 1
            rclpy.spin_once(node, timeout_sec=0.03)
        assert errors, "the bag node never reported the full disk"
        assert "No space left on device" in errors[0].message
        time.sleep(1.0)
        assert proc.poll() is None, "the bag node exited on a full disk"
        os.kill(pid, signal.SIGTERM)
        log = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    assert proc.returncode == 1, log[-3000:]  # it did fail to record everything: exit says so
    assert "recording stopped" in log and "No space left on device" in log
    reader = BagReader(out / "full.mcap")
    stamps = [m.decode().header.stamp.sec + m.decode().header.stamp.nanosec * 1e-9
              for m in reader.messages(["/camera/color/image_raw/compressed"])]  # fmt: skip
    assert reader.truncated is None
    assert 0 < len(stamps) < sent and stamps == sorted(stamps)
