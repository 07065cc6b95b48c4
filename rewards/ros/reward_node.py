"""ROS 2 reward node: scores camera images with a learned reward model.

    reward_node --ros-args -p ckpt:=runs/r2r -r image:=/camera/color/image_raw

Subscribes ``image`` (sensor_msgs/Image in rgb8/bgr8/rgba8/bgra8/mono8, or CompressedImage
with ``image_transport:=compressed``: ros/image_topic.py). Publishes ``~/reward``
(geometry_msgs/Vector3Stamped, one per image, carrying that image's stamp: x = reward for
arriving at this frame from the previous one, y = progress (~0 start ... ~1 done),
z = 1.0 when the model calls the frame a success) and ``/diagnostics`` (latency, rate,
discriminator loss/accuracy, model version) once a second. Runs on CUDA when available.

``acting`` (std_msgs/Bool, latched; the learner's ``~/acting``) says whether a policy is
acting. While it is false (the learner pretraining before the arm moves, resets between
episodes) the node scores ``idle_hz`` frames a second, enough for the learner to see rewards
flowing, and Rank2Reward's discriminator learns from none of them: an idle arm is not the
agent. Before any message on it every frame is scored and is an agent frame.

Images are queued by the subscription callback and scored in order by a worker thread, in
batches when they pile up; Rank2Reward's discriminator trains in a thread of its own
(``rewards.stream``), so neither scoring nor the executor waits on a training step.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Vector3Stamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool
from video2reward.rewards.base import RewardError
from video2reward.rewards.stream import RewardStream, RewardStreamConfig
from video2reward.ros.convert import LATCHED, ns_from_stamp, reward_msg
from video2reward.ros.image_topic import IMAGE_TRANSPORT, ImageMsg, subscribe_image
from video2reward.ros.node_main import run_node
from video2reward.ros.params import (
    ParamSpec,
    config_values,
    declare_all,
    field_param,
    float_range,
    int_range,
)

S = RewardStreamConfig
# Fields of RewardStreamConfig take their defaults from it; max_batch and queue_size are the
# node's own.
PARAMS: tuple[ParamSpec, ...] = (
    field_param(S, "ckpt", "trained reward model: run folder or .pt (required)"),
    field_param(S, "goal_image", "goal image file for goal-conditioned methods ('' = the demos' "
                "goals; one unlike every demo goal is refused)"),
    field_param(S, "device", "auto (CUDA when available) | cpu | cuda | cuda:N"),
    field_param(S, "bf16", "CUDA only: bf16 autocast of ResNet encoders when scoring"),
    # None (the checkpoint's threshold) cannot be a ROS value: 0.0 stands for it
    field_param(S, "success_progress", "progress at which a frame counts as success (0: the "
                "checkpoint's, from its demos)", float_range(0.0, 2.0), none_as=0.0),
    field_param(S, "online_updates", "Rank2Reward: train the discriminator on agent frames"),
    field_param(S, "disc_every_frames", "scored frames between discriminator bursts",
                int_range(1, 10_000_000)),
    field_param(S, "disc_steps", "discriminator steps per burst", int_range(1, 10_000)),
    field_param(S, "disc_batch", "agent frames per discriminator step", int_range(2, 4096)),
    field_param(S, "disc_min_frames", "agent frames before the first step",
                int_range(2, 1_000_000)),
    field_param(S, "torch_threads", "torch intra-op threads (nodes share the CPU)",
                int_range(1, 64)),
    IMAGE_TRANSPORT,
    ("max_batch", 16, "most frames scored in one call", int_range(1, 256), True),
    ("queue_size", 64, "images held while scoring lags (oldest dropped)", int_range(1, 4096), True),
    # Every 30 Hz frame of an idle arm cost this node 75% of a core of a 2-core machine while
    # the learner pretrained (twin reach's Rank2Reward: 20 ms a frame to score, 0.86 s a
    # discriminator step of 64 frames, one thread); at 2 Hz idle it used 8%.
    ("idle_hz", 2.0, "frames scored a second while the learner says no policy acts (acting "
     "false); the learner waits for a reward younger than its reward_timeout_s (1 s)",
     float_range(0.1, 1000.0), True),
)


class RewardNode(Node):
    def __init__(self) -> None:
        super().__init__("reward")
        p = declare_all(self, PARAMS)
        self.stream = RewardStream(RewardStreamConfig(**config_values(S, PARAMS, p)))
        self.get_logger().info(f"success called at progress >= {self.stream.success_progress:.3f}")
        self.max_batch = int(p["max_batch"])
        # (stamp, image, whether a policy was acting when it came)
        self._queue: deque[tuple[int, np.ndarray, bool]] = deque(maxlen=int(p["queue_size"]))
        self.idle_period_s = 1.0 / float(p["idle_hz"])
        self.acting: bool | None = None  # None: no learner has said; every frame is the agent's
        self._t_idle_frame = -float("inf")
        self._ready = threading.Condition()
        self._stop = False
        self.n_scored = 0
        self.n_dropped = 0
        self._t_last_diag = time.monotonic()
        self._n_at_last_diag = 0
        self.pub = self.create_publisher(Vector3Stamped, "~/reward", 50)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        subscribe_image(self, p["image_transport"], self._on_image, qos)
        self.create_subscription(Bool, "acting", self._on_acting, LATCHED)
        self.create_timer(1.0, self._diagnostics)
        self._worker = threading.Thread(target=self._work, daemon=True, name="scorer")
        self._worker.start()
        self.get_logger().info(
            f"scoring with {self.stream.method} from {p['ckpt']} "
            f"(online discriminator: {self.stream.online})"
        )

    def _on_acting(self, msg: Bool) -> None:
        self.acting = bool(msg.data)

    def _on_image(self, rgb: np.ndarray, msg: ImageMsg) -> None:
        agent = self.acting is not False
        if not agent:
            now = time.monotonic()
            if now - self._t_idle_frame < self.idle_period_s:
                return
            self._t_idle_frame = now
        rgb = rgb.copy()  # a view of the message when it was rgb8
        stamp_ns = ns_from_stamp(msg.header.stamp)
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.n_dropped += 1
            self._queue.append((stamp_ns, rgb, agent))
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stop:
                    self._ready.wait(0.5)
                if self._stop:
                    return
                # one batch: frames of one size, all the agent's or all idle
                first = self._queue[0]
                batch: list[tuple[int, np.ndarray, bool]] = []
                while (self._queue and len(batch) < self.max_batch
                       and self._queue[0][2] == first[2]
                       and self._queue[0][1].shape == first[1].shape):
                    batch.append(self._queue.popleft())
            try:
                scored = self.stream.score([(t, f) for t, f, _ in batch], agent=first[2])
            except RewardError as e:
                self.get_logger().error(f"cannot score: {e}", throttle_duration_sec=5.0)
                continue
            for s in scored:
                msg = reward_msg(s.stamp_ns, self.stream.method, s.reward, s.progress, s.success)
                try:
                    self.pub.publish(msg)
                except Exception:
                    if not rclpy.ok():  # shutting down: the publisher's context is gone
                        return
                    raise
            self.n_scored += len(scored)

    def _diagnostics(self) -> None:
        now = time.monotonic()
        rate = (self.n_scored - self._n_at_last_diag) / max(now - self._t_last_diag, 1e-6)
        self._t_last_diag, self._n_at_last_diag = now, self.n_scored
        lat = np.asarray(self.stream.score_latency_s) * 1000
        values: dict[str, Any] = {
            "method": self.stream.method,
            "model_version": self.stream.version,
            "rate_hz": f"{rate:.1f}",
            "frames_scored": self.n_scored,
            "frames_dropped": self.n_dropped,
            "acting": {None: "unknown", True: "yes", False: "no"}[self.acting],
            "agent_frames": self.stream.agent_frames,
            "score_latency_p50_ms": f"{np.percentile(lat, 50):.2f}" if lat.size else "nan",
            "score_latency_p95_ms": f"{np.percentile(lat, 95):.2f}" if lat.size else "nan",
            **{k: f"{v:.4f}" for k, v in self.stream.disc_metrics.items()},
        }
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name="reward",
            message="scoring",
            hardware_id=self.stream.method,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        if hasattr(self, "_worker"):  # also called on a node whose __init__ failed
            with self._ready:
                self._stop = True
                self._ready.notify()
            self._worker.join(timeout=5)
            self.stream.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    # bad parameters or checkpoint: say which and exit 2
    return run_node("reward_node", RewardNode, argv, errors=(ValueError, RewardError))

if __name__ == "__main__":
    sys.exit(main())
