"""Compare `v2r rl train` runs: evaluation success and wall time against env frames, one PNG.

    .venv/bin/python benchmarks/plot_rl_runs.py oracle=runs/rl_reach vip=runs/rl/rl_reach_vip \\
        rank2reward=runs/rl/rl_reach_r2r --out benchmarks/results/rl_reach_cpu.png [--bar 0.8]

Each argument is ``label=<run folder or eval.csv>``. Prints, per run, the first evaluation at
or above ``--bar`` (frames, wall minutes), the best evaluation, and the mean success over the
last five evaluations; writes the plot (success rate, and wall minutes, against frames).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def read_eval(src: Path) -> dict[str, np.ndarray]:
    path = src / "eval.csv" if src.is_dir() else src
    if not path.is_file():
        raise SystemExit(f"{path}: no eval.csv (is it a `v2r rl train` run folder?)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no evaluations yet")
    return {k: np.array([float(r[k]) for r in rows]) for k in ("frames", "wall_s", "success_rate")}


def summarise(label: str, ev: dict[str, np.ndarray], bar: float) -> str:
    hit = np.flatnonzero(ev["success_rate"] >= bar)
    first = (f"first >= {bar:.0%} at {ev['frames'][hit[0]] / 1e3:.1f}k frames, "
             f"{ev['wall_s'][hit[0]] / 60:.0f} min" if len(hit) else f"never >= {bar:.0%}")
    best = int(np.argmax(ev["success_rate"]))
    return (f"{label:<14} {first}; best {ev['success_rate'][best]:.1f} at "
            f"{ev['frames'][best] / 1e3:.1f}k; last 5 evals mean "
            f"{ev['success_rate'][-5:].mean():.2f} (to {ev['frames'][-1] / 1e3:.1f}k frames, "
            f"{ev['wall_s'][-1] / 60:.0f} min)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=PATH")
    ap.add_argument("--out", type=Path, default=Path("runs/rl_runs.png"))
    ap.add_argument("--bar", type=float, default=0.8)
    args = ap.parse_args()
    runs: dict[str, dict[str, np.ndarray]] = {}
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep or not path:
            raise SystemExit(f"expected LABEL=PATH, got {spec!r}")
        runs[label] = read_eval(Path(path))
    for label, ev in runs.items():
        print(summarise(label, ev, args.bar))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, ev in runs.items():
        a1.plot(ev["frames"] / 1e3, ev["success_rate"], marker="o", ms=3, label=label)
        a2.plot(ev["frames"] / 1e3, ev["wall_s"] / 60, label=label)
    a1.axhline(args.bar, color="grey", ls="--", lw=0.8)
    a1.set(xlabel="env frames (k)", ylabel="eval success rate", ylim=(-0.05, 1.05))
    a2.set(xlabel="env frames (k)", ylabel="wall time (min)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
