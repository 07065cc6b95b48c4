"""The arm driver node, the emulator and a client node: three processes, one private netns.

The scenario runs as ``python this_file.py`` inside the namespace (``sim.emulator_netns``):
it starts the driver node as its own process, talks to it over ROS 2 (isolated domain,
LOCALHOST discovery) and reads ground truth from the emulator's probe.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
DOMAIN_ID = "61"


def scenario() -> dict[str, Any]:
    from diagnostic_msgs.msg import DiagnosticStatus
    from driver_client import DriverUnderTest  # type: ignore[import-not-found]
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray
    from video2reward.sim.xarm_emulator import EmulatorProbe

    r: dict[str, Any] = {}
    driver = DriverUnderTest(
        "driver_test_client", ["-p", "watchdog_deadline_s:=0.3", "-p", "state_rate_hz:=50.0"]
    )
    probe = EmulatorProbe()
    node, call = driver.node, driver.call
    got: dict[str, list[Any]] = {"joint": [], "pose": [], "status": [], "applied": []}
    node.create_subscription(JointState, "/xarm_driver/joint_states",
                             lambda m: got["joint"].append((time.monotonic(), m)), 50)
    node.create_subscription(PoseStamped, "/xarm_driver/ee_pose",
                             lambda m: got["pose"].append(m), 50)
    node.create_subscription(DiagnosticStatus, "/xarm_driver/status",
                             lambda m: got["status"].append(m), 50)
    node.create_subscription(Float32MultiArray, "/xarm_driver/applied_action",
                             lambda m: got["applied"].append(list(m.data)), 50)
    pub = node.create_publisher(Float32MultiArray, "/xarm_driver/action", 10)
    driver.spin()

    def act(a: list[float], n: int = 1, hz: float = 20.0) -> None:
        for _ in range(n):
            pub.publish(Float32MultiArray(data=a))
            time.sleep(1.0 / hz)

    def last_y() -> float:
        return float(got["pose"][-1].pose.position.y)

    try:
        r["home"] = call("home")
        time.sleep(1.0)
        t_now = time.monotonic()
        r["joint_rate_hz"] = sum(1 for t, _ in got["joint"] if t > t_now - 1.0) / 1.0
        r["joint_names"] = list(got["joint"][-1][1].name)
        y0 = last_y()
        r["home_pose"] = [got["pose"][-1].pose.position.x, y0, got["pose"][-1].pose.position.z]
        act([0.0, 1.0, 0.0, 0.0], n=10)
        time.sleep(0.1)
        r["dy_after_10_actions"] = last_y() - y0
        r["n_applied"] = len(got["applied"])
        n_applied = len(got["applied"])
        act([math.nan, 0.0, 0.0, 0.0])
        act([0.0, 0.0], n=1)
        time.sleep(0.2)
        r["applied_after_nan"] = len(got["applied"]) - n_applied
        r["refusals"] = [s.message for s in got["status"] if "refused" in s.message]
        # Watchdog: (the pauses above already let it stop the arm once) re-enable, stream,
        # then fall silent.
        r["enable_before_watchdog"] = call("enable")
        act([0.0, 0.0, 0.0, 0.0], n=3)
        r["state_at_last_action"] = probe.call("state")["state"]
        t_last = time.monotonic()
        t_stop = None
        while time.monotonic() - t_last < 1.5:
            if probe.call("state")["state"] == 4:
                t_stop = time.monotonic() - t_last
                break
            time.sleep(0.005)
        r["watchdog_stop_s"] = t_stop
        r["enable"] = call("enable")
        act([0.0, -1.0, 0.0, 0.0], n=3)
        r["n_applied_after_enable"] = len(got["applied"]) - n_applied
        r["estop"] = call("emergency_stop")
        time.sleep(0.6)
        level = got["status"][-1].level  # a byte in rclpy's DiagnosticStatus
        r["status_level_after_estop"] = ord(level) if isinstance(level, bytes) else int(level)
        r["fault_value"] = {kv.key: kv.value for kv in got["status"][-1].values}["fault"]
        r["enable_in_fault"] = call("enable")
        n = len(got["applied"])
        act([0.0, 1.0, 0.0, 0.0], n=3)
        r["applied_in_fault"] = len(got["applied"]) - n
        r["clear"] = call("clear_fault")
        r["enable_after_clear"] = call("enable")
        act([0.0, 1.0, 0.0, 0.0], n=2)
    finally:
        driver.close()
        r["node_exit"], r["node_stderr_tail"] = driver.exit_code, driver.stderr_tail
        r["final_ctrl_state"] = probe.call("state")["state"]
    return r


@pytest.fixture(scope="module")
def res() -> dict[str, Any]:
    from video2reward.sim.emulator_netns import run_json_scenario

    return run_json_scenario(__file__, timeout_s=120, ros_domain_id=DOMAIN_ID)


def test_home_service_and_state_publishing(res: dict[str, Any]) -> None:
    assert res["home"][0], res["home"]
    np.testing.assert_allclose(res["home_pose"], [0.35, 0.0, 0.20], atol=2e-3)
    assert res["joint_rate_hz"] >= 30.0
    assert res["joint_names"][:5] == [f"joint{i}" for i in range(1, 6)]


def test_actions_move_the_twin_through_the_envelope(res: dict[str, Any]) -> None:
    assert res["n_applied"] == 10
    # 10 full steps at 20 Hz, less the start ramp (2.2 mm, then ~7 mm: the envelope gains
    # at most 2 m/s^2): 90-95 mm, depending on the measured time between commands.
    assert 0.085 < res["dy_after_10_actions"] < 0.1


def test_nan_and_malformed_actions_are_refused_and_reported(res: dict[str, Any]) -> None:
    assert res["applied_after_nan"] == 0
    assert len(res["refusals"]) >= 2
    assert any("NaN" in m for m in res["refusals"])


def test_watchdog_stops_arm_when_actions_stop(res: dict[str, Any]) -> None:
    assert res["enable_before_watchdog"][0]
    assert res["state_at_last_action"] in (1, 2)  # moving or ready: not yet stopped
    # Deadline 0.3 s after the last action (sent 1/20 s before t_last), + one monitor period.
    assert res["watchdog_stop_s"] is not None and 0.2 < res["watchdog_stop_s"] < 0.3 + 0.15
    assert res["enable"][0]
    assert res["n_applied_after_enable"] == 6  # 3 before the silence, 3 after enable


def test_emergency_stop_latches_until_cleared(res: dict[str, Any]) -> None:
    assert res["estop"][0]
    assert res["status_level_after_estop"] == 2  # DiagnosticStatus.ERROR
    assert res["fault_value"] == "emergency stop"
    assert not res["enable_in_fault"][0] and "fault" in res["enable_in_fault"][1]
    assert res["applied_in_fault"] == 0
    assert res["clear"][0] and res["enable_after_clear"][0]


def test_node_shutdown_leaves_arm_stopped(res: dict[str, Any]) -> None:
    assert res["node_exit"] == 0, res["node_stderr_tail"]
    assert res["final_ctrl_state"] == 4


if __name__ == "__main__":
    print(json.dumps(scenario()), flush=True)
