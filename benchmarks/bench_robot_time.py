"""Robot time: frames until the policy succeeds, with only what a lab has.

    .venv/bin/python benchmarks/bench_robot_time.py --task reach --demos 50 --seed 0
    .venv/bin/python benchmarks/bench_robot_time.py --task reach --demos 0 --seed 0   # baseline
    .venv/bin/python benchmarks/bench_robot_time.py --report      # table + curves of all rows

Each run: ``v2r sim demos`` (50 scripted experts of the task, with actions), a reward model
trained on their videos, then ``v2r rl train`` with the CPU agent sizes, the learned reward and
the success the model calls (``reward.success=model``), and ``--demos`` of those episodes in
replay with the BC term (0: today's DrQ-v2, no demonstrations). The twin's predicate only
evaluates: 10 episodes every ``--eval-every`` frames.

``frames_to_90`` is the frame count of the first of 3 consecutive evaluations at >= 90% (None
when not reached), ``mean_success_after`` the mean evaluation success from there on. Rows go to
``benchmarks/results/robot_time.json``, one per (task, reward, demos, interventions, seed);
a run resumes where it stopped (``resume=true``), so a killed benchmark loses nothing.
At 10 Hz a frame is 0.1 s of robot time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "robot_time.json"
BARS = {"reach": 10_000, "push": 40_000, "button-press": 25_000}  # frames (the bar)


def _v2r(*args: str) -> None:
    cmd = [sys.executable, "-m", "video2reward.cli.main", *args]
    print("$ v2r", " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def frames_to_90(rows: list[dict[str, str]], need: int = 3) -> tuple[int | None, float | None]:
    """Frames of the first of ``need`` consecutive evaluations at >= 0.9, and the mean
    evaluation success from there on."""
    ok = [float(r["success_rate"]) >= 0.9 for r in rows]
    for i in range(len(rows) - need + 1):
        if all(ok[i : i + need]):
            after = [float(r["success_rate"]) for r in rows[i:]]
            return int(rows[i]["frames"]), sum(after) / len(after)
    return None, None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from video2reward.policies.demos import DemoSpec
    from video2reward.policies.drqv2 import DrQV2Config
    from video2reward.policies.intervention import InterventionConfig
    from video2reward.policies.train import RewardSpec, TrainConfig, train

    base = ROOT / "runs" / "bench_robot_time" / args.task
    demos = base / "demos.zarr"
    reward = base / f"{args.reward}_{args.reward_steps}"
    if not demos.exists():
        _v2r("sim", "demos", f"task={args.task}", "episodes=50", f"out={demos}")
    policy_demos = demos
    if args.pointmap:  # the same scenes (same seeds) with the camera's depth beside colour
        policy_demos = base / "demos_depth.zarr"
        if not policy_demos.exists():
            _v2r("sim", "demos", f"task={args.task}", "episodes=50", "depth=true",
                 f"out={policy_demos}")
    if not (reward / "model.pt").exists():
        _v2r("reward", "train", f"method={args.reward}", f"data={demos}", f"out={reward}",
             "threads=1", f"method.steps={args.reward_steps}")  # fmt: skip
    tag = ("_xyz" if args.pointmap else "") + (f"_{args.tag}" if args.tag else "")
    iv = "_int" if args.interventions else ""
    name = f"{args.reward}{args.reward_steps}_demos{args.demos}{iv}{tag}_seed{args.seed}"
    out = base / name
    with_demos = args.demos > 0
    # configs/rl_agent/cpu.yaml's sizes; with demonstrations the policy acts from the start
    # (no uniform-random phase) and updates begin after a few episodes.
    agent = DrQV2Config(
        batch_size=128, hidden_dim=256, lr=3e-4, num_expl_steps=0 if with_demos else 1000,
        stddev_schedule_steps=10_000, stddev_init=args.stddev_init,
        stddev_final=min(0.1, args.stddev_init),
        bc_weight=args.bc_weight if with_demos else 0.0, bc_decay_steps=args.bc_decay_steps,
        bc_encoder=args.bc_encoder, updates_per_step=args.updates_per_step,
        shift_pad_px=3 if args.agent_px == 48 else 4,
    )  # fmt: skip
    rspec = RewardSpec(
        source="model", ckpt=str(reward), success=args.success, scale=args.reward_scale,
        disc_update_every_steps=args.disc_every if args.reward == "rank2reward" else 0,
        disc_steps=args.disc_steps,
        alpha=args.alpha if args.reward == "rank2reward" else None,
    )  # fmt: skip
    cfg = TrainConfig(
        task=args.task, out=str(out), seed=args.seed, image_size=84, agent_image_size=args.agent_px,
        threads=1, num_train_frames=args.frames or BARS[args.task],
        seed_steps=250 if with_demos else 1000, eval_every_frames=args.eval_every,
        num_eval_episodes=args.eval_episodes, checkpoint_every_frames=args.eval_every,
        replay_capacity_steps=100_000, resume=out.exists(), video=False,
        reward=rspec, agent=agent, success_bonus=args.success_bonus,
        end_on_success=args.end_on_success,
        pointmap=args.pointmap,
        demos=DemoSpec(path=str(policy_demos) if with_demos else "", max_episodes=args.demos,
                       pretrain_updates=args.pretrain if with_demos else 0,
                       add_successes=args.self_imitation),
        intervention=InterventionConfig(enabled=args.interventions),
    )  # fmt: skip
    t0 = time.monotonic()
    summary = train(cfg)
    with (out / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    f90, after = frames_to_90(rows)
    return {
        "task": args.task, "reward": args.reward, "demos": args.demos,
        "interventions": args.interventions, "seed": args.seed,
        "variant": ("xyz_" if args.pointmap else "") + args.tag, "pointmap": args.pointmap,
        "bc_weight": agent.bc_weight, "bc_decay_steps": agent.bc_decay_steps,
        "bc_encoder": agent.bc_encoder, "agent_px": args.agent_px,
        "updates_per_step": agent.updates_per_step, "alpha": rspec.alpha,
        "disc_every": rspec.disc_update_every_steps, "success_bonus": cfg.success_bonus,
        "reward_scale": rspec.scale,
        "reward_steps": args.reward_steps, "pretrain_updates": cfg.demos.pretrain_updates,
        "stddev_init": args.stddev_init, "self_imitation": args.self_imitation,
        "success_source": args.success, "end_on_success": args.end_on_success,
        "frames_to_90": f90,
        "intervened_steps": summary["intervened_steps"], "takeovers": summary["takeovers"],
        "mean_success_after": after, "final_success": rows[-1]["success_rate"] if rows else None,
        "frames": summary["frames"], "wall_s": summary["wall_s"],
        "this_call_s": round(time.monotonic() - t0, 1),
        "oracle_in_learning": summary["oracle_in_learning"],
        "success_progress": summary["success_progress"], "run": str(out.relative_to(ROOT)),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "eval_success": [(int(r["frames"]), float(r["success_rate"])) for r in rows],
    }  # fmt: skip


def save(row: dict[str, Any]) -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = ("task", "reward", "reward_steps", "demos", "interventions", "variant", "seed")
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row.get(k) for k in key)]
    rows.append(row)
    rows.sort(key=lambda r: tuple(str(r.get(k)) for k in key))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1))


def report() -> None:
    rows = json.loads(RESULTS.read_text())
    print(f"{'task':<6} {'reward':<16} {'demos':>5} {'variant':<24} {'int.steps':>9} {'seed':>4} "
          f"{'to_90':>6} {'best':>5} {'mean':>5} {'final':>5} {'frames':>6} {'wall_s':>6} oracle")
    for r in rows:
        f90 = "-" if r["frames_to_90"] is None else str(r["frames_to_90"])
        evals = [s for f, s in r["eval_success"] if f > 0]
        iv = str(r.get("intervened_steps", 0)) if r["interventions"] else "-"
        name = f"{r['reward']}/{r.get('reward_steps', '?')}"
        print(f"{r['task']:<6} {name:<16} {r['demos']:>5} {r.get('variant') or '-':<24} {iv:>9} "
              f"{r['seed']:>4} {f90:>6} {max(evals, default=0):>5.2f} "
              f"{sum(evals) / max(len(evals), 1):>5.2f} {float(r['final_success']):>5.2f} "
              f"{r['frames']:>6} {r['wall_s']:>6.0f} {r['oracle_in_learning']}")  # fmt: skip
    for task in sorted({r["task"] for r in rows}):
        every = [r for r in rows if r["task"] == task and r["eval_success"]]
        mine = [r for r in every if not r["oracle_in_learning"]]
        # Settings run on two or more seeds (the comparisons) in the task's figure;
        # one-seed experiments in a figure of their own, so neither is a tangle of lines.
        seeds: dict[str, set[int]] = {}
        for r in mine:
            seeds.setdefault(_label(r), set()).add(r["seed"])
        multi = [r for r in mine if len(seeds[_label(r)]) > 1]
        single = [r for r in mine if len(seeds[_label(r)]) == 1]
        _plot(multi or single, f"twin {task}: learned reward and success only",
              RESULTS.parent / f"robot_time_{task}.png")
        if multi and single:
            _plot(single, f"twin {task}: one-seed experiments, learned reward and success only",
                  RESULTS.parent / f"robot_time_{task}_one_seed.png")
        # Runs that fed the twin's predicate to learning (diagnostics, never a headline): a
        # figure of their own, beside the learned-only runs evaluated on the same frames.
        oracle = [r for r in every if r["oracle_in_learning"]]
        if oracle:
            grid = [f for f, _ in oracle[0]["eval_success"]]
            beside = [r for r in mine if [f for f, _ in r["eval_success"]] == grid]
            _plot(oracle + beside, f"twin {task}: the twin's predicate in learning "
                  "(diagnostics) beside learned-only runs",
                  RESULTS.parent / f"robot_time_{task}_oracle_in_learning.png")
        # the reward methods side by side: a setting run with more than one reward
        for variant in sorted({r.get("variant") or "" for r in mine}):
            same = [r for r in mine if (r.get("variant") or "") == variant]
            if variant and len({r["reward"] for r in same}) > 1:
                _plot(same, f"twin {task}, {variant}: reward methods, same learner",
                      RESULTS.parent / f"robot_time_{task}_{variant}.png")


def _label(r: dict[str, Any]) -> str:
    """A setting: everything but the seed."""
    extra = (", interventions" if r["interventions"] else "") + (
        f", {r['variant']}" if r.get("variant") else "")
    extra += ", predicate in learning" if r["oracle_in_learning"] else ""
    return f"{r['reward']}/{r.get('reward_steps', '?')}, {r['demos']} demos{extra}"


def _plot(rows: list[dict[str, Any]], title: str, png: Path) -> None:
    """One line per setting: the mean over its seeds, the band between their min and max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_label(r), []).append(r)
    # room below the axes for the legend (two columns)
    fig, ax = plt.subplots(figsize=(8, 4.2 + 0.16 * ((len(groups) + 1) // 2)))
    for label, runs in groups.items():
        n = min(len(r["eval_success"]) for r in runs)
        x = np.array([f for f, _ in runs[0]["eval_success"][:n]])
        y = np.array([[s for _, s in r["eval_success"][:n]] for r in runs])
        line = ax.plot(x, y.mean(0), marker="o", ms=3,
                       label=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(x, y.min(0), y.max(0), color=line[0].get_color(), alpha=0.15)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="env frames (10 Hz: 0.1 s of robot time each)",
           ylabel="eval success (evaluation episodes)", title=title, ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"curve: {png}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=sorted(BARS))
    p.add_argument("--reward", default="rank2reward",
                   choices=["rank2reward", "vip", "viper", "diffusion_reward", "timerewarder"])
    p.add_argument("--demos", type=int, default=50, help="demonstrations in replay (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=0, help="budget (0: the task's bar)")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--stddev-init", type=float, default=1.0,
                   help="exploration stddev at the first agent step (DrQ-v2: 1.0)")
    p.add_argument("--bc-weight", type=float, default=0.4)
    p.add_argument("--bc-decay-steps", type=int, default=0)
    p.add_argument("--bc-encoder", action="store_true",
                   help="the BC term also trains the conv encoder on demo rows")
    p.add_argument("--agent-px", type=int, default=48,
                   help="pixels the agent sees (48: the CPU sizes; 84: the paper)")
    p.add_argument("--updates-per-step", type=int, default=1,
                   help="updates every agent.update_every_steps (2) agent steps")
    p.add_argument("--reward-steps", type=int, default=2000,
                   help="reward-model training steps (2000: README's Rank2Reward recipe)")
    p.add_argument("--alpha", type=float, default=0.1,
                   help="Rank2Reward: weight of the discriminator term (official 1.0)")
    p.add_argument("--disc-every", type=int, default=2000,
                   help="Rank2Reward: agent steps between discriminator updates (official 2000)")
    p.add_argument("--disc-steps", type=int, default=20,
                   help="Rank2Reward: discriminator steps per update (official 20)")
    p.add_argument("--success-bonus", type=float, default=0.0)
    p.add_argument("--reward-scale", type=float, default=1.0,
                   help="multiplies the learned reward (0: the success bonus alone, SERL's "
                        "sparse reward)")
    p.add_argument("--success", default="model", choices=["model", "oracle", "key"],
                   help="who calls success for the bonus and labels: the reward model, the "
                        "twin's predicate per step (a diagnostic: the row says "
                        "oracle_in_learning; demos count as successes on their last step), "
                        "or the operator's key simulated by the predicate (one "
                        "label per episode; demos are labelled successes; oracle_in_learning)")
    p.add_argument("--end-on-success", action="store_true",
                   help="the success call ends the episode at the step it fires on, terminal "
                        "(SERL, HIL-SERL; with --success key: the key pressed the moment the "
                        "twin's predicate sees the goal reached)")
    p.add_argument("--interventions", action="store_true",
                   help="a scripted operator (the task's expert) takes over on stalls")
    p.add_argument("--self-imitation", action="store_true",
                   help="episodes the model calls successful join the demonstrations")
    p.add_argument("--pretrain", type=int, default=0,
                   help="updates on the demos alone before the first frame (no robot time)")
    p.add_argument("--pointmap", action="store_true",
                   help="the policy also sees each pixel's base-frame position (the camera's "
                        "depth and calibration); demos recorded with depth")
    p.add_argument("--tag", default="", help="names a variant (kept apart in the results)")
    p.add_argument("--report", action="store_true", help="print the table and plot the curves")
    args = p.parse_args()
    if args.report:
        report()
        return 0
    os.environ.setdefault("MUJOCO_GL", "egl")
    row = run(args)
    save(row)
    print(json.dumps({k: v for k, v in row.items() if k != "eval_success"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
