"""The Meta-World recorder's episode labels (rewards/metaworld_videos.py), on the real
environment and its scripted expert."""

from __future__ import annotations

import pytest

pytest.importorskip("metaworld")

from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.rewards import metaworld_videos


def test_a_success_flag_that_turns_off_again_still_labels_the_episode_successful(tmp_path):
    # handle-press-v3 scene 42: the expert presses the handle, the flag holds for a few steps
    # and is off again by the recorder's last step (first success + 5).
    store = metaworld_videos.record("handle-press-v3", 1, str(tmp_path / "hp.zarr"),
                                    first_task=42, max_steps=60)
    meta = store.episode_meta(0)
    frames = store.episode(0)[keys.IMAGE]
    assert meta["length"] < 60 and frames.shape[1:] == (84, 84, 3)

    from metaworld.policies import ENV_POLICY_MAP

    env = metaworld_videos._make_env("handle-press-v3", 32)
    try:
        tasks = metaworld_videos._task_wrapper(env)
        tasks.toggle_sample_tasks_on_reset(False)
        # the recorder's own episode, replayed at a smaller size: the same flags
        _, flags = metaworld_videos._run(env, ENV_POLICY_MAP["handle-press-v3"](),
                                         tasks.tasks[42], None, None, 60)
    finally:
        env.close()
    assert len(flags) == meta["length"]
    assert any(flags) and not flags[-1], "the scene no longer shows a flag that turns off"
    assert meta["episode_success"] is True
    assert EpisodeStore.open(tmp_path / "hp.zarr").successful_episodes() == [0]
