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
  mean and standard deviation of the log-likelihood over the windows of demonstrations the
  video model did not train on (every ``holdout_every``-th) and the reward is the z-score
  (``reward = (ll - mean) / std``): ~0 on demonstration-like frames, strongly negative on
  frames the model finds unlikely.
- **progress** (the report card's metrics read it): the standardised cumulative reward,
  shifted so demonstration frames add to it: progress[t] = sum over s <= t of
  (z[s] - z_low), divided by the demos' median total, where z_low is the demos' 5th
  percentile of z. A demonstration ends near 1; a video the model finds unlikely gains less
  (or loses) progress per frame.
- **Not used:** class conditioning (one model per task here; the official DMC model is
  conditioned on 16 tasks through adaptive LayerNorm), the Plan2Explore exploration term of
  the official agent (DrQ-v2 has no world model to measure disagreement in), EMA weights and
  the VQ-GAN's perceptual and adversarial losses (see ``rewards/tokenizer.py``).

Training (``rewards/tokenizer.py``'s ``TokenRewardModel``, shared with Diffusion Reward): the
first ``tokenizer_steps`` of ``steps`` train the tokenizer (reconstruction + commitment on
single frames); the rest train the transformer on the frozen tokenizer's codes.
Sizes: the defaults are a CPU configuration (4 frames strided by 2, 4 layers of 128; 700
tokenizer and 1500 video-model steps: 13.5 min on 2 quiet cores for 50 twin push demos);
``configs/reward_method/viper_paper.yaml`` has the official DMC sizes (16 frames, 8 layers
of 256, 8 heads, dropout 0.1, codebook 256 at 8x8) for a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from video2reward.rewards.base import RewardError
from video2reward.rewards.tokenizer import TokenRewardConfig, TokenRewardModel, window_indices


@dataclasses.dataclass(frozen=True)
class ViperConfig(TokenRewardConfig):
    method: str = "viper"
    seq_len: int = 4  # frames per window (official DMC: 16)
    frame_skip: int = 2  # training-video frames between the window's frames (DMC: 1; Atari: 4)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1  # the official DMC model's (attention and residual)
    compute_joint: bool = True  # window joint log-likelihood (official default) or last frame's
    # The CPU budget: ~15 minutes on 2 cores for 50 twin demos. One video-model step is
    # ~0.52 s there (a tokenizer step ~0.04 s): 700 + 1500 steps trained twin push's 50 demos
    # in 807 s; the 1000 + 2000 of the shared default took ~18 minutes (AUROC 0.95 both).
    steps: int = 2200
    tokenizer_steps: int = 700

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_len < 2 or self.frame_skip < 1:
            raise ValueError("seq_len must be >= 2 and frame_skip >= 1")
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd % self.n_head:
            raise ValueError("n_layer, n_head >= 1 and n_embd divisible by n_head are needed")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class VideoGPT(nn.Module):
    """Causal transformer over (T, G, G) code windows, raster order, frame-major."""

    def __init__(self, cfg: ViperConfig):
        super().__init__()
        g, d = cfg.code_grid, cfg.n_embd
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


class Viper(TokenRewardModel):
    method = "viper"
    config_cls = ViperConfig
    config: ViperConfig

    def __init__(self, config: ViperConfig):
        super().__init__(config)
        self.video = VideoGPT(config)

    @property
    def context_frames(self) -> int:
        return (self.config.seq_len - 1) * self.config.frame_skip

    @property
    def min_frames(self) -> int:
        return self.config.seq_len

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

    def sample_frames(self, t: np.ndarray) -> np.ndarray:
        return window_indices(t, self.config.seq_len, self.config.frame_skip)

    def token_logprobs(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, G, G) -> (B, T*G*G) log p(token | earlier tokens)."""
        b, g = codes.shape[0], self.config.code_grid
        vec = self.tokenizer.quantizer.get_output_from_indices(codes.flatten(0, 1))
        vec = vec.view(b, self.config.seq_len, -1, g, g).permute(0, 1, 3, 4, 2)
        logits = self.video(vec.detach())
        return -F.cross_entropy(logits.transpose(1, 2), codes.reshape(b, -1), reduction="none")

    def video_loss(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nll = -self.token_logprobs(codes).mean()  # per-token mean, as the official loss
        return nll, {"bits_per_token": nll.detach() / float(np.log(2))}

    def raw_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """The log-likelihood of the window ending at each frame (joint over the window, or
        the last frame's conditional), summed over tokens."""
        cfg = self.config
        idx = torch.from_numpy(self.sample_frames(np.arange(len(codes)))).to(codes.device)
        g2 = cfg.code_grid**2
        out = []
        for chunk in idx.split(cfg.score_batch):
            lp = self.token_logprobs(codes[chunk]).view(len(chunk), cfg.seq_len, g2).sum(-1)
            out.append(lp.sum(-1) if cfg.compute_joint else lp[:, -1])
        return torch.cat(out)
