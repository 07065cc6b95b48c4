"""Fixtures of the sim-graph tests: a small trained reward model (trained once per session), and
``run_graph_scenario``, which runs a scenario script inside private namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def reward_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from video2reward.rewards.rank2reward import Rank2RewardConfig
    from video2reward.rewards.synthetic import synthetic_store
    from video2reward.rewards.train import TrainConfig, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reward")
    synthetic_store(
        n_expert=8, n_failed=0, size_px=40, length=16, seed=0, path=str(root / "demos.zarr")
    )
    train(
        Rank2RewardConfig(image_size_px=40, embed_dim=16, steps=30, lr=1e-3),
        TrainConfig(
            data=str(root / "demos.zarr"),
            out=str(root / "run"),
            progress_bar=False,
            device="cpu",
            threads=1,
        ),
    )
    return root / "run"


def _run_graph_scenario(
    script: Path, args: list[str], result: Path, domain_id: str, setup: str = "", **kw: Any
) -> tuple[dict[str, Any], int, str]:
    """Run ``script ARGS... RESULT`` in a new user + network + mount namespace (loopback up,
    then the shell command line ``setup``, e.g. a tmpfs mount) on an isolated ROS domain. The
    result JSON, the exit code, and the tail of the scenario's log and stderr."""
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": domain_id,
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "V2R_LAUNCH_NETNS": "1",
    }
    shell = f'ip link set lo up && {setup or "true"} && exec "$0" "$@"'
    done = subprocess.run(
        ["unshare", "-rnm", "sh", "-c", shell, sys.executable, str(script), *args, str(result)],
        env=env, capture_output=True, text=True, check=False, **kw,
    )  # fmt: skip
    log = result.with_suffix(".log")
    tail = (log.read_text(errors="replace")[-4000:] if log.exists() else "") + done.stderr[-2000:]
    r = json.loads(result.read_text()) if result.exists() else {}
    return r, done.returncode, tail


@pytest.fixture
def run_graph_scenario() -> Callable[..., tuple[dict[str, Any], int, str]]:
    return _run_graph_scenario


def _wait_matched(node: Any, pubs: Any = (), subs: Any = (), timeout_s: float = 60.0,
                  settle_s: float = 1.0) -> None:
    """Spin ``node`` until each of its publishers has a subscriber and each subscription a
    publisher, then ``settle_s`` more. Discovery is not symmetric: our side can see a match
    before the remote side has matched us, and a volatile reliable topic drops what is sent
    before both ends have matched (a first frame that never gets its reward). Publishers of a
    subscription's topic are counted from the node's graph view (``count_publishers``):
    ``Subscription.get_publisher_count`` is not in Humble's rclpy."""
    import time

    import rclpy

    deadline = time.monotonic() + timeout_s
    def unmatched() -> list[str]:
        return [p.topic_name for p in pubs if p.get_subscription_count() == 0] + [
            s.topic_name for s in subs if node.count_publishers(s.topic_name) == 0]
    while unmatched() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    assert not unmatched(), f"never matched: {unmatched()}"
    settle = time.monotonic() + settle_s
    while time.monotonic() < settle:
        rclpy.spin_once(node, timeout_sec=0.05)


@pytest.fixture
def wait_matched() -> Callable[..., None]:
    return _wait_matched
