"""Diffusion Reward: the conditional entropy is higher (less negative) on expert-like histories
than on random ones, the sampler's bound is exact on a known model, RND learns the frames it
is shown, checkpoints round-trip, bad input is refused.

    pytest tests/unit/test_diffusion_reward.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from video2reward.rewards.base import RewardError, load_reward_model
from video2reward.rewards.data import EpisodeInfo, VideoDataset
from video2reward.rewards.diffusion_reward import (
    DiffusionReward,
    DiffusionRewardConfig,
    keep_schedule,
)
from video2reward.rewards.synthetic import bar_dataset, bar_video
from video2reward.rewards.train import fit

S = 32

torch.set_num_threads(1)


# A short schedule (10 steps, no skip) learns the toy set's dynamics in a few hundred steps;
# the defaults are the official 100 steps with skip 9.
SMALL = DiffusionRewardConfig(image_size_px=S, code_grid=8, codebook_size=32, code_dim=16,
                              tokenizer_channels=16, n_layer=2, n_head=2, n_embd=32, cond_dim=32,
                              batch_size=16, steps=600, tokenizer_steps=100, lr=2e-3,
                              expl_weight=0.0, diffusion_steps=10, skip_step=0, holdout_every=0)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = bar_dataset(16, seed=0)
    model = DiffusionReward(SMALL)
    fit(model, data, SMALL.steps)
    return model.eval(), data


def test_entropy_reward_is_higher_on_expert_histories_than_random_ones(trained):
    model, data = trained
    codes = model._dataset_codes(data)
    rows = torch.from_numpy(data.starts[:, None] + np.array([[3, 4]]))
    expert = codes[rows]  # (16, 2, 8, 8): two consecutive demo frames
    gen = torch.Generator().manual_seed(0)
    random = torch.randint(0, SMALL.codebook_size, expert.shape, generator=gen)
    ne_expert = model.neg_entropy(expert, torch.Generator().manual_seed(1))
    ne_random = model.neg_entropy(random, torch.Generator().manual_seed(1))
    assert float(ne_expert.mean()) > float(ne_random.mean()) + 2.0, (ne_expert, ne_random)
    # the reward of a demo video, standardised on the demos, sits near 0 on average
    z = np.concatenate([model.score(data.episode(i)).reward for i in model.split(len(data))[1]])
    assert abs(z.mean() / SMALL.entropy_weight) < 0.1  # holdout_every=0: all demos fit them


def test_the_bound_of_a_known_model_is_its_log_likelihood():
    """A network that always predicts the same distribution p: a sample's bound is
    sum over tokens of log p(token) (the jumps' weights add up to 1 per token)."""
    model = DiffusionReward(SMALL)
    logits = torch.log_softmax(torch.randn(SMALL.codebook_size), -1)

    class Fixed(torch.nn.Module):
        def forward(self, tokens, t, history):
            return logits.expand(tokens.shape[0], tokens.shape[1], -1)

    model.diffusion = Fixed()
    hist = torch.zeros(64, SMALL.history, 8, 8, dtype=torch.long)
    est = model.neg_entropy(hist, torch.Generator().manual_seed(0))
    # A token's jump weights, summed over the jumps it is masked at, are 1 in expectation
    # (they telescope: P(masked at jump k) * a_k sums to 1) and independent of its sampled
    # value, so the bound averages 64 * E_p[log p] = -64 * H(p).
    expected = 64 * float((logits.exp() * logits).sum())
    assert est.shape == (64,)
    assert float(est.mean()) == pytest.approx(expected, rel=0.1)
    sched = keep_schedule(100)
    assert sched[0] == pytest.approx(0.99999) and sched[99] == pytest.approx(0.000009)
    assert sched[-1] == 1.0


def test_rnd_learns_the_frames_it_is_shown():
    torch.manual_seed(0)
    model = DiffusionReward(DiffusionRewardConfig(expl_weight=0.95, rnd_lr=1e-3))
    frames = np.stack([np.kron(bar_video(np.random.default_rng(i), n=1)[0],
                               np.ones((2, 2, 1), np.uint8)) for i in range(8)])  # 64 px
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        before = float(model.rnd.error(x).mean())
        for _ in range(30):
            metrics = model.update(frames)
        after = float(model.rnd.error(x).mean())
    assert after < 0.5 * before and "rnd_loss" in metrics


def test_checkpoint_round_trip(trained, tmp_path):
    model, data = trained
    path = model.save(tmp_path / "dr")
    again = load_reward_model(path.parent, torch.device("cpu"))
    video = data.episode(0)
    a, b = model.score(video), again.score(video)
    np.testing.assert_allclose(a.reward, b.reward, rtol=1e-5, atol=1e-6)  # fixed sampler seed
    np.testing.assert_allclose(a.progress, b.progress, rtol=1e-5, atol=1e-5)


def test_bad_input():
    model = DiffusionReward(SMALL)
    short = VideoDataset([bar_video(np.random.default_rng(0), n=2)],
                         [EpisodeInfo("short.mp4", True, "bar", "expert")], S)
    with pytest.raises(RewardError, match=r"at least 3 frames; short\.mp4 has 2"):
        model.sample_batch(short, np.random.default_rng(0))
    with pytest.raises(ValueError, match="RND term reads 64x64"):
        DiffusionReward(DiffusionRewardConfig(image_size_px=32, code_grid=4))
    with pytest.raises(ValueError, match="skip_step"):
        DiffusionRewardConfig(diffusion_steps=10, skip_step=9)
    with pytest.raises(ValueError, match="expl_weight"):
        DiffusionRewardConfig(expl_weight=-1.0)
