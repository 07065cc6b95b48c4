"""ROS 2 node: automatic hand-eye calibration with images from the camera node.

    python -m video2reward.calibration.ros.collect_node --ros-args -p ip:=192.168.1.208 \\
        -p board_z_flange_m:=0.0526 -p out:=calibration.yaml -r image:=/camera/color/image_raw \\
        -r camera_info:=/camera/color/camera_info
    ros2 launch video2reward calib_collect.launch.xml robot_ip:=... board_z_flange_m:=...

The node owns the arm for the duration of the calibration: it drives the xArm through
``XArmDriver`` (position-mode moves, the workspace box from ``out``, fault latching) because
the driver node's action topic only streams tool-down position deltas and cannot turn the
tool. Do not run the driver node at the same time. Images (``image``: ros/image_topic.py)
and, for ``intrinsics:=factory``, ``camera_info`` come from the camera node. At the end it
writes the calibration YAML, publishes ``~/T_base_cam`` (geometry_msgs/TransformStamped,
transient local: late subscribers get it) and exits: 0 done, 1 calibration failed, 2 bad
parameters.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo
from video2reward.calibration.collect import ArmNotSettledError, BoardNeverSeenError
from video2reward.calibration.handeye import HandEyeError
from video2reward.calibration.handeye_run import HandEyeRunConfig, run_handeye
from video2reward.calibration.intrinsics import IntrinsicsError
from video2reward.calibration.result import CalibrationFileError, load_calibration
from video2reward.robot.camera import Camera, CameraError, CameraFrame, CameraIntrinsics
from video2reward.robot.safety import EnvelopeConfig, LatchedFaultError, WorkspaceBox
from video2reward.ros import convert
from video2reward.ros.image_topic import IMAGE_TRANSPORT, ImageMsg, subscribe_image
from video2reward.ros.params import ParamSpec, declare_all, float_range, int_range

F = float_range
# name, default, description, range, read_only
PARAMS: tuple[ParamSpec, ...] = (
    (
        "out",
        "calibration.yaml",
        "calibration YAML to update (its workspace box is used)",
        None,
        True,
    ),
    ("ip", "192.168.1.208", "xArm controller address", None, True),
    (
        "board_z_flange_m",
        math.nan,
        "board origin height along the flange axis, m (mount)",
        None,
        True,
    ),
    ("intrinsics", "refine", "refine (ChArUco + joint) | factory (camera_info) | file", None, True),
    ("squares_x", 6, "ChArUco squares along x", int_range(3, 30), True),
    ("squares_y", 5, "ChArUco squares along y", int_range(3, 30), True),
    ("square_m", 0.04, "printed square side, m", F(0.002, 0.5), True),
    ("marker_m", 0.03, "printed marker side, m", F(0.001, 0.5), True),
    ("dictionary", "DICT_4X4_50", "cv2.aruco dictionary", None, True),
    ("n_views", 18, "poses visited", int_range(3, 36), True),
    ("z_levels", 2, "heights of the pose lattice", int_range(1, 4), True),
    ("facing_yaw_deg", math.nan, "tool yaw facing the camera (NaN: sweep)", None, True),
    ("yaw_spread_deg", 35.0, "tool yaw spread around the facing yaw", F(5.0, 90.0), True),
    ("margin_m", 0.03, "poses stay this far inside the workspace box", F(0.0, 0.2), True),
    ("reset_speed_mm_s", 100.0, "arm speed between poses", F(1.0, 250.0), True),
    ("save_dir", "", "save the run here (re-solve: v2r calib handeye backend=replay)", None, True),
    ("frame_timeout_s", 5.0, "no image for this long is an error", F(0.1, 60.0), True),
    ("base_frame", "link_base", "parent frame of the published transform", None, True),
    ("camera_frame", "camera_color_optical_frame", "child frame (OpenCV axes)", None, True),
    IMAGE_TRANSPORT,
)


def intrinsics_from_camera_info(msg: CameraInfo) -> CameraIntrinsics:
    k = list(msg.k)
    d = [float(c) for c in msg.d] + [0.0] * max(0, 5 - len(msg.d))
    return CameraIntrinsics(
        int(msg.width),
        int(msg.height),
        k[0],
        k[4],
        k[2],
        k[5],
        distortion_model=msg.distortion_model or "plumb_bob",
        coeffs=tuple(d[:5]),
    )


class TopicCamera(Camera):
    """``robot.camera.Camera`` over an Image subscription: ``read`` returns the next new frame."""

    def __init__(self, node: Node, timeout_s: float, transport: str = "raw"):
        self._cv = threading.Condition()
        self._frame: CameraFrame | None = None
        self._n = 0
        self._info: CameraInfo | None = None
        self._timeout_s = timeout_s
        subscribe_image(node, transport, self._on_image, 2)
        node.create_subscription(CameraInfo, "camera_info", self._on_info, 2)

    def _on_image(self, rgb: np.ndarray, msg: ImageMsg) -> None:
        rgb = rgb.copy()  # a view of the message when it was rgb8
        with self._cv:
            self._n += 1
            self._frame = CameraFrame(
                rgb, None, convert.seconds_from_stamp(msg.header.stamp), self._n, time.monotonic()
            )
            self._cv.notify_all()

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def connect(self) -> None:
        pass

    def read(self, timeout_s: float | None = None) -> CameraFrame:
        # Only a frame that arrives after this call: earlier ones may predate the last move.
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        with self._cv:
            n0 = self._n
            while self._n == n0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cv.wait(left):
                    raise CameraError(f"no image on the 'image' topic for {self._timeout_s} s")
            frame = self._frame
        if frame is None:
            raise CameraError("no image received")
        return frame

    def intrinsics(self) -> CameraIntrinsics:
        if self._info is None:
            raise CameraError("no CameraInfo received on 'camera_info' (intrinsics:=factory)")
        return intrinsics_from_camera_info(self._info)

    def close(self) -> None:
        pass


def transform_msg(T: np.ndarray, stamp_s: float, parent: str, child: str) -> TransformStamped:
    msg = TransformStamped()
    msg.header = convert.header(stamp_s, parent)
    msg.child_frame_id = child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in T[:3, 3]
    )
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    msg.transform.rotation.x, msg.transform.rotation.y = float(x), float(y)
    msg.transform.rotation.z, msg.transform.rotation.w = float(z), float(w)
    return msg


def config_from_params(p: dict[str, Any]) -> HandEyeRunConfig:
    z, yaw = p["board_z_flange_m"], p["facing_yaw_deg"]
    return HandEyeRunConfig(
        out=p["out"],
        backend="xarm",
        ip=p["ip"],
        camera="realsense",
        intrinsics=p["intrinsics"],
        board_z_flange_m=None if math.isnan(z) else z,
        squares_x=p["squares_x"],
        squares_y=p["squares_y"],
        square_m=p["square_m"],
        marker_m=p["marker_m"],
        dictionary=p["dictionary"],
        n_views=p["n_views"],
        z_levels=p["z_levels"],
        facing_yaw_deg=None if math.isnan(yaw) else yaw,
        yaw_spread_deg=p["yaw_spread_deg"],
        margin_m=p["margin_m"],
        save_dir=p["save_dir"],
    )


def main(argv: list[str] | None = None) -> int:
    from video2reward.robot.xarm_driver import XArmDriver, XArmDriverConfig

    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("calib_collect")
    try:
        p = declare_all(node, PARAMS)
        cfg = config_from_params(p)
    except ValueError as e:
        node.get_logger().error(f"bad parameters: {e}")
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    qos = QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
    )
    pub = node.create_publisher(TransformStamped, "~/T_base_cam", qos)
    camera = TopicCamera(node, p["frame_timeout_s"], p["image_transport"])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    done = threading.Event()

    def spin() -> None:  # callbacks (images) in a thread; the calibration blocks this one
        while not done.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    code = 0
    try:
        box = WorkspaceBox()
        try:
            ws = load_calibration(cfg.out).workspace
            box = ws if ws is not None else box
        except CalibrationFileError:
            pass  # no file yet: the default box
        driver = XArmDriver(
            XArmDriverConfig(
                ip=cfg.ip, envelope=EnvelopeConfig(box=box), reset_speed_mm_s=p["reset_speed_mm_s"]
            )
        )
        with driver as arm:
            run_handeye(cfg, arm, camera)
        T = load_calibration(cfg.out).extrinsics
        if T is not None:
            pub.publish(
                transform_msg(T.T_base_cam, time.time(), p["base_frame"], p["camera_frame"])
            )
            time.sleep(0.5)  # let the transient-local writer reach current subscribers
    except (
        HandEyeError,
        IntrinsicsError,
        BoardNeverSeenError,
        ArmNotSettledError,
        CalibrationFileError,
        CameraError,
        LatchedFaultError,
        ConnectionError,
    ) as e:
        node.get_logger().error(f"calibration failed: {e}")
        code = 1
    finally:
        done.set()
        spinner.join(timeout=2.0)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
