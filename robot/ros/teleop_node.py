"""ROS 2 teleop node: keyboard / gamepad / SpaceMouse / Twist -> the driver's action topic.

    teleop_node --ros-args -p source:=keyboard -r action:=/xarm_driver/action \\
        -r enable:=/xarm_driver/enable -r home:=/xarm_driver/home      # keys from this terminal
    teleop_node --ros-args -p source:=twist -r cmd_vel:=/cmd_vel ...  # teleop_twist_keyboard/joy

Publishes ``action`` (std_msgs/Float32MultiArray [dx, dy, dz, gripper] in [-1, 1], the
learner's command, so the driver's envelope applies unchanged) at ``rate_hz`` while enabled,
and nothing while disabled: the driver's watchdog then stops the arm (the dead-man). Turning
enabled calls the driver's ``enable`` (std_srvs/Trigger). Recording keys call the recorder:
``recorder/start``, ``recorder/discard`` (Trigger), ``recorder/stop`` (SetBool: success;
when nothing is recording, ``recorder/mark`` relabels the last episode).
With ``intervention:=true`` the node drives a learning run's take-overs instead (``action``
remapped to the learner's ``intervention``, ``recorder/stop`` to its ``label``): while enabled
its commands replace the policy's; while not, it sends empty messages (control is the
policy's, the device is present); y/n label the episode in progress. A lost device sends
nothing, so the learner stops the arm.
With ``source:=twist`` a geometry_msgs/Twist on ``cmd_vel`` (linear, m/s) is a command for
``twist_timeout_s``; fresh Twists enable, silence disables; when the node has a terminal, its
keys add the gripper (g) and the recording keys.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import SetBool, Trigger
from video2reward.robot.teleop import TeleopCommand, TeleopConfig, TeleopDeviceError
from video2reward.robot.teleop_keyboard import KeyboardTeleop
from video2reward.robot.teleop_sources import help_text, make_source
from video2reward.robot.teleop_twist import action_from_twist
from video2reward.ros import convert
from video2reward.ros.params import ParamSpec, declare_all, float_range

PARAMS: tuple[ParamSpec, ...] = (
    ("source", "keyboard", "keyboard | gamepad | spacemouse | twist", None, True),
    ("rate_hz", 30.0, "command rate", float_range(1.0, 100.0), True),
    ("speed", 0.5, "initial speed scale (+/- keys, D-pad)", float_range(0.05, 1.0), True),
    ("deadzone", 0.12, "gamepad/SpaceMouse axis deadzone", float_range(0.0, 0.9), True),
    ("device", "", "gamepad/SpaceMouse /dev/input/eventN ('' = first found)", None, True),
    (
        "max_step_m",
        0.01,
        "driver step for an action of 1 (Twist scaling)",
        float_range(1e-3, 0.01),
        True,
    ),
    ("twist_timeout_s", 0.3, "a Twist counts this long", float_range(0.05, 2.0), True),
    (
        "intervention",
        False,
        "drive a learning run's interventions (remap action to the learner's intervention): "
        "an empty message hands control back when the dead-man is released",
        None,
        True,
    ),
)


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop")
        p = declare_all(self, PARAMS)
        self.twist = p["source"] == "twist"
        self.config = TeleopConfig(
            source="keyboard" if self.twist else p["source"],
            rate_hz=p["rate_hz"],
            speed=p["speed"],
            deadzone=p["deadzone"],
            device=p["device"],
        )
        self.max_step_m, self.twist_timeout_s = p["max_step_m"], p["twist_timeout_s"]
        self.intervention = bool(p["intervention"])
        # Twist: the terminal's keys (when there is one) add the gripper and recording keys.
        if self.twist:
            self.source = KeyboardTeleop(self.config) if sys.stdin.isatty() else None
        else:
            self.source = make_source(self.config)
        if self.source is not None:
            self.source.open()  # TeleopDeviceError: no terminal / device -> clear exit
        self.last_twist: tuple[float, np.ndarray] | None = None
        self.was_enabled = False
        self.pub = self.create_publisher(Float32MultiArray, "action", 10)
        self.clients_: dict[str, Any] = {
            n: self.create_client(Trigger, n)
            for n in ("enable", "home", "recorder/start", "recorder/discard")
        }
        self.label_clients: dict[str, Any] = {
            n: self.create_client(SetBool, n) for n in ("recorder/stop", "recorder/mark")
        }
        if self.twist:
            self.create_subscription(Twist, "cmd_vel", self.on_twist, 10)
        self.create_timer(1.0 / self.config.rate_hz, self.tick)
        self.done = False
        self.get_logger().info("source twist (cmd_vel)" if self.twist else help_text(p["source"]))

    def on_twist(self, msg: Twist) -> None:
        v = np.array([msg.linear.x, msg.linear.y, msg.linear.z])
        if np.all(np.isfinite(v)):
            self.last_twist = (time.monotonic(), v)

    def poll(self) -> TeleopCommand:
        keys_cmd = None if self.source is None else self.source.poll()
        if not self.twist and keys_cmd is not None:
            return keys_cmd
        fresh = self.last_twist is not None and (
            time.monotonic() - self.last_twist[0] <= self.twist_timeout_s
        )
        a = action_from_twist(
            self.last_twist[1] if fresh and self.last_twist else np.zeros(3),
            self.config.rate_hz,
            self.max_step_m,
            gripper=-1.0 if keys_cmd is None else float(keys_cmd.action[3]),
        )
        events = () if keys_cmd is None else tuple(e for e in keys_cmd.events if e != "enable")
        return TeleopCommand(a, fresh, 1.0, events)

    def call(self, name: str, data: bool | None = None) -> None:
        client = self.label_clients[name] if data is not None else self.clients_[name]
        if not client.service_is_ready():
            self.get_logger().warning(f"service {client.srv_name} is not available")
            return
        req = SetBool.Request(data=data) if data is not None else Trigger.Request()

        def done(f: Any) -> None:
            message = getattr(f.result(), "message", "")
            self.get_logger().info(f"{name}: {message}")
            if name == "recorder/stop" and "not recording" in message:
                self.call("recorder/mark", data)  # y/n after the fact relabel the last episode

        client.call_async(req).add_done_callback(done)

    def tick(self) -> None:
        try:
            cmd = self.poll()
        except TeleopDeviceError as e:
            self.get_logger().error(str(e))
            self.done = True
            return
        if cmd.enabled and not self.was_enabled and not self.intervention:
            self.call("enable")  # the driver resumes streaming after a watchdog stop
        if self.intervention and not cmd.enabled:
            # "present, not driving": hands back to the policy after a take-over and tells the
            # learner a lost device is back (a lost one sends nothing)
            self.pub.publish(Float32MultiArray())
        self.was_enabled = cmd.enabled
        for ev in cmd.events:
            if ev in ("start", "discard"):
                self.call(f"recorder/{ev}")
            elif ev in ("success", "failure"):
                self.call("recorder/stop", ev == "success")
            elif ev == "home":
                self.call("home")
            elif ev == "quit":
                self.done = True
        if cmd.enabled:
            self.pub.publish(convert.array_msg(cmd.action))


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = TeleopNode()
    except (TeleopDeviceError, ValueError) as e:
        print(f"teleop node: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.source is not None:
            node.source.close()  # restores the terminal
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
