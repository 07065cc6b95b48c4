"""Does the goal check tell this task's goal photos from another scene's? (rewards/base.py)

    .venv/bin/python benchmarks/bench_goal_check.py --split dev --runs runs/rq_dev
    .venv/bin/python benchmarks/bench_goal_check.py --split val --runs runs/rq_val runs/rq_hp

Reads the stores and finished runs that ``bench_reward_quality.py`` leaves in ``--runs``
(``<task>_heldout.zarr`` and goal-conditioned runs named ``<task>_<method>...`` beside it,
Meta-World or twin; a task found in two folders takes the later one's). For every run it
computes the goal check's ratio (a goal image's distance to the nearest demo goal over the
demo goals' own spread; refused above ``GOAL_CHECK_RATIO``) for:
- the held-out expert episodes' goal frames of the same task: photos a lab could take, which
  should pass;
- their first frames: the scene before the task, the same cell;
- the held-out goal frames of every other task found: another task's goal photo.

Prints one line per run (largest own-goal ratio, smallest first-frame and other-task ratios,
fractions refused) and writes ``--json``. No training; a run of an older checkpoint without
the demos' goal set is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL_METHODS = ("vip", "uvd", "tcn", "hold_r", "hold_c")


def goal_frames(store: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The held-out experts' goal frames and first frames."""
    from video2reward.rewards.data import load_episodes
    from video2reward.rewards.evaluate import goal_frame

    data = load_episodes(store, 84)
    experts = [i for i, info in enumerate(data.infos) if info.success and info.kind == "expert"]
    return [goal_frame(data, i) for i in experts], [data.episode(i)[0] for i in experts]


def ratios(model: Any, imgs: list[np.ndarray]) -> np.ndarray:
    return np.array([model.goal_check(g).ratio for g in imgs])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", nargs="+", type=Path, required=True,
                   help="folders of bench_reward_quality.py stores and runs")
    p.add_argument("--split", default="", help="a label for the rows (dev, val, twin)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/goal_check.json",
                   help="rows are added here (same split and run replaced)")
    args = p.parse_args()
    import torch
    from video2reward.rewards.base import GOAL_CHECK_RATIO, CheckpointError, load_reward_model

    torch.set_num_threads(1)
    stores = {s.name.removesuffix("_heldout.zarr"): s
              for root in args.runs for s in sorted(root.glob("*_heldout.zarr"))}
    if len(stores) < 2:
        sys.exit(f"need held-out stores of at least two tasks in {args.runs}, found {list(stores)}")
    frames = {task: goal_frames(store) for task, store in stores.items()}
    rows: list[dict[str, Any]] = []
    for task, store in stores.items():
        runs = sorted(r for r in store.parent.glob(f"{task}_*")  # runs beside their store
                      if r.is_dir() and r.suffix != ".zarr"
                      and r.name[len(task) + 1:].startswith(GOAL_METHODS))
        for run in runs:
            try:
                model = load_reward_model(run, torch.device("cpu"))
            except CheckpointError as e:
                print(f"skipped {run}: {e}")
                continue
            if model.goal_check(frames[task][0][0]) is None:
                print(f"skipped {run}: no goal set (a checkpoint from before it)")
                continue

            own, first = ratios(model, frames[task][0]), ratios(model, frames[task][1])
            other = {t: ratios(model, f[0]) for t, f in frames.items() if t != task}
            every = np.concatenate(list(other.values()))
            closest = min(other, key=lambda t: other[t].min())
            row = {
                "split": args.split, "task": task, "run": str(run), "method": model.method,
                "own_goal_max": float(own.max()),
                "own_goal_refused": float((own > GOAL_CHECK_RATIO).mean()),
                "first_frame_min": float(first.min()),
                "first_frame_refused": float((first > GOAL_CHECK_RATIO).mean()),
                "other_task_min": float(every.min()), "other_task_closest": closest,
                "other_task_refused": float((every > GOAL_CHECK_RATIO).mean()),
                "other_task_refused_by_task": {t: float((r > GOAL_CHECK_RATIO).mean())
                                               for t, r in sorted(other.items())},
            }  # fmt: skip
            rows.append(row)
            print(f"{task:22s} {run.name:34s} own goals <= {row['own_goal_max']:5.2f} "
                  f"(refused {row['own_goal_refused']:.0%})  first frames >= "
                  f"{row['first_frame_min']:5.2f} (refused {row['first_frame_refused']:.0%})  "
                  f"other tasks >= {row['other_task_min']:5.2f} [{closest}] "
                  f"(refused {row['other_task_refused']:.0%})", flush=True)
    old = json.loads(args.json.read_text()) if args.json.exists() else []
    keep = [r for r in old if (r["split"], r["run"]) not in {(x["split"], x["run"]) for x in rows}]
    args.json.write_text(json.dumps(keep + rows, indent=1) + "\n")
    print(f"{len(rows)} runs; check ratio {GOAL_CHECK_RATIO:g}; rows in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
