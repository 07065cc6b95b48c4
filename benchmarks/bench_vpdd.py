"""VPDD on the twin: what pre-training on actionless video buys a policy fine-tuned on few demos.

    .venv/bin/python benchmarks/bench_vpdd.py --task reach --variant pre --demos 10 --seed 0
    .venv/bin/python benchmarks/bench_vpdd.py --task reach --variant scratch --demos 10 --seed 0
    .venv/bin/python benchmarks/bench_vpdd.py --task reach --variant bc --demos 10 --seed 0
    .venv/bin/python benchmarks/bench_vpdd.py --task reach --variant drq_vpdd --demos 10 --seed 0
    .venv/bin/python benchmarks/bench_vpdd.py --report
    .venv/bin/python benchmarks/bench_vpdd.py --smoke          # tiny sizes: the pipeline only

Variants, all from the robot-time benchmark's scripted demonstrations
(runs/bench_robot_time/<task>/demos.zarr; run bench_robot_time.py once per task first):
- ``pre``: VPDD pre-trained on the videos (actions unused) of 50 demonstrations of each twin
  task (reach, push, button-press: the task's own and the others'; one model per seed serves
  every task), then fine-tuned on the first ``--demos`` demonstrations of the task with actions;
- ``scratch``: the same model and fine-tuning without the video pre-training (its tokenizer
  learns from the fine-tuning demos' frames);
- ``bc``: the DrQ-v2 learner's own start from the same demos (1000 pretraining updates, BC
  weight 2.5 with its critic, 48 px), no robot time: ``bench_bc_ceiling.py``'s setting.
- ``drq_vpdd``: the same DrQ-v2 start, its demonstrations the ``--demos`` ones plus the task's
  other 50 - ``--demos`` videos labelled with the ``pre`` policy's actions (``label_store``):
  VPDD initialising the DrQ-v2 actor. Also prints how well the labels match the actions the
  scripted expert recorded in those videos (unused otherwise).

Each is evaluated on 20 twin episodes by the twin's predicate (evaluation only). Rows go to
benchmarks/results/vpdd.json; ``pre / scratch`` is the paper's claim measured here.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vpdd.json"
TASKS = ("reach", "push", "button-press")


def _store(task: str) -> Path:
    p = ROOT / "runs" / "bench_robot_time" / task / "demos.zarr"
    if not p.exists():
        raise SystemExit(f"{p} is missing: run benchmarks/bench_robot_time.py --task {task} once")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from video2reward.policies.vpdd import VPDDConfig, evaluate_twin, finetune, load, pretrain

    torch.set_num_threads(args.threads)
    base = ROOT / "runs" / "bench_vpdd"
    cfg = dataclasses.replace(VPDDConfig(), seed=args.seed)
    if args.smoke:
        cfg = dataclasses.replace(cfg, tokenizer_steps=20, pretrain_steps=20, finetune_steps=20,
                                  n_layer=1, batch_size=8)  # fmt: skip
        base = base / "smoke"
    t0 = time.monotonic()
    name = f"{args.task}_{args.variant}_demos{args.demos}_seed{args.seed}"
    if args.variant == "bc":
        return _bc(args, base / name, t0)
    if args.variant == "drq_vpdd":
        return _drq_vpdd(args, base, name, t0)
    pre = base / f"pretrained_seed{args.seed}"
    if args.variant == "pre" and not (pre / "model.pt").exists():
        pretrain(cfg, [_store(t) for t in TASKS], pre)
    out = base / name
    if not (out / "model.pt").exists():
        finetune(pre if args.variant == "pre" else None, _store(args.task), out,
                 cfg if args.variant == "scratch" else None, max_episodes=args.demos)
    got = evaluate_twin(load(out), args.task, args.episodes, args.seed)
    return {"task": args.task, "variant": args.variant, "demos": args.demos, "seed": args.seed,
            "episodes": args.episodes, **got, "this_call_s": round(time.monotonic() - t0, 1),
            "threads": args.threads, "load_avg_1m": round(os.getloadavg()[0], 2),
            "run": str(out.relative_to(ROOT))}  # fmt: skip


def _drq_vpdd(args: argparse.Namespace, base: Path, name: str, t0: float) -> dict[str, Any]:
    import numpy as np
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.policies.vpdd import label_store

    vpdd = base / f"{args.task}_pre_demos{args.demos}_seed{args.seed}"
    if not (vpdd / "model.pt").exists():
        raise SystemExit(f"{vpdd} is missing: run the pre variant with the same task, demos "
                         f"and seed first")  # fmt: skip
    store = base / f"{name}.zarr"
    if not store.exists():
        label_store(vpdd, _store(args.task), store, demos=_store(args.task),
                    max_demos=args.demos, skip_videos=args.demos, seed=args.seed)
    # the labels against the scripted expert's recorded actions (position part, agent steps)
    labelled, truth = EpisodeStore.open(store), EpisodeStore.open(_store(args.task))
    ok = truth.successful_episodes()
    cos, mae = [], []
    for j, i in zip(range(args.demos, labelled.n_episodes), ok[args.demos:], strict=False):
        a = np.asarray(labelled.episode(j, ["action"])["action"])[:-1, :3]
        b = np.asarray(truth.episode(i, ["action"])["action"])[:-1, :3]
        cos.append(float(((a * b).sum(1) / (np.linalg.norm(a, axis=1)
                                             * np.linalg.norm(b, axis=1) + 1e-8)).mean()))
        mae.append(float(np.abs(a - b).mean()))
    row = _bc(args, base / name, t0, store, 0)
    return {**row, "variant": "drq_vpdd", "labels_cos_to_expert": round(float(np.mean(cos)), 3),
            "labels_mae_to_expert": round(float(np.mean(mae)), 3),
            "vpdd": str(vpdd.relative_to(ROOT))}  # fmt: skip


def _bc(args: argparse.Namespace, out: Path, t0: float, demos: Path | None = None,
        max_demos: int | None = None) -> dict[str, Any]:
    from bench_bc_ceiling import start_config  # the same start as the BC-ceiling benchmark
    from video2reward.policies.train import train

    cfg = start_config(out, args.seed, args.episodes, demos or _store(args.task),
                       args.demos if max_demos is None else max_demos,
                       20 if args.smoke else 1000, task=args.task)  # fmt: skip
    train(cfg)
    with (out / "eval.csv").open() as f:
        first = next(csv.DictReader(f))  # frame 0: after pretraining, before any robot time
    return {"task": args.task, "variant": "bc", "demos": args.demos, "seed": args.seed,
            "episodes": args.episodes, "success_rate": float(first["success_rate"]),
            "success_at_end": float(first["success_at_end"]),
            "this_call_s": round(time.monotonic() - t0, 1), "threads": args.threads,
            "load_avg_1m": round(os.getloadavg()[0], 2), "run": str(out.relative_to(ROOT))}


def save(row: dict[str, Any]) -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = ("task", "variant", "demos", "seed")
    rows = [r for r in rows if tuple(r[k] for k in key) != tuple(row[k] for k in key)] + [row]
    RESULTS.write_text(json.dumps(sorted(rows, key=lambda r: tuple(str(r[k]) for k in key)),
                                  indent=1))  # fmt: skip


def report() -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    print(f"{'task':<13} {'demos':>5} {'pre':>11} {'scratch':>11} {'bc':>11} {'pre/scratch':>11}")
    for task in TASKS:
        for n in sorted({r["demos"] for r in rows if r["task"] == task}):
            by = {v: [r["success_rate"] for r in rows if (r["task"], r["demos"], r["variant"])
                      == (task, n, v)] for v in ("pre", "scratch", "bc")}  # fmt: skip
            mean = {v: sum(s) / len(s) if s else None for v, s in by.items()}
            cells = [f"{m:.2f} (n={len(by[v])})" if m is not None else "-"
                     for v, m in mean.items()]  # fmt: skip
            ratio = (f"{mean['pre'] / mean['scratch']:.2f}" if mean["pre"] is not None
                     and mean["scratch"] else "-")  # fmt: skip
            print(f"{task:<13} {n:>5} {cells[0]:>11} {cells[1]:>11} {cells[2]:>11} {ratio:>11}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=TASKS)
    p.add_argument("--variant", default="pre", choices=("pre", "scratch", "bc", "drq_vpdd"))
    p.add_argument("--demos", type=int, default=10, help="demonstrations with actions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; nothing is recorded")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.episodes = 2
    if args.report:
        report()
        return 0
    os.environ.setdefault("MUJOCO_GL", "egl")
    row = run(args)
    print(json.dumps(row))
    if not args.smoke:
        save(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
