"""VIPER: video prediction models as rewards (Escontrela et al., NeurIPS 2023).

    v2r reward train method=viper data=demos.zarr out=runs/viper
    model = load_reward_model("runs/viper"); model.score(frames).reward

An autoregressive transformer (VideoGPT-style) over the VQ codes of a window of frames
(``rewards/tokenizer.py``) is trained on the demonstration videos with next-token
cross-entropy; the reward of frame t is the log-likelihood the model gives the window of
``seq_len`` frames that ends at t, strided by ``frame_skip`` (frames t, t-k, t-2k, ...).
No goal image and no progress labels: frames that look like the demonstrations' dynamics are
likely, others are not.

What the official code (Alescontrela/viper_rl, ``VideoGPTRewardModel``) does, and this file:
- The log-likelihood of a frame is the **sum** over its tokens of log p(token | all earlier
  tokens) (nats per frame). ``compute_joint=true`` (the official default) rewards the joint
  log-likelihood of the whole window (the sum over its frames); ``false`` the last frame's
  conditional log-likelihood given the earlier frames of the window.
- Tokens are read in raster order, frame-major, behind a learned start vector; the input of
  a token is its codebook vector through a linear layer (no token table), with factorised
  (time, row, column) position embeddings and causal pre-LN attention over all tokens, as the
  official transformer does.
- With ``frame_skip`` k the window keeps every k-th frame ending at t.

Deviations, each for a reason:
- **The first frames.** The official code needs a full window and drops the first
  ``seq_len * frame_skip - 1`` steps of every episode from replay. This learner keeps every
  step, so a window that would start before the first frame repeats the first frame, and
  training draws such windows too (end frames uniform over the episode), so they are in
  distribution.
- **Standardisation.** The official reward feeds DreamerV3, whose symlog reward head and
  return normalisation set the scale. DrQ-v2 takes the reward as it is, so training fits the
  mean and standard deviation of the log-likelihood over all demonstration windows and the
  reward is the z-score (``reward = (ll - mean) / std``): ~0 on demonstration-like frames,
  strongly negative on frames the model finds unlikely.
- **progress** (the report card's metrics read it): the standardised cumulative reward,
  shifted so demonstration frames add to it: progress[t] = sum over s <= t of
  (z[s] - z_low), divided by the demos' median total, where z_low is the demos' 5th
  percentile of z. A demonstration ends near 1; a video the model finds unlikely gains less
  (or loses) progress per frame.
- **Not used:** class conditioning (one model per task here; the official DMC model is
  conditioned on 16 tasks through adaptive LayerNorm), the Plan2Explore exploration term of
  the official agent (DrQ-v2 has no world model to measure disagreement in), EMA weights and
  the VQ-GAN's perceptual and adversarial losses (see ``rewards/tokenizer.py``).

Training: the first ``tokenizer_steps`` of ``steps`` train the tokenizer (reconstruction +
commitment on single frames); the rest train the transformer on the frozen tokenizer's codes.
Sizes: the defaults are a CPU configuration (4 frames strided by 2, 4 layers of 128; ~15 min
on 2 cores for 50 twin demos); ``configs/reward_method/viper_paper.yaml`` has the official
DMC sizes (16 frames, 8 layers of 256, 8 heads, dropout 0.1, codebook 256 at 8x8) for a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from video2reward.rewards.base import RewardConfig, RewardError, RewardModel, to_tensor
from video2reward.rewards.data import VideoDataset, augment
from video2reward.rewards.tokenizer import TokenizerConfig, VQTokenizer


@dataclasses.dataclass(frozen=True)
class ViperConfig(RewardConfig):
    method: str = "viper"
    image_size_px: int = 64  # the papers' tokenizer input
    augment: str = "none"
    lr: float = 5e-4
    batch_size: int = 16
    steps: int = 3000  # tokenizer steps first, then the transformer's
    tokenizer_steps: int = 1000
    # tokenizer (rewards/tokenizer.py)
    code_grid: int = 8
    codebook_size: int = 256
    code_dim: int = 32
    tokenizer_channels: int = 32
    # video model
    seq_len: int = 4  # frames per window (official DMC: 16)
    frame_skip: int = 2  # steps between the window's frames (official DMC: 1; Atari: 4)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    compute_joint: bool = True  # window joint log-likelihood (official default) or last frame's
    score_batch: int = 32  # windows per forward pass when scoring

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokenizer_config()  # validates the tokenizer fields
        if not 0 < self.tokenizer_steps < self.steps:
            raise ValueError(
                f"tokenizer_steps ({self.tokenizer_steps}) must be in [1, steps={self.steps}): "
                "the tokenizer trains first, then the video model"
            )
        if self.seq_len < 2 or self.frame_skip < 1:
            raise ValueError("seq_len must be >= 2 and frame_skip >= 1")
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd % self.n_head:
            raise ValueError("n_layer, n_head >= 1 and n_embd divisible by n_head are needed")
        if not 0.0 <= self.dropout < 1.0 or self.score_batch < 1:
            raise ValueError("dropout must be in [0, 1) and score_batch >= 1")

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(
            image_size=self.image_size_px, code_grid=self.code_grid,
            codebook_size=self.codebook_size, code_dim=self.code_dim,
            channels=self.tokenizer_channels,
        )  # fmt: skip


class VideoGPT(nn.Module):
    """Causal transformer over (T, G, G) code windows, raster order, frame-major."""

    def __init__(self, cfg: ViperConfig):
        super().__init__()
        g, d = cfg.code_grid, cfg.n_embd
        self.t, self.g = cfg.seq_len, g
        self.inp = nn.Linear(cfg.code_dim, d)
        self.sos = nn.Parameter(torch.zeros(d))
        self.pos_t = nn.Parameter(torch.randn(cfg.seq_len, 1, 1, d) * 0.02)
        self.pos_h = nn.Parameter(torch.randn(1, g, 1, d) * 0.02)
        self.pos_w = nn.Parameter(torch.randn(1, 1, g, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_head, 4 * d, cfg.dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.codebook_size)
        n = cfg.seq_len * g * g
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(n),
                             persistent=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors (B, T, G, G, code_dim): the window's codebook vectors -> (B, T*G*G, K)
        logits, position i predicting token i from tokens < i."""
        b = vectors.shape[0]
        x = self.inp(vectors) + self.pos_t + self.pos_h + self.pos_w
        x = x.reshape(b, -1, x.shape[-1])
        x = torch.cat([self.sos.expand(b, 1, -1), x[:, :-1]], 1)  # right shift behind SOS
        return self.head(self.norm(self.blocks(x, mask=self.mask, is_causal=True)))


