"""Eye-to-hand solver on synthetic views: exact projections of a known rig, plus pixel noise.

Independent of the renderer: robot poses come from the xArm5 FK/IK, detections from
cv2.projectPoints of the true chain T_cam_board = inv(T_base_cam) T_base_flange T_flange_board.
"""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import BoardDetection, BoardMount, CharucoBoardSpec
from video2reward.calibration.handeye import HandEyeConfig, HandEyeError, HandEyeView, solve_handeye
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk, ik_tool_down
from video2reward.sim.twin import CameraConfig

SPEC = CharucoBoardSpec()
MOUNT = BoardMount()
Y_TRUE = MOUNT.T_flange_board(SPEC)
X_TRUE = CameraConfig().T_base_cam()
K = np.array([[615.0, 0.0, 319.5], [0.0, 615.0, 239.5], [0.0, 0.0, 1.0]])
Z_PRIOR = float(Y_TRUE[2, 3])
FACING_YAW = np.deg2rad(-45.0)


def tool_down(p, yaw):
    return fk(ik_tool_down(np.asarray(p, float), yaw, tcp_offset_m=GRIPPER_TCP_OFFSET_M))


def lattice_poses(n=16, z_levels=(0.25, 0.10), yaw_spread_deg=35.0):
    out = []
    offsets = np.deg2rad(yaw_spread_deg) * np.array([-1.0, 1 / 3, 1.0, -1 / 3])
    pts = [(x, y, z) for z in z_levels for x in (0.25, 0.375, 0.5) for y in (-0.2, 0.0, 0.2)]
    for k, p in enumerate(pts[:n]):
        out.append(tool_down(p, FACING_YAW + offsets[k % 4]))
    return out


def detect(T_base_flange, X=X_TRUE, Y=Y_TRUE, noise_px=0.1, rng=None):
    """The detection a perfect detector with Gaussian noise would return."""
    T = np.linalg.inv(X) @ T_base_flange @ Y
    P = SPEC.corners_board_m()
    proj, _ = cv2.projectPoints(P, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, None)
    uv = proj.reshape(-1, 2)
    if rng is not None:
        uv = uv + rng.normal(0.0, noise_px, uv.shape)
    ids = np.flatnonzero((uv[:, 0] > 0) & (uv[:, 0] < 639) & (uv[:, 1] > 0) & (uv[:, 1] < 479))
    return BoardDetection(uv[ids], ids, (640, 480))


def views_for(poses, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [HandEyeView(A, detect(A, rng=rng, **kw)) for A in poses]


def errors(T, T_true):
    dt_mm = 1000 * np.linalg.norm(T[:3, 3] - T_true[:3, 3])
    dR = T[:3, :3].T @ T_true[:3, :3]
    return dt_mm, np.rad2deg(Rotation.from_matrix(dR).magnitude())


def test_tool_down_views_with_the_height_prior_recover_the_camera():
    res = solve_handeye(
        views_for(lattice_poses()), SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR)
    )
    dt_mm, dr_deg = errors(res.T_base_cam, X_TRUE)
    assert res.planar_motion
    assert dt_mm < 0.5 and dr_deg < 0.05
    assert errors(res.T_flange_board, Y_TRUE)[0] < 0.5
    # The injected noise: 0.1 px per axis is 0.14 px as a 2D RMS.
    assert res.reprojection_rms_px == pytest.approx(0.1 * np.sqrt(2), rel=0.2)
    assert res.rejected == () and len(res.used) == 16
    assert res.std_cam_mm < 1.0


def test_an_error_in_the_height_prior_moves_only_the_camera_height():
    res = solve_handeye(
        views_for(lattice_poses()), SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR + 0.004)
    )
    d = res.T_base_cam[:3, 3] - X_TRUE[:3, 3]
    # Board 4 mm further along the (downward) flange axis <=> camera 4 mm lower: the whole
    # rig shifts down and every image stays the same. Nothing else moves.
    assert d[2] == pytest.approx(-0.004, abs=3e-4)
    assert np.linalg.norm(d[:2]) < 5e-4
    assert res.reprojection_rms_px < 0.15  # the images cannot tell: that is the degeneracy


@pytest.mark.parametrize("z_levels", [(0.2,), (0.25, 0.10)], ids=["coplanar", "two-heights"])
def test_planar_motion_without_the_prior_is_refused_not_guessed(z_levels):
    poses = lattice_poses(n=9 * len(z_levels), z_levels=z_levels)
    with pytest.raises(HandEyeError, match=r"planar motion.*board_z_flange_m"):
        solve_handeye(views_for(poses), SPEC, K, None, HandEyeConfig())


