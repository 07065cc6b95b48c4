"""The twin: Cartesian semantics, clamping, refusal of bad commands, rendering, camera model."""

import numpy as np
import pytest
from video2reward.data import keys
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, LOWER_RAD, UPPER_RAD
from video2reward.robot.safety import EnvelopeConfig, InvalidCommandError, WorkspaceBox
from video2reward.sim.env import EnvConfig, XArm5Env, make_env
from video2reward.sim.twin import CameraConfig


@pytest.fixture
def reach_env():
    env = make_env("reach", image_size=64, seed=3)
    yield env
    env.close()


def test_one_full_action_moves_the_tool_one_max_step(reach_env):
    env = reach_env
    p0 = env.controller.tcp_pos()
    _, _, _, _, info = env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
    moved = env.controller.tcp_pos() - p0
    assert moved[0] == pytest.approx(env.config.envelope.max_step_m, abs=1.5e-3)
    assert abs(moved[1]) < 1e-3 and abs(moved[2]) < 1e-3
    np.testing.assert_allclose(info["applied_action"][:3], [1.0, 0.0, 0.0], atol=1e-6)
    # the tool still points straight down
    quat = env.twin.tcp_quat()
    np.testing.assert_allclose(np.abs(quat), [0, 1, 0, 0], atol=2e-3)


def test_commands_outside_the_box_are_clamped_to_the_box():
    box = WorkspaceBox(lo_m=(0.25, -0.1, 0.05), hi_m=(0.45, 0.1, 0.25))
    env = XArm5Env(EnvConfig(task="reach", image_size=32, envelope=EnvelopeConfig(box=box)))
    env.reset(seed=0)
    for direction in ([1, 1, 1], [-1, -1, -1]):
        for _ in range(40):
            _, _, _, _, info = env.step(np.array([*direction, 0.0], np.float32))
        inner = env.config.envelope.target_box  # the box less the margin
        corner = inner.hi if direction[0] > 0 else inner.lo
        np.testing.assert_allclose(env.controller.tcp_pos(), corner, atol=2e-3)
        assert box.contains(env.controller.tcp_pos())
        assert info["clamped"]
        np.testing.assert_allclose(info["applied_action"][:3], 0.0, atol=0.2)
    env.close()


def test_targets_past_reach_or_joint_limits_are_clamped_not_passed_through():
    # A box far larger than the arm can reach: the controller must stop at the reach limit.
    box = WorkspaceBox(lo_m=(0.1, -1.0, 0.0), hi_m=(1.2, 1.0, 1.0))
    env = XArm5Env(EnvConfig(task="reach", image_size=32, envelope=EnvelopeConfig(box=box)))
    env.reset(seed=0)
    for _ in range(80):
        _, _, _, _, info = env.step(np.array([1.0, 0.0, 0.3, 0.0], np.float32))
        q = env.twin.commanded_joint_pos()
        assert np.all(q >= LOWER_RAD - 1e-9) and np.all(q <= UPPER_RAD + 1e-9)
    p = env.controller.tcp_pos()
    assert 0.55 < np.linalg.norm(p[:2]) < 0.75  # at the edge of the xArm5's reach
    assert info["clamped"]
    assert np.linalg.norm(info["applied_action"][:3]) < 0.2  # nothing left to move
    env.close()


@pytest.mark.parametrize(
    "bad",
    [
        np.array([np.nan, 0, 0, 0], np.float32),
        np.array([0, np.inf, 0, 0], np.float32),
        np.zeros(3, np.float32),
        np.zeros((2, 4), np.float32),
        "left",
    ],
)
def test_bad_actions_raise_and_never_move_the_arm(reach_env, bad):
    env = reach_env
    q0, t0 = env.twin.data.qpos.copy(), env.twin.data.time
    with pytest.raises(InvalidCommandError):
        env.step(bad)
    np.testing.assert_array_equal(env.twin.data.qpos, q0)
    assert env.twin.data.time == t0


def test_rendering_and_dynamics_are_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        env = make_env("push", image_size=84)
        obs, _ = env.reset(seed=11)
        frames = [obs[keys.IMAGE]]
        rng = np.random.default_rng(5)
        for _ in range(10):
            obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            frames.append(obs[keys.IMAGE])
        runs.append((np.stack(frames), env.twin.data.qpos.copy()))
        env.close()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other = make_env("push", image_size=84)
    obs, _ = other.reset(seed=12)
    assert not np.array_equal(obs[keys.IMAGE], runs[0][0][0])  # a different seed differs
    other.close()


@pytest.mark.parametrize("size", [84, 128, 224])
def test_images_render_at_requested_sizes(size):
    env = make_env("button-press", image_size=size, seed=0)
    img = env.render()
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a scene, not a blank buffer
    env.close()


def test_camera_intrinsics_project_the_reach_target_onto_its_pixels():
    cam = CameraConfig()
    env = XArm5Env(EnvConfig(task="reach", image_size=128, camera=cam))
    env.reset(seed=4)
    target = env.task.goal_pos(env.twin)
    # hide the arm from the picture so only the red target is red
    env.twin.model.geom_rgba[:, 3] = np.where(
        np.char.startswith(
            [env.twin.model.geom(i).name for i in range(env.twin.model.ngeom)], "target"
        ),
        env.twin.model.geom_rgba[:, 3],
        0.0,
    )
    W, H = 640, 480
    img = env.twin.render(W, H)
    rgb = img.astype(int)
    red = rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 40
    assert red.sum() > 50
    v, u = np.nonzero(red)
    K = cam.intrinsics(W, H)
    p_cam = np.linalg.inv(cam.T_base_cam()) @ np.append(target, 1.0)
    u_proj = K["fx"] * p_cam[0] / p_cam[2] + K["cx"]
    v_proj = K["fy"] * p_cam[1] / p_cam[2] + K["cy"]
    assert abs(u.mean() - u_proj) < 1.0 and abs(v.mean() - v_proj) < 1.0
    assert K["fx"] == pytest.approx(240 / np.tan(np.deg2rad(42.5) / 2))
    env.close()


def test_gripper_opens_and_closes_on_command(reach_env):
    env = reach_env
    for _ in range(5):
        env.step(np.array([0, 0, 0, 1.0], np.float32))
    assert env.twin.gripper_open_frac() < 0.05
    for _ in range(5):
        env.step(np.array([0, 0, 0, -1.0], np.float32))
    assert env.twin.gripper_open_frac() > 0.95


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="control_hz"):
        EnvConfig(control_hz=100.0)
    with pytest.raises(ValueError, match="unknown task"):
        EnvConfig(task="juggle")
    with pytest.raises(ValueError, match="max_step_m"):
        EnvelopeConfig(max_step_m=0.05)
    with pytest.raises(ValueError, match="below"):
        WorkspaceBox(lo_m=(0.5, 0, 0), hi_m=(0.2, 0.1, 0.1))
    assert pytest.approx(0.172) == GRIPPER_TCP_OFFSET_M
