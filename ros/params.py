"""Declare ROS parameters with descriptors in one line each, and read them back typed.

    rate = declare(node, "state_rate_hz", 50.0, "publish rate", float_range(1, 200), read_only=True)

Every parameter carries a description and, for numbers, a range that ROS enforces on
``ros2 param set``; the node then builds the same frozen dataclass config the Python API uses,
so both paths validate identically.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def float_range(lo: float, hi: float) -> FloatingPointRange:
    return FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)


def int_range(lo: int, hi: int) -> IntegerRange:
    return IntegerRange(from_value=int(lo), to_value=int(hi), step=1)


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    value_range: FloatingPointRange | IntegerRange | None = None,
    read_only: bool = False,
) -> Any:
    desc = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(value_range, FloatingPointRange):
        desc.floating_point_range = [value_range]
    elif isinstance(value_range, IntegerRange):
        desc.integer_range = [value_range]
    return node.declare_parameter(name, default, desc).value


# (name, default, description, range or None, read_only)
ParamSpec = tuple[str, Any, str, FloatingPointRange | IntegerRange | None, bool]


def declare_all(node: Node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare a table of parameters; returns {name: value}."""
    return {s[0]: declare(node, s[0], s[1], s[2], s[3], s[4]) for s in specs}
