"""Import an MCAP bag of the graph (the bag node's, launch ``record_bag``) into an episode store.

    report = import_bag("runs/sim.mcap", "runs/sim_bag.zarr", task="reach")
    report.imported, report.skipped, report.truncated     # [episode index], [reason], why/None

Episodes come from the bag node's markers on ``/bag/episode`` (``ros.bag.EpisodeTracker``: the
learner's episodes, or the recorder's start/stop), committed ones only unless
``include_dropped``; ``episodes="whole"`` makes the whole bag one episode instead (a bag of a
graph with neither). Rows follow ``data.keys`` as the recorder writes them: one per camera
frame of the episode (the frame before the episode's first command, through its last), with

- ``img``: the frame decoded (JPEG/PNG or raw), full size, or ``prepare_frame``'d to
  ``image_size``;
- ``timestamp``: the frame's stamp, seconds from the episode's first frame;
- ``action``: the commands the driver applied (``/xarm_driver/applied_action``, else the
  commands sent on ``/xarm_driver/action``) after the frame and before the next one, deltas
  summed and clipped, the later gripper kept; zeros when none; the last row zeros;
- ``ee_pos``, ``ee_quat`` (w, x, y, z), ``joint_pos``, ``gripper``: the newest driver state
  received before the frame (rows before the first state are dropped), when the bag has it;
- ``reward``: the reward node's reward for this very frame (matched by image stamp; NaN when
  it scored none), when the bag has rewards;
- ``success``: the twin's task predicate (``/twin/success``) before the frame, in twin bags.

Episode success: the recorder's label when known, else ``success_source``: ``reward`` (any
frame the reward model called successful) or ``topic`` (the twin's predicate at any frame).

Alignment is by arrival time in the bag node (``log_time``), one clock for every topic; the
reward is matched to its image by stamp, exactly. A truncated bag (crash, disk full) imports
its intact prefix: the report's ``truncated`` says where it ended, and an episode whose end
marker was lost is skipped with that reason. A file that is not a readable bag raises
:class:`BagImportError`. Needs no ROS install (the bag carries its schemas).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.images import prepare_frame
from video2reward.ros.bag import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    MAGIC,
    MARKER_TOPIC,
    BagError,
    BagReader,
    image_from_message,
    parse_marker,
)

# The reward node's per-frame reward (geometry_msgs/Vector3Stamped x) for the row's frame.
REWARD = "reward"
# sensor_msgs/JointState names as the driver publishes them (ros.convert; the tests compare).
JOINT_NAMES = ("joint1", "joint2", "joint3", "joint4", "joint5")
GRIPPER_JOINT = "drive_joint"
GRIPPER_TRAVEL_RAD = 0.85

IMAGE_TOPIC = "/camera/color/image_raw/compressed"
ACTION_TOPICS = ("/xarm_driver/applied_action", "/xarm_driver/action")
POSE_TOPIC = "/xarm_driver/ee_pose"
JOINTS_TOPIC = "/xarm_driver/joint_states"
REWARD_TOPIC = "/reward/reward"
SUCCESS_TOPIC = "/twin/success"
INFO_TOPIC = "/camera/color/camera_info"
KINDS = {"learner": "agent", "recorder": "teleop", "bag": "bag"}


@dataclass(frozen=True)
class BagImportConfig:
    """``import_bag``'s arguments as one typed record (``v2r record import BAG.mcap ...``)."""

    src: str  # the .mcap bag
    out: str  # the zarr store
    task: str  # task name stored with every episode
    append: bool = False
    overwrite: bool = False
    episodes: str = "markers"  # markers | whole
    include_dropped: bool = False
    success_source: str = "reward"  # reward | topic
    image_topic: str | None = None  # None: /camera/color/image_raw/compressed or the only one
    image_size: int | None = None  # None: full size
    fps: float | None = None  # None: the camera's
    kind: str | None = None  # None: agent (learner), teleop (recorder), bag (whole)


