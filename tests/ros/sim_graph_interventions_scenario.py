"""Human interventions in the simulation graph; run by tests/ros/test_sim_graph_interventions.py
inside a private network namespace (``python sim_graph_interventions_scenario.py CKPT OUT
RESULT.json [INTERVENTIONS]``; INTERVENTIONS defaults to true, false is the by-hand check that
the test fails without the feature).

The graph is ``v2r launch sim.launch.xml interventions:=true success_source:=operator
end_on_success:=true`` (twin, driver, reward, learner) beside a real teleop node this
scenario owns (``source:=twist``, ``intervention:=true``, ``action`` remapped to
``/learner/intervention``). This process plays
the operator: it publishes geometry_msgs/Twist on ``/cmd_vel`` (the operator's hand on the
device) and calls ``/learner/label``. In order:

1. mid-episode the operator drives for ~1 s, lets go (the teleop node hands back with empty
   messages) and labels the episode a success, which ends it there (HIL-SERL);
2. in a later episode, while the operator drives, the teleop node is SIGKILLed (the device is
   lost); it is started again after a few seconds of silence.

The graph stops by itself after MAX_EPISODES, so the learner writes ``train_summary.json``.
"The arm stopped" is timed by the twin controller's own stop log (monotonic, this machine's
clock). What was seen goes to RESULT.json for the test to assert on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist
from sim_graph_scenario import (
    Probe,
    digests,
    episodes,
    launch,
    probed,
    recorded,
    retried,
    stop_processes,
    wait_for,
)
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import SetBool

# The learner ends the run (and writes its summary) after this many: a run without retries
# needs ~5 (the first, the take-over, the lost one, the one after the device is back), the
# rest is room for retries
MAX_EPISODES = 12
TELEOP_HZ, MAX_STEP_M = 30.0, 0.01  # the teleop node's rate_hz and max_step_m
TWIST_M_S = (0.03, -0.015, 0.0)  # the operator's velocity: command v / (rate * max_step)
EXPECTED_CMD = [v / (TELEOP_HZ * MAX_STEP_M) for v in TWIST_M_S] + [-1.0]  # no keys: gripper -1
LOST_NOTE = "operator device lost"
LOST_WINDOW_S = 8.0  # how long the device stays gone: well beyond an episode reset


class OperatorProbe(Probe):
    """The sim graph's probe, plus the operator: Twists on /cmd_vel from a thread of its own,
    the teleop node's output on /learner/intervention, the values of the driver's commands,
    and the learner's label service."""

    def __init__(self) -> None:
        self.cmd_log: list[tuple[float, list[float]]] = []  # /xarm_driver/action values
        self.teleop_log: list[tuple[float, list[float]]] = []  # /learner/intervention
        super().__init__()
        n = self.node
        for topic, log in (("/xarm_driver/action", self.cmd_log),
                           ("/learner/intervention", self.teleop_log)):  # fmt: skip
            n.create_subscription(Float32MultiArray, topic, self._logger(log), 100)
        self.twist_pub = n.create_publisher(Twist, "/cmd_vel", 10)
        self.label: Any = n.create_client(SetBool, "/learner/label")
        self._driving = threading.Event()
        self._stop_twists = False
        self._twists = threading.Thread(target=self._twist_loop, daemon=True)
        self._twists.start()

    def _logger(self, log: list[tuple[float, list[float]]]) -> Any:
        return lambda m: self._add(log, (time.monotonic(), list(m.data)))

    def _twist_loop(self) -> None:
        msg = Twist()
        msg.linear.x, msg.linear.y, msg.linear.z = TWIST_M_S
        while not self._stop_twists:
            if self._driving.is_set():
                self.twist_pub.publish(msg)
            time.sleep(0.05)  # 20 Hz, well within the teleop node's twist_timeout_s (0.3 s)

    def drive(self, on: bool) -> None:
        (self._driving.set if on else self._driving.clear)()

    def call_label(self, success: bool) -> tuple[bool, str]:
        if not self.label.wait_for_service(timeout_sec=10):
            return False, "no service"
        f = self.label.call_async(SetBool.Request(data=success))
        t_end = time.monotonic() + 10
        while not f.done() and time.monotonic() < t_end:
            time.sleep(0.01)
        res = f.result() if f.done() else None
        return (bool(res.success), str(res.message)) if res is not None else (False, "timeout")

    def commands(self, log: list[tuple[float, list[float]]], t0: float, t1: float) -> list[Any]:
        with self.lock:
            return [v for t, v in log if t0 <= t < t1]

    def last_command_before(self, t: float) -> tuple[float, list[float]] | None:
        with self.lock:
            return max(((a, v) for a, v in self.cmd_log if a <= t), default=None)

    def close(self) -> None:
        self._stop_twists = True
        self._twists.join()
        super().close()


