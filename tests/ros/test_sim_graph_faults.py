"""Process faults in the simulation graph: the camera, the controller and the learner killed
mid-episode, and the disk under the replay store filled, each asserting that the arm stops in
time and that nothing committed is lost (tests/ros/sim_graph_faults_scenario.py).

The scenario runs in a private user + network + mount namespace (``unshare -rnm``): the twin
binds the xArm ports, and the replay store lives on a small tmpfs mounted at ``OUT/replay``.
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
SCENARIO = Path(__file__).with_name("sim_graph_faults_scenario.py")
# Room for ~15 committed episodes of the twin's 84x84 frames; the scenario fills the rest.
TMPFS_MB = 64
DEADLINE_S, PERIOD_S = 0.5, 0.1  # the launch's watchdog_deadline_s and 1 / control_hz


def test_sim_graph_survives_process_faults_and_loses_nothing(
    reward_ckpt: Path, tmp_path: Path, run_graph_scenario: Callable[..., Any]
) -> None:
    out = tmp_path / "learner"
    (out / "replay").mkdir(parents=True)
    mount = f"mount -t tmpfs -o size={TMPFS_MB}m tmpfs {shlex.quote(str(out / 'replay'))}"
    r, rc, tail = run_graph_scenario(
        SCENARIO, [str(reward_ckpt), str(out)], tmp_path / "result.json", "58", setup=mount,
        timeout=900,
    )  # fmt: skip
    assert r, tail
    assert rc == 0, r.get("error", "") + tail
    assert r["controller_up"] and r["first_episodes"], tail

    # 1. camera process killed: no image, no command; the controller stopped the arm within
    # the driver's watchdog deadline + one control period of the last command; it stays still;
    # the graph resumes when the camera is back
    assert r["streaming_before_camera_kill"], r
    assert r["driver_streaming_at_camera_kill"], r
    assert r["images_after_camera_kill"] == 0, r
    assert r["actions_after_camera_kill"] == 0, r
    assert r["watchdog_after_camera_kill"], r
    arm = r["arm_after_camera_kill"]
    assert arm["stop_latency_s"] is not None and arm["stop_latency_s"] <= DEADLINE_S + PERIOD_S, r
    assert arm["servo_accepted_after_stop"] == arm["actions_after_stop"] == 0, arm
    assert arm["joint_drift_rad"] < 1e-3, arm
    assert r["images_after_camera_restart"] and r["resumed_after_camera_kill"], tail

    # 2. controller process killed: a fault latches and stays latched after the controller is
    # back, no state stamped after the kill, no episode committed during the fault;
    # clear_fault reconnects, learning resumes, every episode committed before is unchanged
    assert r["streaming_before_controller_kill"], r
    assert r["fault_after_controller_kill"], r
    assert r["fault_reason"].startswith(("controller connection lost", "controller not answering"))
    assert r["controller_restarted"], tail
    assert r["fault_latched_after_controller_back"], r
    assert r["state_stamped_after_kill"] == 0, r
    assert r["episodes_during_fault"] == 0, r
    assert r["clear_fault"][0], r["clear_fault"]
    assert r["resumed_after_controller_kill"] and r["joint_states_after_clear"] > 10, tail
    assert r["committed_before_controller_kill"] >= 3, r
    assert r["committed_unchanged_after_controller_kill"], r

    # 3. learner killed: the launch fails loudly and the arm is stopped within deadline +
    # period of the learner's last command; a new launch resumes with the replay unchanged
    assert r["streaming_before_learner_kill"] and r["learner_pid_found"], r
    assert r["launch_exit_after_learner_kill"] != 0, r
    arm = r["arm_after_learner_kill"]
    assert arm["stop_latency_s"] is not None and arm["stop_latency_s"] <= DEADLINE_S + PERIOD_S, r
    assert arm["servo_accepted_after_stop"] == arm["actions_after_stop"] == 0, arm
    assert arm["joint_drift_rad"] < 1e-3, arm
    assert r["committed_before_restart"] >= r["episodes_before_learner_kill"] >= 4, r
    assert r["resumed_after_learner_restart"], tail
    assert r["committed_unchanged_after_restart"], r

    # 4. the disk under the replay store fills mid-episode: the commit fails with ENOSPC, the
    # learner says so (naming the store) on its log and /diagnostics and exits, the launch
    # fails loudly, the arm is stopped, and every episode committed before reads back unchanged
    assert r["streaming_before_disk_full"], r
    assert r["fill_errno"] == errno.ENOSPC and r["free_bytes"] == 0, r
    assert r["launch_exit_after_disk_full"] != 0, r
    replay = str(out / "replay")
    assert any(replay in ln for ln in r["learner_log_errors"]), (r["learner_log_errors"], tail)
    assert any("ENOSPC" in m and replay in m for m in r["learner_status_errors"]), r
    arm = r["arm_after_disk_full"]
    assert arm["stop_latency_s"] is not None and arm["stop_latency_s"] <= DEADLINE_S + PERIOD_S, r
    assert arm["servo_accepted_after_stop"] == arm["actions_after_stop"] == 0, arm
    assert arm["joint_drift_rad"] < 1e-3, arm
    assert r["committed_before_disk_full"] > r["committed_before_restart"], r
    assert r["committed_unchanged_after_disk_full"], r
    assert r["episodes_after_space_freed"] == r["committed_before_disk_full"], r
    assert r["committed_unchanged_after_space_freed"], r
