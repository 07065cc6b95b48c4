"""House rule: only robot/ros/ imports rclpy or message packages; the core stays plain Python."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROS_MODULES = {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs",
               "diagnostic_msgs", "builtin_interfaces", "rcl_interfaces"}
SIM_MODULES = ("xarm_emulator.py", "emulator_netns.py", "emulator_camera.py")
CORE = [*sorted((ROOT / "robot").glob("*.py")), *(ROOT / "sim" / m for m in SIM_MODULES)]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_not_import_ros(path: Path) -> None:
    assert not (_imports(path) & ROS_MODULES), f"{path.name} imports ROS; move that to robot/ros/"


def test_ros_nodes_use_the_core_not_the_sdk_directly() -> None:
    for path in (ROOT / "robot" / "ros").glob("*.py"):
        assert "xarm" not in _imports(path), f"{path.name} talks to the SDK; go through XArmDriver"