def is_operator(v: list[float]) -> bool:
    return len(v) == 4 and bool(np.allclose(v, EXPECTED_CMD, atol=1e-6))


# ---------------------------------------------------------------- processes
def start_teleop(log: Path) -> subprocess.Popen[bytes]:
    """The operator's device: a teleop node turning Twists into take-over commands."""
    argv = [sys.executable, "-m", "video2reward.robot.ros.teleop_node", "--ros-args",
            "-r", "__node:=teleop", "-p", "source:=twist", "-p", "intervention:=true",
            "-p", f"rate_hz:={TELEOP_HZ}", "-p", f"max_step_m:={MAX_STEP_M}",
            "-r", "action:=/learner/intervention",
            "-r", "recorder/stop:=/learner/label"]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def emulator(op: str) -> dict[str, Any]:
    from video2reward.sim.xarm_emulator import EmulatorProbe

    with EmulatorProbe() as emu:
        return emu.call(op)


def committed(store: Path) -> int:
    from video2reward.data.episode_store import EpisodeStore

    for _ in range(3):
        try:
            return EpisodeStore.open(store).n_episodes
        except Exception:  # not created yet, or read while being appended to
            time.sleep(0.2)
    return 0


def read_episode(store: Path, i: int) -> dict[str, Any]:
    """What the replay holds for episode ``i``: its commands, flags, success and note."""
    from video2reward.data.episode_store import EpisodeStore

    s = EpisodeStore.open(store)
    data = s.episode(i, ["action", "intervened", "cont"])
    meta = s.episode_meta(i)
    return {"actions": np.asarray(data["action"]).tolist(),
            "intervened": np.asarray(data["intervened"], bool).tolist(),
            "cont": np.asarray(data["cont"], float).tolist(),
            "success": bool(meta["episode_success"]), "note": str(meta["episode_notes"]),
            "rows": int(meta["length"])}  # fmt: skip


def runs(flags: list[bool]) -> int:
    """Runs of consecutive flagged steps (take-overs)."""
    f = np.asarray(flags, int)
    return int(np.sum(np.diff(np.concatenate([[0], f])) == 1))


# ---------------------------------------------------------------- 1. take-over and label
def mid_episode(probe: OperatorProbe, graph: subprocess.Popen[bytes]) -> bool:
    """Wait for the middle of an episode; False at once when the run has ended."""
    wait_for(lambda: probe.mid_episode() or graph.poll() is not None, 120, 0.02)
    return graph.poll() is None and probe.mid_episode()


