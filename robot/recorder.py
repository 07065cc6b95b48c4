"""Demonstration recorder: camera frames, arm state and the commands actually sent, to zarr.

    cfg = RecorderConfig(out="demos.zarr", task="push", source="robot")
    with Recorder(cfg, intrinsics=cam.intrinsics()) as rec:
        rec.start(notes="left-hand approach")
        rec.observe(Observation(img, ee_pos_m, ee_quat_wxyz, q_rad, grip, t_wall_s=time.time()))
        rec.command(cmd.applied_action)          # what the driver's envelope let through
        ...
        print(rec.status_line())                 # ep 3 | REC 12.4 s | 372 fr | 30.0 Hz | ...
        rec.stop(success=True)                   # or rec.discard(); rec.mark(False) relabels

The recorder writes ``data.episode_store`` episodes (``kind="teleop"``): image, EE pose,
joints, gripper, action, timestamp per row; success, task, kind and operator notes per
episode; camera intrinsics and fps as store attributes.

Rows follow ``data.keys``: row t is a camera frame and the command sent after it and before
the next frame (zeros when none was sent; the last row of an episode is always zeros), so
frames and commands may arrive asynchronously (a ROS node) or in lockstep (a twin loop). When
two commands fall between two frames (unsynchronized 30 Hz streams alias), their Cartesian
deltas are added (clipped to [-1, 1]) and the later gripper command kept, so the row's action
still accounts for the motion from frame t to frame t + 1; ``merged_commands`` counts these.

Durability: a writer thread appends rows to the store in chunks of ``flush_every`` rows, so
``observe`` never waits for the disk; each chunk file is fsynced before it is renamed into
place and the episode becomes visible only when ``meta/episode_ends`` grows, the last write.
A crash or power loss therefore loses at most the rows not yet flushed (one chunk plus the
queue) of the episode in progress; opening the store again (``EpisodeStore.open(mode="a")``,
which the recorder does) drops those trailing rows and keeps every committed episode.
A write error (disk full: ``OSError`` ENOSPC) stops the episode, discards it and is reported
in ``status().error``; earlier episodes are untouched because committed chunks are only ever
replaced atomically.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zarr
from video2reward.data import keys
from video2reward.data.episode_store import (
    EpisodeStore,
    EpisodeStoreError,
    EpisodeWriter,
    repair_index,
)
from video2reward.data.pointmap import depth_mm
from video2reward.robot.camera import CameraIntrinsics

SOURCES = ("robot", "twin")


class RecorderError(RuntimeError):
    """The recorder cannot do what was asked (not recording, disk full, store mismatch)."""


@dataclass(frozen=True)
class RecorderConfig:
    out: str  # the zarr store; created when missing, appended to when present
    task: str  # task name written with every episode (e.g. "push")
    kind: str = "teleop"  # keys.EPISODE_KIND of recorded episodes
    source: str = "robot"  # keys.ATTR_SOURCE of a new store: "robot" or "twin"
    fps_hz: float = 30.0  # nominal camera rate, stored as the store's fps attribute
    flush_every: int = 30  # rows per chunk written; a crash loses at most this many rows (+queue)
    queue_rows: int = 120  # rows waiting for the writer thread; beyond it frames are dropped
    fsync: bool = True  # fsync each chunk file and its directory (power-loss safety)
    min_free_mb: float = 100.0  # refuse to start an episode with less free disk than this
    max_episode_s: float = 900.0  # an episode left running longer than this is stopped (failure)
    # Record each frame's aligned depth (data/depth, uint16 mm): demonstrations for the
    # point-map policy. A frame without depth is then dropped (counted), never stored without.
    depth: bool = False

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out must name the zarr store to record into (e.g. demos.zarr)")
        if not self.task:
            raise ValueError("task must name the demonstrated task (e.g. push)")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not (math.isfinite(self.fps_hz) and 1.0 <= self.fps_hz <= 120.0):
            raise ValueError(f"fps_hz must be in [1, 120], got {self.fps_hz}")
        if not 1 <= self.flush_every <= 1000:
            raise ValueError(f"flush_every must be in [1, 1000] rows, got {self.flush_every}")
        if self.queue_rows < self.flush_every:
            raise ValueError("queue_rows must hold at least one chunk (>= flush_every)")
        if not self.min_free_mb >= 0.0:
            raise ValueError(f"min_free_mb must be >= 0, got {self.min_free_mb}")
        if not self.max_episode_s > 0.0:
            raise ValueError(f"max_episode_s must be positive, got {self.max_episode_s}")


@dataclass(frozen=True)
class Observation:
    """One camera frame with the arm state read at (about) the same time."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    ee_pos_m: np.ndarray  # (3,) tool-centre point in the base frame
    ee_quat_wxyz: np.ndarray  # (4,) tool orientation in the base frame
    joint_pos_rad: np.ndarray  # (5,)
    gripper_open_frac: float  # 0 closed ... 1 open (NaN when unknown)
    t_wall_s: float  # wall-clock time of the frame (time.time() or the camera stamp)
    frame_number: int | None = None  # camera counter; gaps are counted as dropped frames
    depth_m: np.ndarray | None = None  # (H, W) float32 metres aligned to image (depth cameras)


