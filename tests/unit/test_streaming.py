"""The streaming reward-training data set: every shard read once per epoch across ranks,
resident memory flat over a data set 20x its buffer, a streamed training run, bad input.

    pytest tests/unit/test_streaming.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from video2reward.rewards.base import RewardError
from video2reward.rewards.streaming import (
    EpisodeStream,
    Reader,
    ShardEpisodes,
    StreamConfig,
    list_shards,
    rank_shards,
)
from video2reward.rewards.synthetic import synthetic_store

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "demos.zarr"
    synthetic_store(12, 2, size_px=32, length=8, seed=0, path=str(path))  # 12 experts, 2 failed
    return path


def test_every_shard_is_read_once_per_epoch_across_ranks(store12: Path) -> None:
    shards = list_shards(store12, 2)
    assert [(s.first, s.count) for s in shards] == [(i, 2) for i in range(0, 14, 2)]
    for epoch in range(3):
        per_rank = [rank_shards(shards, epoch, (0,), r, 2) for r in range(2)]
        assert sorted(s.first for s in per_rank[0] + per_rank[1]) == list(range(0, 14, 2))
    assert rank_shards(shards, 0, (0,), 0, 1) != rank_shards(shards, 1, (0,), 0, 1)  # reshuffled

    cfg = StreamConfig(enabled=True, shard_episodes=2)
    experts = sorted(f"{store12}#{i}" for i in range(12))  # the failures are never read
    for epoch in range(2):
        seen = []
        for rank in range(2):
            reader = Reader(str(store12), 32, cfg, seed=(0,), rank=rank, world_size=2)
            for frames, info, ep in ShardEpisodes(shards, reader):
                if ep > epoch:
                    break
                if ep == epoch:
                    assert frames.shape[1:] == (32, 32, 3)
                    seen.append(info.source)
        assert sorted(seen) == experts  # each expert once: the ranks never overlap
    # the stream itself: a buffer of 2 renewed one episode per refresh, for three passes
    stream = EpisodeStream(store12, 32, StreamConfig(buffer_episodes=2, refresh_fraction=0.5,
                                                     shard_episodes=2))
    while stream.episodes_read < 36:
        assert len(stream.refresh()) == 2
    assert stream.epochs_started == 3


def test_worker_processes_and_shards_of_failures_only(tmp_path: Path) -> None:
    """Decoding in two worker processes; failures in a block of their own (shards holding no
    usable episode) are passed over on every rank instead of stopping one of them."""
    path = tmp_path / "blocks.zarr"
    synthetic_store(4, 4, size_px=32, length=6, seed=2, path=str(path))  # failures written last
    for rank in range(2):
        stream = EpisodeStream(path, 32, StreamConfig(buffer_episodes=2, refresh_fraction=0.5,
                                                      shard_episodes=2), rank=rank, world_size=2)
        while stream.episodes_read < 20:
            assert all(i.success for i in stream.refresh().infos)
    stream = EpisodeStream(path, 32, StreamConfig(buffer_episodes=3, shard_episodes=1,
                                                  workers=2, prefetch=2))
    sources = set()
    while stream.episodes_read < 12:
        sources |= {i.source for i in stream.refresh().infos}
    assert sources == {f"{path}#{i}" for i in range(4)}
    with pytest.raises(RewardError, match="each needs one"):
        EpisodeStream(path, 32, StreamConfig(shard_episodes=8, workers=2))  # one shard


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_memory_stays_flat_over_a_set_20x_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "big.zarr"
    synthetic_store(120, 0, size_px=64, length=30, seed=1, path=str(path))
    prepared_mb = 120 * 30 * 64 * 64 * 3 / 2**20  # ~42 MB if it were all loaded
    cfg = StreamConfig(enabled=True, buffer_episodes=6, refresh_fraction=0.5, shard_episodes=4)
    stream = EpisodeStream(path, 64, cfg)
    stream.refresh()
    for _ in range(10):  # warm up allocators and zarr's caches
        stream.refresh()
    base = _rss_mb()
    while stream.episodes_read < 2 * 120:  # two whole passes
        data = stream.refresh()
        assert len(data) == 6
    grown = _rss_mb() - base
    assert stream.epochs_started >= 2
    assert grown < 0.25 * prepared_mb, f"RSS grew {grown:.1f} MB over {prepared_mb:.0f} MB"


def test_streamed_training_runs_and_says_so(store12: Path, tmp_path: Path) -> None:
    import json

    from video2reward.rewards.rank2reward import Rank2RewardConfig
    from video2reward.rewards.train import TrainConfig, train

    cfg = TrainConfig(data=str(store12), out=str(tmp_path / "run"), progress_bar=False,
                      device="cpu", threads=1, log_every=5,
                      stream={"enabled": True, "buffer_episodes": 4, "refresh_every": 5,
                              "shard_episodes": 2})  # type: ignore[arg-type]
    assert isinstance(cfg.stream, StreamConfig)
    model = train(Rank2RewardConfig(image_size_px=32, embed_dim=8, steps=20), cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["streamed"]["episodes_read"] >= 4 + 3  # the fill, then 1 per refresh
    assert summary["episodes"] == 4  # calibrated on the buffer
    assert np.isfinite(model.score(np.zeros((3, 32, 32, 3), np.uint8)).reward).all()
    with pytest.raises(ValueError, match="max_episodes"):
        train(Rank2RewardConfig(image_size_px=32, steps=1),
              TrainConfig(data=str(store12), out=str(tmp_path / "r2"), max_episodes=3,
                          stream=StreamConfig(enabled=True)))


def test_bad_input(store12: Path, tmp_path: Path) -> None:
    with pytest.raises(RewardError, match="does not exist"):
        list_shards(tmp_path / "nothing", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardError, match="no episode stores"):
        list_shards(tmp_path / "empty", 4)
    with pytest.raises(RewardError, match="shards for 8 ranks"):
        EpisodeStream(store12, 32, StreamConfig(shard_episodes=4), rank=0, world_size=8)
    failed = tmp_path / "failed.zarr"
    synthetic_store(0, 3, size_px=32, length=6, seed=0, path=str(failed))
    with pytest.raises(RewardError, match="no successful expert episodes"):
        EpisodeStream(failed, 32, StreamConfig(buffer_episodes=2))
    with pytest.raises(ValueError, match="refresh_fraction"):
        StreamConfig(refresh_fraction=0.0)