def takeover(probe: OperatorProbe, graph: subprocess.Popen[bytes], store: Path) -> dict[str, Any]:
    """Mid-episode the operator drives ~1 s, lets go and labels the episode a success."""
    r: dict[str, Any] = {}
    r["streaming_before_takeover"] = mid_episode(probe, graph)
    if not r["streaming_before_takeover"]:
        return r
    t0 = time.monotonic()
    probe.drive(True)
    time.sleep(1.0)
    probe.drive(False)
    t1 = time.monotonic()
    # the teleop node hands back once the last Twist is twist_timeout_s (0.3 s) old
    r["handed_back"] = wait_for(lambda: any(len(v) == 0 for v in probe.commands(
        probe.teleop_log, t1 + 0.2, float("inf"))), 5, 0.02)  # fmt: skip
    r["label"] = probe.call_label(True)
    m = re.match(r"episode (\d+) labelled success", r["label"][1])
    r["labelled_episode"] = int(m.group(1)) if m else None
    r["teleop_commands"] = [v for v in probe.commands(probe.teleop_log, t0, t1 + 1.0) if v]
    r["driver_commands_operator"] = sum(
        is_operator(v) for v in probe.commands(probe.cmd_log, t0, t1 + 1.0)
    )
    k = r["labelled_episode"]
    if k is None or not wait_for(lambda: committed(store) > k, 90):
        r["label_in_flagged_episode"] = False
        return r
    ep = read_episode(store, k)
    r["episode"] = ep
    # valid when the label reached the episode the operator drove in (not the one after it,
    # a race on a loaded machine) and the teleop node kept up (no device-lost end)
    r["label_in_flagged_episode"] = any(ep["intervened"]) and LOST_NOTE not in ep["note"]
    return r


# ---------------------------------------------------------------- 2. device lost
def device_lost(
    probe: OperatorProbe, graph: subprocess.Popen[bytes], out: Path, store: Path,
    procs: dict[str, Any], log: Path,
) -> dict[str, Any]:  # fmt: skip
    """SIGKILL the teleop node while the operator drives; start it again LOST_WINDOW_S later."""
    r: dict[str, Any] = {}
    r["streaming_before_lost"] = mid_episode(probe, graph)
    if not r["streaming_before_lost"]:
        return r
    before = digests(store)
    r["committed_before_lost"] = len(before)
    log_start = log.stat().st_size
    probe.drive(True)
    # the operator's commands reach the driver: the learner forwards them
    r["operator_driving_at_kill"] = wait_for(
        lambda: (c := probe.last_command_before(time.monotonic())) is not None
        and is_operator(c[1]) and time.monotonic() - c[0] < 0.25, 3, 0.02)  # fmt: skip
    wd0 = probe.watchdog_stops
    t_kill = time.monotonic()
    procs["teleop"].kill()
    procs["teleop"].wait()
    probe.drive(False)  # the operator's hand, with no device: nothing reaches the graph
    time.sleep(3.0)
    r["driver_streaming_at_kill"] = not probe.stopped_before(t_kill - 0.3, t_kill, wd0)
    last = probe.last_command_before(t_kill + 3.0)
    r["last_command_after_kill_s"] = last[0] - t_kill if last else None
    r["last_command"] = last[1] if last else None
    r["operator_commands_after_kill"] = sum(
        is_operator(v) for v in probe.commands(probe.cmd_log, t_kill, t_kill + 3.0)
    )
    r.update(arm_stop(last[0] if last else None))
    # the episode is committed with the note; then nothing while the device is gone
    r["lost_episode_committed"] = wait_for(lambda: committed(store) > len(before), 60)
    n_lost = committed(store)
    lost_digests = digests(store, n_lost)
    t_window = time.monotonic()
    q0 = np.array(emulator("state")["joint_pos"])
    time.sleep(LOST_WINDOW_S)
    q1 = np.array(emulator("state")["joint_pos"])
    r["episodes_while_lost"] = committed(store) - n_lost
    r["state_episodes_while_lost"] = episodes(out) - n_lost
    r["commands_while_lost"] = len(probe.commands(probe.cmd_log, t_window, time.monotonic()))
    r["joint_drift_while_lost_rad"] = float(np.abs(q1 - q0).max())
    moved = [m for m in emulator("log")["motion_log"] if m["t_mono"] >= t_window]
    r["controller_motions_while_lost"] = len(moved)
    r["controller_accepted_while_lost"] = sum(m["accepted"] for m in moved)
    text = log.read_bytes()[log_start:].decode(errors="replace")
    kept = re.findall(r"operator device lost mid-episode.*\(kept: (\d+) steps\)", text)
    r["kept_steps_logged"] = [int(k) for k in kept]
    if r["lost_episode_committed"]:
        r["lost_episode"] = read_episode(store, len(before))
    r["committed_unchanged_after_lost"] = digests(store, len(before)) == before
    # the device comes back: episodes resume
    procs["teleop"] = start_teleop(log)
    r["resumed_after_teleop_restart"] = wait_for(lambda: committed(store) > n_lost, 120)
    r["committed_unchanged_after_resume"] = digests(store, n_lost) == lost_digests
    return r


