"""Demonstrations with actions in the learner's replay (RLPD's symmetric sampling).

    demos = load_demo_episodes("runs/main/demos.zarr", action_repeat=2, max_episodes=50)
    buffer = demo_replay(demos, replay_cfg, frame_fn, proprio_fn, rewarder)   # relabelled
    batch = sample_mixed(online_replay, buffer, 256, demo_fraction=0.5)       # 128 + 128 rows

Any episode store whose episodes carry the applied actions (``v2r sim demos``, ``v2r record
teleop``, an imported dataset with actions) seeds a demo buffer. Each update draws a fixed
share of its batch from it (Ball et al. 2023, "Efficient Online RL with Offline Data": half),
and the DrQ-v2 actor adds a behaviour-cloning term on those rows only (``DrQV2Config.bc_weight``).

Demo transitions are rewarded by the same reward model as the agent's own episodes, through the
same function (:meth:`~video2reward.policies.train.EpisodeRewarder.episode_rewards`) on the same
agent-step frames: a demo is relabelled exactly as it would be had the agent played it. Stores
of videos without actions (human videos, ``v2r record import`` of plain mp4) train reward models
only; handing one to the learner is an error that says so.

Agent steps from recorded rows: with ``action_repeat`` k, agent step i goes from row k*i to row
k*(i+1) with the mean of the commands recorded in rows k*i .. k*(i+1)-1 (the recorder's row t
holds the observation before command t and the command applied after it); the last step may
span fewer rows, so the episode's final frame is kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.pointmap import xyz_image
from video2reward.policies.replay import Batch, ReplayBuffer, ReplayConfig

__all__ = [
    "DemoEpisode",
    "DemoError",
    "DemoSpec",
    "add_segment",
    "demo_replay",
    "load_demo_episodes",
    "sample_mixed",
]


@dataclass(frozen=True)
class DemoSpec:
    """Demonstrations with actions in replay; part of both drivers' :class:`LearnSpec
    <video2reward.policies.learner.LearnSpec>` (``demos.*`` in ``v2r rl train``; the learner
    node's ``demos``, ``demo_fraction``, ``demo_max_episodes``, ``pretrain_updates``)."""

    path: str = ""  # episode store with actions ('' = no demonstrations)
    max_episodes: int = 0  # the first N successful episodes (0 = all)
    fraction: float = 0.5  # share of every batch drawn from them (RLPD's symmetric sampling)
    # Updates on demonstration batches alone before the first env step (BC + critic on the
    # relabelled demos): they cost computer time, no robot time. 0 = none (RLPD).
    pretrain_updates: int = 0
    # Self-imitation: an online episode the success call (the reward model's or the operator's
    # key) calls successful joins the demonstrations up to its last called step, so robot time
    # adds scenes to behaviour cloning, not only to the critic.
    add_successes: bool = False

    def __post_init__(self) -> None:
        if self.pretrain_updates < 0:
            raise ValueError(f"demos.pretrain_updates must be >= 0, got {self.pretrain_updates}")
        if self.max_episodes < 0:
            raise ValueError(f"demos.max_episodes must be >= 0, got {self.max_episodes}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"demos.fraction must be in [0, 1), got {self.fraction}")


class DemoError(ValueError):
    """A demonstration store the learner cannot use: no actions, wrong shapes, NaN."""


@dataclass(frozen=True)
class DemoEpisode:
    """One demonstration at agent-step resolution (n agent steps, n + 1 observations)."""

    images: np.ndarray  # (n + 1, H, W, 3) uint8, the observation at each agent step
    proprio: np.ndarray  # (n + 1, 4) float32, ee_pos (3) + gripper (1)
    actions: np.ndarray  # (n, 4) float32, in [-1, 1]
    source: str  # "store.zarr#index"
    # (n + 1, H, W, 3) uint8 point maps of the images (data/pointmap.py), when the learner
    # asked for them (load_demo_episodes' pointmap_box); None otherwise
    xyz: np.ndarray | None = None


def load_demo_episodes(
    path: str | Path,
    action_repeat: int,
    max_episodes: int = 0,
    image_hw: tuple[int, int] | None = None,
    pointmap_box: tuple[Sequence[float], Sequence[float]] | None = None,
) -> list[DemoEpisode]:
    """The successful episodes of a store (kind expert/teleop, or any labelled successful),
    cut into agent steps. Frames are kept as recorded (a robot's 640x480 too): the caller's
    frame function makes the model input (``data.images.prepare_frame``: centre square, then
    resize). ``image_hw``: the size the learner renders; a store whose centre square is
    smaller is refused (it would be upscaled). ``pointmap_box`` (lo_m, hi_m): each kept
    frame's point map too, from the store's depth and its camera calibration (attributes
    ``camera_intrinsics`` and ``T_base_cam``); a store without them is refused."""
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    p = Path(path)
    if not p.exists():
        raise DemoError(f"demonstration store {p} does not exist")
    try:
        store = EpisodeStore.open(p)
    except EpisodeStoreError as e:
        raise DemoError(f"demonstration store {p} is unreadable: {e}") from e
    if keys.ACTION not in store.data_keys:
        raise DemoError(
            f"{p} holds no actions ({keys.ACTION!r}): videos without actions train the reward "
            "model only (v2r reward train); the learner needs demonstrations recorded with "
            "actions (v2r sim demos, v2r record teleop)"
        )
    for k in (keys.IMAGE, keys.EE_POS, keys.GRIPPER):
        if k not in store.data_keys:
            raise DemoError(f"{p} has no {k!r} array; the learner needs images and proprio")
    camera = _store_camera(store, p) if pointmap_box is not None else None
    chosen = store.successful_episodes()
    if max_episodes:
        chosen = chosen[:max_episodes]
    if not chosen:
        raise DemoError(f"{p} has no successful episodes to learn from")
    out = []
    for i in chosen:
        ep = store.episode(i, [keys.IMAGE, keys.EE_POS, keys.GRIPPER, keys.ACTION,
                               *((keys.DEPTH,) if camera is not None else ())])
        src = f"{p}#{i}"
        img, act = np.asarray(ep[keys.IMAGE]), np.asarray(ep[keys.ACTION], np.float32)
        if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise DemoError(f"{src}: images must be (T, H, W, 3) uint8, got {img.dtype}{img.shape}")
        side = min(img.shape[1], img.shape[2])  # the centre square every consumer takes
        if image_hw is not None and side < min(image_hw):
            raise DemoError(f"{src}: images are {img.shape[2]}x{img.shape[1]} px, their centre "
                            f"square smaller than the "
                            f"{image_hw[0]} px the learner renders")
        if act.ndim != 2 or act.shape[1] != keys.ACTION_DIM or len(act) != len(img):
            raise DemoError(f"{src}: actions must be ({len(img)}, {keys.ACTION_DIM}), "
                            f"got {act.shape}")  # fmt: skip
        if not np.isfinite(act).all():
            bad = int(np.argwhere(~np.isfinite(act))[0, 0])
            raise DemoError(f"{src}: action at step {bad} is not finite (NaN/inf)")
        proprio = np.concatenate(
            [np.asarray(ep[keys.EE_POS], np.float32), np.asarray(ep[keys.GRIPPER], np.float32)],
            axis=1,
        )
        if not np.isfinite(proprio).all():
            raise DemoError(f"{src}: ee_pos/gripper hold NaN/inf")
        rows = np.arange(0, len(img), action_repeat)
        if rows[-1] != len(img) - 1:
            rows = np.append(rows, len(img) - 1)  # the last observation ends the last step
        if len(rows) < 2:
            continue
        # The command held over an agent step: the mean of the rows it spans (the recorder's
        # commands may change every row, e.g. teleop); a shorter last step keeps the episode's
        # final (successful) frame.
        held = np.stack([act[a:b].mean(0) for a, b in itertools.pairwise(rows)])
        xyz = None
        if camera is not None and pointmap_box is not None:
            depth = np.asarray(ep[keys.DEPTH])
            if depth.shape != img.shape[:3]:
                raise DemoError(f"{src}: depth {depth.shape} does not match the images "
                                f"{img.shape[:3]}; it must be aligned to colour")  # fmt: skip
            xyz = np.stack([xyz_image(depth[r].astype(np.float32) * keys.DEPTH_SCALE_M, *camera,
                                      *pointmap_box) for r in rows])  # fmt: skip
        out.append(DemoEpisode(img[rows], proprio[rows], np.clip(held, -1.0, 1.0), src, xyz))
    if not out:
        raise DemoError(f"{p}: every successful episode is shorter than one agent step")
    return out


def _store_camera(store: EpisodeStore, p: Path) -> tuple[tuple[float, ...], np.ndarray]:
    """The recording camera's (fx, fy, cx, cy) and T_base_cam, for point maps."""
    if keys.DEPTH not in store.data_keys:
        raise DemoError(
            f"{p} holds no depth ({keys.DEPTH!r}): the point-map policy (pointmap) needs "
            "demonstrations recorded with depth aligned to colour (v2r sim demos depth=true; "
            "the recorder with a depth camera), or run without pointmap"
        )
    k, T = store.attrs.get(keys.ATTR_INTRINSICS), store.attrs.get(keys.ATTR_T_BASE_CAM)
    if not k or T is None:
        raise DemoError(f"{p} has depth but no camera calibration (attributes "
                        f"{keys.ATTR_INTRINSICS!r} and {keys.ATTR_T_BASE_CAM!r}): its pixels "
                        "cannot be placed in the base frame")  # fmt: skip
    return (k["fx"], k["fy"], k["cx"], k["cy"]), np.asarray(T, np.float64)


def row_period_s(path: str | Path) -> float:
    """The store's row period, seconds: the median step of its timestamps within episodes,
    else its declared fps."""
    try:
        store = EpisodeStore.open(Path(path))
    except EpisodeStoreError as e:
        raise DemoError(f"demonstration store {path} is unreadable: {e}") from e
    dt = np.zeros(0)
    if keys.TIMESTAMP in store.data_keys:
        dt = np.concatenate([np.diff(np.asarray(store.episode(i, [keys.TIMESTAMP])[keys.TIMESTAMP],
                                                np.float64)) for i in range(store.n_episodes)])
        dt = dt[np.isfinite(dt) & (dt > 0)]
    return float(np.median(dt)) if dt.size else 1.0 / store.fps


def rows_per_step(path: str | Path, control_hz: float) -> int:
    """How many recorded rows one control step spans: the store's row period
    (:func:`row_period_s`) against ``1 / control_hz``; at least 1."""
    if control_hz <= 0:
        raise ValueError(f"control_hz must be > 0, got {control_hz}")
    return max(1, round(1.0 / control_hz / row_period_s(path)))


def demo_replay(
    demos: list[DemoEpisode],
    cfg: ReplayConfig,
    frame: Callable[..., np.ndarray],
    rewards: Callable[[DemoEpisode], np.ndarray],
    proprio_dim: int,
    frame_shape: tuple[int, ...],
    extra_steps: int = 0,
    terminal_last: bool = False,
) -> ReplayBuffer:
    """An in-memory replay of the demos: ``frame`` turns an (H, W, 3) image (and its point
    map, for demos loaded with them) into what the agent stores (the online path's
    function), ``rewards`` gives each episode's n rewards.
    ``extra_steps`` leaves room for segments added later (interventions). ``terminal_last``:
    each demo's last step is terminal (a demonstration ends at its success, as the learner's
    episodes do when the success call ends them)."""
    steps = sum(len(d.actions) + 1 for d in demos) + extra_steps
    buf = ReplayBuffer(
        ReplayConfig(max(steps, 2), cfg.frame_stack, cfg.nstep, cfg.discount),
        frame_shape,
        keys.ACTION_DIM,
        proprio_dim,
        task="demos",
    )
    for d in demos:
        frames = ([frame(img) for img in d.images] if d.xyz is None else
                  [frame(img, xyz) for img, xyz in zip(d.images, d.xyz, strict=True)])
        add_segment(buf, frames, d.proprio if proprio_dim else None, d.actions, rewards(d),
                    terminated=terminal_last)  # fmt: skip
    return buf


def add_segment(
    buf: ReplayBuffer,
    frames: list[np.ndarray],
    proprio: np.ndarray | list[np.ndarray] | None,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: bool = False,
) -> None:
    """Add n transitions (n + 1 agent frames, n actions and rewards) as one episode
    (``terminated``: its last step is terminal)."""
    r = np.asarray(rewards, np.float32)
    if r.shape != (len(actions),) or len(frames) != len(actions) + 1:
        raise ValueError(
            f"a segment needs n + 1 frames, n actions, n rewards; got {len(frames)}, "
            f"{len(actions)}, {r.shape}"
        )
    p = [None] * len(frames) if proprio is None else proprio
    buf.start_episode(frames[0], p[0])
    for t, a in enumerate(actions):
        buf.add(a, 0.0, frames[t + 1], p[t + 1])
    buf.set_episode_rewards(r)
    buf.end_episode(success=True, terminated=terminated)


def sample_mixed(
    online: ReplayBuffer, demos: ReplayBuffer | None, batch_size: int, demo_fraction: float
) -> Batch:
    """``round(batch_size * demo_fraction)`` demo rows first, then online rows, with the
    ``is_demo`` flags; all online rows when there are no demos."""
    n_demo = round(batch_size * demo_fraction)
    if demos is None or n_demo == 0 or len(demos) == 0:
        return online.sample(batch_size)
    parts = [demos.sample(n_demo)]
    if batch_size - n_demo:
        parts.append(online.sample(batch_size - n_demo))
    flags = np.zeros(batch_size, np.float32)
    flags[:n_demo] = 1.0

    def cat(field: str) -> np.ndarray | None:
        vals = [getattr(b, field) for b in parts]
        return None if vals[0] is None else np.concatenate(vals)

    return Batch(*(cat(f) for f in Batch._fields if f != "is_demo"), is_demo=flags)
