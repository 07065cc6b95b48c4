"""Demonstrations in replay: loading, relabelling, mixed batches, the BC term, bad stores."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.policies.demos import (
    DemoError,
    DemoSpec,
    demo_replay,
    load_demo_episodes,
    sample_mixed,
)
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config, bc_loss
from video2reward.policies.replay import Batch, ReplayBuffer, ReplayConfig
from video2reward.policies.toy_env import expert_store
from video2reward.policies.train import EpisodeRewarder, RewardSpec, TrainConfig, train

SIZE = 24
RCFG = ReplayConfig(capacity_steps=1000, frame_stack=2, nstep=2, discount=0.9)


def toy_demo_store(path: Path, episodes: int = 3, seed: int = 0, **override: Any) -> Path:
    """Episodes of the toy task driven towards its target (actions recorded), in a store."""
    return expert_store(path, episodes, seed, SIZE, **override)


def reward_ckpt(tmp_path: Path) -> Path:
    from video2reward.rewards.base import build_model
    from video2reward.rewards.vip import VIPConfig

    torch.manual_seed(0)
    return build_model(VIPConfig(image_size_px=32, embed_dim=8), torch.device("cpu")).save(
        tmp_path / "vip"
    )


def test_agent_steps_are_cut_from_recorded_rows(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "d.zarr", episodes=1)
    ep = EpisodeStore.open(store).episode(0)
    (one,) = load_demo_episodes(store, action_repeat=1)
    np.testing.assert_array_equal(one.actions, ep[keys.ACTION][:-1])
    (two,) = load_demo_episodes(store, action_repeat=2)
    n = len(ep[keys.IMAGE])
    assert len(one.actions) == n - 1 and len(one.images) == n
    np.testing.assert_array_equal(two.images[1], ep[keys.IMAGE][2])  # agent step = 2 rows
    # the command held over the step: the mean of the rows it spans
    np.testing.assert_allclose(two.actions[1], ep[keys.ACTION][2:4].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(two.images[-1], ep[keys.IMAGE][-1])  # ends on the last row
    np.testing.assert_array_equal(two.proprio[1, :3], ep[keys.EE_POS][2])


def test_mixed_batches_have_exact_proportions_and_flags() -> None:
    online = ReplayBuffer(RCFG, (3, 8, 8), 4, 0, seed=0)
    demos = ReplayBuffer(RCFG, (3, 8, 8), 4, 0, seed=1)
    for buf, value in ((online, 7), (demos, 200)):
        buf.start_episode(np.full((3, 8, 8), value, np.uint8))
        for _ in range(5):
            buf.add(np.zeros(4), 0.0, np.full((3, 8, 8), value, np.uint8))
        buf.end_episode()
    for batch_size, fraction in ((10, 0.3), (16, 0.5), (7, 0.25)):
        b = sample_mixed(online, demos, batch_size, fraction)
        n_demo = round(batch_size * fraction)
        assert b.is_demo is not None and b.obs.shape[0] == batch_size
        np.testing.assert_array_equal(b.is_demo, [1.0] * n_demo + [0.0] * (batch_size - n_demo))
        assert (b.obs[:n_demo] == 200).all() and (b.obs[n_demo:] == 7).all()
    assert sample_mixed(online, None, 8, 0.5).is_demo is None  # no demos: the paper's batch


def test_demos_are_relabelled_exactly_like_agent_episodes(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "d.zarr", episodes=2)
    rewarder = EpisodeRewarder(
        RewardSpec(source="model", ckpt=str(reward_ckpt(tmp_path)),
                   success_progress=-1e9),  # every step called successful
        torch.device("cpu"),
    )  # fmt: skip
    demos = load_demo_episodes(store, action_repeat=2)
    buf = demo_replay(demos, RCFG, lambda img: img.transpose(2, 0, 1),
                      lambda d: rewarder.episode_rewards(d.images, agent_frames=False)[0],
                      proprio_dim=4, frame_shape=(3, SIZE, SIZE))  # fmt: skip
    online = ReplayBuffer(RCFG, (3, SIZE, SIZE), 4, 4)
    for i, d in enumerate(demos):
        # the same frames as if the agent had played them
        online.start_episode(d.images[0].transpose(2, 0, 1), d.proprio[0])
        for t, a in enumerate(d.actions):
            online.add(a, 0.0, d.images[t + 1].transpose(2, 0, 1), d.proprio[t + 1])
        r, called = rewarder.episode_rewards(d.images)
        assert called.all()
        online.set_episode_rewards(r)
        online.end_episode()
        n = len(d.actions)
        slots = np.arange(buf._starts[i] + 1, buf._starts[i] + 1 + n)
        np.testing.assert_array_equal(buf._reward[slots], r)
        np.testing.assert_array_equal(buf._action[slots], d.actions)


def test_bc_term_touches_only_demo_rows() -> None:
    mean = torch.zeros(6, 4, requires_grad=True)
    action = torch.ones(6, 4)
    is_demo = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    bc_loss(mean, action, is_demo).backward()
    assert mean.grad is not None
    assert (mean.grad[:2] != 0).all() and (mean.grad[2:] == 0).all()
    assert float(bc_loss(mean, action, torch.zeros(6))) == 0.0  # no demo rows: no term
    # An agent with BC on and no demo rows in its batch updates exactly like one without BC.
    rng = np.random.default_rng(0)
    b = Batch(rng.integers(0, 256, (8, 6, 16, 16), dtype=np.uint8),
              rng.uniform(-1, 1, (8, 4)).astype(np.float32), rng.normal(size=8).astype(np.float32),
              np.full(8, 0.9, np.float32), rng.integers(0, 256, (8, 6, 16, 16), dtype=np.uint8),
              None, None, np.zeros(8, np.float32))  # fmt: skip
    small = DrQV2Config(batch_size=8, hidden_dim=32, feature_dim=16)
    with_bc = DrQV2Agent(DrQV2Config(**{**small.__dict__, "bc_weight": 1.0}), (6, 16, 16), 4)
    without = DrQV2Agent(small, (6, 16, 16), 4)
    with_bc.update(b, step=10)
    without.update(b, step=10)
    for x, y in zip(with_bc.actor.parameters(), without.actor.parameters(), strict=True):
        assert torch.equal(x, y)
    flagged = b._replace(is_demo=np.ones(8, np.float32))  # now every row is a demo row
    m = with_bc.update(flagged, step=10)
    assert m["actor_bc"] > 0 and m["bc_weight"] == 1.0
    assert DrQV2Config(bc_weight=0.4, bc_decay_steps=100).bc_weight_at(50) == pytest.approx(0.2)
    # bc_encoder: the term also reaches the encoder, on demo rows only.
    enc_cfg = DrQV2Config(**{**small.__dict__, "bc_weight": 1.0, "bc_encoder": True})
    agents = [DrQV2Agent(c, (6, 16, 16), 4) for c in (enc_cfg, small, enc_cfg, with_bc.cfg)]
    agents[0].update(b, step=10)  # no demo rows: exactly the plain update
    agents[1].update(b, step=10)
    for x, y in zip(agents[0].encoder.parameters(), agents[1].encoder.parameters(), strict=True):
        assert torch.equal(x, y)
    agents[2].update(flagged, step=10)  # demo rows: the encoder moves differently
    agents[3].update(flagged, step=10)
    assert any(not torch.equal(x, y) for x, y in
               zip(agents[2].encoder.parameters(), agents[3].encoder.parameters(), strict=True))


def test_stores_the_learner_cannot_use_are_refused_with_the_reason(tmp_path: Path) -> None:
    from video2reward.rewards.synthetic import synthetic_store

    videos = tmp_path / "videos.zarr"
    synthetic_store(2, 0, size_px=SIZE, length=6, path=str(videos))
    with pytest.raises(DemoError, match="train the reward model only"):
        load_demo_episodes(videos, action_repeat=2)
    good = toy_demo_store(tmp_path / "good.zarr", episodes=1)
    n = len(EpisodeStore.open(good).episode(0)[keys.IMAGE])
    cases = {
        "actions must be": {keys.ACTION: np.zeros((n, 3), np.float32)},
        "step 4 is not finite": {keys.ACTION: np.where(np.arange(n)[:, None] == 4, np.nan,
                                                       np.zeros((n, 4), np.float32))},
    }  # fmt: skip
    for i, (msg, override) in enumerate(cases.items()):
        bad = toy_demo_store(tmp_path / f"bad{i}.zarr", episodes=1, **override)
        with pytest.raises(DemoError, match=msg):
            load_demo_episodes(bad, action_repeat=2)
    with pytest.raises(DemoError, match="does not exist"):
        load_demo_episodes(tmp_path / "missing.zarr", action_repeat=2)
    with pytest.raises(DemoError, match="smaller than the 48 px"):  # a store from another camera
        load_demo_episodes(good, action_repeat=2, image_hw=(48, 48))
    wide = toy_demo_store(tmp_path / "wide_small.zarr", episodes=1,
                          **{keys.IMAGE: np.zeros((n, SIZE, 64, 3), np.uint8)})  # fmt: skip
    with pytest.raises(DemoError, match="smaller than the 48 px"):  # its centre square counts
        load_demo_episodes(wide, action_repeat=2, image_hw=(48, 48))
    with pytest.raises(ValueError, match="oracle-reward baseline"):
        TrainConfig(demos={"path": str(good)})  # demos need a reward model to relabel them
    with pytest.raises(ValueError, match="reward model calls"):
        TrainConfig(demos={"add_successes": True})  # and successes need its call


def test_training_with_demos_uses_no_oracle(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "d.zarr", episodes=3)
    agent = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=0,
                        bc_weight=0.4)  # fmt: skip
    cfg = TrainConfig(
        task="toy", out=str(tmp_path / "run"), image_size=SIZE, num_train_frames=120,
        seed_steps=20, eval_every_frames=120, num_eval_episodes=1, progress_bar=False,
        agent=agent, reward=RewardSpec(source="model", ckpt=str(reward_ckpt(tmp_path))),
        demos={"path": str(store), "fraction": 0.5},
    )  # fmt: skip
    summary = train(cfg)
    assert summary["demo_episodes"] == 3 and summary["oracle_in_learning"] is False
    assert summary["updates"] > 0 and np.isfinite(summary["success_progress"])
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["oracle_in_learning"] is False
    oracle = train(TrainConfig(task="toy", out=str(tmp_path / "oracle"), image_size=SIZE,
                               num_train_frames=40, num_eval_episodes=0, progress_bar=False,
                               agent=agent))  # fmt: skip
    assert oracle["oracle_in_learning"] is True  # the baseline says so


@pytest.mark.parametrize("task", ["toy", "reach"])
def test_interventions_are_flagged_enveloped_stored_and_join_the_demos(
    tmp_path: Path, task: str
) -> None:
    from video2reward.policies.replay import INTERVENED_KEY, STORE_NAME
    from video2reward.policies.train import REPLAY_DIR

    agent = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=0)
    cfg = TrainConfig(
        task=task, out=str(tmp_path / "run"), image_size=SIZE, num_train_frames=100,
        seed_steps=20, num_eval_episodes=0, progress_bar=False, agent=agent,
        reward=RewardSpec(source="model", ckpt=str(reward_ckpt(tmp_path))),
        # a stall is declared whatever the progress: the operator takes over every episode
        intervention={"enabled": True, "stall_steps": 2, "min_gain": 1e9, "takeover_steps": 3,
                      "max_per_episode": 2},
    )  # fmt: skip
    summary = train(cfg)
    store = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME)
    flags = np.concatenate([store.episode(i)[INTERVENED_KEY] for i in range(store.n_episodes)])
    assert summary["intervened_steps"] == int(flags.sum()) > 0
    assert summary["takeovers"] >= store.n_episodes  # at least one per episode
    assert summary["oracle_in_learning"] is False
    for i in range(store.n_episodes):
        ep = store.episode(i)
        a = ep[keys.ACTION][ep[INTERVENED_KEY]]
        assert np.isfinite(a).all() and np.abs(a).max() <= 1.0  # the envelope's output
        assert not ep[INTERVENED_KEY][-1]  # the last row is the final observation, no action
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert "intervened_steps" in rows[0]


def test_the_intervener_and_the_success_call_read_one_score_per_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With interventions and end_on_success the trainer reads the model's progress on each
    frame twice (the operator's stall check before a step, the success call after it); the
    frame is scored once."""
    from video2reward.rewards.base import RewardModel

    frames_scored: list[bytes] = []
    score = RewardModel.score

    def counted(self: RewardModel, frames: Any, goal: Any = None) -> Any:
        if len(frames) == 1:
            frames_scored.append(np.asarray(frames).tobytes())
        return score(self, frames, goal)

    monkeypatch.setattr(RewardModel, "score", counted)
    agent = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=10**6)
    summary = train(TrainConfig(
        task="toy", out=str(tmp_path / "run"), image_size=SIZE, num_train_frames=60,
        seed_steps=10**6, num_eval_episodes=0, progress_bar=False, agent=agent,
        end_on_success=True,
        reward=RewardSpec(source="model", ckpt=str(reward_ckpt(tmp_path)), success="model",
                          success_progress=1e9),  # never called: episodes run their length
        intervention={"enabled": True, "stall_steps": 2, "min_gain": 1e9, "takeover_steps": 3,
                      "max_per_episode": 1},
    ))  # fmt: skip
    from video2reward.policies.replay import STORE_NAME
    from video2reward.policies.train import REPLAY_DIR

    store = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME)
    steps = sum(len(store.episode(i)[keys.ACTION]) - 1 for i in range(store.n_episodes))
    assert summary["takeovers"] >= 1 and steps > 0
    # each episode's frames 0..n at most once (a frame identical to the one before it is not
    # scored again): the stall check reads 0..n-1, the call 1..n
    assert len(frames_scored) <= steps + store.n_episodes, (len(frames_scored), steps)
    assert len(frames_scored) > steps // 2
    assert all(a != b for a, b in itertools.pairwise(frames_scored))


