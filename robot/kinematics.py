"""xArm5 kinematics from UFACTORY's published table: forward and tool-down inverse kinematics.

    from video2reward.robot.kinematics import XARM5, fk, ik_tool_down
    T_base_flange = fk(np.zeros(5))             # flange at (0.207, 0, 0.112) m, pointing down
    q = ik_tool_down(p_base_tcp, yaw_rad=0.0, q_ref=q_now)   # raises UnreachableError

Each joint rotates about its own local z; link i is placed on its parent by ``xyz`` (m) and
``rpy`` (rad), exactly as in xarm_ros ``xarm5_default_kinematics.yaml``. Joints 2-4 have
parallel axes, so with the tool pointing straight down the arm is a planar two-link chain
plus a fixed wrist offset: the inverse kinematics below is closed-form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JointSpec:
    name: str
    xyz_m: tuple[float, float, float]
    rpy_rad: tuple[float, float, float]
    lower_rad: float
    upper_rad: float


# Joint limits from xarm-python-sdk x_config.py (xArm5).
XARM5: tuple[JointSpec, ...] = (
    JointSpec("joint1", (0.0, 0.0, 0.267), (0.0, 0.0, 0.0), -2 * np.pi, 2 * np.pi),
    JointSpec("joint2", (0.0, 0.0, 0.0), (-np.pi / 2, 0.0, 0.0), -2.059488, 2.094395),
    JointSpec("joint3", (0.0535, -0.2845, 0.0), (0.0, 0.0, 0.0), -3.92699, 0.191986),
    JointSpec("joint4", (0.0775, 0.3425, 0.0), (0.0, 0.0, 0.0), -1.692969, np.pi),
    JointSpec("joint5", (0.076, 0.097, 0.0), (-np.pi / 2, 0.0, 0.0), -2 * np.pi, 2 * np.pi),
)
N_JOINTS = len(XARM5)
LOWER_RAD = np.array([j.lower_rad for j in XARM5])
UPPER_RAD = np.array([j.upper_rad for j in XARM5])

# xArm Gripper: TCP 172 mm below the flange, along the flange z axis.
GRIPPER_TCP_OFFSET_M = 0.172

# The planar chain of joints 2-4 at zero angles, in the arm plane (x forward, z up), metres.
_SHOULDER_Z = XARM5[0].xyz_m[2]
_UPPER = np.array([0.0535, 0.2845])  # joint2 -> joint3
_FORE = np.array([0.0775, -0.3425])  # joint3 -> joint4
_WRIST = np.array([0.076, -0.097])  # joint4 -> flange
_L1 = float(np.hypot(*_UPPER))
_L2 = float(np.hypot(*_FORE))


class UnreachableError(ValueError):
    """No joint configuration within the limits reaches the target."""


def rpy_matrix(rpy: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """URDF convention: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )



def quat_wxyz_from_rpy(rpy_rad: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """(w, x, y, z) of R = Rz(yaw) Ry(pitch) Rx(roll), the same convention as rpy_matrix.

    The episode store keeps (w, x, y, z) (data/keys.EE_QUAT); ROS messages reorder it to
    (x, y, z, w) in ros/convert.pose_msg.
    """
    r, p, y = (float(a) / 2 for a in rpy_rad)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )

def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def fk(q: np.ndarray, tcp_offset_m: float = 0.0) -> np.ndarray:
    """4x4 pose of the flange (or of a tool ``tcp_offset_m`` along flange z) in the base frame."""
    q = np.asarray(q, dtype=float)
    if q.shape != (N_JOINTS,):
        raise ValueError(f"expected {N_JOINTS} joint angles, got shape {q.shape}")
    T = np.eye(4)
    for spec, qi in zip(XARM5, q, strict=True):
        step = np.eye(4)
        step[:3, :3] = rpy_matrix(spec.rpy_rad) @ _rot_z(qi)
        step[:3, 3] = spec.xyz_m
        T = T @ step
    if tcp_offset_m:
        T[:3, 3] += T[:3, 2] * tcp_offset_m
    return T


