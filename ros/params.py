"""Declare ROS parameters with descriptors in one line each, and read them back typed.

    rate = declare(node, "state_rate_hz", 50.0, "publish rate", float_range(1, 200), read_only=True)

    PARAMS = (
        field_param(DrQV2Config, "batch_size", "transitions per update", int_range(2, 4096)),
        ("episode_steps", 50, "commands per episode", int_range(2, 100_000), True),  # node-only
    )
    p = declare_all(node, PARAMS)
    agent = DrQV2Config(**config_values(DrQV2Config, PARAMS, p))

Every parameter carries a description and, for numbers, a range that ROS enforces on
``ros2 param set``; the node then builds the same frozen dataclass config the Python API uses,
so both paths validate identically. A parameter that is a field of a config dataclass is
declared with :func:`field_param`: its default is read from the dataclass, so the node's table
names the field and never restates its value (tests/unit/test_config_single_source.py checks
the tables). Only the node's own parameters (topics, its timeouts, episode lengths) are plain
``(name, default, description, range, read_only)`` tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

Range: TypeAlias = FloatingPointRange | IntegerRange


def float_range(lo: float, hi: float) -> FloatingPointRange:
    return FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)


def int_range(lo: int, hi: int) -> IntegerRange:
    return IntegerRange(from_value=int(lo), to_value=int(hi), step=1)


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    value_range: Range | None = None,
    read_only: bool = False,
) -> Any:
    desc = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(value_range, FloatingPointRange):
        desc.floating_point_range = [value_range]
    elif isinstance(value_range, IntegerRange):
        desc.integer_range = [value_range]
    return node.declare_parameter(name, default, desc).value


class FieldParam(NamedTuple):
    """A parameter that is the field ``field`` of the config dataclass ``config``."""

    name: str
    default: Any
    description: str
    value_range: Range | None
    read_only: bool
    config: type
    field: str
    # ROS parameters cannot be None: a field whose default is None is declared as this value,
    # and the value read back is None again when it equals it (e.g. 0.0: "the checkpoint's").
    none_as: Any = None


# (name, default, description, range or None, read_only) for the node's own parameters
ParamSpec = tuple[str, Any, str, Range | None, bool] | FieldParam


def field_default(config: type, field: str) -> Any:
    """The default of ``config.field`` as a ROS parameter value (tuples become lists, a float
    field's integer default a float: ROS fixes a parameter's type from its default)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    if field not in fields:
        raise ValueError(f"{config.__name__} has no field {field!r}")
    f = fields[field]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        raise ValueError(f"{config.__name__}.{field} has no default to declare")
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, int) and not isinstance(value, bool) and _type_name(f).startswith("float"):
        value = float(value)
    return value


def field_param(
    config: type,
    field: str,
    description: str,
    value_range: Range | None = None,
    *,
    name: str | None = None,
    read_only: bool = True,
    none_as: Any = None,
) -> FieldParam:
    """A parameter named ``name`` (default: the field's name) whose default is ``config.field``'s.

    The description and range stay in the node's table: they say what the value means to an
    operator at ``ros2 param describe`` and what ROS refuses on ``ros2 param set``; the config's
    ``__post_init__`` still validates the value the node builds."""
    default = field_default(config, field)
    if default is None:
        if none_as is None:
            raise ValueError(f"{config.__name__}.{field} defaults to None: give none_as")
        default = none_as
    return FieldParam(name or field, default, description, value_range, read_only, config,
                      field, none_as)


def config_values(
    config: type, specs: tuple[ParamSpec, ...], values: Mapping[str, Any]
) -> dict[str, Any]:
    """``{field: value}`` of the parameters in ``specs`` that are fields of ``config``, from
    ``values`` (what :func:`declare_all` returned): ``config(**config_values(...))``."""
    out: dict[str, Any] = {}
    for s in specs:
        if isinstance(s, FieldParam) and s.config is config:
            v = values[s.name]
            if s.none_as is not None and v == s.none_as:
                v = None
            elif isinstance(v, list) and isinstance(field_default(config, s.field), list):
                v = _as_field_sequence(config, s.field, v)
            out[s.field] = v
    return out


def _type_name(f: dataclasses.Field[Any]) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _as_field_sequence(config: type, field: str, value: list[Any]) -> Any:
    f = next(f for f in dataclasses.fields(config) if f.name == field)
    return tuple(value) if _type_name(f).startswith("tuple") else value


def declare_all(node: Node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare a table of parameters; returns {name: value}."""
    return {s[0]: declare(node, s[0], s[1], s[2], s[3], s[4]) for s in specs}
