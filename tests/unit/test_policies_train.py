"""The RL training loop end to end on the toy pixel task: outputs, resume, NaN handling, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from video2reward.cli.main import main as v2r
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore
from video2reward.policies.drqv2 import DrQV2Config
from video2reward.policies.replay import STORE_NAME
from video2reward.policies.toy_env import PointReachEnv
from video2reward.policies.train import (
    REPLAY_DIR,
    TrainConfig,
    make_task_env,
    reward_tracking,
    train,
)

TINY_AGENT = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=20)


def tiny(out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "task": "toy", "out": str(out), "image_size": 24, "num_train_frames": 200,
        "seed_steps": 25, "eval_every_frames": 100, "checkpoint_every_frames": 100,
        "num_eval_episodes": 2, "progress_bar": False, "agent": TINY_AGENT,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("learner", ["sync", "thread"])
def test_train_writes_logs_video_curve_checkpoint_and_replay(tmp_path: Path, learner: str) -> None:
    summary = train(tiny(tmp_path / "run", learner=learner))
    run = tmp_path / "run"
    assert summary["frames"] >= 200
    assert summary["updates"] > 0
    assert [int(r["frames"]) for r in rows(run / "eval.csv")][:3] == [0, 100, 200]
    assert (run / "curve.png").stat().st_size > 1000
    assert len(list(run.glob("eval_*.mp4"))) == 3
    assert (run / "agent.pt").exists() and json.loads((run / "state.json").read_text())["step"] > 0
    store = EpisodeStore.open(run / REPLAY_DIR / STORE_NAME)
    assert store.n_episodes == len(rows(run / "train.csv"))
    assert store.episode(0)[keys.IMAGE].shape[1:] == (24, 24, 3)


def test_reward_tracking_windows_success_and_learned_vs_env_correlation() -> None:
    # 8 episodes, window 4 -> windows end at episodes 4, 5, 6, 7, 8 (step 1)
    env = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    learned = [0.0, 2.0, 4.0, 6.0, 5.0, 3.0, 1.0, -1.0]  # tracks, then anti-tracks
    ok = [False, False, True, True, True, True, False, False]
    train_rows = [
        {"frames": str(50 * (i + 1)), "return": str(e), "return_learned": str(lr),
         "success": str(s)} for i, (e, lr, s) in enumerate(zip(env, learned, ok, strict=True))
    ]  # fmt: skip
    t = reward_tracking(train_rows, window=4)
    assert t["frames"].tolist() == [200, 250, 300, 350, 400]
    assert t["success"].tolist() == [0.5, 0.75, 1.0, 0.75, 0.5]
    assert t["corr"][0] == pytest.approx(1.0)
    assert t["corr"][-1] == pytest.approx(-1.0)
    assert np.isfinite(t["corr"]).all()
    oracle_rows = [{**r, "return_learned": "nan"} for r in train_rows]
    assert np.isnan(reward_tracking(oracle_rows, window=4)["corr"]).all()


def test_resume_continues_from_checkpoint_and_restores_replay(tmp_path: Path) -> None:
    first = train(tiny(tmp_path / "run"))
    with pytest.raises(FileExistsError):
        train(tiny(tmp_path / "run"))
    second = train(tiny(tmp_path / "run", num_train_frames=300, resume=True))
    assert second["frames"] >= 300 > first["frames"]
    assert second["updates"] > first["updates"]
    episodes = [int(r["episode"]) for r in rows(tmp_path / "run" / "train.csv")]
    assert episodes == list(range(len(episodes)))  # no episode repeated or skipped


class NaNProprioEnv(PointReachEnv):
    """Emits a NaN end-effector position at the 4th frame of every 2nd episode."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.episodes = 0

    def reset(self, **kw: Any) -> Any:
        self.episodes += 1
        return super().reset(**kw)

    def step(self, action: np.ndarray) -> Any:
        obs, r, term, trunc, info = super().step(action)
        if self.episodes % 2 == 0 and self._t == 4:
            obs[keys.OBS_EE_POS] = np.full(3, np.nan, np.float32)
        return obs, r, term, trunc, info


