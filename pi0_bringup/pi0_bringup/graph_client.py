"""A client of a running pi0_ros graph: the demo, the runtime benchmark and the tests drive graphs through it.

`GraphClient` is an rclpy node in the graph's namespace, spun on a thread of its own. It
follows `policy_status` and `streamer_status`, records the commands on the controller topics
of the robot description, waits until the graph is ready, sends instruction goals and
follows their feedback and results.

No retry loops: the policy node accepts a goal right after activation and waits up to its
`goal_start_timeout_s` for the streamer and a first observation, so one goal is enough. A
rejection is final and says why (`GoalRejectedError`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import rclpy
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions

from pi0_bringup.supervisor import GraphProcesses, wait_until
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import PolicyStatus, StreamerStatus
from pi0_ros.core.robot_description import ControllerSpec, RobotDescription
from pi0_ros.ros.conversions import qos_profile, seconds_to_duration, stamp_to_seconds
from pi0_ros.streamer.controller_commands import controller_message_class

T = TypeVar("T")
POLL_S = 0.02


class GraphClientError(RuntimeError):
    """The graph did not do what the client waited for; the message says what."""


class GoalRejectedError(GraphClientError):
    """The policy node rejected the goal; the message is its reason."""


def command_values(message: Any) -> list[float]:
    """The command for 'now' of any controller message type (trajectory, position array, twist)."""
    if hasattr(message, "points"):
        return list(message.points[0].positions)
    if hasattr(message, "data"):
        return list(message.data)
    twist = getattr(message, "twist", message)
    return [twist.linear.x, twist.angular.z]


@dataclass(frozen=True)
class ReceivedCommand:
    """One controller command as this client received it."""

    received: float  # time.monotonic() at reception in this process
    controller: str  # controller name
    values: tuple[float, ...]  # the command for 'now'
    stamp: float | None  # header stamp (system time s: the streamer's tick); None for unstamped messages
    published: float  # DDS source timestamp (system time s)
    delivered: float  # DDS reception timestamp (system time s)
    sequence: int  # publication sequence number of the streamer's publisher
    message: Any = None  # the message itself, when the client keeps them (`keep_messages`)


class CommandRecorder:
    """Every received command, in arrival order; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: list[ReceivedCommand] = []

    def add(self, command: ReceivedCommand) -> None:
        with self._lock:
            self._commands.append(command)

    def all(self, controller: str | None = None, since: float = float("-inf")) -> list[ReceivedCommand]:
        """The commands received at or after `since` (monotonic s), of one controller or all."""
        with self._lock:
            return [
                c for c in self._commands if c.received >= since and (controller is None or c.controller == controller)
            ]

    def times(self, controller: str) -> list[float]:
        return [c.received for c in self.all(controller)]

    def values(self, controller: str) -> list[tuple[float, ...]]:
        return [c.values for c in self.all(controller)]


