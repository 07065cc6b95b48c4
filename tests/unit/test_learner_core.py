"""One learner core: the twin trainer and the learner node's driver fill the replay alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.policies.demos import DemoSpec, add_segment, demo_replay, load_demo_episodes
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
from video2reward.policies.learner import CoreConfig, LearnerCore, LearnSpec, with_bonus
from video2reward.policies.online import OnlineConfig, OnlineLearner
from video2reward.policies.replay import STORE_NAME, ReplayBuffer, ReplayConfig
from video2reward.policies.toy_env import expert_store
from video2reward.policies.train import REPLAY_DIR, RewardSpec, TrainConfig, train

torch.set_num_threads(1)
AGENT = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=20)
SIZE = 32


def test_both_drivers_fill_the_replay_alike_and_take_the_same_next_update(tmp_path: Path) -> None:
    # The twin trainer's driver (v2r rl train), on the toy task, one env frame per agent step.
    train(TrainConfig(task="toy", out=str(tmp_path / "train"), image_size=SIZE, action_repeat=1,
                      num_train_frames=120, seed_steps=60, num_eval_episodes=0,
                      progress_bar=False, agent=AGENT))  # fmt: skip
    first = EpisodeStore.open(tmp_path / "train" / REPLAY_DIR / STORE_NAME)
    # The learner node's driver, fed the same episodes: frames, proprio, applied commands,
    # rewards (as a camera, the driver and the reward node would hand them over).
    node = OnlineLearner(OnlineConfig(out=str(tmp_path / "node"), image_size=SIZE,
                                      seed_steps=10**6, agent=AGENT))  # fmt: skip
    for i in range(first.n_episodes):
        ep = first.episode(i)
        node.begin(ep[keys.IMAGE][0], ep["proprio"][0])
        for t in range(1, len(ep[keys.IMAGE])):  # row t - 1's action led to frame t
            node.step(ep[keys.IMAGE][t], ep["proprio"][t], applied_action=ep[keys.ACTION][t - 1])
        node.finish(ep["reward"][1:], success=False)
    node.close()
    second = EpisodeStore.open(tmp_path / "node" / "replay" / STORE_NAME)
    assert second.n_episodes == first.n_episodes > 1
    for i in range(first.n_episodes):
        a, b = first.episode(i), second.episode(i)
        for k in (keys.IMAGE, "proprio", keys.ACTION, "reward", "cont"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"episode {i} {k}")
    # The same replay gives the same next update.
    metrics = []
    for run in ("train", "node"):
        sub = REPLAY_DIR if run == "train" else "replay"
        replay = ReplayBuffer(ReplayConfig(1000, 3, AGENT.nstep, AGENT.discount), (3, SIZE, SIZE),
                              4, 4, directory=tmp_path / run / sub, seed=5)  # fmt: skip
        replay.restore()
        agent = DrQV2Agent(AGENT, (9, SIZE, SIZE), 4, 4, seed=11)
        metrics.append(agent.update(replay.sample(16), step=100))
    assert metrics[0] == metrics[1]


def test_success_bonus_means_every_called_step_in_both_drivers(tmp_path: Path) -> None:
    np.testing.assert_array_equal(with_bonus(np.zeros(4), [0, 1, 1, 0], 2.0), [0, 2, 2, 0])
    node = OnlineLearner(OnlineConfig(out=str(tmp_path / "node"), image_size=SIZE,
                                      seed_steps=10**6, success_bonus=1.0, agent=AGENT))
    rgb, p = np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(4, np.float32)
    for calls in ([False, True, True], True):  # the reward node's per-step calls; a key press
        node.begin(rgb, p)
        for _ in range(3):
            node.step(rgb, p)
        node.finish(np.zeros(3), success=np.array(calls) if isinstance(calls, list) else calls)
    node.close()
    store = EpisodeStore.open(tmp_path / "node" / "replay" / STORE_NAME)
    np.testing.assert_array_equal(store.episode(0)["reward"][1:], [0, 1, 1])
    np.testing.assert_array_equal(store.episode(1)["reward"][1:], [0, 0, 1])  # the last step


def test_core_config_refuses_what_it_cannot_mean() -> None:
    for bad in ({"learner": "async"}, {"when_lagging": "later"}, {"demo_fraction": 1.0},
                {"frame_stack": 0}, {"success_bonus": float("nan")}):  # fmt: skip
        with pytest.raises(ValueError):
            CoreConfig(**bad)  # type: ignore[arg-type]
    agent = DrQV2Agent(AGENT, (9, SIZE, SIZE), 4, 4)
    core = LearnerCore(CoreConfig(), agent, None)  # acting only (eval): no replay, no updates
    core.begin(np.zeros((3, SIZE, SIZE), np.uint8), np.zeros(4, np.float32))
    assert core.act(np.zeros(4, np.float32), eval_mode=True).shape == (4,)
    assert core.maybe_update() == {}
    # another policy (VPDD's) acts without an agent; a core cannot train one it was not given
    class Fixed:
        def act(self, obs: np.ndarray, proprio: np.ndarray | None, step: int,
                eval_mode: bool = False) -> np.ndarray:
            return np.full(4, 0.5, np.float32)

    acting = LearnerCore(CoreConfig(), None, None, policy=Fixed())
    acting.begin(np.zeros((3, SIZE, SIZE), np.uint8), None)
    assert acting.act(None, eval_mode=True).tolist() == [0.5] * 4 and acting.maybe_update() == {}
    with pytest.raises(ValueError, match="needs demonstrations"):
        acting.pretrain(1)
    replay = ReplayBuffer(ReplayConfig(capacity_steps=10), (3, SIZE, SIZE), 4, 4)
    for args in ((agent, None, None, Fixed()), (None, None, None, None),
                 (None, replay, None, Fixed())):  # fmt: skip
        with pytest.raises(ValueError, match="an agent to train, or a policy"):
            LearnerCore(CoreConfig(), *args[:3], policy=args[3])


def _second_episode(core: LearnerCore) -> tuple[np.ndarray, np.ndarray]:
    """One 4-step episode committed without updates, and the next begun; its frame, proprio."""
    frame, p = np.zeros((3, SIZE, SIZE), np.uint8), np.zeros(4, np.float32)
    core.begin(frame, p)
    for _ in range(4):
        core.record(np.zeros(4, np.float32), frame, p)
    core.finish(np.zeros(4), np.zeros(4, bool))
    core.begin(frame, p)
    return frame, p


def test_update_to_data_ratio(tmp_path: Path) -> None:
    agent = DrQV2Agent(DrQV2Config(**{**AGENT.__dict__, "updates_per_step": 3,
                                      "update_every_steps": 2}), (9, SIZE, SIZE), 4, 4)  # fmt: skip
    replay = ReplayBuffer(ReplayConfig(100, 3, 2, 0.9), (3, SIZE, SIZE), 4, 4)
    core = LearnerCore(CoreConfig(seed_steps=0), agent, replay)
    frame, p = _second_episode(core)
    for n in range(1, 5):
        core.record(np.zeros(4, np.float32), frame, p)
        core.maybe_update()
        # 3 updates every 2nd agent step: 1.5 updates per step of data
        assert agent.num_updates == 3 * ((4 + n) // 2 - 2)


def test_updates_skipped_while_the_learner_lagged_are_made_between_episodes(
    tmp_path: Path,
) -> None:
    """A robot's control tick never waits for learning (``when_lagging=skip``); catch_up,
    between episodes, makes the skipped updates, so the updates per agent step are the
    schedule's whatever the CPU's speed."""
    agent = DrQV2Agent(AGENT, (9, SIZE, SIZE), 4, 4)
    replay = ReplayBuffer(ReplayConfig(100, 3, 2, 0.9), (3, SIZE, SIZE), 4, 4)
    core = LearnerCore(CoreConfig(seed_steps=0, learner="thread", when_lagging="skip",
                                  max_learner_lag_updates=1), agent, replay)  # fmt: skip
    frame, p = _second_episode(core)
    try:
        with core.policy_lock:  # the learner thread cannot publish its update: it lags
            for _ in range(10):
                core.record(np.zeros(4, np.float32), frame, p)
                core.maybe_update()
        # one update every 2nd step (5); one was requested, the others found it owed
        assert core.skipped_updates == 4
        core.finish(np.zeros(10), np.zeros(10, bool))
        assert core.catch_up() == 4
        assert agent.num_updates == 5 and core.caught_up_updates == 4
        assert core.catch_up() == 0  # nothing more is owed
    finally:
        core.close()


def test_both_drivers_configs_are_one_learn_spec() -> None:
    # One definition of the learning options: each driver's config is a LearnSpec plus its own
    # fields, with the same defaults, the same checks and the same core config.
    shared = [f.name for f in dataclasses.fields(LearnSpec)]
    assert "agent" in shared and "demos" in shared and "success_bonus" in shared
    for cls in (TrainConfig, OnlineConfig):
        assert issubclass(cls, LearnSpec)
        for name in shared:  # not restated with another default
            assert getattr(cls(), name) == getattr(LearnSpec(), name), (cls.__name__, name)
    spec = {"seed": 3, "frame_stack": 2, "seed_steps": 40, "success_bonus": 0.5,
            "proprio": False, "replay_capacity_steps": 500, "agent": AGENT,
            "demos": DemoSpec(path="d.zarr", fraction=0.25, pretrain_updates=5)}  # fmt: skip
    twin = TrainConfig(reward=RewardSpec(source="model", ckpt="r"), **spec)  # type: ignore[arg-type]
    node = OnlineConfig(reward_ckpt="r", **spec)  # type: ignore[arg-type]
    assert twin.core_config(learner="thread") == node.core_config(learner="thread")
    assert twin.core_config().demo_fraction == 0.25 and twin.core_config().seed_steps == 40
    # a policy pretrained on demos acts from the first frame, in both drivers alike
    assert twin.agent == node.agent and twin.agent.num_expl_steps == 0
    bads = ({"seed_steps": -1}, {"frame_stack": 0}, {"success_bonus": float("inf")},
            {"replay_capacity_steps": 10}, {"demos": DemoSpec(pretrain_updates=3)})  # fmt: skip
    for bad in bads:
        for cls in (TrainConfig, OnlineConfig):
            with pytest.raises(ValueError):
                cls(**bad)  # type: ignore[arg-type]


def test_called_successes_join_the_demos_and_come_back_on_resume(tmp_path: Path) -> None:
    """Self-imitation (demos.add_successes): an episode the success call fires on joins the
    demonstrations up to its last called step; a resumed learner's demos hold it again."""
    cfg = OnlineConfig(out=str(tmp_path / "node"), image_size=SIZE, seed_steps=10**6,
                       agent=AGENT, demos=DemoSpec(add_successes=True))  # fmt: skip

    def episode(node: OnlineLearner, calls: list[bool], operator: int = -1) -> None:
        node.begin(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(4, np.float32))
        for t in range(len(calls)):
            rgb = np.full((SIZE, SIZE, 3), 10 * (t + 1), np.uint8)
            node.step(rgb, np.full(4, t + 1, np.float32),
                      applied_action=np.full(4, 0.1 * (t + 1), np.float32),
                      intervened=t == operator)  # fmt: skip
        node.finish(np.zeros(len(calls)), success=np.array(calls))

    node = OnlineLearner(cfg)
    assert node.core.demos is not None and len(node.core.demos) == 0
    episode(node, [False, False, True, False, False])  # steps 0-2 join
    assert len(node.core.demos) == 3
    episode(node, [False] * 4)  # no call: nothing joins
    assert len(node.core.demos) == 3
    episode(node, [True, False, False, False], operator=2)  # step 0, and the operator's step 2
    assert len(node.core.demos) == 5
    batch = node.core.demos.sample(64)
    held = {round(float(a), 3) for a in batch.action[:, 0]}
    assert held == {0.1, 0.2, 0.3}  # the applied actions of the joined steps only
    first = len(node.core.demos)
    node.close()

    again = OnlineLearner(cfg)  # the replay directory is there: a resumed run
    assert again.restored_steps == 13
    assert again.core.demos is not None and len(again.core.demos) == first
    again.close()
    off = OnlineLearner(dataclasses.replace(cfg, out=str(tmp_path / "off"),
                                            demos=DemoSpec()))  # fmt: skip
    assert off.core.demos is None  # off by default: no demo buffer without demos or operator
    off.close()


