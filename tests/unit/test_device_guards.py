"""CPU-side guards for the GPU path: no CUDA needed.

PyTorch refuses, on CUDA only, a CPU generator drawing for a CUDA tensor, a CPU tensor added to
a CUDA one, and a generator state that is not a CPU byte tensor. Here a second device stands in
for CUDA: ``meta`` (shapes, no data), on which PyTorch raises for mixed devices and refuses
generator states too, and a TorchFunctionMode that applies CUDA's generator rule everywhere.
Host reads (what would be a host/device synchronisation on CUDA) are counted by another mode.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from video2reward.compute.device import check_device_name, host_scalars, resolve_device
from video2reward.policies.drqv2 import DrQV2Agent, DrQV2Config, random_shift, sample_action
from video2reward.policies.replay import Batch

SMALL = DrQV2Config(batch_size=8, feature_dim=16, hidden_dim=32, num_expl_steps=10)
OBS = (9, 20, 20)
META = torch.device("meta")


class GeneratorRule(TorchFunctionMode):
    """CUDA's rule, enforced on every device: a generator draws only on its own device."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        gen = kwargs.get("generator")
        drew = isinstance(gen, torch.Generator) and isinstance(out, torch.Tensor)
        if drew and out.device != gen.device:
            raise RuntimeError(
                f"{getattr(func, '__name__', func)}: a {gen.device} generator drew a "
                f"tensor on {out.device} (CUDA refuses this)"
            )
        return out


# What would make the host wait for the device on CUDA: reading values back, and ops whose
# output size depends on values.
HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
              "nonzero", "masked_select", "unique", "argwhere"}  # fmt: skip


def _in_torch_optim() -> bool:
    """Unfused Adam reads its step counter, a CPU tensor on every device: not a device read."""
    f = sys._getframe(2)
    while f is not None:
        if f"torch{os.sep}optim{os.sep}" in f.f_code.co_filename:
            return True
        f = f.f_back
    return False


class HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and not _in_torch_optim():
            self.calls.append(name)
        if name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool
            for a in (args[1] if isinstance(args[1], tuple) else (args[1],))
        ):
            self.calls.append("boolean mask index")
        return func(*args, **(kwargs or {}))


def make_batch(rng: np.random.Generator, n: int = 8, p: int = 3) -> Batch:
    return Batch(
        obs=rng.integers(0, 256, (n, *OBS), dtype=np.uint8),
        action=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32),
        discount=np.full(n, 0.97, np.float32),
        next_obs=rng.integers(0, 256, (n, *OBS), dtype=np.uint8),
        proprio=rng.normal(size=(n, p)).astype(np.float32),
        next_proprio=rng.normal(size=(n, p)).astype(np.float32),
    )


# ------------------------------------------------------------------- crash 1: random shift
def test_random_shift_draws_with_its_generator_then_moves_to_the_images_device() -> None:
    x = torch.zeros(4, *OBS, device=META)
    with GeneratorRule():
        out = random_shift(x, 4, generator=torch.Generator().manual_seed(0))
    assert out.device == META and out.shape == x.shape


def test_agent_augmentation_and_staging_run_on_a_second_device() -> None:
    agent = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3, device=META)
    staged = agent.to_device(make_batch(np.random.default_rng(0)))
    obs, *_, next_obs, _p, _next_p, is_demo = staged.ready()
    assert is_demo is None  # no demonstration rows in a plain replay batch
    assert all(t.device == META for t in staged.tensors if t is not None)
    with GeneratorRule():
        h, next_h = agent._encode_pair(obs, next_obs)  # the update's random shift
    assert h.device == META and next_h.device == META


# ------------------------------------------------------------------- crash 2: noise
def test_exploration_noise_is_moved_to_the_actions_device() -> None:
    mean = torch.zeros(8, 4, device=META)
    with GeneratorRule():
        a = sample_action(mean, 0.5, 0.3, torch.Generator().manual_seed(0))
    assert a.device == META


@pytest.mark.parametrize("step", [0, 1000])  # uniform exploration, then the noisy policy
def test_policy_acts_on_a_second_device(step: int) -> None:
    agent = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3, device=META)
    obs = torch.zeros(OBS, dtype=torch.uint8)
    with GeneratorRule():
        a = agent.policy.act_tensor(obs, np.zeros(3, np.float32), step, eval_mode=False)
        snap = agent.policy_snapshot(seed=1).act_tensor(obs, np.zeros(3), step, eval_mode=False)
    assert a.device == META and a.shape == (4,) and snap.device == META


