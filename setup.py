"""setuptools shim for colcon (ament_python): metadata lives in pyproject.toml.

colcon runs this file; it adds the ROS 2 data files (ament index marker, package.xml, launch
files, configs) that ``ros2 launch video2reward <file>`` looks for under share/.
"""

from glob import glob

from setuptools import setup

PACKAGE = "video2reward"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.*"))),
        (f"share/{PACKAGE}/configs", sorted(glob("configs/*.yaml"))),
    ],
)
