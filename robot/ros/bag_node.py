"""ROS 2 bag node: the graph's topics to one MCAP file, readable by rosbag2 and Foxglove.

    bag_node --ros-args -p path:=runs/sim.mcap
    v2r launch sim.launch.xml with_bag:=true record_bag:=runs/sim.mcap     # what the launch does

Records every topic of ``topics`` (default: the learning graph's, ``ros.bag.GRAPH_TOPICS``;
an entry ``/name:pkg/msg/Type`` adds any other topic) as it arrives, stamped with the arrival
time (``log_time``). Raw camera images (sensor_msgs/Image) are stored as
sensor_msgs/CompressedImage on ``<topic>/compressed`` (``image_format`` jpeg or png; ``raw``
keeps them as they are): a 640x480 camera at 30 fps is ~100 MB a minute, not 1.6 GB. Episode
boundaries, which the graph publishes no topic for, are derived from the learner's
``/diagnostics`` and commands and the recorder's ``/recorder/status``
(``ros.bag.EpisodeTracker``) and written to ``/bag/episode`` (std_msgs/String, JSON); the node
publishes them there too.

Cost to the other nodes: subscriptions are raw (the CDR bytes are queued as received, nothing
is deserialized in the callback); a writer thread compresses images and writes chunks, and a
full queue (``queue_size``) drops the newest messages, counted, rather than slow the graph.
The bag is flushed every ``flush_period_s``: a crash loses at most that much.

Live view: ``live_port`` (and ``live_host``, localhost by default) also serves the same
messages, compressed images included, to the Foxglove app over WebSocket
(``ros/live_view.py``); with ``path`` empty the node serves without recording. The launch
files start such an instance with ``live_view:=true``.

Disk full: a write error stops recording with an error on the log and on ``/diagnostics``
(name ``bag``); the file is cut back to its last complete chunk and closed, so everything
before it stays readable. The node keeps running idle: the graph goes on without a bag. A
``path`` that cannot be created (or already exists) ends the node before it records, with
exit code 2 and the reason.
"""

from __future__ import annotations

import importlib
import queue
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from video2reward.ros import convert
from video2reward.ros.bag import (
    COMPRESSED_SUFFIX,
    COMPRESSED_TYPE,
    GRAPH_TOPICS,
    IMAGE_TYPE,
    MARKER_TOPIC,
    MARKER_TYPE,
    BagError,
    BagWriteError,
    BagWriter,
    EpisodeTracker,
    marker_text,
    split_type,
)
from video2reward.ros.live_view import LiveView
from video2reward.ros.node_main import run_node
from video2reward.ros.params import ParamSpec, declare_all, float_range, int_range

ACTION_TOPIC = "/xarm_driver/action"
IMAGE_FORMATS = ("jpeg", "png", "raw")
PARAMS: tuple[ParamSpec, ...] = (
    ("path", "", "MCAP file to write (never overwritten); a folder: bag_<time>.mcap in it",
     None, True),
    ("topics", list(GRAPH_TOPICS), "topics to record: a name of ros.bag.GRAPH_TOPICS, or "
     "/name:pkg/msg/Type", None, True),
    ("image_format", "jpeg", "raw images stored as: jpeg | png (CompressedImage on "
     "<topic>/compressed) | raw", None, True),
    ("jpeg_quality", 90, "JPEG quality of stored images", int_range(10, 100), True),
    ("chunk_kb", 1024, "chunk size; a chunk is also closed every flush_period_s",
     int_range(4, 65536), True),
    ("flush_period_s", 1.0, "write the chunk in progress this often (what a crash can lose)",
     float_range(0.05, 60.0), True),
    ("queue_size", 2000, "messages waiting for the writer; beyond it new ones are dropped",
     int_range(10, 1_000_000), True),
    ("qos_depth", 50, "subscription queue depth (reliable)", int_range(1, 10_000), True),
    ("live_port", 0, "serve a Foxglove live view on this port (0 = off; ros/live_view.py)",
     int_range(0, 65535), True),
    ("live_host", "127.0.0.1", "address the live view binds to (localhost unless told)",
     None, True),
)  # fmt: skip


class _Sinks:
    """The bag and/or the live view, declared and written alike (BagWriter's interface)."""

    def __init__(self, sinks: list[Any]):
        self.sinks = sinks

    def add_topic(self, topic: str, type_name: str) -> None:
        for s in self.sinks:
            s.add_topic(topic, type_name)

    def write(self, topic: str, data: bytes, t_ns: int) -> None:
        for s in self.sinks:
            s.write(topic, data, t_ns)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def close(self) -> None:
        for s in self.sinks:
            s.close()

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self.sinks)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.sinks[0].counts)

    @property
    def bytes_written(self) -> int:
        return int(self.sinks[0].bytes_written)


