"""Scripted experts succeed on seeded randomized episodes; failures are labelled failures."""

import numpy as np
import pytest
from video2reward.sim.demos import record_episode
from video2reward.sim.env import make_env

N_EPISODES = 20


@pytest.mark.parametrize("task", ["reach", "push", "button-press"])
def test_expert_succeeds_in_at_least_95_percent_of_seeded_episodes(task):
    env = make_env(task, image_size=32)
    results = [record_episode(env, "expert", seed, noise=0.05)[1] for seed in range(N_EPISODES)]
    env.close()
    assert np.mean(results) >= 0.95, f"{task}: {np.mean(results):.0%} success"


@pytest.mark.parametrize("task", ["reach", "push", "button-press"])
def test_failed_episodes_mostly_fail_and_are_labelled_as_such(task):
    env = make_env(task, image_size=32)
    outcomes = []
    for seed in range(6):
        data, ok, _ = record_episode(env, "failed", 100 + seed, noise=0.0)
        assert ok == bool(data["success"].any())  # the label is the predicate, not the intent
        outcomes.append(ok)
    env.close()
    assert np.mean(outcomes) <= 0.2


def test_initial_states_are_randomized_by_seed():
    env = make_env("push", image_size=32)
    starts = []
    for seed in range(4):
        env.reset(seed=seed)
        starts.append(np.concatenate([env.task.block_pos(env.twin), env.task.goal_pos(env.twin)]))
    env.close()
    assert len({tuple(np.round(s, 4)) for s in starts}) == 4


@pytest.mark.parametrize("task", ["reach", "push", "button-press"])
def test_goal_image_shows_the_solved_scene_and_leaves_the_episode_untouched(task):
    def rollout(with_goal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        env = make_env(task, image_size=48)
        obs, _ = env.reset(seed=7)
        goal = env.goal_image(size=64) if with_goal else None
        rng = np.random.default_rng(0)
        for _ in range(4):
            obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        q = env.twin.data.qpos.copy()
        env.close()
        return obs["img"], q, goal

    img, q, _ = rollout(False)
    img_g, q_g, goal = rollout(True)
    np.testing.assert_array_equal(img, img_g)  # the episode continues exactly as before
    np.testing.assert_allclose(q, q_g, atol=1e-12)
    assert goal is not None and goal.shape == (64, 64, 3) and goal.dtype == np.uint8

    # the goal frame is the scene solved: replaying the expert to success renders the same
    env = make_env(task, image_size=64)
    env.reset(seed=7)
    start = env.render()
    from video2reward.sim.experts import make_policy

    expert = make_policy(env, "expert", np.random.default_rng(0))
    expert.reset()
    obs = env._obs()
    for _ in range(env.max_episode_steps):
        if env.task.success(env.twin):
            break
        obs, *_ = env.step(expert(obs))
    assert env.task.success(env.twin)
    np.testing.assert_array_equal(env.render(), goal)
    assert np.abs(goal.astype(int) - start).mean() > 1.0  # and it differs from the start
    env.close()
