"""Gamepad and SpaceMouse teleop through Linux input devices (``evdev``).

    with EvdevTeleop(TeleopConfig(source="gamepad")) as src:   # first gamepad in /dev/input
        cmd = src.poll()                                         # never blocks

Gamepad: hold the left shoulder button (LB) to move; left stick x/y, right stick z, A gripper,
D-pad speed, Start = start, Y = success, X = failure, B = discard, Back = quit. SpaceMouse:
translation drives x/y/z, left button = gripper, right button = enable/disable. The mappers
are pure logic over Linux event codes (``InputCodes``), testable without evdev or a device;
``evdev`` itself (``pip install 'video2reward[teleop]'``) is imported only to open a device,
and a missing library or device raises ``TeleopDeviceError`` naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from video2reward.robot.teleop import (
    TeleopCommand,
    TeleopConfig,
    TeleopDeviceError,
    TeleopSource,
    TeleopState,
    apply_deadzone,
)


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