@dataclass(frozen=True)
class RecorderStatus:
    episode: int  # index the current (or next) episode gets in the store
    recording: bool
    duration_s: float  # of the current episode (or of the last one when stopped)
    frames: int  # rows of the current (or last) episode
    rate_hz: float  # frames per second over the last ~2 s (0 when idle)
    dropped: int  # camera frames lost in this episode (counter gaps + full queue)
    saved: int  # episodes committed by this recorder
    last_event: str  # "started", "saved ep 3 (success)", "discarded", ...
    error: str | None  # the write error that stopped recording (e.g. disk full), else None


def intrinsics_dict(intr: CameraIntrinsics | Mapping[str, float] | None) -> dict[str, float]:
    if intr is None:
        return {}
    if isinstance(intr, CameraIntrinsics):
        return {k: float(getattr(intr, k)) for k in ("width", "height", "fx", "fy", "cx", "cy")}
    return {k: float(v) for k, v in intr.items()}


class FsyncDirectoryStore(zarr.DirectoryStore):
    """zarr's DirectoryStore (temp file + atomic rename) plus fsync of the file and directory.

    Without the fsyncs a power cut can leave a renamed chunk or index file empty on disk; with
    them every write the recorder made before the cut is there afterwards, in order.
    """

    @staticmethod
    def _tofile(a: Any, fn: str) -> None:
        with open(fn, mode="wb") as f:
            f.write(a)
            f.flush()
            os.fsync(f.fileno())

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        d = os.path.dirname(os.path.join(self.path, self._normalize_key(key)))
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"disk full while writing ({e}); recording stopped, earlier episodes are intact"
    return f"{type(e).__name__}: {e}"


# Writer-thread messages.
_START, _ROW, _STOP, _DISCARD = "start", "row", "stop", "discard"


