"""Teleop sources: keyboard in a terminal, gamepad, SpaceMouse -> normalized [dx, dy, dz, grip].

    with make_source(TeleopConfig(source="keyboard")) as src:   # raw tty; works over SSH
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
Keyboard and SpaceMouse: ``e`` (SpaceMouse: right button) enables, ``space`` disables at once;
a terminal reports no key releases, so a motion key counts as held for ``hold_first_s`` after
a press and ``hold_repeat_s`` after each auto-repeat: letting go stops within ~0.1 s.

Keyboard: w/s = +x/-x (away from / towards the base), a/d = +y/-y, r/f = +z/-z (arrows: x/y,
PgUp/PgDn: z), g = gripper, +/- = speed, Enter = start an episode, y = stop as success,
n = stop as failure (y/n after stopping relabel the last episode), x = discard, o = home
(the twin: a new scene), q = quit.
Gamepad: left stick x/y, right stick z, A gripper, Start = start, Y = success, X = failure,
B = discard, Back = quit. SpaceMouse: translation drives x/y/z, left button = gripper,
right button = enable/disable.

Gamepad and SpaceMouse read Linux input devices through ``evdev`` (``pip install
'video2reward[teleop]'``); a missing library or device raises ``TeleopDeviceError`` naming it.
``geometry_msgs/Twist`` input (teleop_twist_keyboard, teleop_twist_joy) goes through
:func:`action_from_twist` in ``robot/ros/teleop_node.py``.
"""

from __future__ import annotations

import abc
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

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


# ---------------------------------------------------------------------------- keyboard
# Motion keys -> (axis, sign). x points away from the base, y to the left, z up.
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "up": (0, 1.0), "down": (0, -1.0), "left": (1, 1.0), "right": (1, -1.0),
    "pgup": (2, 1.0), "pgdn": (2, -1.0),
}  # fmt: skip
ACTION_KEYS: dict[str, str] = {
    "e": "toggle_enable", " ": "disable", "g": "gripper", "+": "faster", "=": "faster",
    "-": "slower", "enter": "start", "y": "success", "n": "failure", "x": "discard",
    "backspace": "discard", "o": "home", "q": "quit", "esc": "quit", "h": "help", "?": "help",
}  # fmt: skip
_ESCAPES = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
            b"\x1b[5~": "pgup", b"\x1b[6~": "pgdn", b"\x1bOA": "up", b"\x1bOB": "down",
            b"\x1bOC": "right", b"\x1bOD": "left"}  # fmt: skip
KEY_HELP = (
    "keys: e enable | space STOP | w/s a/d r/f (arrows, PgUp/PgDn) move | g gripper | "
    "+/- speed | o home | Enter start | y success | n failure | x discard | q quit"
)

DEVICE_HELP = {
    "gamepad": "gamepad: hold LB to move | left stick x/y, right stick z | A gripper | D-pad "
    "speed | Start start | Y success | X failure | B discard | Back quit",
    "spacemouse": "SpaceMouse: right button enable/disable | move the cap | left button gripper",
}
TERMINAL_HELP = "keys: Enter start | y success | n failure | x discard | space STOP | e enable"


def help_text(source: str) -> str:
    """What the operator can press, for the status line and the node's log."""
    return KEY_HELP if source == "keyboard" else f"{DEVICE_HELP[source]} || {TERMINAL_HELP}"


def decode_keys(data: bytes) -> list[str]:
    """Terminal bytes -> key names (letters lower-cased; arrows and PgUp/PgDn by name)."""
    out: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == 0x1B:
            for seq, name in _ESCAPES.items():
                if data.startswith(seq, i):
                    out.append(name)
                    i += len(seq)
                    break
            else:
                out.append("esc")  # a lone Esc, or a sequence we do not use
                i += 1
                while i < len(data) and data[i - 1] != ord("~") and 0x20 <= data[i] < 0x40:
                    i += 1
            continue
        c = data[i]
        i += 1
        if c in (0x0D, 0x0A):
            out.append("enter")
        elif c in (0x7F, 0x08):
            out.append("backspace")
        elif c == 0x03:
            out.append("quit")  # Ctrl-C arrives as a byte only if ISIG is off
        elif 0x20 <= c < 0x7F:
            out.append(chr(c).lower())
    return out


