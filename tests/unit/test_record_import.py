"""v2r record import / info / export: real mp4s through OpenCV and ffmpeg, one corrupt."""

import json

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
from video2reward.cli.main import main as v2r
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.images import prepare_frame
from video2reward.data.video_import import ImportConfig, import_videos


def _video(path, h, w, n, fps=30):
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=9) as wr:
        for t in range(n):
            f = np.zeros((h, w, 3), np.uint8)
            f[:, :, 0] = 4 * t  # red ramps with time; the crop keeps the centre column
            f[:, w // 2 - 10 : w // 2 + 10, 1] = 200
            wr.append_data(f)


@pytest.fixture
def videos(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    _video(d / "a_wide.mp4", 120, 160, 45)  # 1.5 s at 30 fps
    _video(d / "b_square.mp4", 96, 96, 30)
    good = (d / "a_wide.mp4").read_bytes()
    (d / "c_truncated.mp4").write_bytes(good[: len(good) // 2])  # moov atom cut off
    (d / "d_garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (d / "notes.txt").write_text("not a video, ignored")
    return d


def test_folder_with_corrupt_videos_imports_the_others_and_names_the_bad_ones(
    videos, tmp_path, capsys
):
    out = tmp_path / "human.zarr"
    rc = v2r(["record", "import", str(videos), f"out={out}", "task=push", "image_size=32"])
    captured = capsys.readouterr()
    assert rc == 1  # some video failed
    assert "c_truncated.mp4" in captured.err and "d_garbage.mp4" in captured.err
    assert "a_wide.mp4" not in captured.err
    summary = json.loads(captured.out)
    assert summary["imported"] == 2 and len(summary["failed"]) == 2
    s = EpisodeStore.open(out)
    assert s.n_episodes == 2 and s.attrs[keys.ATTR_SOURCE] == "video-import"
    assert [s.episode_meta(i)[keys.EPISODE_NOTES] for i in range(2)] == [
        "a_wide.mp4",
        "b_square.mp4",
    ]
    assert all(s.episode_meta(i)[keys.EPISODE_KIND] == "human" for i in range(2))
    assert all(s.episode_meta(i)[keys.EPISODE_SUCCESS] for i in range(2))
    a = s.episode(0)
    # 1.5 s at 10 fps -> frames at 0.0, 0.1, ..., 1.4 s (every third source frame).
    assert a[keys.IMAGE].shape == (15, 32, 32, 3)
    np.testing.assert_allclose(a[keys.TIMESTAMP], np.arange(15) * 3 / 30, atol=1e-9)
    np.testing.assert_allclose(a[keys.IMAGE][:, 16, 4, 0], np.arange(15) * 12, atol=6)
    assert a[keys.IMAGE][0, 16, 16, 1] > 150  # centre column survives the centre crop
    assert s.episode_meta(1)["length"] == 10


def test_append_checks_image_size_and_fps(videos, tmp_path):
    out = tmp_path / "h.zarr"
    import_videos(
        ImportConfig(videos=str(videos / "b_square.mp4"), out=str(out), task="t", image_size=32)
    )
    with pytest.raises(EpisodeStoreError, match="image_size=32"):
        import_videos(
            ImportConfig(
                videos=str(videos / "a_wide.mp4"),
                out=str(out),
                task="t",
                image_size=48,
                append=True,
            )
        )
    r = import_videos(
        ImportConfig(
            videos=str(videos / "a_wide.mp4"), out=str(out), task="t", image_size=32, append=True
        )
    )
    assert r.imported == [(str(videos / "a_wide.mp4"), 1)] and not r.failed


def test_prepare_frame_keeps_the_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # the centre square
    out = prepare_frame(img, 20)
    assert out.shape == (20, 20, 3) and out.min() == 255


def test_info_and_export_round_trip(videos, tmp_path, capsys):
    out = tmp_path / "h.zarr"
    import_videos(ImportConfig(videos=str(videos), out=str(out), task="push", image_size=32))
    capsys.readouterr()
    assert v2r(["record", "info", str(out), "--json", "--episodes"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["steps"] == 25 and info["unfinished_rows"] == 0
    assert info["per_episode"][1]["notes"] == "b_square.mp4"
    assert info["compression_ratio"] > 1.0
    mp4 = tmp_path / "ep0.mp4"
    assert v2r(["record", "export", str(out), "episode=0", f"out={mp4}", "scale=2"]) == 0
    cap = cv2.VideoCapture(str(mp4))
    n, shape = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, shape = n + 1, f.shape
    cap.release()
    assert n == 15 and shape == (64, 64, 3)
    assert v2r(["record", "export", str(out), "episode=7"]) == 2  # out of range: clear error
    assert "out of range" in capsys.readouterr().err
    assert v2r(["record", "info", str(tmp_path / "missing.zarr")]) == 2


def test_reward_tools_read_the_imported_store(videos, tmp_path):
    from video2reward.rewards.data import load_episodes

    out = tmp_path / "h.zarr"
    import_videos(ImportConfig(videos=str(videos), out=str(out), task="push", image_size=32))
    data = load_episodes(str(out), image_size_px=32)
    assert [i.kind for i in data.infos] == ["human", "human"]
    assert [i.notes for i in data.infos] == ["a_wide.mp4", "b_square.mp4"]
