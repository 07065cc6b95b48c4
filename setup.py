"""setuptools shim for colcon (ament_python); the metadata lives in pyproject.toml.

colcon runs this file. It adds the ROS 2 data files (ament index marker, package.xml, launch
files, configs) that ``ros2 launch video2reward <file>`` looks for under share/. ROS 2 Humble
ships setuptools 59, which predates ``[project]`` in pyproject.toml (setuptools 61), so for
such a setuptools the same fields are read from pyproject.toml and passed here.
"""

from glob import glob

import setuptools
from setuptools import setup

PACKAGE = "video2reward"
LICENSE = "Apache-2.0"  # SPDX; package.xml states the same

SETUPTOOLS_MAJOR = int(setuptools.__version__.split(".")[0])
# pyproject.toml lists the license as dynamic: setuptools >= 77 takes an SPDX expression and
# deprecates the free-text field, older ones (Humble 59, Jazzy 68) know only the free text.
kwargs = {"license_expression" if SETUPTOOLS_MAJOR >= 77 else "license": LICENSE}
if SETUPTOOLS_MAJOR < 61:
    try:
        import tomllib as toml_reader  # Python 3.11+
    except ImportError:
        try:
            import tomli as toml_reader  # Humble's Python 3.10
        except ImportError:
            import toml as toml_reader  # python3-toml (rosdep key); same load() API
    with open("pyproject.toml", "rb" if toml_reader.__name__ != "toml" else "r") as f:
        project_toml = toml_reader.load(f)
    project, tool = project_toml["project"], project_toml["tool"]["setuptools"]
    kwargs |= {
        "name": project["name"],
        "version": project["version"],
        "package_dir": tool["package-dir"],
        "packages": tool["packages"],
        "package_data": tool.get("package-data", {}),
        "entry_points": {
            "console_scripts": [f"{k}={v}" for k, v in project["scripts"].items()],
            **{
                group: [f"{k}={v}" for k, v in names.items()]
                for group, names in project.get("entry-points", {}).items()
            },
        },
        "install_requires": [],  # ROS provides them; pip installs use pyproject.toml
    }

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.*"))),
        (f"share/{PACKAGE}/configs", sorted(glob("configs/*.yaml"))),
    ],
    **kwargs,
)
