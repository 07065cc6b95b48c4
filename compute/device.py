"""Where tensors live and how they get there: one meaning of ``device``, one way to stage
batches, and one hand-off of weights between threads.

    device = resolve_device("auto")                 # cuda when available, else cpu; or "cuda:1"
    staged = stager(batch.obs, batch.action, ...)   # non-blocking host -> device copies
    obs, action, ... = staged.ready()               # the caller's stream waits for the copy

    with training_stream(device):                   # a training thread's own CUDA stream
        ... update ...; copy weights into the acting copy; handoff.publish()
    handoff.acquire()                               # acting/scoring stream waits for the copy

On the CPU every piece here is a no-op wrapper: ``torch.from_numpy`` shares the numpy memory,
there are no streams and nothing waits. On CUDA the rules are the ones PyTorch documents:
- a copy from pinned host memory with ``non_blocking=True`` returns at once; the caching host
  allocator keeps the pinned block alive until the copy has run, so no buffer is reused early;
- work queued on one stream is unordered with another stream's: a consumer waits on an event
  recorded after the producer's copy, and a tensor made on one stream and used on another is
  marked with ``record_stream`` so its memory is not handed out again while still in use.
- A consumer that reads weights (acting, scoring) ends each use with a device-to-host copy
  (the action, the reward), so once it releases its lock none of its kernels are in flight and
  the producer may overwrite the weights: only the producer-to-consumer direction needs an event.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEVICE_HELP",
    "Staged",
    "Stager",
    "WeightHandoff",
    "check_device_name",
    "from_host",
    "host_scalars",
    "resolve_device",
    "set_deterministic",
    "training_stream",
]

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def check_device_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of :data:`DEVICE_HELP` (config validation)."""
    ok = name in ("auto", "cpu", "cuda")
    if not ok and name.startswith("cuda:"):
        ok = name[5:].isdigit()
    if not ok:
        raise ValueError(f"device must be {DEVICE_HELP}; got {name!r}")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for a config's ``device``; a CUDA device that is not there is an error
    naming what is missing, not a crash on the first tensor."""
    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name} but CUDA is not available (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device=cpu or install the CUDA build"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def from_host(a: np.ndarray, device: torch.device) -> Tensor:
    """A small host array (indices, labels, crop boxes) on ``device`` without a host wait.

    From pageable memory a ``non_blocking`` copy returns once CUDA has staged the bytes, so
    the array may be freed right after; a blocking copy would also wait for the stream.
    """
    return torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)


def host_scalars(values: dict[str, Tensor | float]) -> dict[str, float]:
    """0-d device tensors and plain numbers -> floats, with one device-to-host copy."""
    tensors = {k: v.detach().float() for k, v in values.items() if isinstance(v, Tensor)}
    read = torch.stack(list(tensors.values())).tolist() if tensors else []
    out = dict(zip(tensors, read, strict=True))
    return {k: out[k] if k in out else float(v) for k, v in values.items()}


def set_deterministic(on: bool = True) -> None:
    """Deterministic kernels (cuDNN, cuBLAS, scatter/index ops) for bit-reproducible CUDA runs.

    Process-wide and slower. The CPU kernels this project uses are deterministic already.
    cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before CUDA starts: it is set here
    when absent, which is in time only if nothing has used CUDA yet.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


class Staged(NamedTuple):
    """Tensors whose host-to-device copies may still be running on the copy stream."""

    tensors: tuple[Tensor | None, ...]
    done: torch.cuda.Event | None  # recorded on the copy stream after the copies (CUDA only)

    def ready(self) -> tuple[Tensor | None, ...]:
        """The tensors, safe to use on the caller's current stream."""
        if self.done is not None:
            stream = torch.cuda.current_stream(self.done.device)
            stream.wait_event(self.done)
            for t in self.tensors:
                if t is not None:
                    t.record_stream(stream)
        return self.tensors


class Stager:
    """Copies numpy arrays to ``device`` without making the host wait.

    CPU: zero-copy views (``torch.from_numpy``). CUDA: each array is copied once into pinned
    memory and sent with ``non_blocking=True`` on a copy stream of its own, so the next batch
    travels while the current update computes; :meth:`Staged.ready` orders the consumer after it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self.cuda else None

    def __call__(self, *arrays: np.ndarray | None) -> Staged:
        if self._stream is None:
            return Staged(
                tuple(None if a is None else torch.from_numpy(a).to(self.device) for a in arrays),
                None,
            )
        # No wait on the caller's stream: the copies read pinned host memory only, their
        # device blocks come from the copy stream's own pool, and ready() marks them in use
        # by the consumer (record_stream); so the next batch travels while an update computes.
        with torch.cuda.stream(self._stream):
            out = tuple(
                None
                if a is None
                else torch.from_numpy(np.ascontiguousarray(a))
                .pin_memory()
                .to(self.device, non_blocking=True)
                for a in arrays
            )
            done = torch.cuda.Event()
            done.record(self._stream)
        return Staged(out, done)


@contextlib.contextmanager
def training_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a CUDA stream of its own (a training thread), so that acting and
    scoring, on the default stream, never queue behind training kernels. CPU: nothing."""
    if device.type != "cuda":
        yield
        return
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))  # after what was queued before it
    with torch.cuda.stream(stream):
        yield


class WeightHandoff:
    """Orders a consumer's use of weights after the producer's copy of them (CUDA events).

    The producer calls :meth:`publish` right after queueing the copy (under the lock that
    guards the weights); the consumer calls :meth:`acquire` under the same lock before it
    queues work that reads them. CPU: both do nothing (copies are synchronous there).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._event: torch.cuda.Event | None = None

    def publish(self) -> None:
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
            self._event = event

    def acquire(self) -> None:
        if self._event is not None:
            torch.cuda.current_stream(self._event.device).wait_event(self._event)
