"""Set the workspace box by jogging the arm to its corners.

    corners = jog_and_record(arm, input)          # x+ / y- 5 / z+ ... then "r" at each corner
    box = box_from_corners(corners, WorkspaceToolConfig())   # bounds, validated
    update_calibration("calibration.yaml", "workspace tool", workspace=box)

    v2r calib workspace out=calibration.yaml                      # interactive, in the twin
    v2r calib workspace backend=xarm ip=192.168.1.208 out=...      # on the lab robot

Jogging goes through ``Arm.send_action`` and therefore through the envelope of the arm it is
given: on the robot, construct the driver with a jog box at least as large as the box you
want to set. The new box is the bounds of the recorded tool-centre points, refused when it
is too thin, dips below ``min_z_m`` or has a corner the tool-down arm cannot reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from video2reward.robot.arm import Arm
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, UnreachableError, ik_tool_down
from video2reward.robot.safety import WorkspaceBox

_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class WorkspaceToolConfig:
    min_points: int = 2  # recorded corners (2 opposite corners are enough; record all 8 to check)
    min_extent_m: float = 0.05  # the box must be at least this wide on every axis
    min_z_m: float = 0.0  # lowest allowed TCP height: the table surface in the base frame
    check_reach: bool = True  # refuse a box with a corner outside the tool-down reach

    def __post_init__(self) -> None:
        if self.min_points < 2:
            raise ValueError(
                f"min_points must be >= 2 (two opposite corners), got {self.min_points}"
            )
        if not 0.005 <= self.min_extent_m <= 1.0:
            raise ValueError(f"min_extent_m must be in [0.005, 1] m, got {self.min_extent_m}")
        if not -1.0 <= self.min_z_m <= 1.0:
            raise ValueError(f"min_z_m must be in [-1, 1] m, got {self.min_z_m}")


def box_from_corners(points: list[np.ndarray], config: WorkspaceToolConfig) -> WorkspaceBox:
    """The axis-aligned bounds of recorded TCP positions, validated for use as a workspace."""
    if len(points) < config.min_points:
        raise ValueError(
            f"recorded {len(points)} corners, need >= {config.min_points} (at least two "
            "opposite corners of the box)"
        )
    P = np.asarray(points, dtype=float)
    if P.ndim != 2 or P.shape[1] != 3 or not np.all(np.isfinite(P)):
        raise ValueError("corners must be finite (x, y, z) positions in metres")
    lo, hi = P.min(axis=0), P.max(axis=0)
    thin = [a for a, i in _AXES.items() if hi[i] - lo[i] < config.min_extent_m]
    if thin:
        raise ValueError(
            f"the corners span less than {config.min_extent_m * 100:.0f} cm along {thin} "
            f"(extent {(hi - lo).round(3).tolist()} m): jog to opposite corners of the box"
        )
    if lo[2] < config.min_z_m:
        raise ValueError(
            f"the lowest corner is at z = {lo[2]:.3f} m, below min_z_m = {config.min_z_m} m "
            "(the table): raise that corner"
        )
    box = WorkspaceBox(lo_m=tuple(lo.tolist()), hi_m=tuple(hi.tolist()))
    if config.check_reach:
        for corner in np.array(np.meshgrid(*zip(lo, hi, strict=True))).T.reshape(-1, 3):
            try:
                ik_tool_down(corner, 0.0, tcp_offset_m=GRIPPER_TCP_OFFSET_M)
            except UnreachableError as e:
                raise ValueError(
                    f"box corner {corner.round(3).tolist()} is out of the tool-down reach: {e}"
                ) from e
    return box


def jog_and_record(
    arm: Arm,
    ask: Callable[[str], str],
    say: Callable[[str], None] = print,
    step_period_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
    max_commands: int = 10_000,
) -> list[np.ndarray]:
    """Interactive jogging: ``x+``/``y-``/``z+`` [n] (n steps of the envelope's max step),
    ``r`` records the tool position as a corner, ``u`` undoes the last, ``d`` is done.

    Steps go out every ``step_period_s`` (the envelope caps speed by the time between
    commands, and servo targets should be reached before the next). Each burst re-enables
    the arm first: while the user types, the driver's watchdog stops the idle arm.
    """
    if not 0.0 <= step_period_s <= 1.0:
        raise ValueError(f"step_period_s must be in [0, 1], got {step_period_s}")
    corners: list[np.ndarray] = []
    say("jog: x+ x- y+ y- z+ z- [steps], r = record corner, u = undo, d = done")
    for _ in range(max_commands):
        words = ask(f"[{len(corners)} corners] > ").strip().lower().split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "d":
            return corners
        if cmd == "r":
            p = arm.state().ee_pos_m.copy()
            corners.append(p)
            say(f"corner {len(corners)}: {np.round(p, 4).tolist()} m")
        elif cmd == "u" and corners:
            say(f"removed {np.round(corners.pop(), 4).tolist()}")
        elif len(cmd) == 2 and cmd[0] in _AXES and cmd[1] in "+-":
            steps = int(words[1]) if len(words) > 1 and words[1].isdigit() else 1
            action = np.zeros(4)
            action[_AXES[cmd[0]]] = 1.0 if cmd[1] == "+" else -1.0
            arm.enable()
            for _ in range(min(steps, 100)):
                sent = arm.send_action(action)
                sleep(step_period_s)
            say(
                f"tool at {np.round(arm.state().ee_pos_m, 4).tolist()} m"
                + (" (clamped by the envelope)" if sent.clamped else "")
            )
        else:
            say(f"unknown command {cmd!r}")
    raise RuntimeError(f"no 'd' (done) after {max_commands} commands")
