"""The real xArm SDK client and our driver against the twin-backed emulator, end to end.

Each scenario below runs as ``python this_file.py <scenario>`` inside a private network
namespace next to a fresh emulator (``sim.emulator_netns``), prints one JSON line of
measurements, and the test asserts on it. Ground truth comes from the emulator's probe (the
twin's own joint angles and the log of every motion command the controller received).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
from video2reward.robot.safety import EnvelopeConfig

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode != 0,
    reason="needs unprivileged user + network namespaces (unshare -rn)",
)


def _run(scenario: str) -> dict[str, Any]:
    from video2reward.sim.emulator_netns import run_with_emulator

    proc = run_with_emulator([sys.executable, __file__, scenario], timeout_s=90)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# ----------------------------------------------------------------------------- scenarios
def scenario_sdk() -> dict[str, Any]:
    """The unmodified SDK: enable, reset move, servo stream, read state, errors, e-stop."""
    from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk
    from video2reward.sim.xarm_emulator import EmulatorProbe
    from xarm.wrapper import XArmAPI

    r: dict[str, Any] = {}
    probe = EmulatorProbe()
    arm = XArmAPI("127.0.0.1", is_radian=True)
    r["version"] = arm.version
    arm.set_tcp_offset([0, 0, GRIPPER_TCP_OFFSET_M * 1000, 0, 0, 0], wait=False)
    r["enable"] = [arm.motion_enable(True), arm.set_mode(0), arm.set_state(0)]
    r["set_position"] = arm.set_position(400, 50, 150, math.pi, 0, 0, speed=250, wait=True)
    twin = probe.call("state")
    r["twin_tcp_after_reset_mm"] = (fk(np.array(twin["joint_pos"]), GRIPPER_TCP_OFFSET_M)[:3, 3]
                                    * 1000).tolist()
    r["get_position"] = arm.get_position()[1]
    r["get_servo_angle"] = arm.get_servo_angle()[1][:5]
    r["twin_joints"] = twin["joint_pos"]
    arm.set_mode(1)
    arm.set_state(0)
    pose = arm.get_position()[1]
    codes = []
    for _ in range(20):  # 20 x 2 mm along -y at 50 Hz
        pose[1] -= 2.0
        codes.append(arm.set_servo_cartesian(pose))
        time.sleep(0.02)
    time.sleep(0.1)
    r["servo_codes"] = codes
    r["twin_tcp_after_servo"] = probe.call("state")["tcp_pose"]
    r["gripper"] = [arm.set_gripper_enable(True), arm.set_gripper_position(300, wait=True)]
    r["gripper_pos"] = arm.get_gripper_position()[1]
    # Unreachable target in position mode -> controller error 21, arm stopped.
    arm.set_mode(0)
    arm.set_state(0)
    r["unreachable_code"] = arm.set_position(1200, 0, 200, math.pi, 0, 0, wait=True)
    r["unreachable_err"] = arm.get_err_warn_code()[1]
    r["unreachable_state"] = arm.get_state()[1]
    arm.clean_error()
    arm.motion_enable(True)
    arm.set_state(0)
    r["after_clean"] = [arm.get_err_warn_code()[1], arm.get_state()[1]]
    # Emergency stop mid-move: the twin stops where it is.
    arm.set_position(300, -100, 250, math.pi, 0, 0, speed=100, wait=False)
    time.sleep(0.3)
    arm.emergency_stop()
    s1 = probe.call("state")
    time.sleep(0.3)
    s2 = probe.call("state")
    r["estop_state"] = s2["state"]
    r["estop_drift_rad"] = float(np.max(np.abs(np.subtract(s1["joint_pos"], s2["joint_pos"]))))
    r["servo_while_stopped"] = arm.set_servo_cartesian(arm.get_position()[1])
    arm.disconnect()
    return r


def scenario_driver() -> dict[str, Any]:
    """Our driver: clamp, step cut, NaN refused, watchdog, latched fault, reset, e-stop."""
    from video2reward.robot.safety import (
        EnvelopeConfig,
        InvalidCommandError,
        LatchedFaultError,
        WatchdogConfig,
        WorkspaceBox,
    )
    from video2reward.robot.xarm_driver import ArmNotReadyError, XArmDriver, XArmDriverConfig
    from video2reward.sim.xarm_emulator import EmulatorProbe
    from video2reward.sim.xarm_protocol import FN_MOVE_SERVO_CART

    box = WorkspaceBox(lo_m=(0.25, -0.15, 0.05), hi_m=(0.45, 0.15, 0.25))
    cfg = XArmDriverConfig(envelope=EnvelopeConfig(box=box, max_step_m=0.01, max_speed_m_s=0.5),
                           watchdog=WatchdogConfig(deadline_s=0.2))
    probe = EmulatorProbe()
    r: dict[str, Any] = {}
    with XArmDriver(cfg) as arm:
        # During a reset move: state stays readable, streaming and enable are refused.
        mover = threading.Thread(target=arm.move_to, args=(np.array([0.30, 0.10, 0.15]),))
        mover.start()
        time.sleep(0.3)
        xs = []
        for _ in range(5):
            xs.append(arm.state().ee_pos_m[0])
            time.sleep(0.05)
        during = []
        for call in (lambda: arm.send_action([0, 0, 0, 0]), arm.enable):
            try:
                call()
                during.append("accepted")
            except ArmNotReadyError:
                during.append("refused")
        mover.join()
        r["x_during_reset"], r["calls_during_reset"] = xs, during
        s = arm.move_to(np.array([0.40, 0.0, 0.20]), gripper_open_frac=1.0)
        r["reset_pos"] = s.ee_pos_m.tolist()
        probe.call("clear_log")
        applied, clamped = [], []
        for _ in range(12):  # push +x, 2.5 cm past the box face at 0.45
            cmd = arm.send_action([1.0, 0.0, 0.0, -1.0])
            applied.append(cmd.applied_action.tolist())
            clamped.append(cmd.clamped)
            time.sleep(1 / 30)
        for _ in range(3):
            cmd = arm.send_action([0.0, 0.0, 1.4, -1.0])  # asks for 1.4 steps, gets <= 1
            applied.append(cmd.applied_action.tolist())
            time.sleep(1 / 30)
        r["applied"], r["clamped"] = applied, clamped
        r["pos_after_push"] = arm.state().ee_pos_m.tolist()
        n_log = len(probe.call("log")["motion_log"])
        refused = []
        for bad in ([math.nan, 0, 0, 0], [0, math.inf, 0, 0], [0, 0, 0], "x", [0, 0, 1e30, 0]):
            try:
                arm.send_action(bad)
            except InvalidCommandError:
                refused.append(True)
        r["refused"], r["rejected_commands"] = refused, arm.rejected_commands
        r["log_grew_on_nan"] = len(probe.call("log")["motion_log"]) - n_log
        # Watchdog: stop sending; the controller must be stopped within the deadline.
        arm.send_action([0, 0, -1.0, -1.0])
        t_last = time.monotonic()
        t_stop = None
        while time.monotonic() - t_last < 1.0:
            if probe.call("state")["state"] == 4:
                t_stop = time.monotonic() - t_last
                break
            time.sleep(0.005)
        r["watchdog_stop_s"], r["watchdog_stops"] = t_stop, arm.watchdog_stops
        try:
            arm.send_action([0, 0, 0, 0])
            r["send_after_watchdog"] = "sent"
        except ArmNotReadyError:
            r["send_after_watchdog"] = "refused"
        arm.enable()
        arm.send_action([0, 0, 0, 0])
        # enable() restarts the watchdog: commands that stopped while enable ran must not stop
        # the arm it just enabled. Holding the driver's lock stands in for enable's SDK round
        # trips outlasting the deadline (the monitor cannot fire meanwhile).
        stops = arm.watchdog_stops
        with arm._lock:
            time.sleep(0.3)
            arm.enable()
        time.sleep(0.05)
        r["stops_after_slow_enable"] = arm.watchdog_stops - stops
        try:
            arm.send_action([0, 0, 0, 0])
            r["send_after_slow_enable"] = "sent"
        except ArmNotReadyError:
            r["send_after_slow_enable"] = "refused"
        # A controller error (collision) latches a fault; nothing moves until reset_fault.
        probe.call("inject_error", code=31)
        time.sleep(0.15)
        r["fault"] = arm.fault.reason
        n_log = len(probe.call("log")["motion_log"])
        try:
            arm.send_action([0, 0, 0, 0])
            r["send_in_fault"] = "sent"
        except LatchedFaultError:
            r["send_in_fault"] = "refused"
        try:
            arm.enable()
            r["enable_in_fault"] = "enabled"
        except LatchedFaultError:
            r["enable_in_fault"] = "refused"
        r["log_grew_in_fault"] = len(probe.call("log")["motion_log"]) - n_log
        arm.reset_fault()
        arm.enable()
        r["after_reset"] = arm.send_action([0, 0, 0.5, 0]).applied_action.tolist()
        arm.emergency_stop()
        r["estop_fault"] = arm.fault.reason
        r["estop_ctrl_state"] = probe.call("state")["state"]
        log = probe.call("log")["motion_log"]
    servo = [e for e in log if e["fn"] == FN_MOVE_SERVO_CART]
    p = np.array([e["pose"][:3] for e in servo]) / 1000.0
    r["n_servo"] = len(servo)
    inside = (p >= np.array(box.lo_m) - 1e-4) & (p <= np.array(box.hi_m) + 1e-4)
    r["all_in_box"] = bool(np.all(inside))
    r["max_step_m"] = float(np.max(np.linalg.norm(np.diff(p, axis=0), axis=1)))
    r["all_finite"] = bool(np.all(np.isfinite([e["pose"] for e in log])))
    r["final_state"] = probe.call("state")["state"]
    return r


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def sdk() -> dict[str, Any]:
    return _run("sdk")


@pytest.fixture(scope="module")
def drv() -> dict[str, Any]:
    return _run("driver")


def test_sdk_connects_and_reset_moves_twin(sdk: dict[str, Any]) -> None:
    assert sdk["version"].endswith("v2.5.0")
    assert sdk["enable"] == [0, 0, 0]
    assert sdk["set_position"] == 0
    np.testing.assert_allclose(sdk["twin_tcp_after_reset_mm"], [400, 50, 150], atol=1.0)
    np.testing.assert_allclose(sdk["get_position"][:3], [400, 50, 150], atol=1.0)
    np.testing.assert_allclose(sdk["get_servo_angle"], sdk["twin_joints"], atol=2e-3)


def test_sdk_servo_stream_moves_twin(sdk: dict[str, Any]) -> None:
    assert sdk["servo_codes"] == [0] * 20
    np.testing.assert_allclose(sdk["twin_tcp_after_servo"][:3], [400, 10, 150], atol=1.5)


def test_sdk_gripper_registers(sdk: dict[str, Any]) -> None:
    assert sdk["gripper"] == [0, 0]
    assert abs(sdk["gripper_pos"] - 300) <= 2


def test_sdk_unreachable_target_gives_kinematic_error(sdk: dict[str, Any]) -> None:
    assert sdk["unreachable_code"] != 0
    assert sdk["unreachable_err"][0] == 21
    assert sdk["unreachable_state"] == 4
    assert sdk["after_clean"] == [[0, 0], 2]


def test_sdk_emergency_stop_halts_twin(sdk: dict[str, Any]) -> None:
    assert sdk["estop_state"] == 4
    assert sdk["estop_drift_rad"] < 2e-3
    assert sdk["servo_while_stopped"] != 0  # refused by the stopped controller


def test_driver_state_live_and_commands_refused_during_reset(drv: dict[str, Any]) -> None:
    xs = drv["x_during_reset"]
    assert all(np.diff(xs) < 0) and xs[-1] - xs[0] < -0.005  # travelling from 0.35 to 0.30 m
    assert drv["calls_during_reset"] == ["refused", "refused"]


def test_driver_reset_and_box_clamp(drv: dict[str, Any]) -> None:
    np.testing.assert_allclose(drv["reset_pos"], [0.40, 0.0, 0.20], atol=1e-3)
    applied = np.array(drv["applied"])
    # The first command after move_to starts from rest (2.2 mm), then ramps up (the later
    # steps depend on the measured time between commands).
    assert applied[0, 0] == pytest.approx(0.222, abs=1e-3)
    assert np.all(np.diff(applied[:3, 0]) > 0) and applied[1, 0] < 1.0
    assert drv["clamped"][0]
    assert all(drv["clamped"][8:12])  # braking, then the +x face at 0.45 less the margin
    assert applied[9:12, 0].max() < 0.05  # pushing into the face commands no +x motion
    margin = EnvelopeConfig().margin_m
    assert drv["pos_after_push"][0] == pytest.approx(0.45 - margin, abs=2e-3)


def test_driver_step_cut_and_nothing_unsafe_reaches_controller(drv: dict[str, Any]) -> None:
    assert np.all(np.abs(np.array(drv["applied"])[12:15, 2]) <= 1.0 + 1e-6)
    assert drv["n_servo"] > 15
    assert drv["all_in_box"] and drv["all_finite"]
    assert drv["max_step_m"] <= 0.010 + 1e-5  # consecutive servo targets (fp32 on the wire)


def test_driver_refuses_nan_and_reports_it(drv: dict[str, Any]) -> None:
    assert drv["refused"] == [True] * 5  # NaN, inf, wrong length, not numeric, 1e30
    assert drv["rejected_commands"] == 5
    assert drv["log_grew_on_nan"] == 0


def test_driver_watchdog_stops_arm_within_deadline(drv: dict[str, Any]) -> None:
    assert drv["watchdog_stop_s"] is not None
    # The monitor wakes at the deadline itself; the slack is for a loaded 2-core machine.
    assert 0.2 <= drv["watchdog_stop_s"] <= 0.2 + 0.06
    assert drv["watchdog_stops"] == 1
    assert drv["send_after_watchdog"] == "refused"


def test_driver_enable_restarts_the_watchdog(drv: dict[str, Any]) -> None:
    assert drv["stops_after_slow_enable"] == 0
    assert drv["send_after_slow_enable"] == "sent"


def test_driver_controller_error_latches_until_reset(drv: dict[str, Any]) -> None:
    assert drv["fault"].startswith("controller error 31")
    assert drv["send_in_fault"] == "refused" and drv["enable_in_fault"] == "refused"
    assert drv["log_grew_in_fault"] == 0
    # Sent again after the reset: the first command starts from rest (2.2 mm of the 5 asked).
    assert drv["after_reset"][2] == pytest.approx(0.222, abs=1e-3)


def test_driver_emergency_stop_latches(drv: dict[str, Any]) -> None:
    assert drv["estop_fault"] == "emergency stop"
    assert drv["estop_ctrl_state"] == 4
    assert drv["final_state"] == 4  # leaving the with-block left it stopped


if __name__ == "__main__":
    print(json.dumps({"sdk": scenario_sdk, "driver": scenario_driver}[sys.argv[1]]()), flush=True)
