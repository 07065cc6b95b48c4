"""What the generative rewards cost to score on this machine, beside Rank2Reward in the same run.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python benchmarks/bench_generative_cost.py [--threads 1] [--repeats 20]

- batch 1: one new frame as a stream sees it. VIPER tokenizes the frame and runs its video
  model over one window (the earlier frames' codes are known); Diffusion Reward tokenizes it,
  runs its sampler (11 calls) on one history and its RND; Rank2Reward scores the frame.
- batch 32: a 32-frame episode through ``model.score`` (preparation included), per frame.

Weights are untrained (the cost does not depend on them). Prints one JSON; a 10 Hz control
loop needs a batch-1 frame in well under 100 ms. ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from video2reward.rewards.base import build_model, to_tensor
from video2reward.rewards.diffusion_reward import DiffusionRewardConfig
from video2reward.rewards.rank2reward import Rank2RewardConfig
from video2reward.rewards.viper import ViperConfig


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (32, 84, 84, 3), dtype=np.uint8)
    rows: dict[str, dict[str, float]] = {}

    r2r = build_model(Rank2RewardConfig(), cpu).eval()
    x1 = to_tensor(video[:1], cpu)
    with torch.inference_mode():
        one = _timeit(lambda: r2r._score(x1, None), args.repeats)
    ep = _timeit(lambda: r2r.score(video), args.repeats) / len(video)
    rows["rank2reward"] = {"batch1_ms": one * 1e3, "batch32_ms_per_frame": ep * 1e3}

    for name, cfg in (("viper", ViperConfig()),
                      ("viper (last-frame conditional)", ViperConfig(compute_joint=False))):
        m = build_model(cfg, cpu).eval()
        s, g, t = cfg.image_size_px, cfg.code_grid, cfg.seq_len
        frame = torch.rand(1, 3, s, s) * 255
        codes = torch.randint(0, cfg.codebook_size, (1, t, g, g))

        def stream_frame(m=m, frame=frame, codes=codes) -> None:
            m.tokenizer.encode(frame)
            m.token_logprobs(codes)

        with torch.inference_mode():
            one = _timeit(stream_frame, args.repeats)
        ep = _timeit(lambda m=m: m.score(video), max(2, args.repeats // 4)) / len(video)
        rows[name] = {"batch1_ms": one * 1e3, "batch32_ms_per_frame": ep * 1e3}

    dcfg = DiffusionRewardConfig()
    dr = build_model(dcfg, cpu).eval()
    frame = torch.rand(1, 3, 64, 64) * 255
    hist = torch.randint(0, dcfg.codebook_size, (1, dcfg.history, dcfg.code_grid, dcfg.code_grid))

    def dr_frame() -> None:
        dr.tokenizer.encode(frame)
        dr.neg_entropy(hist)
        dr.rnd.error(frame)

    with torch.inference_mode():
        one = _timeit(dr_frame, args.repeats)
    ep = _timeit(lambda: dr.score(video), max(2, args.repeats // 4)) / len(video)
    rows["diffusion_reward"] = {"batch1_ms": one * 1e3, "batch32_ms_per_frame": ep * 1e3}

    base = rows["rank2reward"]
    for r in rows.values():
        r["batch1_hz"] = 1e3 / r["batch1_ms"]
        r["batch32_frames_per_s"] = 1e3 / r["batch32_ms_per_frame"]
        r["batch1_x_rank2reward"] = r["batch1_ms"] / base["batch1_ms"]
        r["batch32_x_rank2reward"] = r["batch32_ms_per_frame"] / base["batch32_ms_per_frame"]
    out = {"threads": args.threads, "cpu_count": os.cpu_count(),
           "load_avg_1m": os.getloadavg()[0], "torch": torch.__version__,
           "methods": {k: {kk: round(v, 3) for kk, v in r.items()} for k, r in rows.items()}}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
