"""How well a reward model's success call separates "at the target" from "near it" (twin, reach).

    .venv/bin/python benchmarks/bench_success_call.py --reward runs/main/reward

The twin's reach expert drives to the target plus an offset drawn uniformly in 0-8 cm (in a
random direction), so episodes end at the target, beside it and a little away from it: the
states a policy trained on a learned reward visits. Every frame is scored by the reward model;
the twin's predicate (tool within 3 cm) and the tool-target distance are the truth. Printed:
AUROC of progress against the predicate, the progress by distance band, and the precision and
recall of the success call (progress >= threshold) for the checkpoint's calibrated threshold
and for other quantiles of the demonstrations' last-frame progress (needs --demos). The
predicate is used here to evaluate the call, never to learn.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BANDS_M = (0.0, 0.015, 0.03, 0.045, 0.06, 0.08, 0.12, 1.0)


def rollouts(episodes: int, seed: int, max_offset_m: float) -> list[dict[str, np.ndarray]]:
    from video2reward.data import keys
    from video2reward.sim.env import make_env
    from video2reward.sim.experts import make_policy

    env = make_env("reach", image_size=84, seed=seed, control_hz=10.0)
    rng = np.random.default_rng(seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        pol = make_policy(env, "expert", rng)
        pol.reset()
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.0, max_offset_m)
        pol.goal = env.config.envelope.box.clip(pol.goal + offset)
        frames, success, dist = [obs[keys.OBS_IMAGE]], [False], [np.nan]
        done = False
        while not done:
            obs, r, term, trunc, info = env.step(pol(obs))
            frames.append(obs[keys.OBS_IMAGE])
            success.append(bool(info.get("success", False)))
            dist.append(-float(r))  # reach's oracle reward is minus the tool-target distance
            done = term or trunc
        out.append({"frames": np.stack(frames), "success": np.array(success),
                    "dist": np.array(dist)})  # fmt: skip
    env.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reward", required=True, help="reward model run folder or .pt")
    p.add_argument("--demos", default="", help="the demos the model was trained on (quantiles)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--max-offset-cm", type=float, default=8.0)
    p.add_argument("--out", default="", help="write the figures as JSON here")
    args = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch
    from video2reward.rewards.base import load_reward_model
    from video2reward.rewards.evaluate import auroc

    torch.set_num_threads(1)
    model = load_reward_model(args.reward, torch.device("cpu"))
    eps = rollouts(args.episodes, args.seed, args.max_offset_cm / 100)
    prog = np.concatenate([model.score(e["frames"]).progress[1:] for e in eps])
    succ = np.concatenate([e["success"][1:] for e in eps])
    dist = np.concatenate([e["dist"][1:] for e in eps])
    res: dict[str, Any] = {"reward": str(args.reward), "method": model.method,
                           "frames": len(prog), "success_frames": int(succ.sum()),
                           "auroc": auroc(prog[succ], prog[~succ])}  # fmt: skip
    bands = []
    for lo, hi in itertools.pairwise(BANDS_M):
        m = (dist >= lo) & (dist < hi)
        if m.any():
            bands.append({"cm": f"{lo * 100:.1f}-{hi * 100:.1f}", "frames": int(m.sum()),
                          "progress_p10": float(np.quantile(prog[m], 0.1)),
                          "progress_median": float(np.median(prog[m]))})  # fmt: skip
    res["bands"] = bands
    thresholds: dict[str, float] = {}
    if model.success_progress is not None:
        thresholds["checkpoint"] = model.success_progress
    if args.demos:
        from video2reward.rewards.data import load_episodes

        demos = load_episodes(args.demos, model.config.image_size_px).demos()
        last = np.array([model.score(demos.episode(i)).progress[-1] for i in range(len(demos))])
        for q in (0.1, 0.25, 0.5, 0.75):
            thresholds[f"demo_last_q{int(q * 100)}"] = float(np.quantile(last, q))
    calls = []
    for name, thr in thresholds.items():
        called = prog >= thr
        tp = int((called & succ).sum())
        calls.append({"threshold": name, "progress": round(thr, 4),
                      "precision": tp / max(int(called.sum()), 1),
                      "recall": tp / max(int(succ.sum()), 1),
                      "called_frames": int(called.sum())})  # fmt: skip
    res["calls"] = calls
    print(f"{model.method}: {res['frames']} frames, {res['success_frames']} within 3 cm, "
          f"AUROC(progress vs predicate) {res['auroc']:.3f}")  # fmt: skip
    print(f"{'distance cm':<12} {'frames':>6} {'p10':>7} {'median':>7}")
    for b in bands:
        print(f"{b['cm']:<12} {b['frames']:>6} {b['progress_p10']:>7.3f} "
              f"{b['progress_median']:>7.3f}")  # fmt: skip
    print(f"{'threshold':<16} {'progress':>8} {'precision':>9} {'recall':>6} {'called':>6}")
    for c in calls:
        print(f"{c['threshold']:<16} {c['progress']:>8.3f} {c['precision']:>9.2f} "
              f"{c['recall']:>6.2f} {c['called_frames']:>6}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
