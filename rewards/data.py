"""Demonstration videos for reward learning: loading, resizing, sampling and augmentation.

    data = load_episodes("demos.zarr", image_size_px=84)     # or a folder of mp4/avi files,
    data = load_episodes("vip_videos/", image_size_px=84)    # or VIP's videoN/0.png layout
    x = data.frames_tensor(ep_idx, t_idx, device)            # (N, 3, S, S) float in [0, 255]
    x = augment(x.view(B, K, 3, S, S), "rctraj", rng)        # one crop for a sample's K frames

Every episode is resized once, on load, to the method's square input size (``image_size_px``),
and kept as uint8 in one array, so a training batch is a single fancy-indexing gather.
Sources: an episode store written by the recorder/twin (``data/img``, ``meta/episode_ends``,
success/task/kind labels), a folder of videos (one per demonstration; OpenCV reads them), a
single video file, or VIP's layout (one folder per video holding ``0.png, 1.png, ...``).
Unreadable or empty videos raise :class:`~video2reward.rewards.base.RewardError` naming the file.

Augmentations, applied to (B, K, 3, H, W) batches where K frames belong to one sample:
- ``rctraj``: VIP's trajectory-consistent random resized crop (one crop per sample, all K
  frames), scale in [crop_scale_min, 1], aspect ratio in [3/4, 4/3], resized back to H x W.
- ``shift``: DrQ-v2's random shift (pad 4 px with edge pixels, crop back), one shift per
  sample; Rank2Reward's official code uses it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from video2reward.compute.device import from_host
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.data.images import prepare_frames
from video2reward.rewards.base import RewardError, check_frames, hwc_to_input

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Datasets up to this size are copied once to the training device (uint8) and batches are
# gathered there; larger ones are gathered on the host and copied per batch.
DEVICE_FRAMES_MAX_BYTES = 4 << 30

# Time-based objectives stop this many frames after an episode's first successful frame
# (RewardModel.default_trim_after_success); HOLD-R and TCN read the rest as at-goal frames.
KEEP_AFTER_SUCCESS = 2


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    source: str  # file, folder or "store.zarr#index" the episode came from
    success: bool  # stores carry labels; videos without labels count as successful demos
    task: str
    kind: str  # "expert", "failed", "random", ...
    notes: str = ""  # the store's meta/episode_notes (the twin writes "seed=N": same scene)
    first_success: int = -1  # first frame labelled successful (data/success), -1 if unknown

    @property
    def is_demo(self) -> bool:
        """A successful expert demonstration: what reward learning trains on."""
        return self.success and self.kind in ("expert", "teleop", "human")


class VideoDataset:
    """Episodes prepared to one square size (``data.images.prepare_frames``: centre square crop,
    then resize), stored as one uint8 array plus episode offsets."""

    def __init__(self, videos: Sequence[np.ndarray], infos: Sequence[EpisodeInfo], size_px: int):
        if len(videos) != len(infos):
            raise ValueError("videos and infos must have the same length")
        if not videos:
            raise RewardError("no episodes to load")
        self.size_px = int(size_px)
        self.infos = list(infos)
        resized = [prepare_frames(check_frames(v, f"episode {i.source}"), self.size_px)
                   for v, i in zip(videos, infos, strict=True)]
        self.lengths = np.array([len(v) for v in resized], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.frames = np.concatenate(resized)  # (sum T, S, S, 3) uint8
        # first successful frame per episode, -1 where success is not labelled per step
        self.first_success = np.array([i.first_success for i in self.infos], dtype=np.int64)
        self._on_device: dict[str, torch.Tensor] = {}  # frames_on's copies, by device

    def __len__(self) -> int:
        return len(self.infos)

    def episode(self, i: int) -> np.ndarray:
        s = int(self.starts[i])
        return self.frames[s : s + int(self.lengths[i])]

    def subset(self, indices: Sequence[int]) -> VideoDataset:
        idx = [int(i) for i in indices]
        return VideoDataset([self.episode(i) for i in idx], [self.infos[i] for i in idx],
                            self.size_px)

    def select(self, *, kind: str | None = None, success: bool | None = None,
               task: str | None = None) -> list[int]:
        return [i for i, info in enumerate(self.infos)
                if (kind is None or info.kind == kind)
                and (success is None or info.success == success)
                and (task is None or info.task == task)]

    def demos(self) -> VideoDataset:
        """The successful expert demonstrations (what reward learning trains on)."""
        idx = [i for i, info in enumerate(self.infos) if info.is_demo]
        if not idx:
            raise RewardError("no successful expert episodes in the data (meta/episode_kind)")
        return self.subset(idx)

    def trimmed(self, keep_after_success: int) -> VideoDataset:
        """Cut episodes ``keep_after_success`` frames after their first successful frame.

        Scripted demos often hold still once the task is done (the twin's push: success at
        step ~30 of 121); those frames all look alike but sit at different times, which
        only adds label noise to every time-based objective.
        """
        if keep_after_success < 0:
            return self
        cut = self.cut_lengths(keep_after_success)
        videos = [self.episode(i)[: cut[i]] for i in range(len(self))]
        return VideoDataset(videos, self.infos, self.size_px)

    def cut_lengths(self, keep_after_success: int) -> np.ndarray:
        """Episode lengths once cut ``keep_after_success`` frames after the first successful
        frame (at least 3 frames); whole lengths where success is not labelled."""
        first = self.first_success
        cut = np.minimum(self.lengths, np.maximum(3, first + keep_after_success + 1))
        return np.where(first >= 0, cut, self.lengths)

    def sample_at_goal(self, ep: np.ndarray, rng: np.random.Generator, size: int | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Where each episode's goal set starts (its first successful frame, else its last
        frame) and frames drawn uniformly from there to the end of the recording, ``size`` per
        episode (shape ep.shape, or ep.shape + (size,))."""
        first = self.first_success[ep]
        start = np.where(first >= 0, first, self.lengths[ep] - 1)
        span = self.lengths[ep] - start
        if size is not None:
            start_, span_ = start[:, None], span[:, None]
        else:
            start_, span_ = start, span
        shape = ep.shape if size is None else (*ep.shape, size)
        return start, start_ + (rng.random(shape) * span_).astype(np.int64)

    def other_episodes(self, ep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each episode index in ep, a uniformly drawn different one (needs >= 2 episodes)."""
        return (ep + rng.integers(1, len(self), size=len(ep))) % len(self)

    def frames_tensor(self, ep: np.ndarray, t: np.ndarray, device: torch.device) -> torch.Tensor:
        """Frames t of episodes ep (same shapes) -> (N, 3, S, S) float32 in [0, 255]."""
        idx = self.starts[ep] + np.minimum(t, self.lengths[ep] - 1)
        frames = self.frames_on(device)
        if frames is None:  # too large to keep on the device: gather here, copy the batch
            return hwc_to_input(from_host(self.frames[idx], device))
        return hwc_to_input(frames[from_host(idx, device)])

    def frames_on(self, device: torch.device) -> torch.Tensor | None:
        """All frames as a uint8 tensor on ``device`` (kept after the first call), so training
        batches are gathered where they are used; ``None`` above DEVICE_FRAMES_MAX_BYTES.
        On the CPU this is a view of the numpy array (no copy)."""
        device = torch.device(device)
        if device.type == "cpu":
            return torch.from_numpy(self.frames)
        if self.frames.nbytes > DEVICE_FRAMES_MAX_BYTES:
            return None
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.frames).to(device)
        return self._on_device[key]


# ----------------------------------------------------------------------------- readers
def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """A video file -> (T, H, W, 3) uint8 RGB."""
    p = Path(path)
    if not p.is_file():
        raise RewardError(f"video {p} does not exist")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise RewardError(f"video {p} cannot be opened: unreadable or not a video")
        frames = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise RewardError(f"video {p} has no readable frames (empty or corrupt file)")
    return np.stack(frames)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB (alpha dropped, grayscale expanded)."""
    p = Path(path)
    if not p.is_file():
        raise RewardError(f"image {p} does not exist")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise RewardError(f"image {p} is unreadable or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _frame_number(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else -1


def read_frame_folder(path: str | os.PathLike[str]) -> np.ndarray:
    """VIP's layout: a folder of 0.png, 1.png, ... (or .jpg) -> (T, H, W, 3) uint8."""
    p = Path(path)
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                   key=_frame_number)
    if not files:
        raise RewardError(f"frame folder {p} holds no .png/.jpg frames")
    frames = [read_image(f) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise RewardError(f"frame folder {p} mixes image sizes {sorted(shapes)}")
    return np.stack(frames)


def dataset_from_store(
    store: EpisodeStore, image_size_px: int, max_episodes: int | None = None
) -> VideoDataset:
    """Episodes of an open :class:`EpisodeStore` (on disk or in memory)."""
    if keys.IMAGE not in store.data_keys:
        raise RewardError(f"{store.path} has no data/{keys.IMAGE}; it has {store.data_keys}")
    n = store.n_episodes if max_episodes is None else min(max_episodes, store.n_episodes)
    if n == 0:
        raise RewardError(f"episode store {store.path} holds no episodes")
    videos = [store.episode(i, [keys.IMAGE])[keys.IMAGE] for i in range(n)]
    return VideoDataset(videos, [episode_info(store, i) for i in range(n)], image_size_px)


def episode_info(store: EpisodeStore, i: int, first_success: bool = True) -> EpisodeInfo:
    """Episode i's labels; its first successful step where the store labels success per step
    (the twin and the recorder write them) and ``first_success`` asks for it (it reads the
    episode's per-step labels; without it, -1)."""
    meta = store.episode_meta(i)
    first = -1
    if first_success and "success" in store.data_keys:
        steps = np.asarray(store.episode(i, ["success"])["success"]).reshape(-1)
        first = int(np.argmax(steps)) if steps.any() else -1
    return EpisodeInfo(f"{store.path or 'memory'}#{i}", bool(meta[keys.EPISODE_SUCCESS]),
                       str(meta[keys.EPISODE_TASK] or ""), str(meta[keys.EPISODE_KIND] or "expert"),
                       str(meta.get(keys.EPISODE_NOTES) or ""), first)


def is_store_path(p: Path) -> bool:
    return p.suffix == ".zarr" or (p.is_dir() and (p / ".zgroup").exists())


def load_episodes(
    path: str | os.PathLike[str], image_size_px: int, max_episodes: int | None = None
) -> VideoDataset:
    """Load a zarr store, a video file, a folder of videos or a VIP frame-folder layout."""
    p = Path(path)
    if not p.exists():
        raise RewardError(f"data {p} does not exist")
    videos: list[np.ndarray] = []
    infos: list[EpisodeInfo] = []
    if is_store_path(p):
        try:
            store = EpisodeStore.open(p)
        except EpisodeStoreError as e:
            raise RewardError(str(e)) from e
        return dataset_from_store(store, image_size_px, max_episodes)
    elif p.is_file():
        videos.append(read_video(p))
        infos.append(EpisodeInfo(str(p), True, "", "expert"))
    else:
        entries = sorted(p.iterdir(), key=lambda q: (_frame_number(q), q.name))
        vids = [q for q in entries if q.suffix.lower() in VIDEO_SUFFIXES]
        dirs = [q for q in entries if q.is_dir()]
        if vids:
            for q in vids[:max_episodes]:
                videos.append(read_video(q))
                infos.append(EpisodeInfo(str(q), True, "", "expert"))
        elif dirs:
            for q in dirs[:max_episodes]:
                videos.append(read_frame_folder(q))
                infos.append(EpisodeInfo(str(q), True, "", "expert"))
        else:
            raise RewardError(
                f"{p} holds neither videos ({', '.join(VIDEO_SUFFIXES)}) nor frame folders"
            )
    return VideoDataset(videos, infos, image_size_px)


# ----------------------------------------------------------------------------- augmentation
def _crop_grid(boxes: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor:
    """boxes (B, 4) = (cx, cy, w, h) in [-1, 1] coordinates -> grid (B*K, H, W, 2)."""
    b = boxes.shape[0]
    theta = torch.zeros(b, 2, 3, device=boxes.device)
    theta[:, 0, 0] = boxes[:, 2]
    theta[:, 0, 2] = boxes[:, 0]
    theta[:, 1, 1] = boxes[:, 3]
    theta[:, 1, 2] = boxes[:, 1]
    theta = theta.repeat_interleave(k, dim=0)
    return F.affine_grid(theta, [b * k, 3, *shape], align_corners=False)


def random_resized_crop_traj(
    x: torch.Tensor, rng: np.random.Generator, scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """VIP's "rctraj": one random resized crop per sample, shared by its K frames.

    x: (B, K, 3, H, W). Area fraction ~ U(scale), log aspect ~ U(log ratio), as torchvision's
    RandomResizedCrop; the crop is resampled (bilinear) back to H x W.
    """
    b, k, c, h, w = x.shape
    area = rng.uniform(scale[0], scale[1], size=b)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), size=b))
    cw = np.clip(np.sqrt(area * aspect), 0.05, 1.0)  # width fraction
    ch = np.clip(np.sqrt(area / aspect), 0.05, 1.0)
    cx = rng.uniform(-(1 - cw), 1 - cw)
    cy = rng.uniform(-(1 - ch), 1 - ch)
    boxes = from_host(np.stack([cx, cy, cw, ch], 1).astype(np.float32), x.device)
    grid = _crop_grid(boxes, k, (h, w))
    out = F.grid_sample(x.reshape(b * k, c, h, w), grid, mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.reshape(b, k, c, h, w)


def random_shift(x: torch.Tensor, rng: np.random.Generator, pad_px: int = 4) -> torch.Tensor:
    """DrQ-v2's random shift: +-pad_px whole-pixel translation with edge padding, per sample."""
    b, k, c, h, w = x.shape
    sx = rng.integers(-pad_px, pad_px + 1, size=b) * 2.0 / w
    sy = rng.integers(-pad_px, pad_px + 1, size=b) * 2.0 / h
    ones = np.ones(b)
    boxes = from_host(np.stack([sx, sy, ones, ones], 1).astype(np.float32), x.device)
    grid = _crop_grid(boxes, k, (h, w))
    out = F.grid_sample(x.reshape(b * k, c, h, w), grid, mode="nearest",
                        padding_mode="border", align_corners=False)
    return out.reshape(b, k, c, h, w)


def augment(x: torch.Tensor, mode: str, rng: np.random.Generator,
            crop_scale_min: float = 0.2) -> torch.Tensor:
    """x (B, K, 3, H, W) -> same shape; ``mode`` is "none", "shift" or "rctraj"."""
    if mode == "none":
        return x
    if mode == "shift":
        return random_shift(x, rng)
    if mode == "rctraj":
        return random_resized_crop_traj(x, rng, (crop_scale_min, 1.0))
    raise ValueError(f"unknown augmentation {mode!r}")
