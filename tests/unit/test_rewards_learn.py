"""Reward models learn progress from synthetic video; training resumes; the CLI runs end to end."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from video2reward.cli.main import main as v2r
from video2reward.rewards.base import GOAL_CHECK_RATIO, load_reward_model, method_class
from video2reward.rewards.data import dataset_from_store
from video2reward.rewards.evaluate import evaluate, goal_frame, time_spearman
from video2reward.rewards.synthetic import synthetic_store
from video2reward.rewards.train import TrainConfig, train

torch.set_num_threads(1)
SIZE = 40

# Per method: enough steps on 40 px blob videos for progress to follow time (~2-4 s each).
# TCN at 60 steps sat at the bar (mean Spearman 0.58-0.70 over three model seeds, 0.58 on
# the test's); at 200 it reads 0.79-0.85.
STEPS = {"vip": 60, "uvd": 60, "tcn": 200, "hold_r": 100, "hold_c": 40, "rank2reward": 150}
EXTRA = {"uvd": {"min_interval": 6}, "hold_c": {"clip_frames": 10}}


@pytest.fixture(scope="module")
def demos_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "demos.zarr"
    synthetic_store(n_expert=16, n_failed=0, size_px=SIZE, length=20, seed=0, path=str(path))
    return path


@pytest.fixture(scope="module")
def heldout():
    return dataset_from_store(synthetic_store(6, 6, size_px=SIZE, length=20, seed=1), SIZE)


@pytest.mark.parametrize("method", sorted(STEPS))
def test_progress_follows_time_on_heldout_videos(method, demos_path, heldout, tmp_path):
    cls = method_class(method)
    cfg = cls.config_cls(image_size_px=SIZE, embed_dim=16, steps=STEPS[method], lr=1e-3,
                         **EXTRA.get(method, {}))
    model = train(cfg, TrainConfig(data=str(demos_path), out=str(tmp_path / method),
                                   progress_bar=False, device="cpu"))
    rhos = []
    for i in heldout.select(success=True):
        frames = heldout.episode(i)
        rhos.append(time_spearman(model.score(frames, frames[-1]).progress))
    assert np.mean(rhos) > 0.6, f"{method}: mean Spearman {np.mean(rhos):.2f}"
    assert (tmp_path / method / "model.pt").exists()
    assert (tmp_path / method / "metrics.csv").read_text().startswith("step,")
    assert any((tmp_path / method / "tb").iterdir())


def test_training_resumes_from_its_checkpoint(demos_path, tmp_path):
    cls = method_class("hold_r")
    out = tmp_path / "run"
    short = cls.config_cls(image_size_px=SIZE, embed_dim=8, steps=6)
    train(short, TrainConfig(data=str(demos_path), out=str(out), ckpt_every=3,
                             progress_bar=False, device="cpu"))
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] == 6
    longer = cls.config_cls(image_size_px=SIZE, embed_dim=8, steps=10)
    train(longer, TrainConfig(data=str(demos_path), out=str(out), log_every=1,
                              progress_bar=False, device="cpu"))
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == 10
    steps = [int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps[-4:] == [6, 7, 8, 9]  # continued, not restarted
    other = cls.config_cls(image_size_px=SIZE, embed_dim=16, steps=12)
    with pytest.raises(ValueError, match=r"different config \(embed_dim: 8 -> 16;"):
        train(other, TrainConfig(data=str(demos_path), out=str(out), progress_bar=False))


def test_evaluate_metrics_and_plots(demos_path, heldout, tmp_path):
    cfg = method_class("vip").config_cls(image_size_px=SIZE, embed_dim=16, steps=40)
    model = train(cfg, TrainConfig(data=str(demos_path), out=str(tmp_path / "vip"),
                                   progress_bar=False, device="cpu"))
    cf = dataset_from_store(synthetic_store(3, 0, size_px=SIZE, length=20, task="push"), SIZE)
    m = evaluate(model, heldout, cf, tmp_path / "eval")
    assert m["episodes"] == {"expert": 6, "success": 6, "failed": 6}
    assert 0.0 <= m["auroc"] <= 1.0 and -1.0 <= m["spearman"] <= 1.0
    assert m["counterfactual"]["goal_source"] == "other_task"
    assert m["counterfactual"]["spearman"] < m["spearman"]
    assert m["counterfactual"]["rise"] < m["counterfactual"]["rise_true_goal"]
    assert (tmp_path / "eval" / "curves.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["method"] == "vip"


def test_hold_r_refuses_another_tasks_goal_and_passes_the_counterfactual_by_it(
        demos_path, heldout, tmp_path, capsys):
    cfg = method_class("hold_r").config_cls(image_size_px=SIZE, embed_dim=16, steps=100)
    model = train(cfg, TrainConfig(data=str(demos_path), out=str(tmp_path / "hold_r"),
                                   progress_bar=False, device="cpu"))
    cf = dataset_from_store(synthetic_store(3, 0, size_px=SIZE, length=20, task="push"), SIZE)
    for i in range(len(cf)):  # the push floor's goals lie far from every reach demo goal
        assert not model.goal_check(goal_frame(cf, i)).ok
    m = evaluate(model, heldout, cf)
    assert m["counterfactual"]["goal_check_refused"] == 1.0
    assert m["counterfactual"]["passed"]
    assert m["one_goal_check_ratio"] < GOAL_CHECK_RATIO  # this task's photos pass
    # offline scoring scores what it is asked to, and warns
    photo = tmp_path / "push_goal.png"
    cv2.imwrite(str(photo), goal_frame(cf, 0)[..., ::-1])
    assert v2r(["reward", "score", f"ckpt={tmp_path / 'hold_r'}", f"video={demos_path}",
                "episode=0", f"goal={photo}"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "does not look like the goal of any of the 16" in err


def test_cli_train_score_eval(demos_path, tmp_path, capsys):
    out = tmp_path / "run"
    rc = v2r(["reward", "train", "method=rank2reward", f"data={demos_path}", f"out={out}",
              f"method.image_size_px={SIZE}", "method.steps=5", "progress_bar=false"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "rank2reward" and summary["steps"] == 5
    assert v2r(["reward", "score", f"ckpt={out}", f"video={demos_path}", "episode=2",
                "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert len(scored["reward"]) == len(scored["progress"]) == 20
    assert v2r(["reward", "eval", f"ckpt={out}", f"data={demos_path}", "max_episodes=3",
                f"out={tmp_path / 'ev'}"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"]["expert"] == 3

    assert v2r(["reward", "train", "method=gail", "data=x", "out=y"]) == 2
    assert "unknown method 'gail'" in capsys.readouterr().err
    assert v2r(["reward", "score", f"ckpt={tmp_path / 'none'}", "video=x.mp4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert v2r(["reward", "score", f"ckpt={out}", f"video={bad}"]) == 2
    assert "bad.mp4" in capsys.readouterr().err
    assert v2r(["reward", "train", "method=vip", f"data={demos_path}"]) == 2
    assert "out" in capsys.readouterr().err
    assert v2r(["reward", "train", "method=vip", f"data={demos_path}", f"out={tmp_path}/x",
                "method.gamma=2"]) == 2
    assert "gamma" in capsys.readouterr().err


def test_loaded_model_scores_like_trained(demos_path, heldout, tmp_path):
    cfg = method_class("hold_c").config_cls(image_size_px=SIZE, embed_dim=8, steps=3,
                                            clip_frames=10)
    model = train(cfg, TrainConfig(data=str(demos_path), out=str(tmp_path / "hc"),
                                   progress_bar=False, device="cpu"))
    again = load_reward_model(tmp_path / "hc", torch.device("cpu"))
    frames = heldout.episode(0)
    np.testing.assert_allclose(again.score(frames).reward, model.score(frames).reward,
                               rtol=1e-5, atol=1e-7)
    # training calibrates the success call on its demos and the checkpoint carries it
    assert model.success_progress is not None and np.isfinite(model.success_progress)
    assert again.success_progress == model.success_progress


def test_hold_r_pairs_some_frames_with_another_demos_goal_as_far(heldout):
    cls = method_class("hold_r")
    model = cls(cls.config_cls(image_size_px=SIZE, embed_dim=8, batch_size=400,
                               other_goal_fraction=0.25, other_goal_steps=2.0,
                               demo_goal_fraction=0.0))
    batch = model.sample_batch(heldout, np.random.default_rng(0))
    target = batch["target_steps"].numpy()
    far = 2.0 * heldout.lengths.max()
    other = target == far
    assert 0.15 < other.mean() < 0.35  # about the requested fraction
    same = target[~other]
    assert same.min() >= 0 and same.max() <= heldout.lengths.max() - 1  # k - t within one demo
    # with the paper's setting every goal is a later frame of the same demo
    paper = cls(cls.config_cls(image_size_px=SIZE, embed_dim=8, batch_size=400,
                               other_goal_fraction=0.0))
    assert (paper.sample_batch(heldout, np.random.default_rng(0))["target_steps"] < far).all()


def _frame_indexed(heldout, first: int):
    """heldout's videos with each frame's index written into pixel (0, 0) (read back from a
    batch), and a dataset of them labelled as first succeeding at frame ``first``."""
    from video2reward.rewards.data import VideoDataset

    videos = [heldout.episode(i).copy() for i in range(len(heldout))]
    for v in videos:
        v[:, 0, 0, 0] = np.arange(len(v))
    infos = [dataclasses.replace(info, first_success=first) for info in heldout.infos]
    return videos, VideoDataset(videos, infos, heldout.size_px)


def _hold_r_batch(data, **fractions):
    """A HOLD-R model with these pair fractions, one 4000-pair batch of ``data`` (no
    augmentation, so pixel values read back), and its targets."""
    cls = method_class("hold_r")
    model = cls(cls.config_cls(image_size_px=SIZE, embed_dim=8, batch_size=4000, augment="none",
                               **fractions))
    batch = model.sample_batch(data, np.random.default_rng(0))
    return model, batch, batch["target_steps"].numpy()


def test_hold_r_pairs_frames_after_success_with_the_success_frame_at_zero(heldout):
    """At-goal pairs: a frame from the first success on, against that frame, target 0 steps;
    regression pairs and wrong goals stop KEEP_AFTER_SUCCESS frames after it."""
    from video2reward.rewards.data import KEEP_AFTER_SUCCESS, VideoDataset

    first, cut = 8, 8 + KEEP_AFTER_SUCCESS + 1  # every 20-frame episode first succeeds at 8
    videos, labelled = _frame_indexed(heldout, first)
    assert (labelled.cut_lengths(KEEP_AFTER_SUCCESS) == cut).all()
    # no labels: whole episodes
    assert (heldout.cut_lengths(KEEP_AFTER_SUCCESS) == heldout.lengths).all()

    model, batch, target = _hold_r_batch(labelled, other_goal_fraction=0.25,
                                         at_goal_fraction=0.25, demo_goal_fraction=0.0)
    s_idx, g_idx = batch["frames"][:, :, 0, 0, 0].round().long().numpy().T
    wrong = target == 2.0 * cut
    at_goal = ~wrong & ((s_idx > g_idx) | ((target == 0) & (g_idx == first)))
    assert 0.2 < wrong.mean() < 0.3 and 0.2 < ((s_idx > g_idx) & ~wrong).mean() < 0.3
    assert (g_idx[wrong] < cut).all()  # wrong goals also come from the cut demos
    assert (target[at_goal] == 0).all() and (g_idx[at_goal] == first).all()
    assert s_idx[at_goal].max() == 19  # ... up to the end of the recording
    regress = ~wrong & ~at_goal
    assert (g_idx[regress] < cut).all()
    np.testing.assert_array_equal(target[regress], g_idx[regress] - s_idx[regress])

    # without per-step success labels there is no goal set: no at-goal pairs, whole episodes
    unlabelled = VideoDataset(videos, heldout.infos, heldout.size_px)
    plain = model.sample_batch(unlabelled, np.random.default_rng(0))
    target = plain["target_steps"].numpy()
    s_idx, g_idx = plain["frames"][:, :, 0, 0, 0].round().long().numpy().T
    regress = target != 2.0 * heldout.lengths.max()
    assert 0.7 < regress.mean() < 0.8 and g_idx[regress].max() == 19
    np.testing.assert_array_equal(target[regress], g_idx[regress] - s_idx[regress])


def test_hold_r_pairs_frames_with_another_demos_goal_at_their_own_steps_to_go(heldout):
    """Demo-goal pairs: a frame of one demo against a frame of another demo's goal set, target
    the steps this demo still needs to its own goal; wrong goals then come from before the
    other demo's goal set only, so no frame is both "the goal" and "far"."""
    first = 8
    videos, labelled = _frame_indexed(heldout, first)
    for i, v in enumerate(videos):
        v[:, 0, 0, 1] = 10 * (i + 1)  # the episode, in a second channel
    from video2reward.rewards.data import VideoDataset

    labelled = VideoDataset(videos, labelled.infos, heldout.size_px)
    _, batch, target = _hold_r_batch(labelled, other_goal_fraction=0.2, at_goal_fraction=0.2,
                                     demo_goal_fraction=0.3)
    px = batch["frames"][:, :, :2, 0, 0].round().long().numpy()  # (B, 2 frames, 2 channels)
    s_idx, g_idx = px[:, 0, 0], px[:, 1, 0]
    s_ep, g_ep = px[:, 0, 1], px[:, 1, 1]
    far = target > heldout.lengths.max()
    cross = (s_ep != g_ep) & ~far
    assert 0.25 < cross.mean() < 0.35  # about the requested fraction
    assert (g_idx[cross] >= first).all()  # the other demo's goal set
    np.testing.assert_array_equal(target[cross], np.maximum(first - s_idx[cross], 0))
    assert (g_idx[far] < first).all() and (s_ep[far] != g_ep[far]).all()
    assert 0.15 < far.mean() < 0.25
    # 0 turns them off: every pair from another demo is a wrong goal again
    _, b2, t2 = _hold_r_batch(labelled, demo_goal_fraction=0.0)
    px2 = b2["frames"][:, :, 1, 0, 0].round().long().numpy()
    assert (t2[px2[:, 0] != px2[:, 1]] > heldout.lengths.max()).all()
    with pytest.raises(ValueError, match="demo_goal_fraction"):
        method_class("hold_r").config_cls(other_goal_fraction=0.3, at_goal_fraction=0.3,
                                          demo_goal_fraction=0.4)


