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


def print_table(rows: list[dict[str, float | str]]) -> None:
    print(" ".join(name for name, _ in COLUMNS))
    for row in rows:
        cells = []
        for name, decimals in COLUMNS:
            v = row.get(name)
            text = "-" if v is None else f"{v}" if decimals is None else f"{v:.{decimals}f}"
            cells.append(text.rjust(len(name)))
        line = " ".join(cells)
        if "error" in row:
            line += f"  refused: {row['error']}"
        print(line)


def main(argv: list[str]) -> int:
    sizes = [(6, 1), (18, 2)] if "--quick" in argv else [(6, 1), (9, 1), (12, 2), (18, 2), (27, 3)]
    t0 = time.perf_counter()
    rows = run(sizes)
    print_table(rows)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s (includes the yaw sweep: 12 poses per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