def tool_yaw(q: np.ndarray) -> float:
    """Yaw of the flange x axis about the base z axis when the tool points down."""
    return float(_wrap(q[0] - q[4]))


def _wrap(a: float | np.ndarray) -> float | np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def ik_tool_down(
    p_base_tcp: np.ndarray,
    yaw_rad: float = 0.0,
    q_ref: np.ndarray | None = None,
    tcp_offset_m: float = 0.0,
) -> np.ndarray:
    """Joint angles that put the tool at ``p_base_tcp`` pointing straight down.

    Of the elbow solutions inside the joint limits, the one closest to ``q_ref`` is returned.
    Raises :class:`UnreachableError` when none exists; callers clamp the target instead of
    passing an unreachable one through.
    """
    p = np.asarray(p_base_tcp, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"target must be 3 finite numbers, got {p}")
    flange = p + np.array([0.0, 0.0, tcp_offset_m])  # tool points down: flange is above the TCP
    r = float(np.hypot(flange[0], flange[1]))
    if r < 1e-6:
        raise UnreachableError("target on the base axis: base yaw undefined")
    q1 = float(np.arctan2(flange[1], flange[0]))
    # Rotation about the joint axis by angle a maps plane vector (x, z) to
    # (x cos a + z sin a, -x sin a + z cos a); with j2+j3+j4 = 0 the wrist offset is unrotated.
    d = np.array([r, flange[2] - _SHOULDER_Z]) - _WRIST
    # |R(q2) (U + R(q3) F)| = |d|  =>  U . R(q3) F = (|d|^2 - L1^2 - L2^2) / 2
    k = (d @ d - _L1**2 - _L2**2) / 2.0
    # U . R(a) F = A cos a + B sin a, with R(a)F = (Fx c + Fz s, -Fx s + Fz c)
    A = _UPPER[0] * _FORE[0] + _UPPER[1] * _FORE[1]
    B = _UPPER[0] * _FORE[1] - _UPPER[1] * _FORE[0]
    rho = np.hypot(A, B)
    if abs(k) > rho:
        raise UnreachableError(f"target {p} is out of reach (|d|={np.linalg.norm(d):.3f} m)")
    phi = np.arctan2(B, A)
    delta = np.arccos(np.clip(k / rho, -1.0, 1.0))
    candidates = []
    for q3 in (phi + delta, phi - delta):
        q3 = float(_wrap(q3))
        c3, s3 = np.cos(q3), np.sin(q3)
        v = _UPPER + np.array([_FORE[0] * c3 + _FORE[1] * s3, -_FORE[0] * s3 + _FORE[1] * c3])
        # R(q2) v = d: angle of d minus angle of v, with R(a) rotating by -a in (x, z) atan2 terms
        q2 = float(_wrap(np.arctan2(v[1], v[0]) - np.arctan2(d[1], d[0])))
        q4 = -(q2 + q3)
        q5 = q1 - yaw_rad
        q = np.array([q1, q2, q3, q4, q5])
        q[4] = _nearest_turn(q[4], None if q_ref is None else q_ref[4])
        if np.all(q >= LOWER_RAD - 1e-9) and np.all(q <= UPPER_RAD + 1e-9):
            candidates.append(q)
    if not candidates:
        raise UnreachableError(f"target {p} needs joint angles outside the xArm5 limits")
    if q_ref is None or len(candidates) == 1:
        # Elbow up (the arm's usual posture) is the one with the more negative q3.
        return min(candidates, key=lambda c: c[2])
    ref = np.asarray(q_ref, dtype=float)
    return min(candidates, key=lambda c: float(np.sum((c - ref) ** 2)))


def _nearest_turn(a: float, ref: float | None) -> float:
    """Equivalent angle (mod 2 pi) nearest ``ref`` (or nearest 0) inside joint5's +-2 pi."""
    target = 0.0 if ref is None else ref
    a = a + 2 * np.pi * np.round((target - a) / (2 * np.pi))
    return float(np.clip(a, XARM5[4].lower_rad, XARM5[4].upper_rad))
