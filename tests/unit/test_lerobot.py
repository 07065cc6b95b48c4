"""Episode store <-> LeRobot v3.0 folder (data/lerobot.py, ``v2r record export|import``).

(a) store -> LeRobot -> store keeps every non-image array, label and task name exactly, and
images within the codec tolerance; (b) the export read back with plain pyarrow/PyAV against the
v3.0 layout; (c) a folder written by hand here (pyarrow + PyAV, mpeg4 video, two cameras, two
episodes per video file) imports; (d) bad folders fail with the file named and nothing written.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from video2reward.cli.main import main as v2r
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError, shift_rows
from video2reward.data.lerobot import (
    LeRobotFormatError,
    LeRobotImportConfig,
    export_lerobot,
    import_lerobot,
)

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

SIZE = 48
FPS = 10.0
LENGTHS = (12, 17, 9)
TASKS = ("push the cube", "reach", "push the cube")
SUCCESS = (True, False, True)
# Mean absolute error (grey levels of 255) of h264/yuv420p at crf 18 on these sharp, saturated
# synthetic frames, where chroma subsampling dominates (measured: about 2.2); natural images
# come out closer.
IMAGE_MAE = 4.0


def _frames(rng: np.random.Generator, n: int) -> np.ndarray:
    """A red square moving over a textured background: motion, edges, colour."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    background = np.stack(
        [60 + 30 * np.sin(xx / 5.0), 80 + 20 * np.cos(yy / 7.0), 100 + 0 * xx], axis=-1
    )
    out = np.repeat(background[None], n, axis=0).astype(np.uint8)
    x0 = rng.integers(4, 20)
    for t in range(n):
        out[t, 14:26, x0 + t : x0 + t + 12] = (220, 40, 30)
    return out


