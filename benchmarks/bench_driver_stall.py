"""Stalls of the driver node's command path: action published -> servo command at the controller.

    .venv/bin/python benchmarks/bench_driver_stall.py [--seconds 40] [--busy 2] [--tag after]
    .venv/bin/python benchmarks/bench_driver_stall.py --burst-every-s 2 --tag after_bursts

Runs the xArm driver node against the controller emulator (private network namespace), a
client that streams actions at 30 Hz and subscribes to the pose and joint topics (50 Hz), twice:
quiet, then beside ``--busy`` processes spinning ``while True: pass`` (the load under which the
issue-18 fuzz saw 352 ms and 896 ms stalls on 2 cores). For every action it measures the time
from publishing it to the next servo-cartesian command received by the emulator (both read
``time.monotonic()``, one clock for every process on the machine), and prints p50/p99/max of
that delay, the gaps between consecutive commands, and how many delays exceeded the 0.25 s
default watchdog deadline. Beside it, an observer process subscribed to the same action topic
measures the DDS transport delay of the same messages (publisher's source timestamp to its
own receipt): a stall that shows there too is the machine (scheduling, DDS), not the driver.
The node runs with a 2 s watchdog here, so a stall shows up as a delay instead of a stop that
would end the measurement. The quiet run is the baseline: the
loaded run is also reported as a ratio to it. Results go to
``benchmarks/results/driver_stall_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE_HZ = 30.0
DEADLINE_S = 0.25  # the driver's default watchdog deadline


def observe(seconds: float) -> None:
    """Transport baseline: receive the client's actions in another process, print delays."""
    import rclpy
    from std_msgs.msg import Float32MultiArray

    rclpy.init()
    node = rclpy.create_node("stall_bench_observer")
    delays: list[float] = []

    def on_action(_m: Float32MultiArray, info: Any) -> None:
        delays.append((info["received_timestamp"] - info["source_timestamp"]) / 1e6)

    node.create_subscription(Float32MultiArray, "/xarm_driver/action", on_action, 100)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps(delays), flush=True)


