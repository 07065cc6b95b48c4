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

Threading: actions arrive on a helper node (``<name>_commands``) spun by a single-threaded
executor in a thread of its own; the callback only validates a message (garbage is refused
there) and puts it in a latest-command slot, and a control thread sends it. State and status are
published by another thread at ``state_rate_hz``. Services run on the node's two-thread executor
(``~/home`` blocks for the reset move; ``~/emergency_stop`` has a group of its own so it is
served meanwhile). No command waits for a state read, a service or that executor (rclpy 9's
multi-threaded executor spins while a ready callback waits for its group, ros2/rclpy#1452).
The driver reads the pose from the controller's report stream, so a command costs one round
trip. When several actions arrive before the control thread takes one (a 1 kHz
burst), only the newest is sent: servo mode executes only the latest target anyway.

When the controller is lost (connection dropped, a read failed) the driver latches a fault, the
arm is stopped, ``~/status`` says why and the pose and joint topics stop: nothing stale is
published as if it were fresh.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import Trigger
from video2reward.calibration.result import CalibrationFileError, driver_workspace
from video2reward.robot.safety import (
    EnvelopeConfig,
    InvalidCommandError,
    WatchdogConfig,
    WorkspaceBox,
)
from video2reward.robot.xarm_driver import ControllerLostError, XArmDriver, XArmDriverConfig
from video2reward.ros import convert
from video2reward.ros.node_main import run_node
from video2reward.ros.params import ParamSpec, config_values, declare_all, field_param, float_range

F = float_range
D, E, W, B = XArmDriverConfig, EnvelopeConfig, WatchdogConfig, WorkspaceBox
# Fields of the driver's configs (D: XArmDriverConfig, E: EnvelopeConfig, W: WatchdogConfig,
# B: the envelope's default WorkspaceBox) take their defaults from the dataclass; the rest are
# the node's own (name, default, description, range, read_only).
PARAMS: tuple[ParamSpec, ...] = (
    field_param(D, "ip", "xArm controller address"),
    ("state_rate_hz", 50.0, "EE pose and joint state publish rate", F(1.0, 200.0), True),
    field_param(W, "deadline_s", "stop the arm after this long without an action",
                F(0.01, 5.0), name="watchdog_deadline_s"),
    field_param(E, "max_step_m", "largest step per action (UFACTORY: <= 10 mm)", F(0.001, 0.01)),
    field_param(E, "max_speed_m_s", "largest commanded tool speed", F(0.01, 1.0)),
    (
        "calibration",
        "",
        "calibration YAML whose workspace box the envelope uses ('' = workspace_lo/hi_m)",
        None,
        True,
    ),
    field_param(B, "lo_m", "workspace box min x, y, z (base frame)", name="workspace_lo_m"),
    field_param(B, "hi_m", "workspace box max x, y, z (base frame)", name="workspace_hi_m"),
    field_param(E, "margin_m", "targets stay this far inside the box (the controller's measured "
                "overshoot)", F(0.0, 0.05)),
    field_param(D, "tcp_offset_mm", "tool-centre point below the flange", F(0.0, 400.0)),
    field_param(D, "use_gripper", "drive the xArm Gripper"),
    field_param(D, "poll_silence_to_fault_s", "error polls unanswered this long latch "
                "'controller not answering' (a command that times out latches at once)",
                F(0.0, 30.0)),
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
        box, source = driver_workspace(p["calibration"], p["workspace_lo_m"], p["workspace_hi_m"])
        envelope = EnvelopeConfig(box=box, **config_values(E, PARAMS, p))
        self.get_logger().info(
            f"workspace box {tuple(round(v, 4) for v in box.lo_m)} - "
            f"{tuple(round(v, 4) for v in box.hi_m)} m from {source}, margin {p['margin_m']} m"
        )
        cfg = XArmDriverConfig(
            envelope=envelope,
            watchdog=WatchdogConfig(**config_values(W, PARAMS, p)),
            **config_values(D, PARAMS, p),
        )
        self.frame_id = p["frame_id"]
        self.driver = XArmDriver(cfg)
        self._connect(p["connect_timeout_s"])
        services = MutuallyExclusiveCallbackGroup()
        estop = MutuallyExclusiveCallbackGroup()  # served while home blocks the services group
        self._state_error = ""  # the last state-read failure, reported once
        self._fault_seen: str | None = None  # a new latched fault is reported at once
        self._stops_seen = 0  # ...and so is a new watchdog stop
        self.pose_pub = self.create_publisher(PoseStamped, "~/ee_pose", 10)
        self.joint_pub = self.create_publisher(JointState, "~/joint_states", 10)
        self.applied_pub = self.create_publisher(Float32MultiArray, "~/applied_action", 10)
        self.status_pub = self.create_publisher(DiagnosticStatus, "~/status", 10)
        # Actions arrive on a helper node with a single-threaded executor in a thread of its
        # own. On the multi-threaded executor (needed for e-stop during home) rclpy 9 spins
        # while a ready callback waits for its group (ros2/rclpy#1452), holding the GIL: a
        # 1 kHz burst of actions starved the command thread for 350 ms. The topic is resolved
        # on this node, so remappings of ~/action apply.
        self._cmd_node = rclpy.create_node(
            f"{self.get_name()}_commands", namespace=self.get_namespace(),
            context=self.context, use_global_arguments=False,
        )
        self._cmd_node.create_subscription(
            Float32MultiArray, self.resolve_topic_name("~/action"), self.on_action, 10
        )
        self._cmd_executor = SingleThreadedExecutor(context=self.context)
        self._cmd_executor.add_node(self._cmd_node)
        for name, fn in (
            ("enable", self.driver.enable),
            ("clear_fault", self.driver.reset_fault),
            ("emergency_stop", self.driver.emergency_stop),
            ("home", self.home),
        ):
            group = estop if name == "emergency_stop" else services
            self.create_service(Trigger, f"~/{name}", self._trigger(name, fn), callback_group=group)
        # The latest valid action, taken by the control thread (a slot, not a queue).
        self._slot: list[float] | None = None
        self._slot_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._spin_commands, name="xarm-actions", daemon=True),
            threading.Thread(target=self._command_loop, name="xarm-commands", daemon=True),
            threading.Thread(
                target=self._state_loop, args=(1.0 / p["state_rate_hz"],), name="xarm-state",
                daemon=True,
            ),
        ]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        """Stop the action, command and state threads (before the driver stops the arm)."""
        self._closing.set()
        self._wake.set()
        self._cmd_executor.shutdown(timeout_sec=1.0)
        for t in self._threads:
            t.join(timeout=2.0)
        self._cmd_node.destroy_node()

    def _spin_commands(self) -> None:
        while not self._closing.is_set() and self.context.ok():
            try:
                self._cmd_executor.spin_once(timeout_sec=0.1)
            except Exception as e:  # shutdown races end the loop; anything else is reported
                if self._closing.is_set() or not self.context.ok():
                    return
                self.get_logger().error(f"action executor: {e!r}", throttle_duration_sec=5.0)

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
        """Executor callback: refuse garbage here, hand a valid action to the control thread."""
        values = convert.action_from_msg(msg)
        try:
            self.driver.check_action(values)
        except InvalidCommandError as e:
            self.get_logger().warning(f"refused action: {e}")
            self.publish_status(f"refused action: {e}")
            return
        with self._slot_lock:
            self._slot = values
        self._wake.set()

    def _command_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            with self._slot_lock:
                action, self._slot = self._slot, None
            if action is None:
                continue
            try:
                cmd = self.driver.send_action(action)
            except (RuntimeError, ConnectionError) as e:  # stopped, fault, controller lost
                self.publish_status(f"action not sent: {e}")
                continue
            except Exception as e:  # anything else: latch, stop, say why; never die silently
                self.driver.fault.trip(f"command path error: {type(e).__name__}: {e}")
                self.driver.stop()
                self.get_logger().error(f"command path error: {e!r}")
                continue
            self.applied_pub.publish(convert.array_msg(cmd.applied_action))

    def _state_loop(self, period_s: float) -> None:
        """State at ``period_s`` on monotonic time, status every 0.5 s (and at once on news)."""
        t_next = t_status = time.monotonic()
        while not self._closing.wait(max(0.0, t_next - time.monotonic())):
            t_next += period_s
            if t_next < time.monotonic():  # fell behind (a slow read): no burst to catch up
                t_next = time.monotonic() + period_s
            try:
                self.publish_state()
                if time.monotonic() - t_status >= 0.5:
                    t_status = time.monotonic()
                    self.publish_status("")
            except Exception as e:  # a publisher gone at shutdown, or a driver bug: keep going
                if self._closing.is_set():
                    return
                self.get_logger().error(f"state publishing failed: {e!r}",
                                        throttle_duration_sec=5.0)

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
            "unanswered_polls": str(d.unanswered_polls),
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
            node.close()
            node.driver.stop()  # the arm is left stopped whatever ended the node
        finally:
            node.driver.close()

    return run_node("xarm_driver_node", XArmDriverNode, argv, errors=(CalibrationFileError,),
                    threads=2, cleanup=stop)

if __name__ == "__main__":
    sys.exit(main())
