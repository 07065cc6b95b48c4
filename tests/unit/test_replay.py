"""Replay: n-step targets and frame stacks against hand-computed cases, ring eviction, resume."""

from __future__ import annotations

import numpy as np
import pytest
from video2reward.policies.replay import NonFiniteError, ReplayBuffer, ReplayConfig


def frame(v: int) -> np.ndarray:
    """A 1x2x2 'image' whose pixels all equal v, so stacks are easy to read."""
    return np.full((1, 2, 2), v, np.uint8)


def fill(rb: ReplayBuffer, first: int, rewards: list[float], *, terminated: bool = False) -> None:
    """One episode: frames first, first+1, ...; action i carries value first+i in every dim."""
    rb.start_episode(frame(first), np.array([first], np.float32))
    for i, r in enumerate(rewards, start=1):
        last = i == len(rewards)
        rb.add(np.full(2, first + i, np.float32), r, frame(first + i),
               np.array([first + i], np.float32), terminated=terminated and last)  # fmt: skip
    rb.end_episode()


def make(capacity: int = 100, nstep: int = 3, discount: float = 0.5, **kw: object) -> ReplayBuffer:
    cfg = ReplayConfig(capacity_steps=capacity, frame_stack=3, nstep=nstep, discount=discount)
    return ReplayBuffer(cfg, (1, 2, 2), action_dim=2, proprio_dim=1, **kw)  # type: ignore[arg-type]


def test_nstep_return_and_discount_by_hand() -> None:
    rb = make()
    fill(rb, 0, [1.0, 2.0, 3.0, 4.0, 5.0])  # obs 0..5, r_1..r_5
    b = rb.transitions(np.array([0, 3, 4]), np.array([0, 0, 0]))
    # t=0: 1 + .5*2 + .25*3 = 2.75, bootstrap .5^3 from obs 3; action that left obs 0 is a_1.
    # t=3: only 2 steps remain: 4 + .5*5 = 6.5, bootstrap .5^2 from obs 5.
    # t=4: 1 step: 5, bootstrap .5 from obs 5.
    np.testing.assert_allclose(b.reward, [2.75, 6.5, 5.0])
    np.testing.assert_allclose(b.discount, [0.125, 0.25, 0.5])
    np.testing.assert_array_equal(b.next_obs[:, -1, 0, 0], [3, 5, 5])
    np.testing.assert_array_equal(b.action[:, 0], [1, 4, 5])
    assert b.proprio is not None and b.next_proprio is not None
    np.testing.assert_array_equal(b.proprio[:, 0], [0, 3, 4])
    np.testing.assert_array_equal(b.next_proprio[:, 0], [3, 5, 5])


def test_terminal_step_does_not_bootstrap() -> None:
    rb = make()
    fill(rb, 0, [1.0, 1.0, 1.0, 1.0], terminated=True)
    b = rb.transitions(np.array([0, 1, 2]), np.array([0, 0, 0]))
    np.testing.assert_allclose(b.reward, [1.75, 1.75, 1.5])
    # t=0 ends at obs 3 (not terminal): .5^3; t=1, t=2 reach the terminal obs 4: 0.
    np.testing.assert_allclose(b.discount, [0.125, 0.0, 0.0])


def test_frame_stack_repeats_first_frame_at_episode_start() -> None:
    rb = make()
    fill(rb, 10, [0.0] * 3)
    fill(rb, 20, [0.0] * 5)
    b = rb.transitions(np.array([4, 5, 8, 9]), np.array([1, 1, 1, 1]))
    # Episode 2 starts at absolute index 4 (frame 20).
    np.testing.assert_array_equal(
        b.obs[:, :, 0, 0], [[20, 20, 20], [20, 20, 21], [22, 23, 24], [23, 24, 25]]
    )
    assert b.obs.shape == (4, 3, 2, 2)


def test_sample_covers_every_transition_and_only_those() -> None:
    rb = make(nstep=1)
    fill(rb, 0, [0.0] * 3)  # 3 transitions
    fill(rb, 50, [0.0] * 2)  # 2 transitions
    assert len(rb) == 5
    b = rb.sample(2000)
    seen = set(b.obs[:, -1, 0, 0].tolist())
    assert seen == {0, 1, 2, 50, 51}
    counts = np.bincount(b.obs[:, -1, 0, 0], minlength=52)[[0, 1, 2, 50, 51]]
    assert counts.min() > 2000 / 5 * 0.8  # uniform over transitions, not over episodes


def test_ring_evicts_whole_oldest_episodes() -> None:
    rb = make(capacity=10)
    fill(rb, 0, [0.0] * 3)  # 4 steps
    fill(rb, 100, [0.0] * 3)  # 4 steps
    fill(rb, 200, [0.0] * 3)  # needs slots of episode 1 -> episode 1 evicted
    assert rb.n_episodes == 2
    assert len(rb) == 6
    firsts = set(rb.sample(500).obs[:, -1, 0, 0].tolist())
    assert firsts == {100, 101, 102, 200, 201, 202}


def test_nan_reward_is_rejected_and_not_stored() -> None:
    rb = make()
    rb.start_episode(frame(0), np.zeros(1, np.float32))
    rb.add(np.zeros(2), 1.0, frame(1), np.zeros(1, np.float32))
    with pytest.raises(NonFiniteError):
        rb.add(np.zeros(2), float("nan"), frame(2), np.zeros(1, np.float32))
    with pytest.raises(NonFiniteError):
        rb.add(np.zeros(2), 0.0, frame(2), np.array([np.inf], np.float32))
    rb.end_episode()
    b = rb.sample(64)
    assert np.isfinite(b.reward).all()
    assert len(rb) == 1


