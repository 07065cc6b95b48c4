"""Eye-to-hand calibration: a fixed camera, a ChArUco board on the gripper.

    views = [HandEyeView(T_base_flange=fk(q), detection=detect_board(rgb, spec)), ...]
    res = solve_handeye(views, spec, K, dist, HandEyeConfig(board_z_flange_m=0.0526))
    res.T_base_cam, res.T_flange_board, res.reprojection_rms_px, res.rejected

Every view gives T_base_cam @ T_cam_board_i = T_base_flange_i @ T_flange_board (AX = ZB).
The solver checks the views first and raises ``HandEyeError`` instead of returning a wrong
answer: too few views, too little rotation or translation, and planar motion. Then it
initialises (OpenCV ``calibrateRobotWorldHandEye``, or a linear solve with the height prior
below), drops inconsistent views (robust refinement, then a residual threshold), refines
both transforms on the corner reprojection error of all views at once, and refuses a result
whose predicted uncertainty (from the Jacobian) is too large.

Tool-down arms (the xArm5): every flange rotation is about the vertical axis, and then the
camera height is not observable: moving the camera up by d and the board down the flange
axis by d explains every view equally well (Ulrich & Steger 2016, "Hand-eye calibration of
SCARA robots using dual quaternions"). The solver detects this motion and needs the board
origin's height along the flange axis, ``board_z_flange_m`` = T_flange_board[2, 3], measured
on the mount; an error in it moves the camera height by the same amount.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
from video2reward.calibration.board import (
    BoardDetection,
    BoardNotSeenError,
    CharucoBoardSpec,
    board_pose,
)


class HandEyeError(ValueError):
    """The views cannot determine the hand-eye transform; the message says what to change."""


@dataclass(frozen=True)
class HandEyeConfig:
    min_views: int = 6  # views with the board detected; 12+ recommended
    min_corners: int = 8  # corners for a view to count as "board seen"
    min_rotation_spread_deg: float = 15.0  # largest rotation between two views' flanges
    min_position_spread_m: float = 0.05  # largest distance between two views' flanges
    # Relative rotation axes within this angle of one axis count as planar motion.
    single_axis_tol_deg: float = 5.0
    # Board origin height along the flange axis, metres (T_flange_board[2, 3]); required for
    # planar motion (tool-down arms), ignored when the views rotate about several axes.
    board_z_flange_m: float | None = None
    reject_px: float = 1.5  # drop views whose corner RMS exceeds max(this, 4 x median)
    max_rejected_frac: float = 0.34  # more rejections than this: the data are inconsistent
    # Refuse a result whose corners still miss by more than this (RMS over the used views).
    # The robot's absolute accuracy (~1 mm) is ~1 px at 0.8 m; a bad mount or stale poses
    # give several pixels.
    max_rms_px: float = 2.0
    pixel_noise_px: float = 0.3  # assumed corner noise for the predicted uncertainty
    max_std_mm: float = 1.0  # refuse if the predicted 1-sigma of the camera position exceeds
    max_std_deg: float = 0.1  # ... or of its orientation
    # Refine fx, fy, cx, cy, k1, k2 together with the transforms. The robot's metric motions
    # turn the board poses into a 3D target spanning the workspace, which pins the focal
    # length down far better than views of a board that only turns about one axis.
    refine_intrinsics: bool = False

    def __post_init__(self) -> None:
        if self.min_views < 3:
            raise ValueError(
                f"min_views must be >= 3 (AX = ZB needs 3 poses), got {self.min_views}"
            )
        if self.min_corners < 4:
            raise ValueError(f"min_corners must be >= 4, got {self.min_corners}")
        if not 0 < self.min_rotation_spread_deg < 180:
            raise ValueError("min_rotation_spread_deg must be in (0, 180)")
        if not 0 < self.min_position_spread_m < 2:
            raise ValueError("min_position_spread_m must be in (0, 2) m")
        if not 0 < self.single_axis_tol_deg < 45:
            raise ValueError("single_axis_tol_deg must be in (0, 45)")
        if self.board_z_flange_m is not None and not abs(self.board_z_flange_m) < 1.0:
            raise ValueError(
                f"board_z_flange_m is a height on the gripper (m), got {self.board_z_flange_m}"
            )
        if not (self.reject_px > 0 and 0 <= self.max_rejected_frac < 1):
            raise ValueError("reject_px must be > 0 and max_rejected_frac in [0, 1)")
        if not self.max_rms_px >= self.reject_px:
            raise ValueError(f"max_rms_px must be >= reject_px, got {self.max_rms_px}")
        if not (self.pixel_noise_px > 0 and self.max_std_mm > 0 and self.max_std_deg > 0):
            raise ValueError("pixel_noise_px, max_std_mm and max_std_deg must be positive")


@dataclass(frozen=True)
class HandEyeView:
    T_base_flange: np.ndarray  # (4, 4) flange pose from the robot (FK of measured joints)
    detection: BoardDetection  # ChArUco corners seen by the fixed camera at that pose


@dataclass(frozen=True)
class HandEyeResult:
    T_base_cam: np.ndarray  # (4, 4) camera (OpenCV axes) in the robot base frame
    T_flange_board: np.ndarray  # (4, 4) board on the flange
    reprojection_rms_px: float  # all corners of the used views
    per_view_rms_px: np.ndarray  # (n_used,)
    per_view_trans_mm: (
        np.ndarray
    )  # (n_used,) |T_base_cam T_cam_board - T_base_flange T_flange_board|
    per_view_rot_deg: np.ndarray  # (n_used,)
    used: tuple[int, ...]  # indices into the input views
    rejected: tuple[int, ...]  # consistent-looking detections the solver dropped as outliers
    not_seen: tuple[int, ...]  # views without enough corners
    std_cam_mm: float  # predicted 1-sigma of the camera position at pixel_noise_px
    std_cam_deg: float  # predicted 1-sigma of the camera orientation
    planar_motion: bool  # True: the camera height came from board_z_flange_m
    K: np.ndarray  # (3, 3) camera matrix used (refined when refine_intrinsics)
    dist: np.ndarray  # (5,) OpenCV distortion coefficients used

    @property
    def rms_trans_mm(self) -> float:
        return float(np.sqrt(np.mean(self.per_view_trans_mm**2)))

    @property
    def rms_rot_deg(self) -> float:
        return float(np.sqrt(np.mean(self.per_view_rot_deg**2)))

    def summary(self) -> dict[str, object]:
        return {
            "views_used": len(self.used),
            "views_rejected": list(self.rejected),
            "views_board_not_seen": list(self.not_seen),
            "reprojection_rms_px": round(self.reprojection_rms_px, 4),
            "rms_trans_mm": round(self.rms_trans_mm, 4),
            "rms_rot_deg": round(self.rms_rot_deg, 5),
            "std_cam_mm": round(self.std_cam_mm, 4),
            "std_cam_deg": round(self.std_cam_deg, 5),
            "planar_motion": self.planar_motion,
        }


# ----------------------------------------------------------------------------- helpers
def _inv(T: np.ndarray) -> np.ndarray:
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def _pose(rotvec: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _project_rot(M: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (SVD), fixing a reflection."""
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
    return R


