"""Twist teleop (teleop_twist_keyboard, teleop_twist_joy): a velocity -> a normalized action.

    action = action_from_twist(np.array([0.05, 0.0, 0.0]), rate_hz=30.0, max_step_m=0.01)

Plain numpy: the teleop node (robot/ros/teleop_node.py) unpacks the message and calls this.
"""

from __future__ import annotations

import numpy as np
from video2reward.data import keys


def action_from_twist(
    linear_m_s: np.ndarray, rate_hz: float, max_step_m: float, gripper: float = -1.0
) -> np.ndarray:
    """A velocity (m/s) held for one command period -> a normalized action.

    An action of 1.0 moves ``max_step_m`` per command, so v m/s at ``rate_hz`` commands per
    second is v / (rate_hz * max_step_m); faster requests saturate at 1 (the envelope clips
    anyway). Angular velocity is ignored: the xArm5 keeps the tool pointing down.
    """
    v = np.asarray(linear_m_s, dtype=float).reshape(3)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"twist has non-finite linear velocity {v.tolist()}")
    a = np.zeros(keys.ACTION_DIM, np.float32)
    a[:3] = np.clip(v / (rate_hz * max_step_m), -1.0, 1.0)
    a[3] = float(np.clip(gripper, -1.0, 1.0))
    return a
