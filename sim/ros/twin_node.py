"""ROS 2 twin node: the MuJoCo cell standing in for the RealSense *and* the xArm controller.

    # ports 502/30001-30003 are the SDK's: run inside a private network namespace
    unshare -rn sh -c 'ip link set lo up; twin_node --ros-args -p task:=reach'

One process holds one twin: it serves the xArm controller protocol (``sim.xarm_emulator``),
so the unchanged ``xarm_driver_node`` moves the simulated arm, and it publishes what the
twin's D435-like camera sees on the camera node's topics (``camera/color/image_raw``,
``camera/color/camera_info``; wall-clock stamps on a 1/fps grid). The graph downstream is the
robot's graph. Extra, for simulation only: ``~/reset_task`` (std_srvs/Trigger) re-randomizes
the task's objects (the learner calls it between episodes, after homing the arm),
``~/success`` (std_msgs/Bool, 10 Hz) is the task's success predicate, a sparse signal, and
``~/pause_camera`` (std_srvs/SetBool) freezes the image stream to rehearse a camera stall.
With ``-p camera:=false`` the node is the controller alone and a separate camera node (e.g.
``camera_node -p source:=twin``) publishes the images: a camera process can then die while the
controller lives (tests/ros/test_sim_graph_faults.py).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from video2reward.robot.camera import CameraError, CameraIntrinsics, TwinCamera, TwinCameraConfig
from video2reward.ros import convert
from video2reward.ros.params import ParamSpec, declare_all, int_range
from video2reward.sim.tasks import TASKS, make_task
from video2reward.sim.twin import CameraConfig, TwinConfig, XArm5Twin
from video2reward.sim.xarm_controller_model import EmulatorConfig
from video2reward.sim.xarm_emulator import EmulatorServer

PARAMS: tuple[ParamSpec, ...] = (
    ("task", "reach", f"twin task: {', '.join(sorted(TASKS))}", None, True),
    ("width", 84, "published image width, pixels", int_range(8, 640), True),
    ("height", 84, "published image height, pixels", int_range(8, 480), True),
    ("fps", 30, "camera frame rate", int_range(1, 60), True),
    ("camera", True, "publish the camera's images (false: another node does)", None, True),
    ("seed", 0, "seed of the object randomization", int_range(0, 2**31 - 1), True),
    ("camera_eye_m", list(CameraConfig.eye_m), "camera position, base frame", None, True),
    ("camera_target_m", list(CameraConfig.target_m), "point the camera looks at", None, True),
    ("probe_port", 30010, "emulator test probe port (loopback)", int_range(1024, 65535), True),
    ("frame_id", "camera_color_optical_frame", "frame of the images", None, True),
    ("depth", False, "also publish depth aligned to colour (32FC1 metres, the colour frame's "
     "stamp) on camera/aligned_depth_to_color/image_raw, as the camera node does", None, True),
)


class TwinNode(Node):
    def __init__(self) -> None:
        super().__init__("twin")
        p = declare_all(self, PARAMS)
        self.task = make_task(p["task"])
        camera = CameraConfig(eye_m=tuple(p["camera_eye_m"]), target_m=tuple(p["camera_target_m"]))
        twin_cfg = TwinConfig(camera=camera)
        twin = XArm5Twin(twin_cfg, task_objects_xml=self.task.objects_xml())
        self.server = EmulatorServer(
            EmulatorConfig(probe_port=p["probe_port"], twin=twin_cfg), twin=twin
        )
        self.twin = twin
        self.lock = self.server.controller.lock  # the emulator steps the twin under this lock
        self.rng = np.random.default_rng(p["seed"])
        with self.lock:
            self.task.reset_objects(self.rng, twin)
        self.server.start()  # raises PermissionError outside a network namespace
        intr = camera.intrinsics(p["width"], p["height"])
        self.intr = CameraIntrinsics(
            p["width"], p["height"], intr["fx"], intr["fy"], intr["cx"], intr["cy"]
        )
        self.want_depth = bool(p["depth"])
        self._depth: np.ndarray | None = None
        self.camera = TwinCamera(
            TwinCameraConfig(p["width"], p["height"], float(p["fps"])), self._render, self.intr,
            render_depth=self._render_depth if self.want_depth else None,
        )  # fmt: skip
        self.frame_id = p["frame_id"]
        self.image_pub = self.create_publisher(Image, "camera/color/image_raw", 10)
        self.info_pub = self.create_publisher(CameraInfo, "camera/color/camera_info", 10)
        self.depth_pub = self.create_publisher(Image, "camera/aligned_depth_to_color/image_raw", 10)
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        self.create_service(Trigger, "~/reset_task", self._reset_task)
        self.create_service(SetBool, "~/pause_camera", self._pause_camera)
        self._paused = threading.Event()
        self.create_timer(0.1, self._publish_success)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, daemon=True, name="twin-camera")
        if p["camera"]:
            self._thread.start()
        size = f"{p['width']}x{p['height']}@{p['fps']}"
        camera_text = f"camera {size}" if p["camera"] else "no camera"
        self.get_logger().info(
            f"twin of the xArm5 cell, task {p['task']}: controller on 127.0.0.1:502, {camera_text}"
        )

    def _render(self, width: int, height: int) -> np.ndarray:
        with self.lock:  # depth of the same physics state, handed out by _render_depth next
            self._depth = self.twin.render_depth(width, height) if self.want_depth else None
            return self.twin.render(width, height)

    def _render_depth(self, width: int, height: int) -> np.ndarray:
        if self._depth is None or self._depth.shape != (height, width):
            raise RuntimeError("the twin camera asked for depth before its colour frame")
        return self._depth

    def _stream(self) -> None:
        self.camera.connect()
        while not self._stop.is_set():
            try:
                f = self.camera.read(timeout_s=1.0)
            except CameraError as e:
                self.get_logger().error(str(e), throttle_duration_sec=5.0)
                continue
            if self._paused.is_set():  # a stalled camera: frames stop, time goes on
                continue
            try:
                fid = self.frame_id
                self.image_pub.publish(convert.image_msg(f.color, f.t_device_s, fid))
                if f.depth_m is not None:  # the colour frame's stamp: the learner pairs them
                    self.depth_pub.publish(convert.depth_msg(f.depth_m, f.t_device_s, fid))
                self.info_pub.publish(
                    convert.camera_info_msg(self.intr, f.t_device_s, self.frame_id)
                )
            except Exception:
                if not rclpy.ok():  # shutting down: the publishers' context is gone
                    return
                raise

    def _publish_success(self) -> None:
        with self.lock:
            ok = self.task.success(self.twin)
        self.success_pub.publish(Bool(data=bool(ok)))

    def _reset_task(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.task.reset_objects(self.rng, self.twin)
            goal = self.task.goal_pos(self.twin)
        res.success, res.message = True, f"{self.task.name}: goal at {np.round(goal, 3).tolist()}"
        return res

    def _pause_camera(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        if req.data:
            self._paused.set()
        else:
            self._paused.clear()
        res.success, res.message = True, "camera paused" if req.data else "camera streaming"
        self.get_logger().warning(res.message)
        return res

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.server.close()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = TwinNode()
    except PermissionError:
        print(
            "twin_node: cannot bind the xArm ports (502, 30001-30003); run it inside a "
            "private network namespace: `v2r launch sim.launch.xml` does, or "
            "`unshare -rn sh -c 'ip link set lo up; ...'`",
            file=sys.stderr,
        )
        rclpy.try_shutdown()
        return 2
    except ValueError as e:
        print(f"twin_node: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()  # quick callbacks; the camera streams from its own thread
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
