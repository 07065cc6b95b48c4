"""The project builds as a ROS 2 ament_python package with colcon, as the lab builds it."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLCON = Path(sys.executable).parent / "colcon"


@pytest.mark.skipif(not COLCON.exists(), reason="colcon not installed (dev extra)")
def test_colcon_build_installs_executables_launch_files_and_ament_marker(tmp_path):
    src = tmp_path / "src" / "video2reward"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "build", "install", "log", "*.egg-info", "__pycache__"
        ),
    )
    done = subprocess.run(
        [str(COLCON), "build", "--packages-select", "video2reward"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = tmp_path / "install" / "video2reward"
    assert (prefix / "lib" / "video2reward" / "v2r").exists()  # where `ros2 run` looks
    share = prefix / "share" / "video2reward"
    assert (share / "package.xml").exists()
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "video2reward"
    assert marker.exists()
    launch_src = sorted(p.name for p in (ROOT / "launch").glob("*.launch.*"))
    assert sorted(p.name for p in (share / "launch").glob("*")) == launch_src
    site = list(prefix.glob("lib/python3*/site-packages/video2reward/robot/ros/camera_node.py"))
    assert site, "video2reward.robot.ros was not installed under the mapped name"


def test_every_python_package_folder_is_listed_for_installation():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    listed = set(cfg["packages"])
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), f"not installed by a wheel/colcon: {sorted(found - listed)}"
    assert listed - found == set(), f"listed but missing: {sorted(listed - found)}"


def test_wheel_builds_without_setuptools_warnings_and_carries_configs_and_launch_files(tmp_path):
    """The project's own packaging is clean: no setuptools deprecation or packaging warnings."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "build", "install", "log", "*.egg-info", "__pycache__"
        ),
    )
    out = tmp_path / "dist"
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # "<...>/setuptools/<module>.py:<line>: <Class>Warning: ..." (the class name varies by version)
    warned = re.compile(r"setuptools/.*\.py:\d+: \w*Warning")
    noisy = [line for line in (done.stdout + done.stderr).splitlines() if warned.search(line)]
    assert noisy == [], "\n".join(noisy)

    names = set(zipfile.ZipFile(out / done.stdout.strip().splitlines()[-1]).namelist())
    assert "video2reward/configs/rl_agent/cpu.yaml" in names
    assert "video2reward/configs/rl_train.yaml" in names
    data = "video2reward-0.1.0.data/data/share/video2reward"
    for launch_file in (ROOT / "launch").glob("*.launch.*"):
        assert f"{data}/launch/{launch_file.name}" in names
