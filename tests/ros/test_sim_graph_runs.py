"""Whole runs of the simulation graph that end by themselves (tests/ros/sim_graph_runs_scenario.py):

- VIPER (issue 19): with ``episode_rewards:=true`` no reward node runs and the learner scores
  each finished episode itself;
- SERL's episodes end when the success call fires (issue 17): with ``end_on_success:=true``
  the learner ends an episode on the reward node's call, and that last step is terminal in
  the replay. The operator's key ending an episode is in test_sim_graph_interventions.py.

The twin binds the xArm controller's ports, so each graph runs in a private network namespace
(``unshare -rn``), on an isolated ROS_DOMAIN_ID.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_runs_scenario.py")
STEPS = 40  # commands per episode (sim_graph_scenario.STEPS)


def run(mode: str, ckpt: Path, tmp_path: Path, domain: str,
        run_graph_scenario: Callable[..., Any], *extra: str) -> dict[str, Any]:  # fmt: skip
    """The scenario in ``mode``; its result, once the graph ended cleanly."""
    r, rc, tail = run_graph_scenario(SCENARIO, [mode, str(ckpt), str(tmp_path / "learner"),
                                                *extra],
                                     tmp_path / "result.json", domain, timeout=600)  # fmt: skip
    assert r, tail
    assert rc == 0 and "error" not in r, r.get("error", "") + tail
    assert r["learner_seen"] and r["exit"] == 0, tail
    return dict(r)


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
    r = run("episode_rewards", viper_ckpt, tmp_path, "66", run_graph_scenario)
    assert r["reward_node_pid"] is None, r
    assert r["scored_here_logged"], r
    assert r["train_summary"]["episodes"] == 2, r["train_summary"]
    rewards = [ep["rewards"] for ep in r["episodes"]]
    assert len(rewards) == 2 and all(len(ep) == STEPS for ep in rewards), rewards
    assert all(math.isfinite(x) for ep in rewards for x in ep)
    assert len({round(x, 4) for ep in rewards for x in ep}) > 10  # scored, not a constant


@pytest.fixture
def always_called(reward_ckpt: Path, tmp_path: Path) -> Path:
    """The graph tests' Rank2Reward checkpoint with a success threshold every frame passes."""
    import torch

    out = tmp_path / "reward"
    shutil.copytree(reward_ckpt, out)
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    ckpt["success_progress"] = 1e-6
    torch.save(ckpt, out / "model.pt")
    return out


def test_the_reward_nodes_call_ends_the_episode_terminal(
    always_called: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    r = run("end_on_success", always_called, tmp_path, "67", run_graph_scenario)
    eps = r["episodes"]
    assert len(eps) == r["train_summary"]["episodes"] == 3, (eps, r["train_summary"])
    for ep in eps:
        cont, called = ep["cont"], ep["called"]
        # ended within a few steps of the first scored frame, far short of STEPS commands
        assert 2 <= len(cont) <= 8 < STEPS + 1, ep
        # the last step is called and terminal; no earlier step is terminal
        assert called[-1] and ep["success"], ep
        assert cont[-1] == 0.0 and all(c == 1.0 for c in cont[:-1]), ep
    assert r["train_summary"]["success_rate"] == 1.0, r["train_summary"]


def test_the_point_map_policy_learns_from_the_twins_aligned_depth(
    reward_ckpt: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    from video2reward.sim.demos import DemoConfig, generate

    demos = tmp_path / "demos.zarr"
    generate(DemoConfig(task="reach", episodes=2, out=str(demos), depth=True), progress=False)
    r = run("pointmap", reward_ckpt, tmp_path, "68", run_graph_scenario, str(demos))
    assert r["train_summary"]["episodes"] == 2, r["train_summary"]
    assert r["pointmap_camera"], r  # the run folder records the camera its pixels were placed by
    keys = r["replay_keys"]
    # every agent frame stored: RGB in img, its point map beside it, the same size
    assert keys["img"] == keys["xyz"] and keys["img"][-1] == 3, keys
    assert all(len(ep["rewards"]) == STEPS for ep in r["episodes"]), r["episodes"]
