"""Host/device synchronisations per training step on CUDA, counted by PyTorch itself.

    .venv/bin/python benchmarks/gpu_sync_counts.py [--json out.json]

``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising CUDA call (a
device-to-host copy, ``.item()``, a blocking copy, ``nonzero`` ...). Counted per step: a DrQ-v2
update without and with metrics read-back (84x84x9, batch 256, staged ahead as the learner
thread does), a training step of every reward method (``sample_batch``, ``loss``, backward,
Adam), Rank2Reward's online discriminator update and one RewardStream scoring call. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def count_syncs(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and cuDNN plans are not steady state
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(repeats):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught) / repeats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_sync_counts: no CUDA device; nothing measured")
        return 2
    from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
    from video2reward.policies.replay import Batch
    from video2reward.rewards.base import METHODS, build_model, method_class
    from video2reward.rewards.data import dataset_from_store
    from video2reward.rewards.stream import RewardStream, RewardStreamConfig
    from video2reward.rewards.synthetic import synthetic_store

    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    b = 256
    batch = Batch(rng.integers(0, 256, (b, 9, 84, 84), dtype=np.uint8),
                  rng.uniform(-1, 1, (b, 4)).astype(np.float32),
                  rng.normal(size=b).astype(np.float32), np.full(b, 0.97, np.float32),
                  rng.integers(0, 256, (b, 9, 84, 84), dtype=np.uint8),
                  rng.normal(size=(b, 4)).astype(np.float32),
                  rng.normal(size=(b, 4)).astype(np.float32))  # fmt: skip
    agent = DrQV2Agent(DrQV2Config(), (9, 84, 84), 4, 4, device=dev)
    staged = [agent.to_device(batch)]

    def drq(log: bool) -> None:
        s = staged.pop()
        agent.update(s, step=10_000, log=log)
        staged.append(agent.to_device(batch))  # the next batch, prefetched

    results: dict[str, float] = {
        "drqv2_update": count_syncs(lambda: drq(False), args.repeats),
        "drqv2_update_logged": count_syncs(lambda: drq(True), args.repeats),
    }
    data = dataset_from_store(synthetic_store(8, 0, size_px=84, length=30, seed=0), 84).demos()
    for method in sorted(METHODS):
        model = build_model(method_class(method).config_cls(), dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        r = np.random.default_rng(0)

        def step(model=model, opt=opt, r=r) -> None:
            loss, _ = model.loss(model.sample_batch(data, r))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        results[f"reward_train_step_{method}"] = count_syncs(step, args.repeats)
    r2r = build_model(method_class("rank2reward").config_cls(), dev)
    r2r.calibrate(data)
    frames = data.frames[:64]
    results["rank2reward_disc_update"] = count_syncs(lambda: r2r.update(frames), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        r2r.save(tmp)
        stream = RewardStream(RewardStreamConfig(ckpt=tmp, online_updates=False))
        results["reward_stream_score_1_frame"] = count_syncs(
            lambda: stream.score([(0, frames[0])]), args.repeats
        )
        stream.close()
    print(f"CUDA synchronisations per call ({torch.cuda.get_device_name()}):")
    for k, v in results.items():
        print(f"  {k:<34} {v:6.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
