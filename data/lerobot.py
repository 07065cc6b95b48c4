"""Episode stores to and from LeRobot v3.0 dataset folders: ``v2r record export|import``.

    v2r record export demos.zarr format=lerobot out=demos_lerobot/      # codec=av1, camera=top
    v2r record import demos_lerobot/ out=demos.zarr                     # meta/info.json found

    report = export_lerobot("demos.zarr", "demos_lerobot/")
    summary = import_lerobot(LeRobotImportConfig(src="demos_lerobot/", out="demos.zarr"))

The folder follows LeRobot's ``codebase_version`` "v3.0": ``meta/info.json`` (schema, fps, path
templates, size limits), ``meta/stats.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-C/
file-F.parquet`` (one row per episode: length, row range, data and video file, video time
range), ``data/chunk-C/file-F.parquet`` (one row per frame, many episodes per file) and
``videos/observation.images.<camera>/chunk-C/file-F.mp4`` (many episodes per file, each one a
time range). Key mapping, the action convention and the codec tolerance: docs/formats.md.

Both directions leave nothing half-written: the export fills a hidden folder beside ``out``
and renames it when complete; the import checks every file the dataset names before it
writes, decodes into a hidden store beside ``out`` and renames it (or, with ``append``, copies
its episodes into the existing store once all of them decoded).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError, shift_rows

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + _CHUNK_FILE + ".parquet"
# LeRobot's defaults: files per chunk folder, and the size (MiB) at which a file is closed.
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 200

CAMERA = "front"  # the store's one camera becomes observation.images.<CAMERA>
IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
SUCCESS = "next.success"  # LeRobot's outcome column: the episode's label on its last frame
EXTRA_PREFIX = "v2r."  # a store key without a LeRobot name: "v2r.<key>", its dtype and shape
FOREIGN_PREFIX = "lerobot."  # a LeRobot feature this project has no key for, when imported
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

# observation.state: the store keys it concatenates, in this order, when the store has them.
# (store key, component names, unit of each component)
STATE_PARTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (keys.EE_POS, ("ee_x", "ee_y", "ee_z"), ("m",) * 3),
    (keys.EE_QUAT, ("ee_qw", "ee_qx", "ee_qy", "ee_qz"), ("1",) * 4),
    (keys.JOINT_POS, tuple(f"joint{i}" for i in range(1, 6)), ("rad",) * 5),
    (keys.GRIPPER, ("gripper",), ("open fraction",)),
)
STATE_NOTE = (
    "tool-centre point position in the robot base frame (m); tool orientation in the base "
    "frame as a unit quaternion (w, x, y, z); joint angles (rad); gripper opening fraction "
    "(0 closed, 1 fully open = 850 on the xArm)"
)
ACTION_NAMES = ("dx", "dy", "dz", "gripper")
ACTION_NOTE = (
    "normalized Cartesian command actually applied after safety clipping, taken after the "
    "observation of the same frame: dx, dy, dz in [-1, 1] scale the envelope's max_step_m "
    "(metres per step) in the base frame; gripper in [-1, 1], -1 open ... +1 closed"
)

# codec option -> (PyAV encoder, encoder options recorded in info.json as video.<name>)
CODECS: dict[str, tuple[str, dict[str, Any]]] = {
    "h264": ("libx264", {"crf": 18, "g": 2, "preset": "medium", "bf": 0}),
    "av1": ("libsvtav1", {"crf": 30, "g": 2, "preset": 8}),
}
PIX_FMT = "yuv420p"

# numpy dtype names a feature may have (LeRobot's "dtype" strings for numeric columns)
_PA_TYPES: tuple[str, ...] = ("bool", "float16", "float32", "float64")
_PA_TYPES += tuple(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64))


class LeRobotFormatError(RuntimeError):
    """A LeRobot folder is missing, incomplete or not in the v3.0 layout; or cannot be written."""


# ---------------------------------------------------------------------------------- helpers
def _pa() -> Any:
    import pyarrow as pa

    return pa


def _pq() -> Any:
    import pyarrow.parquet as pq

    return pq


def _pc() -> Any:
    import pyarrow.compute as pc

    return pc


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after ``(chunk, file)``: ``chunks_size`` files per chunk folder."""
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _fps_value(fps: float) -> int | float:
    """info.json's fps: an int, as LeRobot writes it, unless the store's rate is fractional."""
    return round(fps) if abs(fps - round(fps)) < 1e-9 else float(fps)


def _arrow_type(dtype: str, shape: Sequence[int]) -> Any:
    """A feature's parquet column type: shape [1] a scalar, shape [n] a fixed-size list."""
    pa = _pa()
    if dtype not in _PA_TYPES:
        raise LeRobotFormatError(f"dtype {dtype!r} has no parquet column type here")
    scalar = pa.from_numpy_dtype(np.dtype(dtype))
    if list(shape) == [1]:
        return scalar
    if len(shape) != 1:
        raise LeRobotFormatError(f"shape {list(shape)}: only scalars and vectors are written")
    return pa.list_(scalar, int(shape[0]))


