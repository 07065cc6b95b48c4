"""``v2r record info``, ``export`` and ``import``: look into an episode store, get data out and in.

    v2r record info demos.zarr                     # summary; --episodes lists each one; --json
    v2r record export demos.zarr episode=3 out=ep3.mp4 scale=4
    v2r record export demos.zarr format=lerobot out=demos_lerobot/   # LeRobot v3.0 folder
    v2r record import demos_lerobot/ out=demos.zarr  # a LeRobot folder (meta/info.json) ...
    v2r record import videos/ out=human.zarr task=push                # ... or human videos

``info`` also reports how much the compressor saves on disk and whether the store holds rows
of an unfinished (crashed) episode, which the next writer drops.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from video2reward.configs.compose import ConfigError, compose, run_cli, to_dataclass
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.lerobot import (
    CAMERA,
    CODECS,
    LeRobotFormatError,
    LeRobotImportConfig,
    export_lerobot,
    import_lerobot,
    is_lerobot_folder,
)

_PLAIN = re.compile(r"^[A-Za-z0-9_./:~+-]+$")


def positional(argv: list[str], key: str) -> list[str]:
    """Turn the first bare argument (``videos/``) into the override ``key=videos/``."""
    out, done = [], False
    for a in argv:
        if not done and "=" not in a and not a.startswith("-"):
            value = (
                a if _PLAIN.match(a) else "'" + a.replace("\\", "\\\\").replace("'", "\\'") + "'"
            )
            out.append(f"{key}={value}")
            done = True
        else:
            out.append(a)
    return out


def _dir_bytes(path: str | None) -> int:
    if not path:
        return 0
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def store_info(store: EpisodeStore) -> dict[str, Any]:
    """Everything ``v2r record info`` prints, as a dict."""
    s = store.summary()
    n = store.n_episodes
    meta = store.root["meta"]
    lengths = np.diff(np.concatenate([[0], store.episode_ends])) if n else np.zeros(0, int)
    kinds = Counter(str(k) for k in meta[keys.EPISODE_KIND][:]) if n else Counter()
    tasks = Counter(str(t) for t in meta[keys.EPISODE_TASK][:]) if n else Counter()
    data = store.root["data"]
    raw = sum(int(np.prod(data[k].shape)) * data[k].dtype.itemsize for k in store.data_keys)
    on_disk = _dir_bytes(store.path)
    rows = max((int(data[k].shape[0]) for k in store.data_keys), default=0)
    return {
        "path": store.path,
        "source": store.attrs.get(keys.ATTR_SOURCE),
        "fps": store.fps,
        "episodes": n,
        "steps": s["steps"],
        "duration_s": round(s["steps"] / store.fps, 2),
        "success_rate": s["success_rate"],
        "kinds": dict(kinds),
        "tasks": dict(tasks),
        "length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "max": int(lengths.max()),
        }
        if n
        else None,
        "data": {k: f"{data[k].dtype}{list(data[k].shape[1:])}" for k in store.data_keys},
        "camera_intrinsics": store.attrs.get(keys.ATTR_INTRINSICS),
        "bytes_raw": raw,
        "bytes_on_disk": on_disk,
        "compression_ratio": round(raw / on_disk, 2) if on_disk else None,
        "unfinished_rows": rows - s["steps"],
    }


def episode_rows(store: EpisodeStore) -> list[dict[str, Any]]:
    out = []
    for i in range(store.n_episodes):
        m = store.episode_meta(i)
        out.append(
            {
                "episode": i,
                "length": m["length"],
                "success": m[keys.EPISODE_SUCCESS],
                "task": m[keys.EPISODE_TASK],
                "kind": m[keys.EPISODE_KIND],
                "notes": m[keys.EPISODE_NOTES],
            }
        )
    return out


def info_main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    if "--help" in flags or "-h" in flags or len(args) != 1:
        print("usage: v2r record info STORE.zarr [--episodes] [--json]", file=sys.stderr)
        return 0 if args or flags else 2
    try:
        store = EpisodeStore.open(args[0].removeprefix("store="))
    except EpisodeStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = store_info(store)
    if "--episodes" in flags:
        info["per_episode"] = episode_rows(store)
    if "--json" in flags:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for k, v in info.items():
        if k != "per_episode":
            print(f"{k:>18}: {v}")
    for row in info.get("per_episode", []):
        label = "success" if row["success"] else "failure"
        print(
            f"  ep {row['episode']:4d}  {row['length']:5d} rows  {label:7s}  {row['kind']:7s}  "
            f"{row['task']}  {row['notes']}"
        )
    if info["unfinished_rows"]:
        print(
            f"note: {info['unfinished_rows']} rows of an unfinished episode follow the last "
            "one (a crash); the next recorder or import drops them"
        )
    return 0


@dataclass(frozen=True)
class ExportConfig:
    store: str  # the zarr store
    episode: int  # index; negative counts from the end
    out: str = ""  # the mp4 ('' = <store stem>_ep<N>.mp4 beside the store)
    fps: float = 0.0  # 0 = the store's fps
    scale: int = 1  # integer upscaling (nearest), e.g. 4 for 84 px frames
    format: str = "mp4"  # "mp4": one episode; "lerobot": every episode, a LeRobot v3.0 folder
    camera: str = CAMERA  # format=lerobot: images become observation.images.<camera>
    codec: str = "h264"  # format=lerobot: "h264" (libx264) or "av1" (libsvtav1)

    def __post_init__(self) -> None:
        if not self.store:
            raise ValueError("usage: v2r record export STORE.zarr episode=N out=ep.mp4")
        if self.format not in ("mp4", "lerobot"):
            raise ValueError(f"format must be mp4 or lerobot, got {self.format!r}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if self.format == "lerobot" and (self.episode != -1 or self.fps or self.scale != 1):
            raise ValueError(
                "format=lerobot writes every episode at the store's fps, unscaled: "
                "leave episode, fps and scale unset"
            )
        if not 1 <= self.scale <= 16:
            raise ValueError(f"scale must be in [1, 16], got {self.scale}")
        if self.fps < 0 or self.fps > 240:
            raise ValueError(f"fps must be in [0, 240] (0 = the store's), got {self.fps}")


def export_episode(cfg: ExportConfig) -> Path:
    import imageio.v2 as imageio

    store = EpisodeStore.open(cfg.store)
    if keys.IMAGE not in store.data_keys:
        raise EpisodeStoreError(f"{cfg.store} has no data/{keys.IMAGE} to export")
    i = cfg.episode % store.n_episodes if -store.n_episodes <= cfg.episode < 0 else cfg.episode
    frames = store.episode(i, [keys.IMAGE])[keys.IMAGE]
    if cfg.scale > 1:
        frames = frames.repeat(cfg.scale, axis=1).repeat(cfg.scale, axis=2)
    if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sides
        frames = np.pad(
            frames,
            ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)),
            mode="edge",
        )
    out = Path(cfg.out or Path(cfg.store).with_name(f"{Path(cfg.store).stem}_ep{i}.mp4"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fps = cfg.fps or store.fps
    writer: Any = imageio.get_writer(
        out, fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p"
    )
    with writer:
        for f in frames:
            writer.append_data(f)
    return out


def _export(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    cfg = to_dataclass(ExportConfig, compose("record_export", overrides))
    try:
        if cfg.format == "lerobot":
            out = Path(cfg.out or Path(cfg.store).with_name(f"{Path(cfg.store).stem}_lerobot"))
            report = export_lerobot(cfg.store, out, camera=cfg.camera, codec=cfg.codec)
            print(json.dumps(report.__dict__, indent=2))
            return 0
        print(export_episode(cfg))
    except (EpisodeStoreError, LeRobotFormatError, FileExistsError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def export_main(argv: list[str]) -> int:
    return run_cli(_export, positional(argv, "store"))


def _import_typed(
    cls: Any, run: Any, errors: tuple[type[Exception], ...], label: str,
    overrides: list[str], flags: list[str], src: str | None,
) -> int:
    """Build ``cls`` from key=value overrides (typed: unknown keys and malformed values are
    named), run the import, print its summary as JSON; exit code 2 on ``errors``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "--help" in flags or "-h" in flags:
        print(__doc__)
        print("options (key=value):", ", ".join(cls.__dataclass_fields__))
        return 0
    try:
        base = OmegaConf.structured(cls)
        OmegaConf.set_readonly(base, False)
        given = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"record import ({label}): {e}") from e
    cfg = to_dataclass(cls, given, **({"src": src} if src is not None else {}))
    try:
        summary = run(cfg)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict() if hasattr(summary, "as_dict") else summary.__dict__,
                     indent=2))  # fmt: skip
    return 0