def test_vip_takes_another_demos_goal_image_at_its_own_success_frame(heldout):
    """VIP's demo-goal samples: o_0 and o_t of one demo before its first success, o_t+1 at
    most that frame, the goal image a frame of another demo's goal set; 0 = the paper's
    sampler (the goal a later frame of the same video)."""
    from video2reward.rewards.data import VideoDataset

    first = 8
    videos, labelled = _frame_indexed(heldout, first)
    for i, v in enumerate(videos):
        v[:, 0, 0, 1] = 10 * (i + 1)  # the episode, in a second channel
    labelled = VideoDataset(videos, labelled.infos, heldout.size_px)
    cls = method_class("vip")

    def batch(fraction: float) -> np.ndarray:
        model = cls(cls.config_cls(image_size_px=SIZE, embed_dim=8, batch_size=4000,
                                   augment="none", demo_goal_fraction=fraction))  # fmt: skip
        b = model.sample_batch(labelled, np.random.default_rng(0))
        assert (b["reward"].numpy() == -1.0).all()
        return b["frames"][:, :, :2, 0, 0].round().long().numpy()  # (B, [o0 g ot ot1], 2)

    px = batch(0.4)
    idx, ep = px[..., 0], px[..., 1]
    cross = ep[:, 1] != ep[:, 0]
    assert 0.35 < cross.mean() < 0.45
    assert (ep[:, 2:] == ep[:, :1]).all()  # o_t, o_t+1 from the sample's own demo
    assert (idx[cross, 1] >= first).all()  # the other demo's goal set
    assert (idx[cross, 0] < first).all() and (idx[cross, 2] < first).all()
    assert (idx[cross, 3] <= first).all() and (idx[cross, 0] <= idx[cross, 2]).all()
    same = ~cross  # the paper's sampler: start < goal, start <= t < goal in one video
    assert (idx[same, 0] < idx[same, 1]).all() and (idx[same, 2] < idx[same, 1]).all()
    px0 = batch(0.0)
    assert (px0[:, :, 1] == px0[:, :1, 1]).all()  # never another demo
    with pytest.raises(ValueError, match="demo_goal_fraction"):
        cls.config_cls(demo_goal_fraction=1.5)


