"""Hand-eye calibration in the twin: collection and solve time, accuracy vs number of views.

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_calib.py            # ~1 min on 2 cores
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_calib.py --quick    # 2 rows

For each pose-set size the automatic routine runs from scratch in the twin (640x480, 4x MSAA,
board on the gripper, camera at the default pose), then three solves are timed and scored
against the twin's truth: intrinsics from ChArUco alone (cv2.calibrateCamera), the hand-eye
with those intrinsics fixed, and the hand-eye refining the intrinsics jointly (the default of
``v2r calib handeye``). Times are wall-clock on this machine; the twin moves in simulated
time, so on the robot collection is dominated by arm travel (~2 s per pose at 100 mm/s).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from scipy.spatial.transform import Rotation
from video2reward.calibration.collect import CollectConfig, collect_views
from video2reward.calibration.handeye import (
    HandEyeConfig,
    HandEyeError,
    solve_handeye,
)
from video2reward.calibration.intrinsics import (
    IntrinsicsConfig,
    IntrinsicsError,
    estimate_intrinsics,
)
from video2reward.calibration.sim_rig import TwinRig, TwinRigConfig


def _errors(T: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    mm = 1000.0 * float(np.linalg.norm(T[:3, 3] - T_true[:3, 3]))
    deg = float(np.rad2deg(Rotation.from_matrix(T[:3, :3].T @ T_true[:3, :3]).magnitude()))
    return mm, deg


def _focal_pct(K: np.ndarray, fx: float, fy: float) -> float:
    return 100.0 * max(abs(K[0, 0] / fx - 1.0), abs(K[1, 1] / fy - 1.0))


def run(sizes: list[tuple[int, int]]) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    with TwinRig(TwinRigConfig()) as rig:
        spec, truth = rig.config.board, rig.intrinsics_true
        z_prior = float(rig.T_flange_board_true[2, 3])
        rig.camera.read()  # the first render creates the GL context (~1 s): not collection time
        for n_views, z_levels in sizes:
            cfg = CollectConfig(n_views=n_views, z_levels=z_levels)
            t0 = time.perf_counter()
            run_ = collect_views(rig.arm, rig.camera, spec, cfg)
            t_collect = time.perf_counter() - t0
            row: dict[str, float | str] = {
                "views": n_views,
                "seen": len(run_.seen(8)),
                "collect_s": t_collect,
            }
            try:
                t1 = time.perf_counter()
                ch = estimate_intrinsics(
                    [v.detection for v in run_.views], spec, IntrinsicsConfig(min_views=5)
                )
                row["charuco_s"] = time.perf_counter() - t1
                row["charuco_f_pct"] = _focal_pct(ch.intrinsics.K(), truth.fx, truth.fy)
                dist = np.asarray(ch.intrinsics.coeffs)
                t2 = time.perf_counter()
                fixed = solve_handeye(
                    run_.handeye_views(),
                    spec,
                    ch.intrinsics.K(),
                    dist,
                    HandEyeConfig(min_views=5, board_z_flange_m=z_prior),
                )
                row["fixedK_s"] = time.perf_counter() - t2
                row["fixedK_mm"], row["fixedK_deg"] = _errors(fixed.T_base_cam, rig.T_base_cam_true)
                t3 = time.perf_counter()
                joint = solve_handeye(
                    run_.handeye_views(),
                    spec,
                    ch.intrinsics.K(),
                    dist,
                    HandEyeConfig(min_views=5, board_z_flange_m=z_prior, refine_intrinsics=True),
                )
                row["joint_s"] = time.perf_counter() - t3
                row["joint_mm"], row["joint_deg"] = _errors(joint.T_base_cam, rig.T_base_cam_true)
                row["joint_f_pct"] = _focal_pct(joint.K, truth.fx, truth.fy)
                row["joint_c_px"] = float(
                    np.hypot(joint.K[0, 2] - truth.cx, joint.K[1, 2] - truth.cy)
                )
                row["std_mm"] = joint.std_cam_mm
                row["rms_px"] = joint.reprojection_rms_px
            except (HandEyeError, IntrinsicsError) as e:
                row["error"] = str(e)[:60]
            rows.append(row)
    return rows


# (key, decimals); None = an integer count
COLUMNS: list[tuple[str, int | None]] = [
    ("views", None),
    ("seen", None),
    ("collect_s", 2),
    ("charuco_s", 3),
    ("charuco_f_pct", 2),
    ("fixedK_s", 3),
    ("fixedK_mm", 2),
    ("fixedK_deg", 3),
    ("joint_s", 3),
    ("joint_mm", 3),
    ("joint_deg", 4),
    ("joint_f_pct", 3),
    ("joint_c_px", 2),
    ("std_mm", 2),
    ("rms_px", 3),
]


def print_table(
    rows: list[dict[str, float | str]], columns: list[tuple[str, int | None]] = COLUMNS
) -> None:
    print(" ".join(name for name, _ in columns))
    for row in rows:
        cells = []
        for name, decimals in columns:
            v = row.get(name)
            text = "-" if v is None else f"{v}" if decimals is None else f"{v:.{decimals}f}"
            cells.append(text.rjust(len(name)))
        line = " ".join(cells)
        if "error" in row:
            line += f"  refused: {row['error']}"
        print(line)


# ----------------------------------------------------------------------------- robustness
def robustness(seeds: int = 5) -> list[dict[str, float | str]]:
    """Synthetic views of the same rig (no rendering): what real-world errors cost.

    Corners are exact projections plus Gaussian pixel noise; the robot poses handed to the
    solver carry random errors like an arm's absolute inaccuracy; the height prior is off
    by ``prior_mm``. Errors of T_base_cam are the mean and worst over ``seeds`` runs.
    """
    import cv2
    from video2reward.calibration.board import BoardDetection, BoardMount, CharucoBoardSpec
    from video2reward.calibration.collect import pose_set
    from video2reward.calibration.handeye import HandEyeView
    from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, fk, ik_tool_down
    from video2reward.sim.twin import CameraConfig

    spec = CharucoBoardSpec()
    Y = BoardMount().T_flange_board(spec)
    X = CameraConfig().T_base_cam()
    k = CameraConfig().intrinsics()
    K = np.array([[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1.0]])
    targets = pose_set(CollectConfig(n_views=18), facing_yaw_rad=np.deg2rad(-45.0))
    A = [
        fk(ik_tool_down(t.p_base_tcp_m, t.yaw_rad, tcp_offset_m=GRIPPER_TCP_OFFSET_M))
        for t in targets
    ]
    P = spec.corners_board_m()
    conditions = [  # pixel noise px, pose noise mm, pose noise deg, prior error mm
        (0.1, 0.0, 0.0, 0.0),
        (0.3, 0.0, 0.0, 0.0),
        (1.0, 0.0, 0.0, 0.0),
        (0.3, 0.5, 0.02, 0.0),
        (0.3, 1.0, 0.05, 0.0),
        (0.3, 0.0, 0.0, 1.0),
    ]
    rows: list[dict[str, float | str]] = []
    for px, t_mm, r_deg, prior_mm in conditions:
        errs_mm, errs_deg, rms = [], [], []
        try:
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                views = []
                for Ai in A:
                    T = np.linalg.inv(X) @ Ai @ Y
                    uv, _ = cv2.projectPoints(P, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, None)
                    uv = uv.reshape(-1, 2) + rng.normal(0, px, (len(P), 2))
                    ok = np.flatnonzero(
                        (uv[:, 0] > 0) & (uv[:, 0] < 639) & (uv[:, 1] > 0) & (uv[:, 1] < 479)
                    )
                    A_rep = Ai.copy()
                    A_rep[:3, 3] += rng.normal(0, t_mm / 1000 / np.sqrt(3), 3)
                    rv = rng.normal(0, np.deg2rad(r_deg) / np.sqrt(3), 3)
                    A_rep[:3, :3] = Rotation.from_rotvec(rv).as_matrix() @ A_rep[:3, :3]
                    views.append(HandEyeView(A_rep, BoardDetection(uv[ok], ok, (640, 480))))
                cfg = HandEyeConfig(board_z_flange_m=float(Y[2, 3]) + prior_mm / 1000)
                res = solve_handeye(views, spec, K, None, cfg)
                e_mm, e_deg = _errors(res.T_base_cam, X)
                errs_mm.append(e_mm)
                errs_deg.append(e_deg)
                rms.append(res.reprojection_rms_px)
            rows.append(
                {
                    "noise_px": px,
                    "pose_mm": t_mm,
                    "pose_deg": r_deg,
                    "prior_mm": prior_mm,
                    "mean_mm": float(np.mean(errs_mm)),
                    "max_mm": float(np.max(errs_mm)),
                    "mean_deg": float(np.mean(errs_deg)),
                    "max_deg": float(np.max(errs_deg)),
                    "rms_px": float(np.mean(rms)),
                }
            )
        except HandEyeError as e:
            rows.append(
                {
                    "noise_px": px,
                    "pose_mm": t_mm,
                    "pose_deg": r_deg,
                    "prior_mm": prior_mm,
                    "error": str(e)[:70],
                }
            )
    return rows


ROBUST_COLUMNS: list[tuple[str, int | None]] = [
    ("noise_px", 1),
    ("pose_mm", 1),
    ("pose_deg", 2),
    ("prior_mm", 1),
    ("mean_mm", 3),
    ("max_mm", 3),
    ("mean_deg", 4),
    ("max_deg", 4),
    ("rms_px", 3),
]


def main(argv: list[str]) -> int:
    sizes = [(6, 1), (18, 2)] if "--quick" in argv else [(6, 1), (9, 1), (12, 2), (18, 2), (27, 3)]
    t0 = time.perf_counter()
    rows = run(sizes)
    print("Twin, rendered (640x480, 4x MSAA), accuracy vs number of poses:")
    print_table(rows)
    print("\nSynthetic views of the same rig (18 poses, 5 seeds): what real-world errors cost")
    print_table(robustness(), ROBUST_COLUMNS)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s (includes the yaw sweep: 12 poses per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
