"""Human interventions in the simulation graph end to end (issue 17, item 3 and its bad input):
an operator takes over through a real teleop node, hands back and labels the episode a success,
which ends it (``end_on_success``, HIL-SERL); later the operator's device dies while they drive
(tests/ros/sim_graph_interventions_scenario.py).

The twin binds the xArm controller's ports, so the graph, the teleop node and the observer run
in a private network namespace (``unshare -rn``), on an isolated ROS_DOMAIN_ID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_interventions_scenario.py")
DEADLINE_S, PERIOD_S = 0.5, 0.1  # the launch's watchdog_deadline_s and 1 / control_hz
STEPS = 40  # commands per episode (sim_graph_scenario.STEPS)
# The teleop node's command for the operator's Twist (0.03, -0.015, 0) m/s at rate_hz 30 and
# max_step_m 0.01: v / (rate * max_step); no terminal, so no gripper key: -1.
OPERATOR_CMD = np.array([0.1, -0.05, 0.0, -1.0])


def is_operator(a: list[float]) -> bool:
    return len(a) == 4 and bool(np.allclose(a, OPERATOR_CMD, atol=1e-6))


def test_operator_takes_over_labels_and_loses_the_device(
    reward_ckpt: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    r, rc, tail = run_graph_scenario(
        SCENARIO, [str(reward_ckpt), str(tmp_path / "learner")], tmp_path / "result.json", "59",
        timeout=600,
    )  # fmt: skip
    assert r, tail
    assert rc == 0, r.get("error", "") + tail
    assert r["first_episode"], tail

    # 1. the operator drives ~1 s mid-episode through the teleop node, lets go, labels success
    assert r["streaming_before_takeover"] and r["handed_back"], r
    assert r["label"][0], r["label"]
    assert r["label_in_flagged_episode"], r  # (else retried on a later episode, at most twice)
    ep = r["episode"]
    flags = np.asarray(ep["intervened"], bool)
    actions = np.asarray(ep["actions"])
    assert not ep["note"], ep  # nothing went wrong
    # the success key ended the episode at once (end_on_success): short of its STEPS commands,
    # its last step terminal (nothing bootstraps past the success), every other step not
    cont = np.asarray(ep["cont"])
    assert ep["rows"] < STEPS + 1, ep["rows"]
    assert cont[-1] == 0.0 and np.all(cont[:-1] == 1.0), cont.tolist()
    # ~1.3 s of driving (1 s of Twists + the teleop node's 0.3 s twist timeout) at 10 Hz: the
    # flagged steps are one take-over, not the whole episode
    assert 3 <= flags.sum() <= 25, flags.tolist()
    assert np.sum(np.diff(flags.astype(int)) == 1) + flags[0] <= 2, flags.tolist()
    # what the teleop node sent was the operator's command, and so is every flagged step's
    # recorded action; the other steps are the policy's
    assert r["teleop_commands"] and all(is_operator(v) for v in r["teleop_commands"]), r
    assert all(is_operator(a) for a in actions[flags]), actions[flags].tolist()
    # (row t holds the command sent after observation t; the last row, the final observation,
    # none)
    assert not any(is_operator(a) for a in actions[:-1][~flags[:-1]]), actions.tolist()
    assert not flags[-1] and not actions[-1].any(), (flags.tolist(), actions.tolist())
    # the driver received them (the learner forwarded the operator's command); the take-over
    # came mid-episode, and the key's end after it
    assert r["driver_commands_operator"] >= 3, r
    assert 1 <= np.flatnonzero(flags).max() < min(STEPS - 3, ep["rows"] - 1), flags.tolist()
    # the episode's success is the operator's label (success_source operator: unlabelled
    # episodes are failures)
    assert ep["success"], ep

    # 2. the operator's device dies while they drive
    assert r["streaming_before_lost"] and r["operator_driving_at_kill"], r
    assert r["driver_streaming_at_kill"], r  # (else retried on a later episode, at most twice)
    # the learner sent a zero command, then nothing: the controller stopped the arm within the
    # driver's watchdog deadline + one control period of that last command (its own stop log)
    assert r["last_command"] == [0.0, 0.0, 0.0, 0.0], r
    assert r["last_command_after_kill_s"] is not None and r["last_command_after_kill_s"] < 2.0, r
    assert r["stop_latency_s"] is not None and r["stop_latency_s"] <= DEADLINE_S + PERIOD_S, r
    # the episode is committed with its note and every step it recorded, the operator's flagged
    assert r["lost_episode_committed"], r
    lost = r["lost_episode"]
    assert "operator device lost" in lost["note"], lost["note"]
    assert r["kept_steps_logged"] and lost["rows"] == r["kept_steps_logged"][-1] + 1, r
    assert 2 <= lost["rows"] < STEPS + 1, lost["rows"]
    assert all(c == 1.0 for c in lost["cont"]), lost["cont"]  # no key: nothing terminal
    lost_flags = np.asarray(lost["intervened"], bool)
    assert lost_flags[-2], lost_flags.tolist()  # the operator sent the last command
    assert all(is_operator(a) for a in np.asarray(lost["actions"])[lost_flags])
    # nothing committed before changed
    assert r["committed_before_lost"] >= 2, r
    assert r["committed_unchanged_after_lost"], r
    # while the device is gone: no episode, no command, the controller moves nothing
    assert r["episodes_while_lost"] == 0 and r["state_episodes_while_lost"] == 0, r
    assert r["commands_while_lost"] == 0, r
    assert r["controller_motions_while_lost"] == r["controller_accepted_while_lost"] == 0, r
    assert r["joint_drift_while_lost_rad"] < 1e-3, r
    # the teleop node is back: episodes resume, the lost episode unchanged
    assert r["resumed_after_teleop_restart"], tail
    assert r["committed_unchanged_after_resume"], r

    # 3. the run's summary counts what the replay holds
    assert r["launch_exit"] == 0, tail
    s, rp = r["train_summary"], r["replay"]
    assert s is not None, tail
    assert s["episodes"] == rp["episodes"], (s, rp)
    assert s["intervened_steps"] == rp["intervened_steps"] >= flags.sum() + lost_flags.sum()
    assert s["operator_lost_episodes"] == rp["lost_episodes"] >= 1, (s, rp)
    assert s["takeovers"] >= rp["takeovers"] >= 2, (s, rp)  # dropped episodes' count too
    assert rp["operator_rows_not_operator_cmd"] == 0, rp
    # only labelled episodes succeeded
    labelled = {a["labelled_episode"] for a in r["label_in_flagged_episode_earlier_attempts"]}
    labelled.add(r["labelled_episode"])
    assert r["labelled_episode"] in rp["successes"], rp
    assert set(rp["successes"]) <= labelled, (rp, labelled)
    assert s["success_rate"] == pytest.approx(len(rp["successes"]) / rp["episodes"]), s
    assert s["operator_labels"] and not s["oracle_in_learning"], s
