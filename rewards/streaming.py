"""Reward training on video sets larger than memory: episodes streamed from shards.

    v2r reward train method=vip data=corpus/ out=runs/vip stream.enabled=true
    stream = EpisodeStream("corpus/", 84, StreamConfig(buffer_episodes=64))
    stream.refresh()                       # fills / renews the resident buffer
    model.sample_batch(stream.dataset, rng)  # every method samples from the buffer as usual

Every method samples frames *within* episodes (pairs, clips, windows), so the unit streamed is
the episode. The data is cut into shards of ``shard_episodes`` consecutive episodes of one
source (an episode store, or the video files / frame folders of a folder, in name order); a
folder may mix sources, e.g. one ``.zarr`` store per recording day. Each epoch the shard order
is shuffled with the seed and the epoch, the same on every rank, and rank r of W reads shards
r, r + W, r + 2W, ... of that order: every shard is read once per epoch across the ranks.

Decoding runs in a ``torch.utils.data.DataLoader`` over an ``IterableDataset`` (``workers``
processes; 0 decodes in this process), which keeps at most ``prefetch`` episodes per worker
decoded ahead; with workers, worker w reads shards w, w + n, ... of the rank's list of each
epoch, each worker at its own pace. The resident set is the buffer: ``buffer_episodes``
prepared episodes (centre square resized to ``size_px``). ``refresh`` replaces
``refresh_fraction`` of it (the oldest first) with newly decoded episodes and rebuilds the
``VideoDataset`` batches are drawn from (a copy, and a trimmed copy for methods that cut
demos after success): shuffled by shard, then within the buffer. Memory is two to three
copies of the buffer plus the prefetch queue, whatever the size of the data.

What it leaves out: LeRobot folders stream only once imported to an episode store
(``v2r record import``); the position in the stream is not checkpointed (a resumed run starts
a new epoch order: ``seed`` is the method's seed and the step it resumes at).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.images import prepare_frames
from video2reward.rewards.base import RewardError, check_frames
from video2reward.rewards.data import (
    VIDEO_SUFFIXES,
    EpisodeInfo,
    VideoDataset,
    episode_info,
    is_store_path,
    read_frame_folder,
    read_video,
)


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """How reward training streams its data (``v2r reward train stream.<field>=...``)."""

    enabled: bool = False  # stream the data instead of loading every episode
    buffer_episodes: int = 256  # prepared episodes resident at once
    refresh_every: int = 50  # training steps between buffer refreshes
    refresh_fraction: float = 0.25  # share of the buffer replaced per refresh
    shard_episodes: int = 16  # consecutive episodes of one source per shard
    workers: int = 0  # decoding processes (0: decode in this process)
    prefetch: int = 4  # episodes decoded ahead per worker (workers > 0)

    def __post_init__(self) -> None:
        if self.buffer_episodes < 2 or self.shard_episodes < 1 or self.refresh_every < 1:
            raise ValueError("need buffer_episodes >= 2, shard_episodes >= 1, refresh_every >= 1")
        if not 0.0 < self.refresh_fraction <= 1.0:
            raise ValueError(f"refresh_fraction must be in (0, 1], got {self.refresh_fraction}")
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError("need workers >= 0 and prefetch >= 1")


@dataclasses.dataclass(frozen=True)
class Reader:
    """Where one rank reads: the data, the frame size, its rank and the epoch order's seed."""

    data: str
    size_px: int
    cfg: StreamConfig
    seed: tuple[int, ...]
    rank: int
    world_size: int


@dataclasses.dataclass(frozen=True)
class Shard:
    """Episodes ``first .. first + count - 1`` of one source: a store, or a list of files."""

    source: str  # a store path, or "" for file episodes
    first: int
    count: int
    files: tuple[str, ...] = ()


def list_shards(path: str | Path, shard_episodes: int) -> list[Shard]:
    """The shards of an episode store, or of a folder of stores, videos and frame folders.
    Opens stores for their episode counts only; reads no frames."""
    p = Path(path)
    if not p.exists():
        raise RewardError(f"data {p} does not exist")
    stores = [p] if is_store_path(p) else sorted(q for q in p.iterdir() if is_store_path(q))
    shards: list[Shard] = []
    for s in stores:
        try:
            n = EpisodeStore.open(s).n_episodes
        except EpisodeStoreError as e:
            raise RewardError(str(e)) from e
        shards += [Shard(str(s), i, min(shard_episodes, n - i))
                   for i in range(0, n, shard_episodes)]
    if not is_store_path(p):
        files = [q for q in sorted(p.iterdir())
                 if q.suffix.lower() in VIDEO_SUFFIXES or (q.is_dir() and not is_store_path(q))]
        for i in range(0, len(files), shard_episodes):
            chunk = tuple(str(q) for q in files[i:i + shard_episodes])
            shards.append(Shard("", i, len(chunk), chunk))
    if not shards:
        raise RewardError(f"{p} holds no episode stores, videos or frame folders to stream")
    return shards


