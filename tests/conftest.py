"""Shared test setup: headless MuJoCo rendering, chosen before any test imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
