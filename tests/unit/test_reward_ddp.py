"""Reward training under torchrun (DDP, Gloo on the CPU) matches one process step for step and
resumes on another number of ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from video2reward.rewards import distributed
from video2reward.rewards.rank2reward import Rank2RewardConfig
from video2reward.rewards.synthetic import synthetic_store
from video2reward.rewards.train import TrainConfig, train

torch.set_num_threads(1)
SIZE = 40
BATCH = 8  # the global batch: 4 rows per rank on 2 ranks
STEPS = 4
MORE_STEPS = 7
# 2 ranks vs 1 process. The ranks' gradients are summed in another order than one process sums
# them, so the weights drift by float rounding, which Adam's first steps (~lr * sign) amplify.
# Measured: losses within 1.2e-7, weights within 2.1e-6 after 4 steps; without the gradient
# all-reduce the weights differ by 7e-3.
RTOL, ATOL = 1e-4, 1e-6  # per-step losses
W_RTOL, W_ATOL = 1e-5, 1e-5  # weights after STEPS steps
OVERRIDES = {"image_size_px": SIZE, "embed_dim": 8, "hidden_dim": 16, "batch_size": BATCH,
             "seed": 3, "lr": 1e-3}


def _gloo_runs() -> str:
    if not dist.is_available() or not dist.is_gloo_available():
        return "this torch build has no torch.distributed Gloo backend"
    return ""


pytestmark = pytest.mark.skipif(bool(_gloo_runs()), reason=_gloo_runs() or "n/a")


def _losses(out: Path) -> dict[int, float]:
    with (out / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _torchrun_train(data: Path, out: Path, nproc: int,
                    steps: int) -> subprocess.CompletedProcess[str]:
    """``v2r reward train`` of the tiny Rank2Reward under torchrun with ``nproc`` ranks."""
    args = [f"{k}={v}" for k, v in {"method": "rank2reward", "data": data, "out": out,
                                    "log_every": 1, "ckpt_every": 2, "threads": 1,
                                    "device": "cpu", "progress_bar": "false"}.items()]
    args += [f"method.{k}={v}" for k, v in {**OVERRIDES, "steps": steps}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for v in distributed.ENV_VARS:  # the launcher sets these, not the test's environment
        env.pop(v, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "video2reward.cli.main", "reward", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          check=False)


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demos.zarr"
    synthetic_store(n_expert=6, n_failed=0, size_px=SIZE, length=12, seed=0, path=str(path))
    return path


def test_two_ranks_match_one_process_and_resume_on_one(demos: Path, tmp_path: Path) -> None:
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    done = _torchrun_train(demos, ddp_out, nproc=2, steps=STEPS)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    summary = json.loads((ddp_out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS

    cfg = Rank2RewardConfig(**OVERRIDES, steps=STEPS)
    tcfg = dict(log_every=1, ckpt_every=2, progress_bar=False, device="cpu")
    train(cfg, TrainConfig(data=str(demos), out=str(single_out), **tcfg))

    ddp, single = _losses(ddp_out), _losses(single_out)
    assert sorted(ddp) == sorted(single) == list(range(STEPS))  # rank 0 alone wrote rows
    np.testing.assert_allclose([ddp[s] for s in range(STEPS)],
                               [single[s] for s in range(STEPS)], rtol=RTOL, atol=ATOL)
    assert len(set(single.values())) > 1  # the steps trained on different batches
    # The weights after STEPS Adam steps: averaged gradients, not each rank's own.
    ddp_w, single_w = (torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
                       ["state_dict"] for out in (ddp_out, single_out))
    for name, w in single_w.items():
        torch.testing.assert_close(ddp_w[name], w, rtol=W_RTOL, atol=W_ATOL, msg=name)

    # Resume both runs in one process: the 2-rank checkpoint continues from its step, on the
    # same batches as the 1-process run draws.
    before = (ddp_out / "metrics.csv").read_text()
    more = Rank2RewardConfig(**OVERRIDES, steps=MORE_STEPS)
    for out in (ddp_out, single_out):
        train(more, TrainConfig(data=str(demos), out=str(out), **tcfg))
    ddp, single = _losses(ddp_out), _losses(single_out)
    assert sorted(ddp) == list(range(MORE_STEPS))
    # continued at STEPS: the 2-rank rows are kept as written (a restart would rewrite them)
    assert (ddp_out / "metrics.csv").read_text().startswith(before)
    np.testing.assert_allclose([ddp[s] for s in range(MORE_STEPS)],
                               [single[s] for s in range(MORE_STEPS)], rtol=RTOL, atol=ATOL)
    state = torch.load(ddp_out / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == MORE_STEPS
    assert json.loads((ddp_out / "train_summary.json").read_text())["world_size"] == 1


def test_global_batch_must_split_evenly(demos: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = Rank2RewardConfig(**{**OVERRIDES, "batch_size": 7}, steps=2)
    with pytest.raises(ValueError, match="batch_size=7 is the global batch and must divide"):
        train(cfg, TrainConfig(data=str(demos), out=str(tmp_path / "odd"), device="cpu"))
    assert not dist.is_initialized()  # refused before joining a process group
    assert not (tmp_path / "odd").exists()


def test_split_batch_keeps_each_ranks_rows() -> None:
    frames = torch.arange(8 * 3).view(8, 3)
    per_frame = torch.arange(16)  # 2 rows per sample, sample-major
    batch = {"frames": frames, "ids": per_frame, "scale": torch.tensor(2.0), "name": "x"}
    parts = [distributed.split_batch(batch, 8, distributed.Ranks(2, r, r)) for r in range(2)]
    assert torch.equal(torch.cat([p["frames"] for p in parts]), frames)
    assert torch.equal(parts[1]["ids"], torch.arange(8, 16))
    assert parts[0]["scale"] is batch["scale"] and parts[1]["name"] == "x"
    with pytest.raises(ValueError, match="not a multiple of batch_size=8"):
        distributed.split_batch({"bad": torch.zeros(6)}, 8, distributed.Ranks(2, 0, 0))


def test_detect_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in distributed.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    assert distributed.detect() is None  # a plain process: no process group
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.detect() is None  # one rank needs none either
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK is not set"):
        distributed.detect()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.detect() == distributed.Ranks(4, 3, 1)
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        distributed.rank_device("cuda:0", distributed.Ranks(4, 3, 1))
    assert distributed.rank_device("cpu", distributed.Ranks(4, 3, 1)).type == "cpu"
