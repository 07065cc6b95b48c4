"""MCAP bags with ROS 2 schemas: the writer the bag node uses and a reader that survives a cut.

    w = BagWriter("runs/graph.mcap")
    w.add_topic("/reward/reward", "geometry_msgs/msg/Vector3Stamped")
    w.write("/reward/reward", cdr_bytes, log_time_ns=time.time_ns())   # serialize_message(msg)
    w.close()                                                          # summary + index

    bag = BagReader("runs/graph.mcap")
    for m in bag.messages(["/reward/reward"]):
        m.topic, m.type_name, m.log_time_ns, m.decode().vector.x
    bag.truncated                    # None, or why the file ended before its footer

The file is what ``ros2 bag record -s mcap`` writes: profile ``ros2``, schemas encoded
``ros2msg`` whose text is the type's ``.msg`` file followed by every type it uses (separated
by a line of 80 ``=`` and ``MSG: pkg/Type``), messages encoded ``cdr`` (what
``rclpy.serialization.serialize_message`` returns), in zstd chunks. rosbag2 (``ros2 bag info``,
``ros2 bag play``), Foxglove and the ``mcap`` CLI read it. Definitions come from the ``.msg``
files of the installed interface packages: the ament index when a ROS 2 setup is sourced, else
``share/<pkg>/msg`` next to the Python package (PyPI wheels: ``.venv/share``).

Disk full: every write goes straight to the file (no Python buffer), and the offset after the
last write that completed is kept. An ``OSError`` while writing (``ENOSPC``) truncates the file
back to that offset, which frees the space of the chunk cut short, and ends the file with a
Metadata record naming the error, a DataEnd and a Footer without a summary (valid MCAP:
readers scan it). ``write`` then raises :class:`BagWriteError`; the writer accepts nothing more.

Reading is a linear scan (no index needed), so a bag cut anywhere (a crash, a copy stopped
half-way) still reads: :meth:`BagReader.messages` yields the messages of every complete chunk
and stops at the first record it cannot read, setting :attr:`BagReader.truncated` to why. A
file that is not MCAP at all, or ends before its header, raises :class:`BagError`.

This module imports no ROS package: messages are bytes here, and the reader decodes them with
the schemas stored in the bag (``mcap_ros2``), so bags open on machines without ROS.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import json
import os
import struct
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mcap.data_stream import RecordBuilder
from mcap.exceptions import McapError
from mcap.records import Channel, DataEnd, Footer, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

PROFILE = "ros2"
SCHEMA_ENCODING = "ros2msg"
MESSAGE_ENCODING = "cdr"
MAGIC = b"\x89MCAP0\r\n"
LIBRARY = "video2reward bag_node"

# The learning graph's topics (launch/_graph.launch.xml, teleop_record, calib_collect) and their
# types. Raw images are stored as sensor_msgs/CompressedImage on "<topic>/compressed", the name
# image_transport's compressed plugin uses.
GRAPH_TOPICS: dict[str, str] = {
    "/camera/color/image_raw": "sensor_msgs/msg/Image",
    "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
    "/reward/reward": "geometry_msgs/msg/Vector3Stamped",
    "/xarm_driver/action": "std_msgs/msg/Float32MultiArray",
    "/xarm_driver/applied_action": "std_msgs/msg/Float32MultiArray",
    "/xarm_driver/ee_pose": "geometry_msgs/msg/PoseStamped",
    "/xarm_driver/joint_states": "sensor_msgs/msg/JointState",
    "/xarm_driver/status": "diagnostic_msgs/msg/DiagnosticStatus",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "/twin/success": "std_msgs/msg/Bool",
    "/learner/intervention": "std_msgs/msg/Float32MultiArray",
    "/recorder/status": "diagnostic_msgs/msg/DiagnosticStatus",
    "/calib_collect/T_base_cam": "geometry_msgs/msg/TransformStamped",
}
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
COMPRESSED_SUFFIX = "/compressed"
# Episode markers the bag node derives (EpisodeTracker) and writes: std_msgs/String, JSON text.
MARKER_TOPIC = "/bag/episode"
MARKER_TYPE = "std_msgs/msg/String"

_BUILTIN_TYPES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring",
}  # fmt: skip
_SEPARATOR = "=" * 80


class BagError(RuntimeError):
    """A bag cannot be opened, written or read as asked."""


class BagWriteError(BagError):
    """Writing failed (disk full); the file was closed with what was written before."""


class MessageDefinitionError(BagError):
    """A message type's .msg definition is not installed where ROS 2 keeps them."""