def test_features_observations_stack_along_the_vector() -> None:
    cfg = ReplayConfig(capacity_steps=50, frame_stack=2, nstep=1, discount=0.9)
    rb = ReplayBuffer(cfg, (3,), action_dim=1)
    rb.start_episode(np.zeros(3, np.float32))
    rb.add(np.zeros(1), 1.0, np.ones(3, np.float32))
    rb.end_episode()
    b = rb.sample(4)
    assert b.obs.shape == (4, 6) and b.obs.dtype == np.float32
    np.testing.assert_array_equal(b.next_obs[0], [0, 0, 0, 1, 1, 1])
    with pytest.raises(NonFiniteError):
        rb.start_episode(np.array([0, np.nan, 0], np.float32))


def test_restore_after_crash_reloads_every_finished_episode(tmp_path: object) -> None:
    rb = make(directory=tmp_path, seed=3)
    fill(rb, 0, [1.0, 2.0, 3.0])
    fill(rb, 10, [4.0, 5.0], terminated=True)
    rb.start_episode(frame(30), np.zeros(1, np.float32))  # unfinished when the "crash" happens
    rb.add(np.zeros(2), 9.0, frame(31), np.zeros(1, np.float32))
    del rb

    again = make(directory=tmp_path, seed=3)
    assert again.restore() == 5
    fresh = make(seed=3)
    fill(fresh, 0, [1.0, 2.0, 3.0])
    fill(fresh, 10, [4.0, 5.0], terminated=True)
    a, b = again.sample(64), fresh.sample(64)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert 31 not in a.obs  # the unfinished episode is not resurrected


def test_pixels_only_replay_persists_and_restores(tmp_path: object) -> None:
    """proprio_dim=0 (train proprio=false): the store gets no zero-width proprio array (zarr
    cannot chunk one) and a restart restores the same transitions."""
    cfg = ReplayConfig(capacity_steps=100, frame_stack=3, nstep=3, discount=0.5)

    def pixels_only(**kw: object) -> ReplayBuffer:
        return ReplayBuffer(cfg, (1, 2, 2), action_dim=2, proprio_dim=0, seed=3, **kw)  # type: ignore[arg-type]

    rb = pixels_only(directory=tmp_path)
    for first, rewards in ((0, [1.0, 2.0, 3.0]), (10, [4.0, 5.0])):
        rb.start_episode(frame(first))
        for i, r in enumerate(rewards, start=1):
            rb.add(np.full(2, first + i, np.float32), r, frame(first + i))
        rb.end_episode()
    assert "proprio" not in rb.store.data_keys  # type: ignore[union-attr]
    again = pixels_only(directory=tmp_path)
    assert again.restore() == 5
    a, b = again.sample(64), rb.sample(64)
    for x, y in zip(a, b, strict=True):
        if x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x, y)


def test_stored_rows_hold_the_action_taken_at_them_and_old_stores_still_restore(
    tmp_path: object,
) -> None:
    """The store is an episode store like the demos' (data/keys.py): row t holds observation t
    and the action taken after it, the last row a zero action, so an export (LeRobot) needs no
    shift. A store written before (no layout attribute: row t held the action into t) restores
    and takes new episodes in its own layout."""
    from pathlib import Path

    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore, shift_rows
    from video2reward.policies.replay import ACTION_ROW_ATTR, INTERVENED_KEY

    rb = make(directory=tmp_path, seed=3)
    rb.start_episode(frame(0), np.array([0], np.float32))
    for i in (1, 2, 3):
        rb.add(np.full(2, i, np.float32), float(i), frame(i), np.array([i], np.float32))
    rb.end_episode(intervened=np.array([False, True, False]))
    store = EpisodeStore.open(Path(str(tmp_path)) / "episodes.zarr")
    ep = store.episode(0)
    np.testing.assert_array_equal(ep[keys.ACTION][:, 0], [1, 2, 3, 0])  # taken at rows 0-2
    np.testing.assert_array_equal(ep[INTERVENED_KEY], [False, True, False, False])
    np.testing.assert_array_equal(ep[keys.IMAGE][:, 0, 0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(ep["reward"], [0, 1, 2, 3])  # of the state at row t
    again = make(directory=tmp_path, seed=3)
    assert again.restore() == 3
    (ops,) = again.restored_steps
    np.testing.assert_array_equal(ops.intervened, [False, True, False])
    np.testing.assert_array_equal(np.stack(ops.actions)[:, 0], [1, 2, 3])
    a, b = again.sample(32), rb.sample(32)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)

    # The layout before: rewrite the store's rows as it held them, without the attribute.
    old_dir = Path(str(tmp_path)) / "old"
    old = EpisodeStore.create(old_dir / "episodes.zarr", fps=1.0, source="replay")
    shifted = {k: np.asarray(v) for k, v in ep.items()}
    shift_rows(shifted, (keys.ACTION, INTERVENED_KEY), down=True)
    old.append_episode(shifted, task="", success=False, kind="agent")
    assert ACTION_ROW_ATTR not in old.attrs
    resumed, same = make(directory=old_dir, seed=3), make(directory=tmp_path, seed=3)
    assert resumed.restore() == same.restore() == 3
    for x, y in zip(resumed.sample(32), same.sample(32), strict=True):
        np.testing.assert_array_equal(x, y)
    fill(resumed, 10, [4.0])  # appended in the store's own layout
    new_ep = EpisodeStore.open(old_dir / "episodes.zarr").episode(1)
    np.testing.assert_array_equal(new_ep[keys.ACTION][:, 0], [0, 11])
