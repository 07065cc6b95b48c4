"""Teleop recording in the twin, end to end: keys typed into a terminal drive the arm through
the real driver node and controller emulator while the recorder node writes episodes.

Processes, one private network namespace (``sim.emulator_netns``): the xArm emulator, the
driver node, the camera node (twin renderer), the recorder node, the teleop node reading a
pty as its terminal, and this scenario (keys, service calls, SIGKILL). The store lives in the
test's tmp dir and is checked after the namespace is gone.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Keys typed into a pty are held until enough camera frames have gone by (counted by this
# scenario's own image subscription), not for fixed time windows: a loaded CI machine renders
# the twin at a third of the rate (23 frames in a 1.4 s window), and the episodes must still
# hold enough rows for the checks. The fixture still reruns a scenario whose rows fall short.
pytestmark = [pytest.mark.ros, pytest.mark.netns, pytest.mark.flaky(reruns=2)]
DOMAIN_ID = "67"
RATE_HZ = 30.0


def _node(module: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", f"video2reward.robot.ros.{module}", "--ros-args", *args]
    return subprocess.Popen(cmd, text=True, **kw)


def scenario(out: str) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray
    from std_srvs.srv import SetBool, Trigger

    r: dict[str, Any] = {}
    log2: list[str] = []
    rec_args = [
        "-p",
        f"out:={out}",
        "-p",
        "task:=reach",
        "-p",
        "source:=twin",
        "-p",
        "flush_every:=8",
        "-p",
        "min_free_mb:=0.0",
        "-r",
        "image:=/camera/color/image_raw",
        "-r",
        "camera_info:=/camera/color/camera_info",
        "-r",
        "ee_pose:=/xarm_driver/ee_pose",
        "-r",
        "joint_states:=/xarm_driver/joint_states",
        "-r",
        "applied_action:=/xarm_driver/applied_action",
    ]
    master, slave = pty.openpty()
    procs = {
        "driver": _node("xarm_driver_node", "-p", "watchdog_deadline_s:=0.3"),
        "camera": _node(
            "camera_node",
            "-p",
            "source:=twin",
            "-p",
            "width:=84",
            "-p",
            "height:=84",
            "-p",
            "fps:=30",
        ),
        "recorder": _node("recorder_node", *rec_args),
        "teleop": _node(
            "teleop_node",
            "-p",
            "source:=keyboard",
            "-p",
            f"rate_hz:={RATE_HZ}",
            "-r",
            "action:=/xarm_driver/action",
            "-r",
            "enable:=/xarm_driver/enable",
            "-r",
            "home:=/xarm_driver/home",
            stdin=slave,
        ),
    }
    rclpy.init()
    node = rclpy.create_node("teleop_test_client")
    applied: list[list[float]] = []
    status: list[str] = []
    node.create_subscription(
        Float32MultiArray,
        "/xarm_driver/applied_action",
        lambda m: applied.append([float(v) for v in m.data]),
        100,
    )
    node.create_subscription(
        DiagnosticStatus, "/recorder/status", lambda m: status.append(m.message), 50
    )
    frames_seen = [0]

    def on_image(_: Any) -> None:
        frames_seen[0] += 1

    node.create_subscription(Image, "/camera/color/image_raw", on_image, qos_profile_sensor_data)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()

    def call(srv: Any, name: str, req: Any, timeout_s: float = 30.0) -> tuple[bool, str]:
        cli = node.create_client(srv, name)
        if not cli.wait_for_service(timeout_sec=timeout_s):
            return False, "no service"
        fut = cli.call_async(req)
        deadline = time.monotonic() + timeout_s
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        res = fut.result()
        return (bool(res.success), str(res.message)) if res else (False, "timeout")

    def keys(data: bytes, pause_s: float = 0.0) -> None:
        os.write(master, data)
        time.sleep(pause_s)

    def wait_status(text: str, timeout_s: float = 15.0) -> None:
        """Wait for the recorder to report ``text`` (a loaded machine may save slowly)."""
        deadline = time.monotonic() + timeout_s
        while not any(text in m for m in status) and time.monotonic() < deadline:
            time.sleep(0.02)

    def for_frames(each: Callable[[], None], duration_s: float, frames: int, cap_s: float) -> None:
        """Call ``each`` for at least ``duration_s`` and until ``frames`` camera frames have gone
        by (a slow renderer makes it longer), at most ``cap_s``."""
        first = frames_seen[0]
        t0 = time.monotonic()
        while time.monotonic() - t0 < cap_s and (
            time.monotonic() - t0 < duration_s or frames_seen[0] - first < frames
        ):
            each()

    def hold(key: bytes, duration_s: float, frames: int) -> None:
        """Press + auto-repeat, as a terminal does."""
        for_frames(lambda: keys(key, 1.0 / RATE_HZ), duration_s, frames, cap_s=30.0)

    def settle(duration_s: float, frames: int) -> None:
        """No key."""
        for_frames(lambda: time.sleep(0.01), duration_s, frames, cap_s=15.0)

    try:
        r["home"] = call(Trigger, "/xarm_driver/home", Trigger.Request())
        # The recorder opens its store on the first camera_info; wait until it answers.
        call(Trigger, "/recorder/discard", Trigger.Request())
        deadline = time.monotonic() + 30
        while not status and time.monotonic() < deadline:
            time.sleep(0.1)
        keys(b"e", 0.5)  # enable -> the driver's enable service
        keys(b"\r", 0.4)  # start episode 0
        wait_status("recording ep 0")
        hold(b"w", 1.0, frames=30)  # +x
        settle(0.4, frames=4)  # the released key's zero command is recorded
        keys(b"y", 1.0)  # success
        wait_status("saved ep 0")
        keys(b"\r", 0.4)  # episode 1
        wait_status("recording ep 1")
        hold(b"r", 0.7, frames=25)  # +z
        keys(b"g")  # close the gripper
        settle(0.4, frames=4)
        keys(b"n", 1.0)  # failure
        wait_status("saved ep 1")
        keys(b"\r", 0.4)  # episode 2: killed mid-way
        wait_status("recording ep 2")
        hold(b"a", 1.2, frames=30)  # several chunks of the doomed episode reach the disk
        procs["recorder"].send_signal(signal.SIGKILL)
        r["recorder_exit"] = procs["recorder"].wait(timeout=10)
        r["status"] = list(dict.fromkeys(status))
        # A second recorder appends to the same store.
        second = _node("recorder_node", *rec_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs["recorder2"] = second
        assert second.stdout is not None
        threading.Thread(target=lambda: log2.extend(second.stdout or []), daemon=True).start()
        deadline = time.monotonic() + 30
        while not any("store " in ln for ln in log2) and time.monotonic() < deadline:
            time.sleep(0.1)
        # A request written before the new server's reader matched this client is lost (the
        # killed server may still be in the graph): retry; a late first request shows up as
        # "already recording".
        for _ in range(6):
            r["start2"] = call(Trigger, "/recorder/start", Trigger.Request(), timeout_s=5.0)
            if r["start2"][0] or "already recording" in r["start2"][1]:
                r["start2"] = (True, r["start2"][1])
                break
        # long enough for the new recorder's image subscription to match and receive frames
        hold(b"d", 2.0, frames=30)
        r["stop2"] = call(SetBool, "/recorder/stop", SetBool.Request(data=True))
        r["applied"] = applied
        keys(b"n", 1.5)  # nothing recording: the teleop node relabels the last episode
        keys(b"q", 0.5)
        r["teleop_exit"] = procs["teleop"].wait(timeout=10)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        r["recorder2_log"] = "".join(log2)
        ex.shutdown()
        spinner.join(timeout=5)  # a spin thread alive at exit aborts the process (std::terminate)
        node.destroy_node()
        rclpy.try_shutdown()
        os.close(master)
        os.close(slave)
    return r


SCENARIO_ATTEMPTS = 3


def check_keys_and_episodes(res: dict[str, Any], store: Any) -> None:
    from video2reward.data import keys

    assert res["home"][0], res["home"]
    assert "saved ep 0 (success)" in res["status"] and "saved ep 1 (failure)" in res["status"]
    ep0, ep1 = store.episode(0), store.episode(1)
    assert [store.episode_meta(i)[keys.EPISODE_SUCCESS] for i in (0, 1)] == [True, False]
    # ~1.8 s and ~1.5 s of 30 fps camera frames; a loaded CI machine renders fewer.
    assert 25 <= len(ep0[keys.IMAGE]) <= 70 and 20 <= len(ep1[keys.IMAGE]) <= 60
    a0, a1 = ep0[keys.ACTION], ep1[keys.ACTION]
    np.testing.assert_array_equal(a0[-1], np.zeros(4))
    assert (a0[:, 0] > 0.1).sum() >= 10 and np.abs(a0[:, 1:3]).max() < 1e-6
    # Every recorded command is one the driver reported as actually sent, or (two commands
    # between two camera frames) the clipped sum of consecutive ones.
    ap = np.array(res["applied"])[:, :3]
    sums = [ap, np.clip(ap[:-1] + ap[1:], -1, 1), np.clip(ap[:-2] + ap[1:-1] + ap[2:], -1, 1)]
    sent = {tuple(np.round(a, 4)) for block in sums for a in block}
    moving = [a for a in np.concatenate([a0, a1]) if np.any(a[:3] != 0)]
    assert len(moving) >= 20
    for a in moving:
        assert tuple(np.round(a[:3].astype(float), 4)) in sent, a
    assert ep0[keys.EE_POS][-1, 0] - ep0[keys.EE_POS][0, 0] > 0.05  # the arm went +x
    assert ep1[keys.EE_POS][-1, 2] - ep1[keys.EE_POS][0, 2] > 0.04  # ...and up
    assert (a1[:, 2] > 0.1).sum() >= 8
    g = a1[np.any(a1 != 0, axis=1), 3]
    assert g[0] == -1.0 and g[-1] == 1.0  # the gripper key closed it during episode 1
    assert ep0[keys.IMAGE].shape[1:] == (84, 84, 3)
    assert store.attrs[keys.ATTR_INTRINSICS]["width"] == 84.0


def _scenario_once(out: Path) -> tuple[dict[str, Any], Any]:
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.sim.emulator_netns import run_with_emulator

    env = dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = run_with_emulator([sys.executable, __file__, str(out)], timeout_s=150, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1]), EpisodeStore.open(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    """The scenario, run again (fresh store, at most SCENARIO_ATTEMPTS times) while its keys,
    typed for time windows, left too few rows for the checks (a loaded machine). The tests
    assert on the last attempt, so a recorder that is really broken still fails them."""
    for _ in range(SCENARIO_ATTEMPTS):
        res, store = _scenario_once(tmp_path_factory.mktemp("teleop") / "teleop.zarr")
        try:
            check_keys_and_episodes(res, store)
            break
        except AssertionError:
            continue
    return res, store


def test_keys_drive_the_arm_and_two_episodes_are_recorded(run: tuple[dict[str, Any], Any]) -> None:
    check_keys_and_episodes(*run)


def test_sigkill_mid_episode_keeps_earlier_episodes_and_a_second_recorder_appends(
    run: tuple[dict[str, Any], Any],
) -> None:
    from video2reward.data import keys

    res, store = run
    assert res["recorder_exit"] == -signal.SIGKILL
    assert "dropped" in res["recorder2_log"] and "rows of a crashed one" in res["recorder2_log"]
    assert res["start2"][0] and res["stop2"][0], (res["start2"], res["stop2"])
    assert store.n_episodes == 3  # the killed episode is gone, the appended one is there
    assert store.episode_meta(2)[keys.EPISODE_SUCCESS] is False  # saved True, relabelled by n
    assert store.episode_meta(2)["length"] >= 5
    assert res["teleop_exit"] == 0


if __name__ == "__main__":
    print(json.dumps(scenario(sys.argv[1])), flush=True)
