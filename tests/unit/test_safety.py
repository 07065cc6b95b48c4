"""Safety envelope, command watchdog and fault latch: pure, no hardware, milliseconds."""

from __future__ import annotations

import numpy as np
import pytest
from video2reward.robot.safety import (
    CommandWatchdog,
    EnvelopeConfig,
    FaultLatch,
    InvalidCommandError,
    LatchedFaultError,
    SafetyEnvelope,
    WatchdogConfig,
    WorkspaceBox,
)

BOX = WorkspaceBox(lo_m=(0.2, -0.25, 0.005), hi_m=(0.55, 0.25, 0.30))
ENV = SafetyEnvelope(EnvelopeConfig(box=BOX, max_step_m=0.01, max_speed_m_s=0.25))
MARGIN = ENV.config.margin_m
CENTER = np.array([0.35, 0.0, 0.15])


def test_in_box_step_passes_unchanged() -> None:
    cmd = ENV.apply(CENTER, [0.5, -0.5, 0.2, 0.0])
    np.testing.assert_allclose(cmd.p_base_target, CENTER + np.array([0.005, -0.005, 0.002]))
    np.testing.assert_allclose(cmd.applied_action[:3], [0.5, -0.5, 0.2], atol=1e-6)
    assert not cmd.clamped


def test_box_clamps_target_margin_inside_and_reports_applied_action() -> None:
    p = np.array([0.549 - MARGIN, 0.0, 0.15])  # 1 mm inside the margin of the +x face
    cmd = ENV.apply(p, [1.0, 0.0, 0.0, 0.0])
    assert cmd.clamped
    assert cmd.p_base_target[0] == pytest.approx(0.55 - MARGIN)
    assert cmd.applied_action[0] == pytest.approx(0.1, abs=1e-5)  # 1 mm of a 10 mm step


def test_outside_box_only_moves_back_one_step() -> None:
    p = np.array([0.70, 0.0, 0.15])  # 150 mm outside after a manual jog
    cmd = ENV.apply(p, [1.0, 1.0, 1.0, 0.0])
    assert np.linalg.norm(cmd.p_base_target - p) <= 0.01 + 1e-12
    assert cmd.p_base_target[0] < p[0]


def test_action_values_slightly_beyond_one_are_cut_to_one_step() -> None:
    cmd = ENV.apply(CENTER, [1.4, 0.0, 0.0, -1.5])
    assert np.linalg.norm(cmd.p_base_target - CENTER) == pytest.approx(0.01)
    assert cmd.applied_action[3] == -1.0


@pytest.mark.parametrize("slot", range(4))
@pytest.mark.parametrize("value", [1.5001, -2.0, 50.0, 1e30, -1e30])
def test_action_values_far_beyond_one_are_refused(slot: int, value: float) -> None:
    a = [0.0, 0.0, 0.0, 0.0]
    a[slot] = value
    with pytest.raises(InvalidCommandError, match=r"beyond \+-1.5"):
        ENV.apply(CENTER, a)


@pytest.mark.parametrize(("dt_s", "expect_m"), [(0.01, 0.0025), (0.02, 0.005), (1.0, 0.01)])
def test_max_speed_caps_step_when_commands_come_fast(dt_s: float, expect_m: float) -> None:
    cmd = ENV.apply(CENTER, [1.0, 0.0, 0.0, 0.0], dt_s=dt_s)
    assert cmd.p_base_target[0] - CENTER[0] == pytest.approx(expect_m)
    assert cmd.clamped == (expect_m < 0.01)


def test_step_never_exceeds_ufactory_limit_for_any_valid_config() -> None:
    with pytest.raises(ValueError, match="max_step_m"):
        EnvelopeConfig(max_step_m=0.02)
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = rng.uniform([0.0, -0.5, -0.2], [0.8, 0.5, 0.6])
        a = rng.uniform(-1.5, 1.5, size=4)
        cmd = ENV.apply(p, a, dt_s=float(rng.uniform(0, 0.2)), v_last_m_s=rng.normal(0, 0.2, 3))
        assert np.linalg.norm(cmd.p_base_target - p) <= 0.01 + 1e-12
        if BOX.contains(p):
            assert ENV.config.target_box.contains(cmd.p_base_target)