def test_the_operator_takes_over_on_a_stall_and_hands_back() -> None:
    from video2reward.policies.intervention import InterventionConfig, ScriptedIntervener

    calls = []
    iv = ScriptedIntervener(
        InterventionConfig(enabled=True, stall_steps=2, min_gain=0.1, takeover_steps=2,
                           max_per_episode=1),
        expert=lambda obs: np.ones(4, np.float32), expert_reset=lambda: calls.append(1),
    )  # fmt: skip
    progress = [0.0, 0.5, 0.55, 0.56, 0.57, 0.57, 0.57, 0.57, 0.57, 0.57]
    took = [iv.action({}, p) is not None for p in progress]
    # rises, then two steps without a 0.1 gain: take over for 2 steps, hand back; once only
    assert took == [False, False, False, True, True, False, False, False, False, False]
    assert iv.takeovers == 1 and iv.steps == 2 and calls == [1]
    iv.reset()
    assert [iv.action({}, 0.0) is not None for _ in range(4)] == [False, False, True, True]


def test_pretraining_on_demos_spends_no_frames_and_runs_once(tmp_path: Path) -> None:
    store = toy_demo_store(tmp_path / "d.zarr", episodes=2)
    agent = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, bc_weight=0.4)
    kw: dict[str, Any] = dict(
        task="toy", out=str(tmp_path / "run"), image_size=SIZE, num_train_frames=40,
        seed_steps=10**6, num_eval_episodes=0, progress_bar=False, agent=agent,
        reward=RewardSpec(source="model", ckpt=str(reward_ckpt(tmp_path))),
        demos={"path": str(store), "pretrain_updates": 7},
    )  # fmt: skip
    summary = train(TrainConfig(**kw))
    assert summary["updates"] == 7  # no online update: the seed phase outlasts the budget
    again = train(TrainConfig(**{**kw, "num_train_frames": 80, "resume": True}))
    assert again["updates"] == 7  # a resumed run does not pretrain again


