"""Diffusion Reward: rewards from a conditional video diffusion model (Huang et al., 2023).

    v2r reward train method=diffusion_reward data=demos.zarr out=runs/diffusion_reward
    model = load_reward_model("runs/diffusion_reward"); model.score(frames).reward

A discrete diffusion model (VQ-Diffusion) over the tokenizer codes of the next frame
(``rewards/tokenizer.py``), conditioned on the codes of the ``history`` frames before it, is
trained on the demonstration videos. The reward of frame t is the negative conditional
entropy of the next frame given frames (t-1, t): low when the model is sure what comes next,
which it is on demonstration-like histories. Plus, as in the official agent, an RND
exploration term on the frame itself; the paper's sparse success term is the learner's
success bonus (``success_bonus=1`` with the model's or the operator's success call).

What the official code (TEA-Lab/diffusion_reward) does, and this file:
- **The estimator** (``calc_vlb``, reward_type ``entropy``): one sample of the next frame is
  drawn by the fast reverse sampler, starting from all-[MASK] tokens at t = 99 and jumping
  ``skip_step + 1`` = 10 steps at a time (t = 99, 89, ..., 9, then 0: 11 model calls); the
  score is the variational bound of the model's own sample x~0, summed over tokens:
  sum over the jumps of -KL(q(x_s | x_t, x~0) || p(x_s | x_t)) plus log p(x~0 | x_0-step).
  That is -H(next frame | history) estimated by log p(x~0 | history). ``num_samples`` samples
  are averaged (official: 1); ``noise_scale`` scales the Gumbel noise of the sampler (1).
- **The schedule**: VQ-Diffusion's mask-and-replace with the official cumulative keep
  probability linear from 0.99999 to 0.000009 over 100 steps and the mask probability its
  mirror image; their sum is 1 - 1e-6, so the uniform-replace share is 1e-6 / K: this file
  drops it and uses the absorbing-state (mask only) process, where q(x_s | x_t, x0) keeps an
  unmasked token and unmasks a masked one with probability (a_s - a_t) / (1 - a_t).
  The KL terms then reduce to -(a_s - a_t) / (1 - a_t) * log p(x0 | x_t) on masked tokens.
- **The network**: the official one with fewer layers on the CPU: content tokens (K codes +
  [MASK]) with row/column embeddings; blocks of adaptive-LayerNorm (timestep) bidirectional
  self-attention, adaptive-LayerNorm cross-attention to the history's codes, and a 3x3-conv
  MLP on the code grid; an x0 head. Deviation: the history's code embeddings get learned
  (frame, row, column) position embeddings; the official condition has none, so its
  cross-attention sees the history as a set of tokens.
- **Loss**: the variational bound's term at a drawn t divided by the probability of t (uniform
  until every t was drawn more than 10 times, then proportional to sqrt of a running mean of
  L_t^2, VQ-Diffusion's importance sampling) plus the auxiliary x0 cross-entropy with weight
  ``aux_loss_weight`` (1e-3) * (1 + (1 - t/T)), per token. Deviations: no EMA weights; Adam
  at ``lr`` (official AdamW with warm-up and gradient clipping, batch 4).
- **Standardisation**: the official code reads fixed (mean, std) per task from YAML files
  with no script that made them; here training fits them on the demonstration frames (the
  reward is their z-score, as VIPER's), and ``progress`` is the standardised cumulative reward
  (``TokenRewardModel``).
- **Weights**: reward = ``entropy_weight`` (official 1 - expl_scale = 0.05) * z +
  ``expl_weight`` (expl_scale = 0.95) * RND. The official RND (conv 32-64-64, 512-wide
  predictor and frozen target, orthogonal init, Adam 1e-4, reward 0.5 * squared error summed
  over features, not normalised) is trained online on the agent's frames: ``update(frames)``,
  run by the learner's online schedule (``reward.disc_update_every_steps`` /
  ``reward.disc_steps`` / ``reward.disc_batch``; official: every step, batch 256). Deviation:
  the RND term is computed when an episode is scored (and re-scored), not on every update's
  batch. Until it is trained it is a fixed random function's error: set
  ``expl_weight=0`` to leave exploration out.
- **The first frame**: the history of frame 0 is (frame 0, frame 0), as in the official code.

CPU sizes are the defaults (codebook 256, 4 layers of 128; ~15 min on 2 cores for 50 twin
demos); ``configs/reward_method/diffusion_reward_paper.yaml`` has the paper's (codebook 1024,
16 layers of 128 with 16 heads, condition width 1024) for a GPU. The VQ-GAN's perceptual and
adversarial losses: see ``rewards/tokenizer.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from video2reward.compute.device import from_host
from video2reward.data.images import prepare_frames
from video2reward.rewards.base import to_tensor
from video2reward.rewards.tokenizer import TokenRewardConfig, TokenRewardModel, window_indices


@dataclasses.dataclass(frozen=True)
class DiffusionRewardConfig(TokenRewardConfig):
    method: str = "diffusion_reward"
    history: int = 2  # condition frames (official: 2)
    diffusion_steps: int = 100
    skip_step: int = 9  # the sampler jumps skip_step + 1 steps (official 9: 11 model calls)
    num_samples: int = 1
    noise_scale: float = 1.0  # Gumbel noise of the sampler
    n_layer: int = 4  # official 16
    n_head: int = 8  # official 16
    n_embd: int = 128
    cond_dim: int = 128  # official 1024
    aux_loss_weight: float = 1e-3
    entropy_weight: float = 0.05  # official 1 - expl_scale
    expl_weight: float = 0.95  # official expl_scale (RND)
    rnd_lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.history < 1 or self.diffusion_steps < 2 or self.num_samples < 1:
            raise ValueError("history >= 1, diffusion_steps >= 2 and num_samples >= 1 are needed")
        if not 0 <= self.skip_step < self.diffusion_steps - 1:
            raise ValueError(f"skip_step must be in [0, diffusion_steps - 1), got {self.skip_step}")
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd % self.n_head:
            raise ValueError("n_layer, n_head >= 1 and n_embd divisible by n_head are needed")
        for name in ("noise_scale", "aux_loss_weight", "entropy_weight", "expl_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.rnd_lr <= 0:
            raise ValueError(f"rnd_lr must be > 0, got {self.rnd_lr}")


def keep_schedule(steps: int) -> torch.Tensor:
    """Cumulative keep probabilities a_0..a_{T-1} (official: linear 0.99999 -> 0.000009)
    followed by a_{-1} = 1 (clean) at index T, so ``a[s]`` works for s = -1."""
    return torch.cat([torch.linspace(0.99999, 0.000009, steps), torch.ones(1)])


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, cond_dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.ada1, self.ada2 = nn.Linear(d, 2 * d), nn.Linear(d, 2 * d)
        self.ln1 = nn.LayerNorm(d, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(d, heads, kdim=cond_dim, vdim=cond_dim,
                                           batch_first=True)
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Conv2d(d, 2 * d, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(2 * d, d, 3, padding=1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada1(F.silu(temb)).unsqueeze(1).chunk(2, -1)
        h = self.ln1(x) * (1 + scale) + shift
        x = x + self.attn(h, h, h, need_weights=False)[0]  # bidirectional: no mask
        scale, shift = self.ada2(F.silu(temb)).unsqueeze(1).chunk(2, -1)
        h = self.ln2(x) * (1 + scale) + shift
        x = x + self.cross(h, cond, cond, need_weights=False)[0]
        b, n, d = x.shape
        h = self.ln3(x).transpose(1, 2).reshape(b, d, self.grid, self.grid)
        return x + self.mlp(h).reshape(b, d, n).transpose(1, 2)


class CondDiffusionTransformer(nn.Module):
    """x0 logits of the next frame's codes from its partly masked codes, the timestep and the
    history's codes."""

    def __init__(self, cfg: DiffusionRewardConfig):
        super().__init__()
        g, d, k = cfg.code_grid, cfg.n_embd, cfg.codebook_size
        self.content = nn.Embedding(k + 1, d)  # index k is [MASK]
        self.row = nn.Parameter(torch.randn(g, 1, d) * 0.02)
        self.col = nn.Parameter(torch.randn(1, g, d) * 0.02)
        self.time = nn.Embedding(cfg.diffusion_steps, d)
        self.cond = nn.Embedding(k, cfg.cond_dim)
        self.cond_pos = nn.Parameter(torch.randn(cfg.history, g, g, cfg.cond_dim) * 0.02)
        self.blocks = nn.ModuleList(
            [_Block(d, cfg.n_head, cfg.cond_dim, g) for _ in range(cfg.n_layer)]
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, k)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, history: torch.Tensor
                ) -> torch.Tensor:
        """tokens (B, G*G) in [0, K] (K = mask), t (B,), history (B, H, G, G) codes ->
        (B, G*G, K) log p(x0 | x_t, history)."""
        b = tokens.shape[0]
        x = self.content(tokens) + (self.row + self.col).reshape(1, -1, self.row.shape[-1])
        cond = (self.cond(history) + self.cond_pos).reshape(b, -1, self.cond_pos.shape[-1])
        temb = self.time(t)
        for block in self.blocks:
            x = block(x, cond, temb)
        return F.log_softmax(self.head(self.norm(x)), -1)