# ---------------------------------------------------------------------- message definitions
def split_type(type_name: str) -> tuple[str, str]:
    """``"pkg/msg/Type"`` or ``"pkg/Type"`` -> ``("pkg", "Type")``."""
    parts = type_name.strip().split("/")
    if len(parts) == 3 and parts[1] == "msg" and all(parts):
        return parts[0], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise MessageDefinitionError(f"{type_name!r} is not a message type name (pkg/msg/Type)")


def share_dirs(package: str) -> list[Path]:
    """Where ``package``'s interface files may be: its ament share directory (a sourced ROS 2),
    then ``share/<package>`` above its Python module (colcon install, PyPI wheels)."""
    dirs: list[Path] = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(package)))
    except (ImportError, LookupError, OSError, ValueError):
        pass  # no ament index (AMENT_PREFIX_PATH unset) or the package is not in it
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None and spec.origin else None
    for parent in Path(origin).parents if origin else ():
        candidate = parent / "share" / package
        if candidate.is_dir():
            dirs.append(candidate)
            break
    dirs.append(Path(sys.prefix) / "share" / package)
    return list(dict.fromkeys(dirs))


def _msg_file(package: str, name: str) -> Path:
    looked = share_dirs(package)
    for d in looked:
        f = d / "msg" / f"{name}.msg"
        if f.is_file():
            return f
    raise MessageDefinitionError(
        f"no definition of {package}/msg/{name}: {name}.msg is not in "
        + ", ".join(str(d / "msg") for d in looked)
        + f" (source the ROS 2 setup, or install the {package} interface package)"
    )


def _dependencies(text: str, package: str) -> list[tuple[str, str]]:
    """The message types a .msg text uses, in order of first use."""
    deps: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        base = line.split()[0].split("[", 1)[0].split("<", 1)[0]
        if base in _BUILTIN_TYPES:
            continue
        if base == "Header":
            dep = ("std_msgs", "Header")
        elif "/" in base:
            dep = split_type(base)
        else:
            dep = (package, base)
        if dep not in deps:
            deps.append(dep)
    return deps


