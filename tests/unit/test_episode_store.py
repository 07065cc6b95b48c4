"""The zarr episode store: round trip, crash recovery, and clear errors for bad paths."""

import json

import numpy as np
import pytest
import zarr
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.sim.demos import DemoConfig, generate, record_episode
from video2reward.sim.env import make_env


def _episode(n: int, value: int) -> dict[str, np.ndarray]:
    return {
        keys.IMAGE: np.full((n, 8, 8, 3), value, np.uint8),
        keys.ACTION: np.full((n, 4), value / 10, np.float32),
    }


def test_write_read_round_trip_of_twin_demos(tmp_path):
    env = make_env("reach", image_size=48)
    episodes = [
        record_episode(env, kind, seed, noise=0.05)
        for seed, kind in enumerate(["expert", "failed", "expert"])
    ]
    store = EpisodeStore.create(tmp_path / "d.zarr", fps=10.0, intrinsics=env.intrinsics())
    for i, (data, ok, _) in enumerate(episodes):
        store.append_episode(data, task="reach", success=ok, kind=["expert", "failed", "expert"][i])
    env.close()
    back = EpisodeStore.open(tmp_path / "d.zarr")
    assert back.n_episodes == 3
    for i, (data, ok, _) in enumerate(episodes):
        got = back.episode(i)
        assert set(got) == set(data)
        for k in data:
            np.testing.assert_array_equal(got[k], data[k])
            assert got[k].dtype == data[k].dtype
        assert back.episode_meta(i)[keys.EPISODE_SUCCESS] == ok
    assert back.episode_meta(1)[keys.EPISODE_KIND] == "failed"
    assert back.attrs[keys.ATTR_INTRINSICS]["width"] == 48.0
    assert back.fps == 10.0


def test_demos_command_writes_store_summary_sheet_and_videos(tmp_path):
    out = tmp_path / "push.zarr"
    cfg = DemoConfig(
        task="push",
        episodes=2,
        kind=("expert", "failed"),
        out=str(out),
        image_size=32,
        video=True,
        video_size=64,
    )
    summary = generate(cfg, progress=False)
    store = EpisodeStore.open(out)
    assert store.n_episodes == 2 and summary["episodes"] == 2
    assert [store.episode_meta(i)[keys.EPISODE_KIND] for i in range(2)] == ["expert", "failed"]
    assert store.episode_meta(0)[keys.EPISODE_SUCCESS]
    on_disk = json.loads((tmp_path / "push_summary.json").read_text())
    assert on_disk["this_run"]["success_rate_by_kind"] == {"expert": 1.0, "failed": 0.0}
    assert (tmp_path / "push_summary.png").stat().st_size > 1000
    import imageio.v3 as iio

    video = iio.imread(tmp_path / "push_videos" / "episode_000.mp4")
    assert video.shape[0] == store.episode_slice(0).stop and video.shape[1:3] == (64, 64)
    # row t: observation before action t; the last row carries no command
    ep = store.episode(0)
    assert ep[keys.IMAGE].shape[0] == ep[keys.ACTION].shape[0] == ep[keys.TIMESTAMP].shape[0]
    assert not ep[keys.ACTION][-1].any() and np.all(np.diff(ep[keys.TIMESTAMP]) > 0)
    # appending keeps earlier episodes and continues the seeds
    generate(
        DemoConfig(task="push", episodes=1, out=str(out), image_size=32, append=True),
        progress=False,
    )
    assert EpisodeStore.open(out).n_episodes == 3


