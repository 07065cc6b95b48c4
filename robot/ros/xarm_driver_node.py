"""ROS 2 node around ``XArmDriver``: actions in, EE pose and joint states out, safety services.

    python -m video2reward.robot.ros.xarm_driver_node --ros-args -p ip:=192.168.1.208
    # in simulation (emulator and node in one private network namespace):
    v2r sim emulator -- python -m video2reward.robot.ros.xarm_driver_node

Topics (node-relative): ``~/action`` (in, std_msgs/Float32MultiArray [dx, dy, dz, gripper] in
[-1, 1]), ``~/applied_action`` (out, what was actually sent), ``~/ee_pose``
(geometry_msgs/PoseStamped), ``~/joint_states`` (sensor_msgs/JointState), ``~/status``
(diagnostic_msgs/DiagnosticStatus: faults, refused commands, watchdog stops). Services
(std_srvs/Trigger): ``~/enable``, ``~/home``, ``~/clear_fault`` (reconnects when the
controller was lost), ``~/emergency_stop``.

Threading: actions, state publishing, services and status each have their own callback group
on a multi-threaded executor, so a slow state read or a blocking service (``~/home`` waits for
the reset move) never delays a command. The driver reads the pose from the controller's report
stream, so a command costs one round trip. When the controller is lost (connection dropped,
reports stopped, a read failed) the driver latches a fault, the arm is stopped, ``~/status``
says why and the pose and joint topics stop: nothing stale is published as if it were fresh.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import Trigger
from video2reward.robot.ros import convert
from video2reward.robot.ros.node_main import run_node
from video2reward.robot.ros.params import ParamSpec, declare_all, float_range
from video2reward.robot.safety import (
    EnvelopeConfig,
    InvalidCommandError,
    WatchdogConfig,
    WorkspaceBox,
)
from video2reward.robot.xarm_driver import ControllerLostError, XArmDriver, XArmDriverConfig

F = float_range
# name, default, description, range, read_only
PARAMS: tuple[ParamSpec, ...] = (
    ("ip", "127.0.0.1", "xArm controller address", None, True),
    ("state_rate_hz", 50.0, "EE pose and joint state publish rate", F(1.0, 200.0), True),
    (
        "watchdog_deadline_s",
        0.25,
        "stop the arm after this long without an action",
        F(0.01, 5.0),
        True,
    ),
    ("max_step_m", 0.01, "largest step per action (UFACTORY: <= 10 mm)", F(0.001, 0.01), True),
    ("max_speed_m_s", 0.25, "largest commanded tool speed", F(0.01, 1.0), True),
    ("workspace_lo_m", [0.20, -0.25, 0.005], "workspace box min x, y, z (base frame)", None, True),
    ("workspace_hi_m", [0.55, 0.25, 0.30], "workspace box max x, y, z (base frame)", None, True),
    ("tcp_offset_mm", 172.0, "tool-centre point below the flange", F(0.0, 400.0), True),
    ("use_gripper", True, "drive the xArm Gripper", None, True),
    (
        "home_m",
        [0.35, 0.0, 0.20],
        "TCP position the home service moves to (base frame)",
        None,
        False,
    ),
    ("frame_id", "link_base", "frame of the published poses", None, True),
    (
        "connect_timeout_s",
        10.0,
        "keep retrying the controller this long at start (it may still be booting)",
        F(0.0, 600.0),
        True,
    ),
)


class XArmDriverNode(Node):
    def __init__(self) -> None:
        super().__init__("xarm_driver")
        p = declare_all(self, PARAMS)
        box = WorkspaceBox(lo_m=tuple(p["workspace_lo_m"]), hi_m=tuple(p["workspace_hi_m"]))
        envelope = EnvelopeConfig(
            box=box, max_step_m=p["max_step_m"], max_speed_m_s=p["max_speed_m_s"]
        )
        cfg = XArmDriverConfig(
            ip=p["ip"],
            tcp_offset_mm=p["tcp_offset_mm"],
            use_gripper=p["use_gripper"],
            envelope=envelope,
            watchdog=WatchdogConfig(deadline_s=p["watchdog_deadline_s"]),
        )
        self.frame_id = p["frame_id"]
        self.driver = XArmDriver(cfg)
        self._connect(p["connect_timeout_s"])
        # One group each: commands never queue behind a state read, a service or a status.
        commands, state = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        services, status = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self._state_error = ""  # the last state-read failure, reported once
        self._fault_seen: str | None = None  # a new latched fault is reported at once
        self._stops_seen = 0  # ...and so is a new watchdog stop
        self.pose_pub = self.create_publisher(PoseStamped, "~/ee_pose", 10)
        self.joint_pub = self.create_publisher(JointState, "~/joint_states", 10)
        self.applied_pub = self.create_publisher(Float32MultiArray, "~/applied_action", 10)
        self.status_pub = self.create_publisher(DiagnosticStatus, "~/status", 10)
        self.create_subscription(
            Float32MultiArray, "~/action", self.on_action, 10, callback_group=commands
        )
        self.create_timer(1.0 / p["state_rate_hz"], self.publish_state, callback_group=state)
        self.create_timer(0.5, lambda: self.publish_status(""), callback_group=status)
        for name, fn in (
            ("enable", self.driver.enable),
            ("clear_fault", self.driver.reset_fault),
            ("emergency_stop", self.driver.emergency_stop),
            ("home", self.home),
        ):
            self.create_service(
                Trigger, f"~/{name}", self._trigger(name, fn), callback_group=services
            )

    def _connect(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.driver.connect()
                return
            except ConnectionError as e:
                if time.monotonic() >= deadline:
                    raise
                self.get_logger().info(f"{e}; retrying", throttle_duration_sec=2.0)
                time.sleep(0.5)

    def home(self) -> None:
        self.driver.move_to(self.get_parameter("home_m").value, gripper_open_frac=1.0)

    def _trigger(self, name: str, fn: Callable[[], object]) -> Callable[..., Trigger.Response]:
        def cb(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
            try:
                fn()
                res.success, res.message = True, f"{name}: ok"
            except Exception as e:  # reported to the caller, never swallowed silently
                res.success, res.message = False, f"{name}: {type(e).__name__}: {e}"
            self.publish_status(res.message)
            return res

        return cb

    def on_action(self, msg: Float32MultiArray) -> None:
        try:
            cmd = self.driver.send_action(convert.action_from_msg(msg))
        except InvalidCommandError as e:
            self.get_logger().warning(f"refused action: {e}")
            self.publish_status(f"refused action: {e}")
            return
        except (RuntimeError, ConnectionError) as e:  # stopped, fault, controller lost: not sent
            self.publish_status(f"action not sent: {e}")
            return
        self.applied_pub.publish(convert.array_msg(cmd.applied_action))

    def publish_state(self) -> None:
        fault = self.driver.fault.reason
        if fault != self._fault_seen:  # latched by any thread: say so now, not at the 2 Hz tick
            self._fault_seen = fault
            if fault:
                self.publish_status(fault)
        if self.driver.watchdog_stops != self._stops_seen:
            self._stops_seen = self.driver.watchdog_stops
            self.publish_status("watchdog: no action within the deadline, arm stopped")
        try:
            s = self.driver.state()
        except ControllerLostError as e:  # the driver latched the fault: publish nothing
            if str(e) != self._state_error:
                self._state_error = str(e)
                self.get_logger().error(f"controller lost: {e}; call ~/clear_fault to reconnect")
                self.publish_status(f"state not published: {e}")
            return
        self._state_error = ""
        t = self.get_clock().now().nanoseconds * 1e-9
        self.pose_pub.publish(convert.pose_msg(s.ee_pos_m, s.ee_rpy_rad, t, self.frame_id))
        self.joint_pub.publish(convert.joint_state_msg(s.joint_pos_rad, s.gripper_open_frac, t))

    def publish_status(self, message: str) -> None:
        d = self.driver
        level = (
            DiagnosticStatus.ERROR
            if d.fault.active
            else (DiagnosticStatus.OK if d.streaming else DiagnosticStatus.WARN)
        )
        values = {
            "fault": d.fault.reason or "",
            "streaming": str(d.streaming),
            "rejected_commands": str(d.rejected_commands),
            "watchdog_stops": str(d.watchdog_stops),
            "reconnects": str(d.reconnects),
        }
        self.status_pub.publish(
            DiagnosticStatus(
                level=level,
                name="xarm_driver",
                message=message or d.fault.reason or "",
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        )


def main(argv: list[str] | None = None) -> int:
    def stop(node: XArmDriverNode) -> None:
        try:
            node.driver.stop()  # the arm is left stopped whatever ended the node
        finally:
            node.driver.close()

    return run_node("xarm_driver_node", XArmDriverNode, argv, errors=(), threads=4, cleanup=stop)

if __name__ == "__main__":
    sys.exit(main())