def _column_to_numpy(column: Any, n_rows: int, where: str) -> np.ndarray:
    """A parquet column as (n_rows,) for scalars or (n_rows, n) for (fixed-size) lists."""
    pa = _pa()
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False))
        if n_rows == 0 or flat.size % n_rows:
            raise LeRobotFormatError(f"{where}: rows of unequal length")
        return flat.reshape(n_rows, flat.size // n_rows)
    return np.asarray(arr.to_numpy(zero_copy_only=False))


# ------------------------------------------------------------------------------- statistics
@dataclass
class _Moments:
    """count, mean, sum of squared deviations, min, max of (N, D) rows; merged across episodes."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> _Moments:
        x = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        mean = x.mean(axis=0)
        return cls(len(x), mean, ((x - mean) ** 2).sum(axis=0), x.min(axis=0), x.max(axis=0))

    @classmethod
    def of_pixels(cls, frames: np.ndarray) -> _Moments:
        """Per-channel moments of uint8 RGB frames in [0, 1], exact, through a histogram."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        hist = np.stack(
            [np.bincount(frames[..., c].ravel(), minlength=256) for c in range(3)]
        ).astype(np.float64)
        n = hist.sum(axis=1)
        mean = hist @ levels / n
        m2 = (hist * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1)
        seen = hist > 0
        lo = np.array([levels[s].min() for s in seen])
        hi = np.array([levels[s].max() for s in seen])
        # count is frames, as LeRobot counts images; the moments weigh every pixel.
        return cls(len(frames), mean, m2 * len(frames) / n, lo, hi)

    def merge(self, other: _Moments) -> _Moments:
        n = self.count + other.count
        delta = other.mean - self.mean
        return _Moments(
            n,
            self.mean + delta * other.count / n,
            self.m2 + other.m2 + delta**2 * self.count * other.count / n,
            np.minimum(self.lo, other.lo),
            np.maximum(self.hi, other.hi),
        )

    def as_dict(self, image: bool) -> dict[str, Any]:
        std = np.sqrt(self.m2 / self.count)

        def shaped(v: np.ndarray) -> list[Any]:
            return v.reshape(-1, 1, 1).tolist() if image else v.tolist()

        return {
            "min": shaped(self.lo),
            "max": shaped(self.hi),
            "mean": shaped(self.mean),
            "std": shaped(std),
            "count": [int(self.count)],
        }


