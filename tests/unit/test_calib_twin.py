"""End to end in the twin: a rendered ChArUco board on the gripper, a camera at a known pose.

The automatic routine drives ``TwinArm`` (the ``robot.arm.Arm`` interface, refusing targets
outside the box like the xArm driver), renders 640x480 with 4x MSAA, detects, estimates the
intrinsics and solves the hand-eye problem; the result is compared with the twin's truth.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import detect_board
from video2reward.calibration.collect import (
    BoardNeverSeenError,
    CollectConfig,
    collect_views,
    pose_set,
)
from video2reward.calibration.handeye import HandEyeConfig, solve_handeye
from video2reward.calibration.intrinsics import IntrinsicsConfig, estimate_intrinsics
from video2reward.calibration.sim_rig import TwinRig, TwinRigConfig, camera_config_from_T_base_cam
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk
from video2reward.robot.safety import InvalidCommandError
from video2reward.sim.twin import CameraConfig

CAMERAS = {
    "front-right": CameraConfig(),
    "front-left": CameraConfig(eye_m=(0.85, 0.45, 0.55), target_m=(0.35, 0.0, 0.15)),
}


@pytest.fixture(scope="module", params=sorted(CAMERAS))
def twin_run(request):
    with TwinRig(TwinRigConfig(camera=CAMERAS[request.param])) as rig:
        run = collect_views(rig.arm, rig.camera, rig.config.board, CollectConfig())
        yield rig, run


def test_routine_recovers_the_camera_within_2mm_02deg_and_intrinsics_within_1pct(twin_run):
    rig, run = twin_run
    spec = rig.config.board
    charuco = estimate_intrinsics([v.detection for v in run.views], spec, IntrinsicsConfig())
    assert charuco.rms_px < 0.3
    intr = charuco.intrinsics
    cfg = HandEyeConfig(
        board_z_flange_m=float(rig.T_flange_board_true[2, 3]), refine_intrinsics=True
    )
    res = solve_handeye(run.handeye_views(), spec, intr.K(), np.asarray(intr.coeffs), cfg)

    T, T_true = res.T_base_cam, rig.T_base_cam_true
    err_mm = 1000 * np.linalg.norm(T[:3, 3] - T_true[:3, 3])
    err_deg = np.rad2deg(Rotation.from_matrix(T[:3, :3].T @ T_true[:3, :3]).magnitude())
    assert err_mm < 2.0, err_mm
    assert err_deg < 0.2, err_deg
    truth = rig.intrinsics_true
    got = [res.K[0, 0], res.K[1, 1], res.K[0, 2], res.K[1, 2]]
    want = [truth.fx, truth.fy, truth.cx, truth.cy]
    np.testing.assert_allclose(got, want, rtol=0.01)
    assert np.all(np.abs(res.dist[:2]) < 0.02)  # the twin's pinhole has no distortion
    assert res.reprojection_rms_px < 0.3
    assert len(res.used) >= 12 and res.rejected == ()


def test_every_pose_stays_inside_the_workspace_box(twin_run):
    _, run = twin_run
    box = CollectConfig().box
    assert len(run.views) == CollectConfig().n_views
    for v in run.views:
        assert box.contains(v.target.p_base_tcp_m, tol_m=-0.03 + 1e-9)  # inside by the margin
        tcp = fk(v.q_rad, GRIPPER_TCP_OFFSET_M)[:3, 3]
        assert box.contains(tcp, tol_m=1e-3)
        np.testing.assert_allclose(tcp, v.target.p_base_tcp_m, atol=1e-3)  # arm settled
    # Rotation diversity comes from the tool yaw: the views span the configured spread.
    yaws = [v.target.yaw_rad for v in run.views]
    assert np.rad2deg(max(yaws) - min(yaws)) == pytest.approx(70.0, abs=1e-6)


def test_twin_camera_placed_from_the_calibration_sees_what_the_true_camera_sees(twin_run):
    rig, run = twin_run
    spec = rig.config.board
    cfg = HandEyeConfig(board_z_flange_m=float(rig.T_flange_board_true[2, 3]))
    res = solve_handeye(run.handeye_views(), spec, rig.intrinsics_true.K(), None, cfg)
    placed, roll_deg = camera_config_from_T_base_cam(res.T_base_cam, rig.intrinsics_true.fy, 480)
    assert roll_deg < 0.05  # a look-at camera: nothing lost
    assert np.linalg.norm(np.subtract(placed.eye_m, rig.config.camera.eye_m)) < 2e-3
    assert placed.fovy_deg == pytest.approx(rig.config.camera.fovy_deg, abs=1e-6)
    seen = max(run.views, key=lambda v: v.detection.count)
    before = seen.detection
    rig.arm.move_to(seen.target.p_base_tcp_m, seen.target.yaw_rad)
    rig.twin.set_camera(placed)
    try:
        after = detect_board(rig.twin.render(640, 480), spec)
    finally:
        rig.twin.set_camera(rig.config.camera)
    common, ia, ib = np.intersect1d(before.ids, after.ids, return_indices=True)
    assert len(common) >= 12
    shift = np.linalg.norm(before.corners_px[ia] - after.corners_px[ib], axis=1)
    assert np.max(shift) < 1.0  # pixels: sim images from the calibrated pose match


def test_rolled_camera_reports_what_the_twin_cannot_represent():
    T = CameraConfig().T_base_cam()
    roll = np.eye(4)
    roll[:3, :3] = Rotation.from_rotvec([0.0, 0.0, np.deg2rad(5.0)]).as_matrix()
    _, roll_deg = camera_config_from_T_base_cam(T @ roll, 615.0, 480)
    assert roll_deg == pytest.approx(5.0, abs=0.01)


def test_the_arm_refuses_poses_outside_the_box_and_does_not_move():
    with TwinRig(TwinRigConfig(msaa_samples=0, width=64, height=48)) as rig:
        q0 = rig.twin.joint_pos()
        with pytest.raises(InvalidCommandError, match="outside the workspace box"):
            rig.arm.move_to(np.array([0.35, 0.0, 0.5]))
        np.testing.assert_array_equal(rig.twin.joint_pos(), q0)
        targets = pose_set(CollectConfig(), facing_yaw_rad=0.0)
        assert all(CollectConfig().box.contains(t.p_base_tcp_m) for t in targets)


def test_camera_that_never_sees_the_board_is_a_clear_error():
    away = CameraConfig(eye_m=(0.8, -0.5, 0.6), target_m=(1.6, -1.5, 0.9))  # looks away
    with (
        TwinRig(TwinRigConfig(camera=away, msaa_samples=0)) as rig,
        pytest.raises(BoardNeverSeenError, match="board not seen at any tool yaw"),
    ):
        collect_views(rig.arm, rig.camera, rig.config.board, CollectConfig())
