"""The one image preparation path: centre square crop, then resize (data.images)."""

import cv2
import numpy as np
import pytest
from video2reward.data.images import crop_square, prepare_frame, prepare_frames


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("side", [40, 84, 96, 128])
@pytest.mark.parametrize("size", [32, 84, 100])
def test_square_frames_resize_as_plain_cv2(side: int, size: int) -> None:
    # Square frames: exactly cv2.resize, area when shrinking, bilinear when enlarging,
    # untouched at the size (what the reward models, the learner and import always did).
    f = _frames(3, side, side)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    want = np.stack([cv2.resize(x, (size, size), interpolation=interp) for x in f])
    got = prepare_frames(f, size)
    assert got.shape == (3, size, size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(prepare_frame(f[1], size), want[1])
    assert got.flags.c_contiguous


def test_square_frames_at_the_size_come_back_unchanged() -> None:
    f = _frames(2, 84, 84)
    out = prepare_frames(f, 84)
    assert np.array_equal(out, f) and np.shares_memory(out, f)  # contiguous already: no copy
    np.testing.assert_array_equal(prepare_frame(f[0], 84), f[0])


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (101, 150), (150, 101)])
def test_non_square_frames_are_centre_cropped_then_resized(h: int, w: int) -> None:
    f = _frames(2, h, w)
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    square = f[:, y0 : y0 + s, x0 : x0 + s]
    assert np.array_equal(crop_square(f), square)
    want = np.stack([cv2.resize(x, (84, 84), interpolation=cv2.INTER_AREA) for x in square])
    np.testing.assert_array_equal(prepare_frames(f, 84), want)
    np.testing.assert_array_equal(prepare_frame(f[0], 84), want[0])


def test_a_wide_frame_keeps_its_centre_and_drops_the_sides() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 200  # the centre 480x480 square
    out = prepare_frame(img, 84)
    assert out.min() == 200  # no black side bar squashed in


def test_shapes_other_than_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="one"):
        prepare_frame(np.zeros((2, 8, 8, 3), np.uint8), 4)
    with pytest.raises(ValueError, match="T, H, W"):
        prepare_frames(np.zeros((8, 8, 3), np.uint8), 4)


# ------------------------------------------------------------------ one frame, every door
def test_one_640x480_frame_reaches_every_model_the_same_way(tmp_path, monkeypatch) -> None:
    """A RealSense-sized frame through import, the readers of recordings, reward training,
    scoring, the reward stream and the learner: the same 40 px model input everywhere (the
    centre square, not the frame squashed 4:3)."""
    import imageio.v2 as imageio
    import torch
    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.data.video_import import ImportConfig, import_videos
    from video2reward.policies.drqv2 import DrQV2Config
    from video2reward.policies.online import OnlineConfig, OnlineLearner
    from video2reward.rewards.base import build_model, method_class
    from video2reward.rewards.data import load_episodes, read_video
    from video2reward.rewards.stream import RewardStream, RewardStreamConfig
    from video2reward.robot.recorder import Observation, Recorder, RecorderConfig

    size = 40
    yy, xx = np.mgrid[0:480, 0:640]
    pattern = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1)
    video = tmp_path / "cam.mp4"
    with imageio.get_writer(video, fps=30, codec="libx264", macro_block_size=1, quality=9) as w:
        for t in range(3):
            w.append_data(np.roll(pattern, 4 * t, axis=1).astype(np.uint8))
    frame = read_video(video)[0]  # the decoded frame every path below is given
    assert frame.shape == (480, 640, 3)
    want = prepare_frame(frame, size)
    squashed = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    assert np.abs(want.astype(int) - squashed).max() > 50  # the test tells crop from squash

    got: dict[str, np.ndarray] = {}
    # video import (v2r record import), read back from its store
    imported = tmp_path / "human.zarr"
    import_videos(ImportConfig(videos=str(video), out=str(imported), task="t",
                               image_size=size, fps=30.0))  # fmt: skip
    got["video import"] = np.asarray(EpisodeStore.open(imported).episode(0)[keys.IMAGE])[0]
    # reward training data: a video file, and a recording made by the recorder
    got["reward data (video)"] = load_episodes(video, size).episode(0)[0]
    recorded = tmp_path / "rec.zarr"
    cfg = RecorderConfig(out=str(recorded), task="t", min_free_mb=0.0, fsync=False)
    with Recorder(cfg) as rec:
        rec.start()
        for i in range(2):
            rec.observe(Observation(frame, np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(5),
                                    1.0, t_wall_s=1000.0 + i / 30))  # fmt: skip
        rec.stop(success=True)
    assert np.asarray(EpisodeStore.open(recorded).episode(0)[keys.IMAGE]).shape[1:] == (480, 640, 3)
    got["reward data (recording)"] = load_episodes(recorded, size).episode(0)[0]

    # scoring (v2r reward score) and the reward node's stream: the tensor the model is given
    model = build_model(method_class("vip").config_cls(image_size_px=size, embed_dim=8,
                                                       batch_size=4, steps=1),
                        torch.device("cpu"))  # fmt: skip
    seen: list[torch.Tensor] = []
    real_score = model._score

    def spy(x: torch.Tensor, g: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        seen.append(x[-1].permute(1, 2, 0).round().to(torch.uint8).numpy())
        return real_score(x, g)

    monkeypatch.setattr(model, "_score", spy)
    model.score(frame[None])
    got["model.score"] = seen[-1]
    stream = RewardStream(RewardStreamConfig(ckpt="in-memory", online_updates=False), model=model)
    try:
        stream.score([(1, frame)])
    finally:
        stream.close()
    got["reward stream"] = seen[-1]

    # the learner (in process and in the learner node): the frame its agent and replay get
    learner = OnlineLearner(OnlineConfig(out=str(tmp_path / "run"), image_size=size,
                                         seed_steps=10, agent=DrQV2Config(
                                             batch_size=16, hidden_dim=32, feature_dim=16)))
    try:
        begun: list[np.ndarray] = []
        real_begin = learner.core.begin
        monkeypatch.setattr(learner.core, "begin", lambda f, p: (begun.append(f), real_begin(f, p)))
        learner.begin(frame, np.array([0.3, 0.0, 0.2, 1.0], np.float32))
        got["learner"] = begun[0].transpose(1, 2, 0)
    finally:
        learner.close()

    for path, x in got.items():
        assert x.shape == (size, size, 3), path
        np.testing.assert_array_equal(x, want, err_msg=path)
