"""One source of truth per configuration: the dataclass defaults.

    pytest tests/unit/test_config_single_source.py

- ROS parameters that are fields of a config dataclass take that field's default (``field_param``
  in the node's table), and a node built from its defaults builds the dataclass's defaults.
- Every key of a ``v2r`` config file (and of its group files) names a field of its dataclass
  (``configs.compose.DATACLASSES``) and none restates that field's default; the learner node's
  parameter files name node parameters and restate none of their defaults.
- The learner node's CPU preset uses the twin trainer's CPU agent sizes.
- An override may name any field, listed in the file or not; an unknown one is refused.

Run by hand once: ``threads: 1`` added to configs/rl_agent/cpu.yaml, ``feature_dim: 50`` to
configs/learner_cpu.yaml, or ``("seed_steps", 400, ...)`` in the learner node's table each made
this file fail.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

pytest.importorskip("rclpy")  # the node tables are read, no node is started

from video2reward.configs.compose import (
    DATACLASSES,
    ConfigError,
    compose,
    dataclass_of,
    field_default,
    to_dataclass,
)
from video2reward.policies.demos import DemoSpec
from video2reward.policies.drqv2 import DrQV2Config
from video2reward.policies.online import OnlineConfig
from video2reward.policies.ros import learner_node
from video2reward.policies.train import RewardSpec
from video2reward.policies.train import TrainConfig as RLTrainConfig
from video2reward.rewards.ros import reward_node
from video2reward.rewards.stream import RewardStreamConfig
from video2reward.robot.ros import xarm_driver_node
from video2reward.robot.safety import EnvelopeConfig, WatchdogConfig, WorkspaceBox
from video2reward.robot.xarm_driver import XArmDriverConfig
from video2reward.ros.params import FieldParam, config_values

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# node table -> the dataclasses its parameters may come from
NODES: dict[str, tuple[Any, tuple[type, ...]]] = {
    "learner": (learner_node.PARAMS, (OnlineConfig, DrQV2Config, DemoSpec)),
    "reward": (reward_node.PARAMS, (RewardStreamConfig,)),
    "xarm_driver": (
        xarm_driver_node.PARAMS,
        (XArmDriverConfig, EnvelopeConfig, WatchdogConfig, WorkspaceBox),
    ),
}
# (node, parameter) whose name is a field of one of its dataclasses but which is the node's own
# (the learner's max_episodes stops the node; DemoSpec's, the node's demo_max_episodes, caps demos)
NODE_ONLY: set[tuple[str, str]] = {("learner", "max_episodes")}
# ROS cannot carry None: these fields default to None and are declared as the value given
NONE_AS: dict[tuple[str, str], Any] = {("reward", "success_progress"): 0.0}
# (file, dotted key) that deliberately restate a default: none at present
RESTATED: set[tuple[str, str]] = set()
# learner node parameter -> the TrainConfig value it must equal under the same agent preset
AGENT_SIZES = ("batch_size", "hidden_dim", "feature_dim", "lr", "update_every_steps",
               "stddev_schedule_steps", "stddev_final", "shift_pad_px")  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: lists equal tuples, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


# ------------------------------------------------------------------------------ ROS nodes
@pytest.mark.parametrize("node", sorted(NODES))
def test_node_params_take_their_dataclass_defaults(node: str) -> None:
    specs, classes = NODES[node]
    derived = 0
    for spec in specs:
        name, default = spec[0], spec[1]
        if isinstance(spec, FieldParam):
            assert spec.config in classes, f"{node}.{name}: from {spec.config.__name__}"
            want = field_default(_fields(spec.config)[spec.field])
            if want is None:
                want = NONE_AS[(node, name)]
            assert _same(default, want), f"{node}.{name}: {default!r} != {want!r}"
            derived += 1
            continue
        owners = [c.__name__ for c in classes if name in _fields(c)]
        assert not owners or (node, name) in NODE_ONLY, (
            f"{node}.{name} restates {owners[0]}.{name}: declare it with field_param"
        )
    assert derived >= 3


def test_nodes_build_the_dataclass_defaults_from_their_defaults() -> None:
    p = {s[0]: s[1] for s in learner_node.PARAMS}
    specs = learner_node.PARAMS
    assert learner_node.config_from_params(p) == OnlineConfig()

    p = {s[0]: s[1] for s in reward_node.PARAMS} | {"ckpt": "run"}
    stream = RewardStreamConfig(**config_values(RewardStreamConfig, reward_node.PARAMS, p))
    assert stream == RewardStreamConfig(ckpt="run")  # 0.0 is read back as None

    specs = xarm_driver_node.PARAMS
    p = {s[0]: s[1] for s in specs}
    box = WorkspaceBox(lo_m=tuple(p["workspace_lo_m"]), hi_m=tuple(p["workspace_hi_m"]))
    assert box == WorkspaceBox()
    driver = XArmDriverConfig(
        envelope=EnvelopeConfig(box=box, **config_values(EnvelopeConfig, specs, p)),
        watchdog=WatchdogConfig(**config_values(WatchdogConfig, specs, p)),
        **config_values(XArmDriverConfig, specs, p),
    )
    assert driver == XArmDriverConfig()


def _learner_file(name: str) -> dict[str, Any]:
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / name))
    assert isinstance(raw, dict)
    return dict(raw["learner"]["ros__parameters"])


@pytest.mark.parametrize("name", ["learner_cpu.yaml", "learner_gpu.yaml"])
def test_learner_param_files_change_only_what_they_change(name: str) -> None:
    defaults = {s[0]: s[1] for s in learner_node.PARAMS}
    values = _learner_file(name)
    assert values
    for key, value in values.items():
        assert key in defaults, f"{name}: {key} is no learner node parameter"
        assert not _same(value, defaults[key]), f"{name}: {key}: {value!r} is the default"


@pytest.mark.parametrize(
    ("params_file", "agent"), [("learner_cpu.yaml", "cpu"), ("learner_gpu.yaml", "gpu")]
)
def test_learner_presets_use_the_twin_trainers_agent_sizes(params_file: str, agent: str) -> None:
    node = {s[0]: s[1] for s in learner_node.PARAMS} | _learner_file(params_file)
    raw = OmegaConf.to_container(compose("rl_train", [f"rl_agent={agent}"]), resolve=True)
    assert isinstance(raw, dict)
    twin = to_dataclass(RLTrainConfig, raw)
    for key in AGENT_SIZES:
        assert _same(node[key], getattr(twin.agent, key)), (
            f"{params_file} {key}={node[key]!r}, rl_agent/{agent}.yaml agent.{key}="
            f"{getattr(twin.agent, key)!r}"
        )
    assert node["image_size"] == (twin.agent_image_size or twin.image_size)
    assert node["frame_stack"] == twin.frame_stack


# ------------------------------------------------------------------------------ config files
def _check_keys(where: str, cls: type, values: dict[str, Any], prefix: str = "") -> int:
    """Every key a field of ``cls``, none restating its default; returns the keys checked."""
    fields = _fields(cls)
    n = 0
    for key, value in values.items():
        if key in ("defaults", "_target_"):
            continue
        dotted = prefix + key
        assert key in fields, f"{where}: {dotted} is no field of {cls.__name__}"
        default = field_default(fields[key])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            n += _check_keys(where, type(default), value, dotted + ".")
            continue
        restates = default is not dataclasses.MISSING and _same(value, default)
        assert not restates or (where, dotted) in RESTATED, (
            f"{where}: {dotted}: {value!r} restates {cls.__name__}.{key}'s default"
        )
        n += 1
    return n


def _load(path: Path) -> dict[str, Any]:
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return dict(raw or {})  # type: ignore[arg-type]


def _target(values: dict[str, Any]) -> type:
    module, _, name = str(values["_target_"]).rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert isinstance(cls, type)
    return cls


@pytest.mark.parametrize("config", sorted(DATACLASSES))
def test_config_file_lists_only_changes(config: str) -> None:
    _check_keys(f"{config}.yaml", dataclass_of(config), _load(CONFIGS / f"{config}.yaml"))


def test_group_files_list_only_changes() -> None:
    checked = 0
    for path in sorted((CONFIGS / "rl_agent").glob("*.yaml")):
        checked += _check_keys(f"rl_agent/{path.name}", RLTrainConfig, _load(path))
    for path in sorted((CONFIGS / "rl_reward").glob("*.yaml")):
        checked += _check_keys(f"rl_reward/{path.name}", RewardSpec, _load(path))
    from video2reward.policies.vpdd import VPDDConfig

    for path in sorted((CONFIGS / "policy_model").glob("*.yaml")):
        checked += _check_keys(f"policy_model/{path.name}", VPDDConfig, _load(path))
    for path in sorted((CONFIGS / "reward_method").glob("*.yaml")):
        values = _load(path)
        checked += _check_keys(f"reward_method/{path.name}", _target(values), values)
    assert checked >= 10


def test_every_config_file_with_a_dataclass_is_in_the_table() -> None:
    """DATACLASSES names the class each command builds from its file (the direct calls)."""
    calls = re.compile(r'to_dataclass\(\s*(\w+),\s*compose\(\s*"(\w+)"')
    seen = {}
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for cls, config in calls.findall(path.read_text()):
            seen[config] = cls
    assert len(seen) >= 9
    for config, cls in seen.items():
        assert DATACLASSES[config].endswith(f":{cls}"), (config, cls)


# ------------------------------------------------------------------------------ overrides
def test_fields_not_in_the_file_can_be_overridden() -> None:
    from video2reward.sim.demos import DemoConfig

    demo = to_dataclass(DemoConfig, compose("sim_demos", ["seed=3", "noise=0.1"]))
    assert (demo.seed, demo.noise) == (3, 0.1)

    raw = OmegaConf.to_container(
        compose("rl_train", ["rl_agent=cpu", "agent.nstep=5", "reward.scale=2.0", "task=push"]),
        resolve=True,
    )
    assert isinstance(raw, dict)
    rl = to_dataclass(RLTrainConfig, raw)
    assert (rl.agent.nstep, rl.agent.batch_size, rl.reward.scale) == (5, 128, 2.0)
    assert rl.out == "runs/rl_push"  # the file's ${task} interpolation
    assert rl.threads == 1  # TrainConfig's default (rl_agent/cpu.yaml no longer restates it)
    gpu = OmegaConf.to_container(compose("rl_train"), resolve=True)
    assert to_dataclass(RLTrainConfig, gpu).threads == 0  # type: ignore[arg-type]

    cfg = compose("reward_train", ["reward_method=tcn", "data=d", "out=o", "method.seed=4"])
    assert (cfg.method.seed, cfg.method.embed_dim, cfg.threads) == (4, 32, 0)


def test_unknown_keys_are_refused() -> None:
    from video2reward.sim.demos import DemoConfig

    with pytest.raises(ConfigError, match="sede"):
        to_dataclass(DemoConfig, compose("sim_demos", ["sede=3"]))
    raw = OmegaConf.to_container(compose("rl_train", ["agent.batchsize=3"]), resolve=True)
    with pytest.raises(ConfigError, match="batchsize"):
        to_dataclass(RLTrainConfig, raw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ckpt"):
        compose("reward_score", ["ckpts=x"])  # a file without a dataclass stays strict