def import_main(argv: list[str]) -> int:
    """``v2r record import SRC``: a LeRobot v3.0 folder (SRC holds meta/info.json, or the command
    says ``format=lerobot``) or an MCAP bag of the graph (``format=bag``, or a file starting
    with MCAP's magic bytes: data/bag_import.py) into an episode store; anything else is a
    folder of human demonstration videos (data/video_import.py)."""
    formats = [a.partition("=")[2] for a in argv if a.startswith("format=")]
    rest = [a for a in argv if not a.startswith("format=")]
    fmt = formats[-1] if formats else ""
    if fmt not in ("", "lerobot", "bag", "videos"):
        print(f"error: format must be lerobot, bag or videos, got {fmt!r}", file=sys.stderr)
        return 2
    bare = next((a for a in rest if "=" not in a and not a.startswith("-")), None)
    named = [a.partition("=")[2] for a in rest if a.startswith(("src=", "videos="))]
    src = bare if bare is not None else (named[-1] if named else "")
    overrides = [
        "src=" + a.partition("=")[2] if a.startswith("videos=") else a
        for a in rest
        if a is not bare
    ]
    if fmt == "lerobot" or (not fmt and src and is_lerobot_folder(src)):
        return run_cli(lambda o, f: _import_typed(
            LeRobotImportConfig, import_lerobot, (EpisodeStoreError, LeRobotFormatError),
            "LeRobot", o, f, bare), overrides)  # fmt: skip
    from video2reward.data.bag_import import is_bag_file  # rclpy only when a bag is read

    if fmt == "bag" or (not fmt and src and is_bag_file(src)):
        from video2reward.data.bag_import import BagImportConfig, BagImportError, import_bag_config
        from video2reward.ros.bag import BagError

        return run_cli(lambda o, f: _import_typed(
            BagImportConfig, import_bag_config, (EpisodeStoreError, BagImportError, BagError),
            "bag", o, f, bare), overrides)  # fmt: skip
    from video2reward.data.video_import import main as import_videos_main

    return import_videos_main(rest)
