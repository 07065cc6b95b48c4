"""VIPER on the simulation graph; run by tests/ros/test_sim_graph_episode_rewards.py inside a
private network namespace (``python sim_graph_episode_rewards_scenario.py CKPT OUT RESULT``).

``v2r launch sim.launch.xml episode_rewards:=true`` with a VIPER checkpoint: no reward node
starts (it refuses VIPER), the learner scores each finished episode with the model itself, and
the graph stops after MAX_EPISODES. What was seen goes to RESULT.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sim_graph_scenario import launch, pid_of, stop_processes, wait_for

MAX_EPISODES = 2  # of sim_graph_scenario.STEPS (40) commands each


def main() -> int:
    ckpt, out, result = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    log = result.with_suffix(".log")
    r: dict[str, Any] = {}
    graph = launch(ckpt, out, log, episode_rewards="true", max_episodes=MAX_EPISODES)
    try:
        r["learner_seen"] = wait_for(lambda: pid_of("learner") is not None, 120)
        r["reward_node_pid"] = pid_of("reward")
        t0 = time.monotonic()
        r["exit"] = graph.wait(timeout=400)
        r["wall_s"] = round(time.monotonic() - t0, 1)
    except subprocess.TimeoutExpired:
        r["error"] = "the graph did not finish its episodes"
    finally:
        stop_processes(graph, {})
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.policies.replay import STORE_NAME

    summary = out / "train_summary.json"
    r["train_summary"] = json.loads(summary.read_text()) if summary.exists() else None
    store = out / "replay" / STORE_NAME
    if store.exists():
        s = EpisodeStore.open(store)
        r["replay_rewards"] = [
            [float(x) for x in s.episode(i, ["reward"])["reward"][1:]] for i in range(s.n_episodes)
        ]
    r["scored_here_logged"] = "episodes scored here by viper" in log.read_text(errors="replace")
    result.write_text(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
