"""Reward models: losses against hand-computed values, interface, checkpoints, data, bad input."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from video2reward.rewards import base
from video2reward.rewards.base import (
    CheckpointError,
    RewardError,
    build_model,
    load_reward_model,
    method_class,
    read_checkpoint,
)
from video2reward.rewards.data import (
    VideoDataset,
    augment,
    dataset_from_store,
    load_episodes,
    random_resized_crop_traj,
    read_video,
)
from video2reward.rewards.encoders import ResNet, load_torchvision_weights
from video2reward.rewards.evaluate import auroc, goal_frame, time_spearman
from video2reward.rewards.hold import HoldCConfig, HoldRConfig, hold_reward
from video2reward.rewards.rank2reward import (
    Rank2Reward,
    Rank2RewardConfig,
    bradley_terry_loss,
    per_frame_rank_loss,
    reward_from_probs,
)
from video2reward.rewards.synthetic import blob_episode, synthetic_store
from video2reward.rewards.tcn import tc_loss
from video2reward.rewards.uvd import decompose, kernel_smooth
from video2reward.rewards.vip import VIPConfig, vip_loss

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- losses
def test_vip_loss_matches_hand_computation():
    e0 = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    eg = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    es0 = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # V = 0 and -5
    es1 = torch.tensor([[3.0, 4.0], [3.0, 0.0]])  # V = 0 and -4
    r = torch.tensor([-1.0, -1.0])
    loss, m = vip_loss(e0, eg, es0, es1, r, gamma=0.98)
    # (1-g) * 5 + log(mean(exp(-(-1 + 0 - 0)), exp(-(-1 + 0.98*-4 + 5))))
    td = [1.0, -(-1 - 0.98 * 4 + 5)]
    expected = 0.02 * 5 + math.log((math.exp(td[0]) + math.exp(td[1])) / 2)
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert float(m["start_term"]) == pytest.approx(0.1, abs=1e-6)


def test_vip_loss_agrees_with_official_formula_and_is_stable():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(4, 16, 8, generator=g) * 3
    r = -torch.ones(16)

    def official(e0, eg, es0, es1, r, gamma):  # trainer.py, written out with its 1e-8
        def v(a, b):
            return -torch.linalg.norm(a - b, dim=-1)
        return (1 - gamma) * -v(e0, eg).mean() + torch.log(
            1e-8 + torch.mean(torch.exp(-(r + gamma * v(es1, eg) - v(es0, eg)))))

    ours, _ = vip_loss(e[0], e[1], e[2], e[3], r, 0.98)
    assert float(ours) == pytest.approx(float(official(e[0], e[1], e[2], e[3], r, 0.98)),
                                        rel=1e-5)
    big, _ = vip_loss(e[0] * 1e3, e[1] * 1e3, e[2] * 1e3, e[3] * 1e3, r, 0.98)
    assert math.isfinite(float(big))  # exp would overflow without logsumexp


def test_tc_loss_hand_case():
    """One anchor, one positive, two negatives: the semi-hard one (farther than the positive,
    closest of those) is used."""
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [3.0, 0.0]])  # t = 0, 1, 4, 6
    t, seq = torch.tensor([0, 1, 4, 6]), torch.zeros(4, dtype=torch.long)
    loss, n_pos = tc_loss(emb, t, seq, pos_radius=1, neg_radius=2, margin=2.0)
    # pairs (0,1) and (1,0): anchor 0 -> negatives {3: 2.25, 4: 9}, semi-hard 2.25 > 1:
    # 2 + 1 - 2.25 = 0.75; anchor 1 -> negatives {3: 3.25, 4: 4}: 2 + 1 - 3.25 < 0 -> 0
    assert int(n_pos) == 2 and float(loss) == pytest.approx(0.75 / 2)
    # a clip shorter than the negative window: no negatives, no pairs, a finite zero loss
    short, n_short = tc_loss(emb, torch.tensor([0, 1, 2, 3]), seq, 1, 5, 2.0)
    assert int(n_short) == 0 and float(short) == 0.0


def _tc_loss_loops(emb, t, seq, pos_r, neg_r, margin, cross_clip=True, goal=None):
    n = len(emb)
    goal = np.zeros(n, bool) if goal is None else goal
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    total, count = 0.0, 0
    for i in range(n):
        negs = [k for k in range(n) if ((cross_clip and seq[k] != seq[i])
                or (seq[k] == seq[i] and abs(t[k] - t[i]) > neg_r))
                and not (goal[i] and goal[k])]
        if not negs:
            continue
        for j in range(n):
            goal_pair = goal[i] and goal[j]
            if j == i or (not goal_pair and (seq[j] != seq[i] or abs(t[j] - t[i]) > pos_r)):
                continue
            count += 1
            semi = [d[i, k] for k in negs if d[i, k] > d[i, j]]
            neg = min(semi) if semi else max(d[i, k] for k in negs)
            total += max(0.0, margin + d[i, j] - neg)
    return total / count, count


def test_hold_c_tc_loss_matches_loop_reference():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 3))
    t = np.tile(np.arange(6), 2)
    seq = np.repeat([0, 1], 6)
    ref, count = _tc_loss_loops(emb, t, seq, 1, 2, 0.2)
    ours, n_pos = tc_loss(torch.tensor(emb), torch.tensor(t), torch.tensor(seq), 1, 2, 0.2)
    assert int(n_pos) == count
    assert float(ours) == pytest.approx(ref, rel=1e-6)
    # negatives from the anchor's own clip only (HOLD-C's default, the official one-clip batch)
    ref_own, _ = _tc_loss_loops(emb, t, seq, 1, 2, 0.2, cross_clip=False)
    own, _ = tc_loss(torch.tensor(emb), torch.tensor(t), torch.tensor(seq), 1, 2, 0.2,
                     cross_clip_negatives=False)
    assert float(own) == pytest.approx(ref_own, rel=1e-6)
    assert ref_own != pytest.approx(ref)
    # goal-set frames (TCN's at-goal frames): positives of each other across clips, and never
    # each other's negatives
    goal = np.isin(np.arange(12), [4, 5, 10, 11])
    ref_goal, count_goal = _tc_loss_loops(emb, t, seq, 1, 2, 0.2, goal=goal)
    ours_goal, n_goal = tc_loss(torch.tensor(emb), torch.tensor(t), torch.tensor(seq), 1, 2, 0.2,
                                goal=torch.tensor(goal))
    assert int(n_goal) == count_goal > count  # the cross-clip goal pairs join the positives
    assert float(ours_goal) == pytest.approx(ref_goal, rel=1e-6)


def test_rank_losses_hand_cases():
    zero = torch.zeros(1)
    yes = torch.tensor([True])
    assert float(per_frame_rank_loss(zero, zero, yes)) == pytest.approx(math.log(2))
    assert float(bradley_terry_loss(zero, zero, yes)) == pytest.approx(math.log(2))
    two = torch.tensor([2.0])
    assert float(bradley_terry_loss(two, zero, yes)) == pytest.approx(math.log1p(math.exp(-2)))
    assert float(per_frame_rank_loss(two, zero, yes)) == pytest.approx(
        0.5 * (math.log1p(math.exp(-2)) + math.log(2)))
    # A goal from another demo: neither frame is progress toward it (per-frame labels 0,
    # Bradley-Terry target 1/2); the flag acts per pair.
    wrong, right = torch.tensor([True]), torch.tensor([False])
    assert float(per_frame_rank_loss(two, zero, yes, wrong)) == pytest.approx(
        0.5 * (math.log1p(math.exp(2)) + math.log(2)))
    assert float(per_frame_rank_loss(two, zero, yes, right)) == pytest.approx(
        float(per_frame_rank_loss(two, zero, yes)))
    assert float(bradley_terry_loss(two, zero, yes, wrong)) == pytest.approx(
        0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))))
    # Bradley-Terry is blind to a shared shift; the per-frame form is not.
    assert float(bradley_terry_loss(two + 5, zero + 5, yes)) == pytest.approx(
        float(bradley_terry_loss(two, zero, yes)))
    assert float(per_frame_rank_loss(two + 5, zero + 5, yes)) != pytest.approx(
        float(per_frame_rank_loss(two, zero, yes)))


def test_rank2reward_reward_formula_and_clipping():
    p = torch.tensor([0.5, 0.0, 0.9], dtype=torch.float64)  # float64: 1 - 1e-6 is exact enough
    d = torch.tensor([0.5, 1.0, 0.8], dtype=torch.float64)
    r = reward_from_probs(p, d, alpha=2.0, eps=1e-6)
    assert float(r[0]) == pytest.approx(math.log(0.5))
    expected = math.log(1e-6) + 2 * (math.log(1 - 1e-6) - math.log(1e-6))
    assert float(r[1]) == pytest.approx(expected, rel=1e-6)
    assert float(r[2]) == pytest.approx(math.log(0.9) + 2 * math.log(0.8 / 0.2), rel=1e-5)


def test_hold_reward_formula():
    r = hold_reward(torch.tensor([0.0, 5.0]), horizon=10.0, bonus=0.0, threshold=1.0)
    assert r.tolist() == pytest.approx([0.0, -0.5])
    rb = hold_reward(torch.tensor([0.5, 5.0]), horizon=10.0, bonus=1.0, threshold=1.0)
    assert rb.tolist() == pytest.approx([1.0 - 0.05, -0.5])


def test_uvd_decompose_finds_the_phase_boundary():
    a, b, c = np.array([0.0, 0.0]), np.array([10.0, 0.0]), np.array([-2.0, 0.0])
    phase1 = a + np.linspace(0, 1, 30)[:, None] * (b - a)  # moves away from c
    phase2 = b + np.linspace(0, 1, 31)[1:, None] * (c - b)  # then towards it
    emb = np.concatenate([phase1, phase2])
    idx = decompose(emb, min_interval=10)
    assert idx[-1] == len(emb) - 1
    assert len(idx) == 2 and abs(idx[0] - 29) <= 2
    assert kernel_smooth(np.full(20, 3.0), 0.08) == pytest.approx(np.full(20, 3.0))
    assert decompose(phase2, min_interval=10) == [len(phase2) - 1]  # one phase, one milestone


def test_auroc_matches_pairwise_count():
    pos, neg = np.array([0.9, 0.4, 0.7]), np.array([0.1, 0.4, 0.8])
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert auroc(pos, neg) == pytest.approx(np.mean(pairs))
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def test_verdict_says_ready_only_when_every_check_passes_and_names_the_first_fix():
    from video2reward.rewards.evaluate import verdict

    good = {"method": "vip", "spearman": 0.97, "auroc": 0.95,
            "episodes": {"expert": 10, "success": 10, "failed": 10},
            "counterfactual": {"passed": True}}
    line = verdict(good, uses_goal=True)
    assert line.startswith("vip: ready for robot time:") and "ignores a wrong goal" in line
    assert "fix" not in line
    assert "needs no goal image" in verdict({**good, "method": "rank2reward"}, uses_goal=False)
    bad = verdict({**good, "auroc": 0.7, "counterfactual": {"passed": False}}, uses_goal=True)
    assert bad.startswith("vip: NOT ready:") and "does NOT separate" in bad
    assert "FOLLOWS a wrong goal" in bad and bad.endswith("raise the success threshold")
    refused = verdict({**good, "counterfactual": {"passed": True, "passed_by": "goal_check"}},
                      uses_goal=True)
    assert "ready for robot time" in refused and "refuses another task's goal image" in refused
    flat = verdict({**good, "spearman": None}, uses_goal=True)
    assert "Spearman n/a" in flat and "more demos or training steps" in flat
    one = verdict({**good, "spearman_one_goal": 0.95, "auroc_one_goal": 0.96}, uses_goal=True)
    assert "ready for robot time" in one and "holds with one goal photographed" in one
    lab = verdict({**good, "spearman_one_goal": -0.25, "auroc_one_goal": 0.45}, uses_goal=True)
    assert "NOT ready" in lab and "needs each episode's own goal image" in lab
    assert "Spearman -0.250, AUROC 0.450" in lab
    demo = verdict({**good, "spearman_one_goal": 0.70, "auroc_one_goal": 0.71,
                    "spearman_no_goal": 0.96, "auroc_no_goal": 1.0}, uses_goal=True)
    assert "ready for robot time" in demo and "fix" not in demo
    assert "holds with no goal image, against the demos' goals" in demo
    neither = verdict({**good, "spearman_one_goal": 0.7, "auroc_one_goal": 0.7,
                       "spearman_no_goal": 0.5, "auroc_no_goal": 0.6}, uses_goal=True)
    assert "NOT ready" in neither and "the demos' goals: 0.500, 0.600" in neither
    untested = verdict({**good, "episodes": {"failed": 0}}, uses_goal=True)
    assert "NOT ready" in untested and "record a few failed attempts" in untested


def test_counterfactual_check_passes_a_falling_or_flat_curve_and_fails_a_rising_one():
    from video2reward.rewards.evaluate import climb, counterfactual_verdict

    t = np.arange(30, dtype=float)
    assert climb(t / 29) == pytest.approx(1.0)  # a straight rise from 0 to 1
    assert climb(-t) == 0.0  # falling: no climb
    rise_then_dip = np.concatenate([t[:29] / 28, [0.0]])  # climbs, drops at the last frame
    assert climb(rise_then_dip) > 0.7 and rise_then_dip[-1] - rise_then_dip[0] == 0.0

    true = {"final_progress_true_goal": 1.0, "climb_true_goal": 1.0}
    # HOLD-R reach seed 0 with a push goal: flat at -2.2, climbing 0.04, Spearman 0.94
    assert counterfactual_verdict({**true, "final_progress": -2.2, "spearman": 0.94,
                                   "climb": 0.04}) == "flat"
    assert counterfactual_verdict({**true, "final_progress": 0.2, "spearman": -0.3,
                                   "climb": 0.0}) == "spearman"
    # the boundaries pass: Spearman 0.5, a climb of exactly a tenth
    assert counterfactual_verdict({**true, "final_progress": 0.2, "spearman": 0.5,
                                   "climb": 0.5}) == "spearman"
    assert counterfactual_verdict({**true, "final_progress": 0.2, "spearman": 0.9,
                                   "climb": 0.1}) == "flat"
    # VIP push seed 1 at batch 32 with a reach goal: still climbs, in order
    assert counterfactual_verdict({"final_progress_true_goal": 0.5, "climb_true_goal": 0.93,
                                   "final_progress": 0.4, "spearman": 0.58, "climb": 0.39}) is None
    # never higher than with the true goal, however it is shaped
    assert counterfactual_verdict({**true, "final_progress": 1.5, "spearman": -0.5,
                                   "climb": 0.0}) is None
    # a true goal that itself gives no climb cannot vouch for a flat curve
    assert counterfactual_verdict({"final_progress_true_goal": 1.0, "climb_true_goal": 0.0,
                                   "final_progress": 0.0, "spearman": 0.9, "climb": 0.0}) is None


# ----------------------------------------------------------------------------- encoders
def _torchvision_resnet_keys(depth: int) -> dict[str, tuple[int, ...]]:
    """torchvision.models.resnet{18,50}'s state-dict keys and shapes, written out by hand."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(name, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{k}"] = (c,)
        keys[f"{name}.num_batches_tracked"] = ()

    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    bottleneck = depth == 50
    counts = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    cin = 64
    for li, (w, n) in enumerate(zip((64, 128, 256, 512), counts, strict=True), start=1):
        for j in range(n):
            p = f"layer{li}.{j}"
            if bottleneck:
                keys[f"{p}.conv1.weight"] = (w, cin, 1, 1)
                keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
                keys[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
                bn(f"{p}.bn1", w)
                bn(f"{p}.bn2", w)
                bn(f"{p}.bn3", 4 * w)
                out = 4 * w
            else:
                keys[f"{p}.conv1.weight"] = (w, cin, 3, 3)
                keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
                bn(f"{p}.bn1", w)
                bn(f"{p}.bn2", w)
                out = w
            if j == 0 and (li > 1 or cin != out):
                keys[f"{p}.downsample.0.weight"] = (out, cin, 1, 1)
                bn(f"{p}.downsample.1", out)
            cin = out
    keys["fc.weight"] = (1000, cin)
    keys["fc.bias"] = (1000,)
    return keys


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_state_dict_keys_match_torchvision(depth):
    ours = {k: tuple(v.shape) for k, v in ResNet(depth).state_dict().items()}
    assert ours == _torchvision_resnet_keys(depth)


def test_official_vip_style_resnet50_checkpoint_loads(tmp_path):
    # The official VIP file: {"vip": {"module.convnet.<torchvision key>": tensor}}, fc 2048->1024.
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, shape in _torchvision_resnet_keys(50).items():
        if k.startswith("fc."):
            shape = (1024, 2048) if k == "fc.weight" else (1024,)
        sd[f"module.convnet.{k}"] = (torch.randn(shape, generator=g) if shape
                                     else torch.tensor(7))
    path = tmp_path / "vip_resnet50.pt"
    torch.save({"vip": sd}, path)
    model = ResNet(50, out_dim=1024)
    skipped = load_torchvision_weights(model, path)
    assert skipped == []
    loaded = model.state_dict()
    assert torch.equal(loaded["layer3.5.conv2.weight"], sd["module.convnet.layer3.5.conv2.weight"])
    assert torch.equal(loaded["fc.weight"], sd["module.convnet.fc.weight"])
    # An R3M-style file with a different head loads the backbone and skips fc.
    small = ResNet(50, out_dim=16)
    assert sorted(load_torchvision_weights(small, path)) == ["fc.bias", "fc.weight"]
    assert torch.equal(small.state_dict()["conv1.weight"], sd["module.convnet.conv1.weight"])


# ----------------------------------------------------------------------------- data
def test_load_video_folder_vip_layout_and_zarr(tmp_path):
    rng = np.random.default_rng(0)
    frames, _ = blob_episode(rng, size_px=48, length=12)
    vids = tmp_path / "videos"
    vids.mkdir()
    w = cv2.VideoWriter(str(vids / "demo0.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 48))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    d = load_episodes(vids, image_size_px=32)
    assert d.lengths.tolist() == [12] and d.frames.shape == (12, 32, 32, 3)

    vip = tmp_path / "vip" / "video0"
    vip.mkdir(parents=True)
    for t in range(12):  # 10.png must come after 9.png
        cv2.imwrite(str(vip / f"{t}.png"), cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR))
    d2 = load_episodes(tmp_path / "vip", image_size_px=48)
    assert np.array_equal(d2.episode(0), frames)

    synthetic_store(3, 2, size_px=40, length=10, path=str(tmp_path / "s.zarr"))
    d3 = load_episodes(tmp_path / "s.zarr", image_size_px=32)
    assert len(d3) == 5 and [i.success for i in d3.infos] == [True] * 3 + [False] * 2
    assert len(d3.demos()) == 3


def test_corrupt_and_empty_videos_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(RewardError, match=r"broken\.mp4"):
        read_video(bad)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(RewardError, match=r"empty\.avi"):
        read_video(empty)
    (tmp_path / "noframes").mkdir()
    (tmp_path / "noframes" / "video0").mkdir()
    with pytest.raises(RewardError, match="video0"):
        load_episodes(tmp_path / "noframes", 32)
    with pytest.raises(RewardError, match="does not exist"):
        load_episodes(tmp_path / "missing.zarr", 32)


def test_rctraj_crop_is_shared_by_the_frames_of_a_sample():
    rng = np.random.default_rng(0)
    img = torch.rand(3, 3, 32, 32) * 255
    x = img[:, None].expand(3, 4, 3, 32, 32).contiguous()  # 3 samples, 4 identical frames
    out = random_resized_crop_traj(x, rng, (0.3, 0.6))
    assert out.shape == x.shape
    for k in range(1, 4):
        assert torch.allclose(out[:, k], out[:, 0])
    assert not torch.allclose(out[:, 0], x[:, 0], atol=1.0)  # it did crop
    same = random_resized_crop_traj(x, rng, (1.0, 1.0), (1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-3)  # full-frame crop is the identity
    shifted = augment(x, "shift", rng)
    for k in range(1, 4):
        assert torch.equal(shifted[:, k], shifted[:, 0])


# ----------------------------------------------------------------------------- interface
@pytest.fixture(scope="module")
def small_data():
    return dataset_from_store(synthetic_store(6, 2, size_px=40, length=14, seed=3), 40)


# Methods whose sizes need more than image_size_px/embed_dim (VIPER's tokenizer: 32 px to 4x4)
SMALL_EXTRA = {"viper": {"image_size_px": 32, "code_grid": 4, "codebook_size": 16, "code_dim": 8,
                         "tokenizer_channels": 8, "n_layer": 1, "n_head": 2, "n_embd": 16,
                         "steps": 2, "tokenizer_steps": 1},
               "diffusion_reward": {"image_size_px": 32, "code_grid": 4, "codebook_size": 16,
                                    "code_dim": 8, "tokenizer_channels": 8, "n_layer": 1,
                                    "n_head": 2, "n_embd": 16, "cond_dim": 16, "steps": 2,
                                    "tokenizer_steps": 1, "expl_weight": 0.0}}


def _small_model(method="vip", **kw):
    cls = method_class(method)
    args = {"image_size_px": 40, "embed_dim": 8, "batch_size": 4, "steps": 1,
            **SMALL_EXTRA.get(method, {}), **kw}
    return build_model(cls.config_cls(**args), torch.device("cpu"))


def test_score_shapes_and_checkpoint_round_trip(tmp_path, small_data):
    for method in base.METHODS:
        model = _small_model(method)
        demos = small_data.demos()
        if model.config.image_size_px != demos.size_px:  # training data comes at model size
            demos = VideoDataset([demos.episode(i) for i in range(len(demos))], demos.infos,
                                 model.config.image_size_px)
        model.calibrate(demos)
        videos = [demos.episode(i) for i in range(len(demos))]
        thr = model.calibrate_success(videos)
        assert thr == model.success_progress
        if not len(getattr(model, "goal_set", [])):  # goal sets: the test below
            last = [float(model.score(v).progress[-1]) for v in videos]
            assert thr == pytest.approx(np.median(last))
        frames = small_data.episode(0)
        out = model.score(frames, frames[-1])
        assert out.reward.shape == (14,) and out.progress.shape == (14,)
        assert out.reward.dtype == np.float32 and np.isfinite(out.reward).all()
        path = model.save(tmp_path / method)
        ckpt = read_checkpoint(path)
        assert ckpt["method"] == method and ckpt["format_version"] == base.CHECKPOINT_VERSION
        assert ckpt["config"]["embed_dim"] == 8
        again = load_reward_model(tmp_path / method, torch.device("cpu"))
        out2 = again.score(frames, frames[-1])
        np.testing.assert_allclose(out2.reward, out.reward, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out2.progress, out.progress, rtol=1e-5, atol=1e-6)
        assert again.success_progress == thr  # one threshold for every consumer


@pytest.mark.parametrize("method", ["vip", "hold_c", "tcn", "hold_r", "uvd"])
def test_with_no_goal_image_a_goal_conditioned_model_scores_against_the_nearest_demo_goal(
        tmp_path, small_data, method):
    torch.manual_seed(0)  # an untrained HOLD-R can read 0 steps everywhere: not on this seed
    model = _small_model(method)
    demos = small_data.demos()
    model.calibrate(demos)
    # the demos' goals as the model keeps them (HOLD-R, TCN: demos trimmed after success)
    goals = [d.episode(i)[-1] for d in [demos.trimmed(2) if method in ("hold_r", "tcn")
                                         else demos] for i in range(len(d))]
    assert len(model.goal_set) == len(goals)
    frames = small_data.episode(len(small_data) - 1)  # a failed episode among them
    each = np.stack([model.score(frames, g).progress for g in goals])  # (K, T)
    nearest = model.score(frames).progress
    if method == "uvd" and int(model.n_subgoals) > 1:
        # only the last phase's goal is the set's; its earlier phases are the mean subgoals
        assert np.all(nearest >= each.min(0) - 1e-5)
    else:
        np.testing.assert_allclose(nearest, each.max(0), rtol=1e-3, atol=1e-3)  # batch numerics
        assert not np.allclose(each.max(0), each.min(0))  # the goals do differ
    # A checkpoint written before the goal set loads and scores against what it did then
    # (the demos' mean goal embedding; HOLD-R's medoid goal frame).
    path = model.save(tmp_path / method)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["goal_set"]
    torch.save(ckpt, path)
    old = load_reward_model(path, torch.device("cpu"))
    assert len(old.goal_set) == 0
    if method == "hold_r":
        medoid = old.default_goal[0].permute(1, 2, 0).numpy().astype(np.uint8)
        ref = old.score(frames, medoid).progress
    else:
        with torch.no_grad():
            d = torch.linalg.vector_norm(old.embed_frames(base.to_tensor(frames, old.device))
                                         - old.goal_embedding, dim=-1)
        ref = (1 - d / old.distance_ref).numpy()
    if method != "uvd":  # UVD's phases read the mean subgoals, as before
        np.testing.assert_allclose(old.score(frames).progress, ref, rtol=1e-3, atol=1e-3)
    resaved = load_reward_model(old.save(tmp_path / f"{method}_again"), torch.device("cpu"))
    assert len(resaved.goal_set) == 0  # an empty set round-trips


@pytest.mark.parametrize("method", ["vip", "hold_r"])
def test_the_success_call_of_a_goal_set_model_leaves_each_demos_own_goal_out(
        small_data, method):
    torch.manual_seed(0)
    model = _small_model(method)
    demos = small_data.demos()
    model.calibrate(demos)
    videos = [demos.episode(i) for i in range(len(demos))]
    if method == "vip":  # its own goal is in the set: every demo ends exactly at progress 1
        assert all(model.score(v).progress[-1] == pytest.approx(1.0) for v in videos)
    goals = [d.episode(i)[-1] for d in [demos.trimmed(2) if method == "hold_r" else demos]
             for i in range(len(d))]
    thr = model.calibrate_success(videos)
    # each demo's last frame against the nearest of the other demos' goals
    loo = [max(model.score(v, g).progress[-1] for j, g in enumerate(goals) if j != i)
           for i, v in enumerate(videos)]
    assert thr == pytest.approx(float(np.median(loo)), abs=1e-3)
    assert thr < 1.0 and len(model.goal_set) == len(goals)  # the set is whole again


def test_the_goal_check_passes_goals_like_the_demos_and_refuses_one_far_from_all(
        tmp_path, small_data):
    from video2reward.rewards.stream import RewardStream, RewardStreamConfig

    model = _small_model("vip")
    model.calibrate(small_data.demos())
    own = small_data.episode(0)[-1]  # a demo's own goal frame: at distance 0 from the set
    check = model.goal_check(own)
    assert check is not None and check.ok and check.demos == len(model.goal_set)
    assert check.ratio == pytest.approx(0.0, abs=1e-3)
    # A goal set laid out around another photo at a known spread: demo goals sqrt(2) * s apart
    # (each 1 s off the photo along its own axis), so the photo sits at 1 / sqrt(2) of the
    # spread and passes; the same set moved 10 s away puts it at ~7x the spread: refused.
    photo = np.ascontiguousarray(own[::-1])  # any image; flipped so it is not a demo frame
    with torch.no_grad():
        e = model.embed_frames(base.to_tensor(photo[None], model.device))[0]
    s = 0.5
    model.goal_set = e + s * torch.eye(8)[:6]
    assert model.goal_check(photo).ratio == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    model.goal_set = e + s * torch.eye(8)[:6] + 10 * s * torch.eye(8)[7]
    far = model.goal_check(photo)
    assert not far.ok and far.ratio > 5
    assert "does not look like the goal of any of the 6 demonstrations" in far.message("x")
    # the reward node refuses it before scoring a frame; offline scoring still scores it
    path = tmp_path / "goal.png"
    cv2.imwrite(str(path), photo[..., ::-1])
    with pytest.raises(base.RewardError, match="does not look like the goal"):
        RewardStream(RewardStreamConfig(ckpt="unused", goal_image=str(path)), model=model)
    assert np.isfinite(model.score(small_data.episode(0), photo).progress).all()
    # no goal set, no check: methods without a goal image, checkpoints from before the set
    assert _small_model("rank2reward").goal_check(photo) is None
    model.goal_set = model.goal_set[:0]
    assert model.goal_check(photo) is None


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "method": "vip", "config": {}, "state_dict": {},
                "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(path)
    assert not marker.exists()
    with open(tmp_path / "evil2.pt", "wb") as f:  # a plain pickle, not a torch zip
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(CheckpointError):
        load_reward_model(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_bad_input_errors(tmp_path, small_data):
    model = _small_model("vip")
    frames = small_data.episode(0)
    with pytest.raises(RewardError, match="3 colour channels"):
        model.score(np.zeros((5, 40, 40, 4), np.uint8))
    with pytest.raises(RewardError, match=r"shape \(T, H, W, 3\)"):
        model.score(np.zeros((5, 40, 40), np.uint8))
    with pytest.raises(RewardError, match="uint8"):
        model.score(frames.astype(np.float32))
    with pytest.raises(RewardError, match="empty"):
        model.score(np.zeros((0, 40, 40, 3), np.uint8))
    with pytest.raises(RewardError, match="goal is 20x20 but the frames are 40x40"):
        model.score(frames, np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_reward_model(tmp_path / "nothing")
    with pytest.raises(RewardError, match="unknown method 'gail'"):
        method_class("gail")
    with pytest.raises(ValueError, match="unknown method"):
        VIPConfig(method="gail")
    with pytest.raises(ValueError, match="gamma"):
        VIPConfig(gamma=1.5)
    with pytest.raises(ValueError, match="neg_radius"):
        HoldCConfig(pos_radius=3, neg_radius=2)
    with pytest.raises(ValueError, match="at_goal_fraction"):
        HoldRConfig(other_goal_fraction=0.5, at_goal_fraction=0.5)  # no regression pairs left
    with pytest.raises(ValueError, match="at_goal_fraction"):
        HoldRConfig(at_goal_fraction=-0.1)


def test_rank2reward_discriminator_update_separates_agent_frames(small_data):
    torch.manual_seed(0)
    model = Rank2Reward(Rank2RewardConfig(image_size_px=40, embed_dim=8, batch_size=4,
                                          disc_lr=1e-3))
    demos = small_data.demos()
    model.calibrate(demos)
    expert = demos.episode(0)
    agent = np.full((16, 40, 40, 3), 30, np.uint8)  # a dark scene the demos never show
    before = model.score(expert).reward.mean()
    assert model.score(agent).reward.mean() == pytest.approx(
        float(np.log(model.score(agent).progress.clip(1e-6)).mean()), rel=1e-4)  # D = 1/2
    for _ in range(25):
        m = model.update(agent)
    assert m["disc_accuracy"] > 0.9
    with torch.inference_mode():
        d_exp = model.disc_prob(base.to_tensor(expert, model.device)).mean()
        d_agent = model.disc_prob(base.to_tensor(agent, model.device)).mean()
    assert d_exp > 0.5 > d_agent
    assert model.score(expert).reward.mean() > before


def test_missing_pretrained_file_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="pretrained_path"):
        VIPConfig(encoder="resnet18", pretrained_path=str(tmp_path / "nope.pt"))


def test_checkpoint_written_atomically(tmp_path, small_data):
    model = _small_model("tcn")
    p = model.save(tmp_path / "run")
    assert p == tmp_path / "run" / base.CHECKPOINT_NAME and p.exists()
    assert not list(Path(tmp_path / "run").glob("*.tmp"))


def test_demos_are_trimmed_after_first_success_and_spearman_uses_task_frames():
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.rewards.evaluate import _task_frames

    store = EpisodeStore.in_memory(fps=10.0)
    rng = np.random.default_rng(0)
    for first in (4, -1):
        frames, _ = blob_episode(rng, size_px=32, length=12)
        success = np.zeros(12, bool)
        if first >= 0:
            success[first:] = True
        store.append_episode({"img": frames, "success": success}, task="reach",
                             success=first >= 0)
    data = dataset_from_store(store, 32)
    assert [i.first_success for i in data.infos] == [4, -1]
    cut = data.trimmed(2)
    assert cut.lengths.tolist() == [7, 12]
    assert np.array_equal(cut.episode(0), data.episode(0)[:7])
    assert data.trimmed(-1) is data
    assert [_task_frames(data, i) for i in range(2)] == [5, 12]
    assert np.array_equal(goal_frame(data, 0), data.episode(0)[4])  # the success frame
    assert np.array_equal(goal_frame(data, 1), data.episode(1)[-1])  # unlabelled: the last


class _CentroidDistanceModel:
    """Progress = minus the distance between the bright pixels' centroids of frame and goal:
    just what evaluate() asks of a goal-conditioned model."""

    method = "centroid_distance"
    uses_goal = True

    @staticmethod
    def _centroid(img):
        ys, xs = np.nonzero(img[..., 0] > 128)
        return np.array([xs.mean(), ys.mean()])

    def score(self, frames, goal=None):
        g = self._centroid(frames[-1] if goal is None else goal)
        d = np.array([np.linalg.norm(self._centroid(f) - g) for f in frames], np.float32)
        return base.ScoreResult(reward=-d, progress=-d, method=self.method)

    def goal_check(self, goal):  # no demos' goal set: nothing to check against
        return None


def test_evaluate_scores_against_the_success_frame_not_the_last_frame():
    """The twin's push expert lifts the tool after success: the goal is the success frame."""
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.rewards.evaluate import evaluate

    store = EpisodeStore.in_memory(fps=10.0)
    for y in (8, 20):
        # a disc slides right for 10 frames (success on the last), then back left (the
        # lifted tool) for 8 more
        xs = [*range(4, 24, 2), *range(20, 4, -2)]
        frames = np.zeros((len(xs), 32, 32, 3), np.uint8)
        for f, x in zip(frames, xs, strict=True):
            cv2.circle(f, (x, y), 3, (255, 255, 255), -1)
        success = np.zeros(len(xs), bool)
        success[9:] = True
        store.append_episode({"img": frames, "success": success}, task="reach", success=True)
    data = dataset_from_store(store, 32)
    m = evaluate(_CentroidDistanceModel(), data)  # type: ignore[arg-type]
    assert m["spearman"] == pytest.approx(1.0)  # rises up to the success frame
    last_goal = [time_spearman(_CentroidDistanceModel().score(data.episode(i), data.episode(i)[-1])
                               .progress[:10]) for i in range(2)]
    assert max(last_goal) < 0.5  # against the last frame the same episodes look like failures
