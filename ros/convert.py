"""Message <-> numpy conversion, in one place. Standard message types only.

    msg = image_msg(rgb, stamp_s=frame.t_device_s, frame_id="camera_color_optical_frame")
    rgb = image_from_msg(msg)                        # (H, W, 3) uint8, a view when possible
    rgb = compressed_image_from_msg(cmsg)            # sensor_msgs/CompressedImage jpeg/png
    info = camera_info_msg(cam.intrinsics(), stamp_s, frame_id)

Stamps: a float in seconds maps to builtin_interfaces/Time exactly to the nanosecond that a
float64 can carry (~0.2 us at 2026 epoch values), which is finer than any camera clock here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Float32MultiArray, Header
from video2reward.data.images import rgb_from_compressed, rgb_from_raw
from video2reward.robot.camera import CameraIntrinsics
from video2reward.robot.kinematics import quat_wxyz_from_rpy

JOINT_NAMES = ("joint1", "joint2", "joint3", "joint4", "joint5")
GRIPPER_JOINT = "drive_joint"  # xarm_ros name of the xArm Gripper's driving joint
GRIPPER_TRAVEL_RAD = 0.85  # xarm_ros drive_joint range: 0 open ... 0.85 closed

# A state topic (the learner's ~/acting): the last value is kept for a subscriber that joins
# late, such as a reward node respawned mid-run.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_from_seconds(t_s: float) -> Time:
    return stamp_from_ns(round(t_s * 1e9))


def stamp_from_ns(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def ns_from_stamp(stamp: Time) -> int:
    """Integer nanoseconds: exact, so stamps can be matched by equality (reward <-> image)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def seconds_from_stamp(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def header(stamp_s: float, frame_id: str) -> Header:
    return Header(stamp=stamp_from_seconds(stamp_s), frame_id=frame_id)


def image_msg(rgb: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    msg = Image(
        header=header(stamp_s, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
    )
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 (a view of the message), bgr8, rgba8, bgra8 or mono8
    image (data/images.py rgb_from_raw); any other encoding is refused with the ones accepted."""
    return rgb_from_raw(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data))


def compressed_image_from_msg(msg: CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage (jpeg or png)."""
    return rgb_from_compressed(msg.format, bytes(msg.data))


def depth_msg(depth_m: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    d = np.ascontiguousarray(depth_m, dtype=np.float32)
    h, w = d.shape
    msg = Image(
        header=header(stamp_s, frame_id),
        height=h,
        width=w,
        encoding="32FC1",
        is_bigendian=0,
        step=w * 4,
    )
    msg.data = d.tobytes()
    return msg


def depth_from_msg(msg: Image) -> np.ndarray:
    """(H, W) float32 metres from a depth sensor_msgs/Image: 32FC1 in metres (this project's
    camera and twin nodes) or 16UC1 in millimetres (realsense2_camera); 0 = no reading."""
    dtype: np.dtype[Any]
    if msg.encoding == "32FC1":
        dtype, scale = np.dtype("<f4" if not msg.is_bigendian else ">f4"), 1.0
    elif msg.encoding in ("16UC1", "mono16"):
        dtype, scale = np.dtype("<u2" if not msg.is_bigendian else ">u2"), 0.001
    else:
        raise ValueError(f"depth encoding {msg.encoding!r} not supported: 32FC1 (m) or 16UC1 (mm)")
    h, w, step = msg.height, msg.width, msg.step
    data = bytes(msg.data)
    if step < w * dtype.itemsize or len(data) < h * step:
        raise ValueError(f"depth image {w}x{h} step {step}: {len(data)} bytes is too short")
    rows = np.frombuffer(data, np.uint8, h * step).reshape(h, step)[:, : w * dtype.itemsize]
    d = rows.copy().view(dtype).reshape(h, w).astype(np.float32) * np.float32(scale)
    return np.where(np.isfinite(d), d, 0.0).astype(np.float32)


def camera_info_msg(intr: CameraIntrinsics, stamp_s: float, frame_id: str) -> CameraInfo:
    K = intr.K()
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(
        header=header(stamp_s, frame_id),
        width=intr.width,
        height=intr.height,
        distortion_model=intr.distortion_model,
        d=[float(c) for c in intr.coeffs],
        k=K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=P.reshape(-1).tolist(),
    )


def pose_msg(p_m: np.ndarray, rpy_rad: np.ndarray, stamp_s: float, frame_id: str) -> PoseStamped:
    msg = PoseStamped(header=header(stamp_s, frame_id))
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in p_m)
    w, x, y, z = (float(v) for v in quat_wxyz_from_rpy(rpy_rad))
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = x, y, z, w
    return msg


def reward_msg(
    stamp_ns: int, method: str, reward: float, progress: float, success: bool
) -> Vector3Stamped:
    """A scored frame, stamped with the image's stamp: x reward, y progress, z success (0/1).

    The frame id names the reward method. The reward node publishes these; the learner reads
    them back with :func:`reward_from_msg`.
    """
    msg = Vector3Stamped()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = method
    msg.vector.x, msg.vector.y, msg.vector.z = reward, progress, float(success)
    return msg


def reward_from_msg(msg: Vector3Stamped) -> tuple[int, float, float, float]:
    """(stamp_ns, reward, progress, success as 0.0/1.0) of a :func:`reward_msg`."""
    return ns_from_stamp(msg.header.stamp), msg.vector.x, msg.vector.y, msg.vector.z


def joint_state_msg(q_rad: np.ndarray, gripper_open_frac: float, stamp_s: float) -> JointState:
    names = list(JOINT_NAMES)
    pos = [float(v) for v in q_rad]
    if math.isfinite(gripper_open_frac):
        names.append(GRIPPER_JOINT)
        pos.append((1.0 - gripper_open_frac) * GRIPPER_TRAVEL_RAD)
    return JointState(header=header(stamp_s, ""), name=names, position=pos)


def array_msg(values: np.ndarray) -> Float32MultiArray:
    return Float32MultiArray(data=[float(v) for v in np.ravel(values)])


def action_from_msg(msg: Float32MultiArray) -> list[float]:
    """The raw values; the safety envelope decides whether they are a valid action."""
    return [float(v) for v in msg.data]
