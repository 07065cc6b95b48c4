"""TimeRewarder: the two-hot target and its inverse, the gap sampler, progress that rises along
a held-out demonstration and a negative reward for the same video played backwards, checkpoint
round trip, bad input.

    pytest tests/unit/test_timerewarder.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from video2reward.rewards.base import RewardError, load_reward_model, read_checkpoint
from video2reward.rewards.data import EpisodeInfo, VideoDataset, dataset_from_store
from video2reward.rewards.synthetic import blob_episode, synthetic_store
from video2reward.rewards.timerewarder import (
    TimeRewarder,
    TimeRewarderConfig,
    expected_value,
    sample_gaps,
    two_hot,
)
from video2reward.rewards.train import fit

torch.set_num_threads(1)
S = 40
SMALL = TimeRewarderConfig(image_size_px=S, embed_dim=16, hidden_dim=64, batch_size=32,
                           steps=300, lr=1e-3)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = dataset_from_store(synthetic_store(12, 0, size_px=S, length=16, seed=0), S).demos()
    model = TimeRewarder(SMALL)
    errs = fit(model, data, SMALL.steps, metric="abs_err")
    return model.eval(), errs


def test_two_hot_puts_its_expectation_on_the_value():
    bins = 20
    d = torch.tensor([-1.0, -0.37, 0.0, 0.02, 0.5, 1.0, 1.7])
    t = two_hot(d, bins)
    assert t.shape == (7, bins)
    np.testing.assert_allclose(t.sum(1).numpy(), 1.0, atol=1e-6)
    assert int((t > 0).sum(1).max()) <= 2  # at most two neighbouring bins
    values = torch.linspace(-1, 1, bins)
    np.testing.assert_allclose((t @ values).numpy(), d.clamp(-1, 1).numpy(), atol=1e-6)
    # the inverse: logits that are log of the two-hot rows give back the values
    back = expected_value(torch.log(t.clamp_min(1e-12)))
    np.testing.assert_allclose(back.numpy(), d.clamp(-1, 1).numpy(), atol=1e-5)


def test_gaps_fit_the_video_and_favour_short_intervals():
    rng = np.random.default_rng(0)
    n = np.full(20000, 51)
    g = sample_gaps(rng, n, 0.25)
    assert g.min() >= 0 and g.max() <= 50
    assert (g <= 12).mean() > 0.55 and (g > 37).mean() < 0.1  # short gaps dominate
    assert (g > 37).mean() > 0.0  # yet the whole video is reachable
    assert sample_gaps(rng, np.array([2, 2]), 0.25).max() <= 1


def test_progress_rises_along_a_held_out_demo_and_backwards_is_penalised(trained):
    model, errs = trained
    assert np.mean(errs[-30:]) < 0.5 * np.mean(errs[:30])
    rng = np.random.default_rng(11)
    rhos = []
    for _ in range(6):
        frames, _ = blob_episode(rng, "expert", size_px=S, length=16)
        fwd = model.score(frames)
        back = model.score(frames[::-1].copy())
        rhos.append(spearmanr(np.arange(16), fwd.progress).statistic)
        assert rhos[-1] > 0.8, fwd.progress
        assert fwd.progress[-1] > fwd.progress[0] + 0.5
        assert fwd.reward[0] == 0.0 and fwd.reward[1:].mean() > 0.0
        assert back.reward[1:].mean() < 0.0  # going backwards reads as regress
        assert back.progress[-1] < back.progress[0]
    assert np.median(rhos) > 0.95, rhos
    # one step's reward is about one step of normalised time
    assert 0.0 < float(np.median(fwd.reward[1:])) < 0.3
    demo = dataset_from_store(synthetic_store(12, 0, size_px=S, length=16, seed=0), S).demos()
    ends = [model.score(demo.episode(i)).progress[-1] for i in range(len(demo))]
    assert float(np.median(ends)) == pytest.approx(1.0, abs=1e-3)  # calibrated at the median


def test_at_goal_and_cross_demo_pairs_have_their_targets():
    """Frame t of each toy video is filled with the value 10 t + 120 e (episode e), so the
    sampled pair's indices can be read back from the (shifted) frames."""
    n, first = 12, 5
    videos = [np.full((n, S, S, 3), 0, np.uint8) + (10 * np.arange(n) + 120 * e)
              .astype(np.uint8)[:, None, None, None] for e in range(2)]  # fmt: skip
    infos = [EpisodeInfo(f"ep{e}", True, "t", "expert", first_success=first) for e in range(2)]
    data = VideoDataset(videos, infos, S)
    cut = int(data.cut_lengths(2)[0])  # the time pairs stop 2 frames after the first success
    for kind, cfg in (("at_goal", {"at_goal_fraction": 0.99, "cross_episode_fraction": 0.0}),
                      ("cross", {"at_goal_fraction": 0.0, "cross_episode_fraction": 0.99}),
                      ("same", {"at_goal_fraction": 0.0, "cross_episode_fraction": 0.0})):
        model = TimeRewarder(TimeRewarderConfig(image_size_px=S, batch_size=256, **cfg))
        b = model.sample_batch(data, np.random.default_rng(0))
        val = b["frames"][:, :, 0, S // 2, S // 2].numpy().round().astype(int)  # (B, 2)
        ep, t = val // 120, (val % 120) // 10
        target = b["target"].numpy()
        if kind == "at_goal":
            rows = np.flatnonzero(target == 0.0)
            assert len(rows) > 200  # ~99% of rows (others: same-video time pairs)
            assert (ep[rows, 0] == ep[rows, 1]).all()
            assert ((t[rows] == first).any(1) & (t[rows] >= first).all(1)).all()
            assert (t[rows, 0] > first).any() and (t[rows, 1] > first).any()  # both orders
        elif kind == "cross":
            rows = np.flatnonzero(ep[:, 0] != ep[:, 1])
            assert len(rows) > 200
            want = t[rows, 1] / (cut - 1) - t[rows, 0] / (cut - 1)
            np.testing.assert_allclose(target[rows], want, atol=1e-6)
        else:
            assert (ep[:, 0] == ep[:, 1]).all() and (t < cut).all()
            np.testing.assert_allclose(target, (t[:, 1] - t[:, 0]) / (cut - 1), atol=1e-6)
            assert (target > 0).any() and (target < 0).any()  # both orders


def test_checkpoint_round_trip(trained, tmp_path):
    model, _ = trained
    model.success_progress = 0.95
    path = model.save(tmp_path / "tr")
    ckpt = read_checkpoint(path)  # weights_only: the start bank is a plain tensor
    assert ckpt["method"] == "timerewarder" and ckpt["config"]["bins"] == 20
    assert tuple(ckpt["state_dict"]["start_embeddings"].shape) == (12, 16)
    again = load_reward_model(tmp_path / "tr", torch.device("cpu"))
    frames, _ = blob_episode(np.random.default_rng(3), "expert", size_px=S, length=16)
    a, b = model.score(frames), again.score(frames)
    np.testing.assert_allclose(a.reward, b.reward, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.progress, b.progress, rtol=1e-5, atol=1e-6)
    assert again.success_progress == 0.95 and not again.uses_goal


def test_bad_input():
    model = TimeRewarder(SMALL)
    one_frame = VideoDataset([np.zeros((1, S, S, 3), np.uint8)],
                             [EpisodeInfo("still", True, "t", "expert")], S)
    with pytest.raises(RewardError, match="at least 2 frames"):
        model.sample_batch(one_frame, np.random.default_rng(0))
    with pytest.raises(RewardError, match="uint8"):
        model.score(np.zeros((4, S, S, 3), np.float32))
    with pytest.raises(ValueError, match="bins"):
        TimeRewarderConfig(bins=2)
    with pytest.raises(ValueError, match="gap_scale"):
        TimeRewarderConfig(gap_scale=float("nan"))
    with pytest.raises(ValueError, match="at_goal_fraction"):
        TimeRewarderConfig(at_goal_fraction=1.0)