def test_too_few_views_is_a_clear_error():
    with pytest.raises(HandEyeError, match="too few views: the board was seen in 4 of 4"):
        solve_handeye(
            views_for(lattice_poses(n=4)), SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR)
        )


def test_board_never_seen_is_a_clear_error():
    empty = BoardDetection(np.zeros((0, 2)), np.zeros(0, int), (640, 480))
    views = [HandEyeView(A, empty) for A in lattice_poses()]
    with pytest.raises(HandEyeError, match="seen in 0 of 16 views"):
        solve_handeye(views, SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR))


def test_no_rotation_between_views_is_refused():
    poses = [
        tool_down(p, FACING_YAW)
        for p in [(x, y, 0.2) for x in (0.25, 0.4, 0.5) for y in (-0.2, 0.0, 0.2)]
    ]
    with pytest.raises(HandEyeError, match="too little rotation"):
        solve_handeye(views_for(poses), SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR))


def test_turning_in_place_is_refused():
    # Only joint 5 moves: the flange stays put, every view is a rotation about one line.
    poses = [tool_down((0.4, 0.0, 0.2), FACING_YAW + d) for d in np.deg2rad(np.arange(-30, 31, 6))]
    with pytest.raises(HandEyeError, match="too little translation"):
        solve_handeye(views_for(poses), SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR))


def test_a_view_with_a_wrong_robot_pose_is_rejected():
    poses = lattice_poses()
    views = views_for(poses)
    bad = poses[5].copy()
    bad[:3, 3] += [0.03, 0.0, 0.0]  # the robot reported a pose 3 cm off (stale state)
    views[5] = HandEyeView(bad, views[5].detection)
    res = solve_handeye(views, SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR))
    assert res.rejected == (5,)
    dt_mm, dr_deg = errors(res.T_base_cam, X_TRUE)
    assert dt_mm < 0.5 and dr_deg < 0.05


def test_mostly_inconsistent_views_are_refused():
    poses = lattice_poses()
    rng = np.random.default_rng(1)
    views = []
    for k, A in enumerate(poses):
        A_reported = A.copy()
        if k % 2:
            A_reported[:3, 3] += rng.uniform(-0.04, 0.04, 3)
        views.append(HandEyeView(A_reported, detect(A, rng=rng)))
    with pytest.raises(HandEyeError, match="inconsistent views"):
        solve_handeye(views, SPEC, K, None, HandEyeConfig(board_z_flange_m=Z_PRIOR))


def test_a_result_more_uncertain_than_the_limit_is_refused():
    cfg = HandEyeConfig(board_z_flange_m=Z_PRIOR, max_std_mm=0.01)
    with pytest.raises(HandEyeError, match="ill-conditioned views"):
        solve_handeye(views_for(lattice_poses(n=8)), SPEC, K, None, cfg)


def test_tilted_views_solve_without_any_prior_through_opencv():
    # A 6-axis arm (or an xArm5 allowed to pitch) tilts the tool: rotations about several
    # axes make the problem fully observable and the OpenCV initialisation is used.
    rng = np.random.default_rng(3)
    poses = []
    for A in lattice_poses():
        tilt = np.eye(4)
        tilt[:3, :3] = Rotation.from_rotvec([*rng.uniform(-0.3, 0.3, 2), 0.0]).as_matrix()
        poses.append(A @ tilt)
    res = solve_handeye(views_for(poses), SPEC, K, None, HandEyeConfig())
    assert not res.planar_motion
    dt_mm, dr_deg = errors(res.T_base_cam, X_TRUE)
    assert dt_mm < 0.5 and dr_deg < 0.05
    assert errors(res.T_flange_board, Y_TRUE)[0] < 0.5


def test_intrinsics_refined_jointly_from_a_wrong_start():
    K_wrong = K.copy()
    K_wrong[0, 0] *= 1.03
    K_wrong[1, 1] *= 0.98
    K_wrong[0, 2] += 6.0
    cfg = HandEyeConfig(board_z_flange_m=Z_PRIOR, refine_intrinsics=True)
    res = solve_handeye(views_for(lattice_poses(n=18)), SPEC, K_wrong, None, cfg)
    np.testing.assert_allclose(np.diag(res.K)[:2], np.diag(K)[:2], rtol=2e-3)
    np.testing.assert_allclose(res.K[:2, 2], K[:2, 2], atol=1.0)
    dt_mm, dr_deg = errors(res.T_base_cam, X_TRUE)
    assert dt_mm < 1.0 and dr_deg < 0.05


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="min_views"):
        HandEyeConfig(min_views=2)
    with pytest.raises(ValueError, match="board_z_flange_m"):
        HandEyeConfig(board_z_flange_m=52.6)  # millimetres by mistake
