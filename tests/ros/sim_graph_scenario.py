"""The simulation graph under faults; run inside a private network namespace by
tests/ros/test_sim_graph.py (``python sim_graph_scenario.py CKPT OUT RESULT.json``).

Starts ``v2r launch sim.launch.xml`` (twin, driver, reward, learner), watches it from a plain
rclpy node, kills the reward node, stalls the camera, drops the driver's connection to the
controller (the twin's emulator), kills the learner, restarts the graph and writes what it saw
to RESULT.json for the test to assert on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Vector3Stamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray
from std_srvs.srv import SetBool, Trigger
from video2reward.ros.convert import LATCHED

LAUNCH = [sys.executable, "-m", "video2reward.cli.main", "launch", "sim.launch.xml"]
STEPS = 40  # commands per episode: 4 s at 10 Hz, long enough to inject a fault mid-episode
# A fault is injected again (on a later episode) only when the driver turns out to have been
# stopped already when it hit, so that the fault could not be what stopped it: a loaded machine
# can delay the learner past the watchdog deadline just before the fault.
FAULT_ATTEMPTS = 3


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Probe:
    def __init__(self) -> None:
        self.node = rclpy.create_node("graph_probe")
        self.lock = threading.Lock()
        self.images: list[int] = []
        self.rewards: list[int] = []
        self.actions: list[float] = []  # host arrival times
        self.applied: list[float] = []  # ...of commands the driver reports it actually sent
        self.refused: list[tuple[float, int]] = []  # (arrival, watchdog_stops) of refused ones
        self.streaming = False  # the driver's latest status
        self.run_start = 0.0  # host time of the first command of the current episode
        self.joints: list[list[float]] = []
        self.joint_times: list[float] = []  # arrival times of the driver's joint states
        self.fault = ""  # the driver's latched fault, from its latest status
        self.watchdog_stops = 0
        self.stop_times: list[tuple[float, int]] = []  # arrival of each new watchdog-stop count
        n = self.node
        n.create_subscription(
            Image, "/camera/color/image_raw", lambda m: self._add(self.images, stamp_ns(m)), 100
        )
        n.create_subscription(
            Vector3Stamped, "/reward/reward", lambda m: self._add(self.rewards, stamp_ns(m)), 100
        )
        n.create_subscription(Float32MultiArray, "/xarm_driver/action", self._action, 100)
        n.create_subscription(
            Float32MultiArray,
            "/xarm_driver/applied_action",
            lambda _m: self._add(self.applied, time.monotonic()),
            100,
        )
        n.create_subscription(
            JointState,
            "/xarm_driver/joint_states",
            self._joint_state,
            100,
        )
        n.create_subscription(DiagnosticStatus, "/xarm_driver/status", self._status, 10)
        # the learner's latched ~/acting, which tells the reward node when frames are the agent's
        self.acting: list[bool] = []
        n.create_subscription(Bool, "/learner/acting", lambda m: self._add(self.acting, m.data),
                              LATCHED)  # fmt: skip
        self.pause = n.create_client(SetBool, "/twin/pause_camera")
        self.clear_fault = n.create_client(Trigger, "/xarm_driver/clear_fault")
        self._spin = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _joint_state(self, m: JointState) -> None:
        with self.lock:
            self.joints.append(list(m.position[:5]))
            self.joint_times.append(time.monotonic())

    def _add(self, lst: list[Any], v: Any) -> None:
        with self.lock:
            lst.append(v)

    def _action(self, _m: Float32MultiArray) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.actions or now - self.actions[-1] > 0.4:  # a gap: a new episode began
                self.run_start = now
            self.actions.append(now)

    def mid_episode(self) -> bool:
        """Commands flowing and the driver sending them (one sent in the last 0.2 s, well within
        its 0.5 s watchdog deadline, none refused this episode), and the episode began 0.5-1.5 s
        ago (episodes last 4 s)."""
        now = time.monotonic()
        with self.lock:
            flowing = bool(self.actions) and now - self.actions[-1] < 0.25
            sending = bool(self.applied) and now - self.applied[-1] < 0.2 and self.streaming
            refused = any(t >= self.run_start for t, _ in self.refused)
            return flowing and sending and not refused and 0.5 < now - self.run_start < 1.5

    def stopped_before(self, t0: float, t1: float, wd0: int) -> bool:
        """The driver refused commands between t0 and t1 while reporting no watchdog stop past
        wd0: it had stopped before t0 (a stop already counted in wd0)."""
        with self.lock:
            return any(t0 <= t <= t1 and stops <= wd0 for t, stops in self.refused)

    def _status(self, m: DiagnosticStatus) -> None:
        values = {kv.key: kv.value for kv in m.values}
        with self.lock:
            stops = int(values.get("watchdog_stops", 0))
            if stops > self.watchdog_stops:
                self.stop_times.append((time.monotonic(), stops))
            self.watchdog_stops = max(self.watchdog_stops, stops)
            self.streaming = values.get("streaming") == "True"
            self.fault = values.get("fault", "")
            if m.message.startswith("action not sent"):
                self.refused.append((time.monotonic(), stops))

    def _run(self) -> None:
        while self._spin:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def set_pause(self, on: bool) -> bool:
        self.pause.wait_for_service(timeout_sec=10)
        f = self.pause.call_async(SetBool.Request(data=on))
        t_end = time.monotonic() + 10
        while not f.done() and time.monotonic() < t_end:
            time.sleep(0.05)
        return bool(f.done() and f.result().success)

    def call_clear_fault(self) -> tuple[bool, str]:
        self.clear_fault.wait_for_service(timeout_sec=10)
        f = self.clear_fault.call_async(Trigger.Request())
        t_end = time.monotonic() + 30
        while not f.done() and time.monotonic() < t_end:
            time.sleep(0.05)
        res = f.result() if f.done() else None
        return (bool(res.success), str(res.message)) if res is not None else (False, "timeout")

    def joint_states_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(1 for t in self.joint_times if t0 <= t < t1)

    def action_gap_after(self, t0: float, t1: float) -> float:
        """Longest time without an action between t0 and t1."""
        with self.lock:
            ts = [t for t in self.actions if t0 <= t <= t1]
        pts = [t0, *ts, t1]
        return max(b - a for a, b in itertools.pairwise(pts))

    def stop_latency_s(self, wd0: int) -> float | None:
        """From the last command the probe saw to the driver reporting its next watchdog stop
        (count above wd0): how long the arm kept its last command after the stream ended."""
        with self.lock:
            t_stop = next((t for t, n in self.stop_times if n > wd0), None)
            if t_stop is None:
                return None
            last = max((t for t in self.actions if t <= t_stop), default=None)
        return None if last is None else t_stop - last

    def close(self) -> None:
        self._spin = False
        self._thread.join()
        self.node.destroy_node()


def episodes(out: Path) -> int:
    try:
        return int(json.loads((out / "state.json").read_text())["episodes"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def digests(store: Path, n: int | None = None) -> list[str]:
    """A hash of every array and the metadata of the first ``n`` committed episodes (all when
    None). Read while the learner may append: zarr replaces chunk files atomically and an
    episode exists once its end is in the index, so committed ones read whole; read again
    (up to twice) if the index grew between two reads."""
    from video2reward.data.episode_store import EpisodeStore

    for attempt in range(3):
        try:
            s = EpisodeStore.open(store)
            out = []
            for i in range(s.n_episodes if n is None else min(n, s.n_episodes)):
                h = hashlib.sha256()
                for k, v in sorted(s.episode(i).items()):
                    h.update(k.encode() + np.ascontiguousarray(v).tobytes())
                h.update(json.dumps(s.episode_meta(i), sort_keys=True, default=str).encode())
                out.append(h.hexdigest())
            return out
        except Exception:
            if attempt == 2:
                raise
            time.sleep(0.5)
    return []


def wait_for(pred: Any, timeout_s: float, period_s: float = 0.2) -> bool:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(period_s)
    return False


def pid_of(node_name: str) -> int | None:
    """The pid of this graph's node: only processes in this scenario's network namespace
    (each test graph has its own), so another graph on the machine (a user's run, a parallel
    test) is never the one killed."""
    out = subprocess.run(
        ["pgrep", "-f", f"__node:={node_name}( |$)"], capture_output=True, text=True, check=False
    ).stdout.split()
    mine = os.readlink("/proc/self/ns/net")
    for pid in map(int, out):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == mine:
                return pid
        except OSError:  # gone, or not ours to inspect
            continue
    return None


def stop_processes(graph: subprocess.Popen[bytes] | None,
                   others: dict[str, subprocess.Popen[bytes]]) -> None:
    """Ctrl-C the launch (it stops its nodes) and every other process the scenario started;
    kill what does not stop within 10 s."""
    if graph is not None and graph.poll() is None:
        graph.send_signal(signal.SIGINT)
        graph.wait(timeout=60)
    for p in others.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def launch(ckpt: str, out: Path, log: Path, **args: object) -> subprocess.Popen[bytes]:
    argv = [
        *LAUNCH,
        f"reward_ckpt:={ckpt}",
        f"out:={out}",
        f"episode_steps:={STEPS}",
        *(f"{k}:={v}" for k, v in args.items()),
    ]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def run_to_end(ckpt: str, out: Path, log: Path, **args: object) -> dict[str, Any]:
    """Launch the graph (``launch``'s arguments, with ``max_episodes``), wait for the learner
    to end it; what was seen: ``learner_seen``, ``reward_node_pid``, ``exit``, ``wall_s``,
    ``error`` if it did not finish, and the learner's ``train_summary``."""
    r: dict[str, Any] = {}
    graph = launch(ckpt, out, log, **args)
    try:
        r["learner_seen"] = wait_for(lambda: pid_of("learner") is not None, 120)
        r["reward_node_pid"] = pid_of("reward")
        t0 = time.monotonic()
        r["exit"] = graph.wait(timeout=400)
        r["wall_s"] = round(time.monotonic() - t0, 1)
    except subprocess.TimeoutExpired:
        r["error"] = "the graph did not finish its episodes"
    finally:
        stop_processes(graph, {})
    summary = out / "train_summary.json"
    r["train_summary"] = json.loads(summary.read_text()) if summary.exists() else None
    return r


def bag_summary(bag: Path) -> dict[str, Any]:
    """What the bag of a run holds, read back with the mcap reader (ros/bag.py)."""
    from video2reward.ros.bag import BagReader, image_from_message

    if not bag.exists():
        return {"exists": False}
    reader = BagReader(bag)
    counts: dict[str, int] = {}
    log_times: dict[str, list[int]] = {}
    images_ok = 0
    for m in reader.messages():
        counts[m.topic] = counts.get(m.topic, 0) + 1
        log_times.setdefault(m.topic, []).append(m.log_time_ns)
        if m.topic.endswith("/compressed") and images_ok < 5:
            images_ok += image_from_message(m.type_name, m.decode()).ndim == 3
    return {
        "exists": True,
        "truncated": reader.truncated,
        "counts": counts,
        "log_times_increasing": all(t == sorted(t) for t in log_times.values()),
        "images_decoded": images_ok,
    }


def reward_kill(probe: Probe, out: Path) -> dict[str, Any]:
    """SIGKILL the reward node mid-episode; what followed."""
    r: dict[str, Any] = {}
    n0 = episodes(out)
    pid = pid_of("reward")  # looked up first: the kill follows the check at once
    r["reward_pid_found"] = pid is not None
    r["streaming_before_reward_kill"] = wait_for(probe.mid_episode, 120, 0.02)
    wd0 = probe.watchdog_stops
    t_kill = time.monotonic()
    if not (pid and r["streaming_before_reward_kill"]):
        return r
    os.kill(pid, signal.SIGKILL)
    time.sleep(4.0)  # the window the gap is measured in
    r["action_gap_after_reward_kill_s"] = probe.action_gap_after(t_kill + 1.5, t_kill + 4.0)
    r["watchdog_after_reward_kill"] = wait_for(lambda: probe.watchdog_stops > wd0, 15)
    r["stop_latency_after_reward_kill_s"] = probe.stop_latency_s(wd0)
    r["resumed_after_reward_kill"] = wait_for(lambda: episodes(out) >= n0 + 1, 120)
    r["driver_streaming_at_reward_kill"] = not probe.stopped_before(t_kill, t_kill + 4.0, wd0)
    return r


def camera_stall(probe: Probe, out: Path) -> dict[str, Any]:
    """Pause the twin's camera mid-episode for 3 s; what followed."""
    r: dict[str, Any] = {}
    n1 = episodes(out)
    probe.pause.wait_for_service(timeout_sec=10)
    r["streaming_before_stall"] = wait_for(probe.mid_episode, 120, 0.02)
    if not r["streaming_before_stall"]:
        return r
    wd1 = probe.watchdog_stops
    t_request = time.monotonic()
    r["paused"] = probe.set_pause(True)
    t_stall = time.monotonic()
    time.sleep(3.0)  # the window the gap is measured in
    r["action_gap_during_stall_s"] = probe.action_gap_after(t_stall + 1.0, t_stall + 3.0)
    r["unpaused"] = probe.set_pause(False)
    r["watchdog_after_stall"] = wait_for(lambda: probe.watchdog_stops > wd1, 15)
    r["stop_latency_after_stall_s"] = probe.stop_latency_s(wd1)
    r["resumed_after_stall"] = wait_for(lambda: episodes(out) >= n1 + 1, 120)
    r["driver_streaming_at_stall"] = not probe.stopped_before(t_request, t_stall + 3.0, wd1)
    return r


def controller_drop(probe: Probe, out: Path) -> dict[str, Any]:
    """Drop the driver's connections to the controller mid-episode (the twin's emulator closes
    them, as a pulled cable would); an operator calls clear_fault 2 s later. What followed."""
    from video2reward.sim.xarm_emulator import EmulatorProbe

    r: dict[str, Any] = {}
    r["streaming_before_drop"] = wait_for(probe.mid_episode, 120, 0.02)
    if not r["streaming_before_drop"]:
        return r
    n0 = episodes(out)
    with EmulatorProbe() as emu:
        t_drop = time.monotonic()
        r["connections_dropped"] = emu.call("drop_connections")["dropped"]
    r["fault_after_drop"] = wait_for(lambda: probe.fault != "", 5, 0.02)
    r["fault_reason"] = probe.fault
    time.sleep(2.0)
    # the driver's state stops (nothing stale); the episode in progress is not committed
    r["joint_states_after_drop"] = probe.joint_states_between(t_drop + 1.0, t_drop + 2.0)
    r["episodes_during_fault"] = episodes(out) - n0
    r["clear_fault"] = probe.call_clear_fault()
    t_clear = time.monotonic()
    r["resumed_after_clear"] = wait_for(lambda: episodes(out) >= n0 + 1, 120)
    r["joint_states_after_clear"] = probe.joint_states_between(t_clear, t_clear + 1.0)
    return r


def retried(fault: Callable[[], dict[str, Any]], valid_key: str) -> dict[str, Any]:
    """Run ``fault`` again while its result says the driver was already stopped when it hit
    (``valid_key`` False), at most FAULT_ATTEMPTS times; the last result, with earlier ones."""
    earlier: list[dict[str, Any]] = []
    while True:
        r = fault()
        if r.get(valid_key) is not False or len(earlier) + 1 >= FAULT_ATTEMPTS:
            return {**r, f"{valid_key}_earlier_attempts": earlier}
        earlier.append(r)


def recorded(result_path: Path, r: dict[str, Any], run: Callable[[], None]) -> int:
    """Run a scenario that fills ``r``; write ``r`` to ``result_path`` whatever happens (a
    failure's traceback under "error", for the test's message, with what was seen so far)."""
    try:
        run()
    except Exception:
        import traceback

        r["error"] = traceback.format_exc()
        raise
    finally:
        result_path.write_text(json.dumps(r, indent=2, default=str))
    return 0


def probed(make_probe: Callable[[], Any], run: Callable[[Any], None]) -> None:
    """``run(probe)`` with rclpy up and a probe node; both torn down after."""
    rclpy.init()
    probe = make_probe()
    try:
        run(probe)
    finally:
        probe.close()  # a spin thread alive at exit aborts the process (std::terminate)
        rclpy.try_shutdown()


def main() -> int:
    ckpt, out, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    r: dict[str, Any] = {}
    return recorded(result_path, r, lambda: scenario(ckpt, out, result_path, r))


def scenario(ckpt: str, out: Path, result_path: Path, r: dict[str, Any]) -> None:
    rclpy.init()
    probe = Probe()
    try:
        _scenario(probe, ckpt, out, result_path, r)
    finally:
        probe.close()  # a spin thread alive at exit aborts the process (std::terminate)
        rclpy.try_shutdown()


def _scenario(probe: Probe, ckpt: str, out: Path, result_path: Path, r: dict[str, Any]) -> None:
    log = result_path.with_suffix(".log")
    graph = launch(ckpt, out, log)
    try:
        r["first_episodes"] = wait_for(lambda: episodes(out) >= 2, 180)
        with probe.lock:
            r["n_images"], r["n_rewards"] = len(probe.images), len(probe.rewards)
            r["acting_values"] = sorted(set(probe.acting))
            # every reward is stamped with an image's stamp; only images the probe could have
            # seen count (the reward node may discover the camera a moment before the probe)
            first = min(probe.images, default=0)
            seen = set(probe.images)
            unmatched = [s for s in probe.rewards if s >= first and s not in seen]
            r["rewards_unmatched"] = unmatched[:10]
            r["rewards_match_images"] = not unmatched and any(s in seen for s in probe.rewards)
            joints = list(probe.joints)
        r["arm_moved_rad"] = max(
            (max(abs(a - b) for a, b in zip(j, joints[0], strict=True)) for j in joints),
            default=0.0,
        )
        r["checkpoint"] = (out / "agent.pt").exists()

        # 1. the reward node dies mid-episode: commands stop, the watchdog fires, it resumes
        r.update(retried(lambda: reward_kill(probe, out), "driver_streaming_at_reward_kill"))
        # 2. the camera stalls: commands stop, the watchdog fires, the graph resumes
        r.update(retried(lambda: camera_stall(probe, out), "driver_streaming_at_stall"))
        # 3. the link to the controller drops: fault latched, state stops, the episode is
        # dropped; after clear_fault (the operator) the driver reconnects and learning resumes
        r.update(controller_drop(probe, out))

        # 4. the learner dies: the launch exits non-zero; nothing committed is lost
        r["episodes_before_learner_kill"] = episodes(out)
        pid = pid_of("learner")
        if pid:
            os.kill(pid, signal.SIGKILL)
        r["launch_exit_after_learner_kill"] = graph.wait(timeout=60)
    finally:
        if graph.poll() is None:
            graph.send_signal(signal.SIGINT)
            graph.wait(timeout=60)

    # 5. restart: the learner resumes from its checkpoint and replay
    from video2reward.data.episode_store import EpisodeStore

    store = out / "replay" / "episodes.zarr"
    r["replay_before_restart"] = EpisodeStore.open(store).n_episodes
    committed = digests(store)  # the learner is gone: nothing writes the store now
    steps_before = json.loads((out / "state.json").read_text())["agent_steps"]
    bag = out.parent / "restart.mcap"  # the restart run is also recorded to a bag
    graph = launch(ckpt, out, log, max_episodes=1, with_bag="true", record_bag=bag)
    r["restart_exit"] = graph.wait(timeout=240)
    r["bag"] = bag_summary(bag)
    state = json.loads((out / "state.json").read_text())
    replay = EpisodeStore.open(store)
    r["replay_after_restart"] = replay.n_episodes
    r["committed_unchanged_after_restart"] = digests(store, len(committed)) == committed
    r["last_episode_rows"] = replay.episode_meta(replay.n_episodes - 1)["length"]
    r["steps_added_after_restart"] = state["agent_steps"] - steps_before
    r["train_summary"] = json.loads((out / "train_summary.json").read_text())

    # 6. a fault nobody clears (the twin has no operator): with fault_timeout_s the learner
    # ends the launch (exit code 1) with the driver's reason on its log, instead of a run that
    # retries enable forever
    r.update(unclear_fault(ckpt, out, log))


def unclear_fault(ckpt: str, out: Path, log: Path) -> dict[str, Any]:
    from video2reward.sim.xarm_emulator import EmulatorProbe

    r: dict[str, Any] = {}
    log_start = log.stat().st_size
    graph = launch(ckpt, out, log, fault_timeout_s=10.0)
    try:
        n0 = episodes(out)
        r["learning_before_unclear_fault"] = wait_for(lambda: episodes(out) > n0, 180)
        with EmulatorProbe() as emu:
            emu.call("drop_connections")
        t_drop = time.monotonic()
        r["exit_after_unclear_fault"] = graph.wait(timeout=120)
        r["exit_after_unclear_fault_s"] = time.monotonic() - t_drop
    finally:
        stop_processes(graph, {})
    text = log.read_bytes()[log_start:].decode(errors="replace")
    said = [line for line in text.splitlines() if "refused enable" in line]
    r["unclear_fault_reason"] = said[-1] if said else text[-2000:]
    return r


if __name__ == "__main__":
    sys.exit(main())
