"""DrQ-v2 (Yarats et al., 2021, "Mastering Visual Continuous Control"): one readable file.

    cfg = DrQV2Config(batch_size=256)
    agent = DrQV2Agent(cfg, obs_shape=(9, 84, 84), action_dim=4, proprio_dim=4)
    action = agent.act(obs_uint8_chw, proprio, step=agent_step, eval_mode=False)
    metrics = agent.update(replay.sample(cfg.batch_size), step=agent_step)   # logged by the caller

Pieces, in the paper's order: random-shift augmentation (pad 4, bilinear resampling), a
4-layer conv encoder, a trunk (Linear, LayerNorm, Tanh) per head, a deterministic actor whose
exploration noise is a clipped truncated normal with a linearly decaying stddev, and a clipped
double-Q critic with a Polyak-averaged target network, trained on n-step returns.

The paper's gotcha, kept explicit here: every schedule in :class:`DrQV2Config` counts *agent
steps* (one ``act`` call = ``action_repeat`` environment frames), while training budgets in the
trainer count *frames*. The official code names its stddev duration in steps too.

Two observation kinds share one agent:
- pixels: ``obs_shape = (3 * frame_stack, H, W)`` uint8, augmented and encoded by the conv net;
- features: ``obs_shape = (D,)`` float32, e.g. a frozen reward encoder's embedding of the
  stacked frames (VIP's setting); no augmentation, no conv encoder.
Proprioception (``proprio_dim > 0``) is concatenated to the trunk output of actor and critic.

CPU speed (see benchmarks/bench_drqv2.py): channels_last convs, one fused pad + grid_sample for
obs and next obs, fused Adam, no critic weight gradients during the actor step, foreach Polyak
update. Run under tcmalloc (glibc returns every block over 32 MB to the OS, so large activations
page-fault on every step) for another ~2x.

GPU (CUDA): an update never waits for the device. Batches are staged through pinned memory on a
copy stream (:meth:`DrQV2Agent.to_device`, called ahead for the next batch), the optimizers skip
a step whose loss is NaN/inf on the device (fused Adam's ``found_inf``, as AMP's grad scaler
does) instead of reading the loss back, and metrics are read back only when ``log=True``: one
device-to-host copy. Random draws (shifts, noise) come from CPU generators and are moved to the
device, so a seed draws the same augmentations on every device and a checkpoint's RNG state
loads anywhere. Reproducibility: on the CPU an update is bit-identical after a resume; on CUDA
it is only with ``deterministic=True`` (deterministic cuDNN/cuBLAS, slower), and never across
devices (different kernels round differently).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from video2reward.compute.device import Staged, Stager, WeightHandoff, host_scalars
from video2reward.policies.replay import Batch, NonFiniteError

__all__ = [
    "DrQV2Agent",
    "DrQV2Config",
    "NonFiniteError",
    "Policy",
    "bc_loss",
    "random_shift",
    "sample_action",
]

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class DrQV2Config:
    """Agent hyper-parameters; defaults are the official code's (its "easy" stddev schedule)."""

    lr: float = 1e-4  # Adam learning rate for encoder, actor and critic
    feature_dim: int = 50  # trunk output size (paper: 50)
    hidden_dim: int = 1024  # MLP width of actor and critic heads (paper: 1024)
    critic_target_tau: float = 0.01  # Polyak rate of the target critic per update
    batch_size: int = 256  # transitions per update
    nstep: int = 3  # n of the n-step return (the replay computes it; kept here for one source)
    discount: float = 0.99  # per agent step
    update_every_steps: int = 2  # one update per this many agent steps
    # Updates each time one is due: the update-to-data ratio is updates_per_step /
    # update_every_steps per agent step (RLPD raises it on GPUs; 1 is the paper's).
    updates_per_step: int = 1
    num_expl_steps: int = 2000  # agent steps of uniform random actions (= 4000 frames at repeat 2)
    stddev_init: float = 1.0  # exploration stddev at step 0
    stddev_final: float = 0.1  # stddev after the schedule ends
    stddev_schedule_steps: int = 100_000  # agent steps of the linear decay (official "easy")
    stddev_clip: float = 0.3  # noise clip for target and actor samples
    shift_pad_px: int = 4  # random-shift padding, pixels (paper: 4 at 84x84)
    channels_last: bool = True  # NHWC convs: faster with oneDNN on CPU
    weight_decay: float = 0.0  # kept for ablations; the paper uses none
    # Behaviour cloning on demonstration rows (batch.is_demo), as TD3+BC writes it: the actor
    # loss gains bc_weight * mean|Q| * ||pi(s) - a_demo||^2 (scaled by |Q| so the weight does
    # not depend on the reward's scale; TD3+BC's alpha=2.5 is bc_weight=0.4), decaying linearly
    # to 0 over bc_decay_steps agent steps as ROT anneals it (0: constant). 0 = the paper.
    bc_weight: float = 0.0
    bc_decay_steps: int = 0
    # The same BC term also trains the conv encoder on demo rows (added to the critic's loss,
    # which alone trains it in DrQ-v2): the demonstrations then shape what the features see,
    # not only what the actor reads from them. No effect without bc_weight.
    bc_encoder: bool = False

    def __post_init__(self) -> None:
        positive = {
            "lr": self.lr,
            "feature_dim": self.feature_dim,
            "hidden_dim": self.hidden_dim,
            "batch_size": self.batch_size,
            "nstep": self.nstep,
            "update_every_steps": self.update_every_steps,
            "updates_per_step": self.updates_per_step,
            "stddev_init": self.stddev_init,
            "stddev_clip": self.stddev_clip,
        }
        for name, v in positive.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not 0.0 < self.critic_target_tau <= 1.0:
            raise ValueError(f"critic_target_tau must be in (0, 1], got {self.critic_target_tau}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.stddev_final <= self.stddev_init:
            raise ValueError(
                f"need 0 <= stddev_final <= stddev_init, got {self.stddev_final}, "
                f"{self.stddev_init}"
            )
        if self.stddev_schedule_steps < 1:
            raise ValueError(
                f"stddev_schedule_steps must be >= 1, got {self.stddev_schedule_steps}"
            )
        if self.num_expl_steps < 0 or self.shift_pad_px < 0 or self.weight_decay < 0:
            raise ValueError("num_expl_steps, shift_pad_px and weight_decay must be >= 0")
        if not (math.isfinite(self.bc_weight) and self.bc_weight >= 0) or self.bc_decay_steps < 0:
            raise ValueError(
                f"need bc_weight >= 0 and bc_decay_steps >= 0, got {self.bc_weight}, "
                f"{self.bc_decay_steps}"
            )

    def bc_weight_at(self, step: int) -> float:
        """The behaviour-cloning weight at agent step ``step`` (linear decay to 0)."""
        if not self.bc_decay_steps:
            return self.bc_weight
        return self.bc_weight * max(0.0, 1.0 - step / self.bc_decay_steps)

    def stddev(self, step: int) -> float:
        """Linear exploration stddev schedule; ``step`` counts agent steps, not frames."""
        mix = min(max(step / self.stddev_schedule_steps, 0.0), 1.0)
        return (1.0 - mix) * self.stddev_init + mix * self.stddev_final


# --------------------------------------------------------------------------- randomness
def _gen_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


# --------------------------------------------------------------------------- augmentation
_GRID_CACHE: dict[tuple[int, int, int, torch.dtype, str], Tensor] = {}


def _base_grid(h: int, w: int, pad: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Grid (1, h, w, 2) at the centres of the top-left h x w pixels of the padded image."""
    key = (h, w, pad, dtype, str(device))
    if key not in _GRID_CACHE:
        # grid_sample with align_corners=False maps pixel k of a size-n axis to (2k + 1) / n - 1.
        ys = (2 * torch.arange(h, dtype=dtype, device=device) + 1) / (h + 2 * pad) - 1
        xs = (2 * torch.arange(w, dtype=dtype, device=device) + 1) / (w + 2 * pad) - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        _GRID_CACHE[key] = torch.stack([gx, gy], dim=-1).unsqueeze(0)
    return _GRID_CACHE[key]


def random_shift(
    x: Tensor,
    pad: int,
    *,
    shifts_px: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replicate-pad by ``pad`` and crop back at an integer offset in [0, 2 pad] per image.

    ``x`` is (N, C, H, W) float. The crop is done by bilinear ``grid_sample`` exactly at pixel
    centres (so it equals ``padded[:, :, dy:dy+H, dx:dx+W]``), as in the paper. ``shifts_px``
    (N, 2) int gives (dx, dy) explicitly, for tests; otherwise they are drawn from ``generator``.
    """
    n, _, h, w = x.shape
    if pad == 0:
        return x
    if shifts_px is None:
        # Drawn where the generator lives (PyTorch refuses a CPU generator for a CUDA tensor),
        # then moved: the same seed shifts the same way on every device.
        shifts_px = torch.randint(
            0, 2 * pad + 1, (n, 2), generator=generator, device=_gen_device(generator)
        )
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    # The offsets are computed where the shifts are (the CPU) and moved once, non-blocking: a
    # tensor built from a Python list on CUDA would be a blocking copy every update.
    scale = torch.tensor(
        [2.0 / (w + 2 * pad), 2.0 / (h + 2 * pad)], dtype=x.dtype, device=shifts_px.device
    )
    offset = (shifts_px.to(x.dtype) * scale).to(x.device, non_blocking=True)
    grid = _base_grid(h, w, pad, x.dtype, x.device) + offset.view(n, 1, 1, 2)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- networks
def _init_weights(m: nn.Module) -> None:
    # Orthogonal init as in the paper's code; ReLU gain for convs.
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Four 3x3 convs, 32 channels, the first with stride 2; uint8 pixels -> flat features."""

    def __init__(self, obs_shape: tuple[int, ...], channels_last: bool = True):
        super().__init__()
        c, h, w = obs_shape
        self.channels_last = channels_last
        self.convnet = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )  # fmt: skip
        out_h, out_w = (h - 3) // 2 + 1 - 6, (w - 3) // 2 + 1 - 6
        if out_h < 1 or out_w < 1:
            raise ValueError(f"image {h}x{w} is too small for the encoder (needs >= 17 px)")
        self.repr_dim = 32 * out_h * out_w  # 32 * 35 * 35 at 84x84
        self.apply(_init_weights)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, obs: Tensor) -> Tensor:
        """``obs``: (N, C, H, W) float in [0, 255] (already augmented when training)."""
        x = obs / 255.0 - 0.5
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.convnet(x).flatten(1)


def _trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )  # fmt: skip


class Actor(nn.Module):
    """Trunk -> [features, proprio] -> MLP -> tanh mean action."""

    def __init__(self, repr_dim: int, proprio_dim: int, action_dim: int, cfg: DrQV2Config):
        super().__init__()
        self.trunk = _trunk(repr_dim, cfg.feature_dim)
        self.policy = _mlp(cfg.feature_dim + proprio_dim, cfg.hidden_dim, action_dim)
        self.apply(_init_weights)

    def forward(self, h: Tensor, proprio: Tensor | None) -> Tensor:
        z = self.trunk(h)
        if proprio is not None:
            z = torch.cat([z, proprio], dim=-1)
        return torch.tanh(self.policy(z))


class Critic(nn.Module):
    """Shared trunk, two Q heads over [features, proprio, action]."""

    def __init__(self, repr_dim: int, proprio_dim: int, action_dim: int, cfg: DrQV2Config):
        super().__init__()
        self.trunk = _trunk(repr_dim, cfg.feature_dim)
        in_dim = cfg.feature_dim + proprio_dim + action_dim
        self.q1 = _mlp(in_dim, cfg.hidden_dim, 1)
        self.q2 = _mlp(in_dim, cfg.hidden_dim, 1)
        self.apply(_init_weights)

    def forward(self, h: Tensor, proprio: Tensor | None, action: Tensor) -> tuple[Tensor, Tensor]:
        z = self.trunk(h)
        parts = [z, action] if proprio is None else [z, proprio, action]
        za = torch.cat(parts, dim=-1)
        return self.q1(za), self.q2(za)


def sample_action(
    mean: Tensor, std: float, clip: float | None, generator: torch.Generator | None
) -> Tensor:
    """Clipped truncated normal: mean + clip(N(0, std)), then clamp to (-1, 1).

    The clamp passes gradients straight through to ``mean`` (as the official code does), so
    the actor still learns when its mean saturates.
    """
    noise = torch.randn(
        mean.shape, generator=generator, dtype=mean.dtype, device=_gen_device(generator)
    ).to(mean.device, non_blocking=True)
    noise = noise * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    x = mean + noise
    clamped = x.detach().clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    return x - x.detach() + clamped


def bc_loss(mean: Tensor, action: Tensor, is_demo: Tensor) -> Tensor:
    """Squared distance of the actor's mean action to the recorded one, averaged over the
    demonstration rows only (0 without any): online rows get no BC gradient."""
    sq = ((mean - action) ** 2).sum(-1)
    return (sq * is_demo).sum() / is_demo.sum().clamp_min(1.0)


def _normal_log_prob(x: Tensor, mean: Tensor, std: float) -> Tensor:
    return -((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)


# --------------------------------------------------------------------------- acting
class Policy:
    """Encoder + actor + exploration: what acting needs. The agent owns one sharing its modules;
    :meth:`DrQV2Agent.policy_snapshot` makes an independent copy for an acting thread."""

    def __init__(
        self,
        cfg: DrQV2Config,
        encoder: nn.Module,
        actor: Actor,
        proprio_dim: int,
        generator: torch.Generator,
    ):
        self.cfg, self.encoder, self.actor = cfg, encoder, actor
        self.proprio_dim = proprio_dim
        self.pixels = isinstance(encoder, Encoder)
        self.generator = generator
        self.device = next(actor.parameters()).device
        # sync_from may run on a training thread's CUDA stream; acting waits for its copy.
        self.handoff = WeightHandoff(self.device)

    def act(
        self, obs: np.ndarray, proprio: np.ndarray | None, step: int, eval_mode: bool
    ) -> np.ndarray:
        """One action in [-1, 1]^A (float32, on the host). Non-finite input is refused."""
        if not self.pixels and not np.isfinite(obs).all():
            raise NonFiniteError("non-finite observation passed to act()")
        p = None
        if self.proprio_dim:
            if proprio is None:
                raise ValueError(f"agent expects proprio of size {self.proprio_dim}")
            p = np.asarray(proprio, np.float32).reshape(1, -1)
            if not np.isfinite(p).all():
                raise NonFiniteError("non-finite proprioception passed to act()")
        action = self.act_tensor(torch.as_tensor(obs), p, step, eval_mode)
        return action.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def act_tensor(
        self, obs: Tensor, proprio: np.ndarray | Tensor | None, step: int, eval_mode: bool
    ) -> Tensor:
        """:meth:`act` up to the read-back: the action (A,) on the policy's device."""
        self.handoff.acquire()
        o = obs.to(self.device, non_blocking=True).unsqueeze(0)
        p = None if proprio is None else torch.as_tensor(proprio).to(self.device).view(1, -1)
        mean = self.actor(self.encoder(o.float()), p)
        if eval_mode:
            action = mean
        elif step < self.cfg.num_expl_steps:
            u = torch.rand(mean.shape, generator=self.generator, device=_gen_device(self.generator))
            action = u.to(mean.device, non_blocking=True) * 2.0 - 1.0
        else:
            action = sample_action(mean, self.cfg.stddev(step), None, self.generator)
        return action[0]

    @torch.no_grad()
    def sync_from(self, agent: DrQV2Agent) -> None:
        """Copy the agent's current encoder and actor weights into this policy (in place).

        On CUDA the copy is queued on the caller's stream (the learner's); the next
        :meth:`act` waits for it. Call it under the lock that guards acting."""
        for mine, theirs in ((self.encoder, agent.encoder), (self.actor, agent.actor)):
            params: list[Tensor] = list(mine.parameters())
            if params:  # the features agent's encoder is an Identity: nothing to copy
                torch._foreach_copy_(params, list(theirs.parameters()))
            for b_mine, b_theirs in zip(mine.buffers(), theirs.buffers(), strict=True):
                b_mine.copy_(b_theirs)
        self.handoff.publish()


# --------------------------------------------------------------------------- agent
class DeviceBatch(NamedTuple):
    """A :class:`~video2reward.policies.replay.Batch` on the agent's device."""

    obs: Tensor
    action: Tensor
    reward: Tensor  # (B, 1)
    discount: Tensor  # (B, 1), gamma^n times the episode's continuation flags
    next_obs: Tensor
    proprio: Tensor | None
    next_proprio: Tensor | None
    is_demo: Tensor | None  # (B,) 1.0 on demonstration rows


class DrQV2Agent:
    """Actor-critic with an image encoder trained through the critic loss only."""

    def __init__(
        self,
        cfg: DrQV2Config,
        obs_shape: tuple[int, ...],
        action_dim: int,
        proprio_dim: int = 0,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if len(obs_shape) not in (1, 3):
            raise ValueError(
                f"obs_shape must be (C, H, W) pixels or (D,) features, got {obs_shape}"
            )
        if action_dim < 1 or proprio_dim < 0:
            raise ValueError(
                f"need action_dim >= 1 and proprio_dim >= 0, got {action_dim}, {proprio_dim}"
            )
        self.cfg = cfg
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.action_dim = int(action_dim)
        self.proprio_dim = int(proprio_dim)
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda", "meta"):  # meta: shapes only, no update
            raise ValueError(f"DrQ-v2 runs on cpu or cuda, got device {self.device}")
        self.pixels = len(obs_shape) == 3
        torch.manual_seed(seed)  # parameter init only; sampling uses the generators below
        self.encoder: nn.Module
        if self.pixels:
            enc = Encoder(self.obs_shape, cfg.channels_last)
            repr_dim = enc.repr_dim
            self.encoder = enc
        else:
            repr_dim = self.obs_shape[0]
            self.encoder = nn.Identity()
        self.encoder.to(self.device)
        self.actor = Actor(repr_dim, proprio_dim, action_dim, cfg).to(self.device)
        self.critic = Critic(repr_dim, proprio_dim, action_dim, cfg).to(self.device)
        self.critic_target = Critic(repr_dim, proprio_dim, action_dim, cfg).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        fused = self.device.type in ("cpu", "cuda")
        opt_kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "fused": fused}
        self.encoder_opt = (
            torch.optim.Adam(self.encoder.parameters(), **opt_kw) if self.pixels else None
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), **opt_kw)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), **opt_kw)
        # Separate generators so that acting (another thread, eval episodes) never changes
        # which augmentation/noise the next update draws: resume reproduces updates exactly.
        # CPU generators on every device: draws are moved to the device (a few hundred
        # numbers per update), and their state loads into an agent on any device.
        self._update_gen = torch.Generator().manual_seed(seed + 1)
        self._act_gen = torch.Generator().manual_seed(seed + 2)
        self.policy = Policy(cfg, self.encoder, self.actor, self.proprio_dim, self._act_gen)
        self._stager = Stager(self.device)
        self.num_updates = 0
        # Updates whose critic or actor step was skipped for a NaN/inf loss; kept on the device
        # and read back only by logging and checkpoints.
        self._skipped = torch.zeros((), device=self.device)

    # ----------------------------------------------------------------- acting
    def act(
        self, obs: np.ndarray, proprio: np.ndarray | None, step: int, eval_mode: bool
    ) -> np.ndarray:
        """One action in [-1, 1]^A for one (stacked) observation. ``step`` counts agent steps."""
        return self.policy.act(obs, proprio, step, eval_mode)

    def policy_snapshot(self, seed: int = 0) -> Policy:
        """A copy of encoder + actor for another thread to act with while this agent learns."""
        return Policy(
            self.cfg,
            copy.deepcopy(self.encoder).requires_grad_(False),
            copy.deepcopy(self.actor).requires_grad_(False),
            self.proprio_dim,
            torch.Generator().manual_seed(seed),
        )

    @property
    def skipped_updates(self) -> int:
        """Updates whose optimizer steps were skipped for a NaN/inf loss (reads the device)."""
        return int(self._skipped.item())

    # ----------------------------------------------------------------- learning
    def to_device(self, batch: Batch) -> Staged:
        """Check a replay batch on the host and start its copy to the device.

        Raises :class:`NonFiniteError` if a float array holds NaN/inf (the replay refuses those
        on the way in; this guards batches built elsewhere), so nothing NaN is ever trained on.
        On CUDA the copy runs on a copy stream: call this for the next batch while the current
        update computes, then pass the result to :meth:`update`.
        """
        with_p = (
            self.proprio_dim > 0 and batch.proprio is not None and batch.next_proprio is not None
        )
        if self.proprio_dim and not with_p:
            raise ValueError(f"agent expects proprio of size {self.proprio_dim} in the batch")
        arrays = [
            batch.obs,
            np.asarray(batch.action, np.float32),
            np.asarray(batch.reward, np.float32).reshape(-1, 1),
            np.asarray(batch.discount, np.float32).reshape(-1, 1),
            batch.next_obs,
            np.asarray(batch.proprio, np.float32) if with_p else None,
            np.asarray(batch.next_proprio, np.float32) if with_p else None,
            None if batch.is_demo is None else np.asarray(batch.is_demo, np.float32),
        ]
        for a in arrays:
            if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all():
                raise NonFiniteError("replay batch holds NaN/inf; the update is skipped")
        return self._stager(*arrays)

    def _encode_pair(self, obs: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor]:
        if not self.pixels:
            return obs.float(), next_obs.float()
        n = obs.shape[0]
        # One pad + grid_sample over obs and next obs together (independent shifts per image).
        both = random_shift(
            torch.cat([obs, next_obs]).float(), self.cfg.shift_pad_px, generator=self._update_gen
        )
        h = self.encoder(both[:n])
        with torch.no_grad():
            next_h = self.encoder(both[n:])
        return h, next_h

    def update(self, batch: Batch | Staged, step: int, *, log: bool = True) -> dict[str, float]:
        """One critic (+encoder) step, one actor step, one target update. ``step``: agent steps.

        ``batch`` is a replay batch or what :meth:`to_device` made of one. Raises
        :class:`NonFiniteError` (nothing is changed) if the batch holds NaN/inf. A NaN/inf loss
        skips that optimizer step on the device (counted in ``skipped_updates``). Metrics are
        read back from the device only when ``log`` is true (else ``{}``): the only host
        synchronisation of an update.
        """
        staged = self.to_device(batch) if isinstance(batch, Batch) else batch
        obs, action, reward, discount, next_obs, p, next_p, is_demo = DeviceBatch._make(
            staged.ready()
        )
        std = self.cfg.stddev(step)

        h, next_h = self._encode_pair(obs, next_obs)

        # Critic: clipped double Q on the n-step target (discount already holds gamma^n).
        with torch.no_grad():
            next_action = sample_action(
                self.actor(next_h, next_p), std, self.cfg.stddev_clip, self._update_gen
            )
            tq1, tq2 = self.critic_target(next_h, next_p, next_action)
            target_q = reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(h, p, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        bc_weight = self.cfg.bc_weight_at(step)
        encoder_loss = critic_loss
        if self.cfg.bc_encoder and bc_weight > 0 and is_demo is not None and self.pixels:
            # the actor's weights get gradients here too; they are cleared before its step
            q_scale = torch.min(q1, q2).detach().abs().mean()
            encoder_loss = critic_loss + bc_weight * q_scale * bc_loss(self.actor(h, p), action,
                                                                       is_demo)  # fmt: skip
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        encoder_loss.backward()
        critic_bad = self._step_unless_nonfinite(encoder_loss, self.critic_opt, self.encoder_opt)

        # Actor: maximise min Q on detached features; no gradients for critic weights.
        h = h.detach()
        mean = self.actor(h, p)
        pi_action = sample_action(mean, std, self.cfg.stddev_clip, self._update_gen)
        self.critic.requires_grad_(False)
        try:
            aq1, aq2 = self.critic(h, p, pi_action)
        finally:
            self.critic.requires_grad_(True)
        min_q = torch.min(aq1, aq2)
        actor_loss = -min_q.mean()
        bc: Tensor | None = None
        if bc_weight > 0 and is_demo is not None:
            bc = bc_loss(mean, action, is_demo)
            actor_loss = actor_loss + bc_weight * min_q.detach().abs().mean() * bc
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_bad = self._step_unless_nonfinite(actor_loss, self.actor_opt)

        # Target critic: Polyak average, tau per update.
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.critic_target.parameters()),
                list(self.critic.parameters()),
                self.cfg.critic_target_tau,
            )
        self.num_updates += 1
        self._skipped += torch.maximum(critic_bad, actor_bad)
        if not log:
            return {}
        log_prob = _normal_log_prob(pi_action.detach(), mean.detach(), std).sum(-1)
        on_device: dict[str, Tensor | float] = {
            "critic_loss": critic_loss.detach(),
            "critic_q1": q1.detach().mean(),
            "critic_q2": q2.detach().mean(),
            "critic_target_q": target_q.mean(),
            "actor_loss": actor_loss.detach(),
            "actor_logprob": log_prob.mean(),
            "batch_reward": reward.mean(),
            "nonfinite_updates": self._skipped,
        }
        if bc is not None:
            on_device["actor_bc"] = bc.detach()
            on_device["bc_weight"] = bc_weight
        metrics = host_scalars(on_device)  # one device-to-host copy
        metrics["actor_ent"] = self.action_dim * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(std))
        metrics["stddev"] = std
        return metrics

    def _step_unless_nonfinite(self, loss: Tensor, *opts: torch.optim.Optimizer | None) -> Tensor:
        """Step the optimizers unless ``loss`` or a gradient is NaN/inf, decided on the device.

        Fused Adam skips its whole step (weights, moments and step count) when its
        ``found_inf`` is non-zero, the mechanism AMP's GradScaler uses; so the host never waits
        for the loss. Returns the 0/1 flag as a device tensor.
        """
        grads = [
            p.grad
            for opt in opts
            if opt is not None
            for group in opt.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        # A finite loss can still overflow in the backward pass: the gradients count too.
        finite = torch.isfinite(loss.detach())
        if grads:
            finite = finite & torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
        bad = (~finite).float()
        for opt in opts:
            if opt is not None:
                opt.found_inf = bad  # type: ignore[attr-defined]
                opt.step()
        return bad

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: weights, optimizers, RNG streams."""
        opts = {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt}
        if self.encoder_opt is not None:
            opts["encoder_opt"] = self.encoder_opt
        return {
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.cfg),
            "obs_shape": list(self.obs_shape),
            "action_dim": self.action_dim,
            "proprio_dim": self.proprio_dim,
            "encoder": self.encoder.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            **{k: o.state_dict() for k, o in opts.items()},
            "update_gen": self._update_gen.get_state(),
            "act_gen": self._act_gen.get_state(),
            "num_updates": self.num_updates,
            "skipped_updates": self.skipped_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')} != {CHECKPOINT_VERSION}")
        shape = (tuple(state["obs_shape"]), state["action_dim"], state["proprio_dim"])
        if shape != (self.obs_shape, self.action_dim, self.proprio_dim):
            raise ValueError(
                f"checkpoint is for obs/action/proprio {shape}, agent has "
                f"{(self.obs_shape, self.action_dim, self.proprio_dim)}"
            )
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.encoder_opt is not None:
            self.encoder_opt.load_state_dict(state["encoder_opt"])
        # Generator states are CPU byte tensors; a state loaded with map_location=<device>
        # would hold them on that device, which Generator.set_state refuses.
        self._update_gen.set_state(state["update_gen"].cpu())
        self._act_gen.set_state(state["act_gen"].cpu())
        self.num_updates = int(state["num_updates"])
        self._skipped.fill_(float(state.get("skipped_updates", 0)))

    def save(self, path: str | Path) -> None:
        """Write atomically (tmp + rename), so a crash never leaves a half-written checkpoint."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(p)

    def load(self, path: str | Path) -> None:
        """Load a checkpoint saved on any device: read to the CPU, then copied into this
        agent's tensors (weights and optimizer state move to its device; RNG stays CPU)."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
