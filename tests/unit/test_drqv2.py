"""DrQ-v2 agent: augmentation by hand, shapes, finite losses, NaN guard, exact resume, learning."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from video2reward.policies.drqv2 import (
    DrQV2Agent,
    DrQV2Config,
    NonFiniteError,
    random_shift,
    sample_action,
)
from video2reward.policies.replay import Batch, ReplayBuffer, ReplayConfig
from video2reward.policies.toy_env import PointReachEnv

SMALL = DrQV2Config(batch_size=8, hidden_dim=32, feature_dim=16, num_expl_steps=10)


def batch(
    rng: np.random.Generator, n: int = 8, obs_shape: tuple[int, ...] = (9, 20, 20), p: int = 3
) -> Batch:
    if len(obs_shape) == 3:
        obs = rng.integers(0, 256, (n, *obs_shape), dtype=np.uint8)
        nxt = rng.integers(0, 256, (n, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.normal(size=(n, *obs_shape)).astype(np.float32)
        nxt = rng.normal(size=(n, *obs_shape)).astype(np.float32)
    return Batch(
        obs=obs,
        action=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32),
        discount=np.full(n, 0.99**3, np.float32),
        next_obs=nxt,
        proprio=rng.normal(size=(n, p)).astype(np.float32) if p else None,
        next_proprio=rng.normal(size=(n, p)).astype(np.float32) if p else None,
    )


def test_random_shift_by_hand() -> None:
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    # pad 1 (replicate); (dx, dy) = (0, 0) takes the padded image's top-left 3x3.
    out = random_shift(x, 1, shifts_px=torch.tensor([[0, 0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0, 1], [0, 0, 1], [3, 3, 4]]))
    # (dx, dy) = (2, 1): right-most columns, middle rows.
    out = random_shift(x, 1, shifts_px=torch.tensor([[2, 1]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 2, 2], [4, 5, 5], [7, 8, 8]]))
    # (1, 1) is the identity.
    torch.testing.assert_close(random_shift(x, 1, shifts_px=torch.tensor([[1, 1]])), x)


def test_random_shift_equals_integer_crop_of_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 9, 84, 84), generator=g).float()
    shifts = torch.randint(0, 9, (6, 2), generator=g)
    out = random_shift(x, 4, shifts_px=shifts)
    padded = F.pad(x, (4, 4, 4, 4), mode="replicate")
    for i, (dx, dy) in enumerate(shifts.tolist()):
        torch.testing.assert_close(
            out[i], padded[i, :, dy : dy + 84, dx : dx + 84], atol=1e-2, rtol=0
        )  # float32 grid rounding
    # Drawn shifts differ per image and stay within [0, 2 pad].
    drawn = random_shift(x, 4, generator=g)
    assert not torch.equal(drawn, x)


def test_sample_action_is_clipped_and_in_bounds() -> None:
    mean = torch.full((10_000, 4), 0.95)
    a = sample_action(mean, std=1.0, clip=0.3, generator=torch.Generator().manual_seed(0))
    assert a.max() < 1.0 and a.min() >= 0.95 - 0.3 - 1e-6


def test_stddev_schedule_counts_agent_steps() -> None:
    cfg = DrQV2Config(stddev_init=1.0, stddev_final=0.1, stddev_schedule_steps=1000)
    assert cfg.stddev(0) == 1.0
    assert cfg.stddev(500) == pytest.approx(0.55)
    assert cfg.stddev(10**6) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("obs_shape", "proprio_dim"), [((9, 20, 20), 3), ((9, 20, 20), 0), ((24,), 3)]
)
def test_update_shapes_finite_losses_and_target_lag(
    obs_shape: tuple[int, ...], proprio_dim: int
) -> None:
    agent = DrQV2Agent(SMALL, obs_shape, action_dim=4, proprio_dim=proprio_dim)
    rng = np.random.default_rng(0)
    before = [p.detach().clone() for p in agent.critic.parameters()]
    m = agent.update(batch(rng, obs_shape=obs_shape, p=proprio_dim), step=100)
    for k in ("critic_loss", "actor_loss", "critic_q1", "critic_target_q", "actor_logprob"):
        assert np.isfinite(m[k]), k
    after = list(agent.critic.parameters())
    target = list(agent.critic_target.parameters())
    moved = sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert moved > 0
    # Target = (1 - tau) * old + tau * new, per parameter.
    for b0, a, t in zip(before, after, target, strict=True):
        torch.testing.assert_close(t, b0 + 0.01 * (a.detach() - b0))
    one = batch(rng, n=1, obs_shape=obs_shape, p=proprio_dim)
    prop = one.proprio[0] if one.proprio is not None else None
    act = agent.act(one.obs[0], prop, step=100, eval_mode=False)
    assert act.shape == (4,) and act.dtype == np.float32 and np.all(np.abs(act) <= 1.0)
    e1 = agent.act(one.obs[0], prop, step=100, eval_mode=True)
    e2 = agent.act(one.obs[0], prop, step=100, eval_mode=True)
    np.testing.assert_array_equal(e1, e2)


def test_exploration_is_uniform_before_num_expl_steps() -> None:
    agent = DrQV2Agent(SMALL, (9, 20, 20), action_dim=4)
    obs = np.zeros((9, 20, 20), np.uint8)
    acts = np.stack([agent.act(obs, None, step=0, eval_mode=False) for _ in range(400)])
    assert acts.min() < -0.9 and acts.max() > 0.9  # the tanh mean of a fresh net is near 0
    assert abs(acts.mean()) < 0.1


def test_nan_batch_is_reported_and_not_trained_on() -> None:
    agent = DrQV2Agent(SMALL, (9, 20, 20), action_dim=4, proprio_dim=3)
    b = batch(np.random.default_rng(0))
    b.reward[3] = np.nan
    state = [p.detach().clone() for p in agent.critic.parameters()]
    with pytest.raises(NonFiniteError):
        agent.update(b, step=100)
    assert all(torch.equal(a, b) for a, b in zip(state, agent.critic.parameters(), strict=True))
    with pytest.raises(NonFiniteError):
        agent.act(np.zeros((9, 20, 20), np.uint8), np.array([0.0, np.nan, 0.0]), 0, False)


def test_checkpoint_then_resume_gives_identical_next_update(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    batches = [batch(rng) for _ in range(3)]
    a = DrQV2Agent(SMALL, (9, 20, 20), action_dim=4, proprio_dim=3, seed=5)
    for b in batches[:2]:
        a.update(b, step=50)
    a.save(tmp_path / "agent.pt")
    expected = a.update(batches[2], step=52)

    b_agent = DrQV2Agent(SMALL, (9, 20, 20), action_dim=4, proprio_dim=3, seed=99)
    b_agent.load(tmp_path / "agent.pt")
    got = b_agent.update(batches[2], step=52)
    assert got == expected
    for x, y in zip(a.critic.parameters(), b_agent.critic.parameters(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a.encoder.parameters(), b_agent.encoder.parameters(), strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="checkpoint is for"):
        DrQV2Agent(SMALL, (9, 24, 24), action_dim=4, proprio_dim=3).load(tmp_path / "agent.pt")


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DrQV2Config(batch_size=0)
    with pytest.raises(ValueError, match="critic_target_tau"):
        DrQV2Config(critic_target_tau=1.5)
    with pytest.raises(ValueError, match="too small"):
        DrQV2Agent(DrQV2Config(), (9, 12, 12), action_dim=4)


def _evaluate(
    agent: DrQV2Agent, env: PointReachEnv, step: int, episodes: int
) -> tuple[float, float]:
    returns, success = [], []
    for _ in range(episodes):
        obs, _ = env.reset()
        frames = [obs["img"].transpose(2, 0, 1)] * 3
        ret, done, info = 0.0, False, {}
        while not done:
            a = agent.act(np.concatenate(frames), None, step, eval_mode=True)
            obs, r, term, trunc, info = env.step(a)
            frames = [*frames[1:], obs["img"].transpose(2, 0, 1)]
            ret, done = ret + r, term or trunc
        returns.append(ret)
        success.append(info["success"])
    return float(np.mean(returns)), float(np.mean(success))


def test_learns_toy_pixel_reach_in_under_a_minute() -> None:
    """From pixels only (no proprio): the point's start is random, the goal fixed."""
    torch.set_num_threads(1)  # 2 OpenMP threads run 10-100x slower when the other core is busy
    cfg = DrQV2Config(
        batch_size=64, hidden_dim=256, lr=3e-4, num_expl_steps=250, stddev_schedule_steps=1500,
        stddev_final=0.2, update_every_steps=1, shift_pad_px=2,
    )  # fmt: skip
    env, eval_env = PointReachEnv(image_size=32, seed=0), PointReachEnv(image_size=32, seed=123)
    agent = DrQV2Agent(cfg, (9, 32, 32), action_dim=4, seed=0)
    replay = ReplayBuffer(ReplayConfig(capacity_steps=5000, discount=0.9), (3, 32, 32), 4)
    ret0, succ0 = _evaluate(agent, eval_env, 0, episodes=10)
    t0, step = time.monotonic(), 0
    for _ in range(30):
        obs, _ = env.reset()
        frames = [obs["img"].transpose(2, 0, 1)] * 3
        replay.start_episode(frames[-1])
        done, info = False, {}
        while not done:
            a = agent.act(np.concatenate(frames), None, step, eval_mode=False)
            obs, r, term, trunc, info = env.step(a)
            frames = [*frames[1:], obs["img"].transpose(2, 0, 1)]
            replay.add(a, r, frames[-1], terminated=term)
            step, done = step + 1, term or trunc
            if step >= cfg.num_expl_steps and len(replay):
                agent.update(replay.sample(cfg.batch_size), step)
        replay.end_episode(info["success"])
    ret1, succ1 = _evaluate(agent, eval_env, step, episodes=10)
    elapsed = time.monotonic() - t0
    print(
        f"toy reach: return {ret0:.2f} -> {ret1:.2f}, success {succ0:.1f} -> {succ1:.1f}, "
        f"{elapsed:.0f} s"
    )
    assert ret1 > 0.5 * ret0  # returns are negative distances: at least halved
    assert succ1 >= 0.5 > succ0


def test_policy_copy_of_a_features_agent_syncs() -> None:
    # The features agent's encoder is an Identity (no parameters): syncing its copy used to
    # raise in torch._foreach_copy_ with an empty list.
    agent = DrQV2Agent(SMALL, (12,), action_dim=4)
    snap = agent.policy_snapshot(seed=1)
    with torch.no_grad():
        next(agent.actor.parameters()).add_(1.0)
    snap.sync_from(agent)
    obs = np.ones(12, np.float32)
    np.testing.assert_array_equal(
        snap.act(obs, None, step=100, eval_mode=True), agent.act(obs, None, 100, True)
    )
