"""Synthetic task videos for tests and benchmarks: a blob that moves to a goal marker.

    store = synthetic_store(n_expert=20, n_failed=10, size_px=64, seed=0)   # in-memory zarr
    frames, success = blob_episode(np.random.default_rng(0), kind="expert")

An expert episode moves a red disc from a random start to a green target square (with small
jitter) and ends on it; a "failed" one heads to a wrong spot and stops short; a "random" one
jitters around its start. Task "reach" has a grey floor, task "push" a bluish floor and a
yellow disc, so a goal image from one task is a counterfactual goal for the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore

if TYPE_CHECKING:
    from video2reward.rewards.data import VideoDataset

_FLOOR = {"reach": (120, 120, 120), "push": (90, 110, 150)}
_AGENT = {"reach": (220, 40, 40), "push": (230, 200, 40)}


def blob_episode(
    rng: np.random.Generator, kind: str = "expert", task: str = "reach", size_px: int = 64,
    length: int = 30,
) -> tuple[np.ndarray, bool]:
    """One episode (T, size, size, 3) uint8 and whether it succeeded."""
    if kind not in ("expert", "failed", "random"):
        raise ValueError(f"kind must be expert, failed or random, got {kind!r}")
    s = size_px
    margin = s // 8
    start = rng.uniform(margin, s - margin, 2)
    target = rng.uniform(margin, s - margin, 2)
    while np.linalg.norm(target - start) < s / 3:
        target = rng.uniform(margin, s - margin, 2)
    if kind == "expert":
        end = target
    elif kind == "failed":
        wrong = rng.uniform(margin, s - margin, 2)
        end = start + 0.5 * (wrong - start)
    else:
        end = start
    speed = np.linspace(0, 1, length) ** rng.uniform(0.8, 1.25)
    path = start[None] + speed[:, None] * (end - start)[None]
    if kind == "random":
        path = path + np.cumsum(rng.normal(0, 1.0, (length, 2)), 0)
    path = path + rng.normal(0, 0.3, path.shape)
    frames = np.empty((length, s, s, 3), np.uint8)
    r = max(2, s // 12)
    for t in range(length):
        img = np.full((s, s, 3), _FLOOR[task], np.uint8)
        tx, ty = (round(float(v)) for v in target)
        cv2.rectangle(img, (tx - r, ty - r), (tx + r, ty + r), (40, 200, 60), -1)
        px, py = (round(float(v)) for v in np.clip(path[t], 0, s - 1))
        cv2.circle(img, (px, py), r, _AGENT[task], -1)
        frames[t] = img
    return frames, kind == "expert"


def synthetic_store(
    n_expert: int = 20, n_failed: int = 10, n_random: int = 0, size_px: int = 64,
    length: int = 30, task: str = "reach", seed: int = 0, path: str | None = None,
) -> EpisodeStore:
    """An episode store (in memory, or at ``path``) of blob episodes."""
    rng = np.random.default_rng(seed)
    store = (EpisodeStore.in_memory(fps=10.0) if path is None
             else EpisodeStore.create(path, fps=10.0, overwrite=True))
    for kind, n in (("expert", n_expert), ("failed", n_failed), ("random", n_random)):
        for _ in range(n):
            frames, ok = blob_episode(rng, kind, task, size_px, length)
            store.append_episode({keys.IMAGE: frames}, task=task, success=ok, kind=kind)
    return store


def bar_video(rng: np.random.Generator, n: int = 10, size_px: int = 32) -> np.ndarray:
    """(n, size, size, 3) uint8: a vertical bar of a random colour that moves one column of
    size/8 pixels to the right per frame, wrapping around. Deterministic dynamics: the next
    frame is predictable from the ones before (the generative rewards' tests)."""
    w = size_px // 8
    x0, colour = int(rng.integers(0, 8)), rng.integers(150, 256, 3)
    v = np.full((n, size_px, size_px, 3), 30, np.uint8)
    for t in range(n):
        x = w * ((x0 + t) % 8)
        v[t, :, x : x + w] = colour
    return v


def bar_dataset(n: int, seed: int, size_px: int = 32) -> VideoDataset:
    """``n`` :func:`bar_video` episodes as a training set of successful expert videos."""
    from video2reward.rewards.data import EpisodeInfo, VideoDataset

    rng = np.random.default_rng(seed)
    infos = [EpisodeInfo(f"bar{i}", True, "bar", "expert") for i in range(n)]
    return VideoDataset([bar_video(rng, size_px=size_px) for _ in range(n)], infos, size_px)