def is_bag_file(path: str | os.PathLike[str]) -> bool:
    """True for a file that starts like an MCAP bag (what ``v2r record import`` dispatches on)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def import_bag_config(cfg: BagImportConfig) -> BagImportReport:
    return import_bag(
        cfg.src, cfg.out, task=cfg.task, append=cfg.append, overwrite=cfg.overwrite,
        episodes=cfg.episodes, include_dropped=cfg.include_dropped,
        success_source=cfg.success_source, image_topic=cfg.image_topic,
        image_size=cfg.image_size, fps=cfg.fps, kind=cfg.kind,
    )  # fmt: skip


class BagImportError(RuntimeError):
    """The bag cannot be imported (unreadable, no images, no episodes, store mismatch)."""


@dataclass
class BagImportReport:
    bag: str
    out: str
    imported: list[int] = field(default_factory=list)  # store episode indices
    skipped: list[str] = field(default_factory=list)  # one reason per episode not imported
    frames: int = 0
    truncated: str | None = None  # the bag ended early: where and why (its prefix was imported)

    def as_dict(self) -> dict[str, Any]:
        return {"bag": self.bag, "out": self.out, "imported": len(self.imported),
                "frames": self.frames, "skipped": self.skipped,
                "truncated": self.truncated}  # fmt: skip


@dataclass
class _Stream:
    """One topic's messages: arrival times (sorted) and values."""

    t: list[int] = field(default_factory=list)
    v: list[Any] = field(default_factory=list)
    _arr: np.ndarray | None = None

    def add(self, t_ns: int, value: Any) -> None:
        self.t.append(t_ns)
        self.v.append(value)
        self._arr = None

    def latest(self, t_ns: int) -> Any:
        """The newest value received at or before ``t_ns`` (the first one before any)."""
        if self._arr is None:
            self._arr = np.asarray(self.t, np.int64)
        i = int(np.searchsorted(self._arr, t_ns, side="right")) - 1
        return self.v[max(i, 0)]