def test_nan_observation_is_reported_and_never_trained_on(tmp_path: Path) -> None:
    def make(task: str, image_size: int, seed: int, control_hz: float) -> Any:
        return NaNProprioEnv(image_size=image_size, seed=seed)

    summary = train(tiny(tmp_path / "run", num_eval_episodes=0), make_env=make)
    assert summary["nonfinite"] >= 2
    store = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME)
    for i in range(store.n_episodes):
        assert np.isfinite(store.episode(i)["proprio"]).all()
    assert store.n_episodes < summary["episodes"]  # the NaN episodes were dropped


def test_cli_trains_and_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    args = ["rl", "train", "task=toy", "agent=cpu", f"out={out}", "image_size=24",
            "agent_image_size=0", "num_train_frames=100", "seed_steps=25",
            "eval_every_frames=100",
            "num_eval_episodes=1", "agent.batch_size=16", "agent.hidden_dim=32",
            "progress_bar=false", "video=false"]  # fmt: skip
    assert v2r(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames"] >= 100
    assert v2r([*args[:3], "agent.no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert v2r(["rl", "train", "reward=rank2reward"]) == 2  # reward.ckpt is required
    assert "reward.ckpt" in capsys.readouterr().err


def test_make_task_env_builds_the_toy_task() -> None:
    env = make_task_env("toy", 24, 0, 10.0)
    obs, _ = env.reset(seed=0)
    assert obs[keys.OBS_IMAGE].shape == (24, 24, 3)


def _reward_ckpt(tmp_path: Path, method: str) -> Path:
    import torch
    from video2reward.rewards.base import build_model
    from video2reward.rewards.rank2reward import Rank2RewardConfig
    from video2reward.rewards.vip import VIPConfig

    cfg: Any = (Rank2RewardConfig if method == "rank2reward" else VIPConfig)(
        image_size_px=32, embed_dim=8
    )
    model = build_model(cfg, torch.device("cpu"))
    if method == "rank2reward":  # an expert bank, as calibrate() leaves it
        model.expert_bank = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    return model.save(tmp_path / method)


def test_learned_reward_replaces_oracle_and_discriminator_updates_online(tmp_path: Path) -> None:
    from video2reward.policies.train import RewardSpec

    ckpt = _reward_ckpt(tmp_path, "rank2reward")
    spec = RewardSpec(source="model", ckpt=str(ckpt), disc_update_every_steps=10, disc_steps=2,
                      disc_batch=8)
    summary = train(tiny(tmp_path / "run", reward=spec, num_eval_episodes=0))
    assert summary["reward_model_updates"] >= 6 and summary["reward_model_updates"] % 2 == 0
    train_rows = rows(tmp_path / "run" / "train.csv")
    store = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME)
    for i, row in enumerate(train_rows):
        stored = store.episode(i)["reward"][1:]
        # What the agent trains on is the model's reward, not the oracle's.
        assert stored.sum() == pytest.approx(float(row["return_learned"]), rel=1e-4, abs=1e-4)
        assert stored.sum() != pytest.approx(float(row["return"]), rel=1e-3)
    # The online-updated discriminator is checkpointed for resume.
    assert (tmp_path / "run" / "reward_model.pt").exists()


def test_discriminator_schedule_is_one_rule_for_both_drivers(tmp_path: Path) -> None:
    """The trainer shows the discriminator an episode's frames at once, the reward node one
    camera frame at a time: the same frames shown give the same number of bursts and steps."""
    import torch
    from video2reward.rewards.base import load_reward_model
    from video2reward.rewards.rank2reward import OnlineDiscriminator

    ckpt = _reward_ckpt(tmp_path, "rank2reward")
    frames = np.random.default_rng(1).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    discs = [OnlineDiscriminator(load_reward_model(ckpt, torch.device("cpu")), 8, 100,
                                 every_frames=20, steps=3) for _ in range(2)]  # fmt: skip
    bursts = [0, 0]
    for ep in np.split(frames, 4):  # the trainer: one lump of 15 agent-step frames per episode
        discs[0].observe(ep)
        for _ in range(15):  # maybe_update() runs every agent step; one burst at most is owed
            bursts[0] += bool(discs[0].train_if_due())
    for f in frames:  # the reward node: every scored frame
        discs[1].observe(f[None])
        bursts[1] += bool(discs[1].train_if_due())
    assert bursts == [3, 3]  # at 20, 40, 60 frames shown
    assert discs[0].num_updates == discs[1].num_updates == 9
    assert discs[1].shown == 60
    with pytest.raises(ValueError, match="every_frames"):
        OnlineDiscriminator(discs[0].model, 8, 100, every_frames=-1)


def test_reward_alpha_overrides_the_discriminator_weight(tmp_path: Path) -> None:
    import torch
    from video2reward.policies.train import EpisodeRewarder, RewardSpec

    ckpt = _reward_ckpt(tmp_path, "rank2reward")
    rewarder = EpisodeRewarder(RewardSpec(source="model", ckpt=str(ckpt), alpha=0.25),
                               torch.device("cpu"))
    model = rewarder.model
    with torch.no_grad():  # D(s) = sigmoid(2) everywhere: log-odds 2, so alpha shows
        model.disc_head[-1].bias.fill_(2.0)
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        p = torch.sigmoid(model.logits(torch.as_tensor(frames).permute(0, 3, 1, 2).float(),
                                       None))
    expected = (torch.log(p) + 0.25 * 2.0).numpy()[1:]
    got, _ = rewarder.episode_rewards(frames, np.zeros(8, bool))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        RewardSpec(source="model", ckpt=str(ckpt), alpha=float("nan"))
    with pytest.raises(ValueError, match="Rank2Reward"):
        EpisodeRewarder(RewardSpec(source="model", ckpt=str(_reward_ckpt(tmp_path, "vip")),
                                   alpha=0.5), torch.device("cpu"))


def test_simulated_operator_key_labels_the_last_step_and_says_oracle(tmp_path: Path) -> None:
    import torch
    from video2reward.policies.train import EpisodeRewarder, RewardSpec, TrainConfig

    spec = RewardSpec(source="model", ckpt=str(_reward_ckpt(tmp_path, "rank2reward")),
                      success="key")
    rewarder = EpisodeRewarder(spec, torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    passed = np.zeros(8, bool)
    passed[3] = True  # reached the goal mid-episode and moved on: the operator saw it
    _, called = rewarder.episode_rewards(frames, passed)
    assert called.tolist() == [False] * 7 + [True]
    _, called = rewarder.episode_rewards(frames, np.zeros(8, bool))
    assert not called.any()
    _, called = rewarder.episode_rewards(frames, None, agent_frames=False)  # a demonstration
    assert called.tolist() == [False] * 7 + [True]
    with pytest.raises(ValueError, match="key needs"):
        rewarder.episode_rewards(frames, None)
    # the twin's predicate stands in for the operator: never a headline figure
    assert TrainConfig(task="toy", reward=spec).oracle_in_learning


def test_oracle_success_calls_every_step_the_predicate_saw_and_a_demos_last(
        tmp_path: Path) -> None:
    """reward.success=oracle with a learned reward (a diagnostic: a perfect success call):
    the twin's predicate per step on agent episodes; a demonstration, which carries no
    predicate, counts as a success on its last step, as for the key."""
    import torch
    from video2reward.policies.train import EpisodeRewarder, RewardSpec, TrainConfig

    spec = RewardSpec(source="model", ckpt=str(_reward_ckpt(tmp_path, "rank2reward")),
                      success="oracle")
    rewarder = EpisodeRewarder(spec, torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    seen = np.zeros(8, bool)
    seen[[3, 4]] = True
    _, called = rewarder.episode_rewards(frames, seen)
    assert called.tolist() == seen.tolist()
    _, called = rewarder.episode_rewards(frames, None, agent_frames=False)
    assert called.tolist() == [False] * 7 + [True]
    with pytest.raises(ValueError, match="oracle needs"):
        rewarder.episode_rewards(frames, None)
    assert TrainConfig(task="toy", reward=spec).oracle_in_learning


def test_frozen_encoder_features_as_observation(tmp_path: Path) -> None:
    ckpt = _reward_ckpt(tmp_path, "vip")
    summary = train(tiny(tmp_path / "run", obs="features", features_ckpt=str(ckpt)))
    assert summary["updates"] > 0
    store = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME)
    feats = store.episode(0)["features"]
    assert feats.shape[1:] == (8,) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert "img" not in store.data_keys  # features replace pixels in the replay


def test_goal_conditioned_reward_scores_against_the_goal_image_it_is_given(tmp_path: Path) -> None:
    import torch
    from video2reward.policies.train import EpisodeRewarder, RewardSpec

    ckpt = _reward_ckpt(tmp_path, "vip")
    spec = RewardSpec(source="model", ckpt=str(ckpt), goal="env")
    rewarder = EpisodeRewarder(spec, torch.device("cpu"))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ok = np.zeros(5, bool)
    with_goal, _ = rewarder.episode_rewards(frames, ok, goal)
    expected = rewarder.model.score(frames, goal=goal).reward[1:]
    np.testing.assert_allclose(with_goal, expected, rtol=1e-6)
    assert not np.allclose(with_goal, rewarder.episode_rewards(frames, ok, None)[0])

    # the twin renders a goal per episode; an env without goal images is refused up front
    summary = train(tiny(tmp_path / "twin", task="reach", reward=spec, num_train_frames=60,
                         seed_steps=30, num_eval_episodes=0))  # fmt: skip
    assert summary["frames"] >= 60
    learned = [float(r["return_learned"]) for r in rows(tmp_path / "twin" / "train.csv")]
    assert learned and np.isfinite(learned).all()
    with pytest.raises(ValueError, match="goal_image"):
        train(tiny(tmp_path / "toy", reward=spec))

    # reward.goal=photo: one goal image, rendered once at the first scene, for every episode
    photo = RewardSpec(source="model", ckpt=str(ckpt), goal="photo")
    rewarder = EpisodeRewarder(photo, torch.device("cpu"))
    rewarder.photo = goal
    got, _ = rewarder.episode_rewards(frames, ok, None)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    summary = train(tiny(tmp_path / "twin_photo", task="reach", reward=photo,
                         num_train_frames=60, seed_steps=30, num_eval_episodes=0))
    assert summary["frames"] >= 60
    with pytest.raises(ValueError, match="none, env or photo"):
        RewardSpec(source="model", ckpt=str(ckpt), goal="own")


def test_agent_sees_a_downsized_frame_while_rewards_see_the_render(tmp_path: Path) -> None:
    import cv2

    train(tiny(tmp_path / "run", image_size=40, agent_image_size=20, num_train_frames=100))
    ep = EpisodeStore.open(tmp_path / "run" / REPLAY_DIR / STORE_NAME).episode(0)
    assert ep[keys.IMAGE].shape[1:] == (20, 20, 3)
    # the stored frame is the area average of the 40 px render, so the target stays visible
    env = PointReachEnv(image_size=40, seed=0)
    obs, _ = env.reset(seed=0)  # episode 0 of a seed-0 run
    expected = cv2.resize(obs[keys.OBS_IMAGE], (20, 20), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ep[keys.IMAGE][0], expected)
    with pytest.raises(ValueError, match="agent_image_size"):
        tiny(tmp_path / "bad", image_size=40, agent_image_size=64)
