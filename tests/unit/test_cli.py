"""The v2r entry point: help, unknown commands, and malformed overrides."""

import subprocess
import sys

from video2reward.cli.main import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group, name in COMMANDS:
        assert f"v2r {group} {name}" in out


def test_unknown_command_and_group_exit_2(capsys):
    assert main(["nosuch"]) == 2
    assert main(["sim", "nosuch"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_malformed_overrides_are_named(capsys, tmp_path):
    assert main(["sim", "demos", "episodes"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["sim", "demos", "episodes=-3", f"out={tmp_path}/x.zarr"]) == 2
    assert "episodes must be at least 1" in capsys.readouterr().err
    assert main(["sim", "demos", "colour=blue"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["sim", "demos", "task=juggle"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_installed_console_script_runs():
    exe = [sys.executable, "-m", "video2reward.cli.main", "--help"]
    out = subprocess.run(exe, capture_output=True, text=True, check=True).stdout
    assert "v2r sim demos" in out


def test_command_help_names_every_registered_choice(capsys):
    from pathlib import Path

    from video2reward.rewards.base import METHODS
    from video2reward.sim.tasks import TASKS

    configs = Path(__file__).resolve().parents[2] / "configs"

    def help_of(*command: str) -> str:
        assert main([*command, "--help"]) == 0
        return capsys.readouterr().out.split("choices:")[-1]

    def presets(group: str) -> set[str]:
        return {p.stem for p in (configs / group).glob("*.yaml")}

    expected = {
        ("reward", "train"): {"method": set(METHODS)},
        ("rl", "train"): {
            "task": set(TASKS),
            "agent": presets("rl_agent"),
            "reward": presets("rl_reward"),
        },
        ("sim", "demos"): {"task": set(TASKS)},
        ("sim", "learn"): {"task": set(TASKS), "reward": set(METHODS)},
    }
    for command, options in expected.items():
        listed = {
            line.split("=")[0].strip(): {c.strip() for c in line.split("=", 1)[1].split("|")}
            for line in help_of(*command).splitlines()
            if "=" in line
        }
        for key, names in options.items():
            assert names and names <= listed.get(key, set()), (command, key, listed)
