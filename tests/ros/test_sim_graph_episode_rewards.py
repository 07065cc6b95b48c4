"""VIPER on the simulation graph (issue 19): with ``episode_rewards:=true`` no reward node runs
and the learner scores each finished episode itself
(tests/ros/sim_graph_episode_rewards_scenario.py).

The twin binds the xArm controller's ports, so the graph runs in a private network namespace
(``unshare -rn``), on an isolated ROS_DOMAIN_ID.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_episode_rewards_scenario.py")


@pytest.fixture(scope="module")
def viper_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from video2reward.rewards.synthetic import bar_dataset
    from video2reward.rewards.train import fit
    from video2reward.rewards.viper import Viper, ViperConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Viper(ViperConfig(image_size_px=32, code_grid=8, codebook_size=32, code_dim=16,
                              tokenizer_channels=16, seq_len=3, frame_skip=1, n_layer=1,
                              n_head=2, n_embd=32, batch_size=4, steps=6,
                              tokenizer_steps=3))  # fmt: skip
    fit(model, bar_dataset(4, seed=0), 6)
    return model.save(tmp_path_factory.mktemp("viper") / "viper.pt")


def test_viper_episodes_are_scored_by_the_learner_without_a_reward_node(
    viper_ckpt: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    r, rc, tail = run_graph_scenario(
        SCENARIO, [str(viper_ckpt), str(tmp_path / "learner")], tmp_path / "result.json", "66",
        timeout=600,
    )  # fmt: skip
    assert r, tail
    assert rc == 0 and "error" not in r, r.get("error", "") + tail
    assert r["learner_seen"] and r["reward_node_pid"] is None, r
    assert r["exit"] == 0, tail
    assert r["scored_here_logged"], tail
    assert r["train_summary"]["episodes"] == 2, r["train_summary"]
    rewards = r["replay_rewards"]
    assert len(rewards) == 2 and all(len(ep) == 40 for ep in rewards), rewards
    assert all(math.isfinite(x) for ep in rewards for x in ep)
    assert len({round(x, 4) for ep in rewards for x in ep}) > 10  # scored, not a constant