# ---------------------------------------------------------------------------------- writers
class _ParquetFiles:
    """Rows appended episode by episode into ``template`` files, one row group per episode.

    A file is closed before an episode that would bring its (in-memory Arrow) size to
    ``limit_mb`` MiB; an episode never spans two files. Returns each episode's (chunk, file).
    """

    def __init__(self, root: Path, template: str, limit_mb: float, chunks_size: int):
        self.root, self.template = root, template
        self.limit = limit_mb * 1024**2
        self.chunks_size = chunks_size
        self.chunk = self.file = 0
        self.used = 0
        self.writer: Any = None
        self.n_files = 0

    def place(self, nbytes: int) -> tuple[int, int]:
        """The (chunk, file) rows of ``nbytes`` go to; closes the current file if full."""
        if self.writer is not None and self.used + nbytes >= self.limit:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)
        return self.chunk, self.file

    def write(self, table: Any) -> None:
        """Rows into the file :meth:`place` chose (one row group)."""
        if self.writer is None:
            path = self.root / self.template.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = _pq().ParquetWriter(str(path), table.schema, compression="snappy")
            self.used = 0
            self.n_files += 1
        self.writer.write_table(table)
        self.used += table.nbytes

    def add(self, table: Any) -> tuple[int, int]:
        where = self.place(table.nbytes)
        self.write(table)
        return where

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _VideoFiles:
    """Frames of one camera encoded episode after episode into ``template`` mp4 files.

    Frame ``k`` of a file has presentation time ``k / fps``; an episode is the range
    [from_timestamp, to_timestamp) of one file. A file is closed before an episode whose
    estimated size (the file's bytes per frame so far) would bring it to ``limit_mb`` MiB.
    """

    def __init__(
        self,
        root: Path,
        template: str,
        video_key: str,
        fps: float,
        codec: str,
        limit_mb: float,
        chunks_size: int,
    ):
        self.root, self.template, self.video_key = root, template, video_key
        self.rate = Fraction(fps).limit_denominator(1001)
        self.encoder, self.options = CODECS[codec]
        self.limit = limit_mb * 1024**2
        self.chunks_size = chunks_size
        self.chunk = self.file = 0
        self.container: Any = None
        self.stream: Any = None
        self.frames = 0  # frames sent to the encoder in this file
        self.bytes = 0  # bytes of the packets written to this file
        self.packets = 0
        self.n_files = 0

    def path(self, chunk: int, file: int) -> Path:
        return self.root / self.template.format(
            video_key=self.video_key, chunk_index=chunk, file_index=file
        )

    def _open(self, height: int, width: int) -> None:
        import av

        path = self.path(self.chunk, self.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w", format="mp4")
        stream = self.container.add_stream(self.encoder, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.codec_context.thread_count = 1
        stream.options = {k: str(v) for k, v in self.options.items()}
        self.stream = stream
        self.frames = self.bytes = self.packets = 0
        self.n_files += 1

    def _mux(self, packets: Sequence[Any]) -> None:
        for p in packets:
            self.bytes += p.size
            self.packets += 1
            self.container.mux(p)

    def add(self, frames: np.ndarray) -> tuple[int, int, float, float]:
        """Encode one episode; returns (chunk, file, from_timestamp, to_timestamp)."""
        import av

        t, h, w, c = frames.shape
        if c != 3 or frames.dtype != np.uint8:
            raise LeRobotFormatError(f"images must be uint8 RGB, got {frames.dtype}{[h, w, c]}")
        if h % 2 or w % 2:
            raise LeRobotFormatError(f"{PIX_FMT} video needs even image sides, got {h}x{w}")
        if self.container is not None:
            per_frame = self.bytes / self.packets if self.packets else 0.0  # encoder lags
            if per_frame * (self.frames + t) >= self.limit:
                self.close()
                self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)
        if self.container is None:
            self._open(h, w)
        start = self.frames
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            self._mux(self.stream.encode(frame))
            self.frames += 1
        return self.chunk, self.file, float(start / self.rate), float(self.frames / self.rate)

    def close(self) -> None:
        if self.container is not None:
            self._mux(self.stream.encode(None))
            self.container.close()
            self.container = None

    def video_info(self, fps: float) -> dict[str, Any]:
        """The feature's ``info``, probed from the first file as LeRobot does."""
        import av

        with av.open(str(self.path(0, 0))) as f:
            s = f.streams.video[0]
            info: dict[str, Any] = {
                "video.height": s.height,
                "video.width": s.width,
                "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.codec_context.pix_fmt or PIX_FMT,
                "video.fps": _fps_value(fps),
                "video.channels": 3,
                "has_audio": False,
            }
        info.update({f"video.{k}": v for k, v in self.options.items() if k in ("crf", "g")})
        info["video.preset"] = self.options.get("preset")
        info["video.extra_options"] = {k: v for k, v in self.options.items() if k == "bf"}
        info["video.video_backend"] = "pyav"
        info["is_depth_map"] = False
        return info


# ----------------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    out: str
    episodes: int = 0
    frames: int = 0
    data_files: int = 0
    video_files: int = 0
    codec: str = ""


def _feature(dtype: str, shape: Sequence[int], names: Any, **info: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": dtype, "shape": list(shape), "names": names}
    if info:
        out["info"] = info
    return out


def _plan_features(store: EpisodeStore, camera: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """info.json's features, and how each is built: {"state": [keys], "action": key|None,
    "extras": {feature: key}, "video": key|None}."""
    data = store.root["data"]
    shapes = {k: tuple(data[k].shape[1:]) for k in store.data_keys}
    dtypes = {k: str(data[k].dtype) for k in store.data_keys}
    features: dict[str, Any] = {}
    plan: dict[str, Any] = {"state": [], "action": None, "extras": {}, "video": None}
    if keys.IMAGE in shapes:
        h, w, c = (shapes[keys.IMAGE] + (0, 0, 0))[:3]
        if len(shapes[keys.IMAGE]) != 3 or c != 3 or dtypes[keys.IMAGE] != "uint8":
            raise LeRobotFormatError(
                f"data/{keys.IMAGE} holds {dtypes[keys.IMAGE]}{list(shapes[keys.IMAGE])} per "
                "step; a video feature needs uint8 (H, W, 3)"
            )
        plan["video"] = IMAGE_PREFIX + camera
        features[plan["video"]] = _feature("video", (h, w, 3), ["height", "width", "channels"])
    names: list[str] = []
    units: list[str] = []
    for key, part_names, part_units in STATE_PARTS:
        if shapes.get(key) == (len(part_names),) and dtypes[key] == "float32":
            plan["state"].append(key)
            names += part_names
            units += part_units
    if names:
        features[STATE] = _feature("float32", (len(names),), names, units=units, note=STATE_NOTE)
    if shapes.get(keys.ACTION) == (len(ACTION_NAMES),) and dtypes[keys.ACTION] == "float32":
        plan["action"] = keys.ACTION
        features[ACTION] = _feature(
            "float32", (len(ACTION_NAMES),), list(ACTION_NAMES), units=["1"] * 4, note=ACTION_NOTE
        )
    features[SUCCESS] = _feature(
        "bool", (1,), None, note="the episode's success label on its last frame, false before"
    )
    used = {keys.IMAGE, *plan["state"], *([plan["action"]] if plan["action"] else [])}
    for key in store.data_keys:
        if key in used:
            continue
        shape, dtype = shapes[key], dtypes[key]
        if len(shape) > 1 or dtype not in _PA_TYPES:
            raise LeRobotFormatError(
                f"data/{key} holds {dtype}{list(shape)} per step; the LeRobot export writes "
                "per-step scalars and vectors only"
            )
        name = key[len(FOREIGN_PREFIX) :] if key.startswith(FOREIGN_PREFIX) else EXTRA_PREFIX + key
        if name in features or name in DEFAULT_COLUMNS or name.startswith(IMAGE_PREFIX):
            name = EXTRA_PREFIX + key
        plan["extras"][name] = key
        note = _EXTRA_NOTES.get(key, "a per-step array of the episode store")
        features[name] = _feature(
            dtype, shape or (1,), None, store_key=key, store_shape=list(shape), note=note
        )
    features["timestamp"] = _feature("float32", (1,), None, note="frame_index / fps, seconds")
    for col in DEFAULT_COLUMNS[1:]:
        features[col] = _feature("int64", (1,), None)
    return features, plan


_EXTRA_NOTES = {
    keys.TIMESTAMP: "seconds since the episode's first frame, by the recording clock "
    "(wall clock for the robot); the timestamp column is frame_index / fps",
    keys.SUCCESS: "twin only: the task predicate at this frame's observation",
    keys.ORACLE_REWARD: "twin only: dense oracle reward at this frame's observation",
    # the learner's replay store (episode kind "agent")
    "reward": "learner replay: the reward received on arriving at this frame's observation, "
    "i.e. for the previous frame's action (0 on the first frame); not LeRobot's next.reward",
    "cont": "learner replay: 0 if this frame's observation is terminal, else 1",
    "intervened": "learner replay: this frame's action came from an operator",
    "success_called": "learner replay: the success call (reward model or operator's key) on "
    "arriving at this frame's observation",
    "proprio": "learner replay: the agent's proprioception (ee_pos xyz m, gripper open fraction)",
}


def _episode_table(
    ep: Mapping[str, np.ndarray],
    features: Mapping[str, Any],
    plan: Mapping[str, Any],
    *,
    episode_index: int,
    start: int,
    task_index: int,
    success: bool,
    fps: float,
) -> tuple[Any, dict[str, np.ndarray]]:
    """The episode's data rows as an Arrow table, and the numeric columns for its stats."""
    pa = _pa()
    n = len(next(iter(ep.values())))
    frame_index = np.arange(n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    if plan["state"]:
        cols[STATE] = np.concatenate([ep[k].reshape(n, -1) for k in plan["state"]], axis=1)
    if plan["action"]:
        cols[ACTION] = ep[plan["action"]]
    done = np.zeros(n, dtype=bool)
    done[-1] = success
    cols[SUCCESS] = done
    for name, key in plan["extras"].items():
        cols[name] = ep[key]
    cols["timestamp"] = (frame_index / fps).astype(np.float32)
    cols["frame_index"] = frame_index
    cols["episode_index"] = np.full(n, episode_index, dtype=np.int64)
    cols["index"] = start + frame_index
    cols["task_index"] = np.full(n, task_index, dtype=np.int64)
    arrays, fields = [], []
    for name, values in cols.items():
        ft = features[name]
        typ = _arrow_type(ft["dtype"], ft["shape"])
        v = np.ascontiguousarray(values, dtype=ft["dtype"])
        if pa.types.is_fixed_size_list(typ):
            arr = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), typ.list_size)
        else:
            arr = pa.array(v.reshape(n))
        arrays.append(arr)
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), cols


def _stats_columns(stats: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"stats/{f}/{k}": v for f, s in stats.items() for k, v in s.items()}


def _tasks_table(tasks: Sequence[str]) -> Any:
    """meta/tasks.parquet: ``task_index`` with the task text as the (pandas) index ``task``."""
    pa = _pa()
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.Table.from_arrays(
        [pa.array(np.arange(len(tasks), dtype=np.int64)), pa.array(list(tasks), pa.string())],
        schema=schema,
    )


def _fresh_dir(out: Path) -> Path:
    """A hidden working folder beside ``out`` (same file system, renamed when complete)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def export_lerobot(
    store: EpisodeStore | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    camera: str = CAMERA,
    codec: str = "h264",
    robot_type: str = "xarm5",
    chunks_size: int = CHUNKS_SIZE,
    data_files_size_in_mb: float = DATA_FILES_SIZE_MB,
    video_files_size_in_mb: float = VIDEO_FILES_SIZE_MB,
) -> ExportReport:
    """Write every episode of ``store`` as a LeRobot v3.0 dataset folder ``out`` (new)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if not camera or "/" in camera or "." in camera:
        raise ValueError(f"camera must be a plain name (no '/' or '.'), got {camera!r}")
    if chunks_size < 1 or data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0:
        raise ValueError("chunks_size and the file size limits must be positive")
    src = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    if src.n_episodes == 0:
        raise EpisodeStoreError(f"{src.path} holds no episodes to export")
    out_dir = Path(out)
    tmp = _fresh_dir(out_dir)
    try:
        report = _export(
            src,
            tmp,
            camera,
            codec,
            robot_type,
            chunks_size,
            data_files_size_in_mb,
            video_files_size_in_mb,
        )
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out = str(out_dir)
    return report


def _replay_led_to(store: EpisodeStore) -> bool:
    """Whether ``store`` is a learner replay store in the layout before 2026-12-06."""
    a = store.attrs
    return a.get(keys.ATTR_SOURCE) == "replay" and keys.ATTR_ACTION_ROW not in a


def _export(
    store: EpisodeStore,
    root: Path,
    camera: str,
    codec: str,
    robot_type: str,
    chunks_size: int,
    data_mb: float,
    video_mb: float,
) -> ExportReport:
    pa = _pa()
    fps = store.fps
    features, plan = _plan_features(store, camera)
    data_files = _ParquetFiles(root, DATA_PATH, data_mb, chunks_size)
    video = plan["video"]
    videos = (
        _VideoFiles(root, VIDEO_PATH, video, fps, codec, video_mb, chunks_size) if video else None
    )
    tasks: dict[str, int] = {}
    episode_rows: list[dict[str, Any]] = []
    totals: dict[str, _Moments] = {}
    start = 0
    # A learner replay store written before its rows took the episode layout (data/keys.py)
    # holds in row t the action that led to it: shifted up one row here, as rows are now.
    led_to = _replay_led_to(store)
    try:
        for i in range(store.n_episodes):
            meta = store.episode_meta(i)
            ep = store.episode(i)
            if led_to:
                shift_rows(ep, (keys.ACTION, "intervened"), down=False)
            task = str(meta[keys.EPISODE_TASK])
            task_index = tasks.setdefault(task, len(tasks))
            table, cols = _episode_table(
                ep,
                features,
                plan,
                episode_index=i,
                start=start,
                task_index=task_index,
                success=meta[keys.EPISODE_SUCCESS],
                fps=fps,
            )
            n = table.num_rows
            chunk, file = data_files.add(table)
            row: dict[str, Any] = {
                "episode_index": i,
                "tasks": [task],
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + n,
            }
            moments = {name: _Moments.of(v) for name, v in cols.items()}
            if videos is not None:
                v_chunk, v_file, t0, t1 = videos.add(ep[keys.IMAGE])
                row[f"videos/{video}/chunk_index"] = v_chunk
                row[f"videos/{video}/file_index"] = v_file
                row[f"videos/{video}/from_timestamp"] = t0
                row[f"videos/{video}/to_timestamp"] = t1
                moments[video] = _Moments.of_pixels(ep[keys.IMAGE])
            row["success"] = bool(meta[keys.EPISODE_SUCCESS])
            row["kind"] = str(meta[keys.EPISODE_KIND])
            row["notes"] = str(meta[keys.EPISODE_NOTES])
            row.update(_stats_columns({k: m.as_dict(k == video) for k, m in moments.items()}))
            for k, m in moments.items():
                totals[k] = totals[k].merge(m) if k in totals else m
            episode_rows.append(row)
            start += n
    finally:
        data_files.close()
        if videos is not None:
            videos.close()
    if videos is not None:
        features[video]["info"] = videos.video_info(fps)
        intrinsics = store.attrs.get(keys.ATTR_INTRINSICS)
        if intrinsics:
            features[video]["info"]["v2r.camera_intrinsics"] = intrinsics

    # meta/episodes: rows grouped into files by the same size rule as the data.
    episode_files = _ParquetFiles(root, EPISODES_PATH, data_mb, chunks_size)
    try:
        for row in episode_rows:
            row["meta/episodes/chunk_index"] = row["meta/episodes/file_index"] = 0
            schema = _episodes_schema(row)
            chunk, file = episode_files.place(pa.Table.from_pylist([row], schema=schema).nbytes)
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
            episode_files.write(pa.Table.from_pylist([row], schema=schema))
    finally:
        episode_files.close()
    _pq().write_table(_tasks_table(list(tasks)), str(root / TASKS_PATH))
    stats = {k: m.as_dict(k == video) for k, m in totals.items()}
    (root / STATS_PATH).write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": store.n_episodes,
        "total_frames": start,
        "total_tasks": len(tasks),
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb,
        "fps": _fps_value(fps),
        "splits": {"train": f"0:{store.n_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video else None,
        "features": features,
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4))
    return ExportReport(
        out=str(root),
        episodes=store.n_episodes,
        frames=start,
        data_files=data_files.n_files,
        video_files=videos.n_files if videos else 0,
        codec=features[video]["info"]["video.codec"] if video else "",
    )