def test_gripper_range_respected() -> None:
    env = SafetyEnvelope(EnvelopeConfig(gripper_min=100.0, gripper_max=800.0))
    assert env.apply(CENTER, [0, 0, 0, -1.0]).gripper_target == pytest.approx(800.0)
    assert env.apply(CENTER, [0, 0, 0, 1.0]).gripper_target == pytest.approx(100.0)
    assert env.apply(CENTER, [0, 0, 0, 1.2]).gripper_target == pytest.approx(100.0)
    with pytest.raises(ValueError, match="gripper range"):
        EnvelopeConfig(gripper_min=0.0, gripper_max=900.0)


@pytest.mark.parametrize(
    "bad",
    [
        [np.nan, 0, 0, 0],
        [0, np.inf, 0, 0],
        [0, 0, -np.inf, 0],
        [0, 0, 0],
        [[0, 0, 0, 0]],
        "left",
        None,
        [0, 0, "x", 0],
        {"dx": 1},
    ],
)
def test_malformed_actions_refused(bad: object) -> None:
    with pytest.raises(InvalidCommandError):
        ENV.apply(CENTER, bad)


def test_nonfinite_measured_position_refused() -> None:
    with pytest.raises(InvalidCommandError):
        ENV.apply(np.array([np.nan, 0, 0.1]), [0, 0, 0, 0])


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_watchdog_expires_after_deadline_on_injected_clock() -> None:
    clock = FakeClock()
    dog = CommandWatchdog(WatchdogConfig(deadline_s=0.2), clock=clock)
    assert not dog.armed and not dog.expired()  # never commanded: nothing to stop
    dog.kick()
    clock.t += 0.19
    assert not dog.expired()
    dog.kick()
    clock.t += 0.19
    assert not dog.expired()  # kicks keep it alive
    clock.t += 0.02
    assert dog.expired()
    dog.disarm()
    assert not dog.expired()


def test_watchdog_config_validates() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        WatchdogConfig(deadline_s=0.0)


def test_fault_latch_keeps_first_reason_until_explicit_reset() -> None:
    latch = FaultLatch()
    latch.check()
    latch.trip("controller error 31")
    latch.trip("controller error 24")
    assert latch.active and latch.reason == "controller error 31"
    with pytest.raises(LatchedFaultError, match="31"):
        latch.check()
    latch.reset()
    assert not latch.active
    latch.check()


def test_streaming_targets_chain_from_last_target_by_at_most_one_step() -> None:
    # The arm lags 4 mm behind: chained targets stay 10 mm apart (UFACTORY servo guidance).
    p_meas = CENTER.copy()
    last = CENTER + np.array([0.004, 0.0, 0.0])
    cmd = ENV.apply(p_meas, [1.0, 0.0, 0.0, 0.0], p_last_target=last)
    assert np.linalg.norm(cmd.p_base_target - last) == pytest.approx(0.01)
    assert np.linalg.norm(cmd.p_base_target - p_meas) == pytest.approx(0.014)


def test_lead_over_measured_tool_is_capped_for_a_blocked_arm() -> None:
    p_meas = CENTER.copy()  # the arm is blocked here
    last = p_meas.copy()
    for _ in range(10):
        cmd = ENV.apply(p_meas, [1.0, 0.0, 0.0, 0.0], p_last_target=last)
        assert np.linalg.norm(cmd.p_base_target - last) <= 0.01 + 1e-12
        last = cmd.p_base_target
    assert np.linalg.norm(last - p_meas) == pytest.approx(ENV.config.max_lead_m)


def test_chained_steps_stay_bounded_under_random_lag() -> None:
    rng = np.random.default_rng(1)
    last = CENTER.copy()
    for _ in range(300):
        p_meas = BOX.clip(last + rng.normal(0, 0.008, 3))
        cmd = ENV.apply(p_meas, rng.uniform(-1.5, 1.5, 4), p_last_target=last)
        assert np.linalg.norm(cmd.p_base_target - last) <= 0.01 + 1e-9  # the hard limit
        lead_before = np.linalg.norm(last - p_meas)
        lead = np.linalg.norm(cmd.p_base_target - p_meas)
        if lead_before <= ENV.config.max_lead_m:
            assert lead <= ENV.config.max_lead_m + 1e-9
        else:  # too far ahead for one step to fix: it closes in on the arm
            assert lead < lead_before
        assert BOX.contains(cmd.p_base_target)
        last = cmd.p_base_target


