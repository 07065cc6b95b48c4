"""The teleop node's Twist adapter and dead-man, and its clear exits without a device.

Two processes on an isolated domain: the teleop node (source:=twist) and this test, which
publishes Twists, serves the driver's ``enable`` service and records the actions.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros
NODE = [sys.executable, "-m", "video2reward.robot.ros.teleop_node", "--ros-args"]


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("ROS_DOMAIN_ID", "79")  # this process's own node joins the same graph
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return dict(os.environ)


def test_twist_becomes_normalized_actions_while_fresh_and_enables_the_driver(ros_env):
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float32MultiArray
    from std_srvs.srv import Trigger

    master, slave = pty.openpty()  # the node's terminal: gripper and recording keys
    proc = subprocess.Popen(
        [
            *NODE,
            "-p",
            "source:=twist",
            "-p",
            "rate_hz:=20.0",
            "-p",
            "twist_timeout_s:=0.3",
            "-r",
            "action:=/drv/action",
            "-r",
            "enable:=/drv/enable",
        ],
        env=ros_env,
        stdin=slave,
    )
    rclpy.init()
    node = rclpy.create_node("teleop_twist_test")
    actions: list[tuple[float, list[float]]] = []
    enables: list[float] = []

    def on_enable(_req: Any, res: Any) -> Any:
        enables.append(time.monotonic())
        res.success, res.message = True, "enabled"
        return res

    node.create_service(Trigger, "/drv/enable", on_enable)
    starts: list[float] = []

    def on_start(_req: Any, res: Any) -> Any:
        starts.append(time.monotonic())
        res.success, res.message = True, "recording"
        return res

    node.create_service(Trigger, "/recorder/start", on_start)
    node.create_subscription(
        Float32MultiArray,
        "/drv/action",
        lambda m: actions.append((time.monotonic(), list(m.data))),
        100,
    )
    pub = node.create_publisher(Twist, "/cmd_vel", 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert not actions  # nothing is sent before a Twist arrives
        msg = Twist()
        msg.linear.x, msg.linear.z = 0.1, -0.4  # m/s
        for i in range(20):  # 1 s of Twists at 20 Hz
            pub.publish(msg)
            if i == 10:
                os.write(master, b"g\r")  # close the gripper, start recording
            time.sleep(0.05)
        t_last = time.monotonic()
        time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(master)
        os.close(slave)
        ex.shutdown()
        spinner.join(timeout=5)  # a spin thread alive at exit aborts the process (std::terminate)
        node.destroy_node()
        rclpy.try_shutdown()
    assert len(enables) == 1  # one off -> on transition
    sent = np.array([a for _, a in actions])
    assert 12 <= len(sent) <= 30
    # 0.1 m/s at 20 Hz is 5 mm per command = 0.5 of the 10 mm step; -0.4 m/s saturates.
    np.testing.assert_allclose(
        sent[2:-2, :3], np.tile([0.5, 0.0, -1.0], (len(sent) - 4, 1)), atol=1e-6
    )
    assert sent[0, 3] == -1.0 and sent[-1, 3] == 1.0  # the g key closed the gripper
    assert len(starts) == 1  # Enter called the recorder's start service
    # Dead-man: the stream stops within twist_timeout_s (+ one period) of the last Twist.
    assert max(t for t, _ in actions) - t_last < 0.3 + 0.1


@pytest.mark.parametrize(
    ("source", "stdin", "message"),
    [
        ("keyboard", subprocess.DEVNULL, "not a tty"),
        ("gamepad", None, "no gamepad found"),
        ("spacemouse", None, "no spacemouse found"),
    ],
)
def test_missing_terminal_or_device_is_a_clear_exit(ros_env, source, stdin, message):
    pytest.importorskip("rclpy")
    args = [*NODE, "-p", f"source:={source}", "-p", "device:=/dev/input/event99"]
    r = subprocess.run(args, env=ros_env, stdin=stdin, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr or "needs the evdev library" in r.stderr  # without the extra
    assert "Traceback" not in r.stderr
