"""The CUDA path: DrQ-v2 and every reward method train, save, load and score on a GPU.

Skipped without CUDA (CI has none); ``benchmarks/gpu_smoke.sh`` runs these on a GPU machine.
``V2R_GPU_TEST_DEVICE=cpu`` runs the same tests on the CPU, to check the tests themselves
where no GPU is at hand (the sync-debug test is skipped there: it is CUDA's own tool).

Tolerances, GPU against CPU (the same weights): cuDNN and cuBLAS use TF32 and other kernels
than the CPU, so scores agree to ``atol=rtol=2e-2`` on progress and reward (progress runs
~0..1); bf16 scoring agrees with fp32 to ``atol=0.05`` on progress.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from video2reward.compute.device import set_deterministic
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config
from video2reward.policies.replay import Batch
from video2reward.rewards.base import METHODS, load_reward_model, method_class
from video2reward.rewards.data import dataset_from_store
from video2reward.rewards.stream import RewardStream, RewardStreamConfig
from video2reward.rewards.synthetic import synthetic_store
from video2reward.rewards.train import TrainConfig, train

DEVICE = torch.device(os.environ.get("V2R_GPU_TEST_DEVICE", "cuda"))
CUDA = DEVICE.type == "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
SIZE = 48
CFG = DrQV2Config(batch_size=64, num_expl_steps=10)


def make_batch(rng: np.random.Generator, obs_shape: tuple[int, ...], n: int = 64) -> Batch:
    def obs() -> np.ndarray:
        if len(obs_shape) == 3:
            return rng.integers(0, 256, (n, *obs_shape), dtype=np.uint8)
        return rng.normal(size=(n, *obs_shape)).astype(np.float32)

    return Batch(obs(), rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                 rng.normal(size=n).astype(np.float32), np.full(n, 0.97, np.float32), obs(),
                 rng.normal(size=(n, 4)).astype(np.float32),
                 rng.normal(size=(n, 4)).astype(np.float32))  # fmt: skip


@pytest.mark.parametrize("obs_shape", [(9, 84, 84), (64,)], ids=["pixels", "features"])
def test_drqv2_updates_and_acts(obs_shape: tuple[int, ...]) -> None:
    agent = DrQV2Agent(CFG, obs_shape, 4, 4, device=DEVICE)
    rng = np.random.default_rng(0)
    for _ in range(3):
        assert agent.update(make_batch(rng, obs_shape), step=100, log=False) == {}
    staged = agent.to_device(make_batch(rng, obs_shape))  # prefetched, as the learner does
    m = agent.update(staged, step=100, log=True)
    assert all(np.isfinite(v) for v in m.values()) and m["nonfinite_updates"] == 0
    assert all(p.device.type == DEVICE.type for p in agent.critic.parameters())
    one = make_batch(rng, obs_shape, n=1)
    for step in (0, 1000):  # exploring uniformly, then the noisy policy past exploration
        a = agent.act(one.obs[0], one.proprio[0], step=step, eval_mode=False)  # type: ignore[index]
        assert a.dtype == np.float32 and a.shape == (4,) and np.all(np.abs(a) <= 1)
    snap = agent.policy_snapshot(seed=1)
    snap.sync_from(agent)
    a = snap.act(one.obs[0], one.proprio[0], step=1000, eval_mode=True)  # type: ignore[index]
    b = agent.act(one.obs[0], one.proprio[0], step=1000, eval_mode=True)  # type: ignore[index]
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not CUDA, reason="torch.cuda.set_sync_debug_mode is CUDA's")
def test_drqv2_update_never_synchronises_without_logging() -> None:
    agent = DrQV2Agent(CFG, (9, 84, 84), 4, 4, device=DEVICE)
    rng = np.random.default_rng(0)
    agent.update(make_batch(rng, (9, 84, 84)), step=100, log=True)  # warm-up (allocations)
    staged = agent.to_device(make_batch(rng, (9, 84, 84)))
    torch.cuda.set_sync_debug_mode("error")
    try:
        agent.update(staged, step=100, log=False)
        staged = agent.to_device(make_batch(rng, (9, 84, 84)))
        agent.update(staged, step=100, log=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_drqv2_checkpoint_from_the_gpu_loads_on_gpu_and_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    batches = [make_batch(rng, (9, 84, 84)) for _ in range(3)]
    set_deterministic(True)
    try:
        a = DrQV2Agent(CFG, (9, 84, 84), 4, 4, seed=5, device=DEVICE)
        for b in batches[:2]:
            a.update(b, step=50, log=False)
        a.save(tmp_path / "agent.pt")
        expected = a.update(batches[2], step=52)
        again = DrQV2Agent(CFG, (9, 84, 84), 4, 4, seed=9, device=DEVICE)
        again.load(tmp_path / "agent.pt")
        assert again.update(batches[2], step=52) == expected  # resume: the same next update
    finally:
        set_deterministic(False)
    cpu = DrQV2Agent(CFG, (9, 84, 84), 4, 4, seed=9, device="cpu")
    cpu.load(tmp_path / "agent.pt")
    fresh = DrQV2Agent(CFG, (9, 84, 84), 4, 4, seed=9, device=DEVICE)
    fresh.load(tmp_path / "agent.pt")
    one = batches[0]
    on_cpu = cpu.act(one.obs[0], one.proprio[0], step=1000, eval_mode=True)  # type: ignore[index]
    on_dev = fresh.act(one.obs[0], one.proprio[0], step=1000, eval_mode=True)  # type: ignore[index]
    np.testing.assert_allclose(on_dev, on_cpu, atol=2e-3)
    assert np.isfinite(list(cpu.update(batches[2], step=52).values())).all()


# --------------------------------------------------------------------------- reward models
STEPS = {"vip": 30, "uvd": 30, "tcn": 30, "hold_r": 30, "hold_c": 20, "rank2reward": 30}
EXTRA = {"uvd": {"min_interval": 6}, "hold_c": {"clip_frames": 10}}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpu") / "demos.zarr"
    synthetic_store(n_expert=8, n_failed=0, size_px=SIZE, length=20, seed=0, path=str(path))
    return path


@pytest.mark.parametrize("method", sorted(METHODS))
def test_reward_method_trains_saves_and_scores_like_on_the_cpu(
    method: str, demos: Path, tmp_path: Path
) -> None:
    cls = method_class(method)
    cfg = cls.config_cls(image_size_px=SIZE, batch_size=8, steps=STEPS[method],
                         **EXTRA.get(method, {}))  # type: ignore[arg-type]  # fmt: skip
    model = train(cfg, TrainConfig(data=str(demos), out=str(tmp_path), device=str(DEVICE),
                                   progress_bar=False, log_every=10, ckpt_every=10))  # fmt: skip
    assert model.device.type == DEVICE.type
    video = dataset_from_store(synthetic_store(2, 1, size_px=SIZE, length=20, seed=1), SIZE)
    on_dev = model.score(video.episode(0))
    on_cpu = load_reward_model(tmp_path, torch.device("cpu")).score(video.episode(0))
    np.testing.assert_allclose(on_dev.progress, on_cpu.progress, atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(on_dev.reward, on_cpu.reward, atol=2e-2, rtol=2e-2)
    if hasattr(model, "update"):  # Rank2Reward's online discriminator step
        m = model.update(video.episode(1))
        assert set(m) == {"disc_loss", "disc_accuracy"} and np.isfinite(m["disc_loss"])


@pytest.mark.skipif(not CUDA, reason="bf16 autocast is for CUDA")
def test_bf16_resnet_scores_like_fp32(demos: Path, tmp_path: Path) -> None:
    cls = method_class("vip")
    cfg = cls.config_cls(image_size_px=64, encoder="resnet18", batch_size=8, steps=10)
    model = train(cfg, TrainConfig(data=str(demos), out=str(tmp_path), device=str(DEVICE),
                                   progress_bar=False, bf16=True))  # fmt: skip
    video = dataset_from_store(synthetic_store(1, 0, size_px=64, length=20, seed=1), 64)
    half = model.score(video.episode(0))
    model.set_bf16(False)
    full = model.score(video.episode(0))
    np.testing.assert_allclose(half.progress, full.progress, atol=0.05)


def test_reward_stream_scores_while_the_discriminator_trains(demos: Path, tmp_path: Path) -> None:
    cls = method_class("rank2reward")
    cfg = dataclasses.replace(cls.config_cls(image_size_px=SIZE, batch_size=8, steps=10))
    train(cfg, TrainConfig(data=str(demos), out=str(tmp_path), device=str(DEVICE),
                           progress_bar=False))  # fmt: skip
    video = dataset_from_store(synthetic_store(4, 0, size_px=SIZE, length=20, seed=2), SIZE)
    frames = video.frames
    latency: dict[bool, list[float]] = {}
    for online in (False, True):
        stream = RewardStream(RewardStreamConfig(
            ckpt=str(tmp_path), device=str(DEVICE), online_updates=online, disc_every_frames=2,
            disc_batch=8, disc_min_frames=16, agent_buffer=64))  # fmt: skip
        try:
            times = []
            for i in range(len(frames)):
                t0 = time.perf_counter()
                out = stream.score([(i, frames[i])])
                times.append(time.perf_counter() - t0)
                assert np.isfinite(out[0].reward) and np.isfinite(out[0].progress)
            if online:
                deadline = time.monotonic() + 30
                while stream.version == 0 and time.monotonic() < deadline:
                    stream.score([(0, frames[0])])
                assert stream.version > 0, "the discriminator never updated"
            latency[online] = times[10:]
        finally:
            stream.close()
    # Reported, not asserted (tests never assert on wall-clock time): gpu_smoke.sh prints it.
    for online, t in latency.items():
        print(f"RewardStream score latency, online_updates={online}: "
              f"p50 {1e3 * np.median(t):.2f} ms, p99 {1e3 * np.quantile(t, 0.99):.2f} ms")
