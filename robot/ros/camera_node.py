"""ROS 2 camera node: a live RealSense, a ``.db3`` recording or the twin's renderer.

    python -m video2reward.robot.ros.camera_node --ros-args -p source:=realsense -p serial:=''
    python -m video2reward.robot.ros.camera_node --ros-args -p source:=recording \\
        -p recording:=runs/twin.db3 -p width:=84 -p height:=84
    python -m video2reward.robot.ros.camera_node --ros-args -p source:=twin

Topics (node-relative, as realsense-ros names them): ``~/color/image_raw`` (sensor_msgs/Image
rgb8), ``~/color/camera_info``, and with depth ``~/aligned_depth_to_color/image_raw`` (32FC1,
metres). Every source stamps a frame with its device clock: the RealSense timestamp, the
recorded timestamp, or the twin camera's frame grid. Big images need
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``: with Fast DDS's default transports a reliable
640x480 rgb8 stream at 30 Hz took ~12.6 ms per image (p50) between two processes, and
best-effort lost 70-92% of the frames; LARGE_DATA brought it to ~1.9 ms. A recording ends the
node (exit 0) after its last frame; a missing or corrupt one ends it with exit code 2 and the
reason.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from video2reward.robot.adapters import adapter
from video2reward.robot.camera import Camera, CameraError
from video2reward.robot.realsense import RealSenseCamera, RealSenseConfig
from video2reward.ros import convert
from video2reward.ros.params import ParamSpec, declare_all, float_range, int_range

PARAMS: tuple[ParamSpec, ...] = (
    ("source", "realsense", "realsense | recording | twin", None, True),
    ("serial", "", "RealSense serial number ('' = the only one connected)", None, True),
    ("recording", "", "path of the .db3 to play (source=recording)", None, True),
    ("width", 640, "colour width, pixels", int_range(16, 1920), True),
    ("height", 480, "colour height, pixels", int_range(16, 1080), True),
    ("fps", 30, "frame rate (RealSense: 6/15/30/60/90)", int_range(1, 90), True),
    ("enable_depth", False, "also publish depth aligned to colour", None, True),
    ("real_time", True, "recordings: play at the recorded rate", None, True),
    ("frame_id", "camera_color_optical_frame", "frame of the images", None, True),
    (
        "wait_for_subscribers",
        0,
        "hold the first frame until this many image subscribers",
        int_range(0, 16),
        True,
    ),
    ("wait_timeout_s", 30.0, "give up waiting for subscribers", float_range(0.0, 600.0), True),
)


def make_camera(p: dict[str, Any]) -> Camera:
    if p["source"] in ("realsense", "recording"):
        return RealSenseCamera(
            RealSenseConfig(
                serial=p["serial"],
                recording=p["recording"] if p["source"] == "recording" else "",
                width=p["width"],
                height=p["height"],
                fps=p["fps"],
                enable_depth=p["enable_depth"],
                real_time=p["real_time"],
            )
        )
    if p["source"] == "twin":  # sim.emulator_camera.twin_camera, registered by the twin
        twin_camera: Callable[[int, int, float], Camera] = adapter("twin_camera")
        return twin_camera(p["width"], p["height"], float(p["fps"]))
    raise ValueError(f"source must be realsense, recording or twin, got {p['source']!r}")


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera")
        self.p = declare_all(self, PARAMS)
        self.camera = make_camera(self.p)
        self.image_pub = self.create_publisher(Image, "~/color/image_raw", 10)
        self.info_pub = self.create_publisher(CameraInfo, "~/color/camera_info", 10)
        self.depth_pub = self.create_publisher(Image, "~/aligned_depth_to_color/image_raw", 10)
        self.done = threading.Event()
        self.exit_code = 0
        self.published = 0

    def run(self) -> None:
        """Reader thread: frames are published as they arrive, never from a timer."""
        try:
            # Wait before connecting: a recording starts playing (and dropping) at connect.
            deadline = time.monotonic() + self.p["wait_timeout_s"]
            while (
                self.image_pub.get_subscription_count() < self.p["wait_for_subscribers"]
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            self.camera.connect()
            intr, fid = self.camera.intrinsics(), self.p["frame_id"]
            while rclpy.ok() and not self.done.is_set():
                f = self.camera.read()
                try:
                    self.image_pub.publish(convert.image_msg(f.color, f.t_device_s, fid))
                    self.info_pub.publish(convert.camera_info_msg(intr, f.t_device_s, fid))
                    if f.depth_m is not None:
                        self.depth_pub.publish(convert.depth_msg(f.depth_m, f.t_device_s, fid))
                except Exception:
                    if not rclpy.ok():  # Ctrl-C shut the context down under us: just stop
                        break
                    raise
                self.published += 1
        except EOFError:
            self.get_logger().info(f"end of recording after {self.published} frames")
        except (CameraError, ValueError) as e:
            self.get_logger().error(str(e))
            self.exit_code = 2
        finally:
            self.camera.close()
            self.done.set()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = CameraNode()
    except (CameraError, ValueError) as e:
        print(f"camera node: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    reader = threading.Thread(target=node.run, daemon=True)
    reader.start()
    try:
        while rclpy.ok() and not node.done.is_set():
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.2)  # let the reliable writer hand the last frames to the subscribers
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.done.set()
        reader.join(timeout=3.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


if __name__ == "__main__":
    sys.exit(main())
