"""ChArUco board: spec validation, detection and pose on an exactly known synthetic view."""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import (
    BoardMount,
    BoardNotSeenError,
    CharucoBoardSpec,
    board_image,
    board_pose,
    detect_board,
    write_board_png,
)

W, H = 640, 480
K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])


def synthetic_view(spec: CharucoBoardSpec, T_cam_board: np.ndarray, pps: int = 40) -> np.ndarray:
    """Warp the board image through the exact homography of a pinhole camera K at a pose.

    Board-image pixel (u, v) (OpenCV pixel centres) is the board point
    ((u + 0.5) s, (v + 0.5) s, 0) with s = square / pixels per square. ``pps`` keeps the
    warp near 1:1 (bilinear downsampling aliases the edges and biases the corners).
    """
    img = board_image(spec, pps)
    s = spec.square_m / pps
    S = np.array([[s, 0, 0.5 * s], [0, s, 0.5 * s], [0, 0, 1.0]])
    Rt = np.column_stack([T_cam_board[:3, 0], T_cam_board[:3, 1], T_cam_board[:3, 3]])
    Hm = K @ Rt @ S
    return cv2.warpPerspective(img, Hm, (W, H), flags=cv2.INTER_LINEAR, borderValue=128)


def pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"squares_x": 2}, "squares per side"),
        ({"marker_m": 0.05}, "marker_m"),
        ({"dictionary": "DICT_9X9_1"}, "unknown ArUco dictionary"),
        ({"squares_x": 12, "squares_y": 12, "dictionary": "DICT_4X4_50"}, "larger dictionary"),
        ({"square_m": 0.0}, "square_m"),
    ],
)
def test_bad_board_specs_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CharucoBoardSpec(**kwargs)


def test_png_is_the_board_at_the_requested_scale(tmp_path):
    spec = CharucoBoardSpec()
    p = write_board_png(spec, tmp_path / "b.png", px_per_square=50)
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (spec.squares_y * 50, spec.squares_x * 50)
    det = detect_board(img, spec)
    assert det.count == spec.n_corners
    # Corner id k sits at its board coordinate / square size * 50 px (pixel centres: -0.5).
    expected = spec.corners_board_m()[det.ids, :2] / spec.square_m * 50 - 0.5
    np.testing.assert_allclose(det.corners_px, expected, atol=0.3)


def test_pose_of_a_synthetic_view_matches_the_true_pose():
    spec = CharucoBoardSpec()
    T_true = pose([0.35, -0.25, 0.1], [-0.10, -0.08, 0.55])
    det = detect_board(synthetic_view(spec, T_true), spec)
    assert det.count == spec.n_corners
    est = board_pose(det, spec, K)
    assert est.rms_px < 0.3
    err = est.T_cam_board[:3, 3] - T_true[:3, 3]
    assert np.linalg.norm(err[:2]) < 0.5e-3  # across the view: sub-millimetre
    assert abs(err[2]) < 1.5e-3  # depth, the weak direction of a single view: < 0.3 %
    dR = est.T_cam_board[:3, :3].T @ T_true[:3, :3]
    assert np.rad2deg(Rotation.from_matrix(dR).magnitude()) < 0.2


def test_board_not_seen_is_a_clear_error():
    spec = CharucoBoardSpec()
    det = detect_board(np.full((H, W, 3), 200, np.uint8), spec)
    assert det.count == 0
    with pytest.raises(BoardNotSeenError, match="board not seen: 0 ChArUco corners"):
        board_pose(det, spec, K)


def test_detection_refuses_non_images():
    with pytest.raises(ValueError, match="uint8"):
        detect_board(np.zeros((10, 10), np.float32), CharucoBoardSpec())


def test_mount_faces_outwards_and_up_from_a_tool_down_flange():
    spec = CharucoBoardSpec()
    T = BoardMount(tilt_deg=45.0).T_flange_board(spec)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    printed_normal = -T[:3, 2]  # the print faces board -z
    np.testing.assert_allclose(printed_normal, [np.sqrt(0.5), 0.0, -np.sqrt(0.5)], atol=1e-12)
    # The board centre is where the mount says.
    w, h = spec.size_m
    np.testing.assert_allclose(T[:3, :3] @ [w / 2, h / 2, 0] + T[:3, 3], [0.10, 0.0, 0.09])
