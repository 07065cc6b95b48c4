"""VPDD (He et al., NeurIPS 2024): a policy pre-trained on actionless video by discrete diffusion,
fine-tuned on a few demonstrations with actions. One readable file.

    model = pretrain(VPDDConfig(), ["videos.zarr", "other_tasks.zarr"], "runs/vpdd_pre")
    model = finetune("runs/vpdd_pre", "teleop.zarr", "runs/vpdd")        # needs actions
    action = VPDDPolicy(model).act(stacked_frames, proprio)               # in [-1, 1]^4

Videos become codes of the video tokenizer (``rewards/tokenizer.py``, the generative
rewards' VQ autoencoder: 64x64 frames to 8x8 codes). A transformer denoises the codes of a
future frame from their partly masked version, conditioned on the codes of the current frames
(pre-training: videos of the task and of others, no actions). Fine-tuning appends action tokens
(each of the learner's normalised delta end-effector actions, binned per dimension) for the
next ``action_horizon`` agent steps; they are masked with the video tokens, at the same
diffusion time, and predicted jointly with the future frame. Acting runs the reverse process
from all-[MASK] and executes the first of the predicted actions, re-planning every agent step
(the official evaluation does the same).

What the official code (tinnerhrhe/VPDD, Meta-World) does, and this file:
- **Process**: VQ-Diffusion's mask-and-replace with the cumulative keep probability linear from
  0.99999 to 0.000009 over 100 steps and the mask probability its mirror; the replace share is
  1e-6, so this file uses the absorbing (mask only) process of ``rewards/diffusion_reward.py``
  with the same schedule (one shared definition, :func:`keep_schedule`).
- **Loss**: the variational bound's term at a drawn t on the masked tokens plus the auxiliary
  x0 cross-entropy with weight ``aux_loss_weight`` (official 5e-4) * (2 - t/T), video and
  action tokens counted alike. Deviation: t is drawn uniformly (the official importance
  sampler is in ``rewards/diffusion_reward.py``); no EMA weights.
- **Tokens**: the official VQ-VAE turns 4 frames at 96 px into one 24x24 latent (2048 codes) and
  predicts the latent about 20 steps ahead from the current one. Here: per-frame 8x8 codes
  (codebook 256; CPU sizes), ``history`` frames as the condition and the frame
  ``future`` agent steps ahead as the target.
- **Actions**: official: 48 equal-frequency (quantile) bins per position dimension fitted on
  the demonstrations' actions, decoded to the bin's midpoint, the gripper as one of 10 fixed
  values, 4 steps predicted, the first executed. Here every dimension of the 4-d action (the
  gripper command included) gets ``action_bins`` quantile bins (``bins="uniform"``: equal
  widths over [-1, 1]), ``action_horizon`` steps.
- **Network**: official: a Perceiver IO (width 256, 6 latent blocks) for video and a separate
  GPT-2 action model that reads the frozen video network's features during fine-tuning.
  Deviation: one bidirectional transformer over [time, proprio, history codes, future codes,
  action tokens] with separate embeddings and heads per modality (the official sampler also
  bans video classes at action positions and the reverse), trained whole in fine-tuning
  (``freeze_video=True`` trains only the action embeddings and head, closer to the official
  split). The end-effector position and gripper (``proprio``) are one token (the official
  model has such an embedding and leaves it unused); ``proprio=False`` drops it.
- **Sampling**: official: all 100 reverse steps, the x0 distribution truncated to its top 0.88
  mass, a Gumbel sample per step. Here ``sample_steps`` jumps (10 on a CPU) with the same
  truncation (``top_p``); the last jump takes the argmax.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from video2reward.compute.device import check_device_name, resolve_device
from video2reward.data import keys
from video2reward.data.images import prepare_frames
from video2reward.policies.demos import DemoError, load_demo_episodes, row_period_s
from video2reward.rewards.base import CHECKPOINT_NAME as CKPT_FILE
from video2reward.rewards.base import CHECKPOINT_VERSION, CheckpointError, read_checkpoint
from video2reward.rewards.data import load_episodes
from video2reward.rewards.diffusion_reward import keep_schedule
from video2reward.rewards.tokenizer import TokenizerConfig, VQTokenizer

__all__ = [
    "VPDD",
    "ActionBins",
    "VPDDConfig",
    "VPDDPolicy",
    "evaluate_twin",
    "finetune",
    "label_actions",
    "label_store",
    "load",
    "pretrain",
    "save",
]

ACTION_DIM = 4
PROPRIO_DIM = 4


@dataclass(frozen=True)
class VPDDConfig:
    """CPU sizes by default (2 cores); the paper's: larger tokenizer, width 256, 12 layers."""

    image_size: int = 64  # tokenizer input, pixels
    code_grid: int = 8
    codebook_size: int = 256
    code_dim: int = 32
    tokenizer_channels: int = 32
    history: int = 2  # frames up to now that condition the prediction
    future: int = 8  # agent steps ahead of now of the predicted frame
    frame_skip: int = 2  # recorded rows per agent step (the learner's action_repeat)
    action_horizon: int = 4  # actions predicted per call (official 4; the first is executed)
    action_bins: int = 48  # per action dimension (official 48)
    bins: str = "quantile"  # "quantile" (official; fitted on the demos) or "uniform"
    proprio: bool = True
    diffusion_steps: int = 100
    sample_steps: int = 10  # reverse jumps when acting (official: all 100)
    top_p: float = 0.88  # x0 truncation when sampling (official "top0.88r")
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    aux_loss_weight: float = 5e-4
    lr: float = 3e-4
    # 16: pre-training and fine-tuning fit ~30 minutes on 2 CPU cores (a step of the diffusion
    # transformer over ~200 tokens is ~0.3 s at batch 16 on one core); the paper's GPU runs: more
    batch_size: int = 16
    tokenizer_steps: int = 1000
    pretrain_steps: int = 2000  # video diffusion steps after the tokenizer's
    finetune_steps: int = 2000
    freeze_video: bool = False
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        if self.history < 1 or self.future < 1 or self.frame_skip < 1:
            raise ValueError("history, future and frame_skip must be >= 1")
        if self.action_horizon < 1 or self.action_bins < 2:
            raise ValueError("action_horizon must be >= 1 and action_bins >= 2")
        if self.bins not in ("quantile", "uniform"):
            raise ValueError(f"bins must be 'quantile' or 'uniform', got {self.bins!r}")
        if not 1 <= self.sample_steps <= self.diffusion_steps:
            raise ValueError("sample_steps must be in [1, diffusion_steps]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        for name in ("tokenizer_steps", "pretrain_steps", "finetune_steps", "batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        check_device_name(self.device)

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(image_size=self.image_size, code_grid=self.code_grid,
                               codebook_size=self.codebook_size, code_dim=self.code_dim,
                               channels=self.tokenizer_channels)  # fmt: skip


class ActionBins:
    """Per-dimension bins of actions in [-1, 1]: ``edges`` (A, bins + 1); a value maps to the
    bin it falls in and back to that bin's midpoint, so a round trip stays inside its bin."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.asarray(edges, np.float32)
        if self.edges.ndim != 2 or self.edges.shape[1] < 3:
            raise ValueError(f"edges must be (A, bins + 1) with bins >= 2, got {self.edges.shape}")

    @classmethod
    def fit(cls, actions: np.ndarray, bins: int, kind: str = "quantile") -> ActionBins:
        a = np.clip(np.asarray(actions, np.float64).reshape(-1, ACTION_DIM), -1.0, 1.0)
        if kind == "uniform" or len(a) == 0:
            edges = np.tile(np.linspace(-1.0, 1.0, bins + 1), (ACTION_DIM, 1))
        else:  # equal-frequency bins over the data's range (the official discretiser)
            edges = np.quantile(a, np.linspace(0.0, 1.0, bins + 1), axis=0).T
        return cls(edges)

    @property
    def n(self) -> int:
        return self.edges.shape[1] - 1

    def encode(self, actions: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        out = np.empty(a.shape, np.int64)
        for d in range(a.shape[-1]):
            inner = self.edges[d, 1:-1]  # values on an edge go to the bin above it
            out[..., d] = np.searchsorted(inner, a[..., d], side="right")
        return out

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        t = np.clip(np.asarray(tokens, np.int64), 0, self.n - 1)
        mids = 0.5 * (self.edges[:, :-1] + self.edges[:, 1:])  # (A, bins)
        return np.stack([mids[d][t[..., d]] for d in range(t.shape[-1])], -1).astype(np.float32)


class Denoiser(nn.Module):
    """x0 log-probabilities of the future frame's codes (and the action tokens) from their
    partly masked version, the diffusion time, the history's codes and the proprio."""

    def __init__(self, cfg: VPDDConfig):
        super().__init__()
        g, d, k, nb = cfg.code_grid, cfg.n_embd, cfg.codebook_size, cfg.action_bins
        self.cfg = cfg
        self.time = nn.Embedding(cfg.diffusion_steps, d)
        self.proprio = nn.Linear(PROPRIO_DIM, d) if cfg.proprio else None
        self.cond = nn.Embedding(k, d)
        self.cond_pos = nn.Parameter(torch.randn(cfg.history * g * g, d) * 0.02)
        self.video = nn.Embedding(k + 1, d)  # index k is [MASK]
        self.video_pos = nn.Parameter(torch.randn(g * g, d) * 0.02)
        self.action = nn.Embedding(nb + 1, d)  # index nb is [MASK]
        self.action_pos = nn.Parameter(torch.randn(cfg.action_horizon * ACTION_DIM, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.n_head, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.video_head = nn.Linear(d, k)
        self.action_head = nn.Linear(d, nb)

    def forward(
        self,
        history: torch.Tensor,  # (B, H, G, G) codes
        proprio: torch.Tensor | None,  # (B, 4)
        video: torch.Tensor,  # (B, G*G) in [0, K] (K = mask)
        action: torch.Tensor | None,  # (B, horizon * 4) in [0, bins] (bins = mask)
        t: torch.Tensor,  # (B,)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = video.shape[0]
        parts = [self.time(t)[:, None], self.cond(history.reshape(b, -1)) + self.cond_pos]
        if self.proprio is not None:
            if proprio is None:
                raise ValueError("this VPDD model reads proprio (ee position + gripper)")
            parts.insert(1, self.proprio(proprio)[:, None])
        n_fixed = sum(p.shape[1] for p in parts)
        parts.append(self.video(video) + self.video_pos)
        if action is not None:
            parts.append(self.action(action) + self.action_pos)
        x = self.norm(self.blocks(torch.cat(parts, 1)))
        n_video = video.shape[1]
        logp_video = F.log_softmax(self.video_head(x[:, n_fixed : n_fixed + n_video]), -1)
        logp_action = None
        if action is not None:
            logp_action = F.log_softmax(self.action_head(x[:, n_fixed + n_video :]), -1)
        return logp_video, logp_action


class VPDD(nn.Module):
    """The tokenizer, the denoiser and the action bins (set by fine-tuning)."""

    keep: torch.Tensor
    bin_edges: torch.Tensor

    def __init__(self, config: VPDDConfig):
        super().__init__()
        self.config = config
        self.info: dict[str, Any] = {}  # what trained it, from its checkpoint
        torch.manual_seed(config.seed)
        self.tokenizer = VQTokenizer(config.tokenizer_config())
        self.net = Denoiser(config)
        self.register_buffer("keep", keep_schedule(config.diffusion_steps), persistent=False)
        # (4, bins + 1); all zero until fine-tuning fits them
        self.register_buffer("bin_edges", torch.zeros(ACTION_DIM, config.action_bins + 1))

    @property
    def device(self) -> torch.device:
        return self.bin_edges.device

    @property
    def finetuned(self) -> bool:
        return bool(self.bin_edges.abs().sum() > 0)

    def action_bins(self) -> ActionBins:
        if not self.finetuned:
            raise ValueError("this VPDD model is pre-trained only: fine-tune it on "
                             "demonstrations with actions before it can act")  # fmt: skip
        return ActionBins(self.bin_edges.cpu().numpy())

    @torch.no_grad()
    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float in [0, 255] -> (N, G, G) codes, in chunks."""
        self.tokenizer.eval()
        return torch.cat([self.tokenizer.encode(c.to(self.device)) for c in frames.split(256)])

    def _unmask_prob(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        a_t, a_s = self.keep[t], self.keep[s]
        return (a_s - a_t) / (1 - a_t)

    def diffusion_loss(
        self,
        history: torch.Tensor,
        proprio: torch.Tensor | None,
        future: torch.Tensor,
        actions: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The bound's term at a uniformly drawn t plus the auxiliary x0 cross-entropy, on the
        masked tokens of the future frame (and the actions), per token. The metrics stay on
        the device (read back only when logged)."""
        cfg = self.config
        b, dev = future.shape[0], future.device
        x0v = future.reshape(b, -1)
        t = torch.randint(0, cfg.diffusion_steps, (b,), device=dev)
        keep = self.keep[t][:, None]
        mv = torch.rand(x0v.shape, device=dev) >= keep
        ma = None if actions is None else torch.rand(actions.shape, device=dev) >= keep
        lv, la = self.net(
            history, proprio, torch.where(mv, cfg.codebook_size, x0v),
            None if actions is None else torch.where(ma, cfg.action_bins, actions),  # type: ignore[arg-type]
            t,
        )  # fmt: skip
        ce = -lv.gather(-1, x0v[..., None]).squeeze(-1) * mv
        n = x0v.shape[1]
        metrics = {"video_ce": ce.detach().sum() / mv.sum().clamp_min(1)}
        if la is not None and actions is not None and ma is not None:
            ce_a = -la.gather(-1, actions[..., None]).squeeze(-1) * ma
            metrics["action_ce"] = ce_a.detach().sum() / ma.sum().clamp_min(1)
            ce = torch.cat([ce, ce_a], 1)
            n += actions.shape[1]
        per_sample = ce.sum(-1)
        vlb = cfg.diffusion_steps * self._unmask_prob(t, t - 1) * per_sample  # / p(t) = 1/T
        aux = cfg.aux_loss_weight * (2.0 - t.float() / cfg.diffusion_steps) * per_sample
        return (vlb + aux).mean() / n, metrics

    def _pick(self, logp: torch.Tensor, last: bool, gen: torch.Generator | None) -> torch.Tensor:
        """x0 from log-probabilities: the argmax at the last jump, else a Gumbel sample from
        the top ``top_p`` of the mass (the official truncation)."""
        if last:
            return logp.argmax(-1)
        p = self.config.top_p
        if p < 1.0:
            sorted_lp, order = logp.sort(-1, descending=True)
            cum = sorted_lp.exp().cumsum(-1)
            drop = (cum - sorted_lp.exp()) >= p  # keep the tokens up to mass p
            logp = logp.scatter(-1, order, sorted_lp.masked_fill(drop, -70.0))
        u = torch.rand(logp.shape, device=logp.device, generator=gen).clamp(1e-10, 1 - 1e-7)
        return (logp - torch.log(-torch.log(u))).argmax(-1)

    @torch.no_grad()
    def sample(
        self,
        history: torch.Tensor,
        proprio: torch.Tensor | None,
        with_actions: bool,
        gen: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reverse process from all-[MASK] in ``sample_steps`` jumps -> the future frame's
        codes (B, G*G) and the action tokens (B, horizon * 4) or None."""
        cfg = self.config
        b, dev = history.shape[0], history.device
        self.net.eval()
        video = torch.full((b, cfg.code_grid**2), cfg.codebook_size, dtype=torch.long,
                           device=dev)  # fmt: skip
        action = None
        if with_actions:
            action = torch.full((b, cfg.action_horizon * ACTION_DIM), cfg.action_bins,
                                dtype=torch.long, device=dev)  # fmt: skip
        grid = np.linspace(cfg.diffusion_steps - 1, 0, cfg.sample_steps).round().astype(int)
        times = list(dict.fromkeys(int(x) for x in grid))  # descending, unique, ends at 0
        for i, t in enumerate(times):
            s = times[i + 1] if i + 1 < len(times) else -1
            tt = torch.full((b,), t, dtype=torch.long, device=dev)
            a = self._unmask_prob(tt, torch.full_like(tt, s))[:, None]
            lv, la = self.net(history, proprio, video, action, tt)
            last = s == -1
            for z, lp, mask_id in ((video, lv, cfg.codebook_size), (action, la, cfg.action_bins)):
                if z is None or lp is None:
                    continue
                x0 = self._pick(lp, last, gen)
                masked = z == mask_id
                flip = torch.rand(z.shape, device=dev, generator=gen) < a
                z.copy_(torch.where(masked & (flip | last), x0, z))
        return video, action


# ----------------------------------------------------------------------------- data
@dataclass
class _Windows:
    """Episodes as code sequences at agent-step rate, with what each window needs."""

    codes: list[torch.Tensor]  # per episode (T, G, G)
    proprio: list[np.ndarray | None]  # per episode (T, 4)
    actions: list[np.ndarray | None]  # per episode (T - 1, 4) action tokens' source

    def sample(self, cfg: VPDDConfig, rng: np.random.Generator, bins: ActionBins | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        b, h = cfg.batch_size, cfg.history
        ep = rng.integers(0, len(self.codes), b)
        hist, fut, prop, acts = [], [], [], []
        for e in ep:
            c = self.codes[e]
            n = len(c)
            t = int(rng.integers(0, max(n - 1, 1)))  # a step with an action after it
            idx = np.clip(np.arange(t - h + 1, t + 1), 0, n - 1)
            hist.append(c[idx])
            fut.append(c[min(t + cfg.future, n - 1)])
            p = self.proprio[e]
            if p is not None:
                prop.append(torch.from_numpy(p[t]))
            a = self.actions[e]
            if bins is not None and a is not None:
                chunk = np.zeros((cfg.action_horizon, ACTION_DIM), np.float32)  # stop past the end
                part = a[t : t + cfg.action_horizon]
                chunk[: len(part)] = part
                acts.append(torch.from_numpy(bins.encode(chunk).reshape(-1)))
        dev = self.codes[0].device
        proprio = torch.stack(prop).to(dev) if cfg.proprio and len(prop) == b else None
        if cfg.proprio and proprio is None:
            proprio = torch.zeros(b, PROPRIO_DIM, device=dev)  # no proprio: a blank token
        actions = torch.stack(acts).to(dev) if acts else None
        return torch.stack(hist), proprio, torch.stack(fut), actions


def _as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def _videos(paths: Sequence[str | Path], cfg: VPDDConfig) -> list[np.ndarray]:
    """Every episode of every path (stores, video files or folders; actions not needed), at
    ``image_size`` and one frame per agent step (every ``frame_skip``-th row, the last kept)."""
    out = []
    for p in paths:
        data = load_episodes(p, cfg.image_size)
        for i in range(len(data)):
            v = data.episode(i)
            rows = np.unique(np.r_[np.arange(0, len(v), cfg.frame_skip), len(v) - 1])
            out.append(v[rows])
    if not out:
        raise ValueError(f"no videos in {list(map(str, paths))}")
    return out


# ----------------------------------------------------------------------------- training
def _log(step: int, total: int, what: str, metrics: dict[str, Any], t0: float) -> None:
    vals = " ".join(f"{k}={float(v):.3f}" for k, v in metrics.items())
    print(f"[{what} {step}/{total}] {vals} ({time.monotonic() - t0:.0f} s)", flush=True)


def pretrain(cfg: VPDDConfig, data: Sequence[str | Path], out: str | Path,
             log_every: int = 200) -> VPDD:
    """Tokenizer, then video diffusion, on videos without actions; saves ``out/model.pt``."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    videos = _videos(data, cfg)
    model = VPDD(cfg).to(resolve_device(cfg.device))
    _train_tokenizer(model, np.concatenate(videos), rng, log_every)
    windows = _Windows([model.codes(_as_tensor(v)) for v in videos], [None] * len(videos),
                       [None] * len(videos))  # fmt: skip
    _train_net(model, windows, cfg.pretrain_steps, None, "pretrain", rng, log_every)
    save(model, out, {"stage": "pretrained", "videos": len(videos),
                      "data": [str(p) for p in data]})  # fmt: skip
    return model


def _train_tokenizer(model: VPDD, frames: np.ndarray, rng: np.random.Generator,
                     log_every: int) -> None:
    """``tokenizer_steps`` steps on batches of ``frames`` (N, S, S, 3) uint8."""
    cfg = model.config
    opt = torch.optim.Adam(model.tokenizer.parameters(), lr=cfg.lr)
    t0 = time.monotonic()
    model.tokenizer.train()
    for step in range(1, cfg.tokenizer_steps + 1):
        x = _as_tensor(frames[rng.integers(0, len(frames), cfg.batch_size)]).to(model.device)
        loss, m = model.tokenizer.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == cfg.tokenizer_steps:
            _log(step, cfg.tokenizer_steps, "tokenizer", m, t0)


def _train_net(model: VPDD, windows: _Windows, steps: int, bins: ActionBins | None, what: str,
               rng: np.random.Generator, log_every: int) -> None:
    cfg = model.config
    # freeze_video: fine-tuning trains only the action embeddings and head
    params = [p for n, p in model.net.named_parameters()
              if bins is None or not cfg.freeze_video or n.startswith("action")]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    model.net.train()
    t0 = time.monotonic()
    for step in range(1, steps + 1):
        hist, prop, fut, acts = windows.sample(cfg, rng, bins)
        loss, m = model.diffusion_loss(hist, prop, fut, acts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            _log(step, steps, what, {"loss": loss.detach(), **m}, t0)
    model.net.eval()


# What fine-tuning may change in a pre-trained model's config (the rest is its architecture).
FINETUNE_FIELDS = ("finetune_steps", "freeze_video", "lr", "batch_size", "seed", "sample_steps",
                   "top_p", "action_horizon", "action_bins", "bins", "device")  # fmt: skip


def finetune(ckpt: str | Path | None, demos: str | Path, out: str | Path,
             cfg: VPDDConfig | None = None, max_episodes: int = 0, log_every: int = 200,
             changes: dict[str, Any] | None = None) -> VPDD:
    """Fine-tune a pre-trained model (``ckpt``) on demonstrations with actions, its config
    with ``changes`` (fields of :data:`FINETUNE_FIELDS` only); ``ckpt=None`` trains the model
    of ``cfg`` from scratch (tokenizer included) on the demos alone: the baseline without
    video pre-training. Saves ``out/model.pt``."""
    if ckpt is not None:
        model = load(ckpt, (changes or {}).get("device"))
        fixed = sorted(set(changes or {}) - set(FINETUNE_FIELDS))
        if fixed:
            raise ValueError(f"model.{fixed[0]} is fixed by the pre-trained checkpoint {ckpt}; "
                             f"fine-tuning may change {', '.join(FINETUNE_FIELDS)}")  # fmt: skip
        model.config = dataclasses.replace(model.config, **(changes or {}))
        n_action_tokens = model.config.action_horizon * ACTION_DIM
        if (model.config.action_bins != model.bin_edges.shape[1] - 1
                or n_action_tokens != model.net.action_pos.shape[0]):
            model = _with_new_action_part(model)
        cfg = model.config
    try:
        eps = load_demo_episodes(demos, (cfg or VPDDConfig()).frame_skip, max_episodes)
    except DemoError as e:
        raise DemoError(f"VPDD fine-tuning needs demonstrations with actions: {e}") from e
    cfg = cfg or VPDDConfig()
    frames = [prepare_frames(e.images, cfg.image_size) for e in eps]
    if ckpt is None:
        # no video pre-training: the tokenizer learns from the fine-tuning demos' frames only,
        # the video model starts from scratch
        torch.manual_seed(cfg.seed)
        model = VPDD(cfg).to(resolve_device(cfg.device))
        _train_tokenizer(model, np.concatenate(frames), np.random.default_rng(cfg.seed),
                         log_every)  # fmt: skip
    rng = np.random.default_rng(cfg.seed + 1)
    bins = ActionBins.fit(np.concatenate([e.actions for e in eps]), cfg.action_bins, cfg.bins)
    model.bin_edges.copy_(torch.from_numpy(bins.edges).to(model.device))
    windows = _Windows([model.codes(_as_tensor(f)) for f in frames],
                       [e.proprio.astype(np.float32) for e in eps],
                       [e.actions.astype(np.float32) for e in eps])  # fmt: skip
    _train_net(model, windows, cfg.finetune_steps, bins, "finetune", rng, log_every)
    # One agent step spans frame_skip recorded rows: the rate a controller must act at
    agent_hz = 1.0 / (row_period_s(demos) * model.config.frame_skip)
    save(model, out, {"stage": "finetuned", "demos": str(demos), "episodes": len(eps),
                      "pretrained_from": None if ckpt is None else str(ckpt),
                      "agent_hz": agent_hz})  # fmt: skip
    return model


def _with_new_action_part(model: VPDD) -> VPDD:
    """The same model with new action embeddings, positions and head for the config's
    ``action_bins`` and ``action_horizon`` (the video part is kept; the action part has not
    been trained before fine-tuning)."""
    fresh = VPDD(model.config).to(model.device)
    action_part = ("net.action.", "net.action_head.", "net.action_pos", "bin_edges")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(action_part)}
    fresh.load_state_dict(state, strict=False)
    return fresh


# ----------------------------------------------------------------------------- checkpoints
def save(model: VPDD, out: str | Path, info: dict[str, Any]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CKPT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"method": "vpdd", "format_version": CHECKPOINT_VERSION,
                "config": asdict(model.config), "info": info,
                "state_dict": model.state_dict()}, tmp)  # fmt: skip
    tmp.replace(path)
    (out / "summary.json").write_text(json.dumps({**info, "config": asdict(model.config)},
                                                 indent=2))  # fmt: skip
    return path


def load(path: str | Path, device: str | None = None) -> VPDD:
    """A checkpoint (``out/`` or ``out/model.pt``), read with ``weights_only=True``, on
    ``device`` (default: the config's, ``auto``: CUDA when available)."""
    # refuses pickled code, truncated files and other formats, naming the problem
    raw = read_checkpoint(path, "VPDD", "v2r policy pretrain | finetune")
    if raw["method"] != "vpdd":
        raise CheckpointError(f"{path} holds a {raw['method']!r} model, not a VPDD policy")
    cfg = VPDDConfig(**raw["config"])
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    model = VPDD(cfg)
    model.load_state_dict(raw["state_dict"])
    model.info = dict(raw.get("info") or {})  # what trained it (stage, demos, agent_hz)
    model.eval()
    return model.to(resolve_device(cfg.device))


# ----------------------------------------------------------------------------- acting
class VPDDPolicy:
    """Acts like the DrQ-v2 policy: stacked frames (3 * history, S, S) uint8 at the model's
    image size and proprio (4,) in, an action in [-1, 1]^4 out (the first of the predicted
    chunk; the caller re-plans every agent step)."""

    def __init__(self, model: VPDD, seed: int = 0):
        self.model = model
        self.bins = model.action_bins()
        self.gen = torch.Generator(device=model.device).manual_seed(seed)

    def act(self, stacked: np.ndarray, proprio: np.ndarray | None, *_: Any, **__: Any
            ) -> np.ndarray:
        cfg = self.model.config
        x = np.asarray(stacked)
        if x.ndim != 3 or x.shape[0] != 3 * cfg.history or x.shape[1:] != (cfg.image_size,) * 2:
            raise ValueError(f"expected ({3 * cfg.history}, {cfg.image_size}, {cfg.image_size}) "
                             f"stacked frames, got {x.shape}")  # fmt: skip
        history = self.model.codes(torch.from_numpy(x.reshape(cfg.history, 3, *x.shape[1:]))
                                   .float())[None]
        p: torch.Tensor | None = None
        if cfg.proprio:
            if proprio is None or not np.isfinite(proprio).all():
                raise ValueError("VPDD needs a finite proprio (ee position + gripper)")
            p = torch.as_tensor(np.asarray(proprio, np.float32), device=self.model.device)[None]
        _future, tokens = self.model.sample(history, p, True, self.gen)
        assert tokens is not None
        chunk = self.bins.decode(tokens.reshape(cfg.action_horizon, ACTION_DIM).cpu().numpy())
        return np.clip(chunk[0], -1.0, 1.0).astype(np.float32)


def label_actions(model: VPDD, images: np.ndarray, proprio: np.ndarray | None, seed: int = 0,
                  batch: int = 32) -> np.ndarray:
    """The fine-tuned policy's action at every recorded row of one episode (``images``
    (T, H, W, 3) uint8, ``proprio`` (T, 4) ee position + gripper): an agent step every
    ``frame_skip`` rows, each acting on the frames of the steps before it as :class:`VPDDPolicy`
    does online; the rows of a step hold its action (T, 4), in [-1, 1]."""
    cfg = model.config
    if not model.finetuned:
        raise ValueError("labelling needs a fine-tuned VPDD policy (v2r policy finetune)")
    t = len(images)
    if cfg.proprio and (proprio is None or len(proprio) != t or not np.isfinite(proprio).all()):
        raise ValueError("this VPDD policy reads proprio (ee_pos + gripper) at every frame; the "
                         "videos have none or non-finite ones (human videos cannot be labelled "
                         "by it: train it with model.proprio=false)")  # fmt: skip
    rows = np.unique(np.r_[np.arange(0, t, cfg.frame_skip), t - 1])  # as training cut them
    steps = rows[:-1] if len(rows) > 1 else rows
    codes = model.codes(_as_tensor(prepare_frames(np.asarray(images)[rows], cfg.image_size))
                        .to(model.device))  # fmt: skip
    bins = model.action_bins()
    gen = torch.Generator(device=model.device).manual_seed(seed)
    acts = []
    for lo in range(0, len(steps), batch):
        i = np.arange(lo, min(lo + batch, len(steps)))
        idx = np.clip(i[:, None] + np.arange(-cfg.history + 1, 1)[None], 0, None)
        p = None
        if cfg.proprio:
            assert proprio is not None
            p = torch.as_tensor(np.asarray(proprio, np.float32)[rows[i]], device=model.device)
        _f, tokens = model.sample(codes[torch.as_tensor(idx, device=model.device)], p, True, gen)
        assert tokens is not None
        first = tokens.reshape(len(i), cfg.action_horizon, ACTION_DIM)[:, 0].cpu().numpy()
        acts.append(bins.decode(first))
    per_step = np.clip(np.concatenate(acts), -1.0, 1.0).astype(np.float32)
    # row r belongs to agent step searchsorted(steps, r, 'right') - 1; the last row (the final
    # frame, no command after it) keeps the last step's action
    owner = np.clip(np.searchsorted(steps, np.arange(t), side="right") - 1, 0, len(steps) - 1)
    return per_step[owner]


def label_store(ckpt: str | Path, videos: str | Path, out: str | Path,
                demos: str | Path | None = None, max_demos: int = 0, skip_videos: int = 0,
                seed: int = 0) -> dict[str, Any]:
    """An episode store for the DrQ-v2 learner's demonstrations (``demos.path``): the
    successful episodes of ``demos`` (the first ``max_demos``; actions as recorded), then every
    successful episode of ``videos`` after the first ``skip_videos`` with the actions the
    fine-tuned VPDD policy ``ckpt`` takes at its frames (any actions it holds are replaced).
    Pretraining the DrQ-v2 actor on it (``demos.pretrain_updates``) initialises it from the
    VPDD policy on the videos' states; the BC term then keeps it near both online. Returns
    the summary also written as the store's ``labelled_by`` attribute."""
    from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError

    model = load(ckpt)
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another out= (nothing was overwritten)")
    try:
        src = EpisodeStore.open(Path(videos))
    except EpisodeStoreError as e:
        raise DemoError(f"videos {videos}: {e}") from e
    # an action is a command held for one agent step of the rate the policy learned at
    hz = model.info.get("agent_hz")
    agent_hz = 1.0 / (row_period_s(videos) * model.config.frame_skip)
    if hz and abs(agent_hz / float(hz) - 1.0) > 0.05:
        raise DemoError(f"{videos} gives agent steps of {1 / agent_hz:.3f} s "
                        f"({model.config.frame_skip} rows each); the VPDD policy {ckpt} learned "
                        f"steps of {1 / float(hz):.3f} s: record the videos at the demos' rate")
    for k in (keys.IMAGE, keys.EE_POS, keys.GRIPPER):
        if k not in src.data_keys:
            raise DemoError(f"{videos} has no {k!r} array; labelling needs images and proprio")
    kept: list[tuple[Any, int, bool]] = []  # (store, episode, label it)
    if demos:
        try:
            dstore = EpisodeStore.open(Path(demos))
        except EpisodeStoreError as e:
            raise DemoError(f"demos {demos}: {e}") from e
        if keys.ACTION not in dstore.data_keys:
            raise DemoError(f"{demos} holds no actions; give it as videos= to label it")
        if abs(dstore.fps - src.fps) > 1e-6:
            raise DemoError(f"{demos} ({dstore.fps} fps) and {videos} ({src.fps} fps) were "
                            "recorded at different rates; one store holds one rate")  # fmt: skip
        ok = dstore.successful_episodes()
        kept = [(dstore, i, False) for i in (ok[:max_demos] if max_demos else ok)]
    todo = [(src, i, True) for i in src.successful_episodes()[skip_videos:]]
    if not todo:
        raise DemoError(f"{videos} has no successful episodes after the first {skip_videos}")
    names = [keys.IMAGE, keys.EE_POS, keys.GRIPPER, keys.ACTION]
    names += [k for k in (keys.TIMESTAMP, keys.JOINT_POS)
              if all(k in st.data_keys for st, _i, _l in kept + todo)]  # fmt: skip
    info = {"vpdd": str(ckpt), "videos": str(videos), "labelled_episodes": len(todo),
            "demos": str(demos) if demos else None, "demo_episodes": len(kept),
            "frame_skip": model.config.frame_skip}  # the learner's action_repeat to use
    # written under a temporary name and renamed when complete: a run stopped part way (bad
    # proprio in one video, Ctrl-C) leaves no store that looks finished
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    dst = EpisodeStore.create(tmp, fps=src.fps, source="vpdd-labelled", labelled_by=info)
    t0 = time.monotonic()
    for n, (store, i, label) in enumerate(kept + todo):
        data = store.episode(i, [k for k in names if k in store.data_keys])
        meta = store.episode_meta(i)
        notes = meta.get(keys.EPISODE_NOTES) or ""
        if label:
            data[keys.ACTION] = label_actions(
                model, np.asarray(data[keys.IMAGE]),
                np.concatenate([data[keys.EE_POS], data[keys.GRIPPER]], 1).astype(np.float32),
                seed + n)  # fmt: skip
            notes = f"actions by VPDD {ckpt} ({videos}#{i})" + (f"; {notes}" if notes else "")
        dst.append_episode(data, task=meta.get(keys.EPISODE_TASK) or "", success=True,
                           kind=meta.get(keys.EPISODE_KIND) or "expert", notes=notes)
        if label and (n + 1 - len(kept)) % 10 == 0:
            print(f"[label] {n + 1 - len(kept)}/{len(todo)} episodes "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
    tmp.rename(out)
    return info


def evaluate_twin(model: VPDD, task: str = "reach", episodes: int = 20, seed: int = 0,
                  control_hz: float = 10.0) -> dict[str, float]:
    """Success of the fine-tuned policy in the twin, by the twin's predicate (evaluation only),
    through ``v2r rl train``'s evaluation: the same scenes (``seed + 10_000`` onwards), frame
    stack, action repeat and safety envelope as a DrQ-v2 policy gets."""
    from video2reward.policies.train import Observer, TrainConfig, evaluate, make_task_env

    cfg = model.config
    render = 84  # what the twin renders for the learner; the policy sees image_size
    tc = TrainConfig(task=task, image_size=render, agent_image_size=cfg.image_size,
                     frame_stack=cfg.history, action_repeat=cfg.frame_skip, proprio=cfg.proprio,
                     num_eval_episodes=episodes, control_hz=control_hz, video=False,
                     progress_bar=False, seed=seed)  # fmt: skip
    env = make_task_env(task, render, seed + 10_000, control_hz)
    policy = VPDDPolicy(model, seed)
    try:
        return evaluate(tc, env, Observer(tc, None), policy.act, 0, seed + 10_000, None)
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