def inside(seconds: float, busy: int, burst_every_s: float) -> dict[str, Any]:
    """Runs in the emulator's namespace: node, client, optional busy loops, then the numbers."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray
    from std_srvs.srv import Trigger
    from video2reward.sim.xarm_emulator import EmulatorProbe

    node_proc = subprocess.Popen(
        [sys.executable, "-m", "video2reward.robot.ros.xarm_driver_node", "--ros-args",
         "-p", "watchdog_deadline_s:=2.0", "-p", "state_rate_hz:=50.0"],
    )
    probe = EmulatorProbe()
    rclpy.init()
    node = rclpy.create_node("stall_bench_client")
    n_pose = [0]
    status: list[dict[str, str]] = []
    node.create_subscription(PoseStamped, "/xarm_driver/ee_pose",
                             lambda m: n_pose.__setitem__(0, n_pose[0] + 1), 50)
    node.create_subscription(JointState, "/xarm_driver/joint_states", lambda m: None, 50)
    node.create_subscription(
        DiagnosticStatus, "/xarm_driver/status",
        lambda m: status.append({kv.key: kv.value for kv in m.values}), 50)
    pub = node.create_publisher(Float32MultiArray, "/xarm_driver/action", 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    busy_procs: list[subprocess.Popen[bytes]] = []
    try:
        cli = node.create_client(Trigger, "/xarm_driver/home")
        if not cli.wait_for_service(timeout_sec=30.0):
            raise RuntimeError("driver node did not come up")
        fut = cli.call_async(Trigger.Request())
        t_end = time.monotonic() + 60.0
        while not fut.done() and time.monotonic() < t_end:
            time.sleep(0.01)
        if not fut.done() or not fut.result().success:
            raise RuntimeError(f"home failed: {fut.result()}")
        busy_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(busy)]
        observer = subprocess.Popen([sys.executable, __file__, "--observe", str(seconds + 3.0)],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        probe.call("clear_log")
        cpu0, wall0 = _cpu_s(node_proc.pid), time.monotonic()
        t_pub: list[float] = []
        t0 = time.monotonic()
        k = 0
        t_burst = t0 + burst_every_s
        while time.monotonic() - t0 < seconds:
            ph = 2 * math.pi * (time.monotonic() - t0) / 8.0  # a slow circle, well inside
            a = [0.4 * math.cos(ph), 0.4 * math.sin(ph), 0.0, 0.0]
            t_pub.append(time.monotonic())
            pub.publish(Float32MultiArray(data=a))
            k += 1
            if burst_every_s > 0 and time.monotonic() >= t_burst:  # 40 at 1 kHz, like the fuzz
                t_burst += burst_every_s
                for _ in range(40):
                    t_pub.append(time.monotonic())
                    pub.publish(Float32MultiArray(data=a))
                    time.sleep(0.001)
            time.sleep(max(0.0, t0 + k / RATE_HZ - time.monotonic()))
        node_cpu_pct = 100.0 * (_cpu_s(node_proc.pid) - cpu0) / (time.monotonic() - wall0)
        transport_ms = np.array(json.loads(observer.communicate(timeout=30)[0]))
        time.sleep(0.5)
        log = probe.call("log")["motion_log"]
    finally:
        for p in busy_procs:
            p.kill()
            p.wait()
        node_proc.terminate()
        try:
            node_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        ex.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()
    t_cmd = np.array(sorted(e["t_mono"] for e in log if e["fn"] == 30))
    pubs = np.array(t_pub)
    idx = np.searchsorted(t_cmd, pubs)
    ok = idx < len(t_cmd)
    delay_ms = (t_cmd[idx[ok]] - pubs[ok]) * 1000.0
    gaps_ms = np.diff(t_cmd) * 1000.0
    return {
        "busy_processes": busy,
        "seconds": seconds,
        "actions_published": len(pubs),
        "commands_received": len(t_cmd),
        "actions_without_command": int((~ok).sum()),
        "delay_ms": _pcts(delay_ms),
        "transport_ms": _pcts(transport_ms),  # the baseline: same messages, another process
        "command_gap_ms": _pcts(gaps_ms),
        "delays_over_deadline": int((delay_ms > DEADLINE_S * 1000).sum()),
        # when (s after the stream began) each delay over 100 ms happened, and how long it was
        "stalls_over_100ms": [[round(float(t - pubs[0]), 2), round(float(d), 1)]
                              for t, d in zip(pubs[ok], delay_ms, strict=True) if d > 100],
        "pose_msgs": n_pose[0],
        "node_cpu_pct": round(node_cpu_pct, 1),  # of one core, while streaming
        "last_status": status[-1] if status else {},
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pcts(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    return {"p50": round(float(np.percentile(x, 50)), 2),
            "p99": round(float(np.percentile(x, 99)), 2), "max": round(float(x.max()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes in the loaded run")
    ap.add_argument("--tag", default="after", help="results file suffix (before/after)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--observe", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--domain", default="83")
    ap.add_argument("--runs", default="quiet,loaded", help="which runs, comma-separated")
    ap.add_argument("--burst-every-s", type=float, default=0.0,
                    help="also send 40 actions at 1 kHz this often (0: steady 30 Hz only)")
    args = ap.parse_args()
    if args.observe:
        observe(args.observe)
        return 0
    if args.inside:
        print(json.dumps(inside(args.seconds, args.busy, args.burst_every_s)), flush=True)
        return 0
    from video2reward.sim.emulator_netns import run_with_emulator

    env = dict(os.environ, ROS_DOMAIN_ID=args.domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    runs = {}
    wanted = args.runs.split(",")
    for name, busy in (("quiet", 0), ("loaded", args.busy)):
        if name not in wanted:
            continue
        proc = run_with_emulator(
            [sys.executable, __file__, "--inside", "--seconds", str(args.seconds),
             "--busy", str(busy), "--burst-every-s", str(args.burst_every_s)],
            timeout_s=args.seconds + 180, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout, proc.stderr[-3000:], file=sys.stderr)
            return 1
        runs[name] = json.loads(lines[-1])
        r = runs[name]
        print(f"{name:7s} ({busy} busy): delay p50 {r['delay_ms']['p50']:.1f} / p99 "
              f"{r['delay_ms']['p99']:.1f} / max {r['delay_ms']['max']:.1f} ms (transport to "
              f"an observer p99 {r['transport_ms']['p99']:.1f} / max "
              f"{r['transport_ms']['max']:.1f}); command gap max "
              f"{r['command_gap_ms']['max']:.1f} ms; {r['delays_over_deadline']} delays > "
              f"{DEADLINE_S * 1000:.0f} ms; {r['commands_received']}/{r['actions_published']} "
              f"actions reached the controller; driver node {r['node_cpu_pct']:.0f}% of a core",
              flush=True)
    if len(runs) < 2:
        return 0
    q, ld = runs["quiet"]["delay_ms"], runs["loaded"]["delay_ms"]
    ratios = {k: round(ld[k] / q[k], 2) if q[k] > 0 else math.nan for k in ("p50", "p99", "max")}
    print(f"loaded / quiet: p50 {ratios['p50']}x, p99 {ratios['p99']}x, max {ratios['max']}x")
    out = Path(__file__).resolve().parent / "results" / f"driver_stall_{args.tag}.json"
    out.write_text(json.dumps({"tag": args.tag, "rate_hz": RATE_HZ,
                               "burst_every_s": args.burst_every_s, "runs": runs,
                               "loaded_over_quiet": ratios}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
