"""Reward training from the streaming data set against the in-memory loader, same data, 1 and 2
ranks on the CPU (torchrun, Gloo).

    .venv/bin/python benchmarks/bench_streaming.py [--episodes 200] [--steps 150]

Writes a synthetic store of ``--episodes`` blob episodes (84 px, 30 frames), then runs
``v2r reward train method=rank2reward`` four ways: in memory and streamed
(``stream.enabled=true``, a buffer of 64 episodes renewed by a quarter every 50 steps), each on
1 rank and under ``torchrun --nproc_per_node=2``. Prints one JSON: training frames/s of the
loop (frames in the global batches / loop seconds) and the whole command's wall seconds (data
loading included), and the streamed figures as ratios of the in-memory ones (memory: the unit test
tests/unit/test_streaming.py measures it flat). Rows go to benchmarks/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from video2reward.rewards import distributed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "streaming.json"
FRAMES_PER_STEP = 2 * 32  # Rank2Reward: batch_size (32) frame pairs per step


def run(data: Path, out: Path, steps: int, stream: bool, nproc: int) -> dict[str, float]:
    args = ["method=rank2reward", f"data={data}", f"out={out}", f"method.steps={steps}",
            "threads=1", "device=cpu", "progress_bar=false", "resume=false"]
    if stream:
        args += ["stream.enabled=true", "stream.buffer_episodes=64", "stream.refresh_every=50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for v in (*distributed.ENV_VARS, "MASTER_ADDR", "MASTER_PORT"):  # torchrun sets these
        env.pop(v, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "video2reward.cli.main", "reward", "train", *args]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - t0
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    s = json.loads((out / "train_summary.json").read_text())
    return {"loop_frames_per_s": round(steps * FRAMES_PER_STEP / s["train_time_s"], 1),
            "wall_s": round(wall, 1), "loop_s": s["train_time_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_streaming")
    args = p.parse_args()
    from video2reward.rewards.synthetic import synthetic_store

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"blobs{args.episodes}.zarr"
    if not data.exists():
        synthetic_store(args.episodes, 0, size_px=84, length=30, seed=0, path=str(data))
    rows: dict[str, dict[str, float]] = {}
    for nproc in (1, 2):
        for stream in (False, True):
            name = f"{'streamed' if stream else 'in_memory'}_{nproc}rank"
            rows[name] = run(data, args.out / name, args.steps, stream, nproc)
            print(name, rows[name], flush=True)
    ratios = {f"{n}rank": {
        "loop_frames_per_s": round(rows[f"streamed_{n}rank"]["loop_frames_per_s"]
                                   / rows[f"in_memory_{n}rank"]["loop_frames_per_s"], 3),
        "wall_s": round(rows[f"streamed_{n}rank"]["wall_s"] / rows[f"in_memory_{n}rank"]["wall_s"],
                        3)} for n in (1, 2)}  # fmt: skip
    result = {"episodes": args.episodes, "frames": args.episodes * 30, "steps": args.steps,
              "runs": rows, "streamed_over_in_memory": ratios, "cpu_count": os.cpu_count(),
              "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
