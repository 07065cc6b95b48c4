"""Teleop sources (keys over a real pty, gamepad/SpaceMouse event mapping, Twist) and a scripted
key sequence driving the twin while the recorder writes two episodes."""

import os
import pty
import termios

import numpy as np
import pytest
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.robot.recorder import Recorder, RecorderConfig
from video2reward.robot.teleop import TeleopConfig, TeleopDeviceError, apply_deadzone
from video2reward.robot.teleop_evdev import (
    GamepadMapper,
    InputCodes,
    SpaceMouseMapper,
    find_input_device,
)
from video2reward.robot.teleop_keyboard import (
    KeyboardMapper,
    KeyboardTeleop,
    ScriptedKeys,
    TerminalKeys,
    decode_keys,
    hold_key,
)
from video2reward.robot.teleop_session import TwinTeleopRobot, run_session
from video2reward.robot.teleop_twist import action_from_twist


def test_decode_terminal_bytes():
    data = b"w\x1b[A\x1b[6~\rX\x7f\x1b"
    assert decode_keys(data) == ["w", "up", "pgdn", "enter", "x", "backspace", "esc"]


def test_keyboard_hold_window_speed_gripper_and_stop():
    m = KeyboardMapper(TeleopConfig(speed=0.5, hold_first_s=0.3, hold_repeat_s=0.1))
    m.feed("w", 0.0)  # disabled: nothing moves, gripper open
    np.testing.assert_array_equal(m.poll(0.0).action, [0, 0, 0, -1])
    m.feed("e", 0.0)
    m.feed("w", 0.0)
    c = m.poll(0.25)  # before the first auto-repeat the press still counts
    assert c.enabled and c.events == ("enable",)
    np.testing.assert_allclose(c.action, [0.5, 0, 0, -1])
    assert not m.poll(0.31).action[:3].any()  # released: stops after hold_first_s
    for t in np.arange(1.0, 2.0, 1 / 30):  # held: press + auto-repeat at 30 Hz
        m.feed("d", t)
        assert m.poll(t + 0.01).action[1] == -0.5
    assert not m.poll(2.0 + 0.11).action[:3].any()  # let go: stops within hold_repeat_s
    m.feed("+", 3.0)
    m.feed("g", 3.0)
    m.feed("r", 3.0)
    np.testing.assert_allclose(m.poll(3.0).action, [0, 0, 0.6, 1.0])
    m.feed("w", 3.1)
    m.feed(" ", 3.1)  # space: disabled at once, whatever is held
    c = m.poll(3.1)
    assert not c.enabled and not c.action[:3].any() and c.events == ("disable",)
    m.feed("enter", 4.0)
    m.feed("y", 4.0)
    assert m.poll(4.0).events == ("start", "success")


def test_terminal_keys_over_a_real_pty_restore_the_terminal():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ECHO and before[3] & termios.ICANON
        with TerminalKeys(slave) as term:
            mode = termios.tcgetattr(slave)
            assert not mode[3] & termios.ICANON and not mode[3] & termios.ECHO
            assert mode[3] & termios.ISIG  # Ctrl-C still interrupts
            os.write(master, b"e\x1b[Aw")  # no newline: cbreak delivers keys at once
            got = b""
            for _ in range(50):
                got += term.read(0.05)
                if len(got) >= 5:
                    break
            assert decode_keys(got) == ["e", "up", "w"]
            assert term.read(0.0) == b""
        assert termios.tcgetattr(slave)[3] == before[3]
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_without_a_terminal_is_a_clear_error():
    r, w = os.pipe()
    try:
        with pytest.raises(TeleopDeviceError, match="not a tty"), TerminalKeys(r):
            pass
    finally:
        os.close(r)
        os.close(w)


def test_missing_gamepad_or_spacemouse_is_a_clear_error(tmp_path):
    for kind in ("gamepad", "spacemouse"):
        # Without the teleop extra the message names the missing library instead.
        with pytest.raises(TeleopDeviceError, match=f"no {kind} found|needs the evdev library"):
            find_input_device(kind, str(tmp_path / "event99"))


