"""One ``main()`` for the project's nodes: init, build, spin, clean up, exit code.

    def main(argv=None) -> int:
        return run_node("reward_node", RewardNode, argv, errors=(ValueError, RewardError))

A node that cannot be built (bad parameter, missing checkpoint) prints ``<name>: <reason>`` and
exits with 2 before anything spins. Ctrl-C and a launch system's SIGTERM
(``ExternalShutdownException``) end the spin quietly; ``cleanup`` then runs whatever happened
(the driver stops the arm there) before the node is destroyed and the context shut down.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def run_node(
    name: str,
    make: Callable[[], N],
    argv: list[str] | None = None,
    *,
    errors: tuple[type[BaseException], ...] = (ValueError,),
    threads: int = 1,
    until: Callable[[N], bool] | None = None,
    cleanup: Callable[[N], None] | None = None,
    exit_code: Callable[[N], int] | None = None,
) -> int:
    """Spin ``make()`` until shutdown (or ``until(node)``); returns the process exit code."""
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = make()
    except errors as e:
        print(f"{name}: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor: SingleThreadedExecutor | MultiThreadedExecutor = (
        MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    )
    executor.add_node(node)
    try:
        while rclpy.ok() and not (until is not None and until(node)):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if cleanup is not None:
                cleanup(node)
        finally:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
            rclpy.try_shutdown()
    return exit_code(node) if exit_code is not None else 0
