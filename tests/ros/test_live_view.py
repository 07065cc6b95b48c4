"""The live view serves the graph's messages to a Foxglove client: channels advertised with
their ROS 2 schemas, and a subscriber gets the CDR bytes the graph published."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def test_a_foxglove_client_sees_the_topics_and_receives_the_messages() -> None:
    from geometry_msgs.msg import Vector3Stamped
    from rclpy.serialization import deserialize_message, serialize_message
    from video2reward.ros.bag import BagError
    from video2reward.ros.live_view import LiveView
    from websockets.sync.client import connect

    view = LiveView("127.0.0.1", 0)  # port 0: any free port
    try:
        view.add_topic("/reward/reward", "geometry_msgs/msg/Vector3Stamped")
        with connect(f"ws://127.0.0.1:{view.port}", subprotocols=["foxglove.sdk.v1"],
                     open_timeout=10) as ws:  # fmt: skip
            channels: dict[str, dict[str, object]] = {}
            deadline = time.monotonic() + 10
            while "/reward/reward" not in channels and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=10))
                if msg.get("op") == "advertise":
                    channels.update({c["topic"]: c for c in msg["channels"]})
            ch = channels["/reward/reward"]
            assert ch["encoding"] == "cdr"
            assert ch["schemaName"] == "geometry_msgs/msg/Vector3Stamped"
            assert ch["schemaEncoding"] == "ros2msg"
            assert "MSG: std_msgs/Header" in str(ch["schema"])
            ws.send(json.dumps({"op": "subscribe",
                                "subscriptions": [{"id": 7, "channelId": ch["id"]}]}))
            sent = Vector3Stamped()
            sent.vector.x, sent.vector.y = 0.25, 0.9
            data = bytes(serialize_message(sent))
            got = None
            while got is None and time.monotonic() < deadline:
                view.write("/reward/reward", data, 123_456_789)  # until the subscription lands
                try:
                    frame = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                if isinstance(frame, bytes) and frame[0] == 0x01:  # message data
                    sub_id, log_time = struct.unpack_from("<IQ", frame, 1)
                    assert sub_id == 7 and log_time == 123_456_789
                    got = frame[13:]
            assert got == data
            back = deserialize_message(got, Vector3Stamped)
            assert (back.vector.x, back.vector.y) == (0.25, 0.9)
        assert view.counts["/reward/reward"] >= 1
    finally:
        view.close()
    view.write("/reward/reward", b"", 0)  # closed: ignored, never raises
    with pytest.raises(BagError, match="cannot serve"):
        LiveView("256.0.0.1", 0)


def test_the_bag_node_serves_a_live_view_without_recording(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from websockets.sync.client import connect

    with socket.socket() as s:  # a free port for the node
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ROS_DOMAIN_ID": "88", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "video2reward.robot.ros.bag_node", "--ros-args",
         "-p", "path:=''", "-p", f"live_port:={port}"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    topics: set[str] = set()
    # Wait for both: the live view starts before the node has made all its publishers, so an
    # early advertisement may lack /bag/episode (stopping then would kill the node mid-start).
    want = {"/reward/reward", "/bag/episode"}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not want <= topics:
            try:
                with connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"],
                             open_timeout=2) as ws:  # fmt: skip
                    while not want <= topics:
                        msg = json.loads(ws.recv(timeout=5))
                        if msg.get("op") == "advertise":
                            topics |= {c["topic"] for c in msg["channels"]}
            except (OSError, TimeoutError):
                time.sleep(0.3)  # the node is still starting
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert want <= topics, out[-2000:]
    assert list(tmp_path.iterdir()) == []  # no bag written