def test_input_codes_match_the_kernel_values_in_evdev():
    ecodes = pytest.importorskip("evdev").ecodes
    for name, value in vars(InputCodes).items():
        if name.isupper():
            assert getattr(ecodes, name) == value, name


def test_gamepad_deadman_sticks_and_buttons():
    e = InputCodes
    ranges = {e.ABS_X: (-32768, 32767), e.ABS_Y: (-32768, 32767), e.ABS_RY: (-32768, 32767)}
    g = GamepadMapper(TeleopConfig(source="gamepad", speed=1.0, deadzone=0.1), ranges)
    g.feed(e.EV_ABS, e.ABS_Y, -32768)  # left stick fully forward
    assert not g.poll().enabled and not g.poll().action[:3].any()  # LB not held
    g.feed(e.EV_KEY, e.BTN_TL, 1)
    g.feed(e.EV_KEY, e.BTN_SOUTH, 1)  # A: gripper closes
    g.feed(e.EV_ABS, e.ABS_X, 0)  # centred (inside the deadzone)
    c = g.poll()
    assert c.enabled and c.events == ("enable",)
    np.testing.assert_allclose(c.action, [1.0, 0, 0, 1.0], atol=1e-4)
    g.feed(e.EV_KEY, e.BTN_START, 1)
    g.feed(e.EV_KEY, e.BTN_TL, 0)  # released: motion stops
    c = g.poll()
    assert not c.enabled and c.events == ("start", "disable") and not c.action[:3].any()


def test_spacemouse_axes_deadzone_and_buttons():
    e = InputCodes
    cfg = TeleopConfig(source="spacemouse", speed=1.0, deadzone=0.1, spacemouse_full_scale=350)
    s = SpaceMouseMapper(cfg)
    s.feed(e.EV_KEY, e.BTN_1, 1)  # right button: enable
    s.feed(e.EV_REL, e.REL_Y, -350)  # push away from the user: +x
    s.feed(e.EV_REL, e.REL_Z, 20)  # small press down: inside the deadzone
    c = s.poll()
    assert c.enabled
    np.testing.assert_allclose(c.action, [1.0, 0.0, 0.0, -1.0], atol=1e-6)


def test_deadzone_and_twist_scaling():
    np.testing.assert_allclose(apply_deadzone(np.array([0.05, -0.55, 1.0]), 0.1), [0, -0.5, 1])
    a = action_from_twist(np.array([0.15, -0.6, 0.0]), rate_hz=30, max_step_m=0.01, gripper=1)
    np.testing.assert_allclose(a, [0.5, -1.0, 0.0, 1.0])  # 0.15 m/s = 5 mm per 30 Hz command
    with pytest.raises(ValueError, match="non-finite"):
        action_from_twist(np.array([np.nan, 0, 0]), 30, 0.01)


