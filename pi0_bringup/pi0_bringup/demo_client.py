"""The demo's client node: sends the goals, shows progress, records the commands."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from pi0_bringup.run import GraphProcesses
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import PolicyStatus, StreamerStatus
from pi0_ros.streamer.controller_commands import controller_message_class
from pi0_ros.policy.goal_session import EndReason
from pi0_ros.core.robot_description import RobotDescription
from pi0_ros.ros.conversions import qos_profile, seconds_to_duration
from pi0_ros.tools.send_instruction import StatusLine, format_feedback

STARTUP_TIMEOUT = 120.0  # s; the policy node loads and warms up the model first


@dataclass
class GoalReport:
    instruction: str
    outcome: str  # end reason and message, or why the goal was not run
    chunks: int = 0
    commands: int = 0
    latency_mean_ms: float = 0.0
    latency_p95_ms: float = 0.0


@dataclass
class CommandLog:
    """Commands received per controller: receive times and the command for 'now'."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    times: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, controller: str, values: list[float]) -> None:
        with self.lock:
            self.times.setdefault(controller, []).append(time.monotonic())
            self.values.setdefault(controller, []).append(values)


def command_values(message) -> list[float]:
    """The command for 'now' of any controller message type."""
    if hasattr(message, "points"):
        return list(message.points[0].positions)
    if hasattr(message, "data"):
        return list(message.data)
    twist = getattr(message, "twist", message)
    return [twist.linear.x, twist.angular.z]


class DemoClient(Node):
    def __init__(self, description: RobotDescription) -> None:
        super().__init__("pi0_demo_client")
        self.description = description
        self.log = CommandLog()
        self.status: Optional[PolicyStatus] = None
        self.streamer_jitter_p99_ms = 0.0  # the streamer's own tick statistics, last status while streaming
        self.streamer_heard = False
        for controller in description.controllers:
            self.create_subscription(controller_message_class(controller), controller.topic,
                                     lambda m, name=controller.name: self.log.add(name, command_values(m)),
                                     qos_profile("reliable", 50))
        self.create_subscription(PolicyStatus, "policy_status", self._on_status,
                                 qos_profile("reliable", 1, transient_local=True))
        self.create_subscription(StreamerStatus, "streamer_status", self._on_streamer_status,
                                 qos_profile("reliable", 10))
        self.action = ActionClient(self, ExecuteInstruction, "execute_instruction")
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def _on_status(self, message: PolicyStatus) -> None:
        self.status = message

    def _on_streamer_status(self, message: StreamerStatus) -> None:
        self.streamer_heard = True
        if message.mode == StreamerStatus.MODE_STREAMING:
            self.streamer_jitter_p99_ms = message.jitter_p99_ms

    def destroy_node(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self.action.destroy()
        super().destroy_node()

    def command_times(self) -> list[float]:
        """Receive times of the first controller's commands (every controller gets one per tick)."""
        with self.log.lock:
            return list(self.log.times.get(self.description.controllers[0].name, []))

    def run(self, instructions: Sequence[str], duration: float, graph: GraphProcesses) -> list[GoalReport]:
        if not self._wait_until_ready(graph):
            return []
        return [self._run_goal(instruction, duration, graph) for instruction in instructions]

    def _wait_until_ready(self, graph: GraphProcesses) -> bool:
        """Waits until the policy node is active and sees observations and the streamer runs, or says why not."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if graph.exited() is not None:
                name, code = graph.exited()
                print(f"[demo] {name} exited with code {code} during start-up; see its log", file=sys.stderr)
                return False
            status = self.status
            ready = status is not None and status.lifecycle_state == "active" and 0 <= status.observation_age_ms < 500
            if ready and self.streamer_heard:
                return self.action.wait_for_server(timeout_sec=10.0)
            if status is not None and status.level == PolicyStatus.LEVEL_ERROR:
                print(f"[demo] policy node: {status.message}", file=sys.stderr)
                return False
            time.sleep(0.1)
        print(f"[demo] the policy node was not ready after {STARTUP_TIMEOUT:.0f} s", file=sys.stderr)
        return False

    def _send_until_accepted(self, goal: ExecuteInstruction.Goal, feedback, patience: float = 10.0):
        """Sends the goal, again while the policy rejects it: right after start-up it may not yet
        have discovered the streamer or received observations that this client already sees."""
        deadline = time.monotonic() + patience
        while True:
            handle = _wait(self.action.send_goal_async(goal, feedback_callback=feedback), 10.0)
            if handle is not None and handle.accepted or time.monotonic() > deadline:
                return handle
            time.sleep(0.5)

    def _run_goal(self, instruction: str, duration: float, graph: GraphProcesses) -> GoalReport:
        line = StatusLine(sys.stdout)
        print(f"[demo] instruction: '{instruction}' for {duration:.0f} s")
        goal = ExecuteInstruction.Goal(instruction=instruction, max_duration=seconds_to_duration(duration))
        handle = self._send_until_accepted(goal, lambda m: line.show(format_feedback(m.feedback, duration)))
        if handle is None or not handle.accepted:
            reason = self.status.last_goal_rejection if self.status else "no response"
            return GoalReport(instruction, f"rejected: {reason}")
        result_future = handle.get_result_async()
        response = _wait(result_future, duration + 30.0, graph)
        line.close()
        if response is None:
            return GoalReport(instruction, "no result (a node stopped?)")
        result = response.result
        reason = EndReason(result.end_reason).name.lower().replace("_", " ")
        return GoalReport(instruction, f"{reason}: {result.message}", result.chunks_generated, result.commands_sent,
                          result.inference_latency_mean_ms, result.inference_latency_p95_ms)


def _wait(future, timeout: float, graph: Optional[GraphProcesses] = None):
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        if graph is not None and graph.exited() is not None:
            return None
        time.sleep(0.02)
    return future.result() if future.done() else None