def test_interrupted_episode_is_dropped_and_earlier_ones_survive(tmp_path):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, fps=30.0)
    store.append_episode(_episode(5, 1), task="t", success=True)
    writer = store.begin_episode(task="t", flush_every=2)
    for _ in range(5):
        writer.add(**{k: v[0] for k, v in _episode(1, 7).items()})
    # the process dies here: rows were flushed, the episode was never committed
    del writer, store
    raw = zarr.open_group(str(path), mode="r")
    assert raw["data"][keys.IMAGE].shape[0] > 5  # flushed rows are on disk
    reopened = EpisodeStore.open(path, mode="a")
    assert reopened.n_episodes == 1 and reopened.n_steps == 5
    assert reopened.root["data"][keys.IMAGE].shape[0] == 5
    reopened.append_episode(_episode(3, 2), task="t", success=False)
    again = EpisodeStore.open(path)
    assert [again.episode_meta(i)["length"] for i in range(2)] == [5, 3]
    assert again.successful_episodes() == [0]  # the committed labels, not the dropped one's
    np.testing.assert_array_equal(again.episode(0)[keys.IMAGE], _episode(5, 1)[keys.IMAGE])


def test_exception_inside_an_episode_discards_it(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", fps=10.0)
    def record_then_fail() -> None:
        with store.begin_episode(task="t", flush_every=1) as w:
            w.add(**{k: v[0] for k, v in _episode(1, 3).items()})
            raise RuntimeError("operator hit discard")

    with pytest.raises(RuntimeError):
        record_then_fail()
    assert store.n_episodes == 0 and store.root["data"][keys.IMAGE].shape[0] == 0


def test_missing_and_corrupt_stores_give_clear_errors(tmp_path):
    with pytest.raises(EpisodeStoreError, match="does not exist"):
        EpisodeStore.open(tmp_path / "nope.zarr")
    (tmp_path / "notzarr").mkdir()
    (tmp_path / "notzarr" / "junk.txt").write_text("hello")
    with pytest.raises(EpisodeStoreError, match=r"zarr|episode store"):
        EpisodeStore.open(tmp_path / "notzarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_group("foo")
    with pytest.raises(EpisodeStoreError, match="not an episode store"):
        EpisodeStore.open(tmp_path / "other.zarr")
    path = tmp_path / "trunc.zarr"
    s = EpisodeStore.create(path, fps=10.0)
    s.append_episode(_episode(4, 1), task="t", success=True)
    s.root["data"][keys.IMAGE].resize((2, 8, 8, 3))  # data lost behind the index's back
    with pytest.raises(EpisodeStoreError, match="truncated"):
        EpisodeStore.open(path)
    with pytest.raises(EpisodeStoreError, match="already exists"):
        EpisodeStore.create(path, fps=10.0)


def test_inconsistent_episode_arrays_are_refused(tmp_path):
    store = EpisodeStore.in_memory(fps=10.0)
    with pytest.raises(ValueError, match="same length"):
        store.append_episode(
            {
                keys.IMAGE: np.zeros((3, 4, 4, 3), np.uint8),
                keys.ACTION: np.zeros((2, 4), np.float32),
            },
            task="t",
            success=True,
        )
    store.append_episode(_episode(2, 1), task="t", success=True)
    with pytest.raises(ValueError, match="data/img"):
        store.append_episode(
            {
                keys.IMAGE: np.zeros((2, 5, 5, 3), np.uint8),
                keys.ACTION: np.zeros((2, 4), np.float32),
            },
            task="t",
            success=True,
        )
    assert store.n_episodes == 1


def test_an_index_entry_from_a_cut_commit_is_refused_on_read_and_dropped_on_append(tmp_path):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, fps=10.0)
    store.append_episode(_episode(4, 1), task="t", success=True)
    # a full disk during the commit: the index grew, its new chunk never landed (reads as 0)
    store.root["meta"][keys.EPISODE_ENDS].resize((2,))
    with pytest.raises(EpisodeStoreError, match="damaged"):
        EpisodeStore.open(path)
    repaired = EpisodeStore.open(path, mode="a")
    assert repaired.n_episodes == 1 and repaired.episode_meta(0)["length"] == 4
    repaired.append_episode(_episode(2, 5), task="t", success=False)
    assert EpisodeStore.open(path).n_episodes == 2