def test_scripted_keys_drive_the_twin_and_record_two_episodes(tmp_path):
    from video2reward.sim.env import make_env

    rate = 30.0
    env = make_env("reach", image_size=48, control_hz=rate)
    robot = TwinTeleopRobot(env, rate_hz=rate, seed=0)
    script = [
        (0.0, b"e"),  # enable
        (0.1, b"\r"),  # start episode 0
        *hold_key(b"w", 0.2, 0.6),  # +x for 0.6 s (press + 30 Hz auto-repeat)
        (1.0, b"y"),  # stop: success
        (1.2, b"\r"),  # start episode 1
        *hold_key(b"\x1b[5~", 1.3, 0.3),  # PgUp: +z
        (1.7, b"g"),  # close the gripper
        (1.9, b"n"),  # stop: failure
        (2.0, b"\r"),
        *hold_key(b"a", 2.05, 0.1),
        (2.2, b"x"),  # discarded: never in the store
        (2.3, b"y"),  # nothing recording: relabels the last saved episode (1) as a success
        (2.4, b"q"),
    ]
    reader = ScriptedKeys(script, robot.clock)
    cfg = TeleopConfig(speed=0.5, rate_hz=rate)
    times = [robot.clock()]
    rec_cfg = RecorderConfig(
        out=str(tmp_path / "t.zarr"),
        task="reach",
        source="twin",
        fps_hz=rate,
        flush_every=8,
        min_free_mb=0.0,
    )
    with (
        KeyboardTeleop(cfg, reader=reader, clock=robot.clock) as src,
        Recorder(rec_cfg, robot.intrinsics()) as rec,
    ):
        saved = run_session(
            src,
            robot,
            rec,
            rate,
            max_ticks=400,
            real_time=False,
            out=None,
            on_tick=lambda _: times.append(robot.clock()),
        )
    env.close()
    assert saved == 2 and reader.done
    rel = np.array(times) - times[0]

    def tick_at(t):  # the tick whose poll first sees a key scripted at t
        return int(np.argmax(rel >= t - 1e-9))

    s = EpisodeStore.open(tmp_path / "t.zarr")
    assert s.n_episodes == 2
    assert [s.episode_meta(i)[keys.EPISODE_SUCCESS] for i in range(2)] == [True, True]
    assert s.episode_meta(0)["length"] == tick_at(1.0) - tick_at(0.1) + 1
    assert s.episode_meta(1)["length"] == tick_at(1.9) - tick_at(1.2) + 1
    ep0, ep1 = s.episode(0), s.episode(1)
    a0, a1 = ep0[keys.ACTION], ep1[keys.ACTION]
    np.testing.assert_array_equal(a0[-1], np.zeros(4))  # final observation, no command
    moving = a0[:, 0] > 0
    assert 15 <= moving.sum() <= 22  # ~0.6 s of +x at 30 Hz (+ the hold window)
    # Speed 0.5, never clamped except by the envelope's start ramp (it gains at most
    # max_accel_m_s2 per second: 2.2 mm, then 4.4 mm, then the full 5 mm steps).
    ramp = a0[moving, 0]
    np.testing.assert_allclose(ramp[:2], [0.222222, 0.444444], atol=1e-5)
    np.testing.assert_allclose(ramp[2:], 0.5, atol=1e-5)
    assert not a0[:, 1:3].any()
    # The commands actually sent moved the arm along +x: each asks 0.5 * 10 mm from the
    # measured tool, which the servo tracks to ~80 % within one 33 ms tick.
    dx = ep0[keys.EE_POS][-1, 0] - ep0[keys.EE_POS][0, 0]
    assert 0.7 * a0[:, 0].sum() * 0.010 < dx <= 1.02 * a0[:, 0].sum() * 0.010
    assert (a1[:-1, 2] > 0).sum() >= 8 and not a1[:, 0].any()
    grip = a1[:-1, 3]
    assert grip[0] == -1.0 and grip[-1] == 1.0  # gripper toggled closed during episode 1
    assert ep1[keys.EE_POS][-1, 2] > ep1[keys.EE_POS][0, 2] + 0.03
    assert ep0[keys.IMAGE].shape[1:] == (48, 48, 3)
    assert np.all(np.diff(ep0[keys.TIMESTAMP]) > 0)


def test_v2r_record_teleop_in_a_terminal_records_an_episode(tmp_path):
    """The CLI end to end: a real pty as the operator's terminal, the twin in real time."""
    import subprocess
    import sys
    import time

    out = tmp_path / "cli.zarr"
    master, slave = pty.openpty()
    cmd = [
        sys.executable,
        "-m",
        "video2reward.cli.main",
        "record",
        "teleop",
        "task=reach",
        f"out={out}",
        "image_size=32",
        "notes=cli test",
    ]
    env = dict(os.environ, V2R_TCMALLOC="0")
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        time.sleep(4.0)  # imports + twin
        for data, pause in (
            [(b"e", 0.3), (b"\r", 0.3)]
            + [(b"w", 1 / 30)] * 20
            + [(b"", 0.3), (b"y", 0.5), (b"q", 0.0)]
        ):
            os.write(master, data)
            time.sleep(pause)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err[-2000:]
    assert "1 episodes saved" in err and "saved ep 0 (success)" in err
    s = EpisodeStore.open(out)
    assert s.n_episodes == 1 and s.episode_meta(0)[keys.EPISODE_NOTES] == "cli test"
    a = s.episode(0)[keys.ACTION]
    assert (a[:, 0] > 0).sum() >= 15 and s.episode(0)[keys.IMAGE].shape[1:] == (32, 32, 3)


