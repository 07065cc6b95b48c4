"""Teleop: what every source shares -- config, command, state, the source interface.

    with make_source(TeleopConfig(source="keyboard")) as src:   # robot/teleop_sources.py
        while running:
            cmd = src.poll()               # TeleopCommand, call at config.rate_hz
            if cmd.enabled:
                arm.send_action(cmd.action)  # the same normalized action a policy sends
            for event in cmd.events:         # "start", "success", "failure", "discard", ...
                ...

Every source produces the action the learner produces (``keys.ACTION_DIM`` values in [-1, 1]:
a Cartesian step as a fraction of the envelope's ``max_step_m``, and the gripper, -1 open ...
+1 closed), so the driver's safety envelope applies unchanged. ``speed`` scales the motion
(``+``/``-`` keys, D-pad); the gripper is a toggle.

Dead-man / enable: a source sends nothing while disabled, and the arm driver's watchdog stops
the arm when commands stop. Gamepad: motion only while the left shoulder button (LB) is held.
Keyboard and SpaceMouse: ``e`` (SpaceMouse: right button) enables, ``space`` disables at once.

The sources, one concern a module: ``teleop_keyboard`` (a terminal's keys), ``teleop_evdev``
(gamepad and SpaceMouse through Linux evdev), ``teleop_sources`` (a device plus the terminal's
keys, and ``make_source``), ``teleop_twist`` (``geometry_msgs/Twist`` input, for the node).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
from video2reward.data import keys

SOURCES = ("keyboard", "gamepad", "spacemouse")
EVENTS = ("start", "success", "failure", "discard", "quit", "enable", "disable", "home", "help")


class TeleopDeviceError(RuntimeError):
    """The teleop device (terminal, gamepad, SpaceMouse) or its library is not available."""


@dataclass(frozen=True)
class TeleopConfig:
    source: str = "keyboard"  # keyboard | gamepad | spacemouse
    rate_hz: float = 30.0  # poll/command rate; the driver streams at this rate
    speed: float = 0.5  # initial speed scale: an action of `speed` per held axis, in (0, 1]
    speed_step: float = 0.1  # change per +/- press
    hold_first_s: float = 0.3  # keyboard: a press counts as held this long (autorepeat delay)
    hold_repeat_s: float = 0.1  # keyboard: ...and this long after each auto-repeat
    deadzone: float = 0.12  # gamepad / SpaceMouse: axis fraction ignored around zero
    device: str = ""  # gamepad / SpaceMouse: /dev/input/eventN ('' = first one found)
    spacemouse_full_scale: float = 350.0  # SpaceMouse raw reading that means full speed
    # SpaceMouse axes to robot x, y, z: sign per axis of (-pull/push, right, up) as mounted.
    spacemouse_signs: tuple[float, float, float] = (-1.0, -1.0, -1.0)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not 1.0 <= self.rate_hz <= 100.0:
            raise ValueError(f"rate_hz must be in [1, 100], got {self.rate_hz}")
        if not 0.0 < self.speed <= 1.0 or not 0.0 < self.speed_step <= 0.5:
            raise ValueError("speed must be in (0, 1] and speed_step in (0, 0.5]")
        if not 0.0 < self.hold_repeat_s <= self.hold_first_s <= 2.0:
            raise ValueError("need 0 < hold_repeat_s <= hold_first_s <= 2 s")
        if not 0.0 <= self.deadzone < 0.9:
            raise ValueError(f"deadzone must be in [0, 0.9), got {self.deadzone}")
        if self.spacemouse_full_scale <= 0 or len(self.spacemouse_signs) != 3:
            raise ValueError("spacemouse_full_scale must be > 0 and spacemouse_signs 3 values")


@dataclass(frozen=True)
class TeleopCommand:
    action: np.ndarray  # (ACTION_DIM,) float32 in [-1, 1]; zeros when disabled
    enabled: bool  # False: send nothing (the driver's watchdog holds/stops the arm)
    speed: float
    events: tuple[str, ...] = ()  # from EVENTS, in the order they happened


@dataclass
class TeleopState:
    """What every source shares: enable, speed, gripper toggle and the pending events."""

    config: TeleopConfig
    enabled: bool = False
    speed: float = 0.5
    gripper_closed: bool = False
    events: list[str] = field(default_factory=list)

    def handle(self, event: str) -> None:
        if event == "enable":
            self.enabled = True
        elif event == "disable":
            self.enabled = False
        elif event == "toggle_enable":
            self.enabled = not self.enabled
            event = "enable" if self.enabled else "disable"
        elif event == "gripper":
            self.gripper_closed = not self.gripper_closed
            return
        elif event in ("faster", "slower"):
            d = self.config.speed_step if event == "faster" else -self.config.speed_step
            self.speed = float(np.clip(round(self.speed + d, 6), self.config.speed_step, 1.0))
            return
        if event == "quit":
            self.enabled = False
        self.events.append(event)

    def command(self, axes: np.ndarray, gate: bool = True) -> TeleopCommand:
        """``axes``: (3,) in [-1, 1]; ``gate``: a held dead-man button (gamepad)."""
        live = self.enabled and gate
        a = np.zeros(keys.ACTION_DIM, np.float32)
        if live:
            a[:3] = np.clip(np.asarray(axes, float) * self.speed, -1.0, 1.0)
        a[3] = 1.0 if self.gripper_closed else -1.0
        events, self.events = tuple(self.events), []
        return TeleopCommand(a, live, self.speed, events)


def apply_deadzone(v: np.ndarray, deadzone: float) -> np.ndarray:
    """Zero inside the deadzone, rescaled so the output still spans [-1, 1] outside it."""
    v = np.clip(np.asarray(v, float), -1.0, 1.0)
    out = (np.abs(v) - deadzone) / (1.0 - deadzone)
    return np.where(np.abs(v) <= deadzone, 0.0, np.sign(v) * out)


class TeleopSource(abc.ABC):
    """A device that yields teleop commands; a context manager that releases the device."""

    def __init__(self, config: TeleopConfig):
        self.config = config

    @abc.abstractmethod
    def poll(self) -> TeleopCommand:
        """Read what arrived since the last call; never blocks."""

    def open(self) -> None:  # noqa: B027 (optional hook: a scripted source has no device)
        """Acquire the device (raises TeleopDeviceError when it is missing)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the device."""

    def __enter__(self) -> TeleopSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def speed_label(speed: float, max_step_m: float, rate_hz: float) -> str:
    """The tool speed a full deflection means, for the status line."""
    return f"speed {speed:.1f} (~{speed * max_step_m * rate_hz * 1000:.0f} mm/s)"
