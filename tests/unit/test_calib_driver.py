"""The collection routine through the real driver stack: XArmDriver -> xArm SDK -> emulator.

The scenario runs as ``python this_file.py`` inside a private network namespace (the SDK's
ports are fixed). It serves the controller emulator over the same twin that carries the
board and renders the camera, drives it with ``XArmDriver`` (position-mode moves, its
workspace-box check, fault latching) and prints one JSON line the test asserts on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode != 0,
    reason="needs unprivileged user + network namespaces (unshare -rn)",
)


def scenario() -> dict[str, Any]:
    from scipy.spatial.transform import Rotation
    from video2reward.calibration.collect import CollectConfig, collect_views
    from video2reward.calibration.handeye import HandEyeConfig, solve_handeye
    from video2reward.calibration.sim_rig import TwinRig, TwinRigConfig
    from video2reward.calibration.workspace import jog_and_record
    from video2reward.robot.camera import TwinCamera, TwinCameraConfig
    from video2reward.robot.safety import InvalidCommandError
    from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig
    from video2reward.sim.xarm_controller_model import EmulatorConfig
    from video2reward.sim.xarm_emulator import EmulatorServer

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    out: dict[str, Any] = {}
    with TwinRig(TwinRigConfig()) as rig:
        server = EmulatorServer(EmulatorConfig(), twin=rig.twin)

        def render(w: int, h: int) -> np.ndarray:
            with server.controller.lock:  # the control loop steps this twin in its thread
                return rig.twin.render(w, h)

        cam = TwinCamera(TwinCameraConfig(640, 480, fps=120.0), render, rig.intrinsics_true)
        cfg = CollectConfig(n_views=10, facing_yaw_deg=-45.0)
        with server, XArmDriver(XArmDriverConfig(reset_speed_mm_s=250.0)) as arm:
            arm.enable()
            try:
                arm.move_to(np.array([0.35, 0.0, 0.6]))
            except InvalidCommandError as e:
                out["refused"] = str(e)
            # Jogging with pauses longer than the watchdog deadline between bursts.
            arm.move_to(np.array([0.35, 0.0, 0.20]))
            script = iter(["r", "x+ 3", "wait", "z- 2", "wait", "r", "d"])

            def ask(_: str) -> str:
                cmd = next(script)
                if cmd == "wait":
                    time.sleep(0.6)  # the user thinks; the watchdog (0.25 s) stops the arm
                    return ""
                return cmd

            corners = jog_and_record(arm, ask, lambda _: None)
            out["jog_mm"] = (1000 * (corners[1] - corners[0])).tolist()
            run = collect_views(arm, cam, rig.config.board, cfg)
            out["fault"] = arm.state().fault
            log = server.controller.motion_log
        out["n_motion_commands"] = len(log)
        out["views_seen"] = len(run.seen(8))
        res = solve_handeye(
            run.handeye_views(),
            rig.config.board,
            rig.intrinsics_true.K(),
            None,
            HandEyeConfig(board_z_flange_m=float(rig.T_flange_board_true[2, 3])),
        )
        T, T_true = res.T_base_cam, rig.T_base_cam_true
        out["err_mm"] = 1000 * float(np.linalg.norm(T[:3, 3] - T_true[:3, 3]))
        dR = T[:3, :3].T @ T_true[:3, :3]
        out["err_deg"] = float(np.rad2deg(Rotation.from_matrix(dR).magnitude()))
        out["rms_px"] = res.reprojection_rms_px
    return out


def test_collection_through_the_xarm_driver_and_emulator_recovers_the_camera():
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.run(
        ["unshare", "-rn", sys.executable, __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(lines[-1])
    assert "outside the workspace box" in r["refused"]  # the driver's envelope, not ours
    # 3 steps in x and 2 down; each burst re-enables, and the envelope starts a stream from
    # rest: the first step is 2.2 mm (max_accel * start_period^2), the rest 10 mm each.
    np.testing.assert_allclose(r["jog_mm"], [22.2, 0.0, -12.2], atol=1.5)
    assert r["fault"] is None
    assert r["n_motion_commands"] >= 10  # every pose went to the controller as a move
    assert r["views_seen"] >= 7  # the lattice corners farthest from the camera may miss
    assert r["err_mm"] < 2.0 and r["err_deg"] < 0.2
    assert r["rms_px"] < 0.5


if __name__ == "__main__":
    print(json.dumps(scenario()))
