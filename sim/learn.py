"""``v2r sim learn``: learn a twin task from a reward trained on twin demos, end to end.

    v2r sim learn task=reach episodes=30 out=runs/main

1. ``v2r sim demos``: expert demonstrations of the task in the twin (``out/demos.zarr``);
2. ``v2r reward train``: a reward model on those videos (``out/reward/``);
3. ``v2r launch sim.launch.xml``: the ROS 2 learning graph (twin, xArm driver, reward node,
   DrQ-v2 learner) for ``episodes`` episodes, one progress line per episode
   (``out/learner/``: agent, replay, ``train_curve.png``). The learner's demo buffer holds the
   same demos with their actions (``demos_in_replay``): ``pretrain_updates`` updates on them
   before the first frame, then half of every batch, with the BC term of the learner's params;
   VIPER and Diffusion Reward are scored by the learner at each episode's end
   (``episode_rewards:=true``: no reward node);
4. ``v2r launch eval.launch.xml use_twin:=true``: the policy alone for ``eval_episodes``
   (``eval_summary.json``, ``eval_curve.png``, ``eval_last_episode.mp4``).

Each step is skipped when its output exists, so a run resumes where it stopped. Learning uses
the reward model's reward and success call only; the twin's predicate scores the evaluation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from video2reward.configs.compose import compose, run_cli, to_dataclass
from video2reward.rewards.base import METHODS, method_class
from video2reward.sim.tasks import TASKS


@dataclass(frozen=True)
class LearnConfig:
    task: str = "reach"
    out: str = "runs/main"
    demos: int = 50
    reward: str = "rank2reward"
    reward_steps: int | None = None
    episodes: int = 30
    eval_episodes: int = 10
    episode_steps: int = 50
    # The demos (with their actions) also seed the learner's demo buffer: updates on them
    # alone before the first frame (no robot time), then half of every batch.
    demos_in_replay: bool = True
    pretrain_updates: int = 1000
    # Exploration noise at the first agent step when the policy starts pretrained on the
    # demos (DrQ-v2's 1.0 is for a policy that starts random). Twin reach, seed 0, 20
    # evaluation episodes every 500 frames (docs/robot_time.md): from 1.0, 0.75 at frame 0,
    # then 0.65 0.55 0.65 0.50 0.55 0.80; from 0.2, 0.55, then 0.55 0.60 0.80 0.70 0.80 0.70.
    # One seed each: the lower noise kept what pretraining gave, the DrQ-v2 noise lost it.
    explore_stddev: float = 0.2
    # The reward model's success call ends a training episode, its step terminal (SERL;
    # LearnSpec.end_on_success). Off: episodes run episode_steps.
    end_on_success: bool = False
    # The policy also sees where each pixel is in the base frame (data/pointmap.py): the
    # demos are recorded with depth, the twin publishes depth aligned to colour, and the
    # learner places pixels with the demo store's camera calibration. Its learner params are
    # the CPU preset with POINTMAP_PARAMS, written to out/learner_params.yaml.
    pointmap: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASKS)}")
        if self.reward not in METHODS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {sorted(METHODS)}")
        if self.pretrain_updates < 0:
            raise ValueError("pretrain_updates must be >= 0")
        if not 0.1 <= self.explore_stddev <= 1.0:
            raise ValueError("explore_stddev must be in [0.1, 1] (the noise decays to 0.1)")
        for name in ("demos", "episodes", "episode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_episodes < 0:
            raise ValueError("eval_episodes must be >= 0")


# What a point-map run changes in the CPU learner preset (configs/learner_cpu.yaml): the BC
# term also trains the encoder and weighs 10 (twin reach, 1000 pretraining updates, 40 scenes:
# docs/robot_time.md "Where each pixel is"; with the critic-trained encoder and BC 2.5 the
# learner does not use the point map).
POINTMAP_PARAMS = {"pointmap": True, "bc_encoder": True, "bc_weight": 10.0}


def pointmap_params(out: Path) -> Path:
    """The CPU preset with :data:`POINTMAP_PARAMS`, as the run's params file."""
    import importlib.resources

    import yaml

    preset = importlib.resources.files("video2reward.configs") / "learner_cpu.yaml"
    params = yaml.safe_load(preset.read_text())
    params["learner"]["ros__parameters"].update(POINTMAP_PARAMS)
    path = out / "learner_params.yaml"
    path.write_text("# configs/learner_cpu.yaml with sim/learn.py POINTMAP_PARAMS\n"
                    + yaml.safe_dump(params, sort_keys=False))  # fmt: skip
    return path