def _episodes_schema(row: Mapping[str, Any]) -> Any:
    """Fixed types for meta/episodes rows, so every row group of a file shares one schema."""
    pa = _pa()
    fields = []
    for name, value in row.items():
        if name == "tasks":
            typ = pa.list_(pa.string())
        elif name in ("success",):
            typ = pa.bool_()
        elif name in ("kind", "notes"):
            typ = pa.string()
        elif name.endswith("_timestamp"):
            typ = pa.float64()
        elif name.startswith("stats/"):
            typ = pa.list_(pa.int64()) if name.endswith("/count") else _nested_float(value)
        else:
            typ = pa.int64()
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


def _nested_float(value: Any) -> Any:
    pa = _pa()
    typ = pa.float64()
    while isinstance(value, list):
        typ = pa.list_(typ)
        value = value[0] if value else None
    return typ


# ----------------------------------------------------------------------------------- import
@dataclass(frozen=True)
class LeRobotImportConfig:
    src: str = ""  # the LeRobot v3.0 folder (holds meta/info.json)
    out: str = ""  # the episode store to write; created unless append
    camera: str = ""  # which observation.images.<camera> becomes img ('' = the only one)
    kind: str = "teleop"  # episode kind where the dataset records none (meta/episodes "kind")
    append: bool = False  # add to an existing store (same fps, keys, shapes and dtypes)

    def __post_init__(self) -> None:
        if not self.src or not self.out:
            raise ValueError("src and out are required: v2r record import DIR out=X.zarr")


