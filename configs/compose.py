"""Hydra composition for the ``v2r`` subcommands, without Hydra taking over the process.

    cfg = compose("sim_demos", ["task=push", "episodes=10"])   # DictConfig
    demo_cfg = to_dataclass(DemoConfig, cfg)                  # validated, frozen

Configs live beside this module in ``configs/`` (installed as ``video2reward.configs``); the
subcommands of every folder compose them here, so no domain module imports ``cli/``. Malformed
overrides, unknown keys and wrong types raise :class:`ConfigError` with the offending key named.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


class ConfigError(ValueError):
    """A config or override the user must fix."""


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from ``--flags``."""
    overrides = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    bad = [a for a in overrides if "=" not in a]
    if bad:
        raise ConfigError(f"expected key=value overrides, got {bad[0]!r}")
    return overrides, flags


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="video2reward.configs", version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"config {config_name!r}: {e}") from e


def to_dataclass(cls: type[T], cfg: DictConfig | dict[str, Any], **extra: Any) -> T:
    """Build the frozen dataclass ``cls`` from a config, rejecting unknown keys."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    raw = {str(k): v for k, v in raw.items()} | extra
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no option {unknown[0]!r}; options: {sorted(fields)}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def run_cli(fn: Any, argv: Sequence[str]) -> int:
    """Call ``fn(overrides, flags)``; print ConfigError cleanly and return exit code 2."""
    try:
        overrides, flags = split_args(argv)
        return int(fn(overrides, flags) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
