"""Shared `main()` plumbing: init, spin, clean exit on Ctrl-C and SIGTERM."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, Executor, SingleThreadedExecutor
from rclpy.node import Node

from pi0_ros.parameters import ParameterError
from pi0_ros.robot_description import DescriptionError


def spin_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor] = SingleThreadedExecutor,
              args: Optional[Sequence[str]] = None) -> int:
    """Runs one node until shutdown; returns a process exit code (0 on Ctrl-C/SIGTERM).

    Configuration errors (bad parameters or robot description) end the process
    with exit code 2 and one clear line instead of a traceback.
    """
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node = None
    executor = None
    try:
        executor = make_executor()
        try:
            node = make_node()
        except (ParameterError, DescriptionError) as exc:
            print(f"[{make_node.__name__}] configuration error: {exc}", file=sys.stderr)
            return 2
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A signal shuts the context down asynchronously; rclpy may then raise a plain
        # RCLError from whatever call was in flight. That is a clean stop, not a crash.
        if rclpy.ok():
            raise
    finally:
        if executor is not None:
            # Joins the worker threads: left running, they create tasks while the
            # interpreter is being torn down, which rclpy reports as errors at exit.
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
