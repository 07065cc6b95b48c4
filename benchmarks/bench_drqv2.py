"""DrQ-v2 speed on this machine, ours beside the official facebookresearch/drqv2 agent.

    git clone https://github.com/facebookresearch/drqv2 /tmp/drqv2_official   # never committed
    .venv/bin/python benchmarks/bench_drqv2.py --official /tmp/drqv2_official [--threads 2]

Both agents get the same inputs (84x84x9 uint8 frame stacks, 4-d actions, no proprioception,
paper sizes: feature 50, hidden 1024) and run interleaved in the same process, so background
load hits both alike. Reported: updates/s at batch 256 and 128 (median over repeated blocks) and
act latency at batch 1 (median ms), as ratios ours / official, once with glibc malloc and once
with tcmalloc preloaded (each in a child process, since the allocator is chosen at exec).

Measured 2026-11-24 on the shared 2-core box (load average 4.5-6 from other jobs, so absolute
numbers are low and noisy; the ratios are interleaved and fairer). Ours / official, same allocator:
  threads=1: updates/s b256 1.21x (glibc) 1.03x (tcmalloc); b128 1.01x / 1.06x; act 1.30x / 1.95x
  threads=2: updates/s b256 1.30x (glibc) 1.08x (tcmalloc); b128 1.19x / 1.24x; act 1.09x / 1.10x
Ours under tcmalloc vs the official agent as shipped (glibc): b256 2.56x (1 thread), 2.96x
(2 threads); b128 1.12x / 1.45x. The allocator is the big win; the code changes add 0-30%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
OBS = (9, 84, 84)
ACTION_DIM = 4


def _official_agent(path: str) -> Any:
    sys.path.insert(0, path)  # the official repo is a folder of scripts, not a package
    import drqv2 as official  # type: ignore[import-not-found]

    return official.DrQV2Agent(
        obs_shape=OBS, action_shape=(ACTION_DIM,), device="cpu", lr=1e-4, feature_dim=50,
        hidden_dim=1024, critic_target_tau=0.01, num_expl_steps=2000, update_every_steps=2,
        stddev_schedule="linear(1.0,0.1,500000)", stddev_clip=0.3, use_tb=True,
    )  # fmt: skip


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
    from video2reward.policies.replay import Batch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    step = 10_000  # past exploration; even, so the official agent updates
    results: dict[str, Any] = {
        "threads": args.threads,
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
    }
    theirs = _official_agent(args.official)
    for b in args.batch_sizes:
        ours = DrQV2Agent(DrQV2Config(batch_size=b), OBS, ACTION_DIM)
        obs = rng.integers(0, 256, (b, *OBS), dtype=np.uint8)
        nxt = rng.integers(0, 256, (b, *OBS), dtype=np.uint8)
        act = rng.uniform(-1, 1, (b, ACTION_DIM)).astype(np.float32)
        rew = rng.normal(size=(b, 1)).astype(np.float32)
        disc = np.full((b, 1), 0.99**3, np.float32)
        batch = Batch(obs, act, rew[:, 0], disc[:, 0], nxt, None, None)

        def official_iter(obs=obs, act=act, rew=rew, disc=disc, nxt=nxt) -> Any:
            while True:
                yield (obs, act, rew, disc, nxt)

        it = official_iter()
        times: dict[str, list[float]] = {"ours": [], "official": []}
        for _ in range(args.warmup):
            ours.update(batch, step)
            theirs.update(it, step)
        fns = {
            "official": lambda it=it: theirs.update(it, step),
            "ours": lambda ours=ours, batch=batch: ours.update(batch, step),
        }
        for _ in range(args.blocks):
            for name, fn in fns.items():
                for _ in range(args.updates_per_block):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
        ups = {k: 1.0 / statistics.median(v) for k, v in times.items()}
        results[f"updates_per_s_b{b}"] = {**ups, "ratio": ups["ours"] / ups["official"]}

    # Act latency, batch 1, exploring, as each codebase's training loop calls it.
    import utils as official_utils  # type: ignore[import-not-found]

    ours = DrQV2Agent(DrQV2Config(), OBS, ACTION_DIM)
    o = rng.integers(0, 256, OBS, dtype=np.uint8)
    lat: dict[str, list[float]] = {"ours": [], "official": []}

    def act_official() -> None:
        with torch.no_grad(), official_utils.eval_mode(theirs):
            theirs.act(o, step, eval_mode=False)

    def act_ours() -> None:
        ours.act(o, None, step, eval_mode=False)

    for _ in range(20):
        act_official()
        act_ours()
    for _ in range(args.act_blocks):
        for name, fn in (("official", act_official), ("ours", act_ours)):
            for _ in range(50):
                t0 = time.perf_counter()
                fn()
                lat[name].append((time.perf_counter() - t0) * 1e3)
    ms = {k: statistics.median(v) for k, v in lat.items()}
    results["act_ms"] = {**ms, "ratio_speedup": ms["official"] / ms["ours"]}
    return results


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--official", required=True, help="checkout of facebookresearch/drqv2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 128])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--updates-per-block", type=int, default=3)
    p.add_argument("--act-blocks", type=int, default=4)
    p.add_argument("--allocators", nargs="+", default=["glibc", "tcmalloc"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not (Path(args.official) / "drqv2.py").exists():
        p.error(f"{args.official} has no drqv2.py; clone facebookresearch/drqv2 there")
    if args.child:
        print(json.dumps(_measure(args)))
        return 0

    all_results = {}
    for alloc in args.allocators:
        env = dict(os.environ)
        env["LD_PRELOAD"] = TCMALLOC if alloc == "tcmalloc" else ""
        env["V2R_TCMALLOC"] = "0"
        child_argv = [a for a in sys.argv[1:] if a != "--child"]
        out = subprocess.run(
            [sys.executable, __file__, *child_argv, "--child"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        all_results[alloc] = json.loads(out.stdout.strip().splitlines()[-1])

    load = os.getloadavg()
    print(f"DrQ-v2 on {os.cpu_count()} cores, torch threads={args.threads}, load avg {load[0]:.2f}")
    print(f"{'allocator':<10} {'metric':<22} {'ours':>9} {'official':>9} {'ours/official':>14}")
    for alloc, r in all_results.items():
        for b in args.batch_sizes:
            u = r[f"updates_per_s_b{b}"]
            name = f"updates/s batch {b}"
            print(
                f"{alloc:<10} {name:<22} {u['ours']:9.2f} {u['official']:9.2f} {u['ratio']:13.2f}x"
            )
        a = r["act_ms"]
        print(f"{alloc:<10} {'act latency ms (b=1)':<22} {a['ours']:9.2f} {a['official']:9.2f} "
              f"{a['ratio_speedup']:12.2f}x faster")  # fmt: skip
    if "glibc" in all_results and "tcmalloc" in all_results:
        for b in args.batch_sizes:
            ours_t = all_results["tcmalloc"][f"updates_per_s_b{b}"]["ours"]
            off_g = all_results["glibc"][f"updates_per_s_b{b}"]["official"]
            print(f"ours+tcmalloc vs official as shipped (glibc), batch {b}: {ours_t / off_g:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
