"""Whole runs of the simulation graph that end by themselves; run by
tests/ros/test_sim_graph_runs.py inside a private network namespace (``python
sim_graph_runs_scenario.py MODE CKPT OUT [DEMOS] RESULT``):

- ``episode_rewards``: ``v2r launch sim.launch.xml episode_rewards:=true`` with a VIPER
  checkpoint: no reward node starts (it refuses VIPER), the learner scores each finished
  episode with the model itself; 2 episodes.
- ``end_on_success``: ``end_on_success:=true`` (success_source reward, the default) with a
  checkpoint whose success threshold every frame passes: the learner ends each episode just
  after the reward node's first call; 3 episodes.
- ``pointmap``: ``pointmap:=true`` with demonstrations recorded with depth (DEMOS, a fifth
  argument): the twin publishes depth aligned to colour, the learner pairs each colour frame
  with its depth, places the pixels with the demo store's camera and acts on RGB + point
  map; 2 episodes.

The graph stops after its episodes; what the replay holds goes to RESULT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sim_graph_scenario import run_to_end

# launch arguments per mode; episodes of sim_graph_scenario.STEPS (40) commands at most
MODES = {"episode_rewards": {"episode_rewards": "true", "max_episodes": 2},
         "end_on_success": {"end_on_success": "true", "max_episodes": 3},
         "pointmap": {"pointmap": "true", "max_episodes": 2, "pretrain_updates": 2}}  # fmt: skip


def main() -> int:
    mode, ckpt, out, result = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[-1])
    log = result.with_suffix(".log")
    demos = {"demos": sys.argv[4]} if len(sys.argv) == 6 else {}
    r = run_to_end(ckpt, out, log, **MODES[mode], **demos)
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.policies.replay import CALLED_KEY, CONT_KEY, REWARD_KEY, STORE_NAME

    store = out / "replay" / STORE_NAME
    if store.exists():
        s = EpisodeStore.open(store)
        r["replay_keys"] = {k: list(s.episode(0, [k])[k].shape[1:]) for k in s.data_keys}
        eps = [s.episode(i, [REWARD_KEY, CONT_KEY, CALLED_KEY]) for i in range(s.n_episodes)]
        r["episodes"] = [{"rewards": [float(x) for x in e[REWARD_KEY][1:]],
                          "cont": np.asarray(e[CONT_KEY], float).tolist(),
                          "called": np.asarray(e[CALLED_KEY], bool).tolist(),
                          "success": bool(s.episode_meta(i)["episode_success"])}
                         for i, e in enumerate(eps)]  # fmt: skip
    r["scored_here_logged"] = "episodes scored here by" in log.read_text(errors="replace")
    r["pointmap_camera"] = (out / "pointmap_camera.json").exists()
    result.write_text(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
