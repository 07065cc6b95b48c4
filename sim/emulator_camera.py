"""The twin as a RealSense: record twin renders into a ``.db3`` the RealSense code plays back.

    v2r camera record out=runs/twin.db3 frames=90 width=640 height=480 fps=30
    cam = RealSenseCamera(RealSenseConfig(recording="runs/twin.db3", width=640, height=480))

No camera exists on CI machines, so recordings for tests and the camera node are made here:
the twin's D435-like camera renders the arm sweeping over the table, and
``robot.realsense.write_recording`` stores the frames with pyrealsense2's own recorder,
stamped on a 1/fps grid and carrying the render's pinhole intrinsics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from video2reward.configs.compose import compose, run_cli, to_dataclass
from video2reward.robot.camera import CameraIntrinsics, TwinCamera, TwinCameraConfig
from video2reward.robot.realsense import write_recording


@dataclass(frozen=True)
class RecordConfig:
    out: str = "runs/twin_camera.db3"
    frames: int = 90
    width: int = 84
    height: int = 84
    fps: int = 30
    motion: bool = True

    def __post_init__(self) -> None:
        if not self.out.endswith(".db3"):
            raise ValueError(f"out must end in .db3, got {self.out}")
        if not 1 <= self.frames <= 100_000:
            raise ValueError(f"frames must be in [1, 100000], got {self.frames}")
        if self.fps not in (6, 15, 30, 60, 90):
            raise ValueError(f"fps must be a RealSense rate (6/15/30/60/90), got {self.fps}")


def twin_intrinsics(width: int, height: int) -> CameraIntrinsics:
    from video2reward.sim.twin import CameraConfig

    k = CameraConfig().intrinsics(width, height)
    return CameraIntrinsics(width, height, k["fx"], k["fy"], k["cx"], k["cy"])


def twin_camera(width: int, height: int, fps: float) -> TwinCamera:
    """A ``robot.camera.Camera`` over a twin at its ready pose (``camera_node source:=twin``).

    Registered as the ``twin_camera`` robot adapter (robot/adapters.py).
    """
    from video2reward.sim.twin import XArm5Twin

    twin = XArm5Twin()
    return TwinCamera(
        TwinCameraConfig(width, height, fps), twin.render, twin_intrinsics(width, height)
    )


def twin_frames(cfg: RecordConfig) -> Iterator[np.ndarray]:
    from video2reward.sim.twin import READY_Q, XArm5Twin

    with XArm5Twin() as twin:
        twin.reset(READY_Q)
        for i in range(cfg.frames):
            if cfg.motion:
                q = READY_Q.copy()
                q[0] += 0.4 * np.sin(2 * np.pi * i / max(cfg.frames, 2))
                twin.servo(q, 1.0, 1.0 / cfg.fps)
            yield twin.render(cfg.width, cfg.height)


def record(cfg: RecordConfig) -> int:
    intrinsics = twin_intrinsics(cfg.width, cfg.height)
    return write_recording(cfg.out, twin_frames(cfg), cfg.fps, intrinsics)


def _run(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print("options (key=value):", ", ".join(RecordConfig.__dataclass_fields__))
        return 0
    cfg = to_dataclass(RecordConfig, compose("hw_camera_record", overrides))
    n = record(cfg)
    size = [cfg.width, cfg.height]
    print(json.dumps({"out": cfg.out, "frames": n, "size": size, "fps": cfg.fps}))
    return 0


def main(argv: list[str]) -> int:
    return run_cli(_run, argv)
