"""Data-parallel reward training under torchrun: the pieces ``rewards/train.py`` uses.

    torchrun --standalone --nproc_per_node=2 -m video2reward.cli.main reward train \
        method=rank2reward data=demos.zarr out=runs/r2r

torchrun starts one process per rank and sets WORLD_SIZE, RANK and LOCAL_RANK; :func:`detect`
reads them. A plain process (no torchrun, or torchrun with one rank) gets ``None`` and trains
exactly as before, with no process group. Ranks run Gloo on the CPU and NCCL on CUDA, each on
``cuda:LOCAL_RANK``.

Every rank draws the same global batch (the model config's ``batch_size`` rows, from the same
generator) and keeps its own contiguous share of rows (:func:`split_batch`), so the ranks'
local batches together are the single-process batch of that step. DistributedDataParallel
averages the gradients; for a loss that is a mean over rows that average is the single-process
gradient. See docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from video2reward.rewards.base import RewardModel

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job."""

    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer (set by torchrun)") from None


def detect() -> Ranks | None:
    """The torchrun ranks of this process, or None for a single process.

    None when WORLD_SIZE is unset or 1: one rank needs no process group. Partial torchrun
    variables (WORLD_SIZE > 1 without RANK or LOCAL_RANK) are an error, not a silent single
    process that would train W copies side by side."""
    if "WORLD_SIZE" not in os.environ:
        return None
    world = _env_int("WORLD_SIZE")
    if world <= 1:
        return None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start distributed "
            "training with torchrun, which sets all of " + ", ".join(ENV_VARS)
        )
    ranks = Ranks(world, _env_int("RANK"), _env_int("LOCAL_RANK"))
    if not 0 <= ranks.rank < world or ranks.local_rank < 0:
        raise ValueError(f"RANK={ranks.rank} LOCAL_RANK={ranks.local_rank} do not fit "
                         f"WORLD_SIZE={world}")
    return ranks


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """The device of this rank for a TrainConfig ``device``: cuda:LOCAL_RANK or the CPU."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ValueError(
            f"device={name} names one GPU, but under torchrun each rank uses cuda:LOCAL_RANK; "
            "use device=cuda (or auto) and pick GPUs with CUDA_VISIBLE_DEVICES"
        )
    if not torch.cuda.is_available():
        raise ValueError(f"device={name} but CUDA is not available; use device=cpu (Gloo)")
    if ranks.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK={ranks.local_rank} but this node has {torch.cuda.device_count()} CUDA "
            "device(s); start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", ranks.local_rank)


def init(ranks: Ranks, device: torch.device) -> bool:
    """Join the process group (NCCL for CUDA, Gloo for the CPU) unless one exists already.

    Returns whether this call created it (and so must destroy it)."""
    if dist.is_initialized():
        if dist.get_world_size() != ranks.world_size:
            raise RuntimeError(f"a process group of {dist.get_world_size()} ranks exists but "
                               f"WORLD_SIZE={ranks.world_size}")
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def shutdown(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(global_batch: int, world_size: int) -> int:
    """Rows per rank of a global batch; an error when it does not split evenly."""
    if global_batch % world_size:
        raise ValueError(
            f"batch_size={global_batch} is the global batch and must divide evenly across "
            f"{world_size} ranks; use a multiple of {world_size} (e.g. "
            f"{(global_batch // world_size + 1) * world_size})"
        )
    return global_batch // world_size


def split_batch(batch: dict[str, Any], global_batch: int, ranks: Ranks) -> dict[str, Any]:
    """This rank's share of a batch drawn with ``global_batch`` rows.

    A tensor whose first axis is m * global_batch long (m rows per sample, as flattened
    per-frame labels are) keeps rows [rank * m * B / W, (rank + 1) * m * B / W); 0-d tensors
    and other values are shared as they are."""
    w, r = ranks.world_size, ranks.rank
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if not isinstance(v, torch.Tensor) or v.ndim == 0:
            out[k] = v
            continue
        n = v.shape[0]
        if n % global_batch:
            raise ValueError(
                f"batch entry {k!r} has {n} rows, not a multiple of batch_size={global_batch}; "
                "it cannot be split across ranks"
            )
        share = n // w
        out[k] = v[r * share:(r + 1) * share]
    return out


class LossForward(nn.Module):
    """A model's ``loss`` as a ``forward``, for DistributedDataParallel to wrap: DDP hooks the
    gradients of the parameters the forward used and all-reduces them in backward."""

    def __init__(self, model: RewardModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.loss(batch)


def wrap(model: RewardModel, device: torch.device) -> nn.Module:
    """DDP around the model's loss. ``find_unused_parameters``: a loss need not touch every
    parameter (Rank2Reward's discriminator trains outside the loop, on agent frames)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossForward(model), device_ids=ids,
                                   find_unused_parameters=True)


def mean_metrics(metrics: dict[str, torch.Tensor], flag: torch.Tensor,
                 world_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Metrics averaged over ranks and a flag true on any rank, in one all-reduce.

    Every rank must call this at the same step with the same metric names."""
    names = list(metrics)
    device = flag.device
    packed = torch.stack([metrics[k].detach().to(device, torch.float64).reshape(())
                          for k in names] + [flag.to(torch.float64).reshape(())])
    dist.all_reduce(packed)
    mean = {k: packed[i] / world_size for i, k in enumerate(names)}
    return mean, packed[-1] > 0


def any_rank(flag: torch.Tensor) -> bool:
    """Whether a boolean flag is set on any rank (a collective: every rank calls it)."""
    t = flag.to(torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def check_same_step(step: int, device: torch.device, state_path: str) -> None:
    """Raise on every rank unless all ranks resume from the same step (a collective).

    Ranks on other nodes that cannot see rank 0's run folder would start from 0 while rank 0
    resumes, and the job would hang or train out of step."""
    t = torch.tensor([step, -step], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0]), -int(t[1])
    if high != low:
        raise RuntimeError(
            f"ranks resume from different steps ({low} to {high}): {state_path} is not the "
            "same file on every node; put out= on a folder all nodes share"
        )


def barrier() -> None:
    dist.barrier()
