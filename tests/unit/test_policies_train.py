"""The RL training loop end to end on the toy pixel task: outputs, resume, NaN handling, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from video2reward.cli.main import main as v2r
from video2reward.policies.drqv2 import DrQV2Config
from video2reward.policies.replay import STORE_NAME
from video2reward.policies.toy_env import PointReachEnv
from video2reward.policies.train import REPLAY_DIR, TrainConfig, make_task_env, train
from video2reward.robot import keys
from video2reward.robot.episode_store import EpisodeStore

TINY_AGENT = DrQV2Config(batch_size=16, hidden_dim=32, feature_dim=16, num_expl_steps=20)


def tiny(out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "task": "toy", "out": str(out), "image_size": 24, "num_train_frames": 200,
        "num_seed_frames": 50, "eval_every_frames": 100, "checkpoint_every_frames": 100,
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
            "num_train_frames=100", "num_seed_frames=50", "eval_every_frames=100",
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
