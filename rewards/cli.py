"""``v2r reward train|score|eval``: the command-line shell over rewards.train / base / evaluate.

    v2r reward train method=vip data=demos.zarr out=runs/vip [method.steps=3000] [threads=1]
    v2r reward score ckpt=runs/vip video=clip.mp4 [goal=goal.png] --json
    v2r reward eval ckpt=runs/vip data=heldout.zarr [cf_data=other_task.zarr]

``method=<name>`` picks a file of ``configs/reward_method/`` (it is Hydra's ``reward_method``
group; both spellings work); its fields are overridden as ``method.<field>=value``. ``video``
may be a video file, a VIP frame folder, or an episode store (``episode=i`` picks the episode).
Errors the user can fix (bad video, goal size, missing checkpoint, unknown method or option)
print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from video2reward.configs.compose import ConfigError, compose, run_cli, to_dataclass
from video2reward.rewards.base import METHODS, RewardConfig, RewardError


def _method_overrides(overrides: list[str]) -> list[str]:
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "method":
            if value not in METHODS:
                raise ConfigError(f"unknown method {value!r}; choose one of {sorted(METHODS)}")
            o = f"reward_method={value}"
        out.append(o)
    return out


def _method_config(cfg: DictConfig) -> RewardConfig:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        made = instantiate(cfg.method)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"method config: {cause}") from e
    if not isinstance(made, RewardConfig):
        raise ConfigError(f"method config built {type(made).__name__}, not a RewardConfig")
    return made


def _train(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    from video2reward.rewards.train import TrainConfig, train

    cfg = compose("reward_train", _method_overrides(overrides))
    model_cfg = _method_config(cfg)
    container = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(container, dict):
        raise ConfigError("reward_train config must be a mapping")
    rest = {str(k): v for k, v in container.items() if k != "method"}
    missing = [k for k, v in rest.items() if v == "???"]
    if missing:
        raise ConfigError(f"missing required option {missing[0]}=...")
    train_cfg = to_dataclass(TrainConfig, rest)
    model = train(model_cfg, train_cfg)
    summary = json.loads((Path(train_cfg.out) / "train_summary.json").read_text())
    print(json.dumps(summary))
    return 0 if model is not None else 1


def _required(cfg: DictConfig, *names: str) -> None:
    for n in names:
        if OmegaConf.is_missing(cfg, n):
            raise ConfigError(f"missing required option {n}=...")


def _device(name: str) -> Any:
    from video2reward.compute.device import resolve_device

    try:
        return resolve_device(name)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def read_video_arg(spec: str, episode: int = 0) -> Any:
    """A video file, a frame folder, or episode ``episode`` of a store -> (T, H, W, 3) uint8."""
    from video2reward.rewards.data import read_frame_folder, read_video

    p = Path(spec)
    if p.suffix == ".zarr":
        from video2reward.data import keys
        from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError

        try:
            store = EpisodeStore.open(p)
            return store.episode(episode, [keys.IMAGE])[keys.IMAGE]
        except (EpisodeStoreError, IndexError, ValueError, KeyError) as e:
            raise RewardError(f"cannot read episode {episode} of {p}: {e}") from e
    if p.is_dir():
        return read_frame_folder(p)
    return read_video(p)


def _score(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    from video2reward.rewards.base import load_reward_model
    from video2reward.rewards.data import read_image

    cfg = compose("reward_score", overrides)
    _required(cfg, "ckpt", "video")
    model = load_reward_model(cfg.ckpt, _device(cfg.device))
    frames = read_video_arg(str(cfg.video), int(cfg.episode))
    goal = read_image(cfg.goal) if cfg.goal else None
    check = None if goal is None else model.goal_check(goal)
    if check is not None and not check.ok:  # scored as asked; the node would refuse it
        print(f"warning: {check.message(f'goal {cfg.goal}')}", file=sys.stderr)
    out = model.score(frames, goal)
    if "--json" in flags:
        print(json.dumps({**out.to_json(), "video": str(cfg.video), "goal": cfg.goal or None}))
    else:
        print(f"{model.method}: {len(out.reward)} frames, return {out.reward.sum():.4f}, "
              f"progress {out.progress[0]:.3f} -> {out.progress[-1]:.3f} "
              f"(max {out.progress.max():.3f}); --json for per-frame values")
    return 0


def _eval(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    from video2reward.rewards.base import load_reward_model
    from video2reward.rewards.data import load_episodes
    from video2reward.rewards.evaluate import evaluate

    cfg = compose("reward_eval", overrides)
    _required(cfg, "ckpt", "data")
    model = load_reward_model(cfg.ckpt, _device(cfg.device))
    size = model.config.image_size_px
    data = load_episodes(cfg.data, size, cfg.max_episodes)
    cf = load_episodes(cfg.cf_data, size) if cfg.cf_data else None
    ckpt = Path(cfg.ckpt)
    out = Path(cfg.out) if cfg.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "eval"
    metrics = evaluate(model, data, cf, out)
    metrics["out"] = str(out)
    print(json.dumps(metrics, indent=None if "--compact" in flags else 2, allow_nan=False))
    print(metrics["verdict"], file=sys.stderr)  # the one line to read; stdout stays JSON
    return 0


def _guard(fn: Any, argv: list[str]) -> int:
    def wrapped(overrides: list[str], flags: list[str]) -> int:
        try:
            return int(fn(overrides, flags))
        except (RewardError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run_cli(wrapped, argv)


def train_main(argv: list[str]) -> int:
    return _guard(_train, argv)


def score_main(argv: list[str]) -> int:
    return _guard(_score, argv)


def eval_main(argv: list[str]) -> int:
    return _guard(_eval, argv)


__all__ = ["eval_main", "read_video_arg", "score_main", "train_main"]