def test_a_full_demo_buffer_keeps_the_teleoperated_demos(tmp_path: Path) -> None:
    """Operator steps and called successes that no longer fit are left out (counted, warned
    once) instead of evicting the oldest demonstrations."""
    agent = DrQV2Agent(AGENT, (9, SIZE, SIZE), 4, 4)
    replay = ReplayBuffer(ReplayConfig(1000, 3, 2, 0.9), (3, SIZE, SIZE), 4, 4)
    demos = ReplayBuffer(ReplayConfig(12, 3, 2, 0.9), (3, SIZE, SIZE), 4, 4)
    frame, p = np.zeros((3, SIZE, SIZE), np.uint8), np.zeros(4, np.float32)
    teleop = np.full(4, -0.5, np.float32)
    add_segment(demos, [frame] * 5, np.zeros((5, 4), np.float32), np.stack([teleop] * 4),
                np.zeros(4))  # fmt: skip
    core = LearnerCore(CoreConfig(seed_steps=10**6, demo_add_successes=True), agent, replay,
                       demos=demos)  # fmt: skip

    def episode(n: int) -> None:
        core.begin(frame, p)
        for _ in range(n):
            core.record(np.full(4, 0.5, np.float32), frame, p)
        core.finish(np.zeros(n), np.arange(n) == n - 1, None, [np.full(4, 0.5, np.float32)] * n,
                    [frame] * (n + 1), [p] * (n + 1))  # fmt: skip

    episode(5)  # 6 slots: fits beside the demo's 5
    assert len(demos) == 9 and core.demo_steps_left_out == 0
    with pytest.warns(UserWarning, match="demonstration buffer is full"):
        episode(5)
    episode(3)
    assert core.demo_steps_left_out == 5 + 3
    assert len(demos) == 9
    assert -0.5 in demos.sample(64).action[:, 0]  # the teleoperated demo is still there