def test_margin_must_leave_room_inside_the_box() -> None:
    with pytest.raises(ValueError, match="margin_m"):
        EnvelopeConfig(box=WorkspaceBox(lo_m=(0, 0, 0), hi_m=(0.3, 0.3, 0.01)), margin_m=0.005)
    with pytest.raises(ValueError, match="margin_m"):
        EnvelopeConfig(margin_m=-0.001)
    assert EnvelopeConfig(margin_m=0.0).target_box == EnvelopeConfig().box


def test_first_command_after_a_stop_is_speed_capped() -> None:
    c = ENV.config
    cmd = ENV.apply(CENTER, [1.0, 0.0, 0.0, 0.0], c.start_period_s, CENTER, np.zeros(3))
    step = c.max_accel_m_s2 * c.start_period_s**2
    assert cmd.p_base_target[0] - CENTER[0] == pytest.approx(step)  # 2.2 mm, not 10 mm
    assert step < 0.003
    np.testing.assert_allclose(cmd.velocity_m_s, [step / c.start_period_s, 0, 0])


def test_full_speed_reversal_stops_then_ramps_up() -> None:
    dt, c = 1 / 30, ENV.config
    v = np.array([c.max_speed_m_s, 0.0, 0.0])
    p = CENTER.copy()
    vx = []
    for _ in range(8):
        cmd = ENV.apply(p, [-1.0, 0.0, 0.0, 0.0], dt, p, v)
        p, v = cmd.p_base_target, cmd.velocity_m_s
        vx.append(v[0])
    assert vx[0] == 0.0  # slowing down is free: the target stops at once
    np.testing.assert_allclose(np.diff(vx)[:3], -c.max_accel_m_s2 * dt, rtol=1e-9)
    assert vx[-1] == pytest.approx(-c.max_speed_m_s)


def test_targets_brake_before_a_face_within_max_accel() -> None:
    """Pushing into +x at full speed: the target decelerates, never faster than max_accel,
    and stops on the margin-shrunk face."""
    dt, c = 1 / 30, ENV.config
    p, v = np.array([0.40, 0.0, 0.15]), np.zeros(3)
    vx = []
    for _ in range(60):
        cmd = ENV.apply(p, [1.0, 0.0, 0.0, 0.0], dt, p, v)
        p, v = cmd.p_base_target, cmd.velocity_m_s
        vx.append(v[0])
    assert p[0] == pytest.approx(BOX.hi[0] - c.margin_m, abs=1e-4)
    assert max(vx) == pytest.approx(c.max_speed_m_s)
    dv = np.diff(vx)
    # Braking decelerates at ~max_accel (discretisation gives a little more near the end).
    assert dv.min() > -2.0 * c.max_accel_m_s2 * dt
    assert vx[-1] == pytest.approx(0.0, abs=1e-3)


def test_random_streams_keep_targets_inside_the_margin_box() -> None:
    rng = np.random.default_rng(3)
    p, v = CENTER.copy(), np.zeros(3)
    inner = ENV.config.target_box
    for _ in range(2000):
        a = rng.choice([-1.0, 1.0], 4) * rng.uniform(0.5, 1.5, 4)
        dt = float(rng.uniform(0.005, 0.2))
        cmd = ENV.apply(p + rng.normal(0, 0.002, 3), a, dt, p, v)
        assert inner.contains(cmd.p_base_target)
        assert np.linalg.norm(cmd.p_base_target - p) <= min(0.01, 0.25 * dt) + 1e-12
        p, v = cmd.p_base_target, cmd.velocity_m_s


def test_outside_m_measures_the_largest_excess() -> None:
    assert BOX.outside_m(CENTER) == 0.0
    assert BOX.outside_m(np.array([0.552, -0.251, 0.31])) == pytest.approx(0.01)
