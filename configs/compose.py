"""Hydra composition for the ``v2r`` subcommands, without Hydra taking over the process.

    cfg = compose("sim_demos", ["task=push", "episodes=10"])   # DictConfig
    demo_cfg = to_dataclass(DemoConfig, cfg)                  # validated, frozen

Configs live beside this module in ``configs/`` (installed as ``video2reward.configs``); the
subcommands of every folder compose them here, so no domain module imports ``cli/``. Malformed
overrides, unknown keys and wrong types raise :class:`ConfigError` with the offending key named.

The dataclass a file builds (:data:`DATACLASSES`) is the single source of its defaults: the file
carries only what its preset changes, so an override may name any field of the dataclass, listed
in the file or not (``key=value`` is applied as Hydra's add-or-override ``++key=value``, and
:func:`to_dataclass` refuses a key that is no field).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
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


# The frozen dataclass each config file is turned into (module:class). Its field defaults are
# the defaults; tests/unit/test_config_single_source.py checks every key of the file names a
# field and none restates a default.
DATACLASSES: dict[str, str] = {
    "calib_handeye": "video2reward.calibration.handeye_run:HandEyeRunConfig",
    "calib_intrinsics": "video2reward.calibration.cli:IntrinsicsCliConfig",
    "calib_workspace": "video2reward.calibration.cli:WorkspaceCliConfig",
    "hw_camera_record": "video2reward.sim.emulator_camera:RecordConfig",
    "record_export": "video2reward.robot.recorder_cli:ExportConfig",
    "record_import": "video2reward.data.video_import:ImportConfig",
    "record_teleop": "video2reward.robot.teleop_session:TeleopRecordConfig",
    "policy_vpdd": "video2reward.policies.cli:PolicyCliConfig",
    "reward_train": "video2reward.rewards.train:TrainConfig",  # + method: its _target_
    "rl_train": "video2reward.policies.train:TrainConfig",
    "sim_demos": "video2reward.sim.demos:DemoConfig",
    "sim_learn": "video2reward.sim.learn:LearnConfig",
}


def dataclass_of(config_name: str) -> type:
    """The dataclass ``config_name`` builds (imported here, so heavy modules load on demand)."""
    module, _, name = DATACLASSES[config_name].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{DATACLASSES[config_name]} is not a dataclass")
    return cls


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default (``dataclasses.MISSING`` for a required field)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of ``cls``, nested dataclasses as dicts; required fields left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = field_default(f)
        if value is dataclasses.MISSING:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclass_defaults(type(value))
        out[f.name] = value
    return out


def config_groups() -> set[str]:
    """Hydra's config groups: the folders of ``configs/`` (``rl_agent``, ``reward_method``...)."""
    root = importlib.resources.files("video2reward.configs")
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}


def field_overrides(overrides: Sequence[str], groups: set[str]) -> list[str]:
    """``key=value`` -> ``++key=value`` (add or override) unless ``key`` picks a group or is
    already prefixed: a field the file does not list can still be set."""
    out = []
    for o in overrides:
        key = o.partition("=")[0]
        plain = not o.startswith(("+", "~")) and "@" not in key and not key.startswith("hydra")
        out.append(f"++{o}" if plain and key.split(".")[0] not in groups else o)
    return out


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    schema = config_name in DATACLASSES
    if schema:
        overrides = field_overrides(overrides, config_groups())
    try:
        with initialize_config_module(config_module="video2reward.configs", version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        if not schema:
            return cfg
        # The file and the overrides over the dataclass's defaults: every option is present
        # (for interpolations such as rl_train's out: runs/rl_${task}, and for --cfg prints).
        merged = OmegaConf.merge(dataclass_defaults(dataclass_of(config_name)), cfg)
        if not isinstance(merged, DictConfig):
            raise ConfigError(f"config {config_name!r} is not a mapping")
        return merged
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