def test_learner_node_driver_loads_demos_the_trainers_way_and_pretrains_once(
    tmp_path: Path,
) -> None:
    from video2reward.policies.demos import rows_per_step
    from video2reward.policies.learner import with_bonus
    from video2reward.policies.online import OnlineConfig, OnlineLearner

    store, ckpt = toy_demo_store(tmp_path / "d.zarr", episodes=2), reward_ckpt(tmp_path)
    assert rows_per_step(store, 10.0) == 1 and rows_per_step(store, 5.0) == 2  # 10 fps rows
    agent = DrQV2Config(batch_size=8, hidden_dim=16, feature_dim=8, bc_weight=0.4)
    cfg = OnlineConfig(out=str(tmp_path / "node"), image_size=SIZE, frame_stack=2, device="cpu",
                       demos=DemoSpec(path=str(store), pretrain_updates=3),
                       reward_ckpt=str(ckpt), success_bonus=1.0, agent=agent)  # fmt: skip
    learner = OnlineLearner(cfg)
    assert learner.demo_info["rows_per_step"] == 1 and learner.demo_info["episodes"] == 2
    assert learner.reward_method == "vip"  # the node reads it here, not from disk again
    assert learner.pretrain() == 3 and learner.agent.num_updates == 3  # before the first frame
    # the same demo transitions, rewards and success calls as the twin trainer's relabelling
    rewarder = EpisodeRewarder(RewardSpec(source="model", ckpt=str(ckpt), success="model"),
                               torch.device("cpu"))  # fmt: skip
    demos = load_demo_episodes(store, 1)
    rewarder.calibrate_success([d.images for d in demos])
    ref = demo_replay(
        demos, learner.replay.cfg, lambda img: np.ascontiguousarray(img.transpose(2, 0, 1)),
        lambda d: with_bonus(*rewarder.episode_rewards(d.images, agent_frames=False), 1.0),
        4, (3, SIZE, SIZE),
    )  # fmt: skip
    got = learner.core.demos
    assert got is not None and len(got) == len(ref) > 0
    n = len(ref)
    np.testing.assert_array_equal(got._reward[:n], ref._reward[:n])
    np.testing.assert_array_equal(got._obs[:n], ref._obs[:n])
    np.testing.assert_array_equal(got._action[:n], ref._action[:n])
    assert np.any(got._reward[:n] >= 1.0)  # the success bonus reached the demo rows
    learner.close()
    again = OnlineLearner(cfg)  # a restart does not pretrain again
    assert again.pretrain() == 0 and again.agent.num_updates == 3
    again.close()
    with pytest.raises(ValueError, match="reward_ckpt"):
        OnlineConfig(demos=DemoSpec(path=str(store)))


