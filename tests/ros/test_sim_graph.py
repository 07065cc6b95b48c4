"""The simulation launch file end to end, with faults: CI runs the graph the lab launches.

The twin binds the xArm controller's ports, so the whole graph and its observer run in a
private network namespace (``unshare -rn``), on an isolated ROS_DOMAIN_ID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_scenario.py")


def test_sim_graph_learns_survives_faults_and_resumes(
    reward_ckpt: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    result = tmp_path / "result.json"
    r, rc, tail = run_graph_scenario(
        SCENARIO, [str(reward_ckpt), str(tmp_path / "learner")], result, "57", timeout=900
    )
    assert r, tail
    assert rc == 0, r.get("error", "") + tail
    # images flow, rewards come back with their image's stamp, the arm moves, state persists
    assert r["first_episodes"], tail
    assert r["n_images"] > 50 and r["n_rewards"] > 50
    assert r["rewards_match_images"], r["rewards_unmatched"]
    # the learner says when a policy acts (episodes) and when not (pretraining, resets)
    assert r["acting_values"] == [False, True], r["acting_values"]
    assert r["arm_moved_rad"] > 0.02
    assert r["checkpoint"]
    # the reward node dies: no commands while it is gone, the driver's watchdog stops the arm,
    # and learning resumes once the launcher has respawned it
    assert r["streaming_before_reward_kill"] and r["reward_pid_found"]
    # ...into a driver that was sending commands (else the kill was retried, at most twice)
    assert r["driver_streaming_at_reward_kill"], r
    assert r["action_gap_after_reward_kill_s"] >= 2.0, r
    assert r["watchdog_after_reward_kill"], r
    # stopped within the watchdog deadline (0.5 s) + one control period (10 Hz) of the last
    # command (the driver reports a stop on its next 50 Hz state tick)
    assert r["stop_latency_after_reward_kill_s"] <= 0.5 + 0.1, r
    assert r["resumed_after_reward_kill"], tail
    # a camera stall stops the arm the same way
    assert r["streaming_before_stall"] and r["paused"] and r["unpaused"]
    assert r["driver_streaming_at_stall"], r
    assert r["action_gap_during_stall_s"] >= 1.5, r
    assert r["watchdog_after_stall"], r
    assert r["stop_latency_after_stall_s"] <= 0.5 + 0.1, r
    # the link to the controller drops mid-episode: a fault latches, the driver's state stops,
    # the episode is dropped; clear_fault reconnects and learning resumes
    assert r["streaming_before_drop"] and r["connections_dropped"] >= 2, r
    assert r["fault_after_drop"], r
    assert r["fault_reason"].startswith(("controller connection lost", "controller not answering"))
    assert r["joint_states_after_drop"] == 0, r
    assert r["episodes_during_fault"] == 0, r
    assert r["clear_fault"][0], r["clear_fault"]
    assert r["resumed_after_clear"] and r["joint_states_after_clear"] > 10, tail
    assert r["resumed_after_stall"], tail
    # the learner dies: the launch fails loudly; a restart resumes with no replay lost
    assert r["launch_exit_after_learner_kill"] != 0
    assert r["replay_before_restart"] >= r["episodes_before_learner_kill"] >= 3
    assert r["restart_exit"] == 0, tail
    assert r["replay_after_restart"] == r["replay_before_restart"] + 1
    # every episode committed before the kill reads back unchanged (arrays and metadata)
    assert r["committed_unchanged_after_restart"], r
    # one full episode (40 steps after its first frame) was committed; the step counter went on
    # from the checkpoint (episodes dropped on a loaded machine count their steps too)
    assert r["last_episode_rows"] == 41
    assert r["steps_added_after_restart"] >= 40
    assert r["train_summary"]["episodes"] == 1
    # the restart run was recorded (with_bag:=true): an MCAP bag the mcap reader reads whole,
    # with the graph's images (compressed, decodable), rewards, commands and episode markers
    bag = r["bag"]
    assert bag["exists"] and bag["truncated"] is None, bag
    counts = bag["counts"]
    assert counts.get("/camera/color/image_raw/compressed", 0) > 40, counts
    assert counts.get("/reward/reward", 0) > 40 and counts.get("/xarm_driver/action", 0) >= 40
    assert counts.get("/bag/episode", 0) >= 2, counts  # the episode's start and end
    assert bag["log_times_increasing"] and bag["images_decoded"] == 5, bag
    # a fault nobody clears (fault_timeout_s 10 s): the learner ends the launch with the
    # driver's reason instead of retrying enable forever
    assert r["learning_before_unclear_fault"], tail
    assert r["exit_after_unclear_fault"] not in (0, None), r
    assert 10.0 <= r["exit_after_unclear_fault_s"] <= 90.0, r
    # whichever sees the dropped link first latches (as for the drop above): the closed
    # socket ("connection lost") or the state read that failed on it ("not answering")
    reason = r["unclear_fault_reason"]
    assert "refused enable" in reason, reason
    assert "controller connection lost" in reason or "controller not answering" in reason, reason