@dataclass
class ImportSummary:
    out: str
    episodes: int = 0
    frames: int = 0
    camera: str = ""
    skipped: list[str] = field(default_factory=list)  # features not imported, with the reason


@dataclass
class _Dataset:
    """A checked LeRobot folder: info, tasks, episode rows in episode order."""

    root: Path
    info: dict[str, Any]
    tasks: dict[int, str]
    episodes: list[dict[str, Any]]
    video_key: str | None


def is_lerobot_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / INFO_PATH).is_file()


def _need(root: Path, rel: str) -> Path:
    p = root / rel
    if not p.is_file():
        raise LeRobotFormatError(f"{p} is missing; the LeRobot dataset is incomplete")
    return p


def _read_table(path: Path) -> Any:
    try:
        return _pq().read_table(str(path))
    except Exception as e:  # pyarrow raises several types for a broken file
        raise LeRobotFormatError(f"{path} is not a readable parquet file: {e}") from e


def read_info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """meta/info.json, checked for the version and the keys the import needs."""
    path = _need(Path(root), INFO_PATH)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LeRobotFormatError(f"{path} is not readable JSON: {e}") from e
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != CODEBASE_VERSION:
        raise LeRobotFormatError(
            f"{path}: codebase_version {version!r} is not supported; this importer reads "
            f"{CODEBASE_VERSION!r} (convert older datasets with LeRobot's "
            "convert_dataset_v21_to_v30 first)"
        )
    missing = [k for k in ("fps", "features", "data_path", "total_episodes") if k not in info]
    if missing:
        raise LeRobotFormatError(f"{path} has no {missing[0]!r}")
    if not (isinstance(info["fps"], (int, float)) and info["fps"] > 0):
        raise LeRobotFormatError(f"{path}: fps must be a positive number, got {info['fps']!r}")
    return dict(info)


