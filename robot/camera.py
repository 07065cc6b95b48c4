"""The camera interface: colour frames (optionally depth aligned to colour) with device stamps.

    with RealSenseCamera(RealSenseConfig(serial="", width=640, height=480, fps=30)) as cam:
        frame = cam.read()                  # CameraFrame
        frame.color                          # (H, W, 3) uint8 RGB
        frame.t_device_s                     # the camera's own timestamp (recorded: as recorded)
        cam.intrinsics()                     # CameraIntrinsics for CameraInfo / projection

Implementations: ``robot.realsense.RealSenseCamera`` (a live D4xx or a ``.db3`` recording,
both through ``rs.pipeline()``) and ``TwinCamera`` below (renders the MuJoCo twin; for the
ROS camera node in simulation). Every implementation stamps frames the same way: ``t_device_s``
is the source's clock (camera hardware clock, recording, or twin sim time) and
``t_host_mono`` is ``time.monotonic()`` on arrival.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np


class CameraError(RuntimeError):
    """The camera or recording cannot deliver frames (missing, corrupt, unplugged, timeout)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"  # ROS CameraInfo name; RealSense colour is ~undistorted
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CameraFrame:
    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth_m: np.ndarray | None  # (H, W) float32 metres, aligned to colour; None when disabled
    t_device_s: float  # source timestamp, seconds (RealSense: frame.get_timestamp() / 1000)
    frame_number: int  # source frame counter (gaps mean dropped frames)
    t_host_mono: float  # time.monotonic() when the frame reached us


class Camera(abc.ABC):
    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout_s: float = 1.0) -> CameraFrame:
        """The next frame; raises CameraError on timeout, EOFError at the end of a recording."""

    @abc.abstractmethod
    def intrinsics(self) -> CameraIntrinsics: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class TwinCameraConfig:
    width: int = 84
    height: int = 84
    fps: float = 30.0  # frames are paced to this rate in host time

    def __post_init__(self) -> None:
        if not (8 <= self.width <= 640 and 8 <= self.height <= 480):
            raise ValueError(f"twin camera size {self.width}x{self.height} outside 8..640x480")
        if not 1.0 <= self.fps <= 120.0:
            raise ValueError(f"fps must be in [1, 120], got {self.fps}")


class TwinCamera(Camera):
    """Renders a MuJoCo twin (``sim.twin.XArm5Twin`` or anything with ``render``).

    ``render`` is injected so the twin stays optional. ``t_device_s`` is a fixed 1/fps grid
    starting at the wall-clock time of the first read, like a RealSense whose hardware clock
    is mapped to system time (realsense-ros ``global_time_enabled``).
    """

    def __init__(
        self,
        config: TwinCameraConfig,
        render: Callable[[int, int], np.ndarray],
        intrinsics: CameraIntrinsics,
        clock: Callable[[], float] = time.monotonic,
        render_depth: Callable[[int, int], np.ndarray] | None = None,
    ):
        self.config = config
        self._render = render
        self._render_depth = render_depth  # aligned depth in metres with each frame, if given
        self._intr = intrinsics
        self._clock = clock
        self._n = 0
        self._t0: float | None = None
        self._t0_wall_s = 0.0

    def connect(self) -> None:
        self._n = 0
        self._t0 = None

    def intrinsics(self) -> CameraIntrinsics:
        return self._intr

    def read(self, timeout_s: float = 1.0) -> CameraFrame:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
            self._t0_wall_s = time.time()
        # Like a sensor, the twin camera never bursts to catch up: frames that were due while
        # nobody read are dropped (frame_number jumps), so stamps stay capture times.
        late = int((now - self._t0) * self.config.fps)
        self._n = max(self._n, late)
        t_due = self._t0 + self._n / self.config.fps
        if t_due - now > timeout_s:
            raise CameraError("next twin frame is not due within the timeout")
        if t_due > now:
            time.sleep(t_due - now)
        rgb = self._render(self.config.width, self.config.height)
        depth = (None if self._render_depth is None else
                 self._render_depth(self.config.width, self.config.height))
        t_dev = self._t0_wall_s + self._n / self.config.fps
        frame = CameraFrame(rgb, depth, t_dev, self._n, self._clock())
        self._n += 1
        return frame

    def close(self) -> None:
        pass
