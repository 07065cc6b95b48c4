"""End-to-end loop of the simulation graph at 84x84: control rate, latency, reward throughput.

    .venv/bin/python benchmarks/bench_graph.py --reward-ckpt runs/main/reward [--hz 20]

Runs ``v2r launch sim.launch.xml`` (twin, driver, reward, learner) in a private network
namespace with an observer node, for a few episodes at ``--hz``, and prints: the control rate
held, image-stamp-to-command latency percentiles (measured by the learner) against the
camera-to-observer transport latency of the same images (the baseline, same run), and the
reward node's scoring rate and latency. Targets: >= 20 Hz, p95 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def observe(args: argparse.Namespace) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_observer")
    transport_ms: list[float] = []
    diags: dict[str, dict[str, str]] = {}

    def on_image(m: Image) -> None:
        t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        transport_ms.append((time.time() - t) * 1000)

    def on_diag(m: DiagnosticArray) -> None:
        for s in m.status:
            diags[s.name] = {kv.key: kv.value for kv in s.values}

    node.create_subscription(Image, "/camera/color/image_raw", on_image, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    out = tempfile.mkdtemp(prefix="bench_graph_")
    graph = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "video2reward.cli.main",
            "launch",
            "sim.launch.xml",
            f"reward_ckpt:={args.reward_ckpt}",
            f"out:={out}",
            f"control_hz:={float(args.hz)}",
            f"episode_steps:={args.steps}",
            f"max_episodes:={args.episodes}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[dict[str, str]] = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            rclpy.spin_once(node, timeout_sec=0.05)

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    while graph.poll() is None:
        time.sleep(1.0)
        learner = diags.get("learner", {})
        if learner.get("phase") == "run":
            samples.append(
                {**learner, **{f"reward_{k}": v for k, v in diags.get("reward", {}).items()}}
            )
    stop.set()
    t.join()
    shutil.rmtree(out, ignore_errors=True)
    if not samples:
        print("no samples: did the graph start? (try --episodes 5)")
        return

    def col(key: str) -> np.ndarray:
        vals = [float(s[key]) for s in samples if key in s and s[key] != "nan"]
        return np.asarray(vals)

    rate = np.median(col("control_rate_hz"))
    p50, p95 = np.median(col("latency_p50_ms")), np.median(col("latency_p95_ms"))
    tr = np.asarray(transport_ms)
    tp50, tp95 = np.percentile(tr, 50), np.percentile(tr, 95)
    print(
        f"control rate      {rate:6.1f} Hz   (target {args.hz} Hz: "
        f"{'held' if rate >= 0.95 * args.hz else 'NOT held'})"
    )
    print(
        f"stamp->command    p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
        f"({'PASS' if p95 < 50 else 'FAIL'} p95 < 50 ms)"
    )
    print(f"camera->observer  p50 {tp50:6.1f} ms  p95 {tp95:6.1f} ms  (baseline: transport only)")
    print(
        f"command / transport latency: p50 x{p50 / max(tp50, 1e-3):.1f}, "
        f"p95 x{p95 / max(tp95, 1e-3):.1f}"
    )
    print(
        f"reward node       {np.median(col('reward_rate_hz')):6.1f} frames/s scored, "
        f"score latency p95 {np.median(col('reward_score_latency_p95_ms')):.2f} ms"
    )
    rclpy.try_shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reward-ckpt", required=True)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_args()
    if os.environ.get("V2R_LAUNCH_NETNS"):
        observe(args)
        return
    env = {**os.environ, "V2R_LAUNCH_NETNS": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    cmd = [
        "unshare",
        "-rn",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        *sys.argv,
    ]
    proc = subprocess.Popen(cmd, env=env)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()


if __name__ == "__main__":
    main()
