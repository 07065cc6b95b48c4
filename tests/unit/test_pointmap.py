"""Point maps: aligned depth back-projected into the base frame with the camera's calibration."""

from __future__ import annotations

import numpy as np
import pytest
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.data.pointmap import base_points, xyz_image
from video2reward.policies.learner import LearnSpec
from video2reward.sim.demos import DemoConfig, generate
from video2reward.sim.env import make_env

LO, HI = LearnSpec().pointmap_lo_m, LearnSpec().pointmap_hi_m


def test_a_pixel_back_projects_to_the_point_that_projects_onto_it() -> None:
    # A camera 1 m above the base origin looking straight down (x right = base y, y down =
    # base x): a point at depth d and pixel (u, v) lands where the pinhole model says.
    T = np.eye(4)
    T[:3, :3] = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    T[:3, 3] = [0.3, 0.0, 1.0]
    fx, fy, cx, cy = 100.0, 110.0, 31.5, 23.5
    depth = np.full((48, 64), 0.8, np.float32)
    depth[5, 7] = 0.0  # no reading
    pts = base_points(depth, (fx, fy, cx, cy), T)
    u, v = 50, 40
    cam = np.array([(u - cx) * 0.8 / fx, (v - cy) * 0.8 / fy, 0.8])
    np.testing.assert_allclose(pts[v, u], T[:3, :3] @ cam + T[:3, 3], atol=1e-6)
    assert pts[20, 20, 2] == pytest.approx(0.2)  # every pixel sees the plane z = 0.2
    assert np.isnan(pts[5, 7]).all()
    q = xyz_image(depth, (fx, fy, cx, cy), T, LO, HI)
    assert q.dtype == np.uint8 and q.shape == (48, 64, 3)
    assert (q[5, 7] == 0).all()
    expect = np.rint((pts[v, u] - LO) / (np.subtract(HI, LO)) * 255)
    np.testing.assert_array_equal(q[v, u], expect)
    with pytest.raises(ValueError, match="lo_m < hi_m"):
        xyz_image(depth, (fx, fy, cx, cy), T, HI, LO)
    with pytest.raises(ValueError, match=r"one \(H, W\) depth"):
        base_points(depth[None], (fx, fy, cx, cy), T)


def test_the_twins_depth_puts_the_reach_target_where_it_is() -> None:
    env = make_env("reach", image_size=84, seed=3, depth=True)
    try:
        obs, info = env.reset(seed=3)
        d = obs[keys.OBS_DEPTH]
        assert d.shape == (84, 84) and d.dtype == np.float32
        k = env.intrinsics()
        pts = base_points(d, (k["fx"], k["fy"], k["cx"], k["cy"]), env.config.camera.T_base_cam())
        img = obs[keys.OBS_IMAGE].astype(int)
        red = (img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)
        assert red.sum() >= 4
        # the sphere's visible surface: within its 2 cm radius of its centre
        dist = np.linalg.norm(pts[red] - info["goal_pos"], axis=1)
        assert np.median(dist) < 0.025, dist
        table = pts[78, 5]  # a bottom corner pixel sees the table top, z = 0
        assert abs(table[2]) < 0.01
    finally:
        env.close()


def test_sim_demos_record_depth_in_millimetres(tmp_path) -> None:
    out = tmp_path / "d.zarr"
    generate(DemoConfig(task="reach", episodes=1, out=str(out), depth=True), progress=False)
    s = EpisodeStore.open(out)
    ep = s.episode(0, [keys.IMAGE, keys.DEPTH])
    assert ep[keys.DEPTH].dtype == np.uint16
    assert ep[keys.DEPTH].shape == ep[keys.IMAGE].shape[:3]
    near = ep[keys.DEPTH][0][ep[keys.DEPTH][0] < 5000]
    assert 300 < near.min() < 2000  # the cell is 0.6-1.3 m from the camera
    with pytest.raises(Exception, match="depth"):
        generate(DemoConfig(task="reach", episodes=1, out=str(out), append=True), progress=False)


def _reward_ckpt(tmp_path):
    import torch
    from video2reward.rewards.base import build_model
    from video2reward.rewards.vip import VIPConfig

    torch.manual_seed(0)
    return build_model(VIPConfig(image_size_px=32, embed_dim=8), torch.device("cpu")).save(
        tmp_path / "vip"
    )


