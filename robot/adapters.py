"""Adapters the twin lends the robot code, found by name: robot/ never imports sim/.

    make_env = adapter("twin_env")        # sim.env.make_env, for `v2r record teleop sim=true`
    camera = adapter("twin_camera")(84, 84, 30.0)   # a robot.camera.Camera over the twin

The twin registers them as entry points of the group ``video2reward.robot_adapters`` in
pyproject.toml (so installing the package registers them); the robot code loads one only when
a user asks for the twin, and the lab's robot path never imports MuJoCo.
tests/unit/test_layering.py checks that robot/ does not import sim/ and that every adapter
named here loads.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

GROUP = "video2reward.robot_adapters"
NAMES = ("twin_camera", "twin_env")


def adapter(name: str) -> Any:
    """The object registered as ``name`` in :data:`GROUP`; LookupError if none is."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            return ep.load()
    raise LookupError(
        f"no {GROUP!r} entry point named {name!r}: reinstall the package (pip install -e .) "
        "so that pyproject.toml's entry points are registered"
    )