def test_operator_takeover_drives_hands_back_refuses_garbage_and_detects_a_lost_device() -> None:
    from video2reward.policies.intervention import OperatorTakeover

    op = OperatorTakeover(timeout_s=0.3)
    assert op.action(0.0) is None  # nobody has touched the device: the policy acts
    assert op.feed([0.5, -2.0 / 1.5, 0.0, 1.0], 0.0) is None
    np.testing.assert_allclose(op.action(0.1), [0.5, -1.0, 0.0, 1.0])  # clipped to [-1, 1]
    assert op.feed([0.2, 0.0, 0.0, 1.0], 0.15) is None
    np.testing.assert_allclose(op.action(0.2), [0.2, 0.0, 0.0, 1.0])
    assert (op.takeovers, op.steps) == (1, 2)  # one take-over, two steps
    for bad in ([np.nan, 0, 0, 0], [0.1, 0.2, 0.3], [1e30, 0, 0, 0], [0, 0, 1.6, 0]):
        assert "refused" in str(op.feed(bad, 0.25))
    assert op.refused == 4
    np.testing.assert_allclose(op.action(0.3), [0.2, 0.0, 0.0, 1.0])  # garbage changed nothing
    assert op.feed([], 0.35) is None  # hand-back: the policy acts, nothing is lost
    assert op.action(0.4) is None and not op.lost
    op.feed([0.0, 0.0, 0.1, -1.0], 0.5)
    assert op.action(0.55) is not None and op.takeovers == 2
    # the device goes silent while the operator drives: lost, and it stays lost this episode
    assert op.action(0.55 + 0.31) is None and op.lost
    op.feed([0.0, 0.0, 0.1, -1.0], 0.9)
    assert op.action(0.95) is None and op.lost
    op.reset()  # the next episode: the policy drives until the operator does
    assert not op.lost and op.action(1.0) is None and op.episode_takeovers == 0