class Recorder:
    """Records episodes into one store. Use as a context manager (closing stops the writer)."""

    def __init__(
        self,
        config: RecorderConfig,
        intrinsics: CameraIntrinsics | Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        T_base_cam: np.ndarray | None = None,
    ):
        self.config = config
        self.intrinsics = intrinsics_dict(intrinsics)
        # the camera's hand-eye pose (the calibration file's), stored with a new store so its
        # pixels can be placed in the base frame (point maps)
        self.T_base_cam = None if T_base_cam is None else np.asarray(T_base_cam, float)
        self._clock = clock
        self.store: EpisodeStore | None = None
        self.recovered_rows = 0  # rows of a crashed episode dropped when the store was opened
        self.repaired_index = 0  # index entries dropped by repair_index (a failed commit)
        self._lock = threading.Lock()
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._queued_rows = 0
        # Answers of the writer thread to stop/discard requests: (request id, index, error).
        self._done: queue.Queue[tuple[int, int | None, BaseException | None]] = queue.Queue()
        self._request_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._recording = False
        self._pending: dict[str, np.ndarray] | None = None
        self._action = np.zeros(keys.ACTION_DIM, np.float32)
        self._t0_wall: float | None = None
        self._t0_mono = 0.0
        self._frames = 0
        self._dropped = 0
        self._last_frame_number: int | None = None
        self._rate_window: deque[float] = deque(maxlen=64)
        self._duration_s = 0.0
        self._saved = 0
        self._next_index = 0
        self._last_event = "idle"
        self._error: str | None = None
        self._writer_error: BaseException | None = None
        self.merged_commands = 0  # commands added to an earlier one between the same two frames
        self._n_cmds = 0  # commands since the latest frame

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> EpisodeStore:
        c = self.config
        p = Path(c.out)
        if p.exists():
            self.repaired_index = repair_index(p)
            checked = EpisodeStore.open(p, mode="r")  # validates the layout, reports damage
            old = checked.attrs.get(keys.ATTR_INTRINSICS)
            if (
                old
                and self.intrinsics
                and any(
                    abs(float(old.get(k, math.nan)) - v) > 1e-3 for k, v in self.intrinsics.items()
                )
            ):
                raise RecorderError(
                    f"{p} was recorded with camera intrinsics {old}, this camera has "
                    f"{self.intrinsics}; record into a new store"
                )
            if checked.n_episodes and (keys.DEPTH in checked.data_keys) != c.depth:
                raise RecorderError(
                    f"{p} was recorded {'with' if not c.depth else 'without'} depth; record "
                    f"into a new store or set depth={str(not c.depth).lower()}"
                )
            rows_on_disk = store_rows(checked)
            store = EpisodeStore.open(p, mode="a")  # drops rows of an unfinished episode
            self.recovered_rows = rows_on_disk - store.n_steps
        else:
            extra = ({} if self.T_base_cam is None else
                     {keys.ATTR_T_BASE_CAM: self.T_base_cam.tolist()})  # fmt: skip
            store = EpisodeStore.create(
                p, fps=c.fps_hz, intrinsics=self.intrinsics or None, source=c.source, **extra
            )
        if c.fsync:
            store = EpisodeStore(zarr.open_group(FsyncDirectoryStore(str(p)), mode="r+"), str(p))
        self.store = store
        self._next_index = store.n_episodes
        self._thread = threading.Thread(
            target=self._write_loop, name="recorder-writer", daemon=True
        )
        self._thread.start()
        return store

    def close(self) -> None:
        """Discard an episode still in progress (an interrupted demo is not a demo) and stop."""
        if self._thread is None:
            return
        if self._recording:
            self.discard()
        self._q.put(("quit", None))
        self._thread.join(timeout=30.0)
        self._thread = None

    def __enter__(self) -> Recorder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ control
    @property
    def recording(self) -> bool:
        return self._recording

    def start(self, notes: str = "") -> int:
        """Begin an episode; returns the index it will have. Refused while recording."""
        if self.store is None or self._thread is None:
            raise RecorderError("recorder is not open; use it as a context manager")
        with self._lock:
            if self._recording:
                raise RecorderError(f"already recording episode {self._next_index}")
            free_mb = shutil.disk_usage(self.config.out).free / 1e6
            if free_mb < self.config.min_free_mb:
                raise RecorderError(
                    f"only {free_mb:.0f} MB free at {self.config.out} (min_free_mb="
                    f"{self.config.min_free_mb:.0f}); free space or record elsewhere"
                )
            self._error = None
            self._writer_error = None
            self._recording = True
            self._pending = None
            self._action = np.zeros(keys.ACTION_DIM, np.float32)
            self._t0_wall = None
            self._t0_mono = self._clock()
            self._frames = self._dropped = 0
            self._last_frame_number = None
            self._rate_window.clear()
            self._q.put((_START, notes))
            self._last_event = f"recording ep {self._next_index}"
            return self._next_index

    def observe(self, obs: Observation) -> bool:
        """Add a frame (with the arm state); returns False when not recording or dropped."""
        with self._lock:
            if not self._recording:
                return False
            if self._writer_error is not None:
                self._fail(self._writer_error)
                return False
            if self._clock() - self._t0_mono > self.config.max_episode_s:
                self._stop_locked(False, note="stopped at max_episode_s", wait=False)
                return False
            if obs.frame_number is not None and self._last_frame_number is not None:
                self._dropped += max(0, obs.frame_number - self._last_frame_number - 1)
            if obs.frame_number is not None:
                self._last_frame_number = obs.frame_number
            depth = None
            if self.config.depth:
                if obs.depth_m is None or np.shape(obs.depth_m) != np.shape(obs.image)[:2]:
                    self._dropped += 1  # a row without aligned depth would break the store
                    return False
                depth = depth_mm(obs.depth_m)
            if self._t0_wall is None:
                self._t0_wall = obs.t_wall_s
            row: dict[str, np.ndarray] = {
                # A copy: camera drivers recycle frame buffers, and this row waits in a queue.
                keys.IMAGE: np.array(obs.image, dtype=np.uint8, copy=True),
                keys.EE_POS: np.asarray(obs.ee_pos_m, dtype=np.float32).reshape(3),
                keys.EE_QUAT: np.asarray(obs.ee_quat_wxyz, dtype=np.float32).reshape(4),
                keys.JOINT_POS: np.asarray(obs.joint_pos_rad, dtype=np.float32).reshape(5),
                keys.GRIPPER: np.array([obs.gripper_open_frac], dtype=np.float32),
                keys.TIMESTAMP: np.asarray(obs.t_wall_s - self._t0_wall, dtype=np.float64),
            }
            if depth is not None:
                row[keys.DEPTH] = depth
            if self._pending is not None and not self._emit(self._action):
                self._dropped += 1
                self._pending = row  # the older frame is lost, keep the newest
                return False
            self._pending = row
            self._action = np.zeros(keys.ACTION_DIM, np.float32)
            self._n_cmds = 0
            self._frames += 1
            self._rate_window.append(self._clock())
            return True

    def command(self, applied_action: np.ndarray) -> None:
        """A command the driver actually sent (after clipping), in the row of the latest frame."""
        a = np.asarray(applied_action, dtype=np.float32).reshape(keys.ACTION_DIM)
        with self._lock:
            if not self._recording or self._pending is None:
                return
            if self._n_cmds:
                self.merged_commands += 1
                self._action[:3] = np.clip(self._action[:3] + a[:3], -1.0, 1.0)
                self._action[3] = a[3]
            else:
                self._action = a.copy()
            self._n_cmds += 1

    def stop(self, success: bool | None = None, timeout_s: float = 30.0) -> int:
        """Commit the episode (label ``success``, else the one set by :meth:`mark`, else False).

        Waits for the writer; returns the episode index. Raises RecorderError when the episode
        could not be written (then it is discarded and earlier episodes are intact).
        """
        with self._lock:
            if not self._recording:
                raise RecorderError(self._error or "not recording; start an episode first")
            if self._pending is None:
                self._recording = False
                self._q.put((_DISCARD, 0))
                self._last_event = "discarded (no frames)"
                raise RecorderError("no frames were recorded; the episode was discarded")
            rid = self._stop_locked(success)
        return self._wait_done(rid, timeout_s)

    def _stop_locked(self, success: bool | None, note: str = "", wait: bool = True) -> int:
        """Queue the commit; returns the request id to wait for (0: nobody waits)."""
        self._emit(np.zeros(keys.ACTION_DIM, np.float32), force=True)  # last row: no command
        self._pending = None
        self._recording = False
        self._duration_s = self._clock() - self._t0_mono
        rid = next(self._request_ids) if wait else 0
        self._q.put((_STOP, (success, note, rid)))
        return rid

    def discard(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            if not self._recording:
                raise RecorderError("not recording; nothing to discard")
            self._recording = False
            self._pending = None
            self._duration_s = self._clock() - self._t0_mono
            rid = next(self._request_ids)
            self._q.put((_DISCARD, rid))
        self._wait_done(rid, timeout_s)
        self._last_event = f"discarded ep {self._next_index}"

    def mark(self, success: bool) -> int:
        """Label the episode in progress, or relabel the last saved one; returns its index."""
        with self._lock:
            if self._recording:
                self._q.put(("label", bool(success)))
                self._last_event = f"marked {'success' if success else 'failure'}"
                return self._next_index
        if self.store is None or self.store.n_episodes == 0:
            raise RecorderError("no episode to mark")
        i = self.store.n_episodes - 1
        self.store.root["meta"][keys.EPISODE_SUCCESS][i] = bool(success)  # atomic chunk replace
        self._last_event = f"relabelled ep {i} {'success' if success else 'failure'}"
        return i

    # ------------------------------------------------------------------ status
    def status(self) -> RecorderStatus:
        with self._lock:
            if self._writer_error is not None and self._recording:
                self._fail(self._writer_error)
            now = self._clock()
            w = self._rate_window
            recent = [t for t in w if now - t <= 2.0]
            rate = (
                (len(recent) - 1) / (recent[-1] - recent[0])
                if len(recent) > 2 and recent[-1] > recent[0]
                else 0.0
            )
            return RecorderStatus(
                episode=self._next_index,
                recording=self._recording,
                duration_s=(now - self._t0_mono) if self._recording else self._duration_s,
                frames=self._frames,
                rate_hz=rate if self._recording else 0.0,
                dropped=self._dropped,
                saved=self._saved,
                last_event=self._last_event,
                error=self._error,
            )

    def status_line(self) -> str:
        s = self.status()
        state = "REC " if s.recording else "idle"
        line = (
            f"ep {s.episode} | {state} {s.duration_s:6.1f} s | {s.frames:5d} fr | "
            f"{s.rate_hz:5.1f} Hz | dropped {s.dropped} | saved {s.saved} | {s.last_event}"
        )
        return line + (f" | ERROR: {s.error}" if s.error else "")

    # ------------------------------------------------------------------ internals
    def _emit(self, action: np.ndarray, force: bool = False) -> bool:
        """Queue the pending row with its action; False (frame dropped) if the queue is full."""
        if self._pending is None:
            return True
        if not force and self._queued_rows >= self.config.queue_rows:
            return False
        row = dict(self._pending)
        row[keys.ACTION] = action
        self._queued_rows += 1
        self._q.put((_ROW, row))
        return True

    def _fail(self, e: BaseException) -> None:
        self._error = _describe(e)
        self._recording = False
        self._pending = None
        self._last_event = "stopped by write error"

    def _wait_done(self, rid: int, timeout_s: float) -> int:
        deadline = self._clock() + timeout_s
        while True:
            try:
                got, index, err = self._done.get(timeout=max(0.0, deadline - self._clock()))
            except queue.Empty as e:
                raise RecorderError(f"writer did not finish within {timeout_s} s") from e
            if got == rid:  # answers to requests that timed out earlier are skipped
                break
        if err is not None:
            with self._lock:
                self._fail(err)
            raise RecorderError(self._error or str(err)) from err
        return -1 if index is None else index

    def _write_loop(self) -> None:
        """Owns the EpisodeWriter; every store write happens on this thread."""
        writer: EpisodeWriter | None = None
        failed: BaseException | None = None
        label = False
        while True:
            kind, payload = self._q.get()
            if kind == "quit":
                return
            if kind == _ROW:
                with self._lock:
                    self._queued_rows -= 1
            try:
                if kind == _START:
                    failed, label = None, False
                    if self.store is None:
                        raise RecorderError("store is closed")
                    writer = self.store.begin_episode(
                        task=self.config.task,
                        kind=self.config.kind,
                        notes=str(payload),
                        flush_every=self.config.flush_every,
                    )
                elif kind == "label":
                    label = bool(payload)
                elif kind == _ROW and writer is not None:
                    writer.add(**payload)
                elif kind == _STOP:
                    success, note, rid = payload
                    if writer is None:
                        self._answer(rid, None, failed or RecorderError("no episode in progress"))
                        continue
                    label = bool(label if success is None else success)
                    writer.set_success(label)
                    if note:
                        writer.notes = f"{writer.notes}; {note}" if writer.notes else note
                    index = writer.close()
                    writer = None
                    with self._lock:
                        self._saved += 1
                        self._next_index = index + 1
                        self._last_event = f"saved ep {index} ({'success' if label else 'failure'})"
                    self._answer(rid, index, None)
                elif kind == _DISCARD:
                    if writer is not None:
                        writer.discard()
                    writer = None
                    self._answer(payload, None, None)
            except (OSError, EpisodeStoreError, ValueError, RecorderError) as e:
                failed = e
                with self._lock:
                    self._writer_error = e
                if writer is not None:
                    self._discard_quietly(writer)
                    writer = None
                if kind == _STOP:
                    self._answer(payload[2], None, e)
                elif kind == _DISCARD:
                    self._answer(payload, None, None)

    def _answer(self, rid: int, index: int | None, err: BaseException | None) -> None:
        if rid:
            self._done.put((rid, index, err))

    def _discard_quietly(self, writer: EpisodeWriter) -> None:
        """Drop a failed episode's rows; on a full disk even that may fail, and then the rows
        past the last committed episode are dropped the next time the store is opened."""
        try:
            if self.store is not None:
                repair_index(self.store.root, expect_episodes=self._next_index)
            writer.discard()
        except (OSError, EpisodeStoreError):
            writer._closed = True


def store_rows(store: EpisodeStore) -> int:
    """Rows held by the longest data array (committed or not)."""
    return max((int(store.root["data"][k].shape[0]) for k in store.data_keys), default=0)
