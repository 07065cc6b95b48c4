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
from dataclasses import dataclass, field
from typing import Any

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


# --------------------------------------------------------------------------- VPDD
@dataclass(frozen=True)
class PolicyCliConfig:
    """``v2r policy pretrain|finetune|eval|label`` (VPDD, policies/vpdd.py)."""

    data: list[str] = field(default_factory=list)  # pretrain: videos or episode stores
    demos: str = ""  # finetune: an episode store with actions; label: copied first (optional)
    ckpt: str = ""  # finetune: the pre-trained model ('' = none: no video pre-training); eval
    out: str = "runs/vpdd"
    max_demos: int = 0  # finetune, label: the first N successful demos (0 = all)
    videos: str = ""  # label: a store of robot videos (images + proprio; actions not needed)
    skip_videos: int = 0  # label: leave out the videos' first N successful episodes
    task: str = "reach"  # eval: the twin task
    episodes: int = 20  # eval: episodes, by the twin's predicate (evaluation only)
    seed: int = 0  # eval: scenes from seed + 10000
    threads: int = 2  # torch threads
    model: Any = None  # VPDDConfig fields (model.finetune_steps=500, ...)

    def __post_init__(self) -> None:
        from video2reward.policies.vpdd import VPDDConfig

        if self.model is None or isinstance(self.model, dict):
            object.__setattr__(self, "model", VPDDConfig(**(self.model or {})))
        if isinstance(self.data, str):
            object.__setattr__(self, "data", [self.data] if self.data else [])
        if self.threads < 0 or self.episodes < 1 or self.max_demos < 0 or self.skip_videos < 0:
            raise ValueError("threads >= 0, episodes >= 1, max_demos >= 0 and skip_videos >= 0 "
                             "are needed")  # fmt: skip


def _policy(stage: str, overrides: list[str], flags: list[str]) -> int:
    if "--help" in flags or "-h" in flags:
        from video2reward.policies import vpdd

        print(vpdd.__doc__)
        print("options (key=value):", ", ".join(PolicyCliConfig.__dataclass_fields__),
              "and model.<VPDDConfig field>")  # fmt: skip
        return 0
    import torch
    from video2reward.policies.demos import DemoError
    from video2reward.policies.vpdd import evaluate_twin, finetune, label_store, load, pretrain

    # model=<name> picks configs/policy_model/<name>.yaml (cpu, paper)
    overrides = [f"policy_model={o.partition('=')[2]}" if o.partition("=")[0] == "model" else o
                 for o in overrides]  # fmt: skip
    try:
        cfg = to_dataclass(PolicyCliConfig, compose("policy_vpdd", overrides))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if stage == "pretrain":
            if not cfg.data:
                raise ConfigError("pretrain needs data=<videos or stores> (data=[a.zarr,b.zarr])")
            pretrain(cfg.model, cfg.data, cfg.out)
            result: dict[str, Any] = {"out": cfg.out, "stage": "pretrained"}
        elif stage == "finetune":
            if not cfg.demos:
                raise ConfigError("finetune needs demos=<episode store with actions>")
            # with a checkpoint, the model.* options named on the command line change its config
            named = {o.partition("=")[0][len("model."):] for o in overrides
                     if o.startswith("model.")}  # fmt: skip
            finetune(cfg.ckpt or None, cfg.demos, cfg.out, cfg.model, cfg.max_demos,
                     changes={k: getattr(cfg.model, k) for k in named})
            result = {"out": cfg.out, "stage": "finetuned"}
        elif stage == "label":
            if not (cfg.ckpt and cfg.videos and any(o.startswith("out=") for o in overrides)):
                raise ConfigError("label needs ckpt=<fine-tuned VPDD run> videos=<store> "
                                  "out=<new store> (and optionally demos=<store with actions>)")
            info = label_store(cfg.ckpt, cfg.videos, cfg.out, cfg.demos or None, cfg.max_demos,
                               cfg.skip_videos, cfg.seed)  # fmt: skip
            result = {"out": cfg.out, **info,
                      "use": f"v2r rl train demos.path={cfg.out} demos.pretrain_updates=1000 "
                             f"action_repeat={info['frame_skip']}"}
        else:
            if not cfg.ckpt:
                raise ConfigError("eval needs ckpt=<fine-tuned VPDD run>")
            result = {"ckpt": cfg.ckpt, "task": cfg.task,
                      **evaluate_twin(load(cfg.ckpt), cfg.task, cfg.episodes, cfg.seed)}
    except (DemoError, ValueError, FileExistsError) as e:  # CheckpointError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def pretrain_main(argv: list[str]) -> int:
    return run_cli(lambda o, f: _policy("pretrain", o, f), argv)


def finetune_main(argv: list[str]) -> int:
    return run_cli(lambda o, f: _policy("finetune", o, f), argv)


def eval_main(argv: list[str]) -> int:
    return run_cli(lambda o, f: _policy("eval", o, f), argv)


def label_main(argv: list[str]) -> int:
    return run_cli(lambda o, f: _policy("label", o, f), argv)
