"""The ``v2r`` command: one entry point, subcommands with Hydra-style ``key=value`` overrides.

    v2r --help
    v2r sim demos task=push episodes=50 out=demos.zarr
    v2r reward train method=vip data=demos.zarr out=runs/vip

Each subcommand lives in the module that owns the work and is imported only when it runs,
so ``v2r --help`` stays fast and a missing optional dependency (rclpy) only affects the
commands that need it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

# (group, name) -> ("module:function", one-line help). A function takes argv (list[str]) and
# returns an exit code.
COMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("sim", "demos"): (
        "video2reward.sim.demos:main",
        "generate scripted demos in the twin into a zarr store (+ mp4s, summary)",
    ),
    ("sim", "learn"): (
        "video2reward.sim.learn:main",
        "demos -> reward -> ROS 2 learning graph in the twin -> evaluation, end to end",
    ),
    ("reward", "train"): ("video2reward.rewards.cli:train_main", "train a reward model on videos"),
    ("reward", "score"): (
        "video2reward.rewards.cli:score_main",
        "per-frame reward and progress of a video (--json)",
    ),
    ("reward", "eval"): (
        "video2reward.rewards.cli:eval_main",
        "Spearman, AUROC, counterfactual-goal check + plots",
    ),
    ("sim", "emulator"): (
        "video2reward.sim.emulator_netns:main",
        "xArm controller emulator on the twin + a client, in a private netns (-- cmd ...)",
    ),
    ("camera", "record"): (
        "video2reward.sim.emulator_camera:main",
        "record twin renders as a RealSense .db3 (plays through rs.pipeline())",
    ),
    ("rl", "train"): (
        "video2reward.policies.cli:train_main",
        "DrQ-v2 on a twin task with the oracle or a learned reward (resumable)",
    ),
    ("policy", "pretrain"): (
        "video2reward.policies.cli:pretrain_main",
        "VPDD: tokenizer + video diffusion pre-trained on videos without actions",
    ),
    ("policy", "finetune"): (
        "video2reward.policies.cli:finetune_main",
        "VPDD: fine-tune on demonstrations with actions (ckpt='' : no video pre-training)",
    ),
    ("policy", "eval"): (
        "video2reward.policies.cli:eval_main",
        "VPDD: success of a fine-tuned policy in the twin (the predicate evaluates only)",
    ),
    ("policy", "label"): (
        "video2reward.policies.cli:label_main",
        "VPDD: label robot videos with a fine-tuned policy's actions -> DrQ-v2 demos store",
    ),
    ("calib", "intrinsics"): (
        "video2reward.calibration.cli:intrinsics_main",
        "camera intrinsics: RealSense factory values or ChArUco photos -> calibration YAML",
    ),
    ("calib", "handeye"): (
        "video2reward.calibration.cli:handeye_main",
        "automatic eye-to-hand calibration (twin or xArm + RealSense) -> T_base_cam",
    ),
    ("calib", "workspace"): (
        "video2reward.calibration.cli:workspace_main",
        "set the workspace box by jogging the arm to its corners",
    ),
    ("calib", "show"): (
        "video2reward.calibration.cli:show_main",
        "print and validate a calibration YAML",
    ),
    ("record", "teleop"): (
        "video2reward.robot.teleop_session:main",
        "drive the arm (twin or xArm) by keyboard/gamepad/SpaceMouse and record episodes",
    ),
    ("record", "import"): (
        "video2reward.robot.recorder_cli:import_main",
        "import human demo videos, or a LeRobot v3.0 folder, into an episode store",
    ),
    ("record", "info"): (
        "video2reward.robot.recorder_cli:info_main",
        "summarize an episode store (episodes, labels, sizes, compression)",
    ),
    ("record", "export"): (
        "video2reward.robot.recorder_cli:export_main",
        "write one episode's frames as an mp4, or the store as a LeRobot v3.0 folder",
    ),
}


# What a command's ``key=<name>`` options accept, read from where each choice is registered so
# that ``--help`` lists them without keeping a copy: "module:NAME" (a dict's keys or a tuple's
# items) or "configs/<group>" (the preset files of a Hydra config group).
CHOICES: dict[tuple[str, str], dict[str, str]] = {
    ("sim", "demos"): {
        "task": "video2reward.sim.tasks:TASKS",
        "kind": "video2reward.sim.experts:KINDS",
    },
    ("sim", "learn"): {
        "task": "video2reward.sim.tasks:TASKS",
        "reward": "video2reward.rewards.base:METHODS",
    },
    ("reward", "train"): {"method": "video2reward.rewards.base:METHODS"},
    ("rl", "train"): {
        "task": "video2reward.sim.tasks:TASKS",
        "agent": "configs/rl_agent",
        "reward": "configs/rl_reward",
    },
    ("record", "teleop"): {
        "task": "video2reward.sim.tasks:TASKS",
        "source": "video2reward.robot.teleop:SOURCES",
    },
}


def registered_choices(source: str) -> list[str]:
    """The names registered at ``source`` (see CHOICES), sorted."""
    if source.startswith("configs/"):
        from importlib.resources import files

        group = files("video2reward.configs").joinpath(source.removeprefix("configs/"))
        presets = [f.name for f in group.iterdir() if f.name.endswith(".yaml")]
        return sorted(name.removesuffix(".yaml") for name in presets)
    module, name = source.split(":")
    return sorted(str(choice) for choice in getattr(importlib.import_module(module), name))


def _choices_help(command: tuple[str, str]) -> str:
    """``v2r <group> <command> --help``'s list of choices, one option a line ('' if none)."""
    options = CHOICES.get(command, {})
    width = max((len(key) for key in options), default=0) + 1
    lines = [f"  {key + '=':<{width}}  {' | '.join(registered_choices(src))}"
             for key, src in options.items()]
    return "\n".join(["choices:", *lines]) if lines else ""