def _angle_deg(R: np.ndarray) -> float:
    return float(np.rad2deg(Rotation.from_matrix(R).magnitude()))


@dataclass(frozen=True)
class MotionCheck:
    rotation_spread_deg: float
    position_spread_m: float
    axis_spread_deg: float  # how far the relative rotation axes leave their main axis
    planar: bool


def check_motion(T_base_flange: list[np.ndarray], config: HandEyeConfig) -> MotionCheck:
    """Rotation and translation diversity of the robot poses; raises HandEyeError if too low."""
    n = len(T_base_flange)
    R = [T[:3, :3] for T in T_base_flange]
    p = np.array([T[:3, 3] for T in T_base_flange])
    spread_rot = 0.0
    axes = []
    for i in range(n):
        for j in range(i + 1, n):
            rv = Rotation.from_matrix(R[j] @ R[i].T).as_rotvec()
            ang = float(np.linalg.norm(rv))
            spread_rot = max(spread_rot, np.rad2deg(ang))
            if ang > np.deg2rad(2.0):
                axes.append(rv)  # length = angle: small rotations' noisy axes weigh less
    spread_pos = float(max(np.linalg.norm(p[i] - p[j]) for i in range(n) for j in range(n)))
    if spread_rot < config.min_rotation_spread_deg:
        raise HandEyeError(
            f"too little rotation between views: {spread_rot:.1f} deg, need >= "
            f"{config.min_rotation_spread_deg} deg (turn the tool, joint 5, between poses)"
        )
    if spread_pos < config.min_position_spread_m:
        raise HandEyeError(
            f"too little translation between views: {spread_pos * 1000:.0f} mm, need >= "
            f"{config.min_position_spread_m * 1000:.0f} mm (spread the poses over the workspace)"
        )
    A = np.array(axes)
    sv = np.linalg.svd(A, compute_uv=False)
    axis_spread = float(np.rad2deg(np.arctan2(sv[1], sv[0]))) if len(sv) > 1 else 0.0
    return MotionCheck(
        spread_rot, spread_pos, axis_spread, axis_spread < config.single_axis_tol_deg
    )