@dataclass
class _Bag:
    image_topic: str
    image_type: str
    images: _Stream  # value: header stamp ns
    actions: _Stream
    poses: _Stream
    joints: _Stream
    success: _Stream
    rewards: dict[int, tuple[float, float]]  # image stamp -> (reward, success call)
    markers: list[dict[str, Any]]
    intrinsics: dict[str, float] | None
    twin: bool
    truncated: str | None


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _pick_image_topic(topics: dict[str, str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in topics:
            raise BagImportError(f"the bag has no topic {wanted}; it has {sorted(topics)}")
        return wanted
    images = [t for t, typ in topics.items() if typ in (COMPRESSED_TYPE, IMAGE_TYPE)]
    if IMAGE_TOPIC in images:
        return IMAGE_TOPIC
    if not images:
        raise BagImportError(f"the bag has no image topic ({COMPRESSED_TYPE} or {IMAGE_TYPE}); "
                             f"it has {sorted(topics)}")  # fmt: skip
    return sorted(images)[0]


def _scan(reader: BagReader, image_topic: str | None) -> _Bag:
    """Everything but the pixels, in one pass."""
    streams = {k: _Stream() for k in ("img", "act", "cmd", "pose", "joints", "ok")}
    rewards: dict[int, tuple[float, float]] = {}
    markers: list[dict[str, Any]] = []
    intrinsics: dict[str, float] | None = None
    chosen: str | None = image_topic
    for m in reader.messages():
        if chosen is None and m.type_name in (COMPRESSED_TYPE, IMAGE_TYPE):
            chosen = _pick_image_topic(reader.topics, None)
        topic = m.topic
        if topic == chosen:
            streams["img"].add(m.log_time_ns, _stamp_ns(m.decode()))
        elif topic in ACTION_TOPICS:
            data = np.asarray(m.decode().data, np.float32)
            if data.shape == (keys.ACTION_DIM,):
                streams["act" if topic == ACTION_TOPICS[0] else "cmd"].add(m.log_time_ns, data)
        elif topic == POSE_TOPIC:
            p = m.decode().pose
            streams["pose"].add(m.log_time_ns, (
                np.array([p.position.x, p.position.y, p.position.z], np.float32),
                np.array([p.orientation.w, p.orientation.x, p.orientation.y,
                          p.orientation.z], np.float32)))  # fmt: skip
        elif topic == JOINTS_TOPIC:
            js = m.decode()
            pos = dict(zip(js.name, js.position, strict=False))
            q = np.array([pos.get(n, math.nan) for n in JOINT_NAMES], np.float32)
            g = pos.get(GRIPPER_JOINT)
            grip = math.nan if g is None else 1.0 - g / GRIPPER_TRAVEL_RAD
            streams["joints"].add(m.log_time_ns, (q, np.array([grip], np.float32)))
        elif topic == REWARD_TOPIC:
            r = m.decode()
            rewards[_stamp_ns(r)] = (float(r.vector.x), float(r.vector.z))
        elif topic == SUCCESS_TOPIC:
            streams["ok"].add(m.log_time_ns, bool(m.decode().data))
        elif topic == MARKER_TOPIC:
            try:
                markers.append(parse_marker(str(m.decode().data)))
            except BagError as e:
                raise BagImportError(f"{reader.path}: {e}") from e
        elif topic == INFO_TOPIC and intrinsics is None:
            info = m.decode()
            k = list(info.k)
            intrinsics = {"width": float(info.width), "height": float(info.height),
                          "fx": k[0], "fy": k[4], "cx": k[2], "cy": k[5]}  # fmt: skip
    if chosen is None or chosen not in reader.topics:
        chosen = _pick_image_topic(reader.topics, chosen)  # raises, naming the topics there are
    if not streams["img"].t:
        raise BagImportError(f"{reader.path}: no images on {chosen}"
                             + (f" ({reader.truncated})" if reader.truncated else ""))
    actions = streams["act"] if streams["act"].t else streams["cmd"]
    return _Bag(chosen, reader.topics[chosen], streams["img"], actions, streams["pose"],
                streams["joints"], streams["ok"], rewards, markers, intrinsics,
                SUCCESS_TOPIC in reader.topics, reader.truncated)  # fmt: skip


@dataclass
class _Episode:
    source: str
    start_ns: int
    end_ns: int
    committed: bool
    success: bool | None
    rows: list[int] = field(default_factory=list)  # indices into _Bag.images


def _episodes(bag: _Bag, mode: str, skipped: list[str]) -> list[_Episode]:
    if mode == "whole":
        return [_Episode("bag", bag.images.t[0], bag.images.t[-1], True, None)]
    if not bag.markers:
        raise BagImportError(f"the bag has no episode markers on {MARKER_TOPIC} (a bag of a "
                             "graph without learner or recorder); import it with "
                             "episodes='whole'")  # fmt: skip
    out: list[_Episode] = []
    open_: dict[str, dict[str, Any]] = {}
    for m in bag.markers:
        src = str(m.get("source", "bag"))
        if m["event"] == "start":
            if src in open_:
                skipped.append(f"{src} episode started at {open_[src]['t_ns']} has no end marker")
            open_[src] = m
        elif src in open_:
            s = open_.pop(src)
            out.append(_Episode(src, int(s["t_ns"]), int(m["t_ns"]), bool(m.get("committed")),
                                m.get("success")))  # fmt: skip
    for src, s in open_.items():
        why = "the bag ends before its end marker" + (" (truncated)" if bag.truncated else "")
        skipped.append(f"{src} episode started at {s['t_ns']}: {why}")
    return out


def _rows(bag: _Bag, ep: _Episode) -> list[int]:
    t = np.asarray(bag.images.t, np.int64)
    if ep.source == "learner":  # from the frame its first command answered
        first = max(int(np.searchsorted(t, ep.start_ns, side="right")) - 1, 0)
    else:  # the recorder keeps the frames after its start call
        first = int(np.searchsorted(t, ep.start_ns, side="left"))
    last = int(np.searchsorted(t, ep.end_ns, side="right"))
    rows = list(range(first, last))
    for stream in (bag.poses, bag.joints):  # state needed from the first row on
        if stream.t:
            rows = [i for i in rows if t[i] >= stream.t[0]]
    return rows


def _row_actions(bag: _Bag, rows: Sequence[int]) -> np.ndarray:
    """Commands after each row's frame and before the next, merged as the recorder does."""
    out = np.zeros((len(rows), keys.ACTION_DIM), np.float32)
    at = np.asarray(bag.actions.t, np.int64)
    for j in range(len(rows) - 1):  # the last row: no command
        lo = int(np.searchsorted(at, bag.images.t[rows[j]], side="left"))
        hi = int(np.searchsorted(at, bag.images.t[rows[j + 1]], side="left"))
        for k in range(lo, hi):
            a = bag.actions.v[k]
            if k == lo:
                out[j] = a
            else:
                out[j, :3] = np.clip(out[j, :3] + a[:3], -1.0, 1.0)
                out[j, 3] = a[3]
    return out


def _open_store(
    store_path: Path, bag: _Bag, fps: float, image_size: int | None, append: bool, overwrite: bool
) -> EpisodeStore:
    if append and store_path.exists():
        try:
            store = EpisodeStore.open(store_path, mode="a")
        except EpisodeStoreError as e:
            raise BagImportError(str(e)) from e
        if abs(store.fps - fps) > 1e-6:
            raise BagImportError(f"{store_path} is at {store.fps} fps, the bag at {fps:g}; "
                                 f"import with fps={store.fps}")  # fmt: skip
        return store
    if store_path.exists():
        if not overwrite:
            raise BagImportError(f"{store_path} already exists; import with append or overwrite")
        shutil.rmtree(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    intr = bag.intrinsics if image_size is None else None  # a crop changes the intrinsics
    return EpisodeStore.create(store_path, fps=fps, intrinsics=intr,
                               source="twin" if bag.twin else "robot")  # fmt: skip


def _fps(bag: _Bag) -> float:
    stamps = np.unique(np.asarray(bag.images.v, np.int64))
    if stamps.size < 2:
        raise BagImportError("one image only: the frame rate is unknown; give fps")
    period = float(np.median(np.diff(stamps))) * 1e-9
    return round(1.0 / period, 2)


def import_bag(
    bag_path: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    *,
    task: str,
    append: bool = False,
    overwrite: bool = False,
    episodes: str = "markers",
    include_dropped: bool = False,
    success_source: str = "reward",
    image_topic: str | None = None,
    image_size: int | None = None,
    fps: float | None = None,
    kind: str | None = None,
    min_frames: int = 2,
) -> BagImportReport:
    """Import ``bag_path``'s episodes into the store at ``store_path``; see the module doc.

    ``append`` adds to an existing store (same fps and keys), ``overwrite`` replaces one;
    otherwise an existing store is refused. ``fps`` defaults to the camera's (median stamp
    period); ``kind`` to ``agent`` (learner), ``teleop`` (recorder) or ``bag`` (whole)."""
    if not task:
        raise ValueError("task is required: the task name stored with every episode")
    if episodes not in ("markers", "whole"):
        raise ValueError(f"episodes must be markers or whole, got {episodes!r}")
    if success_source not in ("reward", "topic"):
        raise ValueError(f"success_source must be reward or topic, got {success_source!r}")
    if append and overwrite:
        raise ValueError("choose append or overwrite, not both")
    if image_size is not None and not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be in [16, 1024], got {image_size}")
    try:
        reader = BagReader(bag_path)
        bag = _scan(reader, image_topic)
    except BagError as e:
        raise BagImportError(str(e)) from e
    report = BagImportReport(bag=str(bag_path), out=str(store_path), truncated=bag.truncated)
    chosen = _episodes(bag, episodes, report.skipped)
    todo: list[_Episode] = []
    used: set[int] = set()
    for n, ep in enumerate(chosen):
        if not ep.committed and not include_dropped:
            report.skipped.append(f"{ep.source} episode {n}: dropped by the {ep.source} "
                                  "(not committed)")  # fmt: skip
            continue
        ep.rows = _rows(bag, ep)
        if len(ep.rows) < min_frames:
            report.skipped.append(f"{ep.source} episode {n}: {len(ep.rows)} frames with "
                                  f"state (< {min_frames})")  # fmt: skip
            continue
        if used.intersection(ep.rows):
            report.skipped.append(f"{ep.source} episode {n}: overlaps an episode imported "
                                  "before it")  # fmt: skip
            continue
        used.update(ep.rows)
        todo.append(ep)
    if not todo:
        return report
    rate = float(fps) if fps is not None else _fps(bag)
    if not (math.isfinite(rate) and rate > 0):
        raise BagImportError(f"fps must be positive, got {rate}")
    data: dict[int, dict[str, np.ndarray]] = {e: _episode_arrays(bag, ep)
                                              for e, ep in enumerate(todo)}  # fmt: skip
    store = _open_store(Path(store_path), bag, rate, image_size, append, overwrite)
    have = sorted([keys.IMAGE, *data[0]])
    if store.n_episodes and store.data_keys != have:
        raise BagImportError(f"{store_path} holds {store.data_keys} per step, the bag gives "
                             f"{have}: import into a new store")  # fmt: skip
    wanted = {i: (e, j) for e, ep in enumerate(todo) for j, i in enumerate(ep.rows)}
    writers: dict[int, Any] = {}
    index = 0
    try:
        for m in BagReader(bag_path).messages([bag.image_topic]):
            if index >= len(bag.images.t):
                break
            hit = wanted.get(index)
            index += 1
            if hit is None:
                continue
            k, j = hit
            ep = todo[k]
            if k not in writers:
                notes = f"{Path(bag_path).name}: {ep.source} episode from t_ns {ep.start_ns}"
                writers[k] = store.begin_episode(task=task, kind=kind or KINDS[ep.source],
                                                 notes=notes, flush_every=64)  # fmt: skip
            try:
                rgb = image_from_message(m.type_name, m.decode())
            except ValueError as err:
                raise BagImportError(f"{bag.image_topic} frame {index - 1}: {err}") from err
            if image_size is not None:
                rgb = prepare_frame(rgb, image_size)
            row = {name: v[j] for name, v in data[k].items()}
            writers[k].add(**{keys.IMAGE: rgb, **row})
            if j == len(ep.rows) - 1:
                w = writers.pop(k)
                w.set_success(_success(bag, ep, data[k], success_source))
                report.imported.append(w.close())
                report.frames += len(ep.rows)
    except (ValueError, EpisodeStoreError) as err:
        for w in writers.values():
            w.discard()
        raise BagImportError(f"cannot write {store_path}: {err}") from err
    for w in writers.values():  # the second read stopped early (the file changed meanwhile)
        w.discard()
    return report


def _episode_arrays(bag: _Bag, ep: _Episode) -> dict[str, np.ndarray]:
    """Every per-row array but the image."""
    rows = ep.rows
    stamps = np.asarray([bag.images.v[i] for i in rows], np.int64)
    out: dict[str, np.ndarray] = {
        keys.TIMESTAMP: ((stamps - stamps[0]) * 1e-9).astype(np.float64),
        keys.ACTION: _row_actions(bag, rows),
    }
    times = [bag.images.t[i] for i in rows]
    if bag.poses.t:
        poses = [bag.poses.latest(t) for t in times]
        out[keys.EE_POS] = np.stack([p[0] for p in poses])
        out[keys.EE_QUAT] = np.stack([p[1] for p in poses])
    if bag.joints.t:
        joints = [bag.joints.latest(t) for t in times]
        out[keys.JOINT_POS] = np.stack([q[0] for q in joints])
        out[keys.GRIPPER] = np.stack([q[1] for q in joints])
    if bag.rewards:
        out[REWARD] = np.array([bag.rewards.get(int(s), (math.nan, 0.0))[0] for s in stamps],
                               np.float32)  # fmt: skip
    if bag.success.t:
        out[keys.SUCCESS] = np.array([bool(bag.success.latest(t)) for t in times], bool)
    return out


def _success(bag: _Bag, ep: _Episode, arrays: dict[str, np.ndarray], source: str) -> bool:
    if ep.success is not None:
        return bool(ep.success)
    if source == "topic":
        return bool(keys.SUCCESS in arrays and arrays[keys.SUCCESS].any())
    stamps = [bag.images.v[i] for i in ep.rows]
    return any(bag.rewards.get(int(s), (0.0, 0.0))[1] > 0.5 for s in stamps)