def window_indices(t: np.ndarray, seq_len: int, frame_skip: int) -> np.ndarray:
    """(N,) end frames -> (N, seq_len) frame indices t-(L-1)k, ..., t-k, t, clamped at 0
    (a window that would start before the episode repeats its first frame)."""
    offsets = frame_skip * np.arange(seq_len - 1, -1, -1)
    return np.maximum(np.asarray(t)[:, None] - offsets[None], 0)


class Viper(RewardModel):
    method = "viper"
    config_cls = ViperConfig
    config: ViperConfig
    trained_steps: torch.Tensor
    ll_mean: torch.Tensor
    ll_std: torch.Tensor
    z_low: torch.Tensor
    progress_ref: torch.Tensor

    def __init__(self, config: ViperConfig):
        super().__init__(config)
        self.tokenizer = VQTokenizer(config.tokenizer_config())
        self.video = VideoGPT(config)
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        for name, value in (("ll_mean", 0.0), ("ll_std", 1.0), ("z_low", -2.0),
                            ("progress_ref", 1.0)):
            self.register_buffer(name, torch.tensor(value))
        self._step: int | None = None  # host copy of trained_steps (read once)
        self._cache: tuple[VideoDataset, torch.Tensor] | None = None
        self._checked: VideoDataset | None = None  # the dataset whose lengths were checked

    @property
    def uses_goal(self) -> bool:
        return False

    @property
    def context_frames(self) -> int:
        return (self.config.seq_len - 1) * self.config.frame_skip

    def set_frame_stride(self, stride: int) -> None:
        """Windows stay ``frame_skip`` training-video frames apart when the scored frames are
        ``stride`` apart: the skip becomes frame_skip / stride (it must divide)."""
        super().set_frame_stride(stride)
        if stride == 1:
            return
        skip = self.config.frame_skip
        if skip % stride:
            raise RewardError(
                f"VIPER's frame_skip ({skip}) counts frames of its training videos; frames "
                f"scored {stride} apart need a frame_skip divisible by {stride}"
            )
        self.config = dataclasses.replace(self.config, frame_skip=skip // stride)

    @property
    def phase(self) -> str:
        if self._step is None:
            self._step = int(self.trained_steps)
        return "tokenizer" if self._step < self.config.tokenizer_steps else "video"

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._step = None  # re-read after a resume

    # -- training
    def sample_batch(self, data: VideoDataset, rng: np.random.Generator) -> dict[str, Any]:
        b, s = self.config.batch_size, self.config.image_size_px
        if self._checked is not data:
            short = np.flatnonzero(data.lengths < self.config.seq_len)
            if len(short):
                i = int(short[0])
                raise RewardError(
                    f"VIPER needs videos of at least seq_len={self.config.seq_len} frames; "
                    f"{data.infos[i].source} has {int(data.lengths[i])} ({len(short)} too short)"
                )
            self._checked = data
        ep = np.asarray(rng.integers(0, len(data), size=b))
        t = (rng.random(b) * data.lengths[ep]).astype(np.int64)
        if self.phase == "tokenizer":
            x = data.frames_tensor(ep, t, self.device)
            return {"frames": augment(x, self.config.augment, rng, self.config.crop_scale_min)}
        idx = window_indices(t, self.config.seq_len, self.config.frame_skip)
        if self.config.augment == "none":  # the frozen tokenizer's codes, computed once
            rows = torch.from_numpy(data.starts[ep][:, None] + idx).to(self.device)
            return {"codes": self._dataset_codes(data)[rows]}
        x = data.frames_tensor(np.repeat(ep, idx.shape[1]), idx.reshape(-1), self.device)
        x = augment(x.view(b, -1, 3, s, s), self.config.augment, rng, self.config.crop_scale_min)
        return {"windows": x.reshape(-1, 3, s, s)}

    def _dataset_codes(self, data: VideoDataset) -> torch.Tensor:
        """Codes of every frame of ``data`` (N, G, G), kept while the same dataset trains."""
        if self._cache is None or self._cache[0] is not data:
            self.tokenizer.eval()
            n = int(data.lengths.sum())
            codes = torch.cat([
                self._codes(to_tensor(data.frames[c], self.device))
                for c in np.array_split(np.arange(n), max(1, n // self.score_chunk))
            ])  # fmt: skip
            self._cache = (data, codes)
        return self._cache[1]

    def _codes(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tokenizer.encode(frames)

    def _token_logprobs(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, G, G) -> (B, T*G*G) log p(token | earlier tokens)."""
        b = codes.shape[0]
        vec = self.tokenizer.quantizer.get_output_from_indices(codes.flatten(0, 1))
        vec = vec.view(b, self.config.seq_len, -1, self.config.code_grid,
                       self.config.code_grid).permute(0, 1, 3, 4, 2)
        logits = self.video(vec.detach())
        return -F.cross_entropy(logits.transpose(1, 2), codes.reshape(b, -1), reduction="none")

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        phase = self.phase
        self.trained_steps += 1
        self._step = (self._step or 0) + 1
        if phase == "tokenizer":
            loss, metrics = self.tokenizer.loss(batch["frames"])
            return loss, {**metrics, "bits_per_token": torch.full_like(loss.detach(), np.nan)}
        self.tokenizer.eval()
        g = self.config.code_grid
        codes = batch["codes"] if "codes" in batch else self._codes(batch["windows"])
        codes = codes.reshape(-1, self.config.seq_len, g, g)
        nll = -self._token_logprobs(codes).mean()  # per-token mean, as the official loss
        nan = torch.full_like(nll.detach(), np.nan)
        return nll, {"tok_recon": nan, "tok_commit": nan, "tok_usage": nan, "loss": nll.detach(),
                     "bits_per_token": nll.detach() / float(np.log(2))}

    # -- scoring
    def log_likelihood(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, S, S) frames of one episode -> (T,) log-likelihood of the window ending at
        each frame (joint over the window, or the last frame's conditional)."""
        cfg = self.config
        codes = torch.cat([self._codes(c) for c in frames.split(self.score_chunk)])
        idx = torch.from_numpy(window_indices(np.arange(len(frames)), cfg.seq_len,
                                              cfg.frame_skip)).to(codes.device)
        g2 = cfg.code_grid**2
        out = []
        for chunk in idx.split(cfg.score_batch):
            lp = self._token_logprobs(codes[chunk]).view(len(chunk), cfg.seq_len, g2).sum(-1)
            out.append(lp.sum(-1) if cfg.compute_joint else lp[:, -1])
        return torch.cat(out)

    def _score(
        self, frames: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        z = (self.log_likelihood(frames) - self.ll_mean) / self.ll_std
        progress = torch.cumsum(z - self.z_low, 0) / self.progress_ref
        return z.cpu().numpy(), progress.cpu().numpy()

    @torch.no_grad()
    def calibrate(self, data: VideoDataset) -> None:
        """Fit the standardisation and the progress scale on the demonstration windows."""
        was = self.training
        self.eval()
        try:
            lls = [self.log_likelihood(data.frames_tensor(np.full(n, i), np.arange(n),
                                                          self.device))
                   for i, n in enumerate(data.lengths)]
        finally:
            self.train(was)
        flat = torch.cat(lls)
        if not bool(torch.isfinite(flat).all()):
            raise RewardError("VIPER: non-finite log-likelihood on the demonstrations")
        self.ll_mean.fill_(float(flat.mean()))
        self.ll_std.fill_(float(flat.std().clamp_min(1e-3)) if len(flat) > 1 else 1.0)
        zs = [(ll - self.ll_mean) / self.ll_std for ll in lls]
        self.z_low.fill_(float(torch.quantile(torch.cat(zs), 0.05)))
        totals = torch.stack([(z - self.z_low).sum() for z in zs])
        self.progress_ref.fill_(float(totals.median().clamp_min(1e-3)))
