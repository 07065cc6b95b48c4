"""Generate scripted episodes in the twin: ``v2r sim demos``.

    v2r sim demos task=push episodes=50 out=demos.zarr            # expert demos
    v2r sim demos task=push episodes=20 kind=[expert,failed] out=heldout.zarr video=true

Writes a zarr episode store (``data.episode_store`` layout: images, EE pose, joints, gripper,
the action actually applied, timestamps, oracle reward, per-step and per-episode success, task,
kind; camera intrinsics and fps as attributes), a JSON summary and a contact sheet PNG of
first/last frames beside it, and optionally an mp4 per episode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from video2reward.configs.compose import compose, run_cli, to_dataclass
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.pointmap import depth_mm
from video2reward.sim.env import EnvConfig, XArm5Env
from video2reward.sim.experts import KINDS, make_policy
from video2reward.sim.tasks import TASKS


@dataclass(frozen=True)
class DemoConfig:
    task: str = "push"
    episodes: int = 20
    kind: str | tuple[str, ...] = "expert"
    out: str = "runs/demos.zarr"
    image_size: int = 84
    control_hz: float = 10.0
    seed: int = 0
    noise: float = 0.05
    video: bool = False
    video_size: int = 256
    overwrite: bool = False
    append: bool = False
    # Also record depth aligned to the images (data/depth, uint16 mm): demonstrations for a
    # point-map policy (data/pointmap.py).
    depth: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASKS)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")
        kinds = self.kinds
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown kind {bad or kinds!r}; choose from {KINDS}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")
        if not 16 <= self.video_size <= 480:
            raise ValueError(f"video_size must be in [16, 480], got {self.video_size}")
        if self.overwrite and self.append:
            raise ValueError("choose overwrite or append, not both")

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind,) if isinstance(self.kind, str) else tuple(self.kind)


def record_episode(
    env: XArm5Env, kind: str, seed: int, noise: float, video_size: int | None = None
) -> tuple[dict[str, np.ndarray], bool, list[np.ndarray]]:
    """Run one scripted episode; returns per-step arrays, success and optional video frames."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    policy = make_policy(env, kind, rng, noise=noise if kind == "expert" else 0.0)
    policy.reset()
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            keys.IMAGE,
            keys.EE_POS,
            keys.EE_QUAT,
            keys.JOINT_POS,
            keys.GRIPPER,
            keys.ACTION,
            keys.TIMESTAMP,
            keys.ORACLE_REWARD,
            keys.SUCCESS,
            *((keys.DEPTH,) if env.config.depth else ()),
        )
    }
    frames: list[np.ndarray] = []
    ever_success = False

    def observe(obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        rows[keys.IMAGE].append(obs[keys.OBS_IMAGE])
        rows[keys.EE_POS].append(obs[keys.OBS_EE_POS])
        rows[keys.EE_QUAT].append(env.twin.tcp_quat().astype(np.float32))
        rows[keys.JOINT_POS].append(obs[keys.OBS_JOINT_POS])
        rows[keys.GRIPPER].append(obs[keys.OBS_GRIPPER])
        rows[keys.TIMESTAMP].append(info["time_s"])
        rows[keys.ORACLE_REWARD].append(info["oracle_reward"])
        rows[keys.SUCCESS].append(info["success"])
        if env.config.depth:
            rows[keys.DEPTH].append(depth_mm(obs[keys.OBS_DEPTH]))
        if video_size:
            frames.append(env.twin.render(video_size))

    observe(obs, info)
    for _ in range(env.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        rows[keys.ACTION].append(info["applied_action"])
        ever_success |= bool(info["success"])
        observe(obs, info)
        if terminated or truncated:
            break
    rows[keys.ACTION].append(np.zeros(keys.ACTION_DIM, np.float32))  # final row: no command
    dtypes = {keys.TIMESTAMP: np.float64, keys.SUCCESS: bool, keys.ORACLE_REWARD: np.float32}
    data = {k: np.asarray(v, dtype=dtypes.get(k)) for k, v in rows.items()}
    for k in (keys.EE_POS, keys.EE_QUAT, keys.JOINT_POS, keys.GRIPPER, keys.ACTION):
        data[k] = data[k].astype(np.float32)
    return data, ever_success, frames


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(
        str(path), fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
    ) as w:
        for f in frames:
            w.append_data(f)  # type: ignore[attr-defined]


def contact_sheet(path: Path, store: EpisodeStore, max_rows: int = 8) -> None:
    """First and last frame of up to ``max_rows`` episodes, labelled with the outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_rows, store.n_episodes)
    fig, axes = plt.subplots(n, 2, figsize=(4, 2 * n), squeeze=False)
    for i in range(n):
        img = store.episode(i, [keys.IMAGE])[keys.IMAGE]
        meta = store.episode_meta(i)
        for j, (frame, label) in enumerate(((img[0], "first"), (img[-1], "last"))):
            ax = axes[i, j]
            ax.imshow(frame)
            ax.set_axis_off()
            ok = "success" if meta[keys.EPISODE_SUCCESS] else "no success"
            ax.set_title(
                f"ep {i} {meta[keys.EPISODE_KIND]} {label}" + (f": {ok}" if j else ""), fontsize=7
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generate(cfg: DemoConfig, progress: bool = True) -> dict[str, Any]:
    out = Path(cfg.out)
    env = XArm5Env(EnvConfig(task=cfg.task, image_size=cfg.image_size, control_hz=cfg.control_hz,
                             depth=cfg.depth))  # fmt: skip
    try:
        if cfg.append:
            store = EpisodeStore.open(out, mode="a")
            if store.attrs.get(keys.ATTR_INTRINSICS, {}).get("width") != float(cfg.image_size):
                raise EpisodeStoreError(f"{out} holds another image size; append needs the same")
            if (keys.DEPTH in store.data_keys) != cfg.depth:
                raise EpisodeStoreError(f"{out} {'has' if not cfg.depth else 'lacks'} depth; "
                                        f"append with depth={str(not cfg.depth).lower()}")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            store = EpisodeStore.create(
                out,
                fps=cfg.control_hz,
                intrinsics=env.intrinsics(),
                source="twin",
                overwrite=cfg.overwrite,
                **{keys.ATTR_T_BASE_CAM: env.config.camera.T_base_cam().tolist()},
            )
        video_dir = out.parent / f"{out.stem}_videos"
        if cfg.video:
            video_dir.mkdir(parents=True, exist_ok=True)
        first = store.n_episodes
        successes: dict[str, list[bool]] = {}
        bar = tqdm(range(cfg.episodes), desc=f"{cfg.task} demos", unit="ep", disable=not progress)
        for i in bar:
            kind = cfg.kinds[i % len(cfg.kinds)]
            seed = cfg.seed + first + i
            data, ok, frames = record_episode(
                env, kind, seed, cfg.noise, cfg.video_size if cfg.video else None
            )
            idx = store.append_episode(
                data, task=cfg.task, success=ok, kind=kind, notes=f"seed={seed}"
            )
            if cfg.video:
                write_video(video_dir / f"episode_{idx:03d}.mp4", frames, cfg.control_hz)
            successes.setdefault(kind, []).append(ok)
            bar.set_postfix({k: f"{np.mean(v):.0%}" for k, v in successes.items()})
    finally:
        env.close()
    summary = store.summary()
    summary["this_run"] = {
        "config": asdict(cfg),
        "success_rate_by_kind": {k: float(np.mean(v)) for k, v in successes.items()},
        "videos": str(video_dir) if cfg.video else None,
    }
    (out.parent / f"{out.stem}_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    contact_sheet(out.parent / f"{out.stem}_summary.png", store)
    return summary


def _run(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print("options (key=value):", ", ".join(DemoConfig.__dataclass_fields__))
        return 0
    cfg = to_dataclass(DemoConfig, compose("sim_demos", overrides))
    try:
        summary = generate(cfg)
    except EpisodeStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {k: summary[k] for k in ("path", "episodes", "steps", "success_rate")}
            | {"by_kind": summary["this_run"]["success_rate_by_kind"]},
            indent=2,
        )
    )
    print(f"summary: {Path(cfg.out).parent / (Path(cfg.out).stem + '_summary.json')}")
    return 0


def main(argv: list[str]) -> int:
    return run_cli(_run, argv)
