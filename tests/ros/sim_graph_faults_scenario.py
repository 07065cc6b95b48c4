"""Process faults in the simulation graph; run by tests/ros/test_sim_graph_faults.py inside a
private network + mount namespace (``python sim_graph_faults_scenario.py CKPT OUT RESULT.json``,
with a small tmpfs already mounted at ``OUT/replay``).

The graph is the lab's (``_graph.launch.xml`` with the twin: driver, reward, learner), except
that camera and controller are two processes this scenario owns, so each can die alone:
``twin_node -p camera:=false`` is the xArm controller (the twin's emulator) and
``camera_node -p source:=twin`` publishes ``/camera/color/image_raw``. Faults, in order:

1. the camera process is SIGKILLed mid-episode, restarted 3 s later;
2. the controller process is SIGKILLed mid-episode, restarted, then ``~/clear_fault``;
3. the learner is SIGKILLed mid-episode (the launch shuts the graph down), and the graph is
   launched again;
4. the tmpfs under the replay store is filled mid-episode, so the episode's commit hits ENOSPC.

Every "the arm stopped" time is the controller's own (the emulator logs each stop with its
monotonic time, the clock this process reads), not the driver's report. What was seen goes to
RESULT.json for the test to assert on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from sim_graph_scenario import (
    STEPS,
    Probe,
    digests,
    episodes,
    pid_of,
    probed,
    recorded,
    retried,
    stop_processes,
    wait_for,
)

PROBE_PORT = 30010  # the twin's emulator probe (twin_node's default)
LAUNCH = [sys.executable, "-m", "video2reward.cli.main", "launch", "_graph.launch.xml"]
SIZE = 84  # image size, as the launch files pass it
# How late a state message may be stamped after the controller died and still be fresh: the
# driver serves reports up to 50 ms old (report_max_age_s), and a loaded machine can hold its
# state thread between the read and the stamp.
STATE_STAMP_SLACK_S = 0.25


class FaultProbe(Probe):
    """The sim graph's probe plus what these faults need: image arrivals, the driver's state
    stamps, when its fault appeared, and the learner's /diagnostics."""

    def __init__(self) -> None:
        self.image_times: list[float] = []
        self.state_stamps: list[float] = []  # wall-clock stamps of poses and joint states
        self.fault_since = 0.0  # arrival of the first status that carried the current fault
        self.learner_errors: list[str] = []  # messages of learner statuses at level ERROR
        super().__init__()
        n = self.node
        n.create_subscription(
            Image, "/camera/color/image_raw", lambda _m: self._add(self.image_times,
                                                                   time.monotonic()), 100
        )  # fmt: skip
        n.create_subscription(PoseStamped, "/xarm_driver/ee_pose", self._state_stamp, 100)
        n.create_subscription(JointState, "/xarm_driver/joint_states", self._state_stamp, 100)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)

    def _state_stamp(self, m: Any) -> None:
        self._add(self.state_stamps, m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)

    def _status(self, m: DiagnosticStatus) -> None:
        had = self.fault
        super()._status(m)
        if self.fault and not had:
            self.fault_since = time.monotonic()

    def _diagnostics(self, m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name == "learner" and st.level == DiagnosticStatus.ERROR:
                self._add(self.learner_errors, st.message)

    def count(self, times: list[float], t0: float, t1: float = float("inf")) -> int:
        with self.lock:
            return sum(1 for t in times if t0 <= t < t1)

    def last_action_before(self, t: float) -> float | None:
        with self.lock:
            return max((a for a in self.actions if a <= t), default=None)


# ---------------------------------------------------------------- processes
def start_twin(log: Path) -> subprocess.Popen[bytes]:
    """The controller alone: the twin's emulator, its camera off (the launch's parameters)."""
    argv = [sys.executable, "-m", "video2reward.sim.ros.twin_node", "--ros-args",
            "-r", "__node:=twin", "-p", "task:=reach", "-p", f"width:={SIZE}",
            "-p", f"height:={SIZE}", "-p", "camera:=false"]  # fmt: skip
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def start_camera(log: Path) -> subprocess.Popen[bytes]:
    """The camera node rendering a twin of its own (its arm does not follow the controller's:
    the frames are real camera-node output, not the policy's view of its motion)."""
    argv = [sys.executable, "-m", "video2reward.robot.ros.camera_node", "--ros-args",
            "-r", "__node:=camera", "-p", "source:=twin", "-p", f"width:={SIZE}",
            "-p", f"height:={SIZE}", "-p", "fps:=30"]  # fmt: skip
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def launch(ckpt: str, out: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [*LAUNCH, "use_twin:=true", "robot_ip:=127.0.0.1", "with_camera:=false",
            f"reward_ckpt:={ckpt}", f"out:={out}", f"episode_steps:={STEPS}"]  # fmt: skip
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def emulator(op: str, **kw: Any) -> dict[str, Any]:
    from video2reward.sim.xarm_emulator import EmulatorProbe

    with EmulatorProbe(port=PROBE_PORT) as emu:
        return emu.call(op, **kw)


def arm_stop(probe: FaultProbe, t: float) -> dict[str, Any]:
    """When the controller stopped the arm after the last command the probe saw before ``t``
    (both monotonic), whether any command was sent or accepted after that stop, and how far
    the joints moved in 0.5 s."""
    t_last_cmd = probe.last_action_before(t)
    if t_last_cmd is None:
        return {"stop_latency_s": None}
    log = emulator("log")
    stop = next((s for s in log["stop_log"] if s["t_mono"] > t_last_cmd), None)
    q0 = np.array(emulator("state")["joint_pos"])
    time.sleep(0.5)
    q1 = np.array(emulator("state")["joint_pos"])
    r: dict[str, Any] = {"joint_drift_rad": float(np.abs(q1 - q0).max())}
    if stop is None:
        return {**r, "stop_latency_s": None}
    moved = [m for m in log["motion_log"] if m["accepted"] and m["t_mono"] > stop["t_mono"]]
    return {**r, "stop_latency_s": stop["t_mono"] - t_last_cmd, "stop_why": stop["why"],
            "servo_accepted_after_stop": len(moved),
            "actions_after_stop": probe.count(probe.actions, stop["t_mono"])}  # fmt: skip


# ---------------------------------------------------------------- the disk
def fill_disk(directory: Path) -> dict[str, Any]:
    """Write a ballast file until the filesystem refuses (1 MiB, then 4 KiB writes)."""
    written, code = 0, 0
    with (directory / "ballast").open("wb", buffering=0) as f:
        for block in (1 << 20, 1 << 12):
            while True:
                try:
                    written += f.write(b"\0" * block)
                except OSError as e:
                    code = e.errno or 0
                    break
    st = os.statvfs(directory)
    return {"ballast_bytes": written, "fill_errno": code, "free_bytes": st.f_bavail * st.f_frsize}


# ---------------------------------------------------------------- faults
def camera_kill(probe: FaultProbe, out: Path, procs: dict[str, Any], log: Path) -> dict[str, Any]:
    """SIGKILL the camera node mid-episode, start it again 3 s later; what followed."""
    r: dict[str, Any] = {}
    n0 = episodes(out)
    r["streaming_before_camera_kill"] = wait_for(probe.mid_episode, 120, 0.02)
    if not r["streaming_before_camera_kill"]:
        return r
    wd0 = probe.watchdog_stops
    t_kill = time.monotonic()
    procs["camera"].kill()
    procs["camera"].wait()
    time.sleep(3.0)  # the window the gap is measured in
    r["images_after_camera_kill"] = probe.count(probe.image_times, t_kill + 0.2, t_kill + 3.0)
    # the learner gives up on a frame image_timeout_s (0.5 s) + one period after the last one
    r["actions_after_camera_kill"] = probe.count(probe.actions, t_kill + 1.0, t_kill + 3.0)
    r["watchdog_after_camera_kill"] = wait_for(lambda: probe.watchdog_stops > wd0, 15)
    r["driver_stop_latency_after_camera_kill_s"] = probe.stop_latency_s(wd0)
    r["arm_after_camera_kill"] = arm_stop(probe, t_kill + 3.0)
    procs["camera"] = start_camera(log)
    t_back = time.monotonic()
    r["images_after_camera_restart"] = wait_for(
        lambda: probe.count(probe.image_times, t_back) > 30, 60
    )
    r["resumed_after_camera_kill"] = wait_for(lambda: episodes(out) >= n0 + 1, 120)
    r["driver_streaming_at_camera_kill"] = not probe.stopped_before(t_kill, t_kill + 3.0, wd0)
    return r


def controller_kill(
    probe: FaultProbe, out: Path, store: Path, procs: dict[str, Any], log: Path
) -> dict[str, Any]:
    """SIGKILL the controller (the twin's process) mid-episode, start it again after 1 s, and
    1 s after it is back call ~/clear_fault, as an operator would; what followed."""
    r: dict[str, Any] = {}
    r["streaming_before_controller_kill"] = wait_for(probe.mid_episode, 120, 0.02)
    if not r["streaming_before_controller_kill"]:
        return r
    n0 = episodes(out)
    before = digests(store)
    r["committed_before_controller_kill"] = len(before)
    t_kill, t_kill_wall = time.monotonic(), time.time()
    procs["twin"].kill()
    procs["twin"].wait()
    r["fault_after_controller_kill"] = wait_for(lambda: probe.fault != "", 10, 0.02)
    r["fault_latency_s"] = probe.fault_since - t_kill if probe.fault else None
    r["fault_reason"] = probe.fault
    time.sleep(1.0)
    procs["twin"] = start_twin(log)
    r["controller_restarted"] = wait_for(lambda: port_open(PROBE_PORT), 60)
    time.sleep(1.0)
    # latched: the controller is back, the driver still refuses until told to clear
    r["fault_latched_after_controller_back"] = probe.fault
    t_clear_req_wall = time.time()
    r["state_stamped_after_kill"] = probe.count(
        probe.state_stamps, t_kill_wall + STATE_STAMP_SLACK_S, t_clear_req_wall
    )
    with probe.lock:
        after = [s for s in probe.state_stamps if t_kill_wall <= s < t_clear_req_wall]
    r["last_state_stamp_after_kill_s"] = max(after) - t_kill_wall if after else None
    r["episodes_during_fault"] = episodes(out) - n0
    r["clear_fault"] = probe.call_clear_fault()
    t_clear = time.monotonic()
    r["resumed_after_controller_kill"] = wait_for(lambda: episodes(out) >= n0 + 1, 120)
    r["joint_states_after_clear"] = probe.joint_states_between(t_clear, t_clear + 1.0)
    r["committed_unchanged_after_controller_kill"] = digests(store, len(before)) == before
    return r


def learner_kill(
    probe: FaultProbe, graph: subprocess.Popen[bytes], out: Path, store: Path
) -> dict[str, Any]:
    """SIGKILL the learner mid-episode; the launch takes the graph down. What followed."""
    r: dict[str, Any] = {}
    r["streaming_before_learner_kill"] = wait_for(probe.mid_episode, 120, 0.02)
    pid = pid_of("learner")
    r["learner_pid_found"] = pid is not None
    if not (pid and r["streaming_before_learner_kill"]):
        return r
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    r["launch_exit_after_learner_kill"] = graph.wait(timeout=60)
    r["arm_after_learner_kill"] = arm_stop(probe, t_kill + 0.5)
    r["episodes_before_learner_kill"] = episodes(out)
    return r


def disk_full(
    probe: FaultProbe, graph: subprocess.Popen[bytes], out: Path, store: Path, log: Path
) -> dict[str, Any]:
    """Fill the disk under the replay store mid-episode; the episode's commit fails."""
    r: dict[str, Any] = {}
    r["streaming_before_disk_full"] = wait_for(probe.mid_episode, 120, 0.02)
    if not r["streaming_before_disk_full"]:
        return r
    before = digests(store)
    r["committed_before_disk_full"] = len(before)
    log_start = log.stat().st_size
    r.update(fill_disk(store.parent))
    t_full = time.monotonic()
    r["launch_exit_after_disk_full"] = graph.wait(timeout=120)
    t_exit = time.monotonic()
    r["arm_after_disk_full"] = arm_stop(probe, t_exit)
    r["seconds_full_to_exit"] = t_exit - t_full
    text = log.read_bytes()[log_start:].decode(errors="replace")
    r["learner_log_errors"] = [ln for ln in text.splitlines() if "ENOSPC" in ln][:3]
    with probe.lock:
        r["learner_status_errors"] = list(probe.learner_errors)[-3:]
    # what a restarted learner would find, with the disk still full: read-only, nothing new
    r["committed_unchanged_after_disk_full"] = digests(store) == before
    # ...and once space is freed: opened for appending (drops the cut-short rows)
    from video2reward.data.episode_store import EpisodeStore

    (store.parent / "ballast").unlink()
    reopened = EpisodeStore.open(store, mode="a")
    r["episodes_after_space_freed"] = reopened.n_episodes
    r["committed_unchanged_after_space_freed"] = digests(store) == before
    return r


# ---------------------------------------------------------------- main
def main() -> int:
    ckpt, out, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    r: dict[str, Any] = {}

    def run(probe: FaultProbe) -> None:
        scenario(probe, ckpt, out, result_path, r)

    return recorded(result_path, r, lambda: probed(FaultProbe, run))


def scenario(probe: FaultProbe, ckpt: str, out: Path, result_path: Path, r: dict[str, Any]) -> None:
    log = result_path.with_suffix(".log")
    store = out / "replay" / "episodes.zarr"
    procs: dict[str, Any] = {"twin": start_twin(log), "camera": start_camera(log)}
    graph: subprocess.Popen[bytes] | None = None
    try:
        r["controller_up"] = wait_for(lambda: port_open(PROBE_PORT), 60)
        graph = launch(ckpt, out, log)
        r["first_episodes"] = wait_for(lambda: episodes(out) >= 2, 180)
        if not r["first_episodes"]:
            return
        r.update(retried(lambda: camera_kill(probe, out, procs, log),
                         "driver_streaming_at_camera_kill"))  # fmt: skip
        r.update(controller_kill(probe, out, store, procs, log))
        r.update(learner_kill(probe, graph, out, store))
        committed = digests(store)  # the learner is gone: nothing writes the store now
        r["committed_before_restart"] = len(committed)
        graph = launch(ckpt, out, log)
        n0 = episodes(out)
        r["resumed_after_learner_restart"] = wait_for(lambda: episodes(out) >= n0 + 1, 180)
        r["committed_unchanged_after_restart"] = digests(store, len(committed)) == committed
        r.update(disk_full(probe, graph, out, store, log))
    finally:
        stop_processes(graph, procs)


if __name__ == "__main__":
    sys.exit(main())
