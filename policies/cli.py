r"""``v2r rl train``: DrQ-v2 on a twin task, with the oracle or a learned reward.

    v2r rl train task=reach reward=oracle agent=cpu out=runs/rl_reach
    v2r rl train task=reach reward=rank2reward reward.ckpt=runs/r2r agent=cpu
    v2r rl train task=reach agent=cpu_features features_ckpt=runs/vip reward=vip \
        reward.ckpt=runs/vip                              # VIP's frozen-encoder setting
    v2r rl train out=runs/rl_reach agent=cpu resume=true

``agent=<name>`` picks configs/rl_agent/<name>.yaml (gpu: the paper's full size, the default;
cpu: 48 px pixels sized for 2 cores; cpu_features: frozen reward-model embedding);
``reward=<name>`` picks configs/rl_reward/<name>.yaml (oracle, vip, rank2reward, model). Every
field can be overridden: ``agent.batch_size=128``, ``success_bonus=1``, ``threads=1``.
``v2r`` itself re-runs under tcmalloc where installed (measured: most DrQ-v2 update runs on
the CPU 1.3-2.8x faster; glibc's allocator page-faults on every step's activations).
"""

from __future__ import annotations

import json
import sys

from video2reward.configs.compose import ConfigError, compose, run_cli, to_dataclass

_GROUPS = {"agent": "rl_agent", "reward": "rl_reward"}


def _group_overrides(overrides: list[str]) -> list[str]:
    """``agent=cpu`` / ``reward=vip`` select a config file (Hydra groups rl_agent, rl_reward)."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in _GROUPS:
            o = f"{_GROUPS[key]}={value}"
        out.append(o)
    return out


def _train(overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        print(__doc__)
        return 0
    from omegaconf import OmegaConf

    cfg = compose("rl_train", _group_overrides(overrides))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required option {missing[0]}=...")
    raw = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError("rl_train config is not a mapping")

    import torch
    from video2reward.policies.train import TrainConfig, train

    train_cfg = to_dataclass(TrainConfig, raw)
    if (
        train_cfg.device != "cpu"
        and not torch.cuda.is_available()
        and train_cfg.agent.batch_size >= 256
    ):
        print(
            "note: no GPU; this is the full-size (GPU) configuration. On 2 CPU cores use agent=cpu "
            "(or agent=cpu_features features_ckpt=<reward run>).",
            file=sys.stderr,
        )
    try:
        summary = train(train_cfg)
    except FileExistsError as e:
        raise ConfigError(str(e)) from e
    print(json.dumps(summary))
    return 0


def train_main(argv: list[str]) -> int:
    return run_cli(_train, argv)
