"""The layers hold: plain-Python core, ROS only in ros/ packages, no imports of the CLI or the twin.

The import rules read the source with ast (nothing is imported to check them); every
``import`` counts, including those inside functions. Run by hand once: an ``import rclpy``,
``video2reward.sim``, ``video2reward.cli.main`` and ``video2reward.rewards.cli`` added to
robot/arm.py failed four of these tests, and a rewards/x_node.py the fifth.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("robot", "data", "ros", "sim", "cli", "rewards", "policies", "calibration",
           "compute", "configs")  # fmt: skip
ROS_MODULES = {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs",
               "diagnostic_msgs", "builtin_interfaces", "rcl_interfaces"}  # fmt: skip
# Modules outside sim/ that may import it, and why: each is the twin's own adapter.
TWIN_ADAPTERS = {
    # The calibration rig in the twin: the board on the twin's gripper, a twin-backed Arm.
    "calibration/sim_rig.py",
    # `v2r calib handeye|workspace backend=twin` builds that rig (the command picks a backend).
    "calibration/cli.py",
    # `v2r rl train` trains in the twin's gym env, with its scripted experts for demos.
    "policies/train.py",
}


def _modules() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (``video2reward.x.y``, ``rclpy``, ...)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import mod`
    return names


def _is_sim(name: str) -> bool:
    return name.split(".")[:2] == ["video2reward", "sim"]


def _in_ros_package(path: Path) -> bool:
    return "ros" in path.relative_to(ROOT).parts[:-1]


def _violations(rule: Callable[[Path, str], bool]) -> str:
    """One line per (module, import) that breaks ``rule``; '' when none does."""
    bad = [f"{_rel(p)}: {n}" for p in _modules() for n in sorted(_imports(p)) if rule(p, n)]
    return "\n".join(bad)


def test_only_ros_packages_import_ros() -> None:
    bad = _violations(lambda p, n: n.split(".")[0] in ROS_MODULES and not _in_ros_package(p))
    assert not bad, f"ROS imported outside a ros/ package (move it to <folder>/ros/):\n{bad}"


def test_ros_nodes_live_in_ros_packages() -> None:
    bad = [_rel(p) for p in _modules() if p.name.endswith("_node.py") and not _in_ros_package(p)]
    assert bad == [], f"nodes outside a ros/ package: {bad}"


def test_nothing_imports_a_cli_module() -> None:
    def rule(p: Path, name: str) -> bool:
        parts = name.split(".")
        if parts[0] != "video2reward" or len(parts) < 2:
            return False
        cli_folder = parts[1] == "cli" and _rel(p).split("/")[0] != "cli"
        return cli_folder or (len(parts) >= 3 and parts[2] == "cli")  # <folder>/cli.py

    bad = _violations(rule)
    assert not bad, f"imports of cli/ or a */cli.py (move the shared part out):\n{bad}"


def test_core_does_not_import_the_twin() -> None:
    def rule(p: Path, name: str) -> bool:
        folder = _rel(p).split("/")[0]
        return _is_sim(name) and folder not in ("sim", "cli") and _rel(p) not in TWIN_ADAPTERS

    bad = _violations(rule)
    assert not bad, f"sim/ imported by the core (let the twin register an adapter):\n{bad}"


def test_robot_never_imports_sim() -> None:
    bad = _violations(lambda p, n: _rel(p).startswith("robot/") and _is_sim(n))
    assert not bad, f"robot/ imports sim/ (robot/adapters.py finds the twin's adapters):\n{bad}"


def test_twin_adapters_for_the_robot_are_registered() -> None:
    from video2reward.robot.adapters import GROUP, NAMES, adapter

    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for name in NAMES:
        assert registered.get(name, "").startswith("video2reward.sim."), (name, registered)
        assert callable(adapter(name))


ROBOT_NODES = sorted((ROOT / "robot" / "ros").glob("*.py"))


@pytest.mark.parametrize("path", ROBOT_NODES, ids=lambda p: p.name)
def test_ros_nodes_use_the_core_not_the_sdk_directly(path: Path) -> None:
    top = {n.split(".")[0] for n in _imports(path)}
    assert "xarm" not in top, f"{path.name} talks to the SDK; go through XArmDriver"