def _v2r(*args: str) -> None:
    cmd = [sys.executable, "-m", "video2reward.cli.main", *args]
    print(f"\n$ v2r {' '.join(args)}", flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`v2r {' '.join(args)}` failed with exit code {done.returncode}")


def learn(cfg: LearnConfig) -> dict[str, object]:
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    demos, reward, learner = out / "demos.zarr", out / "reward", out / "learner"
    if not demos.exists():
        _v2r("sim", "demos", f"task={cfg.task}", f"episodes={cfg.demos}", f"out={demos}",
             f"depth={str(cfg.pointmap).lower()}")
    if not (reward / "model.pt").exists():
        steps = [] if cfg.reward_steps is None else [f"method.steps={cfg.reward_steps}"]
        _v2r("reward", "train", f"method={cfg.reward}", f"data={demos}", f"out={reward}",
             *steps)
    # sim.launch.xml's fault_timeout_s (120 s) ends the run on a fault nobody clears: in the
    # twin there is no operator to call clear_fault.
    common = [f"task:={cfg.task}", f"reward_ckpt:={reward}", f"out:={learner}",
              f"episode_steps:={cfg.episode_steps}"]
    if cfg.pointmap:
        common += ["pointmap:=true", f"learner_params:={pointmap_params(out)}"]
    if method_class(cfg.reward).cumulative_progress:
        # VIPER, Diffusion Reward: the reward node refuses them (a window of earlier frames,
        # progress over an episode); the learner scores each finished episode itself
        common.append("episode_rewards:=true")
    if not (learner / "train_summary.json").exists():
        seed = ([f"demos:={demos}", f"pretrain_updates:={cfg.pretrain_updates}",
                 f"stddev_init:={cfg.explore_stddev}"] if cfg.demos_in_replay else [])
        _v2r("launch", "sim.launch.xml", *common, *seed, f"max_episodes:={cfg.episodes}",
             f"end_on_success:={str(cfg.end_on_success).lower()}")
    if cfg.eval_episodes and not (learner / "eval_summary.json").exists():
        _v2r("launch", "eval.launch.xml", "use_twin:=true", "robot_ip:=127.0.0.1",
             "success_source:=topic", *common, f"max_episodes:={cfg.eval_episodes}")
    result: dict[str, object] = {"out": str(out)}
    for name in ("train", "eval"):
        f = learner / f"{name}_summary.json"
        if f.exists():
            result[name] = json.loads(f.read_text())
    result["curves"] = [str(p) for p in sorted(learner.glob("*_curve.png"))]
    result["videos"] = [str(p) for p in sorted(learner.glob("*.mp4"))]
    return result


def _run(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    cfg = to_dataclass(LearnConfig, compose("sim_learn", overrides))
    try:
        result = learn(cfg)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    """The evaluation first (the twin's predicate, the policy alone), then training and paths."""
    lines = []
    ev, tr = result.get("eval"), result.get("train")
    if isinstance(ev, dict):
        n, rate = int(ev.get("episodes", 0)), float(ev.get("success_rate", 0.0))
        lines.append(f"evaluation: the policy reached the target in {round(rate * n)}/{n} "
                     "episodes (the twin's success predicate; it never fed learning)")  # fmt: skip
    if isinstance(tr, dict):
        lines.append(f"training: {tr.get('episodes')} episodes, success as the reward model "
                     f"called it {float(tr.get('success_rate', 0.0)):.0%} (last 10: "
                     f"{float(tr.get('success_rate_last_10', 0.0)):.0%})")  # fmt: skip
    out = Path(str(result["out"]))
    lines += [f"curves: {', '.join(map(str, result['curves'])) or '-'}",
              f"videos: {', '.join(map(str, result['videos'])) or '-'}",
              f"summaries: {out / 'learner' / 'train_summary.json'}, "
              f"{out / 'learner' / 'eval_summary.json'}"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return run_cli(_run, argv)