def test_demos_recorded_wider_than_tall_reach_the_learner_as_their_centre_square(
    tmp_path: Path,
) -> None:
    """A robot's teleop demos are 640x480: loaded as recorded, each consumer takes the centre
    square (the same function as the live camera's frames), never a squashed frame."""
    from video2reward.data.images import prepare_frame

    rng = np.random.default_rng(0)
    good = toy_demo_store(tmp_path / "good.zarr", episodes=1)
    n = len(EpisodeStore.open(good).episode(0)[keys.IMAGE])
    wide = rng.integers(0, 255, (n, SIZE, SIZE + 8, 3), np.uint8)
    store = toy_demo_store(tmp_path / "wide.zarr", episodes=1, **{keys.IMAGE: wide})
    (ep,) = load_demo_episodes(store, action_repeat=1, image_hw=(SIZE, SIZE))
    assert ep.images.shape[1:3] == (SIZE, SIZE + 8)  # kept as recorded
    buf = demo_replay([ep], RCFG, lambda img: prepare_frame(img, SIZE).transpose(2, 0, 1),
                      lambda d: np.zeros(len(d.actions), np.float32), 4, (3, SIZE, SIZE))
    np.testing.assert_array_equal(buf._obs[0], wide[0, :, 4 : 4 + SIZE].transpose(2, 0, 1))
