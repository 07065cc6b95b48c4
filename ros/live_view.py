"""A live view of the graph for the lab's Foxglove app: the bag node's messages, as they are
recorded, served over Foxglove's WebSocket protocol (``foxglove-sdk``).

    view = LiveView(host="127.0.0.1", port=8765)
    view.add_topic("/reward/reward", "geometry_msgs/msg/Vector3Stamped")
    view.write("/reward/reward", cdr_bytes, t_ns)        # what BagWriter.write takes
    view.close()

Channels carry the CDR bytes the graph published with their ROS 2 message definitions
(schema encoding ``ros2msg``, message encoding ``cdr``), the same as the MCAP bag, so
Foxglove decodes them with its built-in ROS 2 support: open
``ws://<host>:<port>`` in Foxglove ("Open connection" -> Foxglove WebSocket). It binds to
localhost unless told otherwise: the view is unauthenticated, so expose it beyond the
machine (``host:=0.0.0.0``) only on the lab's own network.
"""

from __future__ import annotations

from typing import Any

from video2reward.ros.bag import BagError, message_definition


class LiveView:
    """Same writing interface as ``ros.bag.BagWriter`` (add_topic, write, flush, close)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, name: str = "video2reward"):
        try:
            import foxglove
        except ImportError as e:
            raise BagError("the live view needs the foxglove-sdk package "
                           "(pip install foxglove-sdk)") from e  # fmt: skip
        self._fg = foxglove
        try:
            self.server = foxglove.start_server(name=name, host=host, port=port)
        except Exception as e:  # the SDK raises its own error types (port in use, bad host)
            raise BagError(f"cannot serve the live view on {host}:{port}: {e}") from e
        self.host, self.port = host, int(self.server.port)
        self._channels: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.bytes_written = 0  # bytes offered to viewers
        self.closed = False

    @property
    def topics(self) -> list[str]:
        return list(self._channels)

    def add_topic(self, topic: str, type_name: str) -> None:
        schema = self._fg.Schema(
            name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
        )
        self._channels[topic] = self._fg.Channel(topic, schema=schema, message_encoding="cdr")
        self.counts[topic] = 0

    def write(self, topic: str, data: bytes, log_time_ns: int) -> None:
        if self.closed:
            return
        self._channels[topic].log(bytes(data), log_time=int(log_time_ns))
        self.counts[topic] += 1
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Nothing is buffered: messages go to connected viewers as they are written."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for ch in self._channels.values():
                ch.close()
            self.server.stop()