# ------------------------------------------------------------------- crash 3: checkpoints
def test_checkpoint_with_rng_state_loads_into_an_agent_on_another_device(tmp_path: Path) -> None:
    cpu = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3, seed=3)
    cpu.update(make_batch(np.random.default_rng(1)), step=50)
    cpu.save(tmp_path / "agent.pt")
    other = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3, seed=9, device=META)
    other.load(tmp_path / "agent.pt")  # CUDA refuses RNG states mapped to the device likewise
    assert torch.equal(other._update_gen.get_state(), cpu._update_gen.get_state())
    assert torch.equal(other._act_gen.get_state(), cpu._act_gen.get_state())
    assert other.num_updates == 1
    assert next(other.critic.parameters()).device == META
    # A state dict whose RNG tensors were mapped to a device (torch.load(map_location=...))
    # loads too: the generator states go back to the CPU.
    state = torch.load(tmp_path / "agent.pt", map_location="cpu", weights_only=True)
    back = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3, seed=9)
    back.load_state_dict(state)
    assert torch.equal(back._update_gen.get_state(), cpu._update_gen.get_state())


# ------------------------------------------------------------------- host synchronisations
def test_update_reads_back_from_the_device_only_when_logging() -> None:
    agent = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3)
    rng = np.random.default_rng(0)
    with HostReads() as quiet:
        assert agent.update(make_batch(rng), step=100, log=False) == {}
    assert quiet.calls == []
    with HostReads() as logged:
        metrics = agent.update(make_batch(rng), step=100, log=True)
    assert logged.calls == ["tolist"]  # all metrics in one copy
    assert {"critic_loss", "actor_loss", "nonfinite_updates"} <= metrics.keys()
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())


def test_acting_reads_back_only_the_action() -> None:
    agent = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3)
    with HostReads() as reads:
        agent.act(np.zeros(OBS, np.uint8), np.zeros(3, np.float32), step=100, eval_mode=False)
    assert reads.calls == ["cpu", "numpy"]


def test_nonfinite_loss_skips_the_optimizer_step_without_a_host_read() -> None:
    agent = DrQV2Agent(SMALL, OBS, action_dim=4, proprio_dim=3)
    b = make_batch(np.random.default_rng(2))
    b.reward[:] = 3e38  # finite data whose squared TD error overflows: loss = inf
    critic = [p.detach().clone() for p in agent.critic.parameters()]
    encoder = [p.detach().clone() for p in agent.encoder.parameters()]
    with HostReads() as reads:
        agent.update(b, step=100, log=False)
    assert reads.calls == []
    assert all(torch.equal(a, p) for a, p in zip(critic, agent.critic.parameters(), strict=True))
    assert all(torch.equal(a, p) for a, p in zip(encoder, agent.encoder.parameters(), strict=True))
    assert all(float(s["step"]) == 0 for s in agent.critic_opt.state.values())  # moments too
    assert agent.skipped_updates == 1
    m = agent.update(make_batch(np.random.default_rng(3)), step=100)  # finite again: trains
    assert m["nonfinite_updates"] == 1.0
    assert not all(
        torch.equal(a, p) for a, p in zip(critic, agent.critic.parameters(), strict=True)
    )


def _demos() -> Any:
    from video2reward.rewards.data import dataset_from_store
    from video2reward.rewards.synthetic import synthetic_store

    return dataset_from_store(synthetic_store(4, 0, size_px=32, length=16, seed=0), 32).demos()


def test_reward_training_steps_never_read_the_device() -> None:
    from video2reward.rewards.base import METHODS, build_model, method_class
    from video2reward.rewards.tokenizer import TokenRewardModel

    data = _demos()
    extra = {"diffusion_reward": {"expl_weight": 0.0}}  # its RND reads 64 px frames
    for method in METHODS:
        cls = method_class(method)
        cfg = cls.config_cls(image_size_px=32, batch_size=4, **extra.get(method, {}))
        model = build_model(cfg, torch.device("cpu"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        phases = [None]
        if isinstance(model, TokenRewardModel):
            # The tokenizer phase reads the device 2-3 times a step: vector_quantize_pytorch's
            # k-means-initialised and dead-code checks (`if self.initted`, `torch.any(expired)`,
            # `mask.sum().item()`). The video model's steps read nothing once the first one has
            # encoded the demos.
            phases = ["video", "video"]
            model._step = cfg.tokenizer_steps
        for _ in phases:
            with HostReads() as reads:
                loss, metrics = model.loss(model.sample_batch(data, rng))
                opt.zero_grad()
                loss.backward()
                opt.step()
        assert reads.calls == [], method
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values()), method
        assert set(host_scalars(dict(metrics))) == set(metrics)


def test_rank2reward_discriminator_update_keeps_expert_frames_on_the_device() -> None:
    from video2reward.rewards.rank2reward import Rank2Reward, Rank2RewardConfig

    data = _demos()
    model = Rank2Reward(Rank2RewardConfig(image_size_px=32, batch_size=4))
    model.calibrate(data)
    with HostReads() as reads:
        m = model.update(data.frames[:6])
    assert reads.calls == ["tolist"]  # the two metrics, read once; the bank stays put
    assert set(m) == {"disc_loss", "disc_accuracy"}


# ------------------------------------------------------------------- device names
def test_device_names() -> None:
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:3"):
        check_device_name(ok)
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="cuda:N"):
            check_device_name(bad)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
