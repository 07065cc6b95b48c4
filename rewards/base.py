"""One interface for every reward model learned from video.

    from video2reward.rewards.base import load_reward_model
    model = load_reward_model("runs/vip")              # a run folder or a .pt file
    out = model.score(frames, goal=goal_img)            # frames (T, H, W, 3) uint8, goal (H, W, 3)
    out.reward, out.progress                            # (T,) float32 each

A method is one file (``vip.py``, ``tcn.py``, ``hold.py``, ``rank2reward.py``, ``uvd.py``) with a
frozen config dataclass and a :class:`RewardModel` subclass that implements four things:
``sample_batch`` (draw a training batch from a :class:`~video2reward.rewards.data.VideoDataset`),
``loss`` (the paper's objective, returning a scalar and a metrics dict), ``calibrate`` (fix the
scale of progress from the training demos, once training ends) and ``_score`` (per-frame
reward and progress for one preprocessed video). Swapping methods is a config change:
:data:`METHODS` maps the config's ``method`` name to the class.

Conventions every method follows, so rewards from different methods compare:
- ``progress[t]`` is the model's estimate of task completion at frame t, ~0 at the start of a
  demonstration and ~1 at its end (it is not clipped: failing runs may go below 0).
- ``reward[t]`` is the reward for arriving at frame t from frame t-1; ``reward[0]`` is the
  reward of the first frame on its own (0 for potential-difference rewards).
- Goal-conditioned methods use ``goal`` when given. Without one they use the demonstrations'
  goal set: the embeddings of the training demos' last frames, stored in the checkpoint, and a
  frame's distance to the goal is its distance to the nearest of them. A lab's demos were
  recorded in scenes that differ a little, as every episode's does, so one of their goals
  usually shows the current scene's goal. One photographed goal shows another scene's:
  Meta-World handle-press, whose handle sits anywhere in a 20 x 10 cm area, reads VIP
  Spearman 0.70-0.83 / AUROC 0.62-0.71 against one goal from another episode and 0.96-0.98 /
  1.00 against the goal set (docs/results.md).

Checkpoints are plain dicts of tensors and builtins, written with ``torch.save`` and read with
``torch.load(weights_only=True)``, so a checkpoint file cannot run code when it is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn
from video2reward.compute.device import from_host, resolve_device
from video2reward.data.images import prepare_frames

if TYPE_CHECKING:
    from video2reward.rewards.data import VideoDataset

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "model.pt"  # inside a run folder

# method name -> "module:Class". Imported on use so one broken method cannot break the others.
METHODS: dict[str, str] = {
    "vip": "video2reward.rewards.vip:VIP",
    "tcn": "video2reward.rewards.tcn:TCN",
    "hold_r": "video2reward.rewards.hold:HoldR",
    "hold_c": "video2reward.rewards.hold:HoldC",
    "rank2reward": "video2reward.rewards.rank2reward:Rank2Reward",
    "uvd": "video2reward.rewards.uvd:UVD",
    "viper": "video2reward.rewards.viper:Viper",
    "diffusion_reward": "video2reward.rewards.diffusion_reward:DiffusionReward",
    "timerewarder": "video2reward.rewards.timerewarder:TimeRewarder",
}


class RewardError(ValueError):
    """Input the user must fix: a bad video, goal, checkpoint or method name."""


class CheckpointError(RewardError):
    """A checkpoint is missing, unreadable, unsafe or from an incompatible version."""


def default_device() -> torch.device:
    return resolve_device("auto")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Fields every method shares. Method configs subclass this and add their own."""

    method: str = ""  # set by each subclass; picks the class in METHODS
    encoder: str = "conv"  # "conv" (DrQ-v2 style, CPU default) or "resnet18"/"resnet34"/"resnet50"
    image_size_px: int = 84  # frames are resized to image_size_px x image_size_px
    embed_dim: int = 64  # encoder output size
    pretrained_path: str = ""  # local torchvision-layout ResNet weights (VIP/R3M); never fetched
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 32  # samples per step (a sample may hold several frames)
    # Training steps. 600 took 165-310 CPU-seconds (one thread) on 40 twin demos at 84 px,
    # i.e. under 10 minutes even on one core of this machine.
    steps: int = 600
    augment: str = "rctraj"  # "none", "shift" (DrQ-v2 random shift), "rctraj" (VIP crop)
    # Smallest crop area for rctraj. VIP uses 0.2 on 224 px Ego4D frames; at 84 px a robot
    # scene needs more context, or the arm leaves the crop.
    crop_scale_min: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        encoders = ("conv", "resnet18", "resnet34", "resnet50")
        if self.encoder not in encoders:
            raise ValueError(f"encoder must be one of {encoders}, got {self.encoder!r}")
        if not 32 <= self.image_size_px <= 512:
            raise ValueError(f"image_size_px must be in [32, 512], got {self.image_size_px}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.augment not in ("none", "shift", "rctraj"):
            raise ValueError(f"augment must be 'none', 'shift' or 'rctraj', got {self.augment!r}")
        if not 0.05 <= self.crop_scale_min <= 1.0:
            raise ValueError(f"crop_scale_min must be in [0.05, 1], got {self.crop_scale_min}")
        if self.pretrained_path and not Path(self.pretrained_path).is_file():
            raise ValueError(f"pretrained_path {self.pretrained_path!r} is not a file")


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    reward: np.ndarray  # (T,) float32, reward for reaching frame t from frame t-1
    progress: np.ndarray  # (T,) float32, ~0 at a demo's start, ~1 at its end
    method: str

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "frames": len(self.reward),
            "reward": [float(x) for x in self.reward],
            "progress": [float(x) for x in self.progress],
        }


