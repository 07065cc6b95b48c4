"""Import human demonstration videos into an episode store: ``v2r record import``.

    v2r record import videos/ out=human.zarr task=push              # every video in the folder
    v2r record import videos/ out=human.zarr task=push image_size=128 fps=10 append=true

    report = import_videos(ImportConfig(videos="videos/", out="human.zarr", task="push"))
    report.imported, report.failed          # [(path, episode)], [(path, reason)]

Each video becomes one episode (``kind="human"``, success true unless ``success=false``, the
file name in the notes) holding ``img`` (centre-cropped to a square and resized to
``image_size`` by ``data.images.prepare_frame``, as every model input is) and ``timestamp``
(seconds from the video's first frame), sampled at ``fps`` (the store's rate). Human videos
carry no robot state or action, so only the reward tools (which read ``img``) use such a store.
Videos stream frame by frame, so long or large videos do not need memory. A video that cannot
be opened or decoded is skipped and named; the others are imported; the command exits 1 when
any video failed.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm
from video2reward.configs.compose import compose, run_cli, to_dataclass
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.images import prepare_frame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class VideoImportError(RuntimeError):
    """One video cannot be imported (unreadable, no frames); the others still are."""


@dataclass(frozen=True)
class ImportConfig:
    videos: str  # a folder of videos (its files with VIDEO_SUFFIXES, sorted) or one video
    out: str  # the zarr store; created unless append
    task: str  # task name written with every episode
    image_size: int = 128  # square frames stored, pixels (reward models resize from here)
    fps: float = 10.0  # frames kept per second of video; also the store's fps attribute
    max_frames: int = 3000  # per video; longer videos are cut (with a note)
    success: bool = True  # label of every imported episode (human demos: successful)
    append: bool = False  # add to an existing store (same image_size and fps)
    overwrite: bool = False  # replace an existing store

    def __post_init__(self) -> None:
        if not self.videos or not self.out or not self.task:
            raise ValueError(
                "videos, out and task are required: v2r record import DIR out=X task=T"
            )
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if not (math.isfinite(self.fps) and 0.5 <= self.fps <= 120.0):
            raise ValueError(f"fps must be in [0.5, 120], got {self.fps}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {self.max_frames}")
        if self.append and self.overwrite:
            raise ValueError("choose append or overwrite, not both")


@dataclass
class ImportReport:
    out: str
    imported: list[tuple[str, int]] = field(default_factory=list)  # (video, episode index)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)
    frames: int = 0


def list_videos(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is neither a video nor a folder of videos")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{p} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return files


def sample_frames(
    path: Path, fps: float, size: int, max_frames: int
) -> Iterator[tuple[float, np.ndarray]]:
    """(t_s, frame) at ``fps`` from a video, decoded one frame at a time."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoImportError("cannot be opened: not a video, truncated or corrupt")
        native = cap.get(cv2.CAP_PROP_FPS)
        native = native if math.isfinite(native) and 1.0 <= native <= 1000.0 else 30.0
        i = kept = 0
        while kept < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            t = i / native
            if t + 1e-9 >= kept / fps:  # keep the first frame at or after each sample time
                yield t, prepare_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)
                kept += 1
            i += 1
        if i == 0:
            raise VideoImportError("has no decodable frames (empty or corrupt)")
    finally:
        cap.release()


def _open_store(cfg: ImportConfig) -> EpisodeStore:
    out = Path(cfg.out)
    if cfg.append:
        store = EpisodeStore.open(out, mode="a")
        intr = store.attrs.get(keys.ATTR_INTRINSICS) or {}
        size = store.episode(0, [keys.IMAGE])[keys.IMAGE].shape[1] if store.n_episodes else None
        if (
            size not in (None, cfg.image_size)
            or intr.get("width", cfg.image_size) != cfg.image_size
        ):
            raise EpisodeStoreError(f"{out} holds {size}px images; import with image_size={size}")
        if abs(store.fps - cfg.fps) > 1e-6:
            raise EpisodeStoreError(f"{out} is at {store.fps} fps; import with fps={store.fps}")
        return store
    out.parent.mkdir(parents=True, exist_ok=True)
    return EpisodeStore.create(out, fps=cfg.fps, source="video-import", overwrite=cfg.overwrite)


def import_videos(cfg: ImportConfig, progress: bool = False) -> ImportReport:
    """Import every video; a failing one is recorded in the report and skipped."""
    videos = list_videos(cfg.videos)
    if cfg.overwrite and Path(cfg.out).exists():
        import shutil

        shutil.rmtree(cfg.out)
    store = _open_store(cfg)
    report = ImportReport(out=cfg.out)
    for path in tqdm(videos, desc="import", unit="video", disable=not progress):
        writer = store.begin_episode(task=cfg.task, kind="human", notes=path.name, flush_every=64)
        try:
            n = 0
            for t, frame in sample_frames(path, cfg.fps, cfg.image_size, cfg.max_frames):
                writer.add(**{keys.IMAGE: frame, keys.TIMESTAMP: np.float64(t)})
                n += 1
            if n < 2:
                raise VideoImportError(f"has {n} frame at {cfg.fps} fps; an episode needs 2")
            if n >= cfg.max_frames:
                writer.notes += f"; cut at max_frames={cfg.max_frames}"
            writer.set_success(cfg.success)
            report.imported.append((str(path), writer.close()))
            report.frames += n
        except (VideoImportError, cv2.error, ValueError) as e:
            writer.discard()
            report.failed.append((str(path), str(e)))
    return report


def _run(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print("options (key=value):", ", ".join(ImportConfig.__dataclass_fields__))
        return 0
    cfg = to_dataclass(ImportConfig, compose("record_import", overrides))
    try:
        report = import_videos(cfg, progress=sys.stderr.isatty())
    except (FileNotFoundError, EpisodeStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, reason in report.failed:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    print(
        json.dumps(
            {
                "out": report.out,
                "imported": len(report.imported),
                "frames": report.frames,
                "failed": [p for p, _ in report.failed],
            },
            indent=2,
        )
    )
    return 1 if report.failed else 0


def main(argv: list[str]) -> int:
    from video2reward.robot.recorder_cli import positional

    return run_cli(_run, positional(argv, "videos"))