class GraphClient:
    """A peer node of a graph: status, command recording, readiness waits and goals.

    `context`: an initialized rclpy context to create the node in; None creates (and at
    `close()` shuts down) one of its own. `controllers`: the controllers whose commands are
    recorded (default: all of the description). `command_qos`: the recording subscriptions'
    QoS (reliable, depth 50 by default; an observer that must never slow the streamer down
    uses best effort). `keep_messages`: also keep each received command message.
    """

    def __init__(
        self,
        description: RobotDescription,
        namespace: str = "",
        *,
        context: Context | None = None,
        name: str = "pi0_graph_client",
        controllers: Sequence[ControllerSpec] | None = None,
        command_qos: QoSProfile | None = None,
        keep_messages: bool = False,
    ) -> None:
        self.description = description
        self._own_context = context is None
        if context is None:
            context = Context()
            rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        self.context = context
        self.node = Node(name, namespace=namespace or "", context=context)
        self.commands = CommandRecorder()
        self._keep_messages = keep_messages
        self.controllers = tuple(description.controllers if controllers is None else controllers)
        self._lock = threading.Lock()
        self._policy: list[tuple[float, PolicyStatus]] = []  # (monotonic reception time, status)
        self._streamer: list[tuple[float, StreamerStatus]] = []
        qos = command_qos or qos_profile("reliable", 50)
        for controller in self.controllers:
            self.node.create_subscription(
                controller_message_class(controller), controller.topic, self._command_callback(controller.name), qos
            )
        self.node.create_subscription(
            PolicyStatus, "policy_status", self._on_policy_status, qos_profile("reliable", 1, transient_local=True)
        )
        self.node.create_subscription(
            StreamerStatus, "streamer_status", self._on_streamer_status, qos_profile("reliable", 10)
        )
        self.action = ActionClient(self.node, ExecuteInstruction, "execute_instruction")
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    # -- subscriptions -------------------------------------------------------------------------

    def _command_callback(self, controller: str) -> Callable[[Any, Any], None]:
        def store(message: Any, info: Any) -> None:
            header = getattr(message, "header", None)
            self.commands.add(
                ReceivedCommand(
                    received=time.monotonic(),
                    controller=controller,
                    values=tuple(command_values(message)),
                    stamp=None if header is None else stamp_to_seconds(header.stamp),
                    published=info["source_timestamp"] * 1e-9,
                    delivered=info["received_timestamp"] * 1e-9,
                    sequence=info["publication_sequence_number"],
                    message=message if self._keep_messages else None,
                )
            )

        return store

    def _on_policy_status(self, message: PolicyStatus) -> None:
        with self._lock:
            self._policy.append((time.monotonic(), message))
            del self._policy[:-1000]

    def _on_streamer_status(self, message: StreamerStatus) -> None:
        with self._lock:
            self._streamer.append((time.monotonic(), message))

    @property
    def policy_status(self) -> PolicyStatus | None:
        """The newest policy_status received."""
        with self._lock:
            return self._policy[-1][1] if self._policy else None

    @property
    def streamer_status(self) -> StreamerStatus | None:
        """The newest streamer_status received."""
        with self._lock:
            return self._streamer[-1][1] if self._streamer else None

    def policy_statuses(self, since: float = float("-inf")) -> list[PolicyStatus]:
        with self._lock:
            return [m for t, m in self._policy if t >= since]

    def streamer_statuses(self, since: float = float("-inf")) -> list[StreamerStatus]:
        with self._lock:
            return [m for t, m in self._streamer if t >= since]

    # -- waiting -------------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[], T], timeout: float, what: str, processes: GraphProcesses | None = None
    ) -> T:
        """`wait_until` raising GraphClientError; a node of `processes` that ends stops the wait with
        ProcessExitedError and the node's last output."""
        check = None if processes is None else processes.check_running
        return wait_until(predicate, timeout, what, check, poll=POLL_S, error=GraphClientError)

    def wait_until_ready(
        self,
        timeout: float,
        *,
        since: float = float("-inf"),
        observations: bool = False,
        streamer: bool = False,
        settle: float = 0.0,
        processes: GraphProcesses | None = None,
    ) -> None:
        """Waits until the policy node reports `active` (in a status received at or after `since`,
        monotonic s: a respawned node loads its model first) and its action server is discovered;
        with `observations`, until it also sees fresh observations, with `streamer`, until the
        streamer's status is heard. `settle` s more let the server discover this client's response
        reader. No lifecycle service call: the policy configures itself (autostart) and its latched
        status says when. A policy node reporting an error ends the wait with that error."""

        def ready() -> bool:
            statuses = self.policy_statuses(since)
            status = statuses[-1] if statuses else None
            if status is not None and status.level == PolicyStatus.LEVEL_ERROR:
                raise GraphClientError(f"pi0_policy: {status.message}")
            if not any(s.lifecycle_state == "active" for s in statuses):
                return False
            if observations and not (status.lifecycle_state == "active" and 0 <= status.observation_age_ms < 500):
                return False
            if streamer and self.streamer_status is None:
                return False
            return self.action.server_is_ready()

        what = (
            "pi0_policy to be active"
            + (" with observations" if observations else "")
            + (" and the command streamer" if streamer else "")
        )
        self.wait_until(ready, timeout, what, processes)
        if settle > 0:
            time.sleep(settle)

    def wait_streaming(self, timeout: float, processes: GraphProcesses | None = None) -> None:
        """Waits until the streamer reports that it streams a goal's chunks."""
        self.wait_until(
            lambda: (s := self.streamer_status) is not None and s.mode == StreamerStatus.MODE_STREAMING,
            timeout,
            "the command streamer to stream",
            processes,
        )

    # -- goals ---------------------------------------------------------------------------------

    def send_goal(
        self,
        instruction: str,
        max_duration: float = 0.0,
        feedback: Callable[[Any], None] | None = None,
        timeout: float = 20.0,
        processes: GraphProcesses | None = None,
    ) -> Any:
        """Sends one goal; returns its accepted goal handle. Raises GoalRejectedError with the policy's reason."""
        goal = ExecuteInstruction.Goal(instruction=instruction, max_duration=seconds_to_duration(max_duration))
        future = self.action.send_goal_async(goal, feedback_callback=feedback)
        handle = self.wait_until(
            lambda: future.done() and future.result(), timeout, f"the response to the goal '{instruction}'", processes
        )
        if not handle.accepted:
            # The rejection reason is published on policy_status right before the response.
            time.sleep(0.1)
            status = self.policy_status
            raise GoalRejectedError(status.last_goal_rejection if status is not None else "rejected")
        return handle

    def result(self, handle: Any, timeout: float, processes: GraphProcesses | None = None) -> Any:
        """The goal's ExecuteInstruction.Result."""
        future = handle.get_result_async()
        return self.wait_until(lambda: future.done() and future.result(), timeout, "the goal result", processes).result

    def cancel(self, handle: Any, timeout: float = 20.0, processes: GraphProcesses | None = None) -> Any:
        """Asks to cancel the goal and waits for the cancel response."""
        future = handle.cancel_goal_async()
        return self.wait_until(future.done, timeout, "the cancel response", processes) and future.result()

    # -- life cycle ----------------------------------------------------------------------------

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.action.destroy()
        self.node.destroy_node()
        if self._own_context and self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
