"""Episodes on disk in diffusion_policy's zarr layout: ``data/<key>`` (T, ...) and ``meta/*``.

    store = EpisodeStore.create("demos.zarr", fps=10.0, intrinsics=cam.intrinsics_dict())
    with store.begin_episode(task="push", kind="expert") as ep:
        for step in steps:
            ep.add(img=frame, ee_pos=p, action=a, ...)
        ep.set_success(True)          # committed on exit; an exception discards the episode
    store = EpisodeStore.open("demos.zarr")
    ep0 = store.episode(0)            # {"img": (T, H, W, 3) uint8, ...}

Rows are flushed to disk in chunks while an episode is written; the episode becomes visible
only when ``meta/episode_ends`` is extended, which is the last write. A crash mid-episode
therefore leaves trailing rows past the last end; ``open(..., mode="a")`` drops them, so the
index never points at a half-written episode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numcodecs
import numpy as np
import zarr
from video2reward.data import keys

FORMAT_VERSION = 1
_STR_META = (keys.EPISODE_TASK, keys.EPISODE_KIND, keys.EPISODE_NOTES)


class EpisodeStoreError(RuntimeError):
    """The store is missing, unreadable or not in the episode layout."""


def _compressor() -> numcodecs.abc.Codec:
    # lz4 keeps recording cheap at 30 fps; images still compress 2-5x.
    return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


class EpisodeStore:
    """A zarr group of episodes. Use :meth:`create`, :meth:`open` or :meth:`in_memory`."""

    def __init__(self, root: zarr.Group, path: str | None):
        self.root = root
        self.path = path
        self._data = root["data"]
        self._meta = root["meta"]

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        fps: float,
        intrinsics: Mapping[str, float] | None = None,
        source: str = "twin",
        overwrite: bool = False,
        **attrs: Any,
    ) -> EpisodeStore:
        p = Path(path)
        if p.exists() and not overwrite:
            raise EpisodeStoreError(f"{p} already exists; open it with mode='a' to append")
        root = zarr.open_group(str(p), mode="w")
        store = cls._init_group(root, fps, intrinsics, source, attrs)
        store.path = str(p)
        return store

    @classmethod
    def in_memory(
        cls, *, fps: float, intrinsics: Mapping[str, float] | None = None, **attrs: Any
    ) -> EpisodeStore:
        root = zarr.group(store=zarr.MemoryStore())
        return cls._init_group(root, fps, intrinsics, "memory", attrs)

    @classmethod
    def _init_group(
        cls,
        root: zarr.Group,
        fps: float,
        intrinsics: Mapping[str, float] | None,
        source: str,
        attrs: Mapping[str, Any],
    ) -> EpisodeStore:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        root.create_group("data")
        meta = root.create_group("meta")
        meta.zeros(keys.EPISODE_ENDS, shape=(0,), chunks=(1024,), dtype=np.int64)
        meta.zeros(keys.EPISODE_SUCCESS, shape=(0,), chunks=(1024,), dtype=bool)
        for k in _STR_META:
            meta.empty(
                k, shape=(0,), chunks=(1024,), dtype=object, object_codec=numcodecs.VLenUTF8()
            )
        root.attrs.update(
            {
                keys.ATTR_FPS: float(fps),
                keys.ATTR_SOURCE: source,
                keys.ATTR_FORMAT_VERSION: FORMAT_VERSION,
                **(
                    {keys.ATTR_INTRINSICS: {k: float(v) for k, v in intrinsics.items()}}
                    if intrinsics
                    else {}
                ),
                **attrs,
            }
        )
        return cls(root, None)

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> EpisodeStore:
        """Open an existing store. ``mode="a"`` appends and drops an unfinished last episode."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        p = Path(path)
        if not p.exists():
            raise EpisodeStoreError(f"episode store {p} does not exist")
        try:
            root = zarr.open_group(str(p), mode="r" if mode == "r" else "r+")
        except Exception as e:  # zarr raises several types for a broken group
            raise EpisodeStoreError(f"{p} is not a readable zarr group: {e}") from e
        if "data" not in root or "meta" not in root or keys.EPISODE_ENDS not in root["meta"]:
            raise EpisodeStoreError(
                f"{p} is not an episode store: expected data/ and meta/{keys.EPISODE_ENDS}"
            )
        if mode == "a":
            repair_index(root)  # a commit cut short (disk full) left a bogus last end
        store = cls(root, str(p))
        store._check_consistent()
        if mode == "a":
            store.drop_unfinished()
        return store

    # ---------------------------------------------------------------- reading
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def fps(self) -> float:
        return float(self.root.attrs[keys.ATTR_FPS])

    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self._meta[keys.EPISODE_ENDS][:], dtype=np.int64)

    @property
    def n_episodes(self) -> int:
        return int(self._meta[keys.EPISODE_ENDS].shape[0])

    @property
    def n_steps(self) -> int:
        ends = self._meta[keys.EPISODE_ENDS]
        return int(ends[-1]) if ends.shape[0] else 0

    @property
    def data_keys(self) -> list[str]:
        return sorted(self._data.array_keys())

    def __len__(self) -> int:
        return self.n_episodes

    def successful_episodes(self) -> list[int]:
        """Indices of the episodes labelled successful, in order (one read of the labels)."""
        succ = np.asarray(self._meta[keys.EPISODE_SUCCESS][: self.n_episodes], dtype=bool)
        return [int(i) for i in np.flatnonzero(succ)]

    def episode_slice(self, i: int) -> slice:
        n = self.n_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: store has {n} episodes")
        i %= n
        ends = self._meta[keys.EPISODE_ENDS]
        start = int(ends[i - 1]) if i > 0 else 0
        return slice(start, int(ends[i]))

    def episode(self, i: int, data_keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All per-step arrays of episode ``i`` (or only ``data_keys``)."""
        sl = self.episode_slice(i)
        names = self.data_keys if data_keys is None else data_keys
        missing = [k for k in names if k not in self._data]
        if missing:
            raise KeyError(f"store has no data/{missing[0]}; it has {self.data_keys}")
        try:
            return {k: self._data[k][sl] for k in names}
        except Exception as e:
            raise EpisodeStoreError(f"episode {i} of {self.path} is unreadable: {e}") from e

    def episode_meta(self, i: int) -> dict[str, Any]:
        self.episode_slice(i)  # range check
        meta = {k: self._meta[k][i] for k in _STR_META}
        meta[keys.EPISODE_SUCCESS] = bool(self._meta[keys.EPISODE_SUCCESS][i])
        meta["length"] = self.episode_slice(i).stop - self.episode_slice(i).start
        return meta

    def episodes(self, data_keys: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.episode(i, data_keys)

    def summary(self) -> dict[str, Any]:
        succ = np.asarray(self._meta[keys.EPISODE_SUCCESS][:], dtype=bool)
        tasks = list(self._meta[keys.EPISODE_TASK][:]) if self.n_episodes else []
        lengths = np.diff(np.concatenate([[0], self.episode_ends]))
        return {
            "path": self.path,
            "episodes": self.n_episodes,
            "steps": self.n_steps,
            "success_rate": float(succ.mean()) if succ.size else float("nan"),
            "tasks": sorted(set(tasks)),
            "mean_length": float(lengths.mean()) if lengths.size else 0.0,
            "fps": self.fps,
            "data": {k: list(self._data[k].shape[1:]) for k in self.data_keys},
        }

    # ---------------------------------------------------------------- writing
    def begin_episode(
        self, *, task: str, kind: str = "expert", notes: str = "", flush_every: int = 32
    ) -> EpisodeWriter:
        if self._meta[keys.EPISODE_ENDS].read_only:
            raise EpisodeStoreError(f"{self.path} is open read-only; open it with mode='a'")
        self.drop_unfinished()
        return EpisodeWriter(self, task=task, kind=kind, notes=notes, flush_every=flush_every)

    def append_episode(
        self,
        data: Mapping[str, np.ndarray],
        *,
        task: str,
        success: bool,
        kind: str = "expert",
        notes: str = "",
    ) -> int:
        """Write a whole episode at once; returns its index."""
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all per-step arrays need the same length, got {lengths}")
        with self.begin_episode(task=task, kind=kind, notes=notes) as w:
            w.add_many(data)
            w.set_success(success)
        return self.n_episodes - 1

    def drop_unfinished(self) -> int:
        """Truncate data rows past the last committed episode; returns rows dropped."""
        end = self.n_steps
        dropped = 0
        for k in self.data_keys:
            arr = self._data[k]
            if arr.shape[0] > end:
                dropped = max(dropped, arr.shape[0] - end)
                arr.resize((end, *arr.shape[1:]))
        return dropped

    def _check_consistent(self) -> None:
        ends = self.episode_ends
        if ends.size and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            raise EpisodeStoreError(
                f"{self.path}: meta/{keys.EPISODE_ENDS} is damaged (a commit was cut short, e.g. "
                "by a full disk); open it with mode='a' to drop the broken entry"
            )
        n = self.n_episodes
        for k in (keys.EPISODE_SUCCESS, *_STR_META):
            if k in self._meta and self._meta[k].shape[0] < n:
                raise EpisodeStoreError(f"{self.path}: meta/{k} has fewer rows than episodes")
        for k in self.data_keys:
            if self._data[k].shape[0] < self.n_steps:
                raise EpisodeStoreError(
                    f"{self.path}: data/{k} has {self._data[k].shape[0]} rows but episodes end at "
                    f"{self.n_steps}; the store is truncated"
                )

    def _ensure_array(self, key: str, sample: np.ndarray) -> zarr.Array:
        if key in self._data:
            arr = self._data[key]
            if arr.shape[1:] != sample.shape[1:] or arr.dtype != sample.dtype:
                raise ValueError(
                    f"data/{key} holds {arr.dtype}{list(arr.shape[1:])} per step, "
                    f"got {sample.dtype}{list(sample.shape[1:])}"
                )
            return arr
        if self.n_steps:
            raise ValueError(f"data/{key} is new but {self.n_steps} steps exist without it")
        per_step = int(np.prod(sample.shape[1:])) * sample.dtype.itemsize
        chunk_t = max(1, min(1024, (1 << 20) // max(per_step, 1)))  # ~1 MB chunks
        return self._data.zeros(
            key,
            shape=(0, *sample.shape[1:]),
            chunks=(chunk_t, *sample.shape[1:]),
            dtype=sample.dtype,
            compressor=_compressor(),
        )


class EpisodeWriter:
    """Buffers steps of one episode and flushes them in chunks; commit on :meth:`close`."""

    def __init__(self, store: EpisodeStore, *, task: str, kind: str, notes: str, flush_every: int):
        self.store = store
        self.task, self.kind, self.notes = task, kind, notes
        self.flush_every = max(1, int(flush_every))
        self.success = False
        self._buf: dict[str, list[np.ndarray]] = {}
        self._n_flushed = 0
        self._n = 0
        self._closed = False

    @property
    def n_steps(self) -> int:
        return self._n

    def add(self, **step: np.ndarray | float) -> None:
        if self._closed:
            raise EpisodeStoreError("episode already closed")
        if self._buf and set(step) != set(self._buf):
            raise ValueError(f"step keys {sorted(step)} differ from {sorted(self._buf)}")
        for k, v in step.items():
            self._buf.setdefault(k, []).append(np.asarray(v))
        self._n += 1
        if self._n - self._n_flushed >= self.flush_every:
            self.flush()

    def add_many(self, data: Mapping[str, np.ndarray]) -> None:
        if not data:
            return
        n = len(next(iter(data.values())))
        for k, v in data.items():
            self._buf.setdefault(k, []).extend(np.asarray(v)[i] for i in range(n))
        self._n += n
        self.flush()

    def flush(self) -> None:
        if self._n == self._n_flushed:
            return
        base = self.store.n_steps
        for k, rows in self._buf.items():
            block = np.stack(rows)
            arr = self.store._ensure_array(k, block)
            start = base + self._n_flushed
            if arr.shape[0] != start:
                raise EpisodeStoreError(f"data/{k} has {arr.shape[0]} rows, expected {start}")
            arr.append(block, axis=0)
            rows.clear()
        self._n_flushed = self._n

    def set_success(self, success: bool) -> None:
        self.success = bool(success)

    def close(self) -> int:
        """Flush and commit; returns the episode's index."""
        if self._closed:
            raise EpisodeStoreError("episode already closed")
        if self._n == 0:
            raise EpisodeStoreError("refusing to commit an empty episode")
        self.flush()
        meta = self.store._meta
        for k, v in (
            (keys.EPISODE_SUCCESS, self.success),
            (keys.EPISODE_TASK, self.task),
            (keys.EPISODE_KIND, self.kind),
            (keys.EPISODE_NOTES, self.notes),
        ):
            arr = meta[k]
            n = self.store.n_episodes
            if arr.shape[0] > n:  # left over from a crash between these writes and the commit
                arr.resize((n,))
            arr.append(np.array([v], dtype=arr.dtype))
        # The commit: the episode exists once its end is in the index.
        meta[keys.EPISODE_ENDS].append(np.array([self.store.n_steps + self._n], dtype=np.int64))
        self._closed = True
        return self.store.n_episodes - 1

    def discard(self) -> None:
        self._closed = True
        self._buf.clear()
        self.store.drop_unfinished()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.discard()


def shift_rows(arrays: dict[str, np.ndarray], names: Iterable[str], *, down: bool) -> None:
    """Move each ``arrays[name]`` (those present) one row along the episode, in place, the
    vacated row zero: ``down`` row t takes row t-1, else row t takes row t+1. Converts the
    learner replay's in-memory rows (row t: the action that led to observation t) to the
    episode layout of data/keys.py (row t: the action taken at t) and back."""
    for k in names:
        if k in arrays:
            a = np.asarray(arrays[k])
            zero = np.zeros_like(a[:1])
            arrays[k] = np.concatenate([zero, a[:-1]] if down else [a[1:], zero])


def repair_index(
    where: str | os.PathLike[str] | zarr.Group, expect_episodes: int | None = None
) -> int:
    """Cut ``meta/episode_ends`` back to its valid prefix; returns entries dropped.

    zarr's ``append`` grows an array's shape (``.zarray``) before it writes the new chunk. If
    the chunk write of a commit fails (disk full), the index claims one more episode whose
    end reads as the fill value 0. Valid ends are strictly increasing and within the data;
    ``expect_episodes`` (the count known before a failed commit) caps the prefix further.
    """
    root = where if isinstance(where, zarr.Group) else zarr.open_group(str(where), mode="r+")
    if "meta" not in root or keys.EPISODE_ENDS not in root["meta"]:
        return 0
    ends_arr = root["meta"][keys.EPISODE_ENDS]
    ends = np.asarray(ends_arr[:], dtype=np.int64)
    data = root["data"]
    n_rows = min((int(data[k].shape[0]) for k in data.array_keys()), default=0)
    n = 0
    while n < len(ends) and ends[n] > (ends[n - 1] if n else 0) and ends[n] <= n_rows:
        n += 1
    if expect_episodes is not None:
        n = min(n, expect_episodes)
    if n < len(ends):
        ends_arr.resize((n,))
    return len(ends) - n