class KeyboardMapper:
    """Key presses with their times -> commands. Pure logic; the terminal is separate."""

    def __init__(self, config: TeleopConfig):
        self.config = config
        self.state = TeleopState(config, speed=config.speed)
        self._held: dict[str, tuple[float, float]] = {}  # key -> (last press, hold until)

    def feed(self, key: str, t_mono: float) -> None:
        if key in MOTION_KEYS:
            if not self.state.enabled:
                return  # a key pressed while disabled must not move the arm once enabled
            last = self._held.get(key)
            repeating = last is not None and t_mono <= last[1]
            hold = self.config.hold_repeat_s if repeating else self.config.hold_first_s
            self._held[key] = (t_mono, t_mono + hold)
        elif key in ACTION_KEYS:
            event = ACTION_KEYS[key]
            if event in ("disable", "quit"):
                self._held.clear()
            self.state.handle(event)

    def poll(self, t_mono: float) -> TeleopCommand:
        axes = np.zeros(3)
        for key, (_, until) in list(self._held.items()):
            if t_mono > until:
                del self._held[key]
                continue
            axis, sign = MOTION_KEYS[key]
            axes[axis] += sign
        return self.state.command(np.clip(axes, -1.0, 1.0))


class TerminalKeys:
    """A terminal in cbreak mode: keys arrive unbuffered and unechoed, over SSH too.

    cbreak rather than full raw mode keeps ISIG, so Ctrl-C still interrupts the process (and
    its ``finally`` stops the arm). The terminal's settings are restored on exit.
    """

    def __init__(self, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> TerminalKeys:
        if not os.isatty(self.fd):
            raise TeleopDeviceError(
                "keyboard teleop needs a terminal, but its input is not a tty; run it in a "
                "terminal (over SSH: ssh -t), or use source=gamepad / spacemouse / a Twist topic"
            )
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def read(self, timeout_s: float = 0.0) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        data = os.read(self.fd, 1024)
        if not data:
            raise EOFError("terminal closed")
        return data

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


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


class KeyboardTeleop(TeleopSource):
    """Keys from a terminal (or any ``read(timeout_s) -> bytes`` source, e.g. a script)."""

    def __init__(
        self,
        config: TeleopConfig,
        reader: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(config)
        self.mapper = KeyboardMapper(config)
        self._reader = reader
        self._terminal: TerminalKeys | None = None
        self._clock = clock

    def open(self) -> None:
        if self._reader is None:
            self._terminal = TerminalKeys().__enter__()
            self._reader = self._terminal

    def close(self) -> None:
        if self._terminal is not None:
            self._terminal.__exit__(None, None, None)
            self._terminal = None
            self._reader = None

    def poll(self) -> TeleopCommand:
        if self._reader is None:
            raise TeleopDeviceError("keyboard source is not open; use it as a context manager")
        now = self._clock()
        try:
            data = self._reader.read(0.0)
        except EOFError:
            data = b"q"  # the terminal went away: quit, which disables motion
        for key in decode_keys(data):
            self.mapper.feed(key, now)
        return self.mapper.poll(now)


class ScriptedKeys:
    """A key reader that replays ``(t_s, keys)`` from a script against a clock (tests, demos).

    ``keys`` is a terminal byte string, e.g. ``b"e"`` or ``b"\\x1b[A"``.
    """

    def __init__(self, script: Iterable[tuple[float, bytes]], clock: Callable[[], float]):
        self._script = sorted(script, key=lambda s: s[0])
        self._clock = clock
        self._i = 0
        self._t0: float | None = None

    def read(self, timeout_s: float = 0.0) -> bytes:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        out = b""
        while self._i < len(self._script) and self._script[self._i][0] <= now - self._t0 + 1e-9:
            out += self._script[self._i][1]
            self._i += 1
        return out

    @property
    def done(self) -> bool:
        return self._i >= len(self._script)


def hold_key(
    key: bytes, t0_s: float, duration_s: float, repeat_hz: float = 30.0
) -> list[tuple[float, bytes]]:
    """A held key as a terminal sends it: one press, then auto-repeats at ``repeat_hz``."""
    n = max(1, int(duration_s * repeat_hz))
    return [(t0_s + i / repeat_hz, key) for i in range(n)]


# ---------------------------------------------------------------------------- evdev devices
def _evdev() -> Any:
    try:
        import evdev
    except ImportError as e:
        raise TeleopDeviceError(
            "gamepad and SpaceMouse teleop need the evdev library: "
            "pip install 'video2reward[teleop]' (Linux only)"
        ) from e
    return evdev


class InputCodes:
    """The Linux input event codes the mappers read (``linux/input-event-codes.h``, stable
    kernel ABI; evdev's ``ecodes`` has the same values). Kept here so the mapping logic runs
    and is tested without evdev or a device."""

    EV_KEY, EV_REL, EV_ABS = 1, 2, 3
    ABS_X, ABS_Y, ABS_Z, ABS_RX, ABS_RY, ABS_RZ, ABS_HAT0Y = 0, 1, 2, 3, 4, 5, 17
    REL_X, REL_Y, REL_Z = 0, 1, 2
    BTN_0, BTN_1, BTN_TRIGGER = 256, 257, 288
    BTN_SOUTH, BTN_EAST, BTN_NORTH, BTN_WEST = 304, 305, 307, 308  # A, B, X, Y on an Xbox pad
    BTN_GAMEPAD = BTN_SOUTH
    BTN_TL, BTN_SELECT, BTN_START = 310, 314, 315


SPACEMOUSE_VENDORS = (0x046D, 0x256F)  # Logitech-era and current 3Dconnexion USB vendor ids


def find_input_device(kind: str, path: str = "") -> Any:
    """The first readable gamepad or SpaceMouse (or the one at ``path``) as an InputDevice."""
    evdev = _evdev()
    e = InputCodes
    paths = [path] if path else list(evdev.list_devices())
    seen = []
    for p in paths:
        try:
            dev = evdev.InputDevice(p)
        except OSError as err:
            seen.append(f"{p}: {err.strerror}")
            continue
        caps = dev.capabilities()
        abs_codes = {c[0] if isinstance(c, tuple) else c for c in caps.get(e.EV_ABS, [])}
        rel_codes = set(caps.get(e.EV_REL, []))
        btns = set(caps.get(e.EV_KEY, []))
        name = (dev.name or "").lower()
        # 0x046D is Logitech, which also makes gamepads: require the name there.
        is_spacemouse = (
            dev.info.vendor in SPACEMOUSE_VENDORS
            and (
                {e.REL_X, e.REL_Y, e.REL_Z} <= rel_codes or {e.ABS_X, e.ABS_Y, e.ABS_Z} <= abs_codes
            )
            and (dev.info.vendor == 0x256F or "3dconnexion" in name or "space" in name)
        )
        is_gamepad = {e.ABS_X, e.ABS_Y} <= abs_codes and bool(
            btns & {e.BTN_SOUTH, e.BTN_GAMEPAD, e.BTN_TRIGGER}
        )
        if (kind == "spacemouse" and is_spacemouse) or (
            kind == "gamepad" and is_gamepad and not is_spacemouse
        ):
            return dev
        seen.append(f"{p}: {dev.name}")
        dev.close()
    where = "; ".join(seen) if seen else "no /dev/input/event* devices are readable"
    raise TeleopDeviceError(
        f"no {kind} found ({where}). Plug one in, make /dev/input/event* readable (add yourself "
        f"to the 'input' group), pass device=/dev/input/eventN, or use source=keyboard"
    )


class GamepadMapper:
    """evdev events of an Xbox-style pad -> commands (LB is the dead-man)."""

    def __init__(
        self, config: TeleopConfig, ranges: dict[int, tuple[int, int]], ecodes: Any = InputCodes
    ):
        self.config = config
        self.state = TeleopState(config, speed=config.speed)
        self.state.enabled = True  # the dead-man button gates motion on a pad
        self.e = ecodes
        self.ranges = ranges
        self.axes: dict[int, float] = {}
        self.deadman = False
        e = ecodes
        self.buttons = {
            e.BTN_SOUTH: "gripper", e.BTN_START: "start", e.BTN_NORTH: "success",
            e.BTN_WEST: "failure", e.BTN_EAST: "discard", e.BTN_SELECT: "quit",
        }  # fmt: skip

    def feed(self, etype: int, code: int, value: int) -> None:
        e = self.e
        if etype == e.EV_ABS:
            lo, hi = self.ranges.get(code, (-32768, 32767))
            if code == e.ABS_HAT0Y and value != 0:
                self.state.handle("faster" if value < 0 else "slower")
            else:
                self.axes[code] = (2.0 * (value - lo) / max(hi - lo, 1)) - 1.0
        elif etype == e.EV_KEY:
            if code == e.BTN_TL:
                was = self.deadman
                self.deadman = value != 0
                if self.deadman and not was:
                    self.state.events.append("enable")
                elif was and not self.deadman:
                    self.state.events.append("disable")
            elif value == 1 and code in self.buttons:
                self.state.handle(self.buttons[code])

    def poll(self) -> TeleopCommand:
        e, a = self.e, self.axes
        # Stick up reads negative: forward on the left stick is +x, left is +y.
        raw = np.array([-a.get(e.ABS_Y, 0.0), -a.get(e.ABS_X, 0.0), -a.get(e.ABS_RY, 0.0)])
        return self.state.command(apply_deadzone(raw, self.config.deadzone), gate=self.deadman)


class SpaceMouseMapper:
    """evdev events of a 3Dconnexion SpaceMouse -> commands (translation only; tool stays down)."""

    def __init__(self, config: TeleopConfig, ecodes: Any = InputCodes):
        self.config = config
        self.state = TeleopState(config, speed=config.speed)
        self.e = ecodes
        self.raw = np.zeros(3)

    def feed(self, etype: int, code: int, value: int) -> None:
        e = self.e
        if etype in (e.EV_REL, e.EV_ABS):
            # Device axes: X right, Y towards the user, Z down. Robot: x forward, y left, z up.
            idx = (
                {e.REL_Y: 0, e.REL_X: 1, e.REL_Z: 2}
                if etype == e.EV_REL
                else {e.ABS_Y: 0, e.ABS_X: 1, e.ABS_Z: 2}
            )
            if code in idx:
                self.raw[idx[code]] = value
        elif etype == e.EV_KEY and value == 1:
            if code == e.BTN_0:
                self.state.handle("gripper")
            elif code == e.BTN_1:
                self.state.handle("toggle_enable")

    def poll(self) -> TeleopCommand:
        v = self.raw / self.config.spacemouse_full_scale * np.asarray(self.config.spacemouse_signs)
        return self.state.command(apply_deadzone(v, self.config.deadzone))


class EvdevTeleop(TeleopSource):
    """Gamepad or SpaceMouse through Linux evdev; reads are non-blocking in ``poll``.

    ``device``: anything with evdev's ``read_one()``/``capabilities()``/``close()`` (found
    under /dev/input when None).
    """

    def __init__(self, config: TeleopConfig, device: Any = None):
        super().__init__(config)
        self.device: Any = device
        self.mapper: GamepadMapper | SpaceMouseMapper | None = None

    def open(self) -> None:
        if self.device is None:
            self.device = find_input_device(self.config.source, self.config.device)
        e = InputCodes
        if self.config.source == "gamepad":
            ranges = {}
            for code, info in self.device.capabilities(absinfo=True).get(e.EV_ABS, []):
                ranges[code] = (info.min, info.max)
            self.mapper = GamepadMapper(self.config, ranges, e)
        else:
            self.mapper = SpaceMouseMapper(self.config, e)

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None

    def poll(self) -> TeleopCommand:
        if self.device is None or self.mapper is None:
            raise TeleopDeviceError(f"{self.config.source} is not open; use a with block")
        try:
            while True:
                ev = self.device.read_one()
                if ev is None:
                    break
                self.mapper.feed(ev.type, ev.code, ev.value)
        except OSError as err:  # unplugged: stop commanding, report once
            self.device = None
            raise TeleopDeviceError(f"{self.config.source} disconnected: {err}") from err
        return self.mapper.poll()


# Keyboard events a device source takes from the terminal: a SpaceMouse has no buttons for
# recording, and space must stop the arm whatever drives it.
TERMINAL_EVENTS = ("start", "success", "failure", "discard", "home", "quit", "help")


class DeviceWithKeys(TeleopSource):
    """A gamepad or SpaceMouse for motion plus the terminal's keys for recording and stop.

    Motion keys are ignored; ``space`` disables and ``e`` enables the device's motion (a
    gamepad still needs its dead-man button held).
    """

    def __init__(self, device: EvdevTeleop, keyboard: KeyboardTeleop):
        super().__init__(device.config)
        self.device = device
        self.keyboard = keyboard

    def open(self) -> None:
        self.keyboard.open()
        try:
            self.device.open()
        except TeleopDeviceError:
            self.keyboard.close()
            raise

    def close(self) -> None:
        try:
            self.device.close()
        finally:
            self.keyboard.close()

    def poll(self) -> TeleopCommand:
        keys_cmd = self.keyboard.poll()
        mapper = self.device.mapper
        for ev in keys_cmd.events:
            if ev in ("enable", "disable") and mapper is not None:
                mapper.state.enabled = ev == "enable"
        dev = self.device.poll()
        extra = tuple(ev for ev in keys_cmd.events if ev in TERMINAL_EVENTS)
        return TeleopCommand(dev.action, dev.enabled, dev.speed, dev.events + extra)


def make_source(config: TeleopConfig, with_keys: bool | None = None, **kwargs: Any) -> TeleopSource:
    """The configured source; a device also reads the terminal's keys when stdin is a tty."""
    if config.source == "keyboard":
        return KeyboardTeleop(config, **kwargs)
    if with_keys is None:
        with_keys = sys.stdin.isatty()
    device = EvdevTeleop(config)
    return DeviceWithKeys(device, KeyboardTeleop(config, **kwargs)) if with_keys else device


# ---------------------------------------------------------------------------- Twist
def action_from_twist(
    linear_m_s: np.ndarray, rate_hz: float, max_step_m: float, gripper: float = -1.0
) -> np.ndarray:
    """A velocity (m/s) held for one command period -> a normalized action.

    An action of 1.0 moves ``max_step_m`` per command, so v m/s at ``rate_hz`` commands per
    second is v / (rate_hz * max_step_m); faster requests saturate at 1 (the envelope clips
    anyway). Angular velocity is ignored: the xArm5 keeps the tool pointing down.
    """
    v = np.asarray(linear_m_s, dtype=float).reshape(3)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"twist has non-finite linear velocity {v.tolist()}")
    a = np.zeros(keys.ACTION_DIM, np.float32)
    a[:3] = np.clip(v / (rate_hz * max_step_m), -1.0, 1.0)
    a[3] = float(np.clip(gripper, -1.0, 1.0))
    return a


def speed_label(speed: float, max_step_m: float, rate_hz: float) -> str:
    """The tool speed a full deflection means, for the status line."""
    return f"speed {speed:.1f} (~{speed * max_step_m * rate_hz * 1000:.0f} mm/s)"