def test_both_drivers_and_the_demos_make_the_same_point_map_frames(tmp_path) -> None:
    from video2reward.data.pointmap import intrinsics_at
    from video2reward.policies.demos import DemoError, DemoSpec, load_demo_episodes
    from video2reward.policies.drqv2 import DrQV2Config
    from video2reward.policies.online import OnlineConfig, OnlineLearner
    from video2reward.policies.train import Observer, TrainConfig, env_camera, make_task_env

    store = tmp_path / "d.zarr"
    generate(DemoConfig(task="reach", episodes=2, out=str(store), depth=True), progress=False)
    small = DrQV2Config(batch_size=8, hidden_dim=16, feature_dim=8, bc_weight=1.0)
    env = make_task_env("reach", 84, 0, 10.0, depth=True)
    try:
        obs, info = env.reset(seed=5)
        observer = Observer(TrainConfig(task="reach", agent_image_size=32, pointmap=True),
                            None, env_camera(env))  # fmt: skip
        frame = observer.frame(obs)
        assert frame.shape == (6, 32, 32) and frame.dtype == np.uint8
        # the node, placing pixels with the demo store's camera attributes
        node_cfg = OnlineConfig(out=str(tmp_path / "node"), image_size=32, pointmap=True,
                                demos=DemoSpec(path=str(store)), agent=small,
                                reward_ckpt=str(_reward_ckpt(tmp_path)))  # fmt: skip
        learner = OnlineLearner(node_cfg)
        xyz = learner.pointmap_xyz(obs[keys.OBS_DEPTH])
        np.testing.assert_array_equal(learner._frame(obs[keys.OBS_IMAGE], xyz), frame)
        with pytest.raises(ValueError, match="point map"):
            learner.begin(obs[keys.OBS_IMAGE], np.zeros(4, np.float32))
        p = np.array([0.3, 0, 0.2, 1], np.float32)
        learner.begin(obs[keys.OBS_IMAGE], p, xyz)
        for _ in range(2):
            learner.step(obs[keys.OBS_IMAGE], p, xyz=xyz)
        learner.finish(np.zeros(2), success=False)
        # the demo buffer holds 6-channel frames, made as the observer makes them
        demos = load_demo_episodes(store, 2, pointmap_box=(LO, HI))
        assert demos[0].xyz is not None and demos[0].xyz.shape == demos[0].images.shape
        buf = learner.core.demos
        assert buf is not None and buf._obs.shape[1:] == (6, 32, 32)
        np.testing.assert_array_equal(buf._obs[0], observer.compose(demos[0].images[0],
                                                                    demos[0].xyz[0]))
        learner.checkpoint()
        learner.close()
        # the replay keeps img RGB and the point map beside it, and a restart restores both
        from video2reward.policies.replay import STORE_NAME

        rs = EpisodeStore.open(tmp_path / "node" / "replay" / STORE_NAME)
        ep = rs.episode(0, [keys.IMAGE, keys.POINTMAP])
        assert ep[keys.IMAGE].shape == (3, 32, 32, 3) == ep[keys.POINTMAP].shape
        again = OnlineLearner(node_cfg)
        assert again.restored_steps == 2 and again.replay is not None
        np.testing.assert_array_equal(again.replay._obs[0], frame)
        again.close()
        # evaluation without demos places pixels as training did (the run folder's record)
        ev = OnlineLearner(OnlineConfig(out=str(tmp_path / "node"), image_size=32,
                                        pointmap=True, eval_mode=True, agent=small))
        np.testing.assert_array_equal(ev.pointmap_xyz(obs[keys.OBS_DEPTH]), xyz)
        ev.close()
        # a calibration at 84 px places the pixels of a 168 px depth image of the same view
        k = EpisodeStore.open(store).attrs[keys.ATTR_INTRINSICS]
        big = env.twin.render_depth(168)
        pts = base_points(big, intrinsics_at(k, 168, 168), env.config.camera.T_base_cam())
        img = env.twin.render(168).astype(int)
        red = (img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)
        assert np.median(np.linalg.norm(pts[red] - info["goal_pos"], axis=1)) < 0.025
        with pytest.raises(ValueError, match="not a scaled"):
            intrinsics_at(k, 168, 84)
    finally:
        env.close()
    # a store without depth is refused for the point-map policy, naming the fix
    plain = tmp_path / "plain.zarr"
    generate(DemoConfig(task="reach", episodes=1, out=str(plain)), progress=False)
    with pytest.raises(DemoError, match=r"holds no depth.*depth=true"):
        load_demo_episodes(plain, 2, pointmap_box=(LO, HI))
