"""Teleop from a terminal's keys: raw tty reads (work over SSH), key decoding, the key map.

    with KeyboardTeleop(TeleopConfig()) as src:    # cbreak mode on stdin until closed
        cmd = src.poll()

Keyboard: w/s = +x/-x (away from / towards the base), a/d = +y/-y, r/f = +z/-z (arrows: x/y,
PgUp/PgDn: z), g = gripper, +/- = speed, Enter = start an episode, y = stop as success,
n = stop as failure (y/n after stopping relabel the last episode), x = discard, o = home
(the twin: a new scene), q = quit, e = enable, space = stop. A terminal reports no key
releases, so a motion key counts as held for ``hold_first_s`` after a press and
``hold_repeat_s`` after each auto-repeat: letting go stops within ~0.1 s. ``ScriptedKeys``
and ``hold_key`` play keys from a script (tests, the twin's scripted sessions).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import numpy as np
from video2reward.robot.teleop import (
    TeleopCommand,
    TeleopConfig,
    TeleopDeviceError,
    TeleopSource,
    TeleopState,
)

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
