"""Fuzz the driver node as an outside client would, and hold the twin's true TCP to the box.

A seeded client (plain rclpy, std_msgs) streams ~30 s of commands at 30 Hz to the driver node
running against the controller emulator: valid random actions, pushes into every face, edge
and corner that stop dead and reverse at full speed, NaN/inf/1e30/1.6 in every slot and
lengths 0-64 (each sent beside a valid command), 1 kHz bursts, and silences longer than the
watchdog deadline. Ground truth is the emulator's trace of the true TCP at every 4 ms control
tick and its log of every servo target received.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import time
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.netns]
DOMAIN_ID = "63"
LO_M, HI_M = (0.28, -0.10, 0.08), (0.45, 0.10, 0.22)  # small: faces are hit often
RATE_HZ = 30.0
DEADLINE_S = 0.25
SEED = 18


def fuzz_plan(rng: np.random.Generator) -> list[tuple[str, Any]]:
    """(kind, payload) segments, ~30 s: a push into each of the 26 faces, edges and corners
    (seeded order), with the other input classes between every few pushes."""
    dirs = [np.array([x, y, z], float) for x in (-1, 0, 1) for y in (-1, 0, 1)
            for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)]
    others = iter(["garbage", "silence", "valid", "silence", "burst", "garbage", "silence",
                   "valid", "burst"])
    plan: list[tuple[str, Any]] = []
    for n, i in enumerate(rng.permutation(len(dirs)).tolist()):
        plan.append(("push", dirs[i]))
        if n % 3 == 2:
            kind = next(others)
            if kind == "valid":
                plan.append(("valid", rng.uniform(-1, 1, (int(0.7 * RATE_HZ), 4))))
            elif kind == "garbage":
                plan.append(("garbage", int(0.7 * RATE_HZ)))
            elif kind == "burst":
                plan.append(("burst", rng.uniform(-1, 1, (40, 4))))
            else:
                plan.append(("silence", 0.6))
    return plan


def garbage(rng: np.random.Generator, i: int) -> list[float]:
    """Bad values in every slot in turn, then wrong lengths 0-64."""
    bad = [math.nan, math.inf, -math.inf, 1e30, -1e30, 1.6, -7.0]
    if i % 3 == 2:
        n = int(rng.integers(0, 65))
        return [float(v) for v in rng.uniform(-1, 1, n if n != 4 else 5)]
    a = [float(v) for v in rng.uniform(-1, 1, 4)]
    a[i % 4] = bad[(i // 4) % len(bad)]
    return a


def scenario() -> dict[str, Any]:
    from diagnostic_msgs.msg import DiagnosticStatus
    from driver_client import DriverUnderTest  # type: ignore[import-not-found]
    from std_msgs.msg import Float32MultiArray
    from video2reward.sim.xarm_emulator import EmulatorProbe

    rng = np.random.default_rng(SEED)
    r: dict[str, Any] = {}
    driver = DriverUnderTest(
        "driver_fuzz_client",
        ["-p", f"watchdog_deadline_s:={DEADLINE_S}", "-p", f"workspace_lo_m:={list(LO_M)}",
         "-p", f"workspace_hi_m:={list(HI_M)}", "-p", "home_m:=[0.36, 0.0, 0.15]"],
        stop_signal=signal.SIGTERM,
    )  # fmt: skip
    probe = EmulatorProbe()
    node, call = driver.node, driver.call
    status: list[dict[str, str]] = []
    applied: list[list[float]] = []
    node.create_subscription(
        DiagnosticStatus, "/xarm_driver/status",
        lambda m: status.append({kv.key: kv.value for kv in m.values}), 100)
    node.create_subscription(Float32MultiArray, "/xarm_driver/applied_action",
                             lambda m: applied.append(list(m.data)), 100)
    pub = node.create_publisher(Float32MultiArray, "/xarm_driver/action", 10)
    driver.spin()

    trace: list[list[float]] = []
    n_garbage = n_valid = 0
    silences: list[tuple[float, float]] = []
    try:
        r["home"] = call("home")
        probe.call("clear_log")
        probe.call("trace_start")
        t_next = time.monotonic()

        def send(a: list[float] | np.ndarray) -> None:
            pub.publish(Float32MultiArray(data=[float(v) for v in a]))

        def tick() -> None:  # keep 30 Hz on an absolute schedule
            nonlocal t_next
            t_next += 1.0 / RATE_HZ
            time.sleep(max(0.0, t_next - time.monotonic()))

        for kind, payload in fuzz_plan(rng):
            if kind == "push":
                d = payload
                # push (from wherever the last one ended), stop dead, reverse at full speed
                for a, secs in ((d, 0.6), (0 * d, 0.1), (-d, 0.25)):
                    for _ in range(int(secs * RATE_HZ)):
                        send([*a, rng.choice([-1.0, 1.0])])
                        n_valid += 1
                        tick()
            elif kind == "valid":
                for a in payload:
                    send(a)
                    n_valid += 1
                    tick()
            elif kind == "garbage":
                for _ in range(payload):
                    send(rng.uniform(-1, 1, 4))  # the stream goes on beside the garbage
                    n_valid += 1
                    send(garbage(rng, n_garbage))
                    n_garbage += 1
                    tick()
            elif kind == "burst":
                for a in payload:
                    send(a)
                    n_valid += 1
                    time.sleep(0.001)
                t_next = time.monotonic()
            else:
                t0 = time.monotonic()
                time.sleep(payload)
                silences.append((t0, time.monotonic()))
                r.setdefault("enable_after_silence", []).append(call("enable")[0])
                t_next = time.monotonic()
            trace += probe.call("trace")["trace"]
        for _ in range(int(0.7 * RATE_HZ)):  # hold still until a status (every 0.5 s)
            send([0.0, 0.0, 0.0, 0.0])  # carries the final counters
            tick()
        trace += probe.call("trace")["trace"]
        log = probe.call("log")["motion_log"]
        r["ctrl_error"] = probe.call("state")["error_code"]
    finally:
        driver.close()
        r["node_stderr_tail"] = driver.stderr_tail
    lo, hi = np.array(LO_M) * 1000, np.array(HI_M) * 1000
    p = np.array(trace)[:, 1:4]
    outside = np.maximum(np.maximum(lo - p, p - hi), 0.0).max(axis=1)
    r["trace_samples"] = len(p)
    r["worst_outside_mm"] = float(outside.max())
    r["samples_outside_0.5mm"] = int((outside > 0.5).sum())
    r["closest_to_face_mm"] = float(-np.max(np.maximum(lo - p, p - hi)))
    # Servo targets: consecutive ones within a streaming run (split at the silences).
    servo = [e for e in log if e["fn"] == 30 and e["accepted"]]
    steps = []
    for a, b in itertools.pairwise(servo):
        if not any(a["t_mono"] < s0 and b["t_mono"] > s0 for s0, _ in silences):
            steps.append(float(np.linalg.norm(np.subtract(b["pose"][:3], a["pose"][:3]))))
    r["max_servo_step_mm"] = max(steps)
    targets = np.array([e["pose"][:3] for e in servo])
    r["targets_outside_mm"] = float(np.maximum(np.maximum(lo - targets, targets - hi), 0).max())
    r["max_applied_norm"] = float(np.max(np.linalg.norm(np.array(applied)[:, :3], axis=1)))
    r["n_servo"], r["n_valid"], r["n_garbage"] = len(servo), n_valid, n_garbage
    r["n_silences"] = len(silences)
    r["final_status"] = status[-1] if status else {}
    return r


@pytest.fixture(scope="module")
def fuzz() -> dict[str, Any]:
    from video2reward.sim.emulator_netns import run_json_scenario

    return run_json_scenario(__file__, timeout_s=150, ros_domain_id=DOMAIN_ID)


def test_true_tcp_never_leaves_the_box(fuzz: dict[str, Any]) -> None:
    assert fuzz["home"][0], fuzz["home"]
    assert fuzz["trace_samples"] > 5000  # ~30 s of 4 ms control ticks
    assert fuzz["worst_outside_mm"] <= 0.5, fuzz
    assert fuzz["targets_outside_mm"] == 0.0
    # The pushes reached the faces: the margin, not a short run, kept the tool inside.
    assert fuzz["closest_to_face_mm"] < 3.0


def test_no_step_over_10_mm(fuzz: dict[str, Any]) -> None:
    assert fuzz["n_servo"] > 600
    assert fuzz["max_servo_step_mm"] <= 10.0 + 1e-3  # fp32 on the wire
    assert fuzz["max_applied_norm"] <= 1.0 + 1e-6


def test_garbage_refused_and_counted(fuzz: dict[str, Any]) -> None:
    assert fuzz["n_garbage"] >= 40
    assert int(fuzz["final_status"]["rejected_commands"]) == fuzz["n_garbage"]


def test_no_spurious_stop_and_no_fault(fuzz: dict[str, Any]) -> None:
    # One watchdog stop per silence, none while commands flowed at 30 Hz.
    assert fuzz["n_silences"] >= 3
    assert int(fuzz["final_status"]["watchdog_stops"]) == fuzz["n_silences"]
    assert all(fuzz["enable_after_silence"])
    assert fuzz["final_status"]["fault"] == "" and fuzz["ctrl_error"] == 0
    assert fuzz["final_status"]["streaming"] == "True"


if __name__ == "__main__":
    print(json.dumps(scenario()), flush=True)