def _store(path: Path, seed: int = 0) -> EpisodeStore:
    """Three twin-like episodes with every key the recorders write."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(
        path,
        fps=FPS,
        intrinsics={
            "width": SIZE,
            "height": SIZE,
            "fx": 40.0,
            "fy": 40.0,
            "cx": 24.0,
            "cy": 24.0,
        },
    )
    for e, n in enumerate(LENGTHS):
        action = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        action[-1] = 0.0  # the final row: no command
        data = {
            keys.IMAGE: _frames(rng, n),
            keys.EE_POS: rng.normal(0.3, 0.1, (n, 3)).astype(np.float32),
            keys.EE_QUAT: rng.normal(size=(n, 4)).astype(np.float32),
            keys.JOINT_POS: rng.uniform(-2, 2, (n, 5)).astype(np.float32),
            keys.GRIPPER: rng.uniform(0, 1, (n, 1)).astype(np.float32),
            keys.ACTION: action,
            keys.TIMESTAMP: np.cumsum(rng.uniform(0.09, 0.11, n)) - 0.1,  # a real clock
            keys.ORACLE_REWARD: rng.normal(size=n).astype(np.float32),
            keys.SUCCESS: rng.random(n) > 0.5,
        }
        store.append_episode(
            data,
            task=TASKS[e],
            success=SUCCESS[e],
            kind=("expert", "failed")[e % 2],
            notes=f"episode {e}",
        )
    return store


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    return _store(tmp_path / "demos.zarr")


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_same_store(a: EpisodeStore, b: EpisodeStore) -> None:
    assert b.n_episodes == a.n_episodes and b.fps == a.fps
    assert b.data_keys == a.data_keys
    for i in range(a.n_episodes):
        assert b.episode_meta(i) == a.episode_meta(i)  # task, success, kind, notes, length
        ea, eb = a.episode(i), b.episode(i)
        for k in a.data_keys:
            assert eb[k].dtype == ea[k].dtype and eb[k].shape == ea[k].shape, k
            if k == keys.IMAGE:
                assert _mae(ea[k], eb[k]) < IMAGE_MAE, (i, _mae(ea[k], eb[k]))
            else:
                np.testing.assert_array_equal(eb[k], ea[k], err_msg=f"episode {i} {k}")


# ------------------------------------------------------------------------ (a) round trip
@pytest.mark.parametrize("many_files", [False, True], ids=["one-file", "many-files"])
def test_round_trip_keeps_arrays_labels_and_tasks(store, tmp_path, many_files):
    limits = (
        {"chunks_size": 2, "data_files_size_in_mb": 0.001, "video_files_size_in_mb": 0.001}
        if many_files
        else {}
    )
    out = tmp_path / "demos_lerobot"
    report = export_lerobot(store, out, **limits)
    assert (report.episodes, report.frames, report.codec) == (3, sum(LENGTHS), "h264")
    assert (report.data_files, report.video_files) == ((3, 3) if many_files else (1, 1))
    summary = import_lerobot(LeRobotImportConfig(src=str(out), out=str(tmp_path / "back.zarr")))
    assert (summary.episodes, summary.frames, summary.skipped) == (3, sum(LENGTHS), [])
    back = EpisodeStore.open(tmp_path / "back.zarr")
    _assert_same_store(store, back)
    assert back.attrs[keys.ATTR_INTRINSICS] == store.attrs[keys.ATTR_INTRINSICS]
    assert back.attrs[keys.ATTR_SOURCE] == "lerobot-import"


def test_av1_export_records_its_codec_and_round_trips(store, tmp_path):
    try:
        av.codec.Codec("libsvtav1", "w")
        av.codec.Codec("av1", "r")
    except av.FFmpegError:
        pytest.skip("this PyAV has no AV1 encoder and decoder")
    out = tmp_path / "av1"
    assert export_lerobot(store, out, codec="av1").codec == "av1"
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "av1"
    import_lerobot(LeRobotImportConfig(src=str(out), out=str(tmp_path / "back.zarr")))
    back = EpisodeStore.open(tmp_path / "back.zarr")
    for i in range(store.n_episodes):
        img = store.episode(i, [keys.IMAGE])[keys.IMAGE]
        assert _mae(img, back.episode(i, [keys.IMAGE])[keys.IMAGE]) < 2 * IMAGE_MAE  # crf 30


def test_cli_export_and_import(store, tmp_path, capsys):
    out = tmp_path / "cli_lerobot"
    assert v2r(["record", "export", str(store.path), "format=lerobot", f"out={out}"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3
    assert v2r(["record", "import", str(out), f"out={tmp_path / 'a.zarr'}"]) == 0  # detected
    assert json.loads(capsys.readouterr().out)["frames"] == sum(LENGTHS)
    rc = v2r(["record", "import", f"src={out}", "format=lerobot", f"out={tmp_path / 'b.zarr'}"])
    assert rc == 0
    capsys.readouterr()
    for name in ("a.zarr", "b.zarr"):
        back = EpisodeStore.open(tmp_path / name)
        assert back.n_episodes == 3 and back.episode_meta(1)[keys.EPISODE_TASK] == "reach"
    # Wrong options are refused with the reason, nothing written.
    bad = tmp_path / "bad"
    assert (
        v2r(["record", "export", str(store.path), "format=lerobot", "episode=1", f"out={bad}"]) == 2
    )
    assert "leave episode" in capsys.readouterr().err and not bad.exists()
    assert v2r(["record", "import", str(out), f"out={bad}", "colour=blue"]) == 2
    assert "colour" in capsys.readouterr().err and not bad.exists()
    assert v2r(["record", "export", str(store.path), "format=lerobot", f"out={out}"]) == 2
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------- (b) the v3.0 layout on disk
def _read_all(root: Path, pattern: str) -> pa.Table:
    files = sorted(root.glob(pattern))
    assert files, pattern
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_export_follows_the_v3_layout(store, tmp_path):
    root = tmp_path / "ds"
    export_lerobot(store, root, chunks_size=2, video_files_size_in_mb=0.001)
    info = json.loads((root / "meta/info.json").read_text())
    n = sum(LENGTHS)
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, n, 2)
    assert info["fps"] == 10 and isinstance(info["fps"], int)
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == (
        "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    assert (info["chunks_size"], info["data_files_size_in_mb"]) == (2, 100)
    feats = info["features"]
    cam = "observation.images.front"
    assert feats[cam]["dtype"] == "video" and feats[cam]["shape"] == [SIZE, SIZE, 3]
    assert feats[cam]["names"] == ["height", "width", "channels"]
    vinfo = feats[cam]["info"]
    assert (vinfo["video.codec"], vinfo["video.pix_fmt"], vinfo["video.fps"]) == (
        "h264",
        "yuv420p",
        10,
    )
    state = feats["observation.state"]
    assert state["dtype"] == "float32" and state["shape"] == [13]
    assert state["names"][:3] == ["ee_x", "ee_y", "ee_z"] and state["names"][-1] == "gripper"
    assert state["info"]["units"][0] == "m" and state["info"]["units"][7] == "rad"
    assert feats["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert "after the observation" in feats["action"]["info"]["note"]
    for col in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[col] == {"dtype": "int64", "shape": [1], "names": None}

    # Data: every non-video feature is a column of its dtype; rows continuous over files.
    data = _read_all(root, "data/chunk-*/file-*.parquet")
    assert set(data.column_names) == {k for k, f in feats.items() if f["dtype"] != "video"}
    schema = data.schema
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 13)
    assert schema.field("action").type == pa.list_(pa.float32(), 4)
    assert schema.field("timestamp").type == pa.float32()
    assert schema.field("next.success").type == pa.bool_()
    assert schema.field("v2r.timestamp").type == pa.float64()
    for col in ("frame_index", "episode_index", "index", "task_index"):
        assert schema.field(col).type == pa.int64()
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(n))
    frame_index = data.column("frame_index").to_numpy()
    np.testing.assert_array_equal(frame_index, np.concatenate([np.arange(k) for k in LENGTHS]))
    np.testing.assert_allclose(data.column("timestamp").to_numpy(), frame_index / FPS, atol=1e-6)

    # Episodes: row ranges tile the data; files follow the templates; video time ranges.
    eps = _read_all(root, "meta/episodes/chunk-*/file-*.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1, 2]
    assert [e["length"] for e in eps] == list(LENGTHS)
    ends = np.cumsum(LENGTHS)
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == list(
        zip([0, *ends[:-1]], ends, strict=True)
    )
    assert [e["tasks"] for e in eps] == [[t] for t in TASKS]
    assert [e["success"] for e in eps] == list(SUCCESS)
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "push the cube"}, {"task_index": 1, "task": "reach"}]
    np.testing.assert_array_equal(
        data.column("task_index").to_numpy(), np.repeat([0, 1, 0], LENGTHS)
    )
    # next.success: the episode's label on its last frame.
    done = data.column("next.success").to_numpy(zero_copy_only=False)
    assert np.flatnonzero(done).tolist() == [ends[0] - 1, ends[2] - 1]
    files = set()
    for e in eps:
        assert (
            root
            / info["data_path"].format(
                chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]
            )
        ).is_file()
        video = root / info["video_path"].format(
            video_key=cam,
            chunk_index=e[f"videos/{cam}/chunk_index"],
            file_index=e[f"videos/{cam}/file_index"],
        )
        files.add(video.relative_to(root).as_posix())
        t0, t1 = e[f"videos/{cam}/from_timestamp"], e[f"videos/{cam}/to_timestamp"]
        assert t1 - t0 == pytest.approx(e["length"] / FPS)
        with av.open(str(video)) as f:
            frames = [fr.time for fr in f.decode(video=0)]
        assert t0 == pytest.approx(frames[0]) and t1 <= frames[-1] + 1.5 / FPS
    # 1 KB video files: one episode each, 2 files per chunk folder, then the next chunk.
    assert files == {
        f"videos/{cam}/chunk-000/file-000.mp4",
        f"videos/{cam}/chunk-000/file-001.mp4",
        f"videos/{cam}/chunk-001/file-000.mp4",
    }

    # The action of frame t is the store's action of row t: taken after observation t.
    action = np.stack(data.column("action").to_numpy(zero_copy_only=False))
    store_action = np.concatenate([store.episode(i)[keys.ACTION] for i in range(3)])
    np.testing.assert_array_equal(action, store_action)

    # Stats: min/max/mean/std/count per feature; images per channel in [0, 1], shape (3, 1, 1).
    stats = json.loads((root / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], store_action.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["std"], store_action.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["min"], store_action.min(axis=0))
    assert stats["action"]["count"] == [n] and stats["index"]["max"] == [n - 1]
    imgs = np.concatenate([store.episode(i)[keys.IMAGE] for i in range(3)]) / 255.0
    img_stats = {k: np.asarray(v) for k, v in stats[cam].items()}
    assert img_stats["mean"].shape == (3, 1, 1) and img_stats["count"].tolist() == [n]
    np.testing.assert_allclose(img_stats["mean"].ravel(), imgs.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(img_stats["std"].ravel(), imgs.std(axis=(0, 1, 2)), rtol=1e-9)
    assert img_stats["min"].min() >= 0.0 and img_stats["max"].max() <= 1.0


# ---------------------------------------------------- (c) a folder written by hand, per spec
HAND_FPS = 15
HAND_LENGTHS = (15, 10)


def _grey(e: int, k: int) -> int:
    """Flat grey level of frame k of episode e (wrist camera; the top camera shows 255 - it):
    12 levels between neighbours, so a frame off by one (mpeg4 errs by ~3) cannot pass."""
    return 20 + 12 * k if e == 0 else 235 - 12 * k


def _write_video(path: Path, frames: list[np.ndarray], fps: int = HAND_FPS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"qscale": "2"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def hand_written_dataset(root: Path, version: str = "v3.0") -> Path:
    """Two episodes, two cameras (both episodes in one mp4 per camera, the second from
    1.0 s), one data file per episode, state in this project's names, a foreign feature,
    tasks.parquet with plain columns, outcome only in next.success. Written with pyarrow and
    PyAV from the v3.0 description, not by data/lerobot.py."""
    names = ["ee_x", "ee_y", "ee_z", "gripper"]
    feats: dict[str, Any] = {
        f"observation.images.{cam}": {
            "dtype": "video",
            "shape": [32, 32, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.codec": "mpeg4", "video.pix_fmt": "yuv420p", "video.fps": HAND_FPS},
        }
        for cam in ("wrist", "top")
    }
    feats.update(
        {
            "observation.state": {"dtype": "float32", "shape": [4], "names": names},
            "observation.effort": {"dtype": "float64", "shape": [2], "names": ["a", "b"]},
            "action": {"dtype": "float32", "shape": [4], "names": ["dx", "dy", "dz", "gripper"]},
            "next.success": {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{
                c: {"dtype": "int64", "shape": [1], "names": None}
                for c in ("frame_index", "episode_index", "index", "task_index")
            },
        }
    )
    info = {
        "codebase_version": version,
        "robot_type": "so100",
        "total_episodes": 2,
        "total_frames": sum(HAND_LENGTHS),
        "total_tasks": 2,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": HAND_FPS,
        "splits": {"train": "0:2"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": feats,
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    pq.write_table(
        pa.table({"task_index": pa.array([0, 1], pa.int64()), "task": ["stack", "wipe"]}),
        root / "meta/tasks.parquet",
    )
    episodes, start, offset = [], 0, 0.0
    for e, n in enumerate(HAND_LENGTHS):
        k = np.arange(n)
        state = np.stack([k * 0.01, k * 0.02 + e, -k * 0.01, np.full(n, 0.5)], 1)
        table = pa.table(
            {
                "observation.state": pa.FixedSizeListArray.from_arrays(
                    pa.array(state.astype(np.float32).ravel()), 4
                ),
                "observation.effort": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.stack([k * 1.0, -k * 1.0], 1).ravel()), 2
                ),
                "action": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.tile(np.float32([0.5, -0.5, 0.0, e]), n)), 4
                ),
                "next.success": pa.array(k == n - 1 if e == 0 else np.zeros(n, bool)),
                "timestamp": pa.array((k / HAND_FPS).astype(np.float32)),
                "frame_index": pa.array(k, pa.int64()),
                "episode_index": pa.array(np.full(n, e), pa.int64()),
                "index": pa.array(start + k, pa.int64()),
                "task_index": pa.array(np.full(n, e), pa.int64()),
            }
        )
        path = root / f"data/chunk-000/file-{e:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        row: dict[str, Any] = {
            "episode_index": e,
            "tasks": [("stack", "wipe")[e]],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": e,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for cam in ("wrist", "top"):
            key = f"videos/observation.images.{cam}"
            row.update(
                {
                    f"{key}/chunk_index": 0,
                    f"{key}/file_index": 0,
                    f"{key}/from_timestamp": offset,
                    f"{key}/to_timestamp": offset + n / HAND_FPS,
                }
            )
        episodes.append(row)
        start += n
        offset += n / HAND_FPS
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet"
    )
    for cam, flip in (("wrist", 0), ("top", 255)):
        greys = [abs(flip - _grey(e, k)) for e, n in enumerate(HAND_LENGTHS) for k in range(n)]
        frames = [np.full((32, 32, 3), g, np.uint8) for g in greys]
        _write_video(root / f"videos/observation.images.{cam}/chunk-000/file-000.mp4", frames)
    return root


def test_hand_written_dataset_imports(tmp_path):
    src = hand_written_dataset(tmp_path / "hand")
    with pytest.raises(LeRobotFormatError, match=r"several cameras \['wrist', 'top'\]"):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(tmp_path / "x.zarr")))
    assert not (tmp_path / "x.zarr").exists()

    summary = import_lerobot(
        LeRobotImportConfig(src=str(src), out=str(tmp_path / "s.zarr"), camera="wrist")
    )
    assert summary.camera == "observation.images.wrist"
    assert summary.skipped == ["observation.images.top: another camera"]
    s = EpisodeStore.open(tmp_path / "s.zarr")
    assert s.fps == HAND_FPS and s.n_episodes == 2
    assert s.data_keys == sorted(
        [
            keys.IMAGE,
            keys.EE_POS,
            keys.GRIPPER,
            keys.ACTION,
            keys.TIMESTAMP,
            "lerobot.observation.effort",
        ]
    )
    assert [s.episode_meta(i)[keys.EPISODE_TASK] for i in range(2)] == ["stack", "wipe"]
    assert [s.episode_meta(i)[keys.EPISODE_SUCCESS] for i in range(2)] == [True, False]
    assert {s.episode_meta(i)[keys.EPISODE_KIND] for i in range(2)} == {"teleop"}
    for e, n in enumerate(HAND_LENGTHS):
        ep = s.episode(e)
        k = np.arange(n)
        np.testing.assert_allclose(ep[keys.EE_POS][:, 1], k * 0.02 + e, rtol=1e-6)
        assert ep[keys.EE_POS].dtype == np.float32 and ep[keys.GRIPPER].shape == (n, 1)
        np.testing.assert_array_equal(ep[keys.ACTION][:, 3], np.full(n, e, np.float32))
        np.testing.assert_allclose(ep[keys.TIMESTAMP], k / HAND_FPS, atol=1e-6)
        np.testing.assert_array_equal(ep["lerobot.observation.effort"][:, 0], k * 1.0)
        # Frame k of episode e (the second from 1.0 s into the shared file) and no other.
        grey = ep[keys.IMAGE].reshape(n, -1).mean(axis=1)
        np.testing.assert_allclose(grey, [_grey(e, j) for j in k], atol=4.0)

    top = import_lerobot(
        LeRobotImportConfig(src=str(src), out=str(tmp_path / "top.zarr"), camera="top")
    )
    assert top.camera == "observation.images.top"
    img = EpisodeStore.open(tmp_path / "top.zarr").episode(1)[keys.IMAGE]
    assert abs(img[0].mean() - (255 - _grey(1, 0))) < 4.0


# ---------------------------------------------------------------------------- (d) bad input
def _dir_state(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


def test_unknown_version_is_refused_naming_info_json(tmp_path):
    src = hand_written_dataset(tmp_path / "old", version="v2.1")
    out = tmp_path / "s.zarr"
    with pytest.raises(LeRobotFormatError, match=r"info\.json: codebase_version 'v2\.1'"):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist"))
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("missing", "pattern"),
    [
        ("data/chunk-000/file-001.parquet", r"data/chunk-000/file-001\.parquet is missing"),
        (
            "videos/observation.images.wrist/chunk-000/file-000.mp4",
            r"observation\.images\.wrist/chunk-000/file-000\.mp4 is missing",
        ),
        ("meta/tasks.parquet", r"meta/tasks\.parquet is missing"),
    ],
    ids=["data", "video", "tasks"],
)
def test_missing_file_is_named_and_no_store_is_created(tmp_path, missing, pattern):
    src = hand_written_dataset(tmp_path / "ds")
    (src / missing).unlink()
    out = tmp_path / "s.zarr"
    with pytest.raises(LeRobotFormatError, match=pattern):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist"))
    assert not out.exists() and _leftovers(tmp_path) == []


def test_existing_store_is_untouched_by_a_failed_or_refused_import(tmp_path):
    src = hand_written_dataset(tmp_path / "ds")
    out = tmp_path / "existing.zarr"
    import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist"))
    before = _dir_state(out)

    # Without append: refused outright.
    with pytest.raises(EpisodeStoreError, match="already exists"):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist"))
    # A video shorter than its episodes: found while decoding episode 1, after episode 0
    # decoded; the existing store gets none of them.
    short = [np.full((32, 32, 3), 50, np.uint8)] * (HAND_LENGTHS[0] + 3)
    _write_video(src / "videos/observation.images.wrist/chunk-000/file-000.mp4", short, HAND_FPS)
    with pytest.raises(LeRobotFormatError, match=r"file-000\.mp4 has no frame at 1\.2000 s"):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist", append=True))
    with pytest.raises(LeRobotFormatError, match="has no frame at"):  # a new store: none
        import_lerobot(
            LeRobotImportConfig(src=str(src), out=str(tmp_path / "new.zarr"), camera="wrist")
        )
    assert not (tmp_path / "new.zarr").exists()
    # A missing video: named before anything is decoded.
    (src / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()
    with pytest.raises(LeRobotFormatError, match=r"file-000\.mp4 is missing"):
        import_lerobot(LeRobotImportConfig(src=str(src), out=str(out), camera="wrist", append=True))
    assert _dir_state(out) == before and _leftovers(tmp_path) == []
    assert EpisodeStore.open(out).n_episodes == 2


def test_append_adds_episodes_and_checks_the_layout(store, tmp_path):
    ds = tmp_path / "ds"
    export_lerobot(store, ds)
    out = tmp_path / "grow.zarr"
    import_lerobot(LeRobotImportConfig(src=str(ds), out=str(out)))
    import_lerobot(LeRobotImportConfig(src=str(ds), out=str(out), append=True))
    grown = EpisodeStore.open(out)
    assert grown.n_episodes == 6
    np.testing.assert_array_equal(grown.episode(4)[keys.ACTION], store.episode(1)[keys.ACTION])
    assert grown.episode_meta(4)[keys.EPISODE_TASK] == "reach"
    # The hand-written dataset (15 fps, no joints) is refused: by its fps before decoding...
    before = _dir_state(out)
    hand = hand_written_dataset(tmp_path / "hand")
    with pytest.raises(EpisodeStoreError, match=r"it is at 10\.0 fps, the dataset at 15"):
        import_lerobot(
            LeRobotImportConfig(src=str(hand), out=str(out), camera="wrist", append=True)
        )
    assert _dir_state(out) == before and _leftovers(tmp_path) == []
    # ... and, at its own fps, by its keys once decoded, before the store is written.
    other = EpisodeStore.create(tmp_path / "other.zarr", fps=HAND_FPS)
    other.append_episode(
        {keys.IMAGE: np.zeros((4, 32, 32, 3), np.uint8), keys.TIMESTAMP: np.arange(4.0)},
        task="t",
        success=True,
    )
    before = _dir_state(tmp_path / "other.zarr")
    with pytest.raises(
        EpisodeStoreError, match=r"cannot append .* it holds \['img', 'timestamp'\]"
    ):
        import_lerobot(
            LeRobotImportConfig(src=str(hand), out=str(other.path), camera="wrist", append=True)
        )
    assert _dir_state(tmp_path / "other.zarr") == before and _leftovers(tmp_path) == []


def test_export_refuses_a_non_empty_folder_and_leaves_it(store, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_lerobot(store, out)
    assert _dir_state(out) == {"mine.txt": b"keep me"} and _leftovers(tmp_path) == []
    odd = EpisodeStore.create(tmp_path / "odd.zarr", fps=FPS)
    odd.append_episode({keys.IMAGE: np.zeros((3, 33, 32, 3), np.uint8)}, task="t", success=True)
    with pytest.raises(LeRobotFormatError, match="even image sides, got 33x32"):
        export_lerobot(odd, tmp_path / "odd_lerobot")
    assert not (tmp_path / "odd_lerobot").exists() and _leftovers(tmp_path) == []
    assert os.listdir(tmp_path / "taken") == ["mine.txt"]


@pytest.mark.parametrize("old_layout", [False, True])
def test_a_learner_replay_exports_each_action_beside_the_observation_it_followed(
    tmp_path, old_layout
):
    """The learner's replay store (episode kind "agent") exports like demonstrations: row t's
    action is the command sent after observation t. Stores written before the replay took that
    layout (row t: the action that led to t; no layout attribute) are shifted by the export."""
    from video2reward.policies.replay import ReplayBuffer, ReplayConfig

    rb = ReplayBuffer(ReplayConfig(100, 3, 3, 0.99), (3, 16, 16), 4, 4,
                      directory=tmp_path / "replay", fps=5.0)  # fmt: skip
    rng = np.random.default_rng(0)
    sent = rng.uniform(-1, 1, (6, 4)).astype(np.float32)
    frames = rng.integers(0, 255, (7, 3, 16, 16), np.uint8)
    rb.start_episode(frames[0], np.zeros(4, np.float32))
    for t, a in enumerate(sent):  # action t is sent after frame t and leads to frame t + 1
        rb.add(a, 0.1 * t, frames[t + 1], np.full(4, t + 1, np.float32))
    rb.end_episode(success=True, intervened=np.arange(6) == 2, called=np.arange(6) == 5)
    store = rb.store
    assert store is not None
    if old_layout:  # the same episode as it was stored before: actions one row down
        ep = store.episode(0)
        old = EpisodeStore.create(tmp_path / "old.zarr", fps=5.0, source="replay")
        shift_rows(ep, (keys.ACTION, "intervened"), down=True)
        old.append_episode(ep, task="online", success=True, kind="agent")
        store = old
    export_lerobot(store, tmp_path / "ds")
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["fps"] == 5 and info["total_frames"] == 7
    table = _read_all(tmp_path / "ds", "data/*/*.parquet")
    actions = np.stack(table.column("action").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(actions[:6], sent)
    assert not actions[6].any()  # the final observation: no command after it
    flags = table.column("v2r.intervened").to_pylist()
    assert flags == [False, False, True, False, False, False, False]
    # the success call stays with the observation it was made on, like the reward
    calls = table.column("v2r.success_called").to_pylist()
    assert calls == [False] * 6 + [True]