class _FakeInputDevice:
    """The part of evdev's InputDevice that EvdevTeleop uses, fed from a list."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, int]] = []
        self.closed = False

    def read_one(self):
        if not self.events:
            return None
        from types import SimpleNamespace

        t, c, v = self.events.pop(0)
        return SimpleNamespace(type=t, code=c, value=v)

    def capabilities(self, absinfo: bool = False) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True


def test_spacemouse_moves_while_terminal_keys_record_and_space_stops():
    from video2reward.robot.teleop_evdev import EvdevTeleop
    from video2reward.robot.teleop_sources import DeviceWithKeys

    e = InputCodes
    now = [0.0]
    cfg = TeleopConfig(source="spacemouse", speed=1.0, deadzone=0.1)
    dev = _FakeInputDevice()
    keys_ = ScriptedKeys([(0.1, b"\r"), (0.2, b"w"), (0.3, b" "), (0.4, b"y")], lambda: now[0])
    src = DeviceWithKeys(
        EvdevTeleop(cfg, device=dev), KeyboardTeleop(cfg, reader=keys_, clock=lambda: now[0])
    )
    with src:
        dev.events += [(e.EV_KEY, e.BTN_1, 1), (e.EV_REL, e.REL_X, -350)]  # enable, push left
        c = src.poll()
        assert c.enabled and c.events == ("enable",)  # the driver gets enabled
        np.testing.assert_allclose(c.action, [0, 1, 0, -1], atol=1e-6)
        now[0] = 0.1
        assert src.poll().events == ("start",)
        now[0] = 0.2
        np.testing.assert_allclose(src.poll().action[:3], [0, 1, 0], atol=1e-6)  # w ignored
        now[0] = 0.3
        c = src.poll()  # space: the SpaceMouse's motion stops at once
        assert not c.enabled and not c.action[:3].any()
        now[0] = 0.4
        assert src.poll().events == ("success",)
    assert dev.closed


def test_status_line_and_key_help_fit_the_terminal_width(tmp_path):
    """Every line written fits the terminal's columns (a wrapped status line scrolls)."""
    import io
    import re

    from video2reward.robot.teleop_session import fit_line
    from video2reward.sim.env import make_env

    assert fit_line("x" * 200, 120) == "x" * 116 + "..."
    assert fit_line("ep 0 | idle", 120) == "ep 0 | idle"
    rate = 30.0
    env = make_env("reach", image_size=32, control_hz=rate)
    robot = TwinTeleopRobot(env, rate_hz=rate, seed=0)
    written = {}
    for columns in (50, 80):
        script = [
            (0.0, b"e"),
            (0.05, b"\r"),
            *hold_key(b"w", 0.1, 0.2),
            (0.4, b"h"),  # the key help again
            (0.5, b"y"),
            (0.6, b"x"),  # nothing to discard: an error message
            (0.7, b"q"),
        ]
        rec_cfg = RecorderConfig(
            out=str(tmp_path / f"w{columns}.zarr"), task="reach", source="twin", fps_hz=rate,
            min_free_mb=0.0,
        )  # fmt: skip
        out = io.StringIO()
        with (
            KeyboardTeleop(TeleopConfig(), reader=ScriptedKeys(script, robot.clock)) as src,
            Recorder(rec_cfg, robot.intrinsics()) as rec,
        ):
            assert run_session(
                src, robot, rec, rate, max_ticks=200, real_time=False, out=out, columns=columns
            ) == 1
        written[columns] = out.getvalue()
        lines = re.split(r"[\r\n]", written[columns].replace("\x1b[K", ""))
        assert max(len(line) for line in lines) <= columns - 1, columns
    env.close()
    narrow, usual = written[50], written[80]
    assert "..." in narrow  # the status line was cut, not wrapped
    assert narrow.count("q quit") == 2 and narrow.count("\n") >= 2 * 4  # help, twice
    assert "saved ep 0 (success)" in usual and "discard: not recording" in usual
