"""xArm5 kinematics: the MJCF, the closed-form IK and UFACTORY's table agree."""

import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from video2reward.robot.kinematics import (
    GRIPPER_TCP_OFFSET_M,
    LOWER_RAD,
    UPPER_RAD,
    XARM5,
    UnreachableError,
    fk,
    ik_tool_down,
    tool_yaw,
)
from video2reward.robot.safety import WorkspaceBox
from video2reward.sim.model import build_cell_xml


def reference_fk(q: np.ndarray) -> np.ndarray:
    """Independent chain from the table with scipy's URDF-convention (extrinsic xyz) rpy."""
    T = np.eye(4)
    for spec, qi in zip(XARM5, q, strict=True):
        step = np.eye(4)
        step[:3, :3] = (
            Rotation.from_euler("xyz", spec.rpy_rad) * Rotation.from_euler("z", qi)
        ).as_matrix()
        step[:3, 3] = spec.xyz_m
        T = T @ step
    return T


def test_home_pose_flange_matches_published_home_to_the_millimetre():
    T = reference_fk(np.zeros(5))
    np.testing.assert_allclose(T[:3, 3] * 1000, [207.0, 0.0, 112.0], atol=0.5)
    np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-9)  # tool points down
    np.testing.assert_allclose(fk(np.zeros(5)), T, atol=1e-12)


def test_mjcf_bodies_follow_the_kinematics_table():
    model = mujoco.MjModel.from_xml_string(build_cell_xml())
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.uniform(np.maximum(LOWER_RAD, -3), np.minimum(UPPER_RAD, 3))
        data.qpos[:5] = q
        mujoco.mj_kinematics(model, data)
        T = reference_fk(q)
        np.testing.assert_allclose(data.site("flange").xpos, T[:3, 3], atol=1e-9)
        np.testing.assert_allclose(data.site("flange").xmat.reshape(3, 3), T[:3, :3], atol=1e-9)
        tcp = T[:3, 3] + T[:3, 2] * GRIPPER_TCP_OFFSET_M
        np.testing.assert_allclose(data.site("tcp").xpos, tcp, atol=1e-9)


def test_ik_round_trip_within_a_millimetre_across_the_workspace():
    box = WorkspaceBox()
    grid = np.stack(np.meshgrid(*[np.linspace(box.lo[i], box.hi[i], 7) for i in range(3)]), -1)
    errors = []
    for p in grid.reshape(-1, 3):
        for yaw in (-0.5, 0.0, 0.7):
            q = ik_tool_down(p, yaw, tcp_offset_m=GRIPPER_TCP_OFFSET_M)
            assert np.all(q >= LOWER_RAD) and np.all(q <= UPPER_RAD)
            T = reference_fk(q)
            tcp = T[:3, 3] + T[:3, 2] * GRIPPER_TCP_OFFSET_M
            errors.append(np.linalg.norm(tcp - p))
            np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-9)
            # flange x axis turned by yaw about base z
            assert abs(np.arctan2(T[1, 0], T[0, 0]) - yaw) < 1e-9
            assert abs(tool_yaw(q) - yaw) < 1e-9
    assert len(errors) == 7**3 * 3
    assert max(errors) < 1e-3


def test_ik_prefers_the_solution_nearest_the_reference():
    p = np.array([0.4, 0.1, 0.1])
    q_up = ik_tool_down(p, tcp_offset_m=GRIPPER_TCP_OFFSET_M)
    q_near = ik_tool_down(p, q_ref=q_up + 0.01, tcp_offset_m=GRIPPER_TCP_OFFSET_M)
    np.testing.assert_allclose(q_near, q_up)


@pytest.mark.parametrize(
    "target",
    [[2.0, 0.0, 0.1], [0.0, 0.0, 0.3], [0.3, 0.0, 1.5], [0.3, 0.0, -0.6]],
)
def test_unreachable_targets_raise_rather_than_return_a_wrong_answer(target):
    with pytest.raises(UnreachableError):
        ik_tool_down(np.array(target), tcp_offset_m=GRIPPER_TCP_OFFSET_M)


@pytest.mark.parametrize("bad", [[np.nan, 0, 0], [0.3, np.inf, 0.1], [0.3, 0.1]])
def test_ik_refuses_non_finite_or_malformed_targets(bad):
    with pytest.raises(ValueError, match="finite"):
        ik_tool_down(np.array(bad, dtype=float))