def test_tcn_at_goal_frames_sit_at_the_first_success_time(heldout):
    """TCN clips stride over the frames up to KEEP_AFTER_SUCCESS after the first success, and
    at-goal frames come from the first success to the end, all at the first success's time."""
    from video2reward.rewards.data import KEEP_AFTER_SUCCESS, VideoDataset

    first, cut = 8, 8 + KEEP_AFTER_SUCCESS + 1
    videos, labelled = _frame_indexed(heldout, first)

    cls = method_class("tcn")
    cfg = cls.config_cls(image_size_px=SIZE, embed_dim=8, batch_size=200, clip_frames=6,
                         pos_window=1, neg_window=2, augment="none", at_goal_frames=3)
    batch = cls(cfg).sample_batch(labelled, np.random.default_rng(0))
    idx = batch["frames"][:, :, 0, 0, 0].round().long().numpy()  # (clips, 6 + 3)
    t = batch["timesteps"].numpy().reshape(idx.shape)
    np.testing.assert_array_equal(t[:, :6], idx[:, :6])  # clip frames at their own time
    assert idx[:, :6].max() == cut - 1
    assert (t[:, 6:] == first).all()  # at-goal frames at the first success's time ...
    assert idx[:, 6:].min() == first and idx[:, 6:].max() == 19  # ... from it to the end
    assert np.ptp(batch["sequence_ids"].numpy().reshape(idx.shape), axis=1).max() == 0

    # without labels: whole episodes, the extra frames repeat the last one at its time
    plain = cls(cfg).sample_batch(VideoDataset(videos, heldout.infos, heldout.size_px),
                                  np.random.default_rng(0))
    idx = plain["frames"][:, :, 0, 0, 0].round().long().numpy()
    assert idx[:, :6].max() == 19 and (idx[:, 6:] == 19).all()
    assert (plain["timesteps"].numpy().reshape(idx.shape)[:, 6:] == 19).all()

    # labelled and unlabelled episodes in one batch, one of them first succeeding at its last
    # frame: each clip follows its own episode
    mixed_infos = [dataclasses.replace(info, first_success=f)
                   for info, f in zip(heldout.infos, [first, -1, 19] * len(videos), strict=False)]
    mixed = VideoDataset(videos, mixed_infos, heldout.size_px)
    rng = np.random.default_rng(1)
    batch = cls(cfg).sample_batch(mixed, rng)
    ep = np.random.default_rng(1).integers(0, len(mixed), size=cfg.batch_size)  # same draws
    idx = batch["frames"][:, :, 0, 0, 0].round().long().numpy()
    t = batch["timesteps"].numpy().reshape(idx.shape)
    f = mixed.first_success[ep]
    assert (t[f == first, 6:] == first).all() and (idx[f == first, 6:] >= first).all()
    assert (idx[f == -1, 6:] == 19).all() and (t[f == -1, 6:] == 19).all()
    assert (idx[f == 19, 6:] == 19).all() and (t[f == 19, 6:] == 19).all()
    assert {first, -1, 19} <= set(f.tolist())

    # at_goal_frames=0 on whole recordings samples exactly what the clips of demos cut
    # KEEP_AFTER_SUCCESS frames after success gave before at-goal frames existed
    from video2reward.rewards.tcn import sample_clips

    none = cls(dataclasses.replace(cfg, at_goal_frames=0))
    new = none.sample_batch(labelled, np.random.default_rng(2))
    old_x, old_t, _ = sample_clips(labelled.trimmed(KEEP_AFTER_SUCCESS), np.random.default_rng(2),
                                   cfg.batch_size, cfg.clip_frames, none.device)
    assert torch.equal(new["frames"], old_x)
    np.testing.assert_array_equal(new["timesteps"].numpy(), old_t.reshape(-1))


def test_goal_conditioned_rank2reward_reads_the_goal(demos_path, heldout, tmp_path):
    """Trained with other demos' goals as 'no progress', a wrong goal gives no rising progress."""
    cls = method_class("rank2reward")
    cfg = cls.config_cls(image_size_px=SIZE, embed_dim=16, steps=300, goal_conditioned=True)
    model = train(cfg, TrainConfig(data=str(demos_path), out=str(tmp_path / "gc"),
                                   progress_bar=False, device="cpu"))
    batch = model.sample_batch(heldout, np.random.default_rng(0))
    assert batch["frames"].shape[1] == 3 and 0 < batch["wrong_goal"].float().mean() < 0.5
    cf = dataset_from_store(synthetic_store(3, 0, size_px=SIZE, length=20, task="push"), SIZE)
    m = evaluate(model, heldout, cf)
    assert m["spearman"] > 0.6
    assert m["counterfactual"]["passed"], m["counterfactual"]
