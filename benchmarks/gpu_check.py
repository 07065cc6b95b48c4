"""The GPU path measured in one run: a few minutes on one CUDA GPU, one JSON printed and written
to benchmarks/results/gpu_check.json.

    .venv/bin/python benchmarks/gpu_check.py                      # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick # checks the script itself

Measures, each after warm-up and with the device synchronised around the timed region:
- reward scoring (``model.score``, what the reward node runs): latency at batch 1 and
  throughput at batch 32, Rank2Reward (the small conv encoder, 84 px) and VIP with a ResNet-50
  (224 px), the ResNet in fp32 and in bf16 autocast;
- one DrQ-v2 update at the paper's sizes (9x84x84 observations, batch 256, 1024-wide heads),
  staged from host memory as the learner does;
- reward training steps per second (VIP, ResNet-50 at 224 px, batch 32), fp32 and bf16.
Side by side with the official drqv2 agent: benchmarks/bench_drqv2.py (it needs the fetched
facebookresearch/drqv2 on the machine). Every figure is also given as a ratio to its own
baseline in the same run (bf16 against fp32, batch 32 per frame against batch 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def scoring(device: torch.device, repeats: int, quick: bool) -> dict[str, Any]:
    from video2reward.rewards.base import build_model, method_class

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    cases: list[tuple[str, str, dict[str, Any], bool]] = [
        ("rank2reward_conv84", "rank2reward", {"image_size_px": 84}, False)
    ]
    resnet: dict[str, Any] = {"image_size_px": 112 if quick else 224, "encoder": "resnet50"}
    cases += [("vip_resnet50_fp32", "vip", resnet, False)]
    if device.type == "cuda":
        cases += [("vip_resnet50_bf16", "vip", resnet, True)]
    for name, method, kw, bf16 in cases:
        cfg = dataclasses.replace(method_class(method).config_cls(), **kw)
        model = build_model(cfg, device).eval()
        if method == "rank2reward":  # an expert bank, as training's calibration leaves it
            model.expert_bank = torch.randint(0, 256, (16, 84, 84, 3), dtype=torch.uint8)
        model.set_bf16(bf16)
        size = cfg.image_size_px
        one = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)  # a frame and its previous
        many = rng.integers(0, 256, (33, size, size, 3), dtype=np.uint8)
        def score_one(m: Any = model, x: np.ndarray = one) -> None:
            m.score(x)

        def score_many(m: Any = model, x: np.ndarray = many) -> None:
            m.score(x)

        with torch.no_grad():
            t1 = timed(score_one, device, repeats)
            t32 = timed(score_many, device, max(3, repeats // 2))
        out[name] = {"latency_b1_ms": round(t1 * 1e3, 3), "frames_per_s_b32": round(32 / t32, 1),
                     "b32_speedup_per_frame": round(t1 * 32 / t32, 2)}  # fmt: skip
    if "vip_resnet50_bf16" in out:
        out["vip_resnet50_bf16_over_fp32_b32"] = round(
            out["vip_resnet50_bf16"]["frames_per_s_b32"]
            / out["vip_resnet50_fp32"]["frames_per_s_b32"], 2)  # fmt: skip
    return out


def drqv2_update(device: torch.device, repeats: int, quick: bool) -> dict[str, Any]:
    from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
    from video2reward.policies.replay import Batch

    n = 64 if quick else 256
    agent = DrQV2Agent(DrQV2Config(batch_size=n), (9, 84, 84), 4, 4, device=device)
    rng = np.random.default_rng(0)

    def batch() -> Batch:
        def obs() -> np.ndarray:
            return rng.integers(0, 256, (n, 9, 84, 84), dtype=np.uint8)

        return Batch(obs(), rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                     rng.normal(size=n).astype(np.float32), np.full(n, 0.97, np.float32), obs(),
                     rng.normal(size=(n, 4)).astype(np.float32),
                     rng.normal(size=(n, 4)).astype(np.float32))  # fmt: skip

    batches = [batch() for _ in range(4)]
    i = iter(range(1 << 30))
    t = timed(lambda: agent.update(batches[next(i) % 4], step=10_000, log=False), device, repeats)
    return {"batch": n, "update_ms": round(t * 1e3, 2), "updates_per_s": round(1 / t, 1)}


def reward_training(device: torch.device, repeats: int, quick: bool) -> dict[str, Any]:
    from video2reward.rewards.base import build_model, method_class
    from video2reward.rewards.data import dataset_from_store
    from video2reward.rewards.synthetic import synthetic_store

    size = 112 if quick else 224
    data = dataset_from_store(synthetic_store(8, 0, size_px=size, length=24, seed=1), size).demos()
    out: dict[str, Any] = {}
    for bf16 in (False, True) if device.type == "cuda" else (False,):
        cfg = dataclasses.replace(method_class("vip").config_cls(), image_size_px=size,
                                  encoder="resnet50", batch_size=8 if quick else 32)  # fmt: skip
        model = build_model(cfg, device)
        model.set_bf16(bf16)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        rng = np.random.default_rng(0)

        def step(m: Any = model, o: Any = opt, r: Any = rng) -> None:
            loss, _ = m.loss(m.sample_batch(data, r))
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

        t = timed(step, device, repeats)
        out["bf16" if bf16 else "fp32"] = {"batch": cfg.batch_size, "steps_per_s": round(1 / t, 2)}
    if "bf16" in out:
        out["bf16_over_fp32"] = round(out["bf16"]["steps_per_s"] / out["fp32"]["steps_per_s"], 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (to check the script)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (a dry run)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --device cpu --quick to check the script)")
        return 2
    torch.manual_seed(0)
    repeats = 5 if args.quick else 30
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick,
        "cpu_count": os.cpu_count(),
    }  # fmt: skip
    for name, fn in (("scoring", scoring), ("drqv2_update", drqv2_update),
                     ("reward_training", reward_training)):  # fmt: skip
        t = time.monotonic()
        result[name] = fn(device, repeats, args.quick)
        result[name]["wall_s"] = round(time.monotonic() - t, 1)
        print(f"{name}: {json.dumps(result[name])}", flush=True)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
