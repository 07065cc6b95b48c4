"""Episodes the reward node's success call ends, on the simulation graph; run by
tests/ros/test_sim_graph_end_on_success.py inside a private network namespace
(``python sim_graph_end_on_success_scenario.py CKPT OUT RESULT``).

``v2r launch sim.launch.xml end_on_success:=true`` (success_source reward, the default) with a
Rank2Reward checkpoint whose success threshold every frame passes: the learner ends each
episode at the first step after the reward node's first call, and the graph stops after
MAX_EPISODES. What the replay holds goes to RESULT.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sim_graph_scenario import launch, pid_of, stop_processes, wait_for

MAX_EPISODES = 3  # of sim_graph_scenario.STEPS (40) commands at most


def main() -> int:
    ckpt, out, result = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    log = result.with_suffix(".log")
    r: dict[str, Any] = {}
    graph = launch(ckpt, out, log, end_on_success="true", max_episodes=MAX_EPISODES)
    try:
        r["learner_seen"] = wait_for(lambda: pid_of("learner") is not None, 120)
        t0 = time.monotonic()
        r["exit"] = graph.wait(timeout=400)
        r["wall_s"] = round(time.monotonic() - t0, 1)
    except subprocess.TimeoutExpired:
        r["error"] = "the graph did not finish its episodes"
    finally:
        stop_processes(graph, {})
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.policies.replay import CALLED_KEY, CONT_KEY, STORE_NAME

    summary = out / "train_summary.json"
    r["train_summary"] = json.loads(summary.read_text()) if summary.exists() else None
    store = out / "replay" / STORE_NAME
    if store.exists():
        s = EpisodeStore.open(store)
        eps = [s.episode(i, [CONT_KEY, CALLED_KEY]) for i in range(s.n_episodes)]
        r["episodes"] = [{"cont": np.asarray(e[CONT_KEY], float).tolist(),
                          "called": np.asarray(e[CALLED_KEY], bool).tolist(),
                          "success": bool(s.episode_meta(i)["episode_success"])}
                         for i, e in enumerate(eps)]  # fmt: skip
    result.write_text(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
