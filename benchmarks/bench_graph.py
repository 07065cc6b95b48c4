"""End-to-end loop of the simulation graph: control rate and stamp->command latency per image size.

    .venv/bin/python benchmarks/bench_graph.py --reward-ckpt runs/main/reward [--hz 20]
    .venv/bin/python benchmarks/bench_graph.py --reward-ckpt runs/main_try1/reward --hz 30 \
        --sizes 84x84 640x480 --json benchmarks/results/graph_640x480.json
    .venv/bin/python benchmarks/bench_graph.py --reward-ckpt runs/main/reward --hz 10 --bag \
        --json benchmarks/results/graph_bag.json     # the bag node's cost to the control loop

Runs ``v2r launch sim.launch.xml`` (twin, driver, reward, learner) in a private network
namespace with an observer node, for a few episodes at ``--hz``, once per camera size in
``--sizes`` (one after the other, same checkpoint and settings), and prints: the control rate
held, image-stamp-to-command latency (p50/p95 as the learner measures it, and p50/p95/p99
seen by the observer: a command's arrival minus the stamp of the newest image before it),
the camera-to-observer transport latency of the same images (the baseline, same run), and the
reward node's scoring rate and latency. Images larger than 84x84 (640x480 is the RealSense's
size) reach the reward and learner nodes whole and are cropped to their centre square and
resized there (``data.images.prepare_frame``); their graph runs with
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (docs/lab.md: default transports are slow for large
images). Targets: the rate held, p95 < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SMALL_IMAGE_PX = 84 * 84  # at or below this, default DDS transports


def observe(
    args: argparse.Namespace, width: int, height: int, bag: bool = False
) -> dict[str, float]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray

    rclpy.init()
    node = rclpy.create_node("bench_observer")
    transport_ms: list[float] = []
    command_ms: list[float] = []
    newest_stamp = [float("nan")]  # of the newest image seen (wall-clock seconds)
    diags: dict[str, dict[str, str]] = {}

    def on_image(m: Image) -> None:
        t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        transport_ms.append((time.time() - t) * 1000)
        newest_stamp[0] = max(t, newest_stamp[0]) if newest_stamp[0] == newest_stamp[0] else t

    def on_action(m: Float32MultiArray) -> None:
        if newest_stamp[0] == newest_stamp[0]:
            command_ms.append((time.time() - newest_stamp[0]) * 1000)

    def on_diag(m: DiagnosticArray) -> None:
        for s in m.status:
            diags[s.name] = {kv.key: kv.value for kv in s.values}

    node.create_subscription(Image, "/camera/color/image_raw", on_image, 50)
    node.create_subscription(Float32MultiArray, "/xarm_driver/action", on_action, 50)
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
            f"camera_width:={width}",
            f"camera_height:={height}",
            *(["with_bag:=true", f"record_bag:={out}/graph.mcap"] if bag else []),
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
    t0 = time.monotonic()
    while graph.poll() is None:
        time.sleep(1.0)
        learner = diags.get("learner", {})
        if learner.get("phase") == "run":
            samples.append(
                {**learner, **{f"reward_{k}": v for k, v in diags.get("reward", {}).items()}}
            )
    wall_s = time.monotonic() - t0
    stop.set()
    t.join()
    shutil.rmtree(out, ignore_errors=True)
    rclpy.try_shutdown()
    if not samples:
        print(f"{width}x{height}: no samples: did the graph start? (try --episodes 5)")
        return {}

    def col(key: str) -> np.ndarray:
        vals = [float(s[key]) for s in samples if key in s and s[key] != "nan"]
        return np.asarray(vals)

    tr, cmd = np.asarray(transport_ms), np.asarray(command_ms)
    return {
        "width": width,
        "height": height,
        "bag": bag,
        "large_data": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "") == "LARGE_DATA",
        "wall_s": round(wall_s, 1),
        "commands": int(cmd.size),
        "control_rate_hz": float(np.median(col("control_rate_hz"))),
        "learner_latency_p50_ms": float(np.median(col("latency_p50_ms"))),
        "learner_latency_p95_ms": float(np.median(col("latency_p95_ms"))),
        **{f"command_latency_p{q}_ms": float(np.percentile(cmd, q)) for q in (50, 95, 99)},
        **{f"transport_p{q}_ms": float(np.percentile(tr, q)) for q in (50, 95, 99)},
        "reward_rate_hz": float(np.median(col("reward_rate_hz"))),
        "reward_score_latency_p95_ms": float(np.median(col("reward_score_latency_p95_ms"))),
    }


def report(r: dict[str, float], hz: float) -> None:
    size = f"{r['width']}x{r['height']}" + (" (LARGE_DATA)" if r["large_data"] else "")
    size += " recording a bag" if r.get("bag") else ""
    rate = r["control_rate_hz"]
    print(f"--- {size}: {r['commands']} commands in {r['wall_s']:.0f} s")
    print(f"control rate      {rate:6.1f} Hz   (target {hz} Hz: "
          f"{'held' if rate >= 0.95 * hz else 'NOT held'})")  # fmt: skip
    print(f"stamp->command    p50 {r['command_latency_p50_ms']:6.1f} ms  "
          f"p95 {r['command_latency_p95_ms']:6.1f} ms  p99 {r['command_latency_p99_ms']:6.1f} ms"
          f"  ({'PASS' if r['command_latency_p95_ms'] < 50 else 'FAIL'} p95 < 50 ms; observer)")
    print(f"  (learner's own) p50 {r['learner_latency_p50_ms']:6.1f} ms  "
          f"p95 {r['learner_latency_p95_ms']:6.1f} ms")
    print(f"camera->observer  p50 {r['transport_p50_ms']:6.1f} ms  p95 {r['transport_p95_ms']:6.1f}"
          f" ms  p99 {r['transport_p99_ms']:6.1f} ms  (baseline: transport only)")
    print(f"reward node       {r['reward_rate_hz']:6.1f} frames/s scored, "
          f"score latency p95 {r['reward_score_latency_p95_ms']:.2f} ms")


def size_arg(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT (e.g. 640x480), got {text!r}")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reward-ckpt", required=True)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--sizes", type=size_arg, nargs="+", default=[(84, 84)],
                    help="camera sizes, WIDTHxHEIGHT, run one after the other")  # fmt: skip
    ap.add_argument("--json", default="", help="write every size's figures here")
    ap.add_argument("--bag", action="store_true",
                    help="each size twice: without, then with the bag node recording (its cost)")
    args = ap.parse_args()
    if os.environ.get("V2R_LAUNCH_NETNS"):
        w, h = size_arg(os.environ["V2R_BENCH_SIZE"])
        result = observe(args, w, h, bag=os.environ.get("V2R_BENCH_BAG") == "1")
        with open(os.environ["V2R_BENCH_OUT"], "w") as f:
            json.dump(result, f)
        return
    results = []
    load_before = os.getloadavg()
    runs = [(size, bag) for size in args.sizes for bag in [False, True][: 1 + args.bag]]
    for (w, h), bag in runs:
        # One graph (and one observer process) per size: the DDS transports are chosen when a
        # process starts, so each size gets its own.
        fd, tmp = tempfile.mkstemp(suffix=".json", prefix="bench_graph_")
        os.close(fd)
        env = {**os.environ, "V2R_LAUNCH_NETNS": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
               "V2R_BENCH_SIZE": f"{w}x{h}", "V2R_BENCH_OUT": tmp,
               "V2R_BENCH_BAG": "1" if bag else "0"}  # fmt: skip
        if w * h > SMALL_IMAGE_PX:
            env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
        else:
            env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
        cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
               sys.executable, *sys.argv]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env)
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        with open(tmp) as f:
            text = f.read()
        os.unlink(tmp)
        if text.strip() and json.loads(text):
            results.append(json.loads(text))
            report(results[-1], args.hz)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hz": args.hz, "steps": args.steps, "episodes": args.episodes,
                       "reward_ckpt": args.reward_ckpt, "cpus": os.cpu_count(),
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                       "sizes": results}, f, indent=1)  # fmt: skip
            f.write("\n")


if __name__ == "__main__":
    main()