# Commands without a subcommand: the rest of argv goes to the function as it is.
TOP_LEVEL: dict[str, tuple[str, str]] = {
    "launch": (
        "video2reward.cli.launch:main",
        "run a ROS 2 XML launch file (what `ros2 launch` does on the lab machine)",
    ),
}


def _usage() -> str:
    lines = [
        "usage: v2r <group> <command> [key=value ...] [--flags]",
        "",
        "Video2Reward: learn rewards from task videos and train an xArm5 with them.",
        "",
        "commands:",
    ]
    for (group, name), (_, help_) in sorted(COMMANDS.items()):
        lines.append(f"  v2r {group + ' ' + name:<16} {help_}")
    for name, (_, help_) in sorted(TOP_LEVEL.items()):
        lines.append(f"  v2r {name:<16} {help_}")
    lines += ["", "Run `v2r <group> <command> --help` for the options of one command."]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[list[str]], int]:
    mod, func = target.split(":")
    fn: Callable[[list[str]], int] = getattr(importlib.import_module(mod), func)
    return fn


TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def _reexec_with_tcmalloc() -> None:
    """Restart this process once with tcmalloc preloaded, where Debian's package exists.

    glibc returns every tensor over 32 MB to the OS, so large activations page-fault on every
    training step; tcmalloc made most CPU training runs 1.3-2.8x faster (2 cores, torch 2.13.0;
    DrQ-v2 batch 256: ~0.8 updates/s with glibc, ~1.9 with tcmalloc). The allocator
    must be chosen before the process starts, hence the re-exec. V2R_TCMALLOC=0 disables it.
    """
    if os.environ.get("V2R_TCMALLOC", "1") == "0" or not os.path.exists(TCMALLOC):
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload:
        return
    env = {**os.environ, "LD_PRELOAD": f"{TCMALLOC}:{preload}" if preload else TCMALLOC}
    os.execve(sys.executable, [sys.executable, "-m", "video2reward.cli.main", *sys.argv[1:]], env)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _reexec_with_tcmalloc()
    args = list(sys.argv[1:] if argv is None else argv)
    # Headless rendering by default (EGL on Mesa); must be decided before mujoco is imported.
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    group = args[0]
    if group in TOP_LEVEL:
        return int(_resolve(TOP_LEVEL[group][0])(args[1:]) or 0)
    names = sorted(n for g, n in COMMANDS if g == group)
    if not names:
        print(f"v2r: unknown command group {group!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if len(args) < 2 or args[1] in ("-h", "--help"):
        print(f"usage: v2r {group} {{{','.join(names)}}} [key=value ...]", file=sys.stderr)
        return 0 if len(args) >= 2 else 2
    key = (group, args[1])
    if key not in COMMANDS:
        print(f"v2r: unknown command 'v2r {group} {args[1]}'; try one of {names}", file=sys.stderr)
        return 2
    code = int(_resolve(COMMANDS[key][0])(args[2:]) or 0)
    if code == 0 and {"-h", "--help"} & set(args[2:]) and _choices_help(key):
        print(_choices_help(key))  # after the command's own help
    return code


if __name__ == "__main__":
    sys.exit(main())