def message_definition(type_name: str) -> str:
    """The ``ros2msg`` schema text of ``type_name``: its .msg text, then each type it uses
    (recursively, once each) after a separator line and ``MSG: pkg/Type``, as rosbag2 writes it.
    Raises :class:`MessageDefinitionError` naming the type and where it looked."""
    package, name = split_type(type_name)
    main = _msg_file(package, name).read_text()
    parts = [main.rstrip("\n")]
    seen = {(package, name)}
    todo = deque(_dependencies(main, package))
    while todo:
        dep = todo.popleft()
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_file(*dep).read_text()
        parts.append(f"{_SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{text.rstrip(chr(10))}")
        todo.extend(_dependencies(text, dep[0]))
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- writing
class _TrackedStream:
    """Unbuffered writes to ``raw`` that remember the offset after the last complete write.

    Not an ``io.RawIOBase``: the MCAP writer would wrap one in a BufferedWriter, whose buffer
    would hide which bytes reached the file when the disk fills."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.pos = raw.tell()
        self.good = self.pos

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = self.raw.write(view[done:])
            if not n:
                raise OSError(errno.EIO, f"the file accepted no bytes ({n!r})")
            done += n
            self.pos += n
        self.good = self.pos
        return done

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.raw.flush()


def _tail(error: str | None) -> bytes:
    """What ends a bag cut short: [Metadata naming the error], DataEnd, Footer (no summary)."""
    b = RecordBuilder()
    if error:
        Metadata(name="video2reward_bag_error", metadata={"error": error}).write(b)
    DataEnd(data_section_crc=0).write(b)
    Footer(summary_start=0, summary_offset_start=0, summary_crc=0).write(b)
    return bytes(b.end()) + MAGIC


def _fsync(raw: BinaryIO) -> None:
    # an in-memory stream (tests) has no file descriptor
    with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
        os.fsync(raw.fileno())


_COMPRESSION = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4,
                "none": CompressionType.NONE}  # fmt: skip


class BagWriter:
    """One MCAP file of ROS 2 messages (CDR bytes); see the module docstring.

    ``path`` must not exist (a recording is never overwritten); its folder is created. Pass
    ``stream`` (a binary file object with write, tell, seek, truncate) to write elsewhere."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stream: BinaryIO | None = None,
        chunk_bytes: int = 1 << 20,
        compression: str = "zstd",
        fsync_on_close: bool = True,
    ):
        self.path = Path(path)
        if compression not in _COMPRESSION:
            raise ValueError(f"compression must be zstd, lz4 or none, got {compression!r}")
        if chunk_bytes < 1024:
            raise ValueError(f"chunk_bytes must be at least 1024, got {chunk_bytes}")
        if stream is None:
            if self.path.exists():
                raise BagError(f"{self.path} already exists; a bag is never overwritten")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                stream = open(self.path, "xb", buffering=0)  # noqa: SIM115 (closed by close())
            except OSError as e:
                raise BagError(f"cannot create the bag {self.path}: {e.strerror or e}") from e
        self._raw: BinaryIO = stream
        self._out = _TrackedStream(stream)
        self._fsync = fsync_on_close
        self._mcap = McapWriter(
            self._out,  # type: ignore[arg-type]  # duck-typed: write, tell, flush
            chunk_size=chunk_bytes,
            compression=_COMPRESSION[compression],
        )
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}  # topic -> (channel id, type)
        self.counts: dict[str, int] = {}
        self.error: str | None = None
        self.closed = False
        self._guard(lambda: self._mcap.start(profile=PROFILE, library=LIBRARY))

    @property
    def bytes_written(self) -> int:
        return self._out.good

    @property
    def topics(self) -> dict[str, str]:
        return {t: typ for t, (_, typ) in self._channels.items()}

    def add_topic(
        self,
        topic: str,
        type_name: str,
        definition: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Declare ``topic`` of ``type_name`` (``pkg/msg/Type``); the schema is written once per
        type, with ``definition`` or the installed .msg files (:func:`message_definition`)."""
        self._check_open()
        if topic in self._channels:
            if self._channels[topic][1] != type_name:
                raise BagError(f"{topic} is already recorded as {self._channels[topic][1]}, "
                               f"not {type_name}")  # fmt: skip
            return
        split_type(type_name)
        if type_name not in self._schemas:
            text = definition if definition is not None else message_definition(type_name)
            self._schemas[type_name] = self._guard(
                lambda: self._mcap.register_schema(type_name, SCHEMA_ENCODING, text.encode())
            )
        schema_id = self._schemas[type_name]
        cid = self._guard(lambda: self._mcap.register_channel(
            topic, MESSAGE_ENCODING, schema_id, dict(metadata or {})))  # fmt: skip
        self._channels[topic] = (cid, type_name)
        self.counts[topic] = 0

    def write(
        self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None
    ) -> None:
        """Append one CDR-serialized message of a declared topic."""
        self._check_open()
        if topic not in self._channels:
            raise BagError(f"{topic} was not declared with add_topic")
        cid = self._channels[topic][0]
        seq = self.counts[topic]
        self._guard(lambda: self._mcap.add_message(
            cid, log_time=int(log_time_ns), data=bytes(data),
            publish_time=int(log_time_ns if publish_time_ns is None else publish_time_ns),
            sequence=seq % (1 << 32)))  # fmt: skip
        self.counts[topic] = seq + 1

    def flush(self) -> None:
        """End the chunk in progress and write it: a crash after this loses nothing before."""
        self._check_open()
        self._guard(self._mcap.flush)

    def close(self) -> None:
        """Write the summary (schemas, channels, statistics, chunk index) and close the file.
        After a write error the file is already closed; closing again does nothing."""
        if self.closed:
            return
        try:
            self._guard(self._mcap.finish)
            if self._fsync:
                _fsync(self._raw)
        finally:
            if not self.closed:
                self.closed = True
                self._raw.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.error is not None:
            raise BagWriteError(self.error)
        if self.closed:
            raise BagError(f"the bag {self.path} is closed")

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except OSError as e:
            self._fail(e)
            raise BagWriteError(self.error or str(e)) from e

    def _fail(self, e: OSError) -> None:
        """Cut the file back to its last complete write, end it there, close it."""
        good = self._out.good
        why = os.strerror(e.errno) if e.errno else str(e)
        self.error = (f"writing the bag {self.path} failed ({why}); it was closed at "
                      f"{good} bytes and the messages before that are readable")  # fmt: skip
        ended = False
        for tail in (_tail(self.error), _tail(None)):  # the smaller one when space is short
            try:
                self._raw.truncate(good)
                self._raw.seek(good)
                self._out.pos = good
                self._out.write(tail)
                self._raw.flush()
                _fsync(self._raw)
                ended = True
                break
            except OSError:
                continue
        if not ended:  # the prefix alone: BagReader and `mcap recover` still read it
            with contextlib.suppress(OSError):
                self._raw.truncate(good)
        self.closed = True
        with contextlib.suppress(OSError):
            self._raw.close()


# ---------------------------------------------------------------------- reading
@dataclass
class BagMessage:
    topic: str
    type_name: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes
    _decode: Callable[[bytes], Any] | None = field(default=None, repr=False)

    def decode(self) -> Any:
        """The message as an object with the ROS field names (decoded with the bag's schema)."""
        if self._decode is None:
            raise BagError(f"{self.topic}: no ros2msg schema to decode {self.type_name} with")
        return self._decode(self.data)


# What a scan stops at: a record cut short or garbled (mcap raises these for short reads,
# bad lengths and CRCs; zstd/lz4 for a cut chunk).
_READ_ERRORS: tuple[type[BaseException], ...] = (McapError, EOFError, struct.error, ValueError,
                                                 zlib.error, RuntimeError, MemoryError)  # fmt: skip
try:
    import zstandard

    _READ_ERRORS = (*_READ_ERRORS, zstandard.ZstdError)
except ImportError:  # pragma: no cover - mcap depends on zstandard
    pass


class BagReader:
    """Reads an MCAP bag front to back; see the module docstring for cut files."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise BagError(f"bag {self.path} does not exist")
        with open(self.path, "rb") as f:
            head = f.read(len(MAGIC))
        if head != MAGIC:
            what = "is empty" if not head else "is not an MCAP file (wrong magic bytes)"
            raise BagError(f"{self.path} {what}")
        self.truncated: str | None = None
        self.error_metadata: str | None = None  # the writer's disk-full note, if it left one
        self.topics: dict[str, str] = {}
        self.profile: str | None = None
        self._decoders: dict[int, Callable[[bytes], Any] | None] = {}

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Every message (of ``topics``), in the order written. Stops at the first unreadable
        record and sets :attr:`truncated`; raises :class:`BagError` when not even the header
        reads."""
        from mcap.records import Header
        from mcap_ros2.decoder import DecoderFactory

        wanted = set(topics) if topics is not None else None
        factory = DecoderFactory()
        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        self.truncated = None
        count = 0
        with open(self.path, "rb") as f:
            records = StreamReader(f, validate_crcs=True, record_size_limit=1 << 31).records
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except _READ_ERRORS as e:
                    if self.profile is None:
                        raise BagError(f"{self.path}: the MCAP header does not read ({e!r})") \
                            from e
                    self.truncated = (
                        f"{self.path} ends early near byte {f.tell()} ({type(e).__name__}: "
                        f"{str(e) or 'cut short'}); read the {count} messages before it"
                    )
                    break
                if isinstance(record, Header):
                    self.profile = record.profile
                elif isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                    schema = schemas.get(record.schema_id)
                    self.topics[record.topic] = schema.name if schema is not None else ""
                elif isinstance(record, Metadata) and record.name == "video2reward_bag_error":
                    self.error_metadata = record.metadata.get("error")
                elif isinstance(record, Message):
                    ch = channels.get(record.channel_id)
                    if ch is None or (wanted is not None and ch.topic not in wanted):
                        continue
                    count += 1
                    yield BagMessage(
                        ch.topic, self.topics.get(ch.topic, ""), record.log_time,
                        record.publish_time, bytes(record.data),
                        self._decoder(factory, ch, schemas.get(ch.schema_id)),
                    )  # fmt: skip

    def _decoder(
        self, factory: Any, channel: Channel, schema: Schema | None
    ) -> Callable[[bytes], Any] | None:
        if channel.id not in self._decoders:
            try:
                self._decoders[channel.id] = factory.decoder_for(channel.message_encoding, schema)
            except (McapError, ValueError, KeyError) as e:
                raise BagError(f"{self.path}: the schema of {channel.topic} does not parse: {e}") \
                    from e
        return self._decoders[channel.id]

    def counts(self) -> dict[str, int]:
        """Messages per topic (a full scan)."""
        out: dict[str, int] = {}
        for m in self.messages():
            out[m.topic] = out.get(m.topic, 0) + 1
        return out


# ---------------------------------------------------------------------- episode markers
@dataclass
class EpisodeTracker:
    """Episode boundaries from what the graph already publishes; the bag node feeds it.

    The graph has no episode topic. The recorder (teleop_record) publishes ``/recorder/status``
    on every start/stop service call, with ``recording`` and ``saved``: its boundaries are
    exact. The learner publishes only ``/diagnostics`` once a second (``phase``: ``run``
    while acting, and the count of committed ``episodes``), and its commands on
    ``/xarm_driver/action`` at the control rate; between episodes it calls enable/home
    (services, not recordable), so commands pause. A boundary is placed at the commands: an
    episode starts at its first command and ends at its last (the zero "hold still"); when
    one diagnostics period holds several episodes, they are split at the longest pauses.
    Episodes shorter than a diagnostics period next to a dropped one can merge with it.

    Each method returns the markers to write: dicts with ``event`` (start | end), ``source``
    (learner | recorder), ``episode`` (counted in this bag), ``t_ns`` (the boundary, on the
    bag's log clock) and, on ``end``, ``committed`` (the node stored it) and ``success``
    (known for the recorder only, else None)."""

    actions: deque[int] = field(default_factory=lambda: deque(maxlen=100_000))
    boundary_ns: int = 0
    open_start: dict[str, int] = field(default_factory=dict)  # source -> start t_ns
    episode: int = 0
    _phase: str | None = None
    _count: int | None = None
    _recording: bool | None = None
    _saved: int = 0

    def on_action(self, t_ns: int) -> None:
        self.actions.append(t_ns)

    def on_learner(self, t_ns: int, phase: str, episodes: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._count is None or episodes < self._count:  # first report, or a restarted node
            self._count, self._phase = episodes, phase
            if phase == "run" and "learner" not in self.open_start:
                out.append(self._start("learner", self._first_action_after(self.boundary_ns, t_ns)))
            return out
        new = episodes - self._count
        acts = [a for a in self.actions if self.boundary_ns < a <= t_ns]
        if new > 0:
            running = phase == "run"
            segments = _split_at_pauses(acts, new + (1 if running else 0))
            closed = segments[:new] if segments else []
            for i in range(new):
                seg = closed[i] if i < len(closed) else []
                if "learner" not in self.open_start:
                    out.append(self._start("learner", seg[0] if seg else t_ns))
                out.append(self._end("learner", seg[-1] if seg else t_ns, True, None))
            if running:
                rest = segments[new] if len(segments) > new else []
                out.append(self._start("learner", rest[0] if rest else t_ns))
        elif phase == "run" and "learner" not in self.open_start:
            out.append(self._start("learner", self._first_action_after(self.boundary_ns, t_ns)))
        elif phase not in ("run", "score") and "learner" in self.open_start:
            out.append(self._end("learner", acts[-1] if acts else t_ns, False, None))  # dropped
        self._count, self._phase = episodes, phase
        return out

    def on_recorder(
        self, t_ns: int, recording: bool, saved: int, last_event: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        was = self._recording
        self._recording = recording
        if recording and not was and "recorder" not in self.open_start:
            out.append(self._start("recorder", t_ns))
        elif not recording and was and "recorder" in self.open_start:
            committed = saved > self._saved
            success = None
            if committed and last_event.startswith("saved ep"):
                success = last_event.rstrip().endswith("(success)")
            out.append(self._end("recorder", t_ns, committed, success))
        self._saved = max(self._saved, saved)
        return out

    def close(self, t_ns: int) -> list[dict[str, Any]]:
        """End what is still open when recording stops (not committed as far as the bag knows)."""
        last = self.actions[-1] if self.actions else t_ns
        return [self._end(src, last if src == "learner" else t_ns, False, None)
                for src in list(self.open_start)]  # fmt: skip

    def _first_action_after(self, after_ns: int, default: int) -> int:
        return next((a for a in self.actions if a > after_ns), default)

    def _start(self, source: str, t_ns: int) -> dict[str, Any]:
        self.open_start[source] = t_ns
        return {"event": "start", "source": source, "episode": self.episode, "t_ns": int(t_ns)}

    def _end(self, source: str, t_ns: int, committed: bool, success: bool | None) -> dict[str, Any]:
        start = self.open_start.pop(source, t_ns)
        t_ns = max(int(t_ns), start)
        marker = {"event": "end", "source": source, "episode": self.episode, "t_ns": t_ns,
                  "committed": committed, "success": success}  # fmt: skip
        self.episode += 1
        if source == "learner":
            self.boundary_ns = t_ns
        return marker


def _split_at_pauses(times: Sequence[int], n: int) -> list[list[int]]:
    """``times`` cut into at most ``n`` runs at its ``n - 1`` longest pauses."""
    if not times or n <= 1:
        return [list(times)] if times else []
    gaps = sorted(range(1, len(times)), key=lambda i: times[i] - times[i - 1], reverse=True)
    cuts = sorted(gaps[: n - 1])
    out, prev = [], 0
    for c in [*cuts, len(times)]:
        out.append(list(times[prev:c]))
        prev = c
    return out


def marker_text(marker: dict[str, Any]) -> str:
    return json.dumps(marker, sort_keys=True)


def parse_marker(text: str) -> dict[str, Any]:
    """A marker written by the bag node; raises BagError naming what is wrong."""
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise BagError(f"episode marker is not JSON: {text[:80]!r}") from e
    if not isinstance(m, dict) or m.get("event") not in ("start", "end") or "t_ns" not in m:
        raise BagError(f"episode marker needs event start|end and t_ns: {text[:80]!r}")
    return m


# ---------------------------------------------------------------------- images


def image_from_message(type_name: str, msg: Any) -> Any:
    """(H, W, 3) uint8 RGB of a decoded sensor_msgs/CompressedImage (jpeg, png) or Image (rgb8,
    bgr8, rgba8, bgra8, mono8) from a bag, decoded where the nodes decode them
    (data/images.py, no ROS needed); ValueError naming what does not decode."""
    import numpy as np
    from video2reward.data.images import rgb_from_compressed, rgb_from_raw

    if type_name == COMPRESSED_TYPE:
        return rgb_from_compressed(str(msg.format), bytes(msg.data))
    if type_name != IMAGE_TYPE:
        raise ValueError(f"{type_name} is not an image type ({IMAGE_TYPE}, {COMPRESSED_TYPE})")
    rgb = rgb_from_raw(str(msg.encoding), int(msg.height), int(msg.width), int(msg.step),
                       bytes(msg.data))  # fmt: skip
    return np.ascontiguousarray(rgb)
