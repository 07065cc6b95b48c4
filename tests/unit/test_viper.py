"""The video tokenizer and VIPER: reconstruction falls, true videos are likelier than shuffled
and reversed ones, checkpoints round-trip, bad input is refused.

    pytest tests/unit/test_viper.py
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from video2reward.rewards.base import RewardError, load_reward_model, read_checkpoint, to_tensor
from video2reward.rewards.data import EpisodeInfo, VideoDataset
from video2reward.rewards.synthetic import bar_dataset, bar_video
from video2reward.rewards.tokenizer import TokenizerConfig, VQTokenizer
from video2reward.rewards.train import fit
from video2reward.rewards.viper import Viper, ViperConfig, window_indices

torch.set_num_threads(1)
S = 32


SMALL = ViperConfig(image_size_px=S, code_grid=8, codebook_size=32, code_dim=16,
                    tokenizer_channels=16, seq_len=3, frame_skip=1, n_layer=2, n_head=2,
                    n_embd=32, batch_size=16, steps=350, tokenizer_steps=100, lr=2e-3)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = bar_dataset(16, seed=0)
    model = Viper(SMALL)
    losses = fit(model, data, SMALL.steps)
    return model.eval(), losses


def test_tokenizer_reconstruction_error_falls():
    torch.manual_seed(0)
    tok = VQTokenizer(TokenizerConfig(image_size=S, code_grid=8, codebook_size=32, code_dim=16,
                                      channels=16))
    rng = np.random.default_rng(1)
    frames = to_tensor(np.concatenate([bar_video(rng) for _ in range(8)]), torch.device("cpu"))
    opt = torch.optim.Adam(tok.parameters(), 2e-3)
    recon = []
    for _ in range(60):
        loss, m = tok.loss(frames[rng.integers(0, len(frames), 16)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        recon.append(float(m["tok_recon"]))
    assert np.mean(recon[-5:]) < 0.5 * np.mean(recon[:5])
    codes = tok.encode(frames[:4])
    assert codes.shape == (4, 8, 8) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 32
    with torch.no_grad():
        back = tok.decode(codes)
    assert back.shape == (4, 3, S, S) and float(back.min()) >= 0 and float(back.max()) <= 255
    # a decoded frame is closer to its own frame than to a different one
    err = (back - frames[:4]).abs().mean((1, 2, 3))
    other = (back - frames[4:8]).abs().mean((1, 2, 3))
    assert bool((err < other).all())


def test_true_videos_are_likelier_than_shuffled_and_reversed(trained):
    model, losses = trained
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[SMALL.tokenizer_steps:][:20])
    rng = np.random.default_rng(5)
    test = [bar_video(rng) for _ in range(6)]
    for joint in (True, False):
        m = Viper(dataclasses.replace(SMALL, compute_joint=joint))
        m.load_state_dict(model.state_dict())
        m.eval()
        ll = {"true": [], "reversed": [], "shuffled": []}
        for v in test:
            for name, video in (("true", v), ("reversed", v[::-1]),
                                ("shuffled", v[rng.permutation(len(v))])):
                with torch.no_grad():
                    x = to_tensor(np.ascontiguousarray(video), m.device)
                    ll[name].append(float(m.raw(x).mean()))
        mean = {k: np.mean(v) for k, v in ll.items()}
        assert mean["true"] > mean["reversed"] + 10, (joint, mean)
        assert mean["true"] > mean["shuffled"] + 10, (joint, mean)


def test_standardised_reward_and_progress(trained):
    model, _ = trained
    demo = bar_dataset(16, seed=0)
    train, held = model.split(len(demo))
    assert list(held) == [4, 9, 14] and len(train) == 13  # every 5th fits the z-scores
    z = np.concatenate([model.score(demo.episode(i)).reward for i in held])
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)  # fitted there
    # progress is divided by the held-out demos' median total: their median ends at 1
    ends = [model.score(demo.episode(i)).progress[-1] for i in held]
    assert np.median(ends) == pytest.approx(1.0, abs=1e-4)
    # Fresh demo-like videos end near 1 as a set. One video alone is no test of that: this
    # small model's own demos end anywhere from about -1 to 1.5, and which value a given
    # video gets moves with the CPU's float rounding during training.
    fresh = [bar_video(np.random.default_rng(s)) for s in range(9, 15)]
    good = [model.score(v) for v in fresh]
    bad = [model.score(v[::-1].copy()) for v in fresh]
    assert np.median([o.progress[-1] for o in good]) == pytest.approx(1.0, abs=0.5)
    # the same videos played backwards: far less progress, every one, and unlikely frames
    assert max(b.progress[-1] for b in bad) < min(o.progress[-1] for o in good) - 3
    assert all(b.reward.mean() < -2 for b in bad)


def test_checkpoint_round_trip(trained, tmp_path):
    model, _ = trained
    model.success_progress = 0.9
    path = model.save(tmp_path / "viper")
    ckpt = read_checkpoint(path)  # weights_only: plain tensors (the VQ codebook included)
    assert ckpt["method"] == "viper" and ckpt["config"]["seq_len"] == 3
    again = load_reward_model(tmp_path / "viper", torch.device("cpu"))
    video = bar_video(np.random.default_rng(3))
    a, b = model.score(video), again.score(video)
    np.testing.assert_allclose(a.reward, b.reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.progress, b.progress, rtol=1e-5, atol=1e-5)
    assert again.success_progress == 0.9 and int(again.trained_steps) == SMALL.steps


def test_window_indices_stride_and_clamp_at_the_first_frame():
    np.testing.assert_array_equal(window_indices(np.array([0, 3, 7]), 3, 2),
                                  [[0, 0, 0], [0, 1, 3], [3, 5, 7]])


def test_bad_input():
    model = Viper(SMALL)
    with pytest.raises(RewardError, match="viper needs videos of at least 3 frames; bar0 has 2"):
        model.sample_batch(VideoDataset([bar_video(np.random.default_rng(0), n=2)],
                                        [EpisodeInfo("bar0", True, "bar", "expert")], S),
                           np.random.default_rng(0))
    with pytest.raises(RewardError, match="no episodes"):
        VideoDataset([], [], S)
    with pytest.raises(ValueError, match=r"takes \(N, 3, 32, 32\) frames"):
        model.tokenizer.encode(torch.zeros(2, 3, 40, 40))
    with pytest.raises(ValueError, match="power of two"):
        ViperConfig(image_size_px=40)  # 40 / 8 = 5
    with pytest.raises(ValueError, match="tokenizer_steps"):
        ViperConfig(steps=100, tokenizer_steps=100)
    with pytest.raises(ValueError, match="perceptual_path"):
        TokenizerConfig(perceptual_weight=0.1)
    with pytest.raises(RewardError, match="empty"):
        model.score(np.zeros((0, S, S, 3), np.uint8))
    # a one-frame video scores (its window repeats the frame)
    assert model.score(np.zeros((1, S, S, 3), np.uint8)).reward.shape == (1,)


def test_perceptual_loss_reads_local_vgg16_weights_and_stays_out_of_checkpoints(tmp_path):
    # torchvision's VGG16 layout (features.N.weight/bias), random weights: nothing is fetched
    cfgs = [(3, 64), (64, 64), None, (64, 128), (128, 128), None, (128, 256), (256, 256),
            (256, 256)]
    state, i = {}, 0
    for c in cfgs:
        if c is not None:
            state[f"features.{i}.weight"] = torch.randn(c[1], c[0], 3, 3) * 0.05
            state[f"features.{i}.bias"] = torch.zeros(c[1])
            i += 2  # conv, relu
        else:
            i += 1  # max-pool
    state["classifier.0.weight"] = torch.zeros(1)  # the rest of the file is ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    tok = VQTokenizer(TokenizerConfig(image_size=S, code_grid=8, codebook_size=16, code_dim=8,
                                      channels=8, perceptual_path=str(path),
                                      perceptual_weight=0.1))
    frames = to_tensor(bar_video(np.random.default_rng(0), n=4), torch.device("cpu"))
    loss, m = tok.loss(frames)
    assert float(m["tok_perceptual"]) > 0 and torch.isfinite(loss)
    assert not any(k.startswith("_vgg") or "features" in k for k in tok.state_dict())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not torchvision VGG16 weights"):
        VQTokenizer(TokenizerConfig(image_size=S, code_grid=8, perceptual_weight=0.1,
                                    perceptual_path=str(tmp_path / "other.pth")))


def test_the_reward_stream_refuses_viper_with_the_reason():
    from video2reward.rewards.stream import RewardStream, RewardStreamConfig

    with pytest.raises(RewardError, match="windows of 3 frames"):
        RewardStream(RewardStreamConfig(ckpt="unused", device="cpu"), model=Viper(SMALL))


def test_frame_stride_keeps_windows_in_training_video_frames(trained):
    model, _ = trained
    video = np.concatenate([bar_video(np.random.default_rng(4), n=12)] * 1)
    m = Viper(dataclasses.replace(SMALL, frame_skip=2))
    m.load_state_dict(model.state_dict())
    full = m.score(video).reward[::2]  # every 2nd frame, windows 2 frames apart
    m.set_frame_stride(2)  # now given every 2nd frame only: windows 1 scored frame apart
    assert m.config.frame_skip == 1
    np.testing.assert_allclose(m.score(video[::2].copy()).reward, full, rtol=1e-4, atol=1e-4)
    with pytest.raises(RewardError, match="divisible by 3"):
        Viper(dataclasses.replace(SMALL, frame_skip=2)).set_frame_stride(3)
