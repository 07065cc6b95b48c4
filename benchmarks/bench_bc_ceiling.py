"""How far the demonstrations alone take the policy: evaluation success after pretraining on
them, before any robot time (frame 0 of a robot-time run).

    .venv/bin/python benchmarks/bench_bc_ceiling.py --pretrain 1000 --bc-encoder
    .venv/bin/python benchmarks/bench_bc_ceiling.py --pad 1 --px 48
    .venv/bin/python benchmarks/bench_bc_ceiling.py --demos d200.zarr --max-demos 200 --episodes 40
    .venv/bin/python benchmarks/bench_bc_ceiling.py --no-proprio --episodes 40 --seed 1
    .venv/bin/python benchmarks/bench_bc_ceiling.py --pointmap --episodes 40 --seed 0
    .venv/bin/python benchmarks/bench_bc_ceiling.py --episodes 40 --ensemble \
        pre1000_px48_pad3_bc2.5_seed0 pre1000_px48_pad3_bc2.5_seed1 ...

Uses the robot-time benchmark's reach demonstrations and Rank2Reward model
(runs/bench_robot_time/reach: run bench_robot_time.py once first), the CPU agent sizes and
its BC settings (weight 2.5), then 20 evaluation episodes by the twin's predicate (evaluation
only). Rows go to benchmarks/results/bc_ceiling_reach.json, one per variant.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bc_ceiling_reach.json"


def start_config(out: Path, seed: int, episodes: int, demos: Path, max_demos: int,
                 pretrain: int, task: str = "reach", px: int = 48, pad: int = 3,
                 bc_weight: float = 2.5, bc_encoder: bool = False, proprio: bool = True,
                 pointmap: bool = False, frame_stack: int = 3, action_repeat: int = 2) -> Any:
    """The DrQ-v2 learner's start from demonstrations (``pretrain`` updates on them, BC with
    its critic, the CPU agent sizes) as a one-frame ``v2r rl train`` run whose evaluation at
    frame 0 is the result; the task's Rank2Reward model of the robot-time benchmark rewards
    the demos. Shared with ``bench_vpdd.py``'s ``bc`` variant."""
    from video2reward.policies.demos import DemoSpec
    from video2reward.policies.drqv2 import DrQV2Config
    from video2reward.policies.train import RewardSpec, TrainConfig

    reward = ROOT / "runs" / "bench_robot_time" / task / "rank2reward_2000"
    if not (reward / "model.pt").exists():
        raise SystemExit(f"{reward} is missing: run bench_robot_time.py --task {task} first")
    agent = DrQV2Config(batch_size=128, hidden_dim=256, lr=3e-4, num_expl_steps=0,
                        stddev_schedule_steps=10_000, stddev_final=0.1, shift_pad_px=pad,
                        bc_weight=bc_weight, bc_encoder=bc_encoder)  # fmt: skip
    return TrainConfig(
        task=task, out=str(out), seed=seed, image_size=84, agent_image_size=px,
        threads=1, num_train_frames=1, seed_steps=250, eval_every_frames=1000,
        num_eval_episodes=episodes, replay_capacity_steps=10_000, video=False,
        progress_bar=False, resume=out.exists(), agent=agent, proprio=proprio, pointmap=pointmap,
        frame_stack=frame_stack, action_repeat=action_repeat,
        success_bonus=1.0, reward=RewardSpec(source="model", ckpt=str(reward), success="model",
                                             alpha=1.0),
        demos=DemoSpec(path=str(demos), max_episodes=max_demos, pretrain_updates=pretrain),
    )  # fmt: skip


