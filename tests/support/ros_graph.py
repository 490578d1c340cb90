"""A real rclpy graph for tests: own context, every node spun by its own executor thread.

One SingleThreadedExecutor per node mirrors deployment (one node per process,
each main() spinning it single-threaded) as closely as a single test process
allows: nodes sharing one executor delay each other's timers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from pi0_bringup.supervisor import wait_until

T = TypeVar("T")


class RosGraph:
    """Owns an rclpy context and spins every added node on an executor thread of its own."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self._spinning: list[tuple[Node, SingleThreadedExecutor, threading.Thread]] = []

    def node(self, name: str, **kwargs) -> Node:
        """Creates a plain node (test peer) in this graph and spins it single-threaded."""
        return self.add(Node(name, context=self.context, **kwargs))

    def add(self, node: Node) -> Node:
        """Spins `node` on an executor thread of its own."""
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor,), daemon=True)
        thread.start()
        self._spinning.append((node, executor, thread))
        return node

    def stop_spinning(self, node: Node) -> None:
        """Stops spinning `node` (e.g. before destroying its entities); it is still destroyed at shutdown."""
        for spun, executor, thread in self._spinning:
            if spun is node:
                executor.shutdown(timeout_sec=2.0)
                thread.join(timeout=2.0)

    @staticmethod
    def _spin(executor: SingleThreadedExecutor) -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
        """Polls `predicate` until it returns a truthy value; fails with `what` on timeout."""
        return wait_until(predicate, timeout, what, poll=0.01)

    def shutdown(self) -> None:
        for _, executor, thread in self._spinning:
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=2.0)
        for node, _, _ in self._spinning:
            node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
