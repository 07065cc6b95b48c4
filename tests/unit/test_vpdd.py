"""VPDD (policies/vpdd.py): action bins, the masked-token loss, checkpoints, refusals, acting."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.policies.demos import DemoError
from video2reward.policies.toy_env import expert_store
from video2reward.policies.vpdd import (
    ActionBins,
    VPDDConfig,
    VPDDPolicy,
    _Windows,
    evaluate_twin,
    finetune,
    label_actions,
    label_store,
    load,
    pretrain,
    save,
)
from video2reward.rewards.base import CHECKPOINT_VERSION, CheckpointError

torch.set_num_threads(1)
TINY = VPDDConfig(image_size=32, code_grid=4, codebook_size=32, code_dim=8, tokenizer_channels=8,
                  history=2, future=3, action_horizon=2, action_bins=8, n_layer=1, n_head=2,
                  n_embd=32, dropout=0.0, batch_size=16, tokenizer_steps=60, pretrain_steps=0,
                  finetune_steps=40, sample_steps=4)  # fmt: skip


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
def test_action_tokens_round_trip_within_one_bin(kind: str) -> None:
    rng = np.random.default_rng(0)
    a = np.clip(rng.normal(0, 0.5, (500, 4)), -1, 1).astype(np.float32)
    a[:, 3] = 1.0  # a constant gripper: its bins collapse onto the value
    bins = ActionBins.fit(a, 16, kind)
    tok = bins.encode(a)
    assert tok.min() >= 0 and tok.max() < 16
    back = bins.decode(tok)
    np.testing.assert_array_equal(bins.encode(back), tok)  # the midpoint stays in its bin
    lo = np.take_along_axis(bins.edges.T, tok, 0)
    hi = np.take_along_axis(bins.edges.T, tok + 1, 0)
    assert np.all((back >= lo - 1e-6) & (back <= hi + 1e-6))
    assert np.all(np.abs(back - a) <= (hi - lo) + 1e-6)
    if kind == "quantile":  # equal-frequency: every bin of a spread dimension is used, and a
        assert len(np.unique(tok[:, 0])) == 16  # constant one comes back exactly
        np.testing.assert_allclose(back[:, 3], 1.0)
    assert np.all(np.abs(bins.decode(bins.encode(np.array([[-5.0, 5.0, 0.0, 0.0]])))) <= 1.0)


def toy_demo_store(path: Path, episodes: int) -> Path:
    return expert_store(path, episodes, image_size=32)


def _loss(model, windows: _Windows, bins: ActionBins | None) -> float:  # type: ignore[no-untyped-def]
    """The mean masked-token loss over fixed batches and diffusion draws."""
    torch.manual_seed(123)
    rng = np.random.default_rng(123)
    model.net.eval()
    with torch.no_grad():
        losses = [model.diffusion_loss(*windows.sample(model.config, rng, bins))[0]
                  for _ in range(8)]  # fmt: skip
    return float(torch.stack(losses).mean())


def test_masked_token_loss_falls_and_the_checkpoint_round_trips(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "videos.zarr", episodes=4)
    model = pretrain(TINY, [store], tmp_path / "pre", log_every=10**6)
    frames = [model.codes(torch.from_numpy(np.ascontiguousarray(
        EpisodeStore.open(store).episode(i)[keys.IMAGE][::2])).permute(0, 3, 1, 2).float())
        for i in range(4)]  # fmt: skip
    windows = _Windows(frames, [None] * 4, [None] * 4)
    before = _loss(model, windows, None)
    from video2reward.policies.vpdd import _train_net

    _train_net(model, windows, 150, None, "pretrain", np.random.default_rng(0), 10**6)
    after = _loss(model, windows, None)
    assert after < 0.8 * before, (before, after)

    # weights only, and the same model back
    save(model, tmp_path / "trained", {"stage": "pretrained"})
    model2 = load(tmp_path / "trained")
    assert not model2.finetuned
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    with pytest.raises(ValueError, match="fine-tune"):
        VPDDPolicy(model2)  # pre-trained only: it has no actions to give


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran",))


def test_checkpoints_carrying_code_or_missing_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    with open(bad / "model.pt", "wb") as f:
        pickle.dump({"method": "vpdd", "state": _Payload()}, f)
    with pytest.raises(CheckpointError, match="could run code"):
        load(bad)
    assert "code ran" not in capsys.readouterr().out  # refused before anything ran
    with pytest.raises(CheckpointError, match=r"does not exist .*v2r policy"):
        load(tmp_path / "missing")
    torch.save({"method": "vip", "state_dict": {}, "format_version": CHECKPOINT_VERSION},
               bad / "model.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="not a VPDD policy"):
        load(bad)
    torch.save({"method": "vpdd"}, bad / "model.pt")
    with pytest.raises(CheckpointError, match="not a VPDD checkpoint"):
        load(bad)


def test_finetuning_refuses_videos_without_actions(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "v.zarr", episodes=2)
    pretrain(dataclasses.replace(TINY, tokenizer_steps=2), [store], tmp_path / "pre",
             log_every=10**6)  # fmt: skip
    src = EpisodeStore.open(store)
    videos = EpisodeStore.create(str(tmp_path / "no_actions.zarr"), fps=10.0)
    ep = src.episode(0)
    videos.append_episode({k: v for k, v in ep.items() if k != keys.ACTION}, task="toy",
                          success=True, kind="expert")  # fmt: skip
    with pytest.raises(DemoError, match="VPDD fine-tuning needs demonstrations with actions"):
        finetune(tmp_path / "pre", tmp_path / "no_actions.zarr", tmp_path / "ft")


def test_finetuned_policy_acts_in_range_through_the_twin_envelope(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "d.zarr", episodes=3)
    model = finetune(None, store, tmp_path / "ft", cfg=TINY, log_every=10**6)
    assert model.finetuned and load(tmp_path / "ft").finetuned
    policy = VPDDPolicy(load(tmp_path / "ft"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        stacked = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
        a = policy.act(stacked, np.array([0.4, 0.0, 0.1, 1.0], np.float32))
        assert a.shape == (4,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
    with pytest.raises(ValueError, match="stacked frames"):
        policy.act(np.zeros((3, 32, 32), np.uint8), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="finite proprio"):
        policy.act(np.zeros((6, 32, 32), np.uint8), np.array([np.nan, 0, 0, 0], np.float32))
    # one twin episode, evaluated as v2r rl train evaluates (the env's envelope on each step)
    got = evaluate_twin(load(tmp_path / "ft"), task="reach", episodes=1)
    assert got["episode_frames"] == 50 and got["success_rate"] in (0.0, 1.0)


def test_the_learner_node_core_acts_with_a_vpdd_policy_in_eval_mode(tmp_path: Path) -> None:
    from video2reward.policies.online import OnlineConfig, OnlineLearner

    store = toy_demo_store(tmp_path / "d.zarr", episodes=2)
    finetune(None, store, tmp_path / "ft", cfg=dataclasses.replace(TINY, finetune_steps=5),
             log_every=10**6)  # fmt: skip
    hz = load(tmp_path / "ft").info["agent_hz"]  # the demos' row rate over frame_skip
    assert hz == pytest.approx(EpisodeStore.open(store).fps / TINY.frame_skip, rel=0.01)
    cfg = OnlineConfig(out=str(tmp_path / "eval"), eval_mode=True, control_hz=hz,
                       policy_ckpt=str(tmp_path / "ft"), image_size=84, frame_stack=3)
    learner = OnlineLearner(cfg)  # no agent.pt needed: the VPDD policy acts
    assert learner.agent is None and learner.num_updates == 0  # no DrQ-v2 agent beside it
    try:  # the policy's observation: its image size and history, not the node's params
        assert (learner.config.image_size, learner.config.frame_stack) == (32, TINY.history)
        rng = np.random.default_rng(1)
        p = np.array([0.4, 0.0, 0.1, 1.0], np.float32)
        actions = [learner.begin(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), p)]
        actions += [learner.step(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), p)
                    for _ in range(2)]  # fmt: skip
        assert all(a.shape == (4,) and np.all(np.abs(a) <= 1.0) for a in actions)
        assert learner.replay is None  # evaluation records nothing
    finally:
        learner.close()
    with pytest.raises(ValueError, match=r"fine-tuned on steps of .* control_hz"):
        OnlineLearner(dataclasses.replace(cfg, control_hz=hz * 2))
    with pytest.raises(ValueError, match="set eval_mode"):
        dataclasses.replace(cfg, eval_mode=False)


def test_cli_pretrains_finetunes_evaluates_and_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from video2reward.cli.main import main as v2r

    store = toy_demo_store(tmp_path / "d.zarr", episodes=2)
    tiny = [f"model.{f.name}={getattr(TINY, f.name)}" for f in dataclasses.fields(TINY)
            if getattr(TINY, f.name) != f.default]  # fmt: skip
    steps = ["model.tokenizer_steps=5", "model.pretrain_steps=5", "model.finetune_steps=5"]
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert v2r(["policy", "pretrain", f"data=[{store}]", f"out={pre}", *tiny, *steps]) == 0
    assert v2r(["policy", "finetune", f"ckpt={pre}", f"demos={store}", f"out={ft}",
                "model.finetune_steps=5", "model.action_bins=6"]) == 0  # fmt: skip
    assert load(ft).bin_edges.shape == (4, 7)  # the new bins; the video part kept
    assert v2r(["policy", "eval", f"ckpt={ft}", "episodes=1"]) == 0
    assert '"episode_frames": 50.0' in capsys.readouterr().out
    # the architecture is the checkpoint's; a missing store and missing options are named
    assert v2r(["policy", "finetune", f"ckpt={pre}", f"demos={store}", "model.n_layer=3"]) == 2
    assert "model.n_layer is fixed by the pre-trained checkpoint" in capsys.readouterr().err
    assert v2r(["policy", "finetune", f"ckpt={pre}", f"demos={tmp_path / 'none.zarr'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert v2r(["policy", "pretrain", f"out={pre}"]) == 2
    assert "pretrain needs data=" in capsys.readouterr().err


def test_labelled_videos_become_demonstrations_the_drqv2_learner_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from video2reward.cli.main import main as v2r
    from video2reward.policies.demos import load_demo_episodes

    store = toy_demo_store(tmp_path / "d.zarr", episodes=3)
    cfg = dataclasses.replace(TINY, finetune_steps=5)
    with pytest.raises(ValueError, match="fine-tuned"):  # a pre-trained model does not act
        label_actions(pretrain(dataclasses.replace(cfg, tokenizer_steps=2), [store],
                               tmp_path / "pre", log_every=10**6),
                      np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 4), np.float32))  # fmt: skip
    model = finetune(None, store, tmp_path / "ft", cfg=cfg, log_every=10**6)
    src = EpisodeStore.open(store)
    ep = src.episode(2)
    proprio = np.concatenate([ep[keys.EE_POS], ep[keys.GRIPPER]], 1).astype(np.float32)
    a = label_actions(model, ep[keys.IMAGE], proprio)
    assert a.shape == (len(ep[keys.IMAGE]), 4) and np.all(np.abs(a) <= 1.0)
    # one action per agent step: the rows of a step (frame_skip of them) hold the same one
    k = cfg.frame_skip
    for r in range(0, len(a) - 1, k):
        np.testing.assert_array_equal(a[r : r + k], np.repeat(a[r : r + 1], len(a[r : r + k]), 0))
    with pytest.raises(ValueError, match="proprio"):  # human videos: no proprio to read
        label_actions(model, ep[keys.IMAGE], None)

    info = label_store(tmp_path / "ft", store, tmp_path / "l.zarr", demos=store, max_demos=1,
                       skip_videos=1)  # fmt: skip
    assert (info["demo_episodes"], info["labelled_episodes"]) == (1, 2)
    out = EpisodeStore.open(tmp_path / "l.zarr")
    assert out.n_episodes == 3 and out.attrs["labelled_by"]["vpdd"] == str(tmp_path / "ft")
    np.testing.assert_array_equal(out.episode(0)[keys.ACTION], src.episode(0)[keys.ACTION])
    np.testing.assert_array_equal(out.episode(2)[keys.IMAGE], ep[keys.IMAGE])  # frames as shot
    assert "actions by VPDD" in out.episode_meta(1)[keys.EPISODE_NOTES]
    # what DrQ-v2 pretrains on (action_repeat = frame_skip): each agent step's action is the
    # label of the row it starts at, the frames and proprio those of the recording
    demos = load_demo_episodes(tmp_path / "l.zarr", action_repeat=k)
    assert len(demos) == 3 and out.attrs["labelled_by"]["frame_skip"] == k
    lab = np.asarray(out.episode(2)[keys.ACTION])
    rows = np.arange(0, len(lab) - 1, k)
    np.testing.assert_allclose(demos[2].actions, lab[rows], atol=1e-6)
    np.testing.assert_array_equal(demos[2].proprio[:-1], proprio[rows])
    np.testing.assert_allclose(demos[0].actions, load_demo_episodes(store, k)[0].actions)
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        label_store(tmp_path / "ft", store, tmp_path / "l.zarr")
    with pytest.raises(DemoError, match="no successful episodes after the first 3"):
        label_store(tmp_path / "ft", store, tmp_path / "l2.zarr", skip_videos=3)
    # videos at another rate than the policy's steps are refused; a labelling run that stops
    # part way (non-finite proprio in its second video) leaves no store that looks finished
    slow = EpisodeStore.create(tmp_path / "slow.zarr", fps=src.fps / 2)
    slow.append_episode({k_: v for k_, v in ep.items() if k_ != keys.TIMESTAMP}, task="toy",
                        success=True)  # fmt: skip
    with pytest.raises(DemoError, match="learned steps of"):
        label_store(tmp_path / "ft", tmp_path / "slow.zarr", tmp_path / "l5.zarr")
    bad = EpisodeStore.create(tmp_path / "bad.zarr", fps=src.fps)
    for j, nan in ((0, False), (1, True)):
        e = dict(src.episode(j))
        if nan:
            e[keys.EE_POS] = np.full_like(e[keys.EE_POS], np.nan)
        bad.append_episode(e, task="toy", success=True)
    with pytest.raises(ValueError, match="non-finite"):
        label_store(tmp_path / "ft", tmp_path / "bad.zarr", tmp_path / "l6.zarr")
    assert not (tmp_path / "l6.zarr").exists()
    # the command line: the same store, and a clear error for a missing option
    assert v2r(["policy", "label", f"ckpt={tmp_path / 'ft'}", f"videos={store}",
                f"out={tmp_path / 'l3.zarr'}", "skip_videos=2"]) == 0  # fmt: skip
    assert '"labelled_episodes": 1' in capsys.readouterr().out
    assert EpisodeStore.open(tmp_path / "l3.zarr").n_episodes == 1
    assert v2r(["policy", "label", f"ckpt={tmp_path / 'ft'}", f"out={tmp_path / 'l4.zarr'}"]) != 0
    assert "label needs ckpt=" in capsys.readouterr().err
    assert v2r(["policy", "label", f"ckpt={tmp_path / 'ft'}", f"videos={store}"]) != 0  # no out=
    assert "label needs ckpt=" in capsys.readouterr().err