# A goal image whose embedding lies farther from every demo goal than this many times the
# demos' own spread (the 90th percentile of each demo goal's distance to its nearest other)
# shows another scene: another task's set-up, a moved camera. Chosen on the development set
# (Meta-World reach, push, drawer-open; VIP, HOLD-R, HOLD-C, seed 0): held-out episodes' own
# goals read at most 1.2, their first frames at least 2.9. docs/results.md has the figures.
GOAL_CHECK_RATIO = 2.0


@dataclasses.dataclass(frozen=True)
class GoalCheck:
    """How a goal image sits against the demos' goals (:meth:`RewardModel.goal_check`)."""

    ratio: float  # distance to the nearest demo goal over the demos' own spread
    demos: int  # demo goals it was compared with

    @property
    def ok(self) -> bool:
        return self.ratio <= GOAL_CHECK_RATIO

    def message(self, what: str) -> str:
        return (f"{what} does not look like the goal of any of the {self.demos} demonstrations "
                f"this reward was trained on: it is {self.ratio:.1f}x farther from the nearest "
                f"demo goal than the demo goals are from each other (refused above "
                f"{GOAL_CHECK_RATIO:g}x). It likely shows another scene, task or camera view, "
                "and a reward scored against it can rise for the wrong motion. Photograph the "
                "goal in this cell with the demos' camera, or give no goal image: the reward "
                "then scores against the demos' own goals")


# ----------------------------------------------------------------------------- input checks
def check_frames(frames: Any, what: str = "frames") -> np.ndarray:
    """Return frames as (T, H, W, 3) uint8 or raise RewardError saying what is wrong."""
    arr = np.asarray(frames)
    if arr.ndim != 4:
        raise RewardError(f"{what} must have shape (T, H, W, 3), got shape {arr.shape}")
    if arr.shape[-1] != 3:
        raise RewardError(
            f"{what} must have 3 colour channels (RGB) in the last axis, got {arr.shape[-1]} "
            f"(shape {arr.shape}); convert grayscale/RGBA to RGB first"
        )
    if arr.shape[0] == 0:
        raise RewardError(f"{what} is empty (0 frames)")
    if arr.dtype != np.uint8:
        raise RewardError(f"{what} must be uint8 in [0, 255], got dtype {arr.dtype}")
    return arr


def check_goal(goal: Any, frame_hw: tuple[int, int]) -> np.ndarray:
    g = np.asarray(goal)
    if g.ndim != 3 or g.shape[-1] != 3:
        raise RewardError(f"goal must have shape (H, W, 3) RGB, got shape {g.shape}")
    if g.dtype != np.uint8:
        raise RewardError(f"goal must be uint8 in [0, 255], got dtype {g.dtype}")
    if tuple(g.shape[:2]) != tuple(frame_hw):
        raise RewardError(
            f"goal is {g.shape[1]}x{g.shape[0]} but the frames are {frame_hw[1]}x{frame_hw[0]}; "
            "give a goal image from the same camera at the same resolution"
        )
    return g


def to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 255], channels_last on ``device``."""
    return hwc_to_input(from_host(frames, device))


def hwc_to_input(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 tensor -> (T, 3, H, W) float32 in [0, 255], channels_last, where it is."""
    return frames.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- the interface
