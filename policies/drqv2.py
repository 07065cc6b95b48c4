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
update. Run under tcmalloc (FACTS.md) for another ~2x.
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
from video2reward.policies.replay import Batch, NonFiniteError

__all__ = ["DrQV2Agent", "DrQV2Config", "NonFiniteError", "Policy", "random_shift", "sample_action"]

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
    num_expl_steps: int = 2000  # agent steps of uniform random actions (= 4000 frames at repeat 2)
    stddev_init: float = 1.0  # exploration stddev at step 0
    stddev_final: float = 0.1  # stddev after the schedule ends
    stddev_schedule_steps: int = 100_000  # agent steps of the linear decay (official "easy")
    stddev_clip: float = 0.3  # noise clip for target and actor samples
    shift_pad_px: int = 4  # random-shift padding, pixels (paper: 4 at 84x84)
    channels_last: bool = True  # NHWC convs: faster with oneDNN on CPU
    weight_decay: float = 0.0  # kept for ablations; the paper uses none

    def __post_init__(self) -> None:
        positive = {
            "lr": self.lr,
            "feature_dim": self.feature_dim,
            "hidden_dim": self.hidden_dim,
            "batch_size": self.batch_size,
            "nstep": self.nstep,
            "update_every_steps": self.update_every_steps,
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

    def stddev(self, step: int) -> float:
        """Linear exploration stddev schedule; ``step`` counts agent steps, not frames."""
        mix = min(max(step / self.stddev_schedule_steps, 0.0), 1.0)
        return (1.0 - mix) * self.stddev_init + mix * self.stddev_final


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
        shifts_px = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    scale = torch.tensor([2.0 / (w + 2 * pad), 2.0 / (h + 2 * pad)], dtype=x.dtype, device=x.device)
    grid = _base_grid(h, w, pad, x.dtype, x.device) + (shifts_px.to(x.dtype) * scale).view(
        n, 1, 1, 2
    )
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
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    x = mean + noise
    clamped = x.detach().clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    return x - x.detach() + clamped


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

    @torch.inference_mode()
    def act(
        self, obs: np.ndarray, proprio: np.ndarray | None, step: int, eval_mode: bool
    ) -> np.ndarray:
        o = torch.as_tensor(obs, device=self.device).unsqueeze(0)
        if not self.pixels and not torch.isfinite(o).all():
            raise NonFiniteError("non-finite observation passed to act()")
        p = None
        if self.proprio_dim:
            if proprio is None:
                raise ValueError(f"agent expects proprio of size {self.proprio_dim}")
            p = torch.as_tensor(proprio, dtype=torch.float32, device=self.device).view(1, -1)
            if not torch.isfinite(p).all():
                raise NonFiniteError("non-finite proprioception passed to act()")
        mean = self.actor(self.encoder(o.float()), p)
        if eval_mode:
            action = mean
        elif step < self.cfg.num_expl_steps:
            action = torch.rand(mean.shape, generator=self.generator) * 2.0 - 1.0
        else:
            action = sample_action(mean, self.cfg.stddev(step), None, self.generator)
        return action[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def sync_from(self, agent: DrQV2Agent) -> None:
        """Copy the agent's current encoder and actor weights into this policy (in place)."""
        for mine, theirs in ((self.encoder, agent.encoder), (self.actor, agent.actor)):
            torch._foreach_copy_(list(mine.parameters()), list(theirs.parameters()))
            for b_mine, b_theirs in zip(mine.buffers(), theirs.buffers(), strict=True):
                b_mine.copy_(b_theirs)


# --------------------------------------------------------------------------- agent
class _TensorBatch(NamedTuple):
    obs: Tensor
    action: Tensor
    reward: Tensor  # (B, 1)
    discount: Tensor  # (B, 1), gamma^n times the episode's continuation flags
    next_obs: Tensor
    proprio: Tensor | None
    next_proprio: Tensor | None


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
        self._update_gen = torch.Generator().manual_seed(seed + 1)
        self._act_gen = torch.Generator().manual_seed(seed + 2)
        self.policy = Policy(cfg, self.encoder, self.actor, self.proprio_dim, self._act_gen)
        self.num_updates = 0

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

    # ----------------------------------------------------------------- learning
    def _to_tensors(self, batch: Batch) -> _TensorBatch:
        def t(x: np.ndarray) -> Tensor:
            v = torch.as_tensor(x, device=self.device)
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise NonFiniteError("replay batch holds NaN/inf; the update is skipped")
            return v

        with_p = (
            self.proprio_dim > 0 and batch.proprio is not None and batch.next_proprio is not None
        )
        if self.proprio_dim and not with_p:
            raise ValueError(f"agent expects proprio of size {self.proprio_dim} in the batch")
        return _TensorBatch(
            obs=t(batch.obs),
            action=t(batch.action).float(),
            reward=t(batch.reward).view(-1, 1).float(),
            discount=t(batch.discount).view(-1, 1).float(),
            next_obs=t(batch.next_obs),
            proprio=t(batch.proprio) if batch.proprio is not None and with_p else None,
            next_proprio=(
                t(batch.next_proprio) if batch.next_proprio is not None and with_p else None
            ),
        )

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

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        """One critic (+encoder) step, one actor step, one target update. ``step``: agent steps.

        Raises :class:`NonFiniteError` (nothing is changed) if the batch holds NaN/inf; a
        non-finite loss skips the optimizer steps and is reported as ``nonfinite_loss=1``.
        """
        obs, action, reward, discount, next_obs, p, next_p = self._to_tensors(batch)
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
        if not torch.isfinite(critic_loss):
            return {"nonfinite_loss": 1.0, "critic_loss": float(critic_loss)}
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()

        # Actor: maximise min Q on detached features; no gradients for critic weights.
        h = h.detach()
        mean = self.actor(h, p)
        pi_action = sample_action(mean, std, self.cfg.stddev_clip, self._update_gen)
        self.critic.requires_grad_(False)
        try:
            aq1, aq2 = self.critic(h, p, pi_action)
        finally:
            self.critic.requires_grad_(True)
        actor_loss = -torch.min(aq1, aq2).mean()
        if not torch.isfinite(actor_loss):
            return {"nonfinite_loss": 1.0, "actor_loss": float(actor_loss)}
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Target critic: Polyak average, tau per update.
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.critic_target.parameters()),
                list(self.critic.parameters()),
                self.cfg.critic_target_tau,
            )
        self.num_updates += 1
        log_prob = _normal_log_prob(pi_action.detach(), mean.detach(), std).sum(-1)
        return {
            "critic_loss": float(critic_loss.detach()),
            "critic_q1": float(q1.detach().mean()),
            "critic_q2": float(q2.detach().mean()),
            "critic_target_q": float(target_q.mean()),
            "actor_loss": float(actor_loss.detach()),
            "actor_logprob": float(log_prob.mean()),
            "actor_ent": self.action_dim * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(std)),
            "batch_reward": float(reward.mean()),
            "stddev": std,
        }

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
        self._update_gen.set_state(state["update_gen"])
        self._act_gen.set_state(state["act_gen"])
        self.num_updates = int(state["num_updates"])

    def save(self, path: str | Path) -> None:
        """Write atomically (tmp + rename), so a crash never leaves a half-written checkpoint."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(p)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
