"""The learner node's core: episodes committed with late rewards, persisted, resumed."""

import json

import numpy as np
import pytest
import torch
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.policies.drqv2 import DrQV2Config, NonFiniteError
from video2reward.policies.online import OnlineConfig, OnlineLearner
from video2reward.policies.replay import STORE_NAME

torch.set_num_threads(1)
SMALL = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=5)


def _cfg(tmp_path, **kw):
    return OnlineConfig(out=str(tmp_path / "run"), image_size=32, seed_steps=10, agent=SMALL, **kw)


def _run_episode(learner, rng, steps=8, success=True):
    p = np.array([0.3, 0.0, 0.2, 1.0], np.float32)
    actions = [learner.begin(rng.integers(0, 255, (48, 48, 3), np.uint8), p)]
    for _ in range(steps):
        actions.append(learner.step(rng.integers(0, 255, (48, 48, 3), np.uint8), p))
    return learner.finish(np.linspace(0, 1, steps), success=success), actions


def test_episodes_persist_and_a_restart_resumes_counters_weights_and_replay(tmp_path):
    rng = np.random.default_rng(0)
    learner = OnlineLearner(_cfg(tmp_path))
    for _ in range(3):
        before = learner.core.caught_up_updates
        summary, actions = _run_episode(learner, rng)
        assert all(a.shape == (4,) and np.all(np.abs(a) <= 1) for a in actions)
    # updates a lagging learner thread skipped are made when the episode ends
    assert summary.pop("caught_up_updates") == learner.core.caught_up_updates - before
    assert learner.core.caught_up_updates == learner.skipped_updates
    assert summary == {"steps": 8, "return": pytest.approx(4.0), "success": True,
                       "intervened_steps": 0}
    assert learner.agent.num_updates > 0  # updates ran in the learner thread
    learner.close()
    store = EpisodeStore.open(tmp_path / "run" / "replay" / STORE_NAME)
    assert store.n_episodes == 3
    np.testing.assert_allclose(store.episode(2)["reward"][1:], np.linspace(0, 1, 8), atol=1e-6)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["episodes"] == 3 and state["agent_steps"] == 24

    again = OnlineLearner(_cfg(tmp_path))
    assert again.state["agent_steps"] == 24 and again.restored_steps == 24
    for a, b in zip(again.agent.actor.parameters(), learner.agent.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    _run_episode(again, rng)
    again.close()
    assert EpisodeStore.open(tmp_path / "run" / "replay" / STORE_NAME).n_episodes == 4


def test_abandoned_and_non_finite_episodes_never_reach_the_replay(tmp_path):
    rng = np.random.default_rng(1)
    learner = OnlineLearner(_cfg(tmp_path))
    p = np.array([0.3, 0.0, 0.2, 1.0], np.float32)
    learner.begin(rng.integers(0, 255, (32, 32, 3), np.uint8), p)
    learner.step(rng.integers(0, 255, (32, 32, 3), np.uint8), p)
    learner.abandon()
    learner.begin(rng.integers(0, 255, (32, 32, 3), np.uint8), p)
    learner.step(rng.integers(0, 255, (32, 32, 3), np.uint8), p)
    with pytest.raises(NonFiniteError):
        learner.finish(np.array([np.nan]), success=False)
    with pytest.raises(NonFiniteError):
        learner.begin(rng.integers(0, 255, (32, 32, 3), np.uint8), p * np.nan)
    with pytest.raises(ValueError, match="uint8"):
        learner.begin(np.zeros((32, 32), np.float32), p)
    assert learner.replay is not None and learner.replay.n_episodes == 0
    learner.close()


def test_eval_mode_needs_a_checkpoint_and_acts_deterministically(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnlineLearner(_cfg(tmp_path, eval_mode=True))
    trainer = OnlineLearner(_cfg(tmp_path))
    _run_episode(trainer, np.random.default_rng(2))
    trainer.close()
    ev = OnlineLearner(_cfg(tmp_path, eval_mode=True))
    img = np.full((32, 32, 3), 120, np.uint8)
    p = np.array([0.3, 0.0, 0.2, 1.0], np.float32)
    np.testing.assert_array_equal(ev.begin(img, p), ev.begin(img, p))
    assert ev.replay is None


def test_operator_steps_are_flagged_stored_and_join_the_demo_buffer(tmp_path):
    """A take-over in the node's driver: the operator's commands (already through the teleop
    node's checks; the driver's envelope applies to whatever is sent) are what the replay
    records for those steps, flagged, persisted with a note, and added to the demo buffer."""
    from video2reward.policies.replay import INTERVENED_KEY

    rng = np.random.default_rng(3)
    learner = OnlineLearner(_cfg(tmp_path, interventions=True))
    assert learner.core.demos is not None and len(learner.core.demos) == 0  # room, no demos
    p = np.array([0.3, 0.0, 0.2, 1.0], np.float32)
    op = np.array([0.5, -0.5, 0.0, 1.0], np.float32)
    taken = [False, True, True, False, True, False]  # the step each command was sent for
    learner.begin(rng.integers(0, 255, (32, 32, 3), np.uint8), p)
    for flag in taken:
        learner.step(rng.integers(0, 255, (32, 32, 3), np.uint8), p, op if flag else None, flag)
    summary = learner.finish(np.zeros(6), success=False, note="operator device lost")
    assert summary["intervened_steps"] == 3
    learner.close()
    ep = EpisodeStore.open(tmp_path / "run" / "replay" / STORE_NAME)
    data = ep.episode(0)
    np.testing.assert_array_equal(data[INTERVENED_KEY][:-1], taken)
    for t, flag in enumerate(taken):  # row t holds the action taken at it (data/keys.py)
        if flag:
            np.testing.assert_array_equal(data["action"][t], op)
        else:
            assert not np.array_equal(data["action"][t], op)
    assert not data[INTERVENED_KEY][-1] and not data["action"][-1].any()  # final observation
    assert ep.episode_meta(0)[keys.EPISODE_NOTES] == "operator device lost"
    demos = learner.core.demos
    assert len(demos) == 3  # two segments: steps 1-2 and step 4
    assert demos.n_episodes == 2
    acts = [demos._action[s + 1 : e] for s, e in zip(demos._starts, demos._ends, strict=True)]
    np.testing.assert_array_equal(np.concatenate(acts), np.stack([op] * 3))
    # a restart puts the operator's steps back in the demo buffer, from the replay store
    again = OnlineLearner(_cfg(tmp_path, interventions=True))
    back = again.core.demos
    assert back is not None and back.n_episodes == 2 and len(back) == 3
    t, ep = np.array([0, 1, 3]), np.array([0, 0, 1])  # each segment's steps
    for a, b in zip(demos.transitions(t, ep),
                    back.transitions(t, ep), strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    again.close()


def test_step_rewards_gather_the_frames_between_two_steps_exactly():
    """Frames stamped in (edge_t, edge_t+1] belong to step t, compared as int64 ns (real
    stamps are ~1.8e18 ns: a float64 would shift one by up to 256 ns, across an edge)."""
    from video2reward.policies.online import step_rewards

    base = 1_796_430_286_108_422_309  # a real stamp: not a multiple of 256
    edges = base + np.array([0, 100_000_001, 200_000_003], np.int64)
    frames = np.array([base - 5, base, base + 33_333_333, edges[1] - 1, edges[1],
                       edges[1] + 1, edges[2], edges[2] + 1], np.int64)  # fmt: skip
    r = np.array([9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 6.0, 9.0])
    ok = np.array([1, 1, 0, 0, 0, 0, 1, 1], bool)
    summed, called = step_rewards(edges, frames, r, ok, potential_difference=True)
    np.testing.assert_allclose(summed, [1 + 2 + 3, 4 + 6])  # the edge frame ends its step
    np.testing.assert_array_equal(called, [False, True])
    mean, _ = step_rewards(edges, frames, r, ok, potential_difference=False)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    empty, none = step_rewards(edges, frames[:2], r[:2], ok[:2], potential_difference=False)
    np.testing.assert_array_equal(empty, [0, 0])
    np.testing.assert_array_equal(none, [False, False])


def test_episode_rewards_score_a_windowed_reward_as_the_demos_are_scored(tmp_path):
    """episode_rewards: VIPER (its reward reads a window of earlier frames, which the reward
    node cannot keep) scores the finished episode in the learner, by the demos' path."""
    from video2reward.data.images import prepare_frames
    from video2reward.rewards.base import load_reward_model
    from video2reward.rewards.synthetic import bar_dataset
    from video2reward.rewards.train import fit
    from video2reward.rewards.viper import Viper, ViperConfig

    with pytest.raises(ValueError, match="episode_rewards needs reward_ckpt"):
        _cfg(tmp_path, episode_rewards=True)
    torch.manual_seed(0)
    viper = Viper(ViperConfig(image_size_px=32, code_grid=8, codebook_size=32, code_dim=16,
                              tokenizer_channels=16, seq_len=3, frame_skip=1, n_layer=1,
                              n_head=2, n_embd=32, batch_size=4, steps=4,
                              tokenizer_steps=2))  # fmt: skip
    fit(viper, bar_dataset(4, seed=0), 4)  # a few steps: the codebook is initialised from data
    ckpt = viper.save(tmp_path / "viper.pt")
    learner = OnlineLearner(_cfg(tmp_path, reward_ckpt=str(ckpt), episode_rewards=True))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 48, 3), np.uint8) for _ in range(9)]
    p = np.array([0.3, 0.0, 0.2, 1.0], np.float32)
    learner.begin(frames[0], p)
    for f in frames[1:]:
        learner.step(f, p)
    rewards, calls = learner.score_episode(frames)
    expected = load_reward_model(ckpt).score(prepare_frames(np.stack(frames), 32)).reward[1:]
    assert rewards.shape == calls.shape == (8,) and calls.dtype == bool
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-5)
    # the last step's reward reads two frames back: a window, not a frame pair
    changed = [*frames[:-3], rng.integers(0, 255, (48, 48, 3), np.uint8), *frames[-2:]]
    assert not np.isclose(learner.score_episode(changed)[0][-1], rewards[-1])
    learner.finish(rewards, calls)
    store = EpisodeStore.open(tmp_path / "run" / "replay" / STORE_NAME)
    np.testing.assert_allclose(store.episode(0, ["reward"])["reward"][1:], rewards, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one step"):
        learner.score_episode(frames[:1])
    learner.close()
