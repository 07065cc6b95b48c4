"""SERL's episodes end when the success call fires: with ``end_on_success:=true`` the learner
node ends an episode on the reward node's call, and that last step is terminal in the replay
(tests/ros/sim_graph_end_on_success_scenario.py). The operator's key ending an episode is in
tests/ros/test_sim_graph_interventions.py.

The twin binds the xArm controller's ports, so the graph runs in a private network namespace
(``unshare -rn``), on an isolated ROS_DOMAIN_ID.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_end_on_success_scenario.py")
STEPS = 40  # commands per episode (sim_graph_scenario.STEPS)


@pytest.fixture
def always_called(reward_ckpt: Path, tmp_path: Path) -> Path:
    """The graph tests' Rank2Reward checkpoint with a success threshold every frame passes."""
    import torch

    run = tmp_path / "reward"
    shutil.copytree(reward_ckpt, run)
    ckpt = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    ckpt["success_progress"] = 1e-6
    torch.save(ckpt, run / "model.pt")
    return run


def test_the_reward_nodes_call_ends_the_episode_terminal(
    always_called: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    r, rc, tail = run_graph_scenario(
        SCENARIO, [str(always_called), str(tmp_path / "learner")], tmp_path / "result.json",
        "67", timeout=600,
    )  # fmt: skip
    assert r, tail
    assert rc == 0 and "error" not in r, r.get("error", "") + tail
    assert r["learner_seen"] and r["exit"] == 0, tail
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