def _linear_init(
    A: list[np.ndarray], B: list[np.ndarray], z_board_flange_m: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous linear solve of R_A R_Y = R_X R_B, R_A t_Y + t_A = R_X t_B + t_X.

    Unknowns vec(R_X), vec(R_Y), t_X, t_Y (Li et al. 2010); ``z_board_flange_m`` fixes the
    board's height along the flange axis, which removes the null direction of planar motion.
    """
    w = 10.0  # translation rows in decimetres, so both row kinds weigh alike
    rows, rhs = [], []
    I3 = np.eye(3)
    for Ta, Tb in zip(A, B, strict=True):
        Ra, ta, Rb, tb = Ta[:3, :3], Ta[:3, 3], Tb[:3, :3], Tb[:3, 3]
        M = np.zeros((12, 24))
        M[:9, 0:9] = -np.kron(Rb.T, I3)
        M[:9, 9:18] = np.kron(I3, Ra)
        M[9:, 0:9] = -w * np.kron(tb.reshape(1, 3), I3)
        M[9:, 18:21] = -w * I3
        M[9:, 21:24] = w * Ra
        rows.append(M)
        rhs.append(np.concatenate([np.zeros(9), -w * ta]))
    M = np.vstack(rows)
    b = np.concatenate(rhs)
    free = np.ones(24, dtype=bool)
    if z_board_flange_m is not None:
        b = b - M[:, 23] * z_board_flange_m
        free[23] = False
    u = np.zeros(24)
    u[free] = np.linalg.lstsq(M[:, free], b, rcond=None)[0]
    if z_board_flange_m is not None:
        u[23] = z_board_flange_m
    R_X = _project_rot(u[0:9].reshape(3, 3, order="F"))
    R_Y = _project_rot(u[9:18].reshape(3, 3, order="F"))
    # Translations again with the rotations fixed: R_A t_Y - t_X = R_X t_B - t_A.
    rows_t, rhs_t = [], []
    for Ta, Tb in zip(A, B, strict=True):
        rows_t.append(np.hstack([-I3, Ta[:3, :3]]))
        rhs_t.append(R_X @ Tb[:3, 3] - Ta[:3, 3])
    Mt, bt = np.vstack(rows_t), np.concatenate(rhs_t)
    free_t = np.ones(6, dtype=bool)
    if z_board_flange_m is not None:
        bt = bt - Mt[:, 5] * z_board_flange_m
        free_t[5] = False
    v = np.zeros(6)
    v[free_t] = np.linalg.lstsq(Mt[:, free_t], bt, rcond=None)[0]
    if z_board_flange_m is not None:
        v[5] = z_board_flange_m
    X, Y = np.eye(4), np.eye(4)
    X[:3, :3], X[:3, 3] = R_X, v[:3]
    Y[:3, :3], Y[:3, 3] = R_Y, v[3:]
    return X, Y


def _opencv_init(A: list[np.ndarray], B: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's robot-world/hand-eye solver, mapped to eye-to-hand.

    OpenCV solves (world->cam) X = Z (gripper->base) for X = base->world, Z = gripper->cam.
    With "world" = robot base, "cam" = flange, "base" = our camera and "gripper" = board:
    T_flange_base T_base_cam = T_flange_board T_board_cam, so X = T_base_cam, Z = T_flange_board.
    """
    Ai = [_inv(T) for T in A]
    Bi = [_inv(T) for T in B]
    R_X, t_X, R_Z, t_Z = cv2.calibrateRobotWorldHandEye(
        [T[:3, :3] for T in Ai],
        [T[:3, 3] for T in Ai],
        [T[:3, :3] for T in Bi],
        [T[:3, 3] for T in Bi],
        method=cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH,
    )
    X, Y = np.eye(4), np.eye(4)
    X[:3, :3], X[:3, 3] = _project_rot(R_X), np.asarray(t_X).reshape(3)
    Y[:3, :3], Y[:3, 3] = _project_rot(R_Z), np.asarray(t_Z).reshape(3)
    return X, Y


def pose_residuals(
    X: np.ndarray, Y: np.ndarray, A: list[np.ndarray], B: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per view: translation (mm) and rotation (deg) of (X B_i)^-1 A_i Y (board-pose mismatch)."""
    tr, rot = [], []
    for Ta, Tb in zip(A, B, strict=True):
        E = _inv(X @ Tb) @ Ta @ Y
        tr.append(1000.0 * float(np.linalg.norm(E[:3, 3])))
        rot.append(_angle_deg(E[:3, :3]))
    return np.array(tr), np.array(rot)


@dataclass
class _Problem:
    """Corner reprojection over all views: x = [r_X, t_X, r_Y, t_Y (2 or 3), intrinsics?]."""

    A: list[np.ndarray]
    obj: list[np.ndarray]  # board-frame corners per view
    img: list[np.ndarray]  # detected pixels per view
    K: np.ndarray
    dist: np.ndarray
    z_board_flange_m: float | None
    refine_intrinsics: bool = False

    @property
    def n_pose(self) -> int:
        return 11 if self.z_board_flange_m is not None else 12

    def pack(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        rX = Rotation.from_matrix(X[:3, :3]).as_rotvec()
        rY = Rotation.from_matrix(Y[:3, :3]).as_rotvec()
        tY = Y[:3, 3] if self.z_board_flange_m is None else Y[:2, 3]
        parts = [rX, X[:3, 3], rY, tY]
        if self.refine_intrinsics:
            K, d = self.K, self.dist
            parts.append(np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], d[0], d[1]]))
        return np.concatenate(parts)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tY = (
            x[9:12]
            if self.z_board_flange_m is None
            else np.array([x[9], x[10], self.z_board_flange_m])
        )
        return _pose(x[0:3], x[3:6]), _pose(x[6:9], tY)

    def camera(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.refine_intrinsics:
            return self.K, self.dist
        fx, fy, cx, cy, k1, k2 = x[self.n_pose : self.n_pose + 6]
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return K, np.array([k1, k2, 0.0, 0.0, 0.0])

    def residuals(self, x: np.ndarray, views: list[int]) -> np.ndarray:
        X, Y = self.unpack(x)
        K, dist = self.camera(x)
        Xi = _inv(X)
        out = []
        for i in views:
            T = Xi @ self.A[i] @ Y  # T_cam_board predicted from the robot
            rvec = cv2.Rodrigues(T[:3, :3])[0]
            proj, _ = cv2.projectPoints(self.obj[i], rvec, T[:3, 3], K, dist)
            out.append((proj.reshape(-1, 2) - self.img[i]).ravel())
        return np.concatenate(out)

    def per_view_rms(self, x: np.ndarray, views: list[int]) -> np.ndarray:
        return np.array([float(np.sqrt(np.mean(self.residuals(x, [i]) ** 2) * 2)) for i in views])


def solve_handeye(
    views: list[HandEyeView],
    spec: CharucoBoardSpec,
    K: np.ndarray,
    dist: np.ndarray | None = None,
    config: HandEyeConfig | None = None,
) -> HandEyeResult:
    """T_base_cam and T_flange_board from eye-to-hand views; raises HandEyeError when unsure."""
    cfg = config or HandEyeConfig()
    K = np.asarray(K, dtype=np.float64)
    d = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64).ravel()
    corners = spec.corners_board_m()
    seen, not_seen, B = [], [], []
    for i, v in enumerate(views):
        try:
            B.append(board_pose(v.detection, spec, K, d, cfg.min_corners).T_cam_board)
            seen.append(i)
        except BoardNotSeenError:
            not_seen.append(i)
    if len(seen) < cfg.min_views:
        raise HandEyeError(
            f"too few views: the board was seen in {len(seen)} of {len(views)} views, need >= "
            f"{cfg.min_views} (board not seen in views {not_seen})"
        )
    A = [np.asarray(views[i].T_base_flange, dtype=np.float64) for i in seen]
    for T in A:
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise HandEyeError("every T_base_flange must be a finite 4x4 matrix")
    motion = check_motion(A, cfg)
    z_board_flange_m = None
    if motion.planar:
        if cfg.board_z_flange_m is None:
            raise HandEyeError(
                "planar motion: every flange rotation is about one axis (a tool-down arm), so "
                "the camera's distance along that axis is not observable. Give "
                "board_z_flange_m, the board origin's height along the flange axis measured "
                "on the mount, or add poses that tilt the tool."
            )
        z_board_flange_m = cfg.board_z_flange_m

    # Initial estimate, then a consensus set: views that agree with it within a generous bound.
    X, Y = _linear_init(A, B, z_board_flange_m) if motion.planar else _opencv_init(A, B)
    tr_mm, _ = pose_residuals(X, Y, A, B)
    keep = [k for k in range(len(A)) if tr_mm[k] <= max(4.0 * float(np.median(tr_mm)), 5.0)]
    if len(keep) >= cfg.min_views and len(keep) < len(A):
        Ak, Bk = [A[k] for k in keep], [B[k] for k in keep]
        X, Y = _linear_init(Ak, Bk, z_board_flange_m) if motion.planar else _opencv_init(Ak, Bk)

    prob = _Problem(
        A=A,
        obj=[corners[views[i].detection.ids] for i in seen],
        img=[views[i].detection.corners_px for i in seen],
        K=K,
        dist=d,
        z_board_flange_m=z_board_flange_m,
        refine_intrinsics=cfg.refine_intrinsics,
    )
    x = prob.pack(X, Y)
    # Robust pass over all views (soft L1 caps an outlier's pull), then hard rejection.
    x = least_squares(
        prob.residuals,
        x,
        args=(list(range(len(A))),),
        loss="soft_l1",
        f_scale=1.0,
        x_scale="jac",
    ).x
    used = list(range(len(A)))
    for _ in range(3):
        rms = prob.per_view_rms(x, used)
        thresh = max(cfg.reject_px, 4.0 * float(np.median(rms)))
        good = [k for k, r in zip(used, rms, strict=True) if r <= thresh]
        sol = least_squares(prob.residuals, x, args=(good,), method="lm", x_scale="jac")
        x = sol.x
        if good == used:
            break
        used = good
    rejected = [seen[k] for k in range(len(A)) if k not in used]
    rms_used = float(np.sqrt(np.mean(prob.residuals(x, used) ** 2) * 2))
    if (
        len(rejected) > cfg.max_rejected_frac * len(A)
        or len(used) < cfg.min_views
        or rms_used > cfg.max_rms_px
    ):
        raise HandEyeError(
            f"inconsistent views: {len(rejected)} of {len(A)} disagree with the rest (views "
            f"{rejected}) and the others still miss by {rms_used:.2f} px RMS (limit "
            f"{cfg.max_rms_px} px); check that the board is rigidly mounted, the robot poses "
            "are read after the arm settled and the images are synchronised with them"
        )

    # Predicted uncertainty from the Jacobian at the solution (Gauss-Newton covariance).
    J = sol.jac
    JtJ = J.T @ J
    if np.linalg.cond(JtJ) > 1e14:
        raise HandEyeError("the views leave the hand-eye transform undetermined (singular)")
    cov = cfg.pixel_noise_px**2 * np.linalg.inv(JtJ)
    std_t_mm = 1000.0 * float(np.sqrt(np.trace(cov[3:6, 3:6])))
    std_r_deg = float(np.rad2deg(np.sqrt(np.trace(cov[0:3, 0:3]))))
    if std_t_mm > cfg.max_std_mm or std_r_deg > cfg.max_std_deg:
        raise HandEyeError(
            f"ill-conditioned views: they pin the camera down only to {std_t_mm:.2f} mm / "
            f"{std_r_deg:.3f} deg (1 sigma at {cfg.pixel_noise_px} px), limits "
            f"{cfg.max_std_mm} mm / {cfg.max_std_deg} deg. Spread the poses over more of the "
            "workspace and turn the tool further between them."
        )

    X, Y = prob.unpack(x)
    K_used, dist_used = prob.camera(x)
    res = prob.residuals(x, used)
    # Board poses again under the final camera model, for the pose-chain residuals.
    B_used = [
        board_pose(views[seen[k]].detection, spec, K_used, dist_used, cfg.min_corners).T_cam_board
        for k in used
    ]
    tr_mm, rot_deg = pose_residuals(X, Y, [A[k] for k in used], B_used)
    return HandEyeResult(
        T_base_cam=X,
        T_flange_board=Y,
        reprojection_rms_px=float(np.sqrt(np.mean(res**2) * 2)),
        per_view_rms_px=prob.per_view_rms(x, used),
        per_view_trans_mm=tr_mm,
        per_view_rot_deg=rot_deg,
        used=tuple(seen[k] for k in used),
        rejected=tuple(rejected),
        not_seen=tuple(not_seen),
        std_cam_mm=std_t_mm,
        std_cam_deg=std_r_deg,
        planar_motion=motion.planar,
        K=K_used,
        dist=dist_used,
    )