def test_a_success_that_ends_the_episode_is_terminal_in_both_drivers(tmp_path: Path) -> None:
    """end_on_success (SERL, HIL-SERL): the twin trainer ends an episode at the step the call
    fires on, and in both drivers a called last step is terminal (nothing bootstraps past it);
    the demonstrations' last steps too. Off, episodes run their length and nothing is."""
    # The twin trainer, the oracle baseline on the toy task (its call: the predicate), random
    # actions throughout (no update): some episodes reach the goal, some do not.
    train(TrainConfig(task="toy", out=str(tmp_path / "train"), image_size=SIZE, action_repeat=1,
                      num_train_frames=400, seed_steps=10**6, num_eval_episodes=0,
                      progress_bar=False, end_on_success=True,
                      agent=dataclasses.replace(AGENT, num_expl_steps=10**6)))  # fmt: skip
    store = EpisodeStore.open(tmp_path / "train" / REPLAY_DIR / STORE_NAME)
    ended = ran = 0
    for i in range(store.n_episodes):
        ep = store.episode(i)
        cont, called = np.asarray(ep["cont"]), np.asarray(ep["success_called"], bool)
        if called.any():  # ended at its first called step, which is terminal
            assert np.flatnonzero(called)[0] == len(called) - 1, called.tolist()
            assert cont[-1] == 0.0 and np.all(cont[:-1] == 1.0), cont.tolist()
            assert store.episode_meta(i)["episode_success"]
            ended += 1
        else:  # the toy's full 25 steps, nothing terminal
            assert len(cont) == 26 and np.all(cont == 1.0), (len(cont), cont.tolist())
            ran += 1
    assert ended >= 1 and ran >= 1, (ended, ran)

    # The learner node's driver: the operator's key (one label, the last step).
    rgb, p = np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(4, np.float32)
    for on in (True, False):
        node = OnlineLearner(OnlineConfig(out=str(tmp_path / f"node{on}"), image_size=SIZE,
                                          seed_steps=10**6, agent=AGENT, end_on_success=on))
        for key in (True, False):
            node.begin(rgb, p)
            for _ in range(3):
                node.step(rgb, p)
            node.finish(np.zeros(3), success=key)
        node.close()
        eps = EpisodeStore.open(tmp_path / f"node{on}" / "replay" / STORE_NAME)
        np.testing.assert_array_equal(eps.episode(0)["cont"], [1, 1, 1, 0] if on else [1] * 4)
        np.testing.assert_array_equal(eps.episode(1)["cont"], [1] * 4)
        # and in what updates sample: the key's step bootstraps with 0
        replay = ReplayBuffer(ReplayConfig(100, 3, 1, 0.9), (3, SIZE, SIZE), 4, 4,
                              directory=tmp_path / f"node{on}" / "replay")  # fmt: skip
        replay.restore()
        b = replay.transitions(np.array([2, 6]), np.array([0, 1]))  # each episode's last step
        np.testing.assert_allclose(b.discount, [0.0 if on else 0.9, 0.9])

    # Demonstrations end at their success: terminal there with end_on_success.
    demos = load_demo_episodes(expert_store(tmp_path / "demos.zarr", episodes=2, image_size=SIZE),
                               action_repeat=1)  # fmt: skip
    for on in (True, False):
        buf = demo_replay(demos, ReplayConfig(1000, 3, 1, 0.9), lambda img: img.transpose(2, 0, 1),
                          lambda d: np.zeros(len(d.actions)), 4, (3, SIZE, SIZE),
                          terminal_last=on)  # fmt: skip
        n = len(demos[0].actions)
        b = buf.transitions(np.array([n - 2, n - 1]), np.array([0, 0]))
        np.testing.assert_allclose(b.discount, [0.9, 0.0 if on else 0.9])