def message_class(type_name: str) -> Any:
    """The Python class of ``pkg/msg/Type``; a clear error when it is not installed."""
    package, name = split_type(type_name)
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as e:
        raise BagError(f"message type {type_name} is not installed ({e})") from e


def parse_topics(entries: list[str]) -> dict[str, str]:
    """``{topic: type}`` from the ``topics`` parameter."""
    out: dict[str, str] = {}
    for entry in entries:
        name, _, typ = entry.strip().partition(":")
        if not name.startswith("/"):
            raise ValueError(f"topics: {entry!r} is not an absolute topic name (/...)")
        typ = typ or GRAPH_TOPICS.get(name, "")
        if not typ:
            raise ValueError(f"topics: {name} is not a graph topic; give its type as "
                             f"{name}:pkg/msg/Type")  # fmt: skip
        split_type(typ)
        out[name] = typ
    if not out:
        raise ValueError("topics is empty: nothing to record")
    return out


def bag_path(path: str) -> Path:
    """The file to write: ``path``, or a new time-named file when ``path`` is a folder."""
    if not path:
        raise ValueError("path is empty: give the MCAP file to write (record_bag:=...)")
    p = Path(path)
    if p.is_dir() or path.endswith("/"):
        return p / f"bag_{datetime.now().strftime('%Y%m%d_%H%M%S')}.mcap"
    return p