class RND(nn.Module):
    """Random network distillation (the official sizes, 64x64 frames)."""

    def __init__(self) -> None:
        super().__init__()

        def trunk() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(3, 32, 6, stride=3), nn.LeakyReLU(), nn.Conv2d(32, 64, 4, stride=2),
                nn.LeakyReLU(), nn.Conv2d(64, 64, 3), nn.LeakyReLU(), nn.Flatten(),
            )  # fmt: skip

        self.predictor = nn.Sequential(trunk(), nn.Linear(3136, 512), nn.ReLU(),
                                       nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
        self.target = nn.Sequential(trunk(), nn.Linear(3136, 512))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(m.weight, np.sqrt(2))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.target.requires_grad_(False)

    def error(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 64, 64) float in [0, 255] -> (N,) 0.5 * squared error summed over features."""
        x = frames / 255.0 - 0.5
        return 0.5 * (self.target(x) - self.predictor(x)).pow(2).sum(-1)


class DiffusionReward(TokenRewardModel):
    method = "diffusion_reward"
    config_cls = DiffusionRewardConfig
    config: DiffusionRewardConfig
    keep: torch.Tensor

    def __init__(self, config: DiffusionRewardConfig):
        super().__init__(config)
        if config.image_size_px != 64 and config.expl_weight > 0:
            raise ValueError("the RND term reads 64x64 frames: image_size_px=64 or expl_weight=0")
        self.diffusion = CondDiffusionTransformer(config)
        self.rnd = RND()
        self.register_buffer("keep", keep_schedule(config.diffusion_steps), persistent=False)
        self.lt2: torch.Tensor
        self.t_count: torch.Tensor
        self.register_buffer("lt2", torch.zeros(config.diffusion_steps))
        self.register_buffer("t_count", torch.zeros(config.diffusion_steps, dtype=torch.long))
        self._host_count: np.ndarray | None = np.zeros(config.diffusion_steps, np.int64)
        self._t_rng = np.random.default_rng(config.seed + 11)
        self._rnd_opt: torch.optim.Optimizer | None = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_count = None  # the loaded t counts, read once

    @property
    def min_frames(self) -> int:
        return self.config.history + 1

    def sample_frames(self, t: np.ndarray) -> np.ndarray:
        """History frames t-H .. t-1, then the target frame t (clamped at 0)."""
        return window_indices(t, self.config.history + 1)

    def _sample_t(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and their probabilities: uniform until every t was drawn more than 10
        times, then proportional to sqrt(E[L_t^2]) (VQ-Diffusion's importance sampling)."""
        steps = self.config.diffusion_steps
        if self._host_count is None:  # once (after a resume, the saved counts)
            self._host_count = self.t_count.cpu().numpy().copy()
        if not (self._host_count > 10).all():  # drawn here: no read of the device per step
            t_host = self._t_rng.integers(0, steps, b)
            np.add.at(self._host_count, t_host, 1)
            t = from_host(t_host, device)
            return t, torch.full((b,), 1.0 / steps, device=device)
        p = self.lt2.sqrt() + 1e-4
        p = p / p.sum()
        t = torch.multinomial(p, b, replacement=True)
        return t, p[t]

    def _unmask_prob(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Probability that a token masked at t is unmasked at s < t (s = -1: clean)."""
        a_t, a_s = self.keep[t], self.keep[s]
        return (a_s - a_t) / (1 - a_t)

    def video_loss(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        b, h = codes.shape[0], cfg.history
        history, x0 = codes[:, :h], codes[:, h].reshape(b, -1)
        t, pt = self._sample_t(b, codes.device)
        masked = torch.rand(x0.shape, device=codes.device) >= self.keep[t][:, None]
        logp = self.diffusion(torch.where(masked, cfg.codebook_size, x0), t, history)
        ce = -logp.gather(-1, x0[..., None]).squeeze(-1) * masked  # (B, N) masked tokens only
        lt = self._unmask_prob(t, t - 1) * ce.sum(-1)  # the bound's term at t, per sample
        with torch.no_grad():  # the importance sampler's running E[L_t^2]
            self.lt2[t] = 0.9 * self.lt2[t] + 0.1 * lt.detach().pow(2)
            self.t_count.index_add_(0, t, torch.ones_like(t))
        aux = cfg.aux_loss_weight * (2.0 - t.float() / cfg.diffusion_steps) * ce.sum(-1)
        n = x0.shape[1]
        vlb = lt / pt
        loss = (vlb + aux).mean() / n
        return loss, {"vlb_per_token": vlb.detach().mean() / n,
                      "masked_ce": ce.detach().sum() / masked.sum().clamp_min(1)}

    @torch.no_grad()
    def neg_entropy(self, history: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """history (B, H, G, G) codes -> (B,) log p(x~0 | history) of a sampled next frame,
        the official estimate of -H(next frame | history), averaged over ``num_samples``."""
        cfg = self.config
        b, n, k = history.shape[0], cfg.code_grid**2, cfg.codebook_size
        times = list(range(cfg.diffusion_steps - 1, -1, -(cfg.skip_step + 1)))
        if times[-1] != 0:
            times.append(0)
        total = torch.zeros(b, device=history.device)
        for _ in range(cfg.num_samples):
            z = torch.full((b, n), k, dtype=torch.long, device=history.device)
            path = []
            for i, t in enumerate(times):
                s = times[i + 1] if i + 1 < len(times) else -1
                tt = torch.full((b,), t, dtype=torch.long, device=history.device)
                logp = self.diffusion(z, tt, history)
                a = self._unmask_prob(tt, torch.full_like(tt, s))
                masked = z == k
                u = torch.rand(logp.shape, device=logp.device, generator=generator)
                gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
                x0 = (logp + cfg.noise_scale * gumbel).argmax(-1)
                flip = torch.rand(z.shape, device=z.device, generator=generator)
                unmask = masked & (flip < a[:, None])
                z = torch.where(unmask, x0, z)
                path.append((logp, masked, a))
            # -KL(q(x_s | x_t, x~0) || p(x_s | x_t)) = a * log p(x~0 | x_t) on masked tokens;
            # the last jump (a = 1) is the decoder term log p(x~0 | x_0)
            for logp, masked, a in path:
                lp = logp.gather(-1, z[..., None]).squeeze(-1)
                total += a * (lp * masked).sum(-1)
        return total / cfg.num_samples

    def raw_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """-H(frame t+1 | frames t-H+1 .. t) for each frame t (its history ends at t)."""
        idx = window_indices(np.arange(len(codes)), self.config.history)
        rows = torch.from_numpy(idx).to(codes.device)
        # a fixed generator: the same video scores the same (one sample per frame)
        gen = torch.Generator(device=codes.device).manual_seed(self.config.seed)
        chunks = rows.split(self.config.score_batch)
        return torch.cat([self.neg_entropy(codes[c], gen) for c in chunks])

    def reward_from_z(self, z: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        r = cfg.entropy_weight * z
        if cfg.expl_weight > 0:
            rnd = torch.cat([self.rnd.error(c) for c in frames.split(self.score_chunk)])
            r = r + cfg.expl_weight * rnd
        return r

    # -- online: RND on the agent's frames (the learner's online schedule calls this)
    def update(self, frames: Any) -> dict[str, float]:
        """One RND step on agent frames (N, H, W, 3) uint8."""
        x = to_tensor(prepare_frames(np.asarray(frames), self.config.image_size_px), self.device)
        if self._rnd_opt is None:
            self._rnd_opt = torch.optim.Adam(self.rnd.predictor.parameters(), self.config.rnd_lr)
        with torch.enable_grad():
            loss = self.rnd.error(x).mean()
            self._rnd_opt.zero_grad(set_to_none=True)
            loss.backward()
            self._rnd_opt.step()
        return {"rnd_loss": float(loss.detach())}
