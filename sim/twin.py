"""The MuJoCo twin of the xArm5 cell: arm, gripper, table, RealSense-like camera.

    twin = XArm5Twin(TwinConfig(), task_objects_xml="")
    twin.reset(q=READY_Q)
    twin.servo(q_target, gripper_open_frac=1.0, duration_s=0.1)   # interpolated, like servo mode
    rgb = twin.render(84, 84)                                     # (84, 84, 3) uint8
    depth = twin.render_depth(84, 84)                             # (84, 84) float32 metres
    twin.close()

Low level only: joint servoing, state and rendering. The Cartesian command semantics (safety
envelope, tool-down IK) are in ``sim.controller``; tasks in ``sim.tasks``; the Gymnasium env in
``sim.env``. The controller emulator serves this same object over the xArm SDK protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import mujoco
import numpy as np
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, N_JOINTS, fk, ik_tool_down
from video2reward.sim.model import FINGER_TRAVEL_M, build_cell_xml

# Intel RealSense D435 colour stream at 640x480: ~42.5 deg vertical FOV with square pixels
# (fx = fy ~ 605 px), i.e. ~55 deg horizontal. The 69 x 42 deg datasheet figure is the 16:9 mode.
D435_FOVY_DEG = 42.5
D435_WIDTH, D435_HEIGHT = 640, 480

# A pose above the table with the tool pointing down (TCP at x=0.35, z=0.20 m).
READY_TCP_M = np.array([0.35, 0.0, 0.20])
READY_Q = ik_tool_down(READY_TCP_M, 0.0, tcp_offset_m=GRIPPER_TCP_OFFSET_M)


@dataclass(frozen=True)
class CameraConfig:
    """A fixed colour camera looking from ``eye_m`` at ``target_m`` (base frame, metres)."""

    eye_m: tuple[float, float, float] = (0.80, -0.50, 0.60)
    target_m: tuple[float, float, float] = (0.32, 0.0, 0.10)
    fovy_deg: float = D435_FOVY_DEG

    def __post_init__(self) -> None:
        if not 5.0 < self.fovy_deg < 120.0:
            raise ValueError(f"fovy_deg must be in (5, 120), got {self.fovy_deg}")
        if np.linalg.norm(np.subtract(self.target_m, self.eye_m)) < 1e-3:
            raise ValueError("camera eye_m and target_m must differ")

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """MuJoCo camera x (right) and y (up) axes; the camera looks along -z."""
        f = np.subtract(self.target_m, self.eye_m)
        f = f / np.linalg.norm(f)
        x = np.cross(f, [0.0, 0.0, 1.0])
        if np.linalg.norm(x) < 1e-6:  # looking straight down: pick base x as image up
            x = np.cross(f, [1.0, 0.0, 0.0])
        x /= np.linalg.norm(x)
        y = np.cross(-f, x)
        return x, y

    def T_base_cam(self) -> np.ndarray:
        """4x4 pose of the camera in OpenCV convention (x right, y down, z forward)."""
        x, y = self.axes()
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = x, -y, np.cross(x, -y)
        T[:3, 3] = self.eye_m
        return T

    def intrinsics(self, width: int = D435_WIDTH, height: int = D435_HEIGHT) -> dict[str, float]:
        """Pinhole intrinsics of a ``width`` x ``height`` render (OpenCV pixel centres)."""
        fy = (height / 2.0) / np.tan(np.deg2rad(self.fovy_deg) / 2.0)
        return {
            "width": float(width),
            "height": float(height),
            "fx": float(fy),
            "fy": float(fy),
            "cx": width / 2.0 - 0.5,
            "cy": height / 2.0 - 0.5,
        }


@dataclass(frozen=True)
class TwinConfig:
    physics_dt_s: float = 0.002
    camera: CameraConfig = field(default_factory=CameraConfig)
    shadows: bool = False  # shadows cost ~8x render time on the CPU (84 px: ~44 vs ~360 fps)
    # Multisample anti-aliasing of offscreen renders: 4 samples cost ~3x render time on the
    # CPU (Mesa llvmpipe); 0 keeps 84 px training renders fast. Raise it for videos.
    msaa_samples: int = 0

    def __post_init__(self) -> None:
        if not 0.0002 <= self.physics_dt_s <= 0.01:
            raise ValueError(f"physics_dt_s must be in [0.0002, 0.01], got {self.physics_dt_s}")
        if self.msaa_samples not in (0, 2, 4, 8):
            raise ValueError(f"msaa_samples must be 0, 2, 4 or 8, got {self.msaa_samples}")


class XArm5Twin:
    def __init__(
        self,
        config: TwinConfig | None = None,
        task_objects_xml: str = "",
        tool_xml: str = "",
        assets_xml: str = "",
    ):
        self.config = config or TwinConfig()
        xml = build_cell_xml(
            task_objects_xml,
            timestep_s=self.config.physics_dt_s,
            msaa_samples=self.config.msaa_samples,
            tool_xml=tool_xml,
            assets_xml=assets_xml,
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._arm_qadr = np.array(
            [self.model.joint(f"joint{i + 1}").qposadr[0] for i in range(N_JOINTS)]
        )
        self._arm_dadr = np.array(
            [self.model.joint(f"joint{i + 1}").dofadr[0] for i in range(N_JOINTS)]
        )
        self._finger_qadr = self.model.joint("finger_left").qposadr[0]
        self._finger_right_qadr = self.model.joint("finger_right").qposadr[0]
        self._tcp_site = self.model.site("tcp").id
        self._cam_id = self.model.camera("realsense").id
        self.set_camera(self.config.camera)
        if not self.config.shadows:
            self.model.light_castshadow[:] = 0
        self._renderers: dict[tuple[int, int, bool], mujoco.Renderer] = {}
        self._q_cmd = READY_Q.copy()
        self._g_cmd = 1.0
        self.time_s = 0.0

    # ------------------------------------------------------------------ state
    def reset(self, q: np.ndarray | None = None, gripper_open_frac: float = 1.0) -> None:
        mujoco.mj_resetData(self.model, self.data)
        q = READY_Q if q is None else np.asarray(q, dtype=float)
        self.data.qpos[self._arm_qadr] = q
        g = float(np.clip(gripper_open_frac, 0, 1)) * FINGER_TRAVEL_M
        self.data.qpos[self._finger_qadr] = g
        self.data.qpos[self._finger_right_qadr] = g
        self._q_cmd = q.copy()
        self._g_cmd = float(gripper_open_frac)
        self.data.ctrl[:N_JOINTS] = q
        self.data.ctrl[N_JOINTS] = g
        mujoco.mj_forward(self.model, self.data)
        self.time_s = 0.0

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Everything a later :meth:`restore` needs to continue exactly from here."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state, self._q_cmd.copy(), self._g_cmd, self.time_s

    def restore(self, snap: tuple[np.ndarray, np.ndarray, float, float]) -> None:
        state, q_cmd, g_cmd, time_s = snap
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        self._q_cmd, self._g_cmd, self.time_s = q_cmd.copy(), g_cmd, time_s

    def joint_pos(self) -> np.ndarray:
        return self.data.qpos[self._arm_qadr].copy()

    def joint_vel(self) -> np.ndarray:
        return self.data.qvel[self._arm_dadr].copy()

    def commanded_joint_pos(self) -> np.ndarray:
        return self._q_cmd.copy()

    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp_site].copy()

    def tcp_quat(self) -> np.ndarray:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._tcp_site])
        return quat

    def flange_pose(self) -> np.ndarray:
        """4x4 flange pose from the joint angles (what the controller reports)."""
        return fk(self.joint_pos())

    def gripper_open_frac(self) -> float:
        return float(self.data.qpos[self._finger_qadr] / FINGER_TRAVEL_M)

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    # ------------------------------------------------------------------ motion
    def servo(self, q_target: np.ndarray, gripper_open_frac: float, duration_s: float) -> None:
        """Move the joint targets linearly to ``q_target`` over ``duration_s`` of physics.

        The caller is responsible for the target being safe (limits, box): the controller
        and the emulator both check before calling this.
        """
        q_target = np.asarray(q_target, dtype=float)
        n = max(1, round(duration_s / self.model.opt.timestep))
        q0 = self._q_cmd
        g0 = self._g_cmd
        g1 = float(np.clip(gripper_open_frac, 0.0, 1.0))
        for k in range(1, n + 1):
            a = k / n
            self.data.ctrl[:N_JOINTS] = q0 + a * (q_target - q0)
            self.data.ctrl[N_JOINTS] = (g0 + a * (g1 - g0)) * FINGER_TRAVEL_M
            mujoco.mj_step(self.model, self.data)
        self._q_cmd = q_target.copy()
        self._g_cmd = g1
        self.time_s += n * self.model.opt.timestep

    def hold(self, duration_s: float) -> None:
        self.servo(self._q_cmd, self._g_cmd, duration_s)

    # ------------------------------------------------------------------ camera
    def set_camera(self, cam: CameraConfig) -> None:
        x, y = cam.axes()
        mat = np.stack([x, y, np.cross(x, y)], axis=1)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, mat.reshape(-1))
        self.model.cam_pos[self._cam_id] = cam.eye_m
        self.model.cam_quat[self._cam_id] = quat
        self.model.cam_fovy[self._cam_id] = cam.fovy_deg
        self.camera = cam

    def render(self, width: int, height: int | None = None) -> np.ndarray:
        """RGB image (H, W, 3) uint8 from the fixed camera."""
        r = self._renderer(width, width if height is None else height, depth=False)
        return r.render()  # a fresh array each call

    def render_depth(self, width: int, height: int | None = None) -> np.ndarray:
        """Depth (H, W) float32 in metres along the camera's optical axis, registered to the
        colour image of the same size (a RealSense's depth aligned to colour, without its
        noise or holes)."""
        r = self._renderer(width, width if height is None else height, depth=True)
        return r.render().astype(np.float32)

    def _renderer(self, width: int, height: int, depth: bool) -> mujoco.Renderer:
        if not (8 <= width <= D435_WIDTH and 8 <= height <= D435_HEIGHT):
            raise ValueError(f"render size {width}x{height} outside 8..{D435_WIDTH}x{D435_HEIGHT}")
        r = self._renderers.get((width, height, depth))
        if r is None:
            try:
                r = mujoco.Renderer(self.model, height=height, width=width)
            except mujoco.FatalError as e:
                raise RuntimeError(
                    "MuJoCo could not create an OpenGL context. Without a display, set "
                    "MUJOCO_GL=egl (Debian: libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa "
                    "(libosmesa6) before Python starts; scripts/setup.sh installs both."
                ) from e
            if depth:
                r.enable_depth_rendering()
            self._renderers[(width, height, depth)] = r
        r.update_scene(self.data, camera=self._cam_id)
        if not self.config.shadows:
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return r

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __enter__(self) -> XArm5Twin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
