"""Pick a teleop source by name; a gamepad or SpaceMouse also takes the terminal's keys.

    with make_source(TeleopConfig(source="spacemouse")) as src:   # + keys when stdin is a tty
        cmd = src.poll()
    print(help_text("spacemouse"))                                # what the operator can press
"""

from __future__ import annotations

import sys
from typing import Any

from video2reward.robot.teleop import TeleopCommand, TeleopConfig, TeleopDeviceError, TeleopSource
from video2reward.robot.teleop_evdev import EvdevTeleop
from video2reward.robot.teleop_keyboard import KEY_HELP, KeyboardTeleop

DEVICE_HELP = {
    "gamepad": "gamepad: hold LB to move | left stick x/y, right stick z | A gripper | D-pad "
    "speed | Start start | Y success | X failure | B discard | Back quit",
    "spacemouse": "SpaceMouse: right button enable/disable | move the cap | left button gripper",
}
TERMINAL_HELP = "keys: Enter start | y success | n failure | x discard | space STOP | e enable"


def help_text(source: str) -> str:
    """What the operator can press, for the status line and the node's log."""
    return KEY_HELP if source == "keyboard" else f"{DEVICE_HELP[source]} || {TERMINAL_HELP}"


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