def arm_stop(t_last_cmd: float | None) -> dict[str, Any]:
    """When the controller stopped the arm after the last command (both monotonic), and what
    the controller accepted after that stop."""
    if t_last_cmd is None:
        return {"stop_latency_s": None}
    log = emulator("log")
    stop = next((s for s in log["stop_log"] if s["t_mono"] > t_last_cmd), None)
    if stop is None:
        return {"stop_latency_s": None}
    return {"stop_latency_s": stop["t_mono"] - t_last_cmd, "stop_why": stop["why"],
            "t_stop": stop["t_mono"]}  # fmt: skip


# ---------------------------------------------------------------- main
def main() -> int:
    ckpt, out, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    interventions = sys.argv[4] if len(sys.argv) > 4 else "true"
    r: dict[str, Any] = {"interventions": interventions}

    def run(probe: OperatorProbe) -> None:
        scenario(probe, ckpt, out, result_path, interventions, r)

    return recorded(result_path, r, lambda: probed(OperatorProbe, run))


def scenario(
    probe: OperatorProbe, ckpt: str, out: Path, result_path: Path, interventions: str,
    r: dict[str, Any],
) -> None:  # fmt: skip
    log = result_path.with_suffix(".log")
    store = out / "replay" / "episodes.zarr"
    procs: dict[str, Any] = {"teleop": start_teleop(log)}
    t_start = time.monotonic()
    graph = launch(ckpt, out, log, interventions=interventions, success_source="operator",
                   end_on_success="true", max_episodes=MAX_EPISODES)  # fmt: skip
    try:
        r["first_episode"] = wait_for(lambda: committed(store) >= 1, 240)
        r["startup_s"] = time.monotonic() - t_start
        if not r["first_episode"]:
            return
        r.update(retried(lambda: takeover(probe, graph, store), "label_in_flagged_episode"))
        r.update(retried(lambda: device_lost(probe, graph, out, store, procs, log),
                         "driver_streaming_at_kill"))  # fmt: skip
        r["episodes_before_end"] = committed(store)
        r["launch_exit"] = graph.wait(timeout=300)
        r["run_s"] = time.monotonic() - t_start
        summary = out / "train_summary.json"
        r["train_summary"] = json.loads(summary.read_text()) if summary.exists() else None
        n = committed(store)
        eps = [read_episode(store, i) for i in range(n)]
        r["replay"] = {
            "episodes": n,
            "intervened_steps": sum(sum(e["intervened"]) for e in eps),
            "takeovers": sum(runs(e["intervened"]) for e in eps),
            "lost_episodes": sum(LOST_NOTE in e["note"] for e in eps),
            "successes": [i for i, e in enumerate(eps) if e["success"]],
            "operator_rows_not_operator_cmd": sum(
                1 for e in eps for a, f in zip(e["actions"], e["intervened"], strict=True)
                if f and not is_operator(a)
            ),
        }  # fmt: skip
    finally:
        stop_processes(graph, procs)


if __name__ == "__main__":
    sys.exit(main())
