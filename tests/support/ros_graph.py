"""A real rclpy graph for tests: own context, executor spinning in a thread."""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

T = TypeVar("T")


class RosGraph:
    """Owns an rclpy context and spins every added node in a background thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def node(self, name: str, **kwargs) -> Node:
        """Creates a plain node in this graph and spins it."""
        return self.add(Node(name, context=self.context, **kwargs))

    def add(self, node: Node) -> Node:
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
        """Polls `predicate` until it returns a truthy value; fails with `what` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        for node in self._nodes:
            node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
