"""The safety envelope: every Cartesian command passes through here before it can move an arm.

    env = SafetyEnvelope(EnvelopeConfig())
    cmd = env.apply(p_base_tcp_now, action)     # raises InvalidCommandError on NaN / bad shape
    send(cmd.p_base_target)                     # inside the box, at most max_step_m away
    record(cmd.applied_action)                  # what was actually commanded, normalized

Pure numpy, shared by the MuJoCo twin's controller and the xArm driver, so the twin and the
robot clip identically. A command is refused (raises) when it is malformed (NaN/inf, wrong
shape, or a component beyond +-1.5: far outside the action space, an upstream bug rather than a
saturated policy); it is clamped when it is well-formed but would leave the envelope. Nothing is
ever passed through unchecked.

The guarantee is about the *measured* tool, not only the target. A position servo that tracks
a moving target overshoots it when the target stops or reverses, so targets (1) stay inside the
box shrunk by ``margin_m``, (2) decelerate towards each face within the remaining distance
(``max_accel_m_s2``), and (3) gain speed by at most ``max_accel_m_s2`` per second on each axis
(slowing down is free), which turns a full-speed reversal into a stop and a ramp and caps the
first command after an enable. How the
defaults were measured: docs/safety.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from video2reward.data.keys import ACTION_DIM

# UFACTORY's guidance for servo-cartesian (mode 1): steps under 10 mm per command.
MAX_STEP_LIMIT_M = 0.010
# Actions live in [-1, 1]. Values a little beyond are clipped (exploration noise, rounding);
# anything beyond this is refused: 1e30 in a slot is an upstream bug, not a request to saturate.
ACTION_REFUSE_ABS = 1.5


class InvalidCommandError(ValueError):
    """A command that must not reach the arm (NaN/inf, wrong shape or type)."""


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box for the tool-centre point, in the robot base frame, metres."""

    lo_m: tuple[float, float, float] = (0.20, -0.25, 0.005)
    hi_m: tuple[float, float, float] = (0.55, 0.25, 0.30)

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo_m, float), np.asarray(self.hi_m, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError("workspace lo_m and hi_m need 3 values each (x, y, z in metres)")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("workspace bounds must be finite")
        if np.any(lo >= hi):
            raise ValueError(
                f"workspace lo_m {self.lo_m} must be below hi_m {self.hi_m} on every axis"
            )

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.lo_m, dtype=float)

    @property
    def hi(self) -> np.ndarray:
        return np.asarray(self.hi_m, dtype=float)

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    def contains(self, p: np.ndarray, tol_m: float = 1e-9) -> bool:
        p = np.asarray(p, dtype=float)
        return bool(np.all(p >= self.lo - tol_m) and np.all(p <= self.hi + tol_m))

    def clip(self, p: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(p, dtype=float), self.lo, self.hi)

    def outside_m(self, p: np.ndarray) -> float:
        """How far ``p`` lies outside the box (0 inside), metres: the largest per-axis excess."""
        p = np.asarray(p, dtype=float)
        return float(max(0.0, np.max(self.lo - p), np.max(p - self.hi)))

    def shrunk(self, margin_m: float) -> WorkspaceBox:
        """The box with every face moved ``margin_m`` inwards."""
        return WorkspaceBox(
            lo_m=tuple(float(v) for v in self.lo + margin_m),  # type: ignore[arg-type]
            hi_m=tuple(float(v) for v in self.hi - margin_m),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class EnvelopeConfig:
    box: WorkspaceBox = field(default_factory=WorkspaceBox)
    max_step_m: float = 0.010  # per command; an action of 1.0 on an axis moves this far
    max_speed_m_s: float = 0.25  # caps the step further when commands come fast
    gripper_min: float = 0.0  # xArm Gripper position units (0 closed ... 850 open)
    gripper_max: float = 850.0
    # When streaming, targets chain from the previous target (so consecutive servo targets
    # differ by at most max_step_m) but never lead the measured tool by more than this.
    max_lead_m: float = 0.02
    # Targets stay this far inside every face: room for the position servo's overshoot. Sized
    # from the emulated controller's worst measured overshoot with braking on (docs/safety.md).
    margin_m: float = 0.003
    # Per-axis limit on how fast the commanded speed grows (m/s^2), and the deceleration
    # targets brake with towards a face: a reversal stops, then ramps up, and a stream starts
    # from rest. 2 m/s^2: 0 -> 0.25 m/s in 0.125 s (4 commands at 30 Hz).
    max_accel_m_s2: float = 2.0
    # The first command after an enable or stop has no previous one to time; it is taken as
    # one period of this length after rest, so its step is max_accel * start_period_s^2 at most
    # (2.2 mm at 30 Hz defaults) instead of a full 10 mm jump.
    start_period_s: float = 1.0 / 30.0

    def __post_init__(self) -> None:
        if not 0 < self.max_step_m <= MAX_STEP_LIMIT_M:
            raise ValueError(
                f"max_step_m must be in (0, {MAX_STEP_LIMIT_M}] (UFACTORY servo guidance), "
                f"got {self.max_step_m}"
            )
        if not self.max_speed_m_s > 0:
            raise ValueError(f"max_speed_m_s must be positive, got {self.max_speed_m_s}")
        if not 0 <= self.gripper_min < self.gripper_max <= 850:
            raise ValueError(f"gripper range must satisfy 0 <= min < max <= 850, got "
                             f"({self.gripper_min}, {self.gripper_max})")
        if not self.max_step_m <= self.max_lead_m <= 0.1:
            raise ValueError(f"max_lead_m must be in [max_step_m, 0.1], got {self.max_lead_m}")
        extent = float(np.min(self.box.hi - self.box.lo))
        if not 0.0 <= self.margin_m < extent / 2:
            raise ValueError(
                f"margin_m must be in [0, {extent / 2:.4f}) (half the box's smallest side), "
                f"got {self.margin_m}"
            )
        if not 0.1 <= self.max_accel_m_s2 <= 50.0:
            raise ValueError(f"max_accel_m_s2 must be in [0.1, 50], got {self.max_accel_m_s2}")
        if not 0.001 <= self.start_period_s <= 1.0:
            raise ValueError(f"start_period_s must be in [0.001, 1] s, got {self.start_period_s}")

    @property
    def target_box(self) -> WorkspaceBox:
        """Where targets may go: the workspace box less the margin on every face."""
        return self.box.shrunk(self.margin_m)


@dataclass(frozen=True)
class SafeCommand:
    p_base_target: np.ndarray  # (3,) m, inside the box
    gripper_target: float  # xArm Gripper units, inside the gripper range
    applied_action: np.ndarray  # (4,) float32 in [-1, 1]: the motion actually commanded
    clamped: bool  # True when the box, the step or the speed limit cut the request
    # (3,) m/s, the commanded target velocity (step / dt); pass it back as v_last_m_s
    velocity_m_s: np.ndarray = field(default_factory=lambda: np.zeros(3))


def validate_action(action: object) -> np.ndarray:
    """Refuse anything that is not ACTION_DIM finite numbers within +-ACTION_REFUSE_ABS; clip
    the rest to [-1, 1]."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidCommandError(f"action is not numeric: {e}") from e
    if a.shape != (ACTION_DIM,):
        raise InvalidCommandError(f"action must have shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidCommandError(f"action contains NaN or inf: {a.tolist()}")
    if np.any(np.abs(a) > ACTION_REFUSE_ABS):
        raise InvalidCommandError(
            f"action {a.tolist()} has a component beyond +-{ACTION_REFUSE_ABS}: actions are "
            "normalized to [-1, 1]; this looks like an upstream bug, not a saturated command"
        )
    return np.clip(a, -1.0, 1.0)


class SafetyEnvelope:
    def __init__(self, config: EnvelopeConfig | None = None):
        self.config = config or EnvelopeConfig()

    def gripper_from_action(self, g: float) -> float:
        """-1 fully open ... +1 fully closed, mapped onto the allowed gripper range."""
        c = self.config
        frac_open = (1.0 - float(np.clip(g, -1, 1))) / 2.0
        return c.gripper_min + frac_open * (c.gripper_max - c.gripper_min)

    def apply(
        self,
        p_base_tcp_now: np.ndarray,
        action: object,
        dt_s: float | None = None,
        p_last_target: np.ndarray | None = None,
        v_last_m_s: np.ndarray | None = None,
    ) -> SafeCommand:
        """Turn a normalized action into a target inside the envelope (raises if malformed).

        ``p_base_tcp_now`` is the measured tool position. While streaming, pass the previous
        target as ``p_last_target``: the step is then taken from it, so consecutive targets
        never differ by more than ``max_step_m`` (UFACTORY's servo guidance), and the target
        is pulled back to within ``max_lead_m`` of the measured tool (a blocked arm does not
        accumulate a far-away target). Without it the step is taken from the measured tool.

        ``dt_s`` (time since the previous command, or ``start_period_s`` for the first one)
        turns on the rate limits: the speed cap, braking towards the faces, and with
        ``v_last_m_s`` (the previous command's ``velocity_m_s``; zeros after a stop) the
        per-axis acceleration limit that bounds reversals.
        """
        a = validate_action(action)
        p_now = self._finite3(p_base_tcp_now, "current tool position")
        ref = p_now if p_last_target is None else self._finite3(p_last_target, "last target")
        c = self.config
        inner = c.target_box
        step = c.max_step_m
        timed = dt_s is not None and dt_s > 0
        if timed:
            step = min(step, c.max_speed_m_s * float(dt_s))  # type: ignore[arg-type]
        delta = a[:3] * c.max_step_m
        delta = self._cap_norm(delta, step)
        if timed:
            dt = float(dt_s)  # type: ignore[arg-type]
            acc = c.max_accel_m_s2
            if v_last_m_s is not None:
                # Start and reversal limit: speed grows by at most acc*dt per axis, so a stream
                # starts from rest and a reversal goes through a stop and ramps up again.
                # Slowing down is never limited: a stop request stops the target at once.
                v0 = self._finite3(v_last_m_s, "last velocity")
                v_min = np.minimum(0.0, v0 - acc * dt)
                v_max = np.maximum(0.0, v0 + acc * dt)
                delta = np.clip(delta, v_min * dt, v_max * dt)
            # Braking: moving at v for dt and then decelerating at acc must stop before the
            # face, v*dt + v^2/(2 acc) <= d, so v <= acc*(sqrt(dt^2 + 2d/acc) - dt). Applied
            # after the acceleration limit: the box wins over smoothness.
            d_hi = np.maximum(inner.hi - ref, 0.0)
            d_lo = np.maximum(ref - inner.lo, 0.0)
            v_hi = acc * (np.sqrt(dt * dt + 2.0 * d_hi / acc) - dt)
            v_lo = acc * (np.sqrt(dt * dt + 2.0 * d_lo / acc) - dt)
            delta = np.clip(delta, -v_lo * dt, v_hi * dt)
            delta = self._cap_norm(delta, step)
        # The box is applied to the *current* position too: a tool outside (after a manual jog)
        # is only ever commanded back towards the box.
        target = inner.clip(ref + delta)
        if p_last_target is not None:
            lead = target - p_now
            lead_norm = float(np.linalg.norm(lead))
            if lead_norm > c.max_lead_m:
                target = inner.clip(p_now + lead * (c.max_lead_m / lead_norm))
        # Box clip and lead projection both keep a point of the box and ball where it is, so
        # they never lengthen the step; re-entry from outside the box is capped here.
        moved = self._cap_norm(target - ref, step)
        target = ref + moved
        applied = np.empty(ACTION_DIM, dtype=np.float32)
        applied[:3] = moved / c.max_step_m
        applied[3] = a[3]
        # Compared with the full-step request, so a speed cut also counts as clamped.
        requested = a[:3] * c.max_step_m
        clamped = bool(np.any(np.abs(moved - requested) > 1e-9))
        velocity = moved / float(dt_s) if timed else np.zeros(3)  # type: ignore[arg-type]
        return SafeCommand(target, self.gripper_from_action(a[3]), applied, clamped, velocity)

    @staticmethod
    def _cap_norm(v: np.ndarray, limit: float) -> np.ndarray:
        n = float(np.linalg.norm(v))
        return v * (limit / n) if n > limit else v

    @staticmethod
    def _finite3(p: np.ndarray, what: str) -> np.ndarray:
        q = np.asarray(p, dtype=float)
        if q.shape != (3,) or not np.all(np.isfinite(q)):
            raise InvalidCommandError(f"{what} is not 3 finite numbers: {q}")
        return q


# --------------------------------------------------------------------------- stateful guards
# The envelope above is a pure function of (position, action). The two pieces below carry
# state across commands; both read an injected monotonic clock so tests can drive time.


class LatchedFaultError(RuntimeError):
    """The driver is in a latched fault; nothing moves until ``reset`` is called explicitly."""


@dataclass(frozen=True)
class WatchdogConfig:
    # Longest gap between two commands before the arm is stopped. 0.25 s is ~8 periods at 30 Hz:
    # long enough for a slow policy step, short enough that a dead process cannot drive a
    # servo target far (the envelope caps each target at one step from the measured pose).
    deadline_s: float = 0.25

    def __post_init__(self) -> None:
        if not 0.01 <= self.deadline_s <= 5.0:
            raise ValueError(f"deadline_s must be in [0.01, 5] s, got {self.deadline_s}")


class CommandWatchdog:
    """A deadline on the command stream, on monotonic time.

        dog = CommandWatchdog(WatchdogConfig(deadline_s=0.2))
        dog.kick()             # on every command sent
        if dog.expired():      # polled by the driver's monitor thread
            arm.stop()
            dog.disarm()

    Disarmed until the first ``kick`` (an idle arm that was never commanded is not an error).
    """

    def __init__(
        self, config: WatchdogConfig | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.config = config or WatchdogConfig()
        self._clock = clock
        self._t_last: float | None = None

    @property
    def armed(self) -> bool:
        return self._t_last is not None

    def kick(self) -> None:
        self._t_last = self._clock()

    def disarm(self) -> None:
        self._t_last = None

    def since_last_s(self) -> float | None:
        return None if self._t_last is None else self._clock() - self._t_last

    def expired(self) -> bool:
        gap = self.since_last_s()
        return gap is not None and gap > self.config.deadline_s


class FaultLatch:
    """Remembers the first fault (controller error, collision, watchdog) until an explicit reset.

        latch.trip("controller error 31: collision")
        latch.check()          # raises LatchedFaultError while tripped
        latch.reset()          # only after the cause was cleared on the controller

    Later trips do not overwrite the first reason: the first fault is the one to diagnose.
    """

    def __init__(self) -> None:
        self._reason: str | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    def trip(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    def reset(self) -> None:
        with self._lock:
            self._reason = None

    def check(self) -> None:
        if self._reason is not None:
            raise LatchedFaultError(
                f"latched fault: {self._reason}; call reset() after clearing it"
            )

