"""The teleop session on the robot's code path: ``XArmDriver`` (xArm SDK) against the
controller emulator in a private network namespace, a ``TwinCamera``, scripted keys and the
recorder. The same ``ArmCameraRobot`` drives the lab arm with a RealSense.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode,
    reason="needs unprivileged user + network namespaces (unshare -rn)",
)


def scenario(out: str) -> dict[str, Any]:
    import time

    from video2reward.robot.camera import TwinCamera, TwinCameraConfig
    from video2reward.robot.recorder import Recorder, RecorderConfig
    from video2reward.robot.teleop import TeleopConfig
    from video2reward.robot.teleop_keyboard import KeyboardTeleop, ScriptedKeys, hold_key
    from video2reward.robot.teleop_session import ArmCameraRobot, run_session
    from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig
    from video2reward.sim.emulator_camera import twin_intrinsics
    from video2reward.sim.twin import XArm5Twin

    script = [
        (0.0, b"o"),
        (0.2, b"e"),
        (0.4, b"\r"),
        *hold_key(b"a", 0.6, 0.8),
        (1.8, b"y"),
        (2.0, b"q"),
    ]
    with XArm5Twin() as render_twin, XArmDriver(XArmDriverConfig(ip="127.0.0.1")) as arm:
        camera = TwinCamera(
            TwinCameraConfig(64, 64, 30.0), render_twin.render, twin_intrinsics(64, 64)
        )
        with camera:
            robot = ArmCameraRobot(arm, camera)
            keys_ = ScriptedKeys(script, time.monotonic)
            cfg = RecorderConfig(out=out, task="reach", source="robot", min_free_mb=0.0)
            with (
                KeyboardTeleop(TeleopConfig(rate_hz=30.0), reader=keys_) as src,
                Recorder(cfg, robot.intrinsics()) as rec,
            ):
                saved = run_session(src, robot, rec, 30.0, real_time=False, out=None, max_ticks=300)
            final = arm.state()
    return {"saved": saved, "final_pos": final.ee_pos_m.tolist()}


def test_keys_drive_the_xarm_driver_through_the_emulator_and_record(tmp_path: Path) -> None:
    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.sim.emulator_netns import run_with_emulator

    out = tmp_path / "arm.zarr"
    proc = run_with_emulator([sys.executable, __file__, str(out)], timeout_s=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    res = json.loads(lines[-1])
    assert res["saved"] == 1
    s = EpisodeStore.open(out)
    assert s.attrs[keys.ATTR_SOURCE] == "robot"
    ep = s.episode(0)
    n = len(ep[keys.IMAGE])
    assert 35 <= n <= 50  # 1.4 s of 30 fps frames (the camera paces the loop)
    a = ep[keys.ACTION]
    assert (a[:, 1] > 0.3).sum() >= 18 and not a[-1].any()
    # The arm moved +y as commanded, measured by the driver (the emulator's twin).
    assert ep[keys.EE_POS][-1, 1] - ep[keys.EE_POS][0, 1] > 0.05
    np.testing.assert_allclose(res["final_pos"][0], 0.35, atol=0.01)  # home x kept
    # Tool pointing down: the quaternion from the driver's roll-pitch-yaw is (0, +-1, 0, 0).
    np.testing.assert_allclose(np.abs(ep[keys.EE_QUAT][:, 1]), 1.0, atol=0.02)
    assert np.all(np.diff(ep[keys.TIMESTAMP]) > 0)


if __name__ == "__main__":
    print(json.dumps(scenario(sys.argv[1])), flush=True)
