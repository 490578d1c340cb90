"""Shared `main()` plumbing: init, spin, and a clean exit within a second on Ctrl-C or SIGTERM.

The first SIGINT or SIGTERM (stop_signals) or request_stop() ends the spin loop
after the running callback; later signals are ignored. The node is then
destroyed while ROS still works, so its destroy_node() can leave the robot held
(the streamer's last command, the policy's goal_active=false), and the process
ends with os._exit: the interpreter's own teardown of torch and transformers
took over a second, past which `ros2 launch` escalates, and it only frees
memory that the kernel reclaims anyway.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

import rclpy
from rclpy.duration import Duration
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.signals import SignalHandlerOptions

from pi0_ros.core.robot_description import DescriptionError
from pi0_ros.core.stop_signals import exit_process, stop_on_first_signal
from pi0_ros.ros.parameters import ParameterError

# How long the spin loop waits for work before it looks at the stop request again: a signal's Python
# handler only runs once the main thread is back from rcl_wait.
STOP_POLL_S = 0.05
FINAL_DELIVERY_S = 0.2  # at most this long, a node's last messages wait for their subscribers' acknowledgement

_stop = threading.Event()  # one node per process


def request_stop() -> None:
    """Ends spin_node's loop after the running callback: how a node ends its process (lifecycle shutdown)."""
    _stop.set()


def wait_for_delivery(publishers: Iterable[Publisher], timeout: float = FINAL_DELIVERY_S) -> None:
    """Waits until every reliable subscriber acknowledged what `publishers` sent, at most `timeout` s in all.

    For a node's last messages: DDS resends a lost one only while its publisher exists, and the
    process ends right after.
    """
    deadline = time.monotonic() + timeout
    for publisher in publishers:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9))):
            return


def spin_node(
    make_node: Callable[[], Node],
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
    args: Sequence[str] | None = None,
) -> NoReturn:
    """Runs one node as this process until a stop signal or request_stop(), then ends the process.

    Exit code 0 on a stop; 2 with one clear line instead of a traceback for a
    configuration error (bad parameters or robot description).
    """
    # Before rclpy.init and the node's construction: a signal meanwhile stops the process the same way.
    stop_on_first_signal(_stop)
    # rclpy's own handlers would shut the context down from their thread while callbacks run, and raise
    # KeyboardInterrupt in this one; SIGSEGV came from that thread triggering a guard condition that
    # executor.shutdown() was destroying.
    rclpy.init(args=list(args) if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    code = _spin(make_node, make_executor)
    # Closes the ROS log file. Not rclpy.shutdown(): uninstalling its handlers resets SIGINT to the default
    # for a moment, and a second Ctrl-C then would kill the process.
    rclpy.try_shutdown()
    exit_process(code)


def _spin(make_node: Callable[[], Node], make_executor: Callable[[], Executor]) -> int:
    try:
        node = make_node()
    except (ParameterError, DescriptionError) as exc:
        print(f"[{make_node.__name__}] configuration error: {exc}", file=sys.stderr)
        return 2
    executor = make_executor()
    executor.add_node(node)
    try:
        while not _stop.is_set():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    finally:
        node.destroy_node()
        executor.shutdown()
    return 0