def _choose_camera(info: Mapping[str, Any], camera: str, where: Path) -> str | None:
    feats = info["features"]
    videos = [k for k, f in feats.items() if f.get("dtype") == "video"]
    images = [k for k, f in feats.items() if f.get("dtype") == "image"]
    if camera:
        key = camera if camera.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + camera
        if key in images:
            raise LeRobotFormatError(f"{key} is stored as images in parquet; only videos import")
        if key not in videos:
            raise LeRobotFormatError(f"{where} has no video feature {key}; it has {videos}")
        return key
    if len(videos) > 1:
        names = [v.removeprefix(IMAGE_PREFIX) for v in videos]
        raise LeRobotFormatError(f"{where} has several cameras {names}; choose one: camera=NAME")
    if not videos and images:
        raise LeRobotFormatError(f"{where} stores images in parquet ({images}); only videos import")
    if videos and not info.get("video_path"):
        raise LeRobotFormatError(f"{where} has video features but no video_path")
    return videos[0] if videos else None


def open_dataset(root: str | os.PathLike[str], camera: str = "") -> _Dataset:
    """Read and check a LeRobot v3.0 folder: every file the import will read must exist."""
    base = Path(root)
    if not base.is_dir():
        raise LeRobotFormatError(f"{base} is not a folder")
    info = read_info(base)
    info_path = base / INFO_PATH
    video_key = _choose_camera(info, camera, info_path)
    tasks_table = _read_table(_need(base, TASKS_PATH))
    names = tasks_table.column_names
    if "task_index" not in names:
        raise LeRobotFormatError(f"{base / TASKS_PATH} has no task_index column")
    text_col = "task" if "task" in names else "__index_level_0__"
    if text_col not in names:
        raise LeRobotFormatError(f"{base / TASKS_PATH} has no task column")
    tasks = dict(
        zip(
            (int(i) for i in tasks_table.column("task_index").to_pylist()),
            (str(t) for t in tasks_table.column(text_col).to_pylist()),
            strict=True,
        )
    )
    ep_files = sorted((base / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise LeRobotFormatError(f"{base / EPISODES_DIR} holds no chunk-*/file-*.parquet")
    episodes: list[dict[str, Any]] = []
    need = [
        "episode_index",
        "length",
        "dataset_from_index",
        "dataset_to_index",
        "data/chunk_index",
        "data/file_index",
    ]
    if video_key:
        need += [
            f"videos/{video_key}/{c}"
            for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
        ]
    for path in ep_files:
        table = _read_table(path)
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise LeRobotFormatError(f"{path} has no column {missing[0]!r}")
        wanted = [c for c in table.column_names if not c.startswith("stats/")]
        episodes += table.select(wanted).to_pylist()
    episodes.sort(key=lambda e: int(e["episode_index"]))
    if len({int(e["episode_index"]) for e in episodes}) != len(episodes):
        raise LeRobotFormatError(f"{base / EPISODES_DIR} lists an episode_index twice")
    if len(episodes) != int(info["total_episodes"]):
        raise LeRobotFormatError(
            f"{info_path} says total_episodes={info['total_episodes']} but "
            f"{base / EPISODES_DIR} lists {len(episodes)}"
        )
    for ep in episodes:  # every file the import reads is there before anything is written
        _need(base, _data_file(info, ep))
        if video_key:
            _need(base, _video_file(info, ep, video_key))
    return _Dataset(base, info, tasks, episodes, video_key)


def _data_file(info: Mapping[str, Any], ep: Mapping[str, Any]) -> str:
    return str(info["data_path"]).format(
        chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"])
    )


def _video_file(info: Mapping[str, Any], ep: Mapping[str, Any], key: str) -> str:
    return str(info["video_path"]).format(
        video_key=key,
        chunk_index=int(ep[f"videos/{key}/chunk_index"]),
        file_index=int(ep[f"videos/{key}/file_index"]),
    )


def decode_frames(path: Path, times: np.ndarray, fps: float) -> np.ndarray:
    """The frames of ``path`` nearest to ``times`` (s), each within half a frame period."""
    import av

    tol = 0.5 / fps
    out: list[np.ndarray | None] = [None] * len(times)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            time_base = stream.time_base
            if time_base is None:
                raise LeRobotFormatError(f"{path}: the video stream has no time base")
            first = max(float(times.min()) - 1.0 / fps, 0.0)
            if first > 0:
                container.seek(int(first / time_base), stream=stream, backward=True)
            last = float(times.max()) + tol
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * time_base)
                if t > last:
                    break
                k = int(np.searchsorted(times, t))  # times ascend: the nearest is k-1 or k
                if k == len(times) or (k > 0 and t - times[k - 1] < times[k] - t):
                    k -= 1
                if abs(times[k] - t) < tol and out[k] is None:
                    out[k] = frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise LeRobotFormatError(f"{path} cannot be decoded: {e}") from e
    lost = [i for i, f in enumerate(out) if f is None]
    if lost:
        raise LeRobotFormatError(
            f"{path} has no frame at {times[lost[0]]:.4f} s ({len(lost)} of {len(times)} "
            "frames of the episode missing); the video is shorter than the episode"
        )
    return np.stack([f for f in out if f is not None])


def _state_split(names: Any) -> list[tuple[str, int, int]] | None:
    """observation.state names -> [(store key, start, stop)], or None if they are not ours."""
    if not isinstance(names, list):
        return None
    out: list[tuple[str, int, int]] = []
    i = 0
    by_first = {part[0]: (key, part) for key, part, _ in STATE_PARTS}
    while i < len(names):
        if names[i] not in by_first:
            return None
        key, part = by_first[names[i]]
        if tuple(names[i : i + len(part)]) != part or any(k == key for k, _, _ in out):
            return None
        out.append((key, i, i + len(part)))
        i += len(part)
    return out


def _episode_arrays(
    ds: _Dataset, ep: Mapping[str, Any], table: Any, skipped: dict[str, str]
) -> dict[str, np.ndarray]:
    """One episode's rows of a data file as store arrays (video frames not included)."""
    feats = ds.info["features"]
    where = f"{ds.root / _data_file(ds.info, ep)} (episode {ep['episode_index']})"
    n = table.num_rows
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        ft = feats.get(name)
        if name in ("frame_index", "episode_index", "index", "task_index", SUCCESS):
            continue
        if ft is None or ft.get("dtype") not in _PA_TYPES:
            skipped.setdefault(name, "not a numeric feature in info.json")
            continue
        values = _column_to_numpy(table.column(name), n, where)
        shape = (ft.get("info") or {}).get("store_shape")  # written by export_lerobot
        if isinstance(shape, list):
            values = values.reshape(n, *shape)
        if name == STATE and (split := _state_split(ft.get("names"))) is not None:
            flat = values.reshape(n, -1).astype(np.float32)
            for key, a, b in split:
                out[key] = flat[:, a:b]
        elif name == ACTION and ft.get("names") == list(ACTION_NAMES):
            out[keys.ACTION] = values.reshape(n, -1).astype(np.float32)
        elif name.startswith(EXTRA_PREFIX):
            out[name[len(EXTRA_PREFIX) :]] = values.astype(ft["dtype"])
        elif name == "timestamp":
            continue  # below: the recorded clock wins, else frame times
        else:
            out[FOREIGN_PREFIX + name] = values.astype(ft["dtype"])
    if keys.TIMESTAMP not in out and "timestamp" in table.column_names:
        out[keys.TIMESTAMP] = _column_to_numpy(table.column("timestamp"), n, where).astype(
            np.float64
        )
    return out


def _episode_rows(ds: _Dataset, ep: Mapping[str, Any], cache: dict[str, Any]) -> Any:
    """The data rows of episode ``ep``, in frame order, checked against its metadata."""
    pc = _pc()
    rel = _data_file(ds.info, ep)
    path = ds.root / rel
    if rel not in cache:
        cache.clear()  # episodes come file by file: keep one file in memory
        cache[rel] = _read_table(path)
    table = cache[rel]
    for col in DEFAULT_COLUMNS:
        if col not in table.column_names:
            raise LeRobotFormatError(f"{path} has no column {col!r}")
    e = int(ep["episode_index"])
    rows = table.filter(pc.equal(table.column("episode_index"), e))
    rows = rows.take(pc.sort_indices(rows.column("frame_index")))
    lo, hi, length = (int(ep[k]) for k in ("dataset_from_index", "dataset_to_index", "length"))
    index = np.asarray(rows.column("index").to_numpy())
    if rows.num_rows != length or hi - lo != length or not np.array_equal(index, np.arange(lo, hi)):
        raise LeRobotFormatError(
            f"{path}: episode {e} has {rows.num_rows} rows with index "
            f"{index[:1].tolist()}..{index[-1:].tolist()}, but meta/episodes says {length} rows "
            f"[{lo}, {hi})"
        )
    return rows


def _episode_label(ep: Mapping[str, Any], rows: Any) -> bool:
    if ep.get("success") is not None:
        return bool(ep["success"])
    if SUCCESS in rows.column_names:
        return bool(np.any(rows.column(SUCCESS).to_numpy(zero_copy_only=False)))
    return False


def _episodes(
    ds: _Dataset, default_kind: str, skipped: dict[str, str]
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """(arrays, labels) of each episode in order, frames decoded."""
    fps = float(ds.info["fps"])
    cache: dict[str, Any] = {}
    for ep in ds.episodes:
        rows = _episode_rows(ds, ep, cache)
        data = _episode_arrays(ds, ep, rows, skipped)
        task_ids = sorted(set(rows.column("task_index").to_pylist()))
        unknown = [t for t in task_ids if t not in ds.tasks]
        if unknown:
            raise LeRobotFormatError(f"{ds.root / TASKS_PATH} has no task_index {unknown[0]}")
        notes = str(ep.get("notes") or "")
        if len(task_ids) > 1:
            notes = "; ".join(
                filter(None, [notes, "tasks: " + " | ".join(ds.tasks[t] for t in task_ids)])
            )
        if ds.video_key:
            key = ds.video_key
            ts = _column_to_numpy(rows.column("timestamp"), rows.num_rows, "timestamp")
            t0, t1 = (float(ep[f"videos/{key}/{c}"]) for c in ("from_timestamp", "to_timestamp"))
            times = t0 + ts.astype(np.float64)
            if times[-1] >= t1 + 0.5 / fps:
                raise LeRobotFormatError(
                    f"episode {ep['episode_index']}: its frames run to {times[-1]:.4f} s of "
                    f"{_video_file(ds.info, ep, key)}, past its to_timestamp {t1:.4f} s"
                )
            data[keys.IMAGE] = decode_frames(ds.root / _video_file(ds.info, ep, key), times, fps)
        labels = {
            "task": ds.tasks[int(rows.column("task_index")[0].as_py())],
            "success": _episode_label(ep, rows),
            "kind": str(ep.get("kind") or default_kind),
            "notes": notes,
        }
        yield data, labels


def _check_appendable(dest: EpisodeStore, new: EpisodeStore) -> None:
    """Every episode of ``new`` fits ``dest``: the same per-step keys, shapes and dtypes."""
    if dest.n_episodes == 0:
        return
    have, got = dest.root["data"], new.root["data"]
    if set(dest.data_keys) != set(new.data_keys):
        raise EpisodeStoreError(
            f"cannot append to {dest.path}: it holds {dest.data_keys}, the dataset gives "
            f"{new.data_keys}"
        )
    for k in dest.data_keys:
        a, b = have[k], got[k]
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            raise EpisodeStoreError(
                f"cannot append to {dest.path}: data/{k} is {a.dtype}{list(a.shape[1:])} there, "
                f"{b.dtype}{list(b.shape[1:])} in the dataset"
            )


def import_lerobot(cfg: LeRobotImportConfig) -> ImportSummary:
    """Import every episode of a local LeRobot v3.0 folder into an episode store."""
    out = Path(cfg.out)
    if not cfg.append and out.exists():
        raise EpisodeStoreError(f"{out} already exists; import with append=true or a new out")
    ds = open_dataset(cfg.src, cfg.camera)
    if cfg.append:  # must exist; opened for writing only once every episode decoded
        existing = EpisodeStore.open(out)
        if abs(existing.fps - float(ds.info["fps"])) > 1e-9:
            raise EpisodeStoreError(
                f"cannot append to {out}: it is at {existing.fps} fps, the dataset at "
                f"{ds.info['fps']}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    skipped: dict[str, str] = {}
    feats = ds.info["features"]
    for name, ft in feats.items():
        if ft.get("dtype") in ("video", "image") and name != ds.video_key:
            skipped[name] = "another camera"
    intrinsics = (feats.get(ds.video_key, {}).get("info") or {}).get("v2r.camera_intrinsics")
    summary = ImportSummary(out=str(out), camera=ds.video_key or "")
    try:
        staged = EpisodeStore.create(
            tmp,
            fps=float(ds.info["fps"]),
            intrinsics=intrinsics or None,
            source="lerobot-import",
            imported_from=str(Path(cfg.src).resolve()),
        )
        for data, labels in _episodes(ds, cfg.kind, skipped):
            staged.append_episode(data, **labels)
            summary.episodes += 1
            summary.frames += len(next(iter(data.values())))
        if cfg.append:
            _check_appendable(EpisodeStore.open(out), staged)
            dest = EpisodeStore.open(out, mode="a")
            for i in range(staged.n_episodes):
                m = staged.episode_meta(i)
                dest.append_episode(
                    staged.episode(i),
                    task=m[keys.EPISODE_TASK],
                    success=m[keys.EPISODE_SUCCESS],
                    kind=m[keys.EPISODE_KIND],
                    notes=m[keys.EPISODE_NOTES],
                )
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.skipped = [f"{k}: {v}" for k, v in skipped.items()]
    return summary
