"""ROS 2 DrQ-v2 learner node: images + rewards in, normalized delta EE commands out.

    learner_node --ros-args -p out:=runs/learner -p episode_steps:=50 \\
        -r image:=/camera/color/image_raw -r reward:=/reward/reward \\
        -r ee_pose:=/xarm_driver/ee_pose -r joint_states:=/xarm_driver/joint_states \\
        -r action:=/xarm_driver/action -r home:=/xarm_driver/home -r enable:=/xarm_driver/enable

A control thread acts at ``control_hz`` on the newest image (and ee pose + gripper), publishing
``action`` (std_msgs/Float32MultiArray); ``driver_status`` (the driver's DiagnosticStatus)
tells it when the driver has stopped the arm, which drops the episode. A transition's reward
gathers the reward node's per-frame rewards with stamps in (stamp of o_t, stamp of o_t+1],
matched by image stamp: their sum for potential-difference rewards (VIP, UVD: exact whatever
the camera rate, ``rewards.stream``), their mean for rewards of the state (Rank2Reward, HOLD,
TCN), so a step's reward is what the twin trainer and the demonstrations (``demos``, rewarded
by ``reward_ckpt``) give it; without ``reward_ckpt`` the sum. With ``episode_rewards`` the node
reads no reward topic: it scores each finished episode's frames (one per step) with
``reward_ckpt`` as the demonstrations are scored, which VIPER and Diffusion Reward need (a
window of earlier frames, progress summed over the episode). Episodes
last ``episode_steps`` (with ``end_on_success``, until the operator's success key, HIL-SERL, or
with ``success_source`` reward the reward node's success call, SERL, if sooner; that step is
terminal in the replay); between them the node calls ``enable``, the optional
``reset_task`` (the twin re-randomizes its objects) and ``home`` (std_srvs/Trigger).
``~/acting`` (std_msgs/Bool, latched) is true from the end of ``home`` to the episode's last
frame, false otherwise (pretraining, resets): the reward node scores idle frames sparsely
and does not train Rank2Reward's discriminator on them.

Fail-safe: when images stop (``image_timeout_s``), rewards stop (``reward_timeout_s``; not
with ``episode_rewards``) or the
driver's pose stops (``state_timeout_s``: the driver publishes none while its controller is
lost, until ``clear_fault`` reconnects), the node stops publishing, so the driver's watchdog
stops the arm; the episode is dropped and a new one starts once they all flow again. While
the driver holds a latched fault, ``enable`` is refused and the node retries until the
operator's ``clear_fault``; with ``fault_timeout_s`` (the twin's launches: nobody clears it
there) a fault still latched after that long ends the node with exit code 1 and the driver's
answer. An
episode the replay store cannot write (a full disk: ``ReplayWriteError`` naming ENOSPC and the
path) ends the node with exit code 1 and that reason on its log and ``/diagnostics``; the
episodes committed before stay on disk. Updates
run off the control thread (``policies.online``); one the thread lags too far behind for is
skipped, and made between episodes (``catch_up_updates``), so a slow CPU lengthens the
resets, not the robot time per update; replay and checkpoints persist in ``out`` so a
restarted node resumes. With ``max_episodes`` set, the node writes ``summary.json``,
``curve.png`` and an mp4 of the last episode, then exits.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray
from std_srvs.srv import SetBool, Trigger
from video2reward.policies.demos import DemoSpec
from video2reward.policies.drqv2 import DrQV2Config, NonFiniteError
from video2reward.policies.intervention import OperatorTakeover
from video2reward.policies.online import OnlineConfig, OnlineLearner, step_rewards
from video2reward.rewards.base import RewardError
from video2reward.ros import convert
from video2reward.ros.image_topic import (
    IMAGE_TRANSPORT,
    ImageMsg,
    StampPairs,
    subscribe_depth,
    subscribe_image,
)
from video2reward.ros.node_main import run_node
from video2reward.ros.params import (
    ParamSpec,
    config_values,
    declare_all,
    field_param,
    float_range,
    int_range,
)

F, I = float_range, int_range
O, A, D = OnlineConfig, DrQV2Config, DemoSpec
# Fields of OnlineConfig (O: the learning options of LearnSpec, the twin trainer's too, and the
# node's own), DrQV2Config (A) and DemoSpec (D) take their defaults from the dataclass; the
# presets (configs/learner_cpu.yaml, learner_gpu.yaml) carry only what they change.
PARAMS: tuple[ParamSpec, ...] = (
    field_param(O, "out", "run folder: agent.pt, state.json, replay/ (resumed if present)"),
    field_param(O, "eval_mode", "only act (mean action, no exploration, no updates)"),
    field_param(O, "policy_ckpt", "eval_mode: a VPDD policy (v2r policy finetune's out/) "
                "acts instead of out/agent.pt ('' = DrQ-v2's); it sets image_size, frame_stack"),
    field_param(O, "control_hz", "commands per second (up to the camera rate)", F(1.0, 60.0)),
    ("episode_steps", 50, "commands per episode", I(2, 100_000), True),
    (
        "max_episodes",
        0,
        "stop after this many episodes (0: run until shut down)",
        I(0, 10_000_000),
        True,
    ),
    field_param(O, "image_size", "square size the agent sees, pixels", I(16, 480)),
    field_param(O, "frame_stack", "frames per observation", I(1, 16)),
    field_param(O, "proprio", "ee position + gripper opening beside the pixels"),
    field_param(O, "device", "auto (CUDA when available) | cpu | cuda | cuda:N"),
    field_param(A, "batch_size", "transitions per update", I(2, 4096)),
    field_param(A, "hidden_dim", "actor/critic MLP width", I(8, 4096)),
    field_param(A, "feature_dim", "trunk output size", I(4, 1024)),
    field_param(A, "lr", "Adam learning rate", F(1e-6, 1e-1)),
    field_param(A, "num_expl_steps", "agent steps of uniform random actions (0 after "
                "pretraining)", I(0, 10_000_000)),
    field_param(O, "seed_steps", "agent steps before the first update", I(0, 10_000_000)),
    field_param(O, "catch_up_updates", "between episodes, make the updates skipped while the "
                "learner lagged (a slow CPU): the updates per frame stay the schedule's"),
    field_param(A, "update_every_steps", "one update per this many agent steps", I(1, 100)),
    field_param(A, "stddev_schedule_steps", "agent steps of the exploration-noise decay",
                I(1, 100_000_000)),
    field_param(A, "stddev_init", "exploration stddev at the first agent step", F(0.0, 1.0)),
    field_param(A, "stddev_final", "exploration stddev after the decay", F(0.0, 1.0)),
    field_param(A, "shift_pad_px", "random-shift augmentation padding, pixels", I(0, 32)),
    field_param(O, "success_bonus", "added on every step called successful (success_source "
                "topic: the last)", F(0.0, 1000.0)),
    field_param(D, "path", "episode store with actions seeding a demo buffer ('' = none)",
                name="demos"),
    field_param(D, "max_episodes", "the demos' first N successful episodes (0: all)",
                I(0, 10_000_000), name="demo_max_episodes"),
    field_param(O, "reward_ckpt", "the reward node's model: rewards the demos, sets reward "
                "summing"),
    field_param(D, "fraction", "share of every batch from the demos", F(0.0, 0.99),
                name="demo_fraction"),
    field_param(D, "pretrain_updates", "updates on the demos before the first frame",
                I(0, 1_000_000)),
    field_param(D, "add_successes", "episodes called successful join the demos "
                "(self-imitation)", name="demo_add_successes"),
    field_param(A, "bc_weight", "behaviour cloning on demo rows (TD3+BC, |Q|-scaled)",
                F(0.0, 100.0)),
    field_param(A, "bc_decay_steps", "agent steps over which bc_weight falls to 0 (0: "
                "constant)", I(0, 100_000_000)),
    field_param(A, "bc_encoder", "the BC term also trains the conv encoder on demo rows"),
    field_param(A, "updates_per_step", "updates each time one is due (update-to-data ratio)",
                I(1, 64)),
    (
        "success_source",
        "reward",
        "reward (the model's success flag) | operator (the label service only) | topic "
        "(std_msgs/Bool: the twin's predicate, evaluation only); an operator's label wins",
        None,
        True,
    ),
    field_param(O, "interventions", "an operator may take over on the intervention topic"),
    field_param(O, "end_on_success", "the operator's success key (HIL-SERL), or with "
                "success_source reward the reward node's call (SERL), ends the episode; that "
                "step is terminal, as are the demos' last steps"),
    field_param(O, "episode_rewards", "score each finished episode here with reward_ckpt "
                "(VIPER, Diffusion Reward) instead of the reward topic"),
    field_param(O, "pointmap", "the policy also sees each pixel's base-frame position: depth "
                "aligned to colour on `depth` (32FC1 m or 16UC1 mm, the colour frame's stamp) "
                "and the camera's calibration"),
    field_param(O, "camera_calibration", "pointmap: the v2r calib file placing the camera "
                "('' = the demo store's camera attributes)"),
    ("intervention_timeout_s", 0.3, "silence while the operator drives: device lost",
     F(0.05, 5.0), True),
    ("reward_timeout_s", 1.0, "rewards this late stop the arm", F(0.05, 60.0), True),
    IMAGE_TRANSPORT,
    ("image_timeout_s", 0.5, "images this late stop the arm", F(0.05, 60.0), True),
    (
        "state_timeout_s",
        0.5,
        "driver pose this late (controller lost) drops the episode",
        F(0.05, 60.0),
        True,
    ),
    ("service_timeout_s", 60.0, "longest wait for home/enable/reset_task", F(1.0, 600.0), True),
    (
        "fault_timeout_s",
        0.0,
        "end the node (exit code 1, the driver's reason logged) when enable has been refused "
        "this long; 0 = wait for the operator's clear_fault (the robot)",
        F(0.0, 3600.0),
        True,
    ),
    ("use_reset_task", False, "call reset_task between episodes (the twin)", None, True),
    ("video", True, "write an mp4 of the last episode when max_episodes is reached", None, True),
    field_param(O, "seed", "random seed", I(0, 2**31 - 1)),
)


def config_from_params(p: dict[str, Any]) -> OnlineConfig:
    """The learner's config from the node's parameter values (what ``declare_all`` read)."""
    return OnlineConfig(agent=DrQV2Config(**config_values(DrQV2Config, PARAMS, p)),
                        demos=DemoSpec(**config_values(DemoSpec, PARAMS, p)),
                        **config_values(OnlineConfig, PARAMS, p))  # fmt: skip


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner")
        p = self.p = declare_all(self, PARAMS)
        if p["success_source"] not in ("reward", "operator", "topic"):
            raise ValueError(
                f"success_source must be reward, operator or topic, got {p['success_source']}"
            )
        # ~/acting: whether a policy acts now, for the reward node (idle frames are scored
        # sparsely and not shown to Rank2Reward's discriminator as the agent's)
        self.acting_pub = self.create_publisher(Bool, "~/acting", convert.LATCHED)
        self._set_acting(False)
        self.learner = OnlineLearner(config_from_params(p))
        if self.learner.demo_info:
            self.get_logger().info(f"demonstrations in replay: {self.learner.demo_info}")
        if p["pretrain_updates"] and not self.learner.state.get("pretrained"):
            self.get_logger().info(f"pretraining on the demonstrations: {p['pretrain_updates']} "
                                   "updates before the arm moves")  # fmt: skip
            t0 = time.monotonic()
            self.learner.pretrain()
            self.get_logger().info(f"pretrained in {time.monotonic() - t0:.0f} s")
        # How a step's reward gathers its frames' rewards: the sum for potential differences
        # (exact at any camera rate), the mean for a reward of the state (one frame's scale).
        self.sum_frame_rewards = True
        # episode_rewards: the episode is scored here at its end; no reward topic to wait on
        self.own_rewards = bool(p["episode_rewards"])
        if self.own_rewards:
            self.get_logger().info(f"episodes scored here by {self.learner.rewarder.model.method} "
                                   f"from {p['reward_ckpt']} (the reward topic is not read)")
        elif p["reward_ckpt"]:
            from video2reward.rewards.base import method_class, read_checkpoint

            # read once: the learner loaded the model already when it relabelled demos
            method = self.learner.reward_method or str(read_checkpoint(p["reward_ckpt"])["method"])
            self.sum_frame_rewards = method_class(method).potential_difference
        self.lock = threading.Lock()
        self.new_image = threading.Condition(self.lock)  # notified on every image
        # stamp_ns, t_arrival, rgb, and with pointmap the frame's aligned depth (its point map
        # is made when a control step uses the frame, not for every camera frame)
        self.image: tuple[int, float, np.ndarray, np.ndarray | None] | None = None
        self.pairs = StampPairs()  # pointmap: each colour frame with its depth
        self.rewards: deque[tuple[int, float, float, float]] = deque(maxlen=100_000)
        self.t_last_reward = 0.0
        self.ee_pos: np.ndarray | None = None
        self.t_last_pose = -float("inf")  # monotonic arrival of the last driver pose
        self.gripper = 1.0
        self.success_flag = False
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=200)
        self.phase = "reset"
        self.history: list[dict[str, Any]] = []
        self.action_pub = self.create_publisher(Float32MultiArray, "action", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        subscribe_image(self, p["image_transport"], self._on_image)
        if p["pointmap"]:
            subscribe_depth(self, self._on_depth)
        self.create_subscription(Vector3Stamped, "reward", self._on_reward, 200)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, 10)
        self.create_subscription(JointState, "joint_states", self._on_joints, 10)
        self.create_subscription(Bool, "success", self._on_success, 10)
        self.create_subscription(DiagnosticStatus, "driver_status", self._on_driver_status, 10)
        # The operator: take-overs (the teleop node, intervention:=true) and an episode label
        self.takeover = OperatorTakeover(p["intervention_timeout_s"])
        self.t_lost = -float("inf")  # when the operator's device was lost mid-episode
        self.operator_label: bool | None = None
        if p["interventions"]:
            # ~/intervention: /learner/intervention, where the launch files and docs tell the
            # teleop node (intervention:=true) to publish; a plain "intervention" resolved to
            # /intervention and never heard the operator
            self.create_subscription(Float32MultiArray, "~/intervention", self._on_intervention, 10)
        self.create_service(SetBool, "~/label", self._on_label)
        self.driver_streaming: tuple[float, bool] = (0.0, True)  # (arrival, streaming)
        self.triggers: dict[str, Any] = {
            n: self.create_client(Trigger, n) for n in ("enable", "home", "reset_task")
        }
        self.create_timer(1.0, self._diagnostics)
        self.done = threading.Event()
        self.error: Exception | None = None  # what ended the control loop (exit code 1)
        self.call_error = ""  # why the last failed service call failed
        self.t_enable_refused: float | None = None  # since when enable keeps failing
        self._thread = threading.Thread(target=self._control, daemon=True, name="control")
        self._thread.start()

    # ------------------------------------------------------------------ inputs
    def _on_image(self, rgb: np.ndarray, msg: ImageMsg) -> None:
        stamp = convert.ns_from_stamp(msg.header.stamp)
        if self.p["pointmap"]:
            self._pair("rgb", stamp, rgb)
            return
        with self.lock:
            self.image = (stamp, time.monotonic(), rgb, None)
            self.new_image.notify_all()

    def _on_depth(self, depth: np.ndarray, msg: Image) -> None:
        self._pair("depth", convert.ns_from_stamp(msg.header.stamp), depth)

    def _pair(self, kind: str, stamp: int, array: np.ndarray) -> None:
        """pointmap: a colour frame becomes the current image once the depth of the same
        stamp has come (either may arrive first)."""
        pair = self.pairs.add(kind, stamp, array)
        if pair is None:
            return
        rgb, depth = pair
        if depth.shape != rgb.shape[:2]:
            self.get_logger().error(f"depth {depth.shape} is not aligned to colour "
                                    f"{rgb.shape[:2]}: frame dropped (align depth to colour)",
                                    throttle_duration_sec=5.0)  # fmt: skip
            return
        with self.lock:
            if self.image is None or stamp > self.image[0]:
                self.image = (stamp, time.monotonic(), rgb, depth)
                self.new_image.notify_all()

    def _xyz(self, img: tuple[int, float, np.ndarray, np.ndarray | None]) -> np.ndarray | None:
        """pointmap: the point map of a frame a control step acts on (None without)."""
        return None if img[3] is None else self.learner.pointmap_xyz(img[3])

    def _on_reward(self, msg: Vector3Stamped) -> None:
        sample = convert.reward_from_msg(msg)
        with self.lock:
            self.rewards.append(sample)
            self.t_last_reward = time.monotonic()

    def _on_pose(self, msg: PoseStamped) -> None:
        q = msg.pose.position
        self.ee_pos = np.array([q.x, q.y, q.z], np.float32)
        self.t_last_pose = time.monotonic()

    def _on_joints(self, msg: JointState) -> None:
        if convert.GRIPPER_JOINT in msg.name:
            pos = msg.position[msg.name.index(convert.GRIPPER_JOINT)]
            self.gripper = float(np.clip(1.0 - pos / convert.GRIPPER_TRAVEL_RAD, 0.0, 1.0))

    def _on_driver_status(self, msg: DiagnosticStatus) -> None:
        values = {kv.key: kv.value for kv in msg.values}
        if "streaming" in values:
            self.driver_streaming = (time.monotonic(), values["streaming"] == "True")

    def _on_intervention(self, msg: Float32MultiArray) -> None:
        why = self.takeover.feed(list(msg.data), time.monotonic())
        if why:
            self.get_logger().warning(why, throttle_duration_sec=2.0)

    def _on_label(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        """The operator's key: the episode in progress succeeded (True) or failed (False)."""
        self.operator_label = bool(req.data)
        res.success = True
        res.message = f"episode {len(self.history)} labelled {'success' if req.data else 'failure'}"
        return res

    def _choose(self, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        """The command for this step: the operator's while they drive, else the policy's."""
        if not self.p["interventions"]:
            return policy_action, False
        op = self.takeover.action(time.monotonic())
        return (policy_action, False) if op is None else (op, True)

    def _on_success(self, msg: Bool) -> None:
        self.success_flag = self.success_flag or bool(msg.data)

    # ------------------------------------------------------------------ helpers
    def _call(self, name: str) -> bool:
        client = self.triggers[name]
        timeout = self.p["service_timeout_s"]
        if not client.wait_for_service(timeout_sec=timeout):
            self.call_error = f"service {client.srv_name} is not available"
            self.get_logger().warning(self.call_error)
            return False
        t0 = time.monotonic()
        future = client.call_async(Trigger.Request())
        finished = threading.Event()
        future.add_done_callback(lambda _f: finished.set())
        finished.wait(timeout)
        res = future.result() if future.done() else None
        took = time.monotonic() - t0
        if res is None or not res.success:
            why = f"{client.srv_name} failed: " + (
                res.message if res is not None else f"no answer in {took:.0f} s"
            )
            if why != self.call_error:
                self.get_logger().warning(why)
            else:  # a latched fault refuses enable on every retry until clear_fault
                self.get_logger().warning(why, throttle_duration_sec=5.0)
            self.call_error = why
            return False
        if took > 5.0:
            self.get_logger().info(f"{client.srv_name} took {took:.1f} s")
        return True

    def _enable_refused(self) -> None:
        """On the robot a latched fault waits for the operator's ``clear_fault``; with
        ``fault_timeout_s`` (the twin, CI) a fault nobody clears ends the node with its reason
        instead of a run that waits forever."""
        now = time.monotonic()
        if self.t_enable_refused is None:
            self.t_enable_refused = now
        limit = self.p["fault_timeout_s"]
        if limit > 0 and now - self.t_enable_refused >= limit:
            raise RuntimeError(
                f"the driver refused enable for {now - self.t_enable_refused:.0f} s "
                f"(fault_timeout_s {limit:g}); the last answer: {self.call_error}"
            )

    def _fresh_image(
        self, after_ns: int, timeout_s: float, arrived_after: float = 0.0
    ) -> tuple[int, float, np.ndarray, np.ndarray | None] | None:
        """The newest image stamped after ``after_ns`` that arrived after ``arrived_after``."""
        t_end = time.monotonic() + timeout_s
        with self.lock:
            while not self.done.is_set():
                img = self.image
                if img is not None and img[0] > after_ns and img[1] >= arrived_after:
                    return img
                left = t_end - time.monotonic()
                if left <= 0:
                    return None
                self.new_image.wait(min(left, 0.1))
        return None

    def _state_fresh(self) -> bool:
        """The driver stops publishing its pose when the controller is lost (no stale state)."""
        return time.monotonic() - self.t_last_pose <= self.p["state_timeout_s"]

    def _proprio(self) -> np.ndarray | None:
        if self.ee_pos is None or not self._state_fresh():
            return None
        return np.append(self.ee_pos, self.gripper).astype(np.float32)

    def _set_acting(self, acting: bool) -> None:
        self.acting_pub.publish(Bool(data=acting))

    def _publish(self, action: np.ndarray, stamp_ns: int) -> None:
        self.action_pub.publish(convert.array_msg(action))
        self.latency_ms.append((time.time() - stamp_ns * 1e-9) * 1000.0)
        self.tick_times.append(time.monotonic())

    def _called_since(self, stamp_ns: int) -> bool:
        """Whether the reward node has called a frame stamped after ``stamp_ns`` successful."""
        with self.lock:
            for t, _r, _progress, success in reversed(self.rewards):
                if t <= stamp_ns:
                    return False
                if success > 0.5:
                    return True
        return False

    def _rewards_upto(self, stamp_ns: int, timeout_s: float) -> bool:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end and not self.done.is_set():
            with self.lock:
                if self.rewards and self.rewards[-1][0] >= stamp_ns:
                    return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ control loop
    def _control(self) -> None:
        try:
            while not self.done.is_set():
                ok = self._episode()
                self._set_acting(False)
                if not ok:
                    self.learner.abandon()
                    time.sleep(0.5)  # inputs interrupted: wait, then start a new episode
                if 0 < self.p["max_episodes"] <= len(self.history):
                    self._finish_run()
                    break
        except Exception as e:
            self.get_logger().fatal(f"control loop failed: {e!r}")
            self.error = e
            self.phase = f"failed: {e}"
            self._diagnostics()  # the reason on /diagnostics too, before the node exits
        self.done.set()

    def _episode(self) -> bool:
        """One episode; False when inputs stopped (nothing was committed)."""
        p = self.p
        self.phase = "wait_inputs"
        with self.lock:
            image_age = time.monotonic() - self.image[1] if self.image else float("inf")
            reward_age = 0.0 if self.own_rewards else time.monotonic() - self.t_last_reward
        if image_age > p["image_timeout_s"] or reward_age > p["reward_timeout_s"]:
            self.get_logger().warning("waiting for images and rewards before the next episode",
                                   throttle_duration_sec=10.0)
            return False
        if p["interventions"] and self.takeover.last_t <= self.t_lost:
            # before enable/home: the arm stays where the watchdog stopped it, untouched
            self.get_logger().warning("the operator's device was lost: waiting for it (the "
                                      "teleop node, intervention:=true)",
                                      throttle_duration_sec=10.0)  # fmt: skip
            return False
        self.phase = "reset"
        if not self._call("enable"):
            self._enable_refused()
            return False
        self.t_enable_refused = None
        if p["use_reset_task"] and not self._call("reset_task"):
            return False
        if not self._call("home"):
            return False
        # From here the reward node scores every frame: the episode's first image (the next
        # one) is also the one its first step's potential-difference reward starts from.
        self._set_acting(True)
        t_home = time.time_ns()
        img = self._fresh_image(t_home, p["image_timeout_s"] * 4)
        proprio = self._proprio()
        if img is None or (proprio is None and self.learner.config.proprio):
            self.get_logger().warning(
                "no image or ee pose after home; retrying", throttle_duration_sec=5.0
            )
            return False
        if not self.own_rewards and not self._rewards_upto(img[0], p["reward_timeout_s"]):
            self.get_logger().warning("no reward for the first frame; retrying")
            return False
        self.success_flag = False
        self.operator_label = None
        self.takeover.reset()
        self.phase = "run"
        stamps = [img[0]]
        frames = [img[2]]
        applied, by_operator = self._choose(self.learner.begin(img[2], proprio, self._xyz(img)))
        self._publish(applied, img[0])
        note = ""
        ended_by_call = False
        t_begin = time.monotonic()
        period = 1.0 / p["control_hz"]
        t_next = time.monotonic() + period
        while len(stamps) <= p["episode_steps"]:
            # Act on the first image that arrives after each tick's deadline: the command
            # then answers a frame milliseconds old, not one up to a camera period old.
            deadline = t_next
            t_next += period
            if t_next < time.monotonic() - period:  # fell far behind: restart the schedule
                t_next = time.monotonic() + period
            img = self._fresh_image(stamps[-1], p["image_timeout_s"] + period, deadline)
            if img is None:
                self.get_logger().error("camera stalled: commands stopped, episode dropped")
                return False
            with self.lock:
                reward_lag = 0.0 if self.own_rewards else time.monotonic() - self.t_last_reward
            if reward_lag > p["reward_timeout_s"]:
                self.get_logger().error("rewards stopped: commands stopped, episode dropped")
                return False
            if not self._state_fresh():
                self.get_logger().error("driver state stopped (controller lost): commands "
                                        "stopped, episode dropped")
                return False
            t_status, streaming = self.driver_streaming
            if not streaming and t_status > t_begin + 0.6:  # a fresh report, not a stale one
                self.get_logger().error("the driver stopped the arm (watchdog or fault): "
                                        "episode dropped")
                return False
            stamps.append(img[0])
            frames.append(img[2])
            try:
                action = self.learner.step(img[2], self._proprio(),
                                           applied if by_operator else None, by_operator,
                                           xyz=self._xyz(img))  # fmt: skip
            except NonFiniteError as e:
                self.get_logger().error(f"non-finite input, episode dropped: {e}")
                return False
            if p["end_on_success"] and self.operator_label:
                self.get_logger().info(f"the operator's success key ended the episode at step "
                                       f"{len(stamps) - 1}")  # fmt: skip
                break
            if (p["end_on_success"] and p["success_source"] == "reward" and not self.own_rewards
                    and self._called_since(stamps[0])):
                # The reward node's call (SERL's classifier), seen a step or two after its frame:
                # the reward node scores asynchronously. That last step is the terminal one.
                ended_by_call = True
                break
            if len(stamps) <= p["episode_steps"]:
                applied, by_operator = self._choose(action)
                if self.takeover.lost:  # the operator's device went silent while driving
                    self.action_pub.publish(convert.array_msg(np.zeros(4, np.float32)))
                    self.t_lost = time.monotonic()
                    note = "operator device lost mid-episode: arm stopped, episode ended"
                    self.get_logger().error(f"{note} (kept: {len(stamps) - 1} steps)")
                    break
                self._publish(applied, img[0])
        self.action_pub.publish(convert.array_msg(np.zeros(4, np.float32)))  # hold still
        self._set_acting(False)  # the episode's frames came before this
        self.phase = "score"
        if self.own_rewards:
            try:
                rewards, called = self.learner.score_episode(frames)
            except (RewardError, ValueError) as e:
                self.get_logger().error(f"could not score the episode, dropped: {e}")
                return False
            progress_end = float("nan")  # the episode's rewards only, no per-frame progress
        else:
            if not self._rewards_upto(stamps[-1], p["reward_timeout_s"] * 5):
                self.get_logger().error("rewards for the episode's last frames never came")
                return False
            with self.lock:
                scored = list(self.rewards)
            frame_ns = np.array([f[0] for f in scored], np.int64)
            # reward, progress, success call per scored frame
            rw = np.array([f[1:] for f in scored], np.float64).reshape(-1, 3)
            rewards, called = step_rewards(np.asarray(stamps, np.int64), frame_ns, rw[:, 0],
                                           rw[:, 2] > 0.5, self.sum_frame_rewards)  # fmt: skip
            last = (frame_ns > stamps[0]) & (frame_ns <= stamps[-1])
            progress_end = float(rw[last][-1, 1]) if last.any() else float("nan")
        success: bool | np.ndarray
        if self.operator_label is not None:
            success = self.operator_label  # the operator's key: the last step
        elif p["success_source"] == "topic":
            success = self.success_flag  # the twin's predicate, for evaluation: the last step
        elif p["success_source"] == "operator":
            success = False  # unlabelled
        else:  # the reward model's call per step: any of the step's frames called successful
            if ended_by_call:
                called[-1] = True  # the call that ended it, on the step it ended
            success = called
        try:
            summary = self.learner.finish(rewards, success, note)
        except NonFiniteError as e:
            self.get_logger().error(f"non-finite reward, episode dropped: {e}")
            return False
        summary["progress_end"] = progress_end
        summary["operator_lost"] = bool(note)
        self.history.append(summary)
        self.last_frames = frames
        n = len(self.history)
        rate = np.mean([h["success"] for h in self.history[-20:]])
        self.get_logger().info(
            f"episode {n}: return {summary['return']:.3f} success {summary['success']} "
            f"(last 20: {rate:.0%}) steps {self.learner.state['agent_steps']} "
            f"updates {self.learner.num_updates}"
            + (f" operator {summary['intervened_steps']} steps" if p["interventions"] else "")
        )
        return True

    def _finish_run(self) -> None:
        out = Path(self.p["out"])
        hist = self.history
        summary = {
            "episodes": len(hist),
            "success_rate": float(np.mean([h["success"] for h in hist])),
            "success_rate_last_10": float(np.mean([h["success"] for h in hist[-10:]])),
            "mean_return_last_10": float(np.mean([h["return"] for h in hist[-10:]])),
            "eval_mode": self.p["eval_mode"],
            "policy": "vpdd" if self.p["policy_ckpt"] else "drqv2",
            "policy_ckpt": self.p["policy_ckpt"] or None,
            "agent_steps": self.learner.state["agent_steps"],
            "success_source": self.p["success_source"],
            # the twin's predicate (success_source topic) fed the success bonus and labels
            "oracle_in_learning": not self.p["eval_mode"] and self.p["success_source"] == "topic",
            "demos": self.learner.demo_info,
            "intervened_steps": int(sum(h.get("intervened_steps", 0) for h in hist)),
            "takeovers": self.takeover.takeovers,
            # operator steps and called successes the full demo buffer had no room for
            "demo_steps_left_out": self.learner.core.demo_steps_left_out,
            "operator_lost_episodes": int(sum(h.get("operator_lost", False) for h in hist)),
            "operator_labels": self.p["success_source"] == "operator",
        }
        name = "eval" if self.p["eval_mode"] else "train"
        (out / f"{name}_summary.json").write_text(json.dumps(summary, indent=2))
        _plot(out / f"{name}_curve.png", hist)
        if self.p["video"] and getattr(self, "last_frames", None):
            import imageio.v2 as imageio

            with imageio.get_writer(
                str(out / f"{name}_last_episode.mp4"),
                fps=self.p["control_hz"],
                macro_block_size=1,
                ffmpeg_log_level="error",
            ) as w:
                for f in self.last_frames:
                    w.append_data(f)  # type: ignore[attr-defined]
        self.get_logger().info(f"finished {len(hist)} episodes: {json.dumps(summary)}")

    def _diagnostics(self) -> None:
        lat = np.asarray(self.latency_ms)
        ticks = np.asarray(self.tick_times)
        gaps = np.diff(ticks)
        gaps = gaps[gaps < 0.5]  # within episodes: resets between them are not control ticks
        rate = 1.0 / gaps.mean() if gaps.size else 0.0
        values = {
            "phase": self.phase,
            "episodes": len(self.history),
            "agent_steps": self.learner.state["agent_steps"],
            "updates": self.learner.num_updates,
            "skipped_updates": self.learner.skipped_updates,
            "caught_up_updates": self.learner.core.caught_up_updates,
            "control_rate_hz": f"{rate:.1f}",
            "latency_p50_ms": f"{np.percentile(lat, 50):.1f}" if lat.size else "nan",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}" if lat.size else "nan",
            **{k: f"{v:.4g}" for k, v in self.learner.update_metrics.items()},
        }
        st = DiagnosticStatus(
            level=DiagnosticStatus.ERROR if self.error is not None else DiagnosticStatus.OK,
            name="learner",
            message=self.phase,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def close(self) -> None:
        self.done.set()
        self._thread.join(timeout=10)
        self.learner.close()
        if not self.p["eval_mode"]:
            self.learner.checkpoint()


def _plot(path: Path, hist: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ret = np.array([h["return"] for h in hist])
    succ = np.array([h["success"] for h in hist], float)
    k = max(1, min(10, len(hist)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    x_avg = np.arange(k, len(hist) + 1)  # a moving mean ends at the episode it includes last
    a.plot(np.arange(1, len(hist) + 1), ret, ".", alpha=0.4)
    a.plot(x_avg, np.convolve(ret, np.ones(k) / k, "valid"), "-")
    a.set(xlabel="episode", ylabel="return (learned reward)")
    b.plot(x_avg, np.convolve(succ, np.ones(k) / k, "valid"), "-")
    b.set(xlabel="episode", ylabel=f"success (moving mean of {k})", ylim=(-0.05, 1.05))
    taken = np.array([h.get("intervened_steps", 0) for h in hist], float)
    if taken.any():  # the operator's share of each episode's steps
        c = b.twinx()
        steps = np.maximum([h.get("steps", 1) for h in hist], 1)
        c.bar(np.arange(1, len(hist) + 1), taken / steps, color="tab:orange", alpha=0.3)
        c.set(ylabel="operator's share of steps", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    # One executor thread: callbacks only store the newest message, and control and updates have
    # threads of their own. With rclpy's MultiThreadedExecutor (3 threads, one callback group)
    # the spin loop kept a core at 100% re-polling ready callbacks, starving the control thread:
    # commands came 0.3-1 s apart and the driver's watchdog dropped every episode.
    return run_node(
        "learner_node", LearnerNode, argv, errors=(ValueError, FileNotFoundError), threads=1,
        until=lambda n: n.done.is_set(), cleanup=lambda n: n.close(),
        exit_code=lambda n: 1 if n.error is not None else 0,
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
