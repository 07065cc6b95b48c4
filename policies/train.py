"""Train DrQ-v2 on a twin task with the oracle reward or a learned one, resumable.

    v2r rl train task=reach reward=oracle agent=cpu out=runs/rl_reach
    v2r rl train task=reach reward=rank2reward reward.ckpt=runs/r2r agent=cpu out=runs/rl_r2r
    v2r rl train out=runs/rl_reach resume=true           # after a crash: nothing finished is lost

    summary = train(TrainConfig(task="toy", out="runs/toy", agent=DrQV2Config(...)))

Budgets (``*_frames``) count environment frames; the agent's schedules count agent steps
(one agent step = ``action_repeat`` frames). Each run folder holds ``agent.pt`` + ``state.json``
(checkpoint, written atomically at episode ends), ``replay/episodes.zarr`` (every finished
training episode), ``train.csv`` / ``eval.csv`` / ``tb/`` (logs), ``eval_<frames>.mp4`` and
``curve.png``.

Rewards. ``reward.source=oracle`` uses the env's dense oracle reward (summed over the repeated
frames). ``reward.source=model`` scores each finished episode's agent-step frames in one batch
with a ``rewards/`` checkpoint (the reward for arriving at frame t, so potential-difference
rewards such as VIP's span one agent step) before the episode enters the replay; a Rank2Reward
model's discriminator is updated online on recent agent frames, ``reward.disc_steps`` steps
every ``reward.disc_update_every_steps`` agent steps (the official code: 20 every 2000, after
the seed frames). Stored rewards are not
recomputed after later discriminator updates. ``success_bonus`` adds a sparse term.

Learner. ``learner=thread`` runs updates in a background thread on a snapshot-synchronised
copy of the policy, so env stepping/rendering and acting overlap with updates and never wait on
an update in progress; the actor thread only waits when the learner falls more than
``max_learner_lag_updates`` behind the paper's update ratio. ``learner=sync`` (the default) is
the paper's loop, bit-reproducible for a given seed on one thread.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import (
    resolve_device,
    set_deterministic,
)
from video2reward.data import keys
from video2reward.data.images import prepare_frames
from video2reward.data.pointmap import xyz_image
from video2reward.policies.demos import demo_replay, load_demo_episodes
from video2reward.policies.drqv2 import (
    DrQV2Agent,
    NonFiniteError,
)
from video2reward.policies.intervention import InterventionConfig, ScriptedIntervener
from video2reward.policies.learner import LearnerCore, LearnSpec, agent_frame, relabelled_demos
from video2reward.policies.replay import ReplayBuffer, ReplayConfig
from video2reward.rewards.rank2reward import OnlineDiscriminator

AGENT_FILE = "agent.pt"
REWARD_MODEL_FILE = "reward_model.pt"  # the online-updated reward model (Rank2Reward)
STATE_FILE = "state.json"
REPLAY_DIR = "replay"


@dataclass(frozen=True)
class RewardSpec:
    source: str = "oracle"  # "oracle" (the env's dense reward) or "model" (a rewards/ checkpoint)
    ckpt: str = ""  # reward-model run folder or .pt, for source=model
    scale: float = 1.0  # multiplies the reward (oracle or model)
    # Who calls success during learning: "model" (the reward model's progress at or above
    # success_progress), "oracle" (the twin's predicate per step: evaluation-only information,
    # so the run's summary says oracle_in_learning; demonstrations count as successes on their
    # last step, as for the key), "key" (the operator's key as the learner node
    # takes it, one label per episode on its last step, simulated by the twin's predicate:
    # did the episode reach the goal; demonstrations are labelled successes; oracle_in_learning
    # too, since the twin has no operator) or "none". "auto": model with a reward model,
    # oracle for the oracle-reward baseline.
    success: str = "auto"
    # Progress at which the model calls success; None: the reward checkpoint's (calibrated on
    # its training demos: the median of their last frames' progress), else calibrated the same
    # way on demos.path, else 0.9.
    success_progress: float | None = None
    disc_update_every_steps: int = 0  # Rank2Reward: a burst of discriminator steps every N
    disc_steps: int = 1  # discriminator steps per burst (official code: 20 every 2000 steps)
    disc_batch: int = 64  # agent frames per discriminator step
    disc_frames: int = 5000  # recent agent frames kept for discriminator updates
    # Goal image for goal-conditioned models: none (the model's default: the nearest of its
    # training demos' goals, rewards/base.py), env (each episode's own, env.goal_image(): what
    # a lab never has) or photo (one goal image rendered once at the first episode's scene and
    # used for every episode and the demos: what a lab can photograph).
    goal: str = "none"
    alpha: float | None = None  # Rank2Reward: weight of the discriminator term (None: the ckpt's)

    @property
    def success_source(self) -> str:
        if self.success != "auto":
            return self.success
        return "model" if self.source == "model" else "oracle"

    def __post_init__(self) -> None:
        if self.source not in ("oracle", "model"):
            raise ValueError(f"reward.source must be 'oracle' or 'model', got {self.source!r}")
        if self.source == "model" and not self.ckpt:
            raise ValueError("reward.source=model needs reward.ckpt=<run folder or .pt>")
        if not math.isfinite(self.scale):
            raise ValueError("reward.scale must be finite")
        if self.success not in ("auto", "model", "oracle", "key", "none"):
            raise ValueError(
                f"reward.success must be auto, model, oracle, key or none, got {self.success!r}"
            )
        if self.success == "model" and self.source != "model":
            raise ValueError("reward.success=model needs a reward model (reward.source=model)")
        if self.success_progress is not None and not math.isfinite(self.success_progress):
            raise ValueError("reward.success_progress must be finite")
        if self.goal not in ("none", "env", "photo"):
            raise ValueError(f"reward.goal must be none, env or photo, got {self.goal!r}")
        if self.disc_update_every_steps < 0 or self.disc_batch < 2 or self.disc_frames < 2:
            raise ValueError("need disc_update_every_steps >= 0, disc_batch and disc_frames >= 2")
        if self.disc_steps < 1:
            raise ValueError(f"reward.disc_steps must be >= 1, got {self.disc_steps}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"reward.alpha must be a finite number >= 0, got {self.alpha}")


@dataclass(frozen=True)
class TrainConfig(LearnSpec):
    """The twin trainer's run: :class:`~video2reward.policies.learner.LearnSpec` (seed, device,
    frame stack, proprio, replay, seed steps, success bonus, ``demos.*``, ``agent.*``: the
    same fields as the learner node's) plus the twin's task, budgets and evaluations."""

    task: str = "reach"  # a twin task (reach, push, button-press) or "toy" (policies/toy_env.py)
    out: str = "runs/rl"  # run folder
    obs: str = "pixels"  # "pixels" (conv encoder) or "features" (frozen reward-model encoder)
    features_ckpt: str = ""  # reward-model run whose encoder embeds frames, for obs=features
    image_size: int = 84  # rendered square image, pixels (what reward models and videos see)
    agent_image_size: int = 0  # pixels the agent sees, downsized from image_size; 0 = the same
    action_repeat: int = 2  # frames per agent step (paper: 2)
    control_hz: float = 10.0  # twin command rate (frames per second of the env)
    num_train_frames: int = 100_000  # budget, env frames
    eval_every_frames: int = 10_000
    num_eval_episodes: int = 10
    checkpoint_every_frames: int = 10_000
    learner: str = "sync"  # "sync" or "thread" (updates off the acting thread)
    max_learner_lag_updates: int = 4  # thread learner: owed updates before acting waits
    # torch intra-op threads; 0 = torch default. 1 when the CPU is shared: two OpenMP threads
    # collapse (10-100x slower) when another process holds a core.
    threads: int = 1
    deterministic: bool = False  # bit-reproducible CUDA kernels (slower); the CPU always is
    resume: bool = False  # continue from out/agent.pt + out/replay
    video: bool = True  # mp4 of the first evaluation episode at each evaluation
    progress_bar: bool = True
    log_every_updates: int = 100  # TensorBoard rows of update metrics
    reward: RewardSpec = field(default_factory=RewardSpec)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)

    @property
    def oracle_in_learning(self) -> bool:
        """Whether learning sees the twin's oracle reward or success predicate."""
        return self.reward.source == "oracle" or self.reward.success_source in ("oracle", "key")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.reward, dict):
            object.__setattr__(self, "reward", RewardSpec(**self.reward))
        if isinstance(self.intervention, dict):
            object.__setattr__(self, "intervention", InterventionConfig(**self.intervention))
        if self.intervention.enabled and self.reward.source != "model":
            raise ValueError(
                "intervention.enabled watches the learned progress: it needs reward.source=model"
            )
        if self.demos.add_successes and self.reward.source != "model":
            raise ValueError("demos.add_successes joins the episodes the reward model calls "
                             "successful to its demos: it needs reward.source=model")
        if self.demos.path and self.reward.source != "model":
            raise ValueError(
                "demos need a learned reward to relabel them (reward.source=model); the "
                "oracle-reward baseline runs without demonstrations"
            )
        if self.obs not in ("pixels", "features"):
            raise ValueError(f"obs must be 'pixels' or 'features', got {self.obs!r}")
        if self.obs == "features" and not self.features_ckpt:
            raise ValueError("obs=features needs features_ckpt=<reward-model run>")
        if self.learner not in ("sync", "thread"):
            raise ValueError(f"learner must be 'sync' or 'thread', got {self.learner!r}")
        for name in (
            "action_repeat",
            "num_train_frames",
            "eval_every_frames",
            "checkpoint_every_frames",
            "max_learner_lag_updates",
            "log_every_updates",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_eval_episodes < 0 or self.threads < 0:
            raise ValueError("num_eval_episodes and threads must be >= 0")
        if self.end_on_success and self.reward.success_source == "none":
            raise ValueError("end_on_success needs a success call (reward.success model, key "
                             "or oracle), not none")  # fmt: skip
        if not 17 <= self.image_size <= 480:
            raise ValueError(f"image_size must be in [17, 480], got {self.image_size}")
        if self.agent_image_size and not 17 <= self.agent_image_size <= self.image_size:
            raise ValueError(
                f"agent_image_size must be 0 or in [17, image_size={self.image_size}], "
                f"got {self.agent_image_size}"
            )


# --------------------------------------------------------------------------- environment
def make_task_env(
    task: str, image_size: int, seed: int, control_hz: float, depth: bool = False
) -> Any:
    if task == "toy":
        if depth:
            raise ValueError("the toy task has no depth camera: pointmap needs a twin task")
        from video2reward.policies.toy_env import PointReachEnv

        return PointReachEnv(image_size=image_size, seed=seed)
    from video2reward.sim.env import make_env

    return make_env(task, image_size=image_size, seed=seed, control_hz=control_hz, depth=depth)


@dataclass
class StepResult:
    obs: dict[str, np.ndarray]
    reward: float  # summed over the repeated frames
    terminated: bool
    truncated: bool
    success: bool  # info["success"] at the last frame
    frames: int  # frames actually stepped (< action_repeat at an episode's end)
    applied: np.ndarray  # the command the env executed (after its safety envelope)


def repeat_step(env: Any, action: np.ndarray, repeat: int, bonus: float) -> StepResult:
    total, frames = 0.0, 0
    obs: dict[str, np.ndarray] = {}
    term = trunc = success = False
    applied = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
    for _ in range(repeat):
        obs, r, term, trunc, info = env.step(action)
        applied = np.asarray(info.get("applied_action", applied), np.float32)
        success = bool(info.get("success", False))
        total += float(r) + (bonus if success else 0.0)
        frames += 1
        if term or trunc:
            break
    return StepResult(obs, total, bool(term), bool(trunc), success, frames, applied)


class Observer:
    """Env observation dict -> (one frame for the replay, proprio); keeps the acting stack.
    With ``cfg.pointmap`` a frame is the image and its point map (``camera``: the env
    camera's (fx, fy, cx, cy) at the render size and T_base_cam; the env observes depth)."""

    def __init__(
        self,
        cfg: TrainConfig,
        embed: Callable[[np.ndarray], np.ndarray] | None,
        camera: tuple[tuple[float, ...], np.ndarray] | None = None,
    ):
        if cfg.pointmap and camera is None:
            raise ValueError("pointmap needs the camera's intrinsics and T_base_cam")
        if cfg.pointmap and embed is not None:
            raise ValueError("pointmap feeds the conv encoder: use obs=pixels, not features")
        self.cfg, self.embed, self.camera = cfg, embed, camera
        self.stack: deque[np.ndarray] = deque(maxlen=cfg.frame_stack)

    def frame(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        img = obs[keys.OBS_IMAGE]
        if self.embed is not None:
            return self.embed(img)
        xyz = None
        if self.cfg.pointmap and self.camera is not None:
            xyz = xyz_image(obs[keys.OBS_DEPTH], *self.camera, self.cfg.pointmap_lo_m,
                            self.cfg.pointmap_hi_m)  # fmt: skip
        return self.compose(img, xyz)

    def compose(self, img: np.ndarray, xyz: np.ndarray | None = None) -> np.ndarray:
        """An image (and its point map) -> the agent's frame (renders are square;
        agent_image_size <= image_size)."""
        return agent_frame(img, self.cfg.agent_image_size or img.shape[0], xyz)

    def proprio(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        if not self.cfg.proprio:
            return None
        return np.concatenate([obs[keys.OBS_EE_POS], obs[keys.OBS_GRIPPER]]).astype(np.float32)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        for _ in range(self.cfg.frame_stack):
            self.stack.append(frame)
        return np.concatenate(self.stack)

    def push(self, frame: np.ndarray) -> np.ndarray:
        self.stack.append(frame)
        return np.concatenate(self.stack)


def env_camera(env: Any) -> tuple[tuple[float, ...], np.ndarray]:
    """A twin env's camera for point maps: (fx, fy, cx, cy) of its renders and T_base_cam
    (the twin knows its camera exactly; a robot's comes from the calibration file)."""
    if not hasattr(env, "intrinsics") or not getattr(env.config, "depth", False):
        raise ValueError("pointmap needs a twin task env that observes depth")
    k = env.intrinsics()
    return (k["fx"], k["fy"], k["cx"], k["cy"]), env.config.camera.T_base_cam()


PROPRIO_DIM = 4  # ee_pos (3) + gripper (1)


# --------------------------------------------------------------------------- learned rewards
class EpisodeRewarder:
    """Scores an episode's agent-step frames in one batch with a rewards/ model."""

    def __init__(self, spec: RewardSpec, device: torch.device, resume_from: Path | None = None):
        from video2reward.rewards.base import load_reward_model

        self.spec = spec
        src = resume_from if resume_from is not None and resume_from.exists() else spec.ckpt
        self.model = load_reward_model(src, device)
        if spec.alpha is not None:
            if not hasattr(self.model.config, "alpha"):
                raise ValueError(f"reward.alpha applies to Rank2Reward, not {self.model.method}")
            self.model.config = dataclasses.replace(self.model.config, alpha=spec.alpha)
        self.disc = (
            OnlineDiscriminator(self.model, spec.disc_batch, spec.disc_frames,
                                every_frames=spec.disc_update_every_steps, steps=spec.disc_steps)
            # Rank2Reward's discriminator, Diffusion Reward's RND: models trained online
            if spec.disc_update_every_steps > 0 and callable(getattr(self.model, "update", None))
            else None
        )
        self.can_update = self.disc is not None
        # The call's threshold: the spec's, else the one training calibrated on the reward
        # model's demos (in its checkpoint), else calibrate_success on this run's demos, else 0.9
        thr = spec.success_progress
        self.success_progress = thr if thr is not None else self.model.success_progress or 0.9
        self.photo: np.ndarray | None = None  # reward.goal=photo: the one goal image
        # progress_now's last frame (a copy), the goal it was scored against, and its progress
        self._now: tuple[np.ndarray | None, np.ndarray | None, float] = (None, None, float("nan"))

    def episode_rewards(
        self,
        frames: np.ndarray,
        oracle_success: np.ndarray | None = None,
        goal: np.ndarray | None = None,
        *,
        agent_frames: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """frames (T+1, H, W, 3) uint8 -> (T,) rewards for arriving at frames 1..T and the
        (T,) success calls the bonus used (``reward.success``: the model's progress against
        ``success_progress``, the twin's ``oracle_success``, or none). The one relabelling
        path of agent episodes and demonstrations (``agent_frames=False``: not kept for the
        discriminator)."""
        out = self.model.score(frames, goal=self.photo if goal is None else goal)
        source = self.spec.success_source
        if source == "model":
            success = out.progress[1:] >= self.success_progress
        elif source in ("oracle", "key"):  # the twin's predicate, per step or as the key
            if oracle_success is None:
                if agent_frames:
                    raise ValueError(f"reward.success={source} needs the twin's success per step")
                success = np.zeros(len(frames) - 1, bool)
                success[-1] = True  # a demonstration: recorded as a success, on its last step
            elif source == "oracle":
                success = np.asarray(oracle_success, bool)
            else:  # the key: one label per episode, on its last step (the node's key)
                success = np.zeros(len(frames) - 1, bool)
                success[-1] = bool(np.any(oracle_success))  # the operator saw it reach the goal
        else:
            success = np.zeros(len(frames) - 1, bool)
        r = out.reward[1:] * self.spec.scale  # the success bonus is the learner core's
        if self.disc is not None and agent_frames:
            self.disc.observe(frames[1:])
        return np.asarray(r, np.float32), success

    def called_now(self, image: np.ndarray, oracle_success: bool,
                   goal: np.ndarray | None = None) -> bool:
        """The success call on one frame as it arrives (``end_on_success``): the model's
        progress against ``success_progress``, else the twin's predicate (the key pressed the
        moment the goal is reached, or the oracle call)."""
        source = self.spec.success_source
        if source == "model":
            return self.progress_now(image, goal) >= self.success_progress
        return source in ("oracle", "key") and bool(oracle_success)

    def progress_now(self, image: np.ndarray, goal: np.ndarray | None = None) -> float:
        """The model's progress on one frame as it arrives, against the episode's goal (the
        photo, or ``goal``), scored once per frame: the intervener's stall check on a frame and
        the success call on it read one number."""
        g = self.photo if goal is None else goal
        last, last_goal, progress = self._now
        if last is None or g is not last_goal or not np.array_equal(image, last):
            progress = float(self.model.score(image[None], goal=g).progress[0])
            self._now = (image.copy(), g, progress)
        return progress

    def calibrate_success(self, demo_images: list[np.ndarray]) -> float:
        """Set ``success_progress`` to the median of the demos' last-frame progress,
        unless the spec or the reward checkpoint fixes it; returns it."""
        fixed = self.spec.success_progress is not None or self.model.success_progress is not None
        if not fixed and demo_images:
            self.success_progress = self.model.calibrate_success(demo_images)
        return self.success_progress

    @property
    def num_updates(self) -> int:
        return self.disc.num_updates if self.disc is not None else 0

    def maybe_update(self) -> dict[str, float]:
        """Rank2Reward: ``disc_steps`` discriminator steps once ``disc_update_every_steps``
        more agent frames (one per agent step) have been shown to it (its schedule)."""
        return self.disc.train_if_due() if self.disc is not None else {}


def frame_embedder(ckpt: str, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A frozen reward-model encoder as a frame -> (D,) float32 function (VIP's RL setting)."""
    from video2reward.rewards.base import load_reward_model, to_tensor

    model = load_reward_model(ckpt, device).eval()
    size = model.config.image_size_px

    @torch.inference_mode()
    def embed(img: np.ndarray) -> np.ndarray:
        x = to_tensor(prepare_frames(img[None], size), device)
        return model.embed_frames(x)[0].float().cpu().numpy()

    return embed


# --------------------------------------------------------------------------- logging
class RunLog:
    def __init__(self, out: Path, tensorboard: bool = True):
        self.out = out
        self.tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def row(self, name: str, row: dict[str, Any]) -> None:
        path = self.out / f"{name}.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        self.scalars(name, row, int(row["frames"]))

    def scalars(self, prefix: str, values: dict[str, Any], frames: int) -> None:
        if self.tb is None:
            return
        for k, v in values.items():
            if k != "frames" and isinstance(v, (int, float, bool)):
                self.tb.add_scalar(f"{prefix}/{k}", float(v), frames)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def reward_tracking(rows: list[dict[str, str]], window: int = 100) -> dict[str, np.ndarray]:
    """Training episodes -> windowed success rate and corr(learned return, env return).

    The correlation tells whether a learned reward tracks the task in the twin (where the env
    return, oracle + success bonus, is known): ~0 means the agent optimises something else.
    Returns arrays over window ends: frames, success, corr (NaN without learned returns).
    """
    frames = np.array([float(r["frames"]) for r in rows])
    success = np.array([r["success"] == "True" for r in rows], np.float64)
    env_ret = np.array([float(r["return"]) for r in rows])
    learned = np.array([float(r.get("return_learned") or "nan") for r in rows])
    ends = np.arange(min(window, len(rows)), len(rows) + 1, max(1, window // 4))
    corr = np.full(len(ends), np.nan)
    win_success = np.empty(len(ends))
    for k, e in enumerate(ends):
        w = slice(max(0, e - window), e)
        x, y = learned[w], env_ret[w]
        win_success[k] = success[w].mean()
        if np.isfinite(x).all() and len(x) > 2 and x.std() > 0 and y.std() > 0:
            corr[k] = float(np.corrcoef(x, y)[0, 1])
    return {"frames": frames[ends - 1], "success": win_success, "corr": corr}


def plot_curve(out: Path) -> Path | None:
    path = out / "eval.csv"
    if not path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    train_rows: list[dict[str, str]] = []
    if (out / "train.csv").exists():
        with (out / "train.csv").open() as f:
            train_rows = list(csv.DictReader(f))
    frames = [int(r["frames"]) for r in rows]
    fig, axes = plt.subplots(1, 3 if train_rows else 2, figsize=(15 if train_rows else 10, 3.5))
    a1, a2 = axes[0], axes[1]
    a1.plot(frames, [float(r["success_rate"]) for r in rows], marker="o")
    a1.set(xlabel="env frames", ylabel="eval success rate", ylim=(-0.05, 1.05))
    a2.plot(frames, [float(r["return_oracle"]) for r in rows], marker="o")
    a2.set(xlabel="env frames", ylabel="eval oracle return")
    if train_rows:
        t = reward_tracking(train_rows)
        a3 = axes[2]
        a3.plot(t["frames"], t["success"], label="training success (100-episode mean)")
        if np.isfinite(t["corr"]).any():
            a3.plot(t["frames"], t["corr"], label="corr(learned, env return), 100 episodes")
        a3.axhline(0.0, color="grey", lw=0.8)
        a3.set(xlabel="env frames", ylim=(-1.05, 1.05), title="training episodes")
        a3.legend(fontsize=7, loc="lower right")
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(out.name)
    fig.tight_layout()
    png = out / "curve.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v2 as imageio

    scale = max(1, 256 // frames[0].shape[0])
    big = [np.repeat(np.repeat(f, scale, 0), scale, 1) for f in frames]
    imageio.mimwrite(str(path), big, fps=fps, macro_block_size=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- demonstrations
def _intervener(cfg: TrainConfig, env: Any) -> ScriptedIntervener:
    """The twin's scripted expert standing in for an operator (the toy env brings its own)."""
    if hasattr(env, "expert_action"):
        return ScriptedIntervener(cfg.intervention, env.expert_action)
    from video2reward.sim.experts import make_policy

    expert = make_policy(env, "expert", np.random.default_rng(cfg.seed))
    return ScriptedIntervener(cfg.intervention, expert, expert.reset)


def _demo_buffer(
    cfg: TrainConfig,
    rewarder: EpisodeRewarder,
    observer: Observer,
    replay_cfg: ReplayConfig,
    proprio_dim: int,
    frame_shape: tuple[int, ...],
    extra_steps: int,
) -> tuple[ReplayBuffer, int]:
    """The demos as the agent would have recorded them: frames through the observer, rewards
    and success calls through the rewarder (after calibrating its success threshold on them).
    Empty (with room for interventions) without ``demos.path``."""
    if cfg.reward.goal == "env":
        raise ValueError("demos with reward.goal=env: recorded demos have no env goal image")
    if not cfg.demos.path:
        empty = demo_replay([], replay_cfg, observer.frame, lambda d: np.zeros(0), proprio_dim,
                            frame_shape, extra_steps)  # fmt: skip
        return empty, 0
    box = (cfg.pointmap_lo_m, cfg.pointmap_hi_m) if cfg.pointmap else None
    demos = load_demo_episodes(cfg.demos.path, cfg.action_repeat, cfg.demos.max_episodes,
                               (cfg.image_size, cfg.image_size), box)  # fmt: skip
    size = cfg.image_size

    def rendered(images: np.ndarray) -> np.ndarray:  # the size the env renders for the reward
        return prepare_frames(images, size)

    buffer, thr = relabelled_demos(
        demos,
        [rendered(d.images) for d in demos],
        rewarder,
        cfg.success_bonus,
        replay_cfg,
        # what the env would have rendered, then the observer's frame (with the point map
        # computed at the store's own size with its calibration, then resized alike)
        lambda img, xyz=None: observer.compose(
            rendered(img[None])[0], None if xyz is None else rendered(xyz[None])[0]),
        proprio_dim,
        frame_shape,
        extra_steps,
        cfg.end_on_success,
    )
    print(
        f"demos: {len(demos)} episodes, {len(buffer)} transitions from {cfg.demos.path}, "
        f"{cfg.demos.fraction:.0%} of every batch; success called at progress >= {thr:.3f}"
    )
    return buffer, len(demos)


# --------------------------------------------------------------------------- the loop
def evaluate(
    cfg: TrainConfig,
    env: Any,
    observer: Observer,
    act: Callable[..., np.ndarray],
    step: int,
    episode_seed: int,
    video_path: Path | None,
) -> dict[str, float]:
    returns, success_any, success_end, lengths = [], [], [], []
    frames_video: list[np.ndarray] = []
    for i in range(cfg.num_eval_episodes):
        obs, _ = env.reset(seed=episode_seed + i)
        stacked = observer.reset(observer.frame(obs))
        ret, ok_any, n, done = 0.0, False, 0, False
        res: StepResult | None = None
        if i == 0 and video_path is not None:
            frames_video.append(obs[keys.OBS_IMAGE])
        while not done:
            a = act(stacked, observer.proprio(obs), step)
            res = repeat_step(env, a, cfg.action_repeat, 0.0)
            obs = res.obs
            stacked = observer.push(observer.frame(obs))
            ret, n = ret + res.reward, n + res.frames
            ok_any = ok_any or res.success
            done = res.terminated or res.truncated
            if i == 0 and video_path is not None:
                frames_video.append(obs[keys.OBS_IMAGE])
        returns.append(ret)
        success_any.append(ok_any)
        success_end.append(bool(res is not None and res.success))
        lengths.append(n)
    if video_path is not None and frames_video:
        write_video(video_path, frames_video, cfg.control_hz / cfg.action_repeat)
    return {
        "success_rate": float(np.mean(success_any)) if success_any else float("nan"),
        "success_at_end": float(np.mean(success_end)) if success_end else float("nan"),
        "return_oracle": float(np.mean(returns)) if returns else float("nan"),
        "episode_frames": float(np.mean(lengths)) if lengths else float("nan"),
    }


def train(cfg: TrainConfig, make_env: Callable[..., Any] = make_task_env) -> dict[str, Any]:
    """Run (or resume) training; returns a summary dict (also written to out/summary.json).

    ``make_env(task, image_size, seed, control_hz)`` builds the train and eval envs (tests pass
    a fake env this way).
    """
    out = Path(cfg.out)
    if out.exists() and (out / AGENT_FILE).exists() and not cfg.resume:
        raise FileExistsError(
            f"{out} holds a run; pass resume=true to continue it or pick another out="
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        set_deterministic()

    embed = frame_embedder(cfg.features_ckpt, device) if cfg.obs == "features" else None
    depth = {"depth": True} if cfg.pointmap else {}  # (tests' fake envs take no depth)
    env = make_env(cfg.task, cfg.image_size, cfg.seed, cfg.control_hz, **depth)
    eval_env = make_env(cfg.task, cfg.image_size, cfg.seed + 10_000, cfg.control_hz, **depth)
    if cfg.reward.source == "model" and cfg.reward.goal in ("env", "photo") and not hasattr(
        env, "goal_image"
    ):
        raise ValueError(f"reward.goal={cfg.reward.goal}: the {cfg.task!r} env has no "
                         "goal_image(); use none")
    camera = env_camera(env) if cfg.pointmap else None
    observer, eval_observer = Observer(cfg, embed, camera), Observer(cfg, embed, camera)
    obs0, _ = env.reset(seed=cfg.seed)
    frame_shape = observer.frame(obs0).shape
    proprio_dim = PROPRIO_DIM if cfg.proprio else 0
    agent_obs_shape = (frame_shape[0] * cfg.frame_stack, *frame_shape[1:])
    agent = DrQV2Agent(
        cfg.agent, agent_obs_shape, keys.ACTION_DIM, proprio_dim, seed=cfg.seed, device=device
    )
    replay = ReplayBuffer(
        ReplayConfig(
            cfg.replay_capacity_steps, cfg.frame_stack, cfg.agent.nstep, cfg.agent.discount
        ),
        frame_shape,
        keys.ACTION_DIM,
        proprio_dim,
        directory=out / REPLAY_DIR,
        seed=cfg.seed,
        task=cfg.task,
        fps=cfg.control_hz / cfg.action_repeat,  # one row per agent step
    )
    rewarder = None
    if cfg.reward.source == "model":
        resume_from = out / REWARD_MODEL_FILE if cfg.resume else None
        rewarder = EpisodeRewarder(cfg.reward, device, resume_from)
        # one scored frame per agent step: action_repeat frames of the reward's training videos
        rewarder.model.set_frame_stride(cfg.action_repeat)
        if cfg.reward.goal == "photo":
            rewarder.photo = env.goal_image()  # the scene env.reset(seed=cfg.seed) made
            rewarder.model.refuse_unlike_goal(rewarder.photo, "the goal photo (reward.goal=photo)")
    # The oracle success bonus of the baseline (reward.source=oracle); a learned reward adds
    # its bonus when the episode is relabelled.
    oracle_bonus = cfg.success_bonus if rewarder is None else 0.0
    demo_buffer, n_demos = None, 0
    # Interventions and called successes join the demonstrations; room for them is reserved
    # (np.empty: untouched pages cost nothing).
    grows = cfg.intervention.enabled or cfg.demos.add_successes
    extra = cfg.replay_capacity_steps if grows else 0
    if rewarder is not None and (cfg.demos.path or grows):
        demo_buffer, n_demos = _demo_buffer(
            cfg, rewarder, observer, replay.cfg, proprio_dim, frame_shape, extra
        )
    intervener = _intervener(cfg, env) if cfg.intervention.enabled else None
    if intervener is not None and rewarder is not None and rewarder.model.needs_episode:
        raise ValueError(
            f"intervention.enabled watches the progress of single frames; {rewarder.model.method} "
            "scores windows of frames over an episode: run it without the scripted intervener"
        )
    if cfg.oracle_in_learning:
        print("note: learning uses the twin's oracle (reward or success): an evaluation-only "
              "baseline, recorded as oracle_in_learning in summary.json")

    state = {
        "step": 0,
        "frames": 0,
        "episode": 0,
        "wall_s": 0.0,
        "next_eval": 0,
        "next_ckpt": cfg.checkpoint_every_frames,
        "nonfinite": 0,
    }
    if cfg.resume and (out / AGENT_FILE).exists():
        agent.load(out / AGENT_FILE)
        state.update(json.loads((out / STATE_FILE).read_text()))
        restored = replay.restore(with_calls=cfg.demos.add_successes)
        print(f"resumed {out}: step {state['step']}, {restored} replay transitions restored")

    log = RunLog(out)
    core = LearnerCore(
        cfg.core_config(
            learner=cfg.learner,
            max_learner_lag_updates=cfg.max_learner_lag_updates,
            when_lagging="wait",
            update_threads=cfg.threads,
            log_every_updates=cfg.log_every_updates,
            # the oracle baseline's bonus is added per frame by repeat_step
            success_bonus=cfg.success_bonus if rewarder is not None else 0.0,
            act_seed=cfg.seed + 3 + int(state["step"]),
        ),
        agent,
        replay,
        demo_buffer,
        agent_steps=int(state["step"]),
    )

    def act(
        stacked: np.ndarray, proprio: np.ndarray | None, step: int, eval_mode: bool
    ) -> np.ndarray:
        with core.policy_lock:
            return core.policy.act(stacked, proprio, step, eval_mode)

    def checkpoint() -> None:
        core.wait_idle()
        agent.save(out / AGENT_FILE)
        if rewarder is not None and rewarder.can_update:
            rewarder.model.save(out / REWARD_MODEL_FILE)  # weights only; Adam moments restart
        tmp = out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(out / STATE_FILE)

    from tqdm import tqdm

    if cfg.demos.pretrain_updates and demo_buffer is not None and not state.get("pretrained"):
        core.pretrain(cfg.demos.pretrain_updates,
                      lambda m, i: log.scalars("pretrain", m, i), cfg.progress_bar)  # fmt: skip
        state["pretrained"] = True
    t_start = time.monotonic() - float(state["wall_s"])
    bar = tqdm(
        total=cfg.num_train_frames,
        initial=min(int(state["frames"]), cfg.num_train_frames),
        unit="frame",
        disable=not cfg.progress_bar,
        dynamic_ncols=True,
    )
    last_eval: dict[str, float] = {}
    try:
        while True:
            step, frames = core.agent_steps, int(state["frames"])
            if frames >= int(state["next_eval"]) and cfg.num_eval_episodes:
                video = out / f"eval_{frames:07d}.mp4" if cfg.video else None
                last_eval = evaluate(
                    cfg,
                    eval_env,
                    eval_observer,
                    lambda o, p, s: act(o, p, s, True),
                    step,
                    1_000_000 + frames,
                    video,
                )
                state["wall_s"] = time.monotonic() - t_start
                log.row(
                    "eval",
                    {
                        "frames": frames,
                        "step": step,
                        "episode": state["episode"],
                        "wall_s": round(float(state["wall_s"]), 1),
                        **last_eval,
                    },
                )
                plot_curve(out)
                bar.set_postfix(
                    success=last_eval["success_rate"], ret=round(last_eval["return_oracle"], 2)
                )
                state["next_eval"] = int(state["next_eval"]) + cfg.eval_every_frames
            if frames >= cfg.num_train_frames:
                break

            # ---- one training episode
            episode = int(state["episode"])
            t_ep = time.monotonic()
            obs, _ = env.reset(seed=cfg.seed * 1_000_003 + episode)
            frame = observer.frame(obs)
            images = [obs[keys.OBS_IMAGE]]
            goal = env.goal_image() if rewarder is not None and cfg.reward.goal == "env" else None
            successes: list[bool] = []
            env_rewards: list[float] = []
            ep_frames, done, aborted, ended = 0, False, False, False
            # What an intervened segment needs to join the demonstrations.
            agent_frames, proprios, actions = [frame], [observer.proprio(obs)], []
            intervened: list[bool] = []
            if intervener is not None:
                intervener.reset()
            core.begin(frame, observer.proprio(obs))
            while not done:
                take = None
                if intervener is not None and rewarder is not None:
                    take = intervener.action(obs, rewarder.progress_now(obs[keys.OBS_IMAGE], goal))
                a = core.act(observer.proprio(obs)) if take is None else take
                res = repeat_step(env, a, cfg.action_repeat, oracle_bonus)
                if take is not None:
                    a = res.applied  # what the arm did under the operator, after the envelope
                obs, frame = res.obs, observer.frame(res.obs)
                reward = res.reward * cfg.reward.scale
                try:
                    core.record(a, frame, observer.proprio(obs), reward=reward,
                                terminated=res.terminated)  # fmt: skip
                except NonFiniteError as e:
                    state["nonfinite"] = int(state["nonfinite"]) + 1
                    tqdm.write(f"episode {episode}: {e}; episode discarded, not trained on")
                    core.abandon()
                    aborted = True
                    break
                intervened.append(take is not None)
                agent_frames.append(frame)
                proprios.append(observer.proprio(obs))
                actions.append(np.asarray(a, np.float32))
                images.append(obs[keys.OBS_IMAGE])
                successes.append(res.success)
                env_rewards.append(reward)
                ep_frames += res.frames
                # end_on_success: the call on this frame ends the episode (its step terminal)
                ended = cfg.end_on_success and (
                    rewarder.called_now(images[-1], res.success, goal) if rewarder is not None
                    else res.success  # the oracle baseline's call: the predicate
                )
                done = res.terminated or res.truncated or ended
                state["step"], state["frames"] = core.agent_steps, int(state["frames"]) + res.frames
                bar.update(res.frames)
                if rewarder is not None:
                    disc = rewarder.maybe_update()
                    if disc:
                        log.scalars("reward", disc, int(state["frames"]))
                metrics = core.maybe_update()
                if metrics:
                    log.scalars("update", metrics, int(state["frames"]))
            if aborted:
                state["episode"] = episode + 1
                continue
            learned_return = float("nan")
            r = np.asarray(env_rewards, np.float32)
            called = np.array(successes, bool)  # the oracle baseline's (bonus already in r)
            try:
                if rewarder is not None:
                    r, called = rewarder.episode_rewards(
                        np.stack(images), np.array(successes), goal
                    )
                if ended:  # the call that ended it, as made on the frame (batched scoring of
                    called[-1] = True  # the episode may differ in the last float digits)
                stored = core.finish(r, called, np.array(intervened), actions, agent_frames,
                                     proprios)  # fmt: skip
            except NonFiniteError as e:
                state["nonfinite"] = int(state["nonfinite"]) + 1
                tqdm.write(f"episode {episode}: {e}; episode discarded, not trained on")
                state["episode"] = episode + 1
                continue
            if rewarder is not None:
                learned_return = float(stored.sum())
            n_int = int(np.sum(intervened))
            state["intervened_steps"] = int(state.get("intervened_steps", 0)) + n_int
            if intervener is not None:
                state["takeovers"] = int(state.get("takeovers", 0)) + intervener.episode_takeovers
            state["episode"] = episode + 1
            state["wall_s"] = time.monotonic() - t_start
            frames = int(state["frames"])
            log.row(
                "train",
                {
                    "frames": frames,
                    "step": core.agent_steps,
                    "episode": episode,
                    "return": round(float(sum(env_rewards)), 4),
                    "return_learned": learned_return,
                    "success": any(successes),  # the twin's predicate: evaluation only
                    "success_called": bool(called.any()),  # what learning was told
                    "intervened_steps": n_int,
                    "episode_frames": ep_frames,
                    "fps": round(ep_frames / max(time.monotonic() - t_ep, 1e-6), 1),
                    "updates": agent.num_updates,
                    "wall_s": round(float(state["wall_s"]), 1),
                    "nonfinite": state["nonfinite"],
                },
            )
            if frames >= int(state["next_ckpt"]):
                state["next_ckpt"] = int(state["next_ckpt"]) + cfg.checkpoint_every_frames
                checkpoint()
    finally:
        bar.close()
        core.close()
        state["nonfinite"] = int(state["nonfinite"]) + core.nonfinite_batches
        log.close()
        for env_ in (env, eval_env):
            close = getattr(env_, "close", None)
            if close is not None:
                close()
    state["wall_s"] = time.monotonic() - t_start
    checkpoint()
    png = plot_curve(out)
    summary = {
        "out": str(out),
        "frames": state["frames"],
        "steps": state["step"],
        "episodes": state["episode"],
        "updates": agent.num_updates,
        "wall_s": round(float(state["wall_s"]), 1),
        "final_eval": last_eval,
        "nonfinite": state["nonfinite"],
        "reward_model_updates": rewarder.num_updates if rewarder is not None else 0,
        # Learning saw the twin's oracle reward or success predicate: never a headline figure.
        "oracle_in_learning": cfg.oracle_in_learning,
        "demo_episodes": n_demos,
        "intervened_steps": int(state.get("intervened_steps", 0)),
        "takeovers": int(state.get("takeovers", 0)),
        # operator steps and called successes the full demo buffer had no room for
        "demo_steps_left_out": core.demo_steps_left_out,
        "success_progress": rewarder.success_progress if rewarder is not None else None,
        "curve": str(png) if png else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