class RewardModel(nn.Module, ABC):
    """Base class of every method; see the module docstring for the contract."""

    method: ClassVar[str]
    config_cls: ClassVar[type[RewardConfig]]
    score_chunk: ClassVar[int] = 64  # frames per forward pass when scoring
    # reward[t] = potential(t) - potential(t-1) (VIP, UVD): a control step's reward is the sum
    # of its frames' rewards at any camera rate. Otherwise a reward of the state (HOLD, TCN,
    # Rank2Reward): the mean of its frames' rewards.
    potential_difference: ClassVar[bool] = False
    # Training cuts demos this many frames after their first successful frame (when the data
    # labels success per step); -1 keeps the idle tail. See rewards/train.py.
    default_trim_after_success: ClassVar[int] = 2
    # progress sums over the episode (VIPER, Diffusion Reward): scoring needs episode bounds
    cumulative_progress: ClassVar[bool] = False
    # Buffers whose first dimension calibration sets from the data (Rank2Reward's expert bank,
    # TimeRewarder's start embeddings): loading a checkpoint takes the saved size.
    data_sized_buffers: ClassVar[tuple[str, ...]] = ()
    # Data-sized buffers that checkpoints written before them lack: such a file loads with the
    # buffer empty, and the method falls back to what it did before (the goal set).
    optional_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: RewardConfig):
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}")
        self.config = config
        # Progress at or above which a frame is called a success: set by training from the
        # demos (:func:`success_threshold`) and kept in the checkpoint, so the trainer, the
        # reward node and the learner call success alike. None: not calibrated (older files).
        self.success_progress: float | None = None

    @property
    def uses_goal(self) -> bool:
        """Whether ``score`` reads the goal image (evaluation runs the counterfactual check)."""
        return True

    @property
    def context_frames(self) -> int:
        """Earlier frames a frame's reward depends on (1: the previous frame at most)."""
        return 1

    @property
    def needs_episode(self) -> bool:
        """Whether a frame can only be scored within its episode: its reward reads more than
        the previous frame, or its progress sums over the episode (VIPER, Diffusion Reward)."""
        return self.context_frames > 1 or self.cumulative_progress

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        for name in self.data_sized_buffers:
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
            elif name in self.optional_buffers:  # an older file: the buffer stays empty
                buf = getattr(self, name)
                setattr(self, name, buf.new_zeros((0, *buf.shape[1:])))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for name in self.optional_buffers:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    def set_frame_stride(self, stride: int) -> None:
        """Score videos whose consecutive frames are ``stride`` frames of the training videos
        apart (the twin trainer scores one frame per agent step, ``action_repeat`` recorded
        frames). Methods whose reward reads no frame spacing ignore it."""
        if stride < 1:
            raise RewardError(f"frame stride must be >= 1, got {stride}")

    # -- training (used by rewards/train.py)
    @abstractmethod
    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one training batch (tensors on this model's device)."""

    @abstractmethod
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's objective on one batch: (scalar loss, metrics for logging).

        Metrics are detached 0-d tensors, left on the device: the training loop reads them
        back only on logging steps (one copy), so a GPU step never waits for the host."""

    def calibrate(self, data: VideoDataset) -> None:
        """After training: fix progress scale / default goal from the training demos."""

    def calibrate_success(self, videos: Sequence[np.ndarray], quantile: float = 0.5) -> float:
        """Set :attr:`success_progress` to the ``quantile`` of the demos' last-frame progress
        (with no goal image; a goal-conditioned model leaves each demo's own goal out of its
        goal set) and return it. ``videos``: (T, H, W, 3) uint8 each.

        The median, not a low quantile: the call feeds a success bonus and success labels,
        where a false call teaches the policy to stop beside the goal while a missed one only
        delays the bonus by a step. On the twin's reach task (benchmarks/bench_success_call.py,
        frames at 0-12 cm from the target) Rank2Reward's call at the demos' median last-frame
        progress was right 85-97% of the times it called success (recall 18-32% of frames
        within 3 cm); at their 10th percentile, 55-61% (recall 53-64%)."""
        if not videos:
            raise RewardError("success calibration needs at least one demonstration")
        last = [float(self._progress_without_own_goal(v)[-1]) for v in videos]
        self.success_progress = float(np.quantile(last, quantile))
        return self.success_progress

    def _progress_without_own_goal(self, video: np.ndarray) -> np.ndarray:
        """A demo's progress with no goal image, its own goal left out of the goal set (the one
        nearest its last frame): a new scene's goal is never in the set, and against its own
        goal every demo would end at progress 1, so the call would wait for an exact match.
        Models without a goal set score as usual."""
        goal_set = getattr(self, "goal_set", None)
        if goal_set is None or len(goal_set) < 2:
            return self.score(video).progress
        last = self._embed_images(check_frames(video)[-1:])
        own = int(torch.cdist(last, goal_set)[0].argmin())
        keep = torch.arange(len(goal_set), device=goal_set.device) != own
        try:
            self.goal_set = goal_set[keep]
            return self.score(video).progress
        finally:
            self.goal_set = goal_set

    def set_bf16(self, on: bool = True) -> None:
        """bf16 autocast of ResNet encoders' conv trunks on CUDA (tensor cores; the embedding
        head and everything after it stay fp32). Raises RewardError off CUDA or for other
        encoders."""
        from video2reward.rewards.encoders import ResNet

        resnets = [m for m in self.modules() if isinstance(m, ResNet)]
        if on and self.device.type != "cuda":
            raise RewardError(f"bf16 is for CUDA devices; this model is on {self.device}")
        if on and not resnets:
            raise RewardError(f"bf16 is for ResNet encoders; this model has {self.config.encoder}")
        for m in resnets:
            m.bf16 = on

    # -- scoring
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def score(self, frames: Any, goal: Any | None = None) -> ScoreResult:
        """Per-frame reward and progress for a video (T, H, W, 3) uint8 and optional goal.

        Frames and goal of any size are prepared as every model input is: the centre square,
        resized to the model's ``image_size_px`` (``data.images.prepare_frames``)."""
        arr = check_frames(frames)
        g = None if goal is None else check_goal(goal, (arr.shape[1], arr.shape[2]))
        size = self.config.image_size_px
        x = to_tensor(prepare_frames(arr, size), self.device)
        gx = None if g is None else to_tensor(prepare_frames(g[None], size), self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                reward, progress = self._score(x, gx)
        finally:
            self.train(was_training)
        return ScoreResult(
            reward=np.asarray(reward, dtype=np.float32),
            progress=np.asarray(progress, dtype=np.float32),
            method=self.method,
        )

    @abstractmethod
    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """frames (T, 3, S, S) float in [0, 255]; goal (1, 3, S, S) or None."""

    def goal_check(self, goal: Any) -> GoalCheck | None:
        """How far a goal image (H, W, 3) uint8 lies from the demos' goals, in units of their own
        spread; None for a model that keeps no goal set (no goal image, fewer than 3 demos, or
        a checkpoint written before the goal set). The check tells another scene from this
        one; it cannot tell a wrong state of the same scene (a push goal photo passes a reach
        model of the same cell)."""
        goal_set = getattr(self, "goal_set", None)
        if not self.uses_goal or goal_set is None or len(goal_set) < 3:
            return None
        g = check_goal(goal, np.asarray(goal).shape[:2])
        d = torch.cdist(self._embed_images(g[None]), goal_set).amin()
        between = torch.cdist(goal_set, goal_set)
        between.fill_diagonal_(float("inf"))
        spread = between.amin(1).quantile(0.9).clamp_min(1e-8)
        return GoalCheck(float(d / spread), len(goal_set))

    def refuse_unlike_goal(self, goal: Any, what: str) -> None:
        """Raise RewardError when a goal image fails :meth:`goal_check` (the reward node and
        the learner call this before a goal photo drives robot time)."""
        check = self.goal_check(goal)
        if check is not None and not check.ok:
            raise RewardError(check.message(what))

    def _embed_images(self, images: np.ndarray) -> torch.Tensor:
        """Embeddings of (N, H, W, 3) uint8 images, prepared as :meth:`score` prepares its
        input, in eval mode (the goal check and the success call's own-goal lookup)."""
        x = to_tensor(prepare_frames(images, self.config.image_size_px), self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.embed_frames(x)
        finally:
            self.train(was_training)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Embedding of each frame, in chunks (used by UVD and evaluation)."""
        enc = getattr(self, "encoder", None)
        if enc is None:
            raise RewardError(f"method {self.method!r} has no frame embedding")
        return torch.cat([enc(c) for c in frames.split(self.score_chunk)])

    # -- checkpoints
    def checkpoint(self) -> dict[str, Any]:
        return {
            "format_version": CHECKPOINT_VERSION,
            "method": self.method,
            "config": dataclasses.asdict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "success_progress": self.success_progress,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        if p.is_dir() or p.suffix == "":
            p = p / CHECKPOINT_NAME
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        torch.save(self.checkpoint(), tmp)
        os.replace(tmp, p)  # never leave a half-written checkpoint under the real name
        return p


def method_class(method: str) -> type[RewardModel]:
    if method not in METHODS:
        raise RewardError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    mod, cls = METHODS[method].split(":")
    found: type[RewardModel] = getattr(importlib.import_module(mod), cls)
    return found


def build_model(config: RewardConfig, device: torch.device | None = None) -> RewardModel:
    model = method_class(config.method)(config)
    return model.to(device or default_device())


def read_checkpoint(
    path: str | os.PathLike[str], kind: str = "reward-model", made_by: str = "v2r reward train"
) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only); path may be a run folder. ``kind`` and
    ``made_by`` name the model and the command that trains one in the errors (VPDD's policy
    checkpoints are read here too)."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist (train one with `{made_by}`)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {p}: it holds Python objects other than tensors and plain data, "
            f"which could run code ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {p} is unreadable or truncated: {e}") from e
    if not isinstance(ckpt, dict) or "method" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not a {kind} checkpoint (no method/state_dict)")
    version = ckpt.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format {version!r}; this code reads {CHECKPOINT_VERSION}"
        )
    return ckpt


def load_reward_model(
    path: str | os.PathLike[str], device: torch.device | None = None
) -> RewardModel:
    ckpt = read_checkpoint(path)
    cls = method_class(str(ckpt["method"]))
    cfg = dict(ckpt["config"])
    cfg["pretrained_path"] = ""  # the weights are in the checkpoint; the file may be gone
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    for k, v in list(cfg.items()):
        if isinstance(v, list):
            cfg[k] = tuple(v)
        if k not in fields:
            raise CheckpointError(f"{path}: config option {k!r} is unknown to {cls.__name__}")
    model = cls(cls.config_cls(**cfg))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {cls.__name__}: {e}") from e
    thr = ckpt.get("success_progress")
    model.success_progress = None if thr is None else float(thr)
    return model.to(device or default_device()).eval()


class GoalDistanceModel(RewardModel):
    """A reward from the distance between frame and goal embeddings (VIP, TCN, HOLD-C, UVD).

    Subclasses build ``self.encoder`` and define :meth:`reward_from_distance`. Calibration stores
    the embeddings of the demos' last frames (the goal set: with no goal given a frame's
    distance is to the nearest of them), their mean (the goal of checkpoints written before the
    goal set), the median start-to-goal distance (progress = 1 - d / that) and the mean demo
    length in steps.
    """

    data_sized_buffers = ("goal_set",)
    optional_buffers = ("goal_set",)
    encoder: nn.Module
    goal_embedding: torch.Tensor
    goal_set: torch.Tensor
    distance_ref: torch.Tensor
    horizon_ref: torch.Tensor

    def __init__(self, config: RewardConfig):
        super().__init__(config)
        self.register_buffer("goal_embedding", torch.zeros(config.embed_dim))
        self.register_buffer("goal_set", torch.zeros(0, config.embed_dim))
        self.register_buffer("distance_ref", torch.ones(()))
        self.register_buffer("horizon_ref", torch.ones(()))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(a - b, dim=-1)

    def goal_embed(self, goal: torch.Tensor | None) -> torch.Tensor:
        return self.goal_embedding[None] if goal is None else self.embed_frames(goal)

    def goal_distance(self, e: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """(T, D) embeddings -> (T,) distances to the goal image, or with none to the nearest
        goal of the demos' goal set (to their mean embedding where the checkpoint has no set)."""
        if goal is None and len(self.goal_set):
            return torch.cdist(e, self.goal_set).amin(1)
        return self.distance(e, self.goal_embed(goal))

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        was_training = self.training
        self.eval()
        ep = np.arange(len(data))
        first = self.embed_frames(data.frames_tensor(ep, np.zeros_like(ep), self.device))
        last = self.embed_frames(data.frames_tensor(ep, data.lengths - 1, self.device))
        self.goal_embedding.copy_(last.mean(0))
        self.goal_set = last.clone()
        self.distance_ref.fill_(float(self.distance(first, last).median().clamp_min(1e-6)))
        self.horizon_ref.fill_(float(data.lengths.mean()))
        self.train(was_training)

    @abstractmethod
    def reward_from_distance(self, d: torch.Tensor) -> torch.Tensor:
        """(T,) distances to the goal -> (T,) rewards (see the module docstring's conventions)."""

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        d = self.goal_distance(self.embed_frames(frames), goal)
        progress = 1.0 - d / self.distance_ref
        return self.reward_from_distance(d).cpu().numpy(), progress.cpu().numpy()


def medoid_last_frame(data: VideoDataset) -> np.ndarray:
    """The demo's last frame closest (in pixels) to all other demos' last frames: a default goal."""
    last = np.stack([data.episode(i)[-1] for i in range(len(data))]).astype(np.float32)
    small = last[:, ::4, ::4].reshape(len(last), -1)
    d = ((small[:, None] - small[None]) ** 2).sum(-1)
    return data.episode(int(d.sum(1).argmin()))[-1]