class BagNode(Node):
    def __init__(self) -> None:
        super().__init__("bag")
        p = self.p = declare_all(self, PARAMS)
        if p["image_format"] not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, "
                             f"got {p['image_format']!r}")  # fmt: skip
        topics = parse_topics(list(p["topics"]))
        classes = {t: message_class(typ) for t, typ in topics.items()}
        if not p["path"] and not p["live_port"]:
            raise ValueError("nothing to do: set path (a bag) and/or live_port (a live view)")
        self.path = bag_path(p["path"]) if p["path"] else None
        sinks: list[Any] = []
        if self.path is not None:
            sinks.append(BagWriter(self.path, chunk_bytes=p["chunk_kb"] * 1024))
        if p["live_port"]:
            try:
                sinks.append(LiveView(p["live_host"], p["live_port"]))
            except BagError:
                for sink in sinks:
                    sink.close()
                raise
        self.writer = _Sinks(sinks)
        self.stored: dict[str, str] = {}  # source topic -> topic in the bag
        try:
            for topic, typ in topics.items():
                if typ == IMAGE_TYPE and p["image_format"] != "raw":
                    self.stored[topic] = topic + COMPRESSED_SUFFIX
                    self.writer.add_topic(self.stored[topic], COMPRESSED_TYPE)
                else:
                    self.stored[topic] = topic
                    self.writer.add_topic(topic, typ)
            self.writer.add_topic(MARKER_TOPIC, MARKER_TYPE)
        except BagError:
            self.writer.close()
            raise
        self.tracker = EpisodeTracker()
        self.queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue(maxsize=p["queue_size"])
        self.dropped = 0
        self.recording = True
        self.error: str | None = None
        self.t_start = time.monotonic()
        self.marker_pub = self.create_publisher(String, MARKER_TOPIC, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        qos = QoSProfile(depth=p["qos_depth"], reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [
            self.create_subscription(classes[t], t, self._enqueue(t), qos, raw=True)
            for t in topics
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._diagnostics)
        where = [str(self.path)] if self.path is not None else []
        where += [f"ws://{v.host}:{v.port}" for v in sinks if isinstance(v, LiveView)]
        self.get_logger().info(f"recording {len(topics)} topics to {' and '.join(where)}")

    # ---------------------------------------------------------------- executor thread
    def _enqueue(self, topic: str) -> Any:
        def cb(data: bytes) -> None:
            if not self.recording:
                return
            try:
                self.queue.put_nowait((topic, data, time.time_ns()))
            except queue.Full:
                self.dropped += 1

        return cb

    # ---------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        period = self.p["flush_period_s"]
        t_flush = time.monotonic() + period
        try:
            while not self._stop.is_set() or not self.queue.empty():
                try:
                    topic, data, t_ns = self.queue.get(timeout=0.05)
                    self._record(topic, data, t_ns)
                except queue.Empty:
                    pass
                if time.monotonic() >= t_flush:
                    self.writer.flush()
                    t_flush = time.monotonic() + period
        except BagWriteError as e:
            self._failed(str(e))

    def _record(self, topic: str, data: bytes, t_ns: int) -> None:
        stored = self.stored[topic]
        if stored != topic:  # a raw image to compress
            try:
                data = self._compress(data)
            except ValueError as e:
                self.get_logger().error(f"{topic}: image not recorded: {e}",
                                        throttle_duration_sec=5.0)  # fmt: skip
                return
        self.writer.write(stored, data, t_ns)
        for marker in self._markers(topic, data, t_ns):
            self._write_marker(marker, t_ns)

    def _compress(self, data: bytes) -> bytes:
        img = deserialize_message(data, Image)
        rgb = convert.image_from_msg(img)
        fmt = self.p["image_format"]
        if fmt == "jpeg":
            params = [cv2.IMWRITE_JPEG_QUALITY, int(self.p["jpeg_quality"])]
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        else:
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"{fmt} encoding failed")
        out = CompressedImage(header=img.header, format=f"{img.encoding}; {fmt} compressed bgr8")
        out.data = buf.tobytes()
        return bytes(serialize_message(out))

    def _markers(self, topic: str, data: bytes, t_ns: int) -> list[dict[str, Any]]:
        if topic == ACTION_TOPIC:
            self.tracker.on_action(t_ns)
        elif topic == "/diagnostics":
            arr = deserialize_message(data, DiagnosticArray)
            for st in arr.status:
                if st.name == "learner":
                    values = {kv.key: kv.value for kv in st.values}
                    if "episodes" in values:
                        return self.tracker.on_learner(t_ns, st.message, int(values["episodes"]))
        elif topic == "/recorder/status":
            st = deserialize_message(data, DiagnosticStatus)
            values = {kv.key: kv.value for kv in st.values}
            if "recording" in values:
                return self.tracker.on_recorder(t_ns, values["recording"] == "True",
                                                int(values.get("saved", 0)), st.message)
        return []

    def _write_marker(self, marker: dict[str, Any], t_ns: int) -> None:
        msg = String(data=marker_text(marker))
        self.writer.write(MARKER_TOPIC, bytes(serialize_message(msg)), t_ns)
        if self.path is not None:  # the bag's node announces them; a live view only shows them
            self.marker_pub.publish(msg)

    def _failed(self, why: str) -> None:
        self.recording = False
        self.error = why
        self.get_logger().error(f"recording stopped: {why}; the other nodes go on")
        self._diagnostics()

    # ---------------------------------------------------------------- status
    def _diagnostics(self) -> None:
        if self.error and self.subs:  # stopped: let DDS stop delivering to this process
            for sub in self.subs:
                self.destroy_subscription(sub)
            self.subs = []
        w = self.writer
        n = sum(w.counts.values())
        values = {
            "path": str(self.path),
            "recording": self.recording,
            "messages": n,
            "bytes": w.bytes_written,
            "dropped": self.dropped,
            "queued": self.queue.qsize(),
            "rate_hz": f"{n / max(time.monotonic() - self.t_start, 1e-3):.1f}",
        }
        st = DiagnosticStatus(
            level=DiagnosticStatus.ERROR if self.error else DiagnosticStatus.OK,
            name="bag",
            message=self.error or ("recording" if self.recording else "stopped"),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def close(self) -> None:
        """Drain the queue, end open episodes, write the summary."""
        self.recording = False
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is None and not self.writer.closed:
            try:
                t = time.time_ns()
                for marker in self.tracker.close(t):
                    msg = String(data=marker_text(marker))
                    self.writer.write(MARKER_TOPIC, bytes(serialize_message(msg)), t)
                self.writer.close()
            except BagWriteError as e:
                self.error = str(e)
        if self.error:
            self.get_logger().error(f"bag {self.path}: {self.error}")
        else:
            self.get_logger().info(f"bag {self.path}: {sum(self.writer.counts.values())} "
                                   f"messages, {self.writer.bytes_written} bytes, "
                                   f"{self.dropped} dropped")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # One executor thread: the callbacks only queue bytes; the writer thread does the rest.
    return run_node(
        "bag_node", BagNode, argv, errors=(ValueError, BagError), threads=1,
        cleanup=lambda n: n.close(), exit_code=lambda n: 1 if n.error else 0,
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
