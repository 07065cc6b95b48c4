"""Train any reward model on demonstration videos: one loop for every method.

    v2r reward train method=vip data=demos.zarr out=runs/vip
    v2r reward train method=hold_r data=videos/ out=runs/holdr method.steps=3000 threads=1

    model = train(VIPConfig(), TrainConfig(data="demos.zarr", out="runs/vip"))   # from Python

The loop draws a batch with the method's ``sample_batch``, steps Adam on its ``loss`` and logs
every ``log_every`` steps to TensorBoard (``out/tb``) and ``out/metrics.csv``. Every
``ckpt_every`` steps it writes ``out/train_state.pt`` (weights, optimizer, step); running the
same command again resumes from there. At the end the model is calibrated on the training
demos and written to ``out/model.pt``; ``out/train_summary.json`` records the wall time.
Training uses only the successful expert episodes of the data. Rank2Reward's discriminator can
be pre-fitted on agent frames with ``agent_data=...`` (it is otherwise updated online).

Under ``torchrun --nproc_per_node=N`` the same command trains data-parallel (DDP; Gloo on the
CPU, NCCL on CUDA): ``batch_size`` stays the global batch, split across the ranks, and rank 0
alone logs, checkpoints, calibrates and writes the model (rewards/distributed.py,
docs/distributed.md).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from video2reward.compute.device import (
    check_device_name,
    host_scalars,
    resolve_device,
    set_deterministic,
)
from video2reward.rewards import distributed
from video2reward.rewards.base import (
    CheckpointError,
    RewardConfig,
    RewardModel,
    build_model,
    read_checkpoint,
)
from video2reward.rewards.data import VideoDataset, load_episodes
from video2reward.rewards.streaming import EpisodeStream, StreamConfig

STATE_NAME = "train_state.pt"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: str  # zarr store, video file, folder of videos or VIP frame folders
    out: str  # run folder: model.pt, train_state.pt, metrics.csv, tb/
    max_episodes: int | None = None  # use only the first N episodes of the data
    log_every: int = 25  # steps between log rows
    ckpt_every: int = 250  # steps between resumable checkpoints
    threads: int = 0  # torch threads; 0 keeps torch's default, 1 when sharing the CPU
    resume: bool = True  # continue from out/train_state.pt when it exists
    device: str = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N
    bf16: bool = False  # CUDA only: bf16 autocast of the forward pass (ResNet encoders)
    deterministic: bool = False  # bit-reproducible CUDA kernels (slower); the CPU always is
    agent_data: str = ""  # Rank2Reward only: agent episodes to pre-fit the discriminator on
    agent_updates: int = 200  # discriminator updates on agent_data
    # Cut demos this many frames after their first successful frame when the data has
    # per-step success labels (scripted demos idle after success); -1 keeps whole episodes;
    # None takes the method's default (RewardModel.default_trim_after_success). HOLD-R and TCN
    # keep whole episodes by default and still stop their time-based samples 2 frames after
    # the first success (data.KEEP_AFTER_SUCCESS); the frames after it feed their at-goal terms.
    trim_after_success: int | None = None
    progress_bar: bool = True
    # Stream the data from shards through a bounded buffer (rewards/streaming.py) instead of
    # loading every episode: for video sets larger than memory.
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        if isinstance(self.stream, dict):
            object.__setattr__(self, "stream", StreamConfig(**self.stream))
        if not self.data:
            raise ValueError("data is required: a zarr store, video file or folder")
        if not self.out:
            raise ValueError("out is required: the run folder to write")
        if self.log_every < 1 or self.ckpt_every < 1:
            raise ValueError("log_every and ckpt_every must be >= 1")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        check_device_name(self.device)
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError("max_episodes must be >= 1")


class _Logs:
    """TensorBoard + CSV, both appended on resume."""

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out / "tb"))
        self.csv_path = out / "metrics.csv"
        self.fields: list[str] | None = None
        if self.csv_path.exists():
            with self.csv_path.open() as f:
                header = f.readline().strip()
            self.fields = header.split(",") if header else None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.tb.add_scalar(f"train/{k}", v, step)
        row = {"step": step, **metrics}
        new = self.fields is None
        if self.fields is None:
            self.fields = list(row)
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def close(self) -> None:
        self.tb.close()


def _save_state(path: Path, model: RewardModel, opt: torch.optim.Optimizer, step: int,
                elapsed_s: float, cpu_s: float) -> None:
    state = {**model.checkpoint(), "optimizer": opt.state_dict(), "step": step,
             "elapsed_s": elapsed_s, "cpu_s": cpu_s}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fit(model: RewardModel, data: VideoDataset, steps: int, seed: int = 0,
        metric: str = "loss") -> list[float]:
    """``steps`` plain Adam steps (the config's lr) on a method's loss, then calibration on
    ``data``: no logging, checkpoints or ranks (tests and notebooks). Returns ``metric`` per
    step."""
    opt = torch.optim.Adam(model.parameters(), lr=model.config.lr)
    rng = np.random.default_rng(seed)
    out = []
    model.train()
    for _ in range(steps):
        loss, metrics = model.loss(model.sample_batch(data, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(metrics[metric]))
    model.calibrate(data)
    return out


def train(model_cfg: RewardConfig, cfg: TrainConfig) -> RewardModel:
    """Train, calibrate and save a reward model; under torchrun, one rank of a DDP job."""
    ranks = distributed.detect()
    if ranks is None:
        return _train(model_cfg, cfg, None)
    distributed.check_batch(model_cfg.batch_size, ranks.world_size)
    created = distributed.init(ranks, distributed.rank_device(cfg.device, ranks))
    try:
        return _train(model_cfg, cfg, ranks)
    finally:
        distributed.shutdown(created)


def _train(model_cfg: RewardConfig, cfg: TrainConfig,
           ranks: distributed.Ranks | None) -> RewardModel:
    main = ranks is None or ranks.is_main
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = (resolve_device(cfg.device) if ranks is None
              else distributed.rank_device(cfg.device, ranks))
    if cfg.deterministic:
        set_deterministic()
    torch.manual_seed(model_cfg.seed)
    model = build_model(model_cfg, device)
    model.set_bf16(cfg.bf16)  # refuses bf16 off CUDA before any work
    trim = cfg.trim_after_success
    keep = model.default_trim_after_success if trim is None else trim
    stream: EpisodeStream | None = None
    data: VideoDataset
    if cfg.stream.enabled:
        if cfg.max_episodes is not None:
            raise ValueError("max_episodes does not apply to a streamed data set")
    else:
        data = load_episodes(cfg.data, model_cfg.image_size_px, cfg.max_episodes).demos()
        data = data.trimmed(keep)
    opt = torch.optim.Adam(model.parameters(), lr=model_cfg.lr)

    start, elapsed_s, cpu_s = 0, 0.0, 0.0
    state_path = out / STATE_NAME
    if cfg.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = {k: v for k, v in dict(state.get("config", {})).items() if k != "steps"}
        wanted = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k != "steps"}
        if saved != wanted:
            diff = ", ".join(f"{k}: {saved.get(k, '(unset)')} -> {wanted.get(k, '(unset)')}"
                             for k in sorted(saved.keys() | wanted.keys())
                             if saved.get(k) != wanted.get(k))
            raise CheckpointError(
                f"{state_path} was trained with a different config ({diff}; only steps may "
                "change on resume); use a new out= folder or resume=false"
            )
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed_s = int(state["step"]), float(state.get("elapsed_s", 0.0))
        cpu_s = float(state.get("cpu_s", 0.0))
    # The loss as DDP runs it (gradients averaged over the ranks in backward); built after the
    # resumed weights are in, as every rank reads them before DDP's first collective.
    step_loss = model.loss
    if ranks is not None:
        distributed.check_same_step(start, device, str(state_path))
        step_loss = distributed.wrap(model, device)
    if main:
        (out / "config.json").write_text(json.dumps(
            {"method": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(cfg)},
            indent=2))
        if start == 0:  # a fresh run: do not append to an earlier run's log
            (out / "metrics.csv").unlink(missing_ok=True)
    logs = _Logs(out) if main else None
    # A fresh generator per (seed, start step): a resumed run draws new batches. Every rank
    # draws the same global batch from it and keeps its rows, so the stream does not depend
    # on the number of ranks (a run resumes on any number). Streamed, each rank reads its own
    # shards into its own buffer and draws from it with a generator of its own.
    if not cfg.stream.enabled:
        rng = np.random.default_rng([model_cfg.seed, start])
    else:
        rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        rng = np.random.default_rng([model_cfg.seed, start, rank])
        stream = EpisodeStream(cfg.data, model_cfg.image_size_px, cfg.stream,
                               seed=(model_cfg.seed, start), rank=rank, world_size=world)
        data = stream.refresh().trimmed(keep)
    steps = model_cfg.steps
    t0 = time.monotonic() - elapsed_s
    c0 = time.process_time() - cpu_s  # CPU seconds of this process: wall time on a shared
    # machine depends on the neighbours, CPU time does not
    bar: Any = None
    if cfg.progress_bar and steps > start and main:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {model.method}", unit="step")
    model.train()
    # NaN/inf losses are flagged on the device and read back with the logged metrics (and
    # before every checkpoint): a GPU step never waits for the host.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    checked = start  # steps before this one are known to have finite losses

    def check_finite(step: int, weights: bool = False) -> None:
        """Raise if a loss (or, before a checkpoint, a weight) became NaN/inf."""
        nonlocal checked
        bad_weights = weights and not bool(
            torch.stack([p.isfinite().all() for p in model.parameters()]).all()
        )
        bad_loss = bool(nonfinite) if ranks is None else distributed.any_rank(nonfinite)
        if bad_loss or bad_weights:
            raise FloatingPointError(
                f"{'weights' if bad_weights else 'loss'} became NaN/inf between steps "
                f"{checked} and {step}; lower lr"
            )
        checked = step + 1

    try:
        for step in range(start, steps):
            if stream is not None and step > start and step % cfg.stream.refresh_every == 0:
                data = stream.refresh().trimmed(keep)
            batch = model.sample_batch(data, rng)
            if ranks is not None:
                batch = distributed.split_batch(batch, model_cfg.batch_size, ranks)
            loss, metrics = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            nonfinite |= ~torch.isfinite(loss.detach())
            if step % cfg.log_every == 0 or step == steps - 1:
                flag = nonfinite
                if ranks is not None:  # the metrics of the global batch: the ranks' mean
                    metrics, flag = distributed.mean_metrics(metrics, nonfinite,
                                                             ranks.world_size)
                values = host_scalars({**metrics, "_nonfinite": flag})
                if values.pop("_nonfinite"):
                    check_finite(step)
                checked = step + 1
                if logs is not None:
                    logs.write(step, {**values, "time_s": time.monotonic() - t0})
                if bar is not None:
                    bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}")
            if bar is not None:
                bar.update(1)
            if (step + 1) % cfg.ckpt_every == 0 and step + 1 < steps:
                check_finite(step, weights=True)  # never checkpoint NaN weights
                if main:
                    _save_state(state_path, model, opt, step + 1, time.monotonic() - t0,
                                time.process_time() - c0)
        check_finite(steps - 1, weights=True)
    finally:
        if bar is not None:
            bar.close()
        if logs is not None:
            logs.close()
    train_time_s = time.monotonic() - t0
    train_cpu_s = time.process_time() - c0
    if not main:  # rank 0 finishes the run; the others take its model when it is written
        distributed.barrier()
        ckpt = read_checkpoint(out)
        model.load_state_dict(ckpt["state_dict"])
        thr = ckpt.get("success_progress")
        model.success_progress = None if thr is None else float(thr)
        return model
    _save_state(state_path, model, opt, steps, train_time_s, train_cpu_s)

    if cfg.agent_data and hasattr(model, "update"):
        agent = load_episodes(cfg.agent_data, model_cfg.image_size_px)
        arng = np.random.default_rng(model_cfg.seed + 1)
        for _ in range(cfg.agent_updates):
            ep = arng.integers(0, len(agent), size=model_cfg.batch_size)
            t = (arng.random(ep.shape[0]) * agent.lengths[ep]).astype(np.int64)
            model.update(agent.frames[agent.starts[ep] + t])
    # Streamed, calibration reads the buffer: a sample of the data, not all of it.
    model.calibrate(data)
    # success: the progress the (trimmed) demonstrations end at, kept in the checkpoint
    model.calibrate_success([data.episode(i) for i in range(len(data))])
    path = model.save(out)
    (out / "train_summary.json").write_text(json.dumps({
        "method": model.method, "steps": steps, "train_time_s": round(train_time_s, 2),
        "train_cpu_s": round(train_cpu_s, 2),
        "episodes": len(data), "frames": int(data.lengths.sum()), "checkpoint": str(path),
        "streamed": None if stream is None else {
            "episodes_read": stream.episodes_read, "epochs_started": stream.epochs_started,
            "shards": stream.n_shards, "buffer_episodes": cfg.stream.buffer_episodes},
        "threads": torch.get_num_threads(), "device": str(device),
        "success_progress": model.success_progress,
        "world_size": 1 if ranks is None else ranks.world_size,
    }, indent=2))
    if ranks is not None:
        distributed.barrier()
    return model
