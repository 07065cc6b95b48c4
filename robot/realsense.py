"""Intel RealSense through pyrealsense2: a live camera or a ``.db3`` recording, same code path.

    cam = RealSenseCamera(RealSenseConfig(serial="", width=640, height=480, fps=30))
    cam = RealSenseCamera(RealSenseConfig(recording="run.db3", width=84, height=84))
    with cam:
        frame = cam.read()      # CameraFrame: RGB, optional aligned depth, device timestamp

    # make a recording from any frames (e.g. twin renders), no camera needed:
    write_recording("run.db3", frames, fps=30, intrinsics=intr)
    v2r camera record out=run.db3 frames=90 width=84 height=84

A recording is played with ``rs.config.enable_device_from_file`` into the ordinary
``rs.pipeline()``, so playback exercises the same calls as the lab camera. Playback is real
time by default (frames arrive at the recorded rate); ``real_time=False`` plays as fast as
the reader takes frames and never drops one. Frames keep their recorded timestamps and
frame numbers. Recordings are written with pyrealsense2's own recorder from a
``software_device`` (rosbag2 ``.db3``; 2.58+ refuses ``.bag``); readers and writers must use
the same pyrealsense2 version (pinned in pyproject.toml).

Depth: with ``enable_depth`` the pipeline syncs depth to colour and ``rs.align`` maps it onto
the colour image. Measured on recordings made here: every delivered frame carries its own
depth, but the syncer may drop the first frame at start-up (3 of 25 non-real-time plays).
Colour-only playback is frame-exact: the pace is set on the playback device before the
pipeline starts, so a reader slow to start loses nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from video2reward.robot.camera import Camera, CameraError, CameraFrame, CameraIntrinsics

# A .db3 is SQLite: the file starts with this header. Checked before librealsense sees it, so
# a wrong file gives a clear error instead of a crash deep inside the playback device.
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class RealSenseConfig:
    serial: str = ""  # live camera serial number; "" = the only/first one connected
    recording: str = ""  # path of a .db3 recording to play instead of a live camera
    width: int = 640
    height: int = 480
    fps: int = 30
    enable_depth: bool = False
    align_depth: bool = True  # map depth onto the colour image (rs.align)
    real_time: bool = True  # recordings: play at the recorded rate (False: every frame, fast)
    frame_timeout_s: float = 2.0  # no frame for this long -> CameraError (or end of recording)

    def __post_init__(self) -> None:
        if not (16 <= self.width <= 1920 and 16 <= self.height <= 1080):
            raise ValueError(f"resolution {self.width}x{self.height} outside 16..1920x1080")
        if self.fps not in (6, 15, 30, 60, 90):
            raise ValueError(f"fps must be a RealSense rate (6/15/30/60/90), got {self.fps}")
        if not 0.1 <= self.frame_timeout_s <= 30.0:
            raise ValueError(f"frame_timeout_s must be in [0.1, 30], got {self.frame_timeout_s}")


def check_recording(path: str | os.PathLike[str]) -> Path:
    """Raise CameraError with a useful message unless ``path`` looks like a .db3 recording."""
    p = Path(path)
    if not p.is_file():
        raise CameraError(f"recording {p} does not exist")
    with p.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise CameraError(f"recording {p} is not a RealSense .db3 (rosbag2/SQLite) file")
    return p


class RealSenseCamera(Camera):
    def __init__(self, config: RealSenseConfig | None = None):
        self.config = config or RealSenseConfig()
        self._pipe: Any = None
        self._align: Any = None
        self._intr: CameraIntrinsics | None = None
        self._depth_scale = 0.001
        self._last_color_number = -1
        self.serial = ""

    def connect(self) -> None:
        import pyrealsense2 as rs

        c = self.config
        cfg = rs.config()
        if c.recording:
            path = check_recording(c.recording)
            cfg.enable_device_from_file(str(path), repeat_playback=False)
        elif c.serial:
            cfg.enable_device(c.serial)
        cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        if c.enable_depth:
            cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
        pipe = rs.pipeline()
        try:
            if c.recording:
                # Set the pace on the playback device the pipeline will start, before it starts:
                # set after start(), real-time frames flow meanwhile and the first ones are lost.
                cfg.resolve(rs.pipeline_wrapper(pipe)).get_device().as_playback().set_real_time(
                    c.real_time)
            profile = pipe.start(cfg)
        except RuntimeError as e:
            what = f"recording {c.recording}" if c.recording else f"camera {c.serial or '(any)'}"
            raise CameraError(
                f"cannot start {what} at {c.width}x{c.height}@{c.fps} rgb8"
                f"{' + z16 depth' if c.enable_depth else ''}: {e}"
            ) from e
        dev = profile.get_device()
        if c.recording and dev.as_playback().is_real_time() != c.real_time:
            pipe.stop()
            raise CameraError(f"recording {c.recording}: playback pace could not be set")
        self.serial = dev.get_info(rs.camera_info.serial_number)
        vp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = vp.get_intrinsics()
        self._intr = CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy,
                                      coeffs=tuple(float(k) for k in i.coeffs))
        if c.enable_depth:
            self._depth_scale = dev.first_depth_sensor().get_depth_scale()
            self._align = rs.align(rs.stream.color) if c.align_depth else None
        self._pipe = pipe
        self._last_color_number = -1

    def intrinsics(self) -> CameraIntrinsics:
        if self._intr is None:
            raise CameraError("camera not connected")
        return self._intr

    def read(self, timeout_s: float | None = None) -> CameraFrame:
        if self._pipe is None:
            raise CameraError("camera not connected")
        timeout_ms = int(1000 * (timeout_s or self.config.frame_timeout_s))
        while True:
            ok, frames = self._pipe.try_wait_for_frames(timeout_ms)
            if not ok:
                if self.config.recording:
                    raise EOFError(f"end of recording {self.config.recording}")
                raise CameraError(f"no frame from camera {self.serial} in {timeout_ms} ms")
            if self._align is not None:
                frames = self._align.process(frames)
            color = frames.get_color_frame()
            if not color:
                continue
            n = int(color.get_frame_number())
            if n == self._last_color_number:  # a depth-only update of the same colour frame
                continue
            self._last_color_number = n
            depth_m = None
            if self.config.enable_depth:
                d = frames.get_depth_frame()
                if d:
                    depth_m = np.asanyarray(d.get_data()).astype(np.float32) * self._depth_scale
            return CameraFrame(
                color=np.asanyarray(color.get_data()).copy(),
                depth_m=depth_m,
                t_device_s=float(color.get_timestamp()) / 1000.0,
                frame_number=n,
                t_host_mono=time.monotonic(),
            )

    def close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            finally:
                self._pipe = None


def write_recording(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: int,
    intrinsics: CameraIntrinsics,
    depth_frames_m: Iterable[np.ndarray] | None = None,
    t0_s: float = 0.0,
    serial: str = "TWIN0000",
) -> int:
    """Write RGB frames (and optional depth in metres) as a RealSense .db3; returns the count.

    Frames are stamped on a 1/fps grid from ``t0_s`` (hardware-clock domain) and injected at
    that pace in wall time, because real-time playback follows the recording's wall clock.
    """
    import pyrealsense2 as rs

    p = Path(path)
    if p.suffix != ".db3":
        raise ValueError(f"recording path must end in .db3 (pyrealsense2 >= 2.58), got {p}")
    if p.exists():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    w, h = intrinsics.width, intrinsics.height
    intr = rs.intrinsics()
    intr.width, intr.height = w, h
    intr.fx, intr.fy = intrinsics.fx, intrinsics.fy
    intr.ppx, intr.ppy = intrinsics.cx, intrinsics.cy
    intr.model = rs.distortion.none
    intr.coeffs = [0.0] * 5

    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "Video2Reward software camera")
    color_sensor = dev.add_sensor("Color")
    cs = rs.video_stream()
    cs.type, cs.index, cs.uid, cs.width, cs.height, cs.fps = rs.stream.color, 0, 0, w, h, fps
    cs.bpp, cs.fmt, cs.intrinsics = 3, rs.format.rgb8, intr
    color_profile = color_sensor.add_video_stream(cs)
    sensors = [(color_sensor, color_profile)]
    depth_iter = iter(depth_frames_m) if depth_frames_m is not None else None
    if depth_iter is not None:
        depth_sensor = dev.add_sensor("Depth")
        ds = rs.video_stream()
        ds.type, ds.index, ds.uid, ds.width, ds.height, ds.fps = rs.stream.depth, 0, 1, w, h, fps
        ds.bpp, ds.fmt, ds.intrinsics = 2, rs.format.z16, intr
        depth_profile = depth_sensor.add_video_stream(ds)
        depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        depth_profile.register_extrinsics_to(color_profile, ext)  # rendered depth is registered
        sensors.append((depth_sensor, depth_profile))
    recorder = rs.recorder(str(p), dev)
    for sensor, profile in sensors:
        sensor.open(profile)
        sensor.start(lambda f: None)
    n = 0
    t_next = time.monotonic()
    try:
        for rgb in frames:
            rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
            if rgb.shape != (h, w, 3):
                raise ValueError(f"frame {n} has shape {rgb.shape}, expected {(h, w, 3)}")
            t_ms = 1000.0 * (t0_s + n / fps)
            if depth_iter is not None:
                d_m = np.asarray(next(depth_iter), dtype=np.float64)
                z16 = np.clip(np.round(d_m / 0.001), 0, 65535).astype(np.uint16)
                _inject(rs, sensors[1][0], sensors[1][1], z16, 2, t_ms, n, depth_units=0.001)
            _inject(rs, color_sensor, color_profile, rgb, 3, t_ms, n)
            n += 1
            t_next += 1.0 / fps
            time.sleep(max(0.0, t_next - time.monotonic()))
    finally:
        for sensor, _ in sensors:
            sensor.stop()
            sensor.close()
        del recorder  # flushes and closes the .db3
    return n


def _inject(rs: Any, sensor: Any, profile: Any, pixels: np.ndarray, bpp: int, t_ms: float,
            n: int, depth_units: float | None = None) -> None:
    f = rs.software_video_frame()
    f.pixels = pixels.tobytes()
    f.bpp = bpp
    f.stride = pixels.shape[1] * bpp
    f.timestamp = t_ms
    f.domain = rs.timestamp_domain.hardware_clock
    f.frame_number = n
    f.profile = profile.as_video_stream_profile()
    if depth_units is not None:
        f.depth_units = depth_units
    sensor.on_video_frame(f)