def evaluate_ensemble(variants: list[str], episodes: int) -> dict[str, Any]:
    """The mean action of finished runs' actors (each its own encoder), acting together on the
    scenes every run's frame-0 evaluation used (episode seeds 1,000,000 + i): averaging
    policies trained on the same demos from different seeds. Runs must share pixels and
    proprio; evaluation only, nothing is trained."""
    from video2reward.data import keys
    from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
    from video2reward.policies.train import (
        PROPRIO_DIM,
        Observer,
        TrainConfig,
        evaluate,
        make_task_env,
    )

    runs = [ROOT / "runs" / "bench_bc_ceiling" / v for v in variants]
    missing = [str(r) for r in runs if not (r / "agent.pt").exists()]
    if missing:
        raise SystemExit(f"no finished run (agent.pt) in: {', '.join(missing)}")
    raws = [json.loads((r / "config.json").read_text()) for r in runs]
    if any(raw.get("pointmap") for raw in raws):
        raise SystemExit("ensembles of --pointmap runs are not supported (their env needs depth)")
    view = ("task", "image_size", "agent_image_size", "frame_stack", "proprio", "action_repeat")
    if len({tuple(raw[k] for k in view) for raw in raws}) > 1:
        raise SystemExit(f"the runs differ in one of {view}")
    # What evaluation reads (the view the runs share, the episode count); nothing is trained.
    cfg = TrainConfig(out=str(runs[0]), num_eval_episodes=episodes, video=False,
                      **{k: raws[0][k] for k in view})  # fmt: skip
    env = make_task_env(cfg.task, cfg.image_size, 0, cfg.control_hz)
    obs, _ = env.reset(seed=0)
    observer = Observer(cfg, None)
    c, h, w = observer.frame(obs).shape
    agents = []
    for run, raw in zip(runs, raws, strict=True):
        a = DrQV2Agent(DrQV2Config(**raw["agent"]), (c * cfg.frame_stack, h, w), keys.ACTION_DIM,
                       PROPRIO_DIM if cfg.proprio else 0)  # fmt: skip
        a.load(run / "agent.pt")
        agents.append(a)

    def act(o: Any, p: Any, step: int) -> Any:
        return sum(a.act(o, p, step, True) for a in agents) / len(agents)

    return evaluate(cfg, env, observer, act, 0, 1_000_000, None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain", type=int, default=1000, help="updates on the demos alone")
    p.add_argument("--bc-encoder", action="store_true", help="BC also trains the encoder")
    p.add_argument("--pad", type=int, default=3, help="random-shift padding, pixels")
    p.add_argument("--px", type=int, default=48, help="pixels the agent sees")
    p.add_argument("--bc-weight", type=float, default=2.5)
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-proprio", action="store_true", help="pixels only (no ee_pos/gripper)")
    p.add_argument("--frame-stack", type=int, default=3, help="frames per observation")
    p.add_argument("--action-repeat", type=int, default=2,
                   help="twin frames per agent step (the learner node acts every frame: 1)")
    p.add_argument("--pointmap", action="store_true",
                   help="the policy also sees each pixel's base-frame position (depth + "
                        "calibration); demos from demos_depth.zarr (made once if missing)")
    p.add_argument("--max-demos", type=int, default=50, help="demonstrations used")
    p.add_argument("--demos", default=None,
                   help="a demo store other than the benchmark's (its name joins the variant's)")
    p.add_argument("--ensemble", nargs="+", default=None, metavar="VARIANT",
                   help="evaluate the mean action of these finished runs instead of training")
    args = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.ensemble:
        t0 = time.monotonic()
        res = evaluate_ensemble(args.ensemble, args.episodes)
        name = f"ensemble{len(args.ensemble)}_" + "+".join(args.ensemble)
        save_row({"variant": name, "members": args.ensemble, "episodes": args.episodes,
                  "success": res["success_rate"], "success_at_end": res["success_at_end"],
                  "wall_s": round(time.monotonic() - t0, 1)})  # fmt: skip
        return 0
    from video2reward.policies.train import train

    base = ROOT / "runs" / "bench_robot_time" / "reach"
    reward, demos = base / "rank2reward_2000", base / "demos.zarr"
    tag = ""
    if args.pointmap and not args.demos:
        demos = base / "demos_depth.zarr"  # the same scenes as demos.zarr, with depth
        if not demos.exists():
            import subprocess

            subprocess.run([sys.executable, "-m", "video2reward.cli.main", "sim", "demos",
                            "task=reach", "episodes=50", "depth=true", f"out={demos}"],
                           check=True)  # fmt: skip
    if args.demos:
        demos, tag = Path(args.demos).resolve(), f"_{Path(args.demos).stem}"
    if not (reward / "model.pt").exists() or not demos.exists():
        print(f"{base} lacks demos.zarr or rank2reward_2000: run bench_robot_time.py first")
        return 2
    name = (f"pre{args.pretrain}_px{args.px}_pad{args.pad}_bc{args.bc_weight:g}"
            f"{'_enc' if args.bc_encoder else ''}{tag}"
            f"{f'_n{args.max_demos}' if args.max_demos != 50 else ''}"
            f"{'_noproprio' if args.no_proprio else ''}{'_xyz' if args.pointmap else ''}"
            f"{f'_fs{args.frame_stack}' if args.frame_stack != 3 else ''}"
            f"{f'_ar{args.action_repeat}' if args.action_repeat != 2 else ''}"
            f"_seed{args.seed}")
    out = ROOT / "runs" / "bench_bc_ceiling" / name
    cfg = start_config(out, args.seed, args.episodes, demos, args.max_demos, args.pretrain,
                       px=args.px, pad=args.pad, bc_weight=args.bc_weight,
                       bc_encoder=args.bc_encoder, proprio=not args.no_proprio,
                       pointmap=args.pointmap, frame_stack=args.frame_stack,
                       action_repeat=args.action_repeat)  # fmt: skip
    t0 = time.monotonic()
    train(cfg)
    with (out / "eval.csv").open() as f:
        first = next(csv.DictReader(f))  # the evaluation at frame 0, after pretraining
    row = {"variant": name, "pretrain": args.pretrain, "px": args.px, "pad": args.pad,
           "bc_weight": args.bc_weight, "bc_encoder": args.bc_encoder, "seed": args.seed,
           "demos": str(demos.relative_to(ROOT)) if demos.is_relative_to(ROOT) else str(demos),
           "max_demos": args.max_demos, "proprio": not args.no_proprio, "episodes": args.episodes,
           "pointmap": args.pointmap, "frame_stack": args.frame_stack,
           "action_repeat": args.action_repeat,
           "success": float(first["success_rate"]),
           "success_at_end": float(first["success_at_end"]),
           "wall_s": round(time.monotonic() - t0, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}
    save_row(row)
    return 0


def save_row(row: dict[str, Any]) -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [r for r in rows if r["variant"] != row["variant"]] + [row]
    RESULTS.write_text(json.dumps(sorted(rows, key=lambda r: r["variant"]), indent=1))
    print(json.dumps(row))


if __name__ == "__main__":
    sys.exit(main())
