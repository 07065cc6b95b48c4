"""Shared test setup: headless MuJoCo rendering, and the `netns` marker.

MUJOCO_GL is chosen before any test imports mujoco. Tests marked ``netns`` run the xArm
emulator (fixed ports) in a private network namespace and are skipped where unprivileged user
and network namespaces are unavailable (``unshare -rn``).
"""

import os
import shutil
import subprocess

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


def _netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    netns_items = [item for item in items if item.get_closest_marker("netns")]
    if netns_items and not _netns_available():
        skip = pytest.mark.skip(reason="needs unprivileged user + network namespaces (unshare -rn)")
        for item in netns_items:
            item.add_marker(skip)
