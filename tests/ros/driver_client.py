"""What the driver-node scenarios share: the node as a process, a client node spinning in a
thread, Trigger calls and a clean stop. Imported by the scenarios, which run as scripts beside
the emulator (their folder is on sys.path), never collected by pytest.

    with DriverUnderTest("driver_test_client", ["-p", "watchdog_deadline_s:=0.3"]) as d:
        d.node.create_subscription(...)        # before d.spin()
        d.spin()
        ok, msg = d.call("home")
    d.exit_code, d.stderr_tail                 # after the block: SIGINT, then kill after 10 s
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


class DriverUnderTest:
    def __init__(self, client_name: str, params: list[str], stop_signal: int = signal.SIGINT):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read back in close)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "video2reward.robot.ros.xarm_driver_node", "--ros-args",
             *params], stderr=self._err,
        )  # fmt: skip
        self.stop_signal = stop_signal
        rclpy.init()
        self.node = rclpy.create_node(client_name)
        self._ex = SingleThreadedExecutor()
        self._spinner = threading.Thread(target=self._ex.spin, daemon=True)
        self.exit_code: int | str | None = None
        self.stderr_tail = ""

    def spin(self) -> None:
        """Start spinning the client node (after its subscriptions are created)."""
        self._ex.add_node(self.node)
        self._spinner.start()

    def call(self, name: str) -> tuple[bool, str]:
        """Call the driver's ``~/<name>`` Trigger service; (success, message)."""
        from std_srvs.srv import Trigger

        cli = self.node.create_client(Trigger, f"/xarm_driver/{name}")
        if not cli.wait_for_service(timeout_sec=20.0):
            return False, "no service"
        fut = cli.call_async(Trigger.Request())
        deadline = time.monotonic() + 30.0
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        res = fut.result()
        return (bool(res.success), str(res.message)) if res is not None else (False, "timeout")

    def close(self) -> None:
        import rclpy

        self.proc.send_signal(self.stop_signal)
        try:
            self.exit_code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = "killed"
        self._err.seek(0)
        self.stderr_tail = self._err.read()[-3000:]
        self._err.close()
        self._ex.shutdown()
        if self._spinner.is_alive():
            self._spinner.join(timeout=5)  # a spin thread alive at exit aborts the process
        self.node.destroy_node()
        rclpy.try_shutdown()

    def __enter__(self) -> DriverUnderTest:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
