"""ROS 2 recorder node: camera frames, arm state and applied commands -> a zarr episode store.

    recorder_node --ros-args -p out:=demos.zarr -p task:=push \\
        -r image:=/camera/color/image_raw -r camera_info:=/camera/color/camera_info \\
        -r ee_pose:=/xarm_driver/ee_pose -r joint_states:=/xarm_driver/joint_states \\
        -r applied_action:=/xarm_driver/applied_action
    # then: ros2 service call /recorder/start std_srvs/srv/Trigger
    #       ros2 service call /recorder/stop std_srvs/srv/SetBool "{data: true}"   # success

Inputs (node-relative, remap them): ``image`` (raw or compressed: ros/image_topic.py),
``camera_info`` (the store's intrinsics; the store opens on the first one), ``ee_pose``
(geometry_msgs/PoseStamped), ``joint_states`` (sensor_msgs/JointState), ``applied_action``
(std_msgs/Float32MultiArray: what the driver actually sent). Services: ``~/start``,
``~/discard`` (std_srvs/Trigger), ``~/stop`` (SetBool: data = success), ``~/mark`` (SetBool:
label the running or the last episode). ``~/status`` (diagnostic_msgs/DiagnosticStatus) and a
log line once a second while recording. All writing is ``robot.recorder.Recorder``.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import SetBool, Trigger
from video2reward.data.episode_store import EpisodeStoreError
from video2reward.robot.recorder import Observation, Recorder, RecorderConfig, RecorderError
from video2reward.ros import convert
from video2reward.ros.image_topic import (
    IMAGE_TRANSPORT,
    ImageMsg,
    StampPairs,
    subscribe_depth,
    subscribe_image,
)
from video2reward.ros.node_main import run_node
from video2reward.ros.params import ParamSpec, declare_all, float_range, int_range

PARAMS: tuple[ParamSpec, ...] = (
    ("out", "runs/teleop.zarr", "episode store (created, or appended to)", None, True),
    ("task", "push", "task name stored with every episode", None, True),
    ("kind", "teleop", "episode kind stored with every episode", None, True),
    ("source", "robot", "store source attribute: robot | twin", None, True),
    ("fps", 30, "nominal camera rate: store fps, drop detection", int_range(1, 120), True),
    (
        "flush_every",
        30,
        "rows per chunk; a crash loses at most this many",
        int_range(1, 1000),
        True,
    ),
    ("min_free_mb", 100.0, "refuse to start with less free disk", float_range(0, 1e6), True),
    ("max_episode_s", 900.0, "stop an episode left running", float_range(1, 86400), True),
    ("notes", "", "operator notes stored with each episode", None, False),
    ("depth", False, "also record each frame's aligned depth (topic depth, the colour frame's "
     "stamp) and the camera pose: point-map demonstrations", None, True),
    ("calibration", "", "v2r calib file whose hand-eye T_base_cam is stored with a new store "
     "(needed with depth)", None, True),
    IMAGE_TRANSPORT,
)


def joints_from_msg(msg: JointState) -> tuple[np.ndarray, float]:
    """(5,) arm joints in JOINT_NAMES order and the gripper opening fraction (NaN if absent)."""
    pos = dict(zip(msg.name, msg.position, strict=False))
    q = np.array([pos.get(n, math.nan) for n in convert.JOINT_NAMES], dtype=np.float32)
    g = pos.get(convert.GRIPPER_JOINT)
    return q, math.nan if g is None else 1.0 - g / convert.GRIPPER_TRAVEL_RAD


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = declare_all(self, PARAMS)
        self.config = RecorderConfig(
            out=p["out"],
            task=p["task"],
            kind=p["kind"],
            source=p["source"],
            fps_hz=float(p["fps"]),
            flush_every=p["flush_every"],
            min_free_mb=p["min_free_mb"],
            max_episode_s=p["max_episode_s"],
            depth=p["depth"],
        )
        from video2reward.calibration.result import camera_pose

        self.T_base_cam = camera_pose(p["calibration"], depth=p["depth"])
        self.pairs = StampPairs()
        self.recorder: Recorder | None = None
        self.fatal = ""  # the store cannot be opened: the node exits with code 2
        self.pose: PoseStamped | None = None
        self.joints: tuple[np.ndarray, float] | None = None
        self.t_first: float | None = None
        self._lock = threading.Lock()
        for typ, topic, cb in (
            (CameraInfo, "camera_info", self.on_info),
            (PoseStamped, "ee_pose", self.on_pose),
            (JointState, "joint_states", self.on_joints),
            (Float32MultiArray, "applied_action", self.on_action),
        ):
            self.create_subscription(typ, topic, cb, 10)
        subscribe_image(self, p["image_transport"], self.on_image)
        if p["depth"]:
            subscribe_depth(self, self.on_depth)
        for name, typ in (
            ("start", Trigger),
            ("discard", Trigger),
            ("stop", SetBool),
            ("mark", SetBool),
        ):
            self.create_service(typ, f"~/{name}", self._service(name))
        self.status_pub = self.create_publisher(DiagnosticStatus, "~/status", 10)
        self.create_timer(1.0, self.publish_status)

    def on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            if self.recorder is not None or self.fatal:
                return
            k = list(msg.k)
            intr = {
                "width": msg.width,
                "height": msg.height,
                "fx": k[0],
                "fy": k[4],
                "cx": k[2],
                "cy": k[5],
            }
            rec = Recorder(self.config, intr, T_base_cam=self.T_base_cam)
            try:
                rec.open()
            except (RecorderError, EpisodeStoreError, OSError) as e:
                self.fatal = f"cannot record into {self.config.out}: {e}"
                self.get_logger().error(self.fatal)
                return
            self.recorder = rec
            crashed = (
                f", dropped {rec.recovered_rows} rows of a crashed one"
                if rec.recovered_rows
                else ""
            )
            self.get_logger().info(
                f"store {self.config.out}: {rec.status().episode} episodes" + crashed
            )

    def on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg

    def on_joints(self, msg: JointState) -> None:
        self.joints = joints_from_msg(msg)

    def on_action(self, msg: Float32MultiArray) -> None:
        if self.recorder is not None and len(msg.data) == 4:
            self.recorder.command(np.asarray(msg.data, dtype=np.float32))

    def on_depth(self, depth: np.ndarray, msg: Image) -> None:
        pair = self.pairs.add("depth", convert.ns_from_stamp(msg.header.stamp), depth)
        if pair is not None:
            self._observe(pair[0], pair[1], msg)

    def on_image(self, rgb: np.ndarray, msg: ImageMsg) -> None:
        if self.config.depth:
            pair = self.pairs.add("rgb", convert.ns_from_stamp(msg.header.stamp), rgb)
            if pair is not None:
                self._observe(pair[0], pair[1], msg)
            return
        self._observe(rgb, None, msg)

    def _observe(self, rgb: np.ndarray, depth: np.ndarray | None, msg: ImageMsg) -> None:
        rec, pose, joints = self.recorder, self.pose, self.joints
        if rec is None or not rec.recording or pose is None or joints is None:
            return
        t = convert.seconds_from_stamp(msg.header.stamp)
        if self.t_first is None:
            self.t_first = t
        o, pp = pose.pose.orientation, pose.pose.position
        rec.observe(
            Observation(
                image=rgb,
                ee_pos_m=np.array([pp.x, pp.y, pp.z]),
                ee_quat_wxyz=np.array([o.w, o.x, o.y, o.z]),
                joint_pos_rad=joints[0],
                gripper_open_frac=joints[1],
                t_wall_s=t,
                frame_number=round((t - self.t_first) * self.config.fps_hz),  # stamp gaps = drops
                depth_m=depth,
            )
        )

    def _service(self, name: str) -> Callable[[Any, Any], Any]:
        """One Recorder method behind a service: Trigger (start: notes) or SetBool (success)."""

        def cb(req: Any, res: Any) -> Any:
            try:
                if self.recorder is None:
                    raise RecorderError("no camera_info received yet; is the camera running?")
                if name == "start":
                    self.t_first = None
                    args: tuple[object, ...] = (self.get_parameter("notes").value,)
                else:
                    args = (bool(req.data),) if isinstance(req, SetBool.Request) else ()
                out = getattr(self.recorder, name)(*args)
                res.success, res.message = True, f"{name}: {'ok' if out is None else out}"
            except RecorderError as e:
                res.success, res.message = False, f"{name}: {e}"
            self.get_logger().info(res.message)
            self.publish_status()
            return res

        return cb

    def publish_status(self) -> None:
        if self.recorder is None:
            return
        s = self.recorder.status()
        if s.recording or s.error:
            self.get_logger().info(self.recorder.status_line())
        level = DiagnosticStatus.ERROR if s.error else DiagnosticStatus.OK
        values = {
            "episode": s.episode,
            "recording": s.recording,
            "frames": s.frames,
            "duration_s": round(s.duration_s, 2),
            "rate_hz": round(s.rate_hz, 2),
            "dropped": s.dropped,
            "saved": s.saved,
        }
        self.status_pub.publish(
            DiagnosticStatus(
                level=level,
                name="recorder",
                message=s.error or s.last_event,
                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
            )
        )


def main(argv: list[str] | None = None) -> int:
    # One executor thread: callbacks only hand rows to the Recorder, whose writer thread does
    # the disk work. (rclpy 9's MultiThreadedExecutor re-submits queued callbacks in a busy loop;
    # here it starved the callbacks: 31 frames dropped in 2.4 s, no status for 6 s.)
    def close(node: RecorderNode) -> None:
        if node.recorder is not None:
            node.recorder.close()  # an episode still running is discarded, the rest is safe

    return run_node(
        "recorder node", RecorderNode, argv, threads=1, until=lambda n: bool(n.fatal),
        cleanup=close, exit_code=lambda n: 2 if n.fatal else 0,
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