def rank_shards(shards: list[Shard], epoch: int, seed: tuple[int, ...], rank: int,
                world_size: int) -> list[Shard]:
    """Rank r's shards of one epoch: the epoch's shuffled order, every W-th from r."""
    order = np.random.default_rng([*seed, epoch]).permutation(len(shards))
    return [shards[i] for i in order[rank::world_size]]


def usable_episodes(shard: Shard) -> int:
    """How many of a shard's episodes reward training reads (labels only, no frames)."""
    if not shard.source:
        return shard.count
    store = EpisodeStore.open(shard.source)
    return sum(episode_info(store, i, first_success=False).is_demo
               for i in range(shard.first, shard.first + shard.count))


def read_shard(shard: Shard, size_px: int) -> Iterator[tuple[np.ndarray, EpisodeInfo]]:
    """Prepared episodes (T, size, size, 3) uint8 of one shard, with their labels. Store
    episodes keep the store's labels; only successful expert-like ones are yielded (what reward
    training uses); a video or frame folder is one successful expert episode."""
    if shard.source:
        store = EpisodeStore.open(shard.source)
        for i in range(shard.first, shard.first + shard.count):
            if not episode_info(store, i, first_success=False).is_demo:
                continue
            info = episode_info(store, i)
            frames = store.episode(i, [keys.IMAGE])[keys.IMAGE]
            yield prepare_frames(check_frames(frames, f"episode {info.source}"), size_px), info
        return
    for f in shard.files:
        frames = read_frame_folder(f) if Path(f).is_dir() else read_video(f)
        yield prepare_frames(frames, size_px), EpisodeInfo(f, True, "", "expert")


class ShardEpisodes(torch.utils.data.IterableDataset):
    """Endless episodes of this rank's shards, epoch after epoch; DataLoader workers split the
    rank's shards of each epoch between them."""

    def __init__(self, shards: list[Shard], reader: Reader):
        self.shards, self.reader = shards, reader

    def __iter__(self) -> Iterator[tuple[np.ndarray, EpisodeInfo, int]]:
        w = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if w is None else (w.id, w.num_workers)
        epoch = 0
        while True:
            r = self.reader
            mine = rank_shards(self.shards, epoch, r.seed, r.rank, r.world_size)[wid::nw]
            for shard in mine:  # a shard of failures only yields nothing (checked at start)
                for frames, info in read_shard(shard, r.size_px):
                    yield frames, info, epoch
            epoch += 1


def _identity(batch: Any) -> Any:
    return batch


class EpisodeStream:
    """A bounded buffer of prepared episodes, renewed from the rank's shards (module docstring).
    ``dataset`` is the :class:`VideoDataset` of the buffer; ``epochs_started`` counts the
    passes over the rank's shards that have begun (with workers: the furthest worker's)."""

    def __init__(self, data: str | Path, size_px: int, cfg: StreamConfig, *,
                 seed: tuple[int, ...] = (0,), rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.cfg, self.size_px = cfg, size_px
        self.epochs_started, self.episodes_read = 0, 0
        shards = list_shards(data, cfg.shard_episodes)
        per_rank = len(shards) // world_size
        if per_rank < max(1, cfg.workers):
            raise RewardError(
                f"{data} has {len(shards)} shards for {world_size} ranks x "
                f"{max(1, cfg.workers)} readers: each needs one; lower stream.shard_episodes "
                "or stream.workers")
        if not any(usable_episodes(s) for s in shards):  # every rank sees the same answer
            raise RewardError(f"no successful expert episodes in {data} to train on "
                              "(meta/episode_kind, meta/episode_success)")
        self.n_shards = len(shards)
        reader = Reader(str(data), size_px, cfg, tuple(seed), rank, world_size)
        loader = torch.utils.data.DataLoader(
            ShardEpisodes(shards, reader), batch_size=None, collate_fn=_identity,
            num_workers=cfg.workers, prefetch_factor=cfg.prefetch if cfg.workers else None,
            persistent_workers=cfg.workers > 0,
        )  # fmt: skip
        self._it = iter(loader)
        self._buffer: deque[tuple[np.ndarray, EpisodeInfo]] = deque()
        self._dataset: VideoDataset | None = None

    def _next(self) -> tuple[np.ndarray, EpisodeInfo]:
        frames, info, epoch = next(self._it)
        self.epochs_started = max(self.epochs_started, int(epoch) + 1)  # workers run level
        self.episodes_read += 1
        return np.asarray(frames), info

    def refresh(self) -> VideoDataset:
        """Fill the buffer, or replace ``refresh_fraction`` of it (oldest first); return the
        rebuilt dataset."""
        cfg = self.cfg
        if len(self._buffer) < cfg.buffer_episodes:
            n = cfg.buffer_episodes - len(self._buffer)
        else:
            n = max(1, math.ceil(cfg.refresh_fraction * cfg.buffer_episodes))
        for _ in range(n):
            if len(self._buffer) >= cfg.buffer_episodes:
                self._buffer.popleft()
            self._buffer.append(self._next())
        videos, infos = zip(*self._buffer, strict=True)
        self._dataset = VideoDataset(list(videos), list(infos), self.size_px)
        return self._dataset

    @property
    def dataset(self) -> VideoDataset:
        return self._dataset if self._dataset is not None else self.refresh()
