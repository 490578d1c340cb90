"""pi0_command_streamer: turns action chunks into steady ros2_control commands.

Runs in a process of its own so that model inference never delays a tick
(docs/ARCHITECTURE.md). All decisions live in :class:`CommandStream`; this node
only moves messages in and out and reports status and diagnostics.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState

from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.core.chunk import Handover
from pi0_ros.core.heartbeat import MIN_STREAMER_STATUS_RATE_HZ, STREAMER_TIMEOUT_S
from pi0_ros.core.rate_monitor import RateMonitor
from pi0_ros.core.robot_description import RobotDescription, load_robot_description
from pi0_ros.ros.chunk_messages import ChunkRefusedError, received_chunk
from pi0_ros.ros.conversions import (
    RELIABILITY_CHOICES,
    qos_profile,
    seconds_to_stamp,
)
from pi0_ros.ros.node_main import spin_node, wait_for_delivery
from pi0_ros.ros.parameters import ParameterError, declare_and_read, param, parameter_specs
from pi0_ros.streamer.command_limits import CommandLimiter
from pi0_ros.streamer.command_stream import CommandStream, StreamConfig, StreamMode, StreamTick
from pi0_ros.streamer.controller_commands import ControllerCommandBuilder, controller_message_class


@dataclass(frozen=True)
class StreamerParameters:
    """The node's parameters; the stream's settings come from them (stream_config)."""

    robot_description: str = param(
        "", "Path to the robot description YAML (joints, limits, controllers).", read_only=True
    )
    control_rate_hz: float = param(0.0, "Command rate; 0 uses the description's control_rate_hz.", range=(0.0, 1000.0))
    chunk_handover: str = param(
        Handover.SPLICE.value, "How a new chunk takes over from the running one.", choices=Handover.choices()
    )
    blend_duration_s: float = param(
        StreamConfig.blend_duration, "Cross-fade time of the blend hand-over.", range=(0.01, 2.0)
    )
    trajectory_lookahead_points: int = param(
        5, "Points after 'now' in each JointTrajectory (one control period apart).", range=(1, 100)
    )
    status_timeout_s: float = param(0.5, "Hold when the policy status is older than this.", range=(0.05, 10.0))
    max_chunk_latency_s: float = param(
        1.0, "Refuse chunks that arrive later than this after their observation.", range=(0.01, 10.0)
    )
    hold_duration_s: float = param(
        1.0, "Keep publishing the hold command this long after a goal ends.", range=(0.0, 60.0)
    )
    status_rate_hz: float = param(
        10.0,
        f"Rate of streamer_status (the policy accepts goals only while it hears it at least once every "
        f"{STREAMER_TIMEOUT_S:g} s) and of the command-rate statistics.",
        range=(MIN_STREAMER_STATUS_RATE_HZ, 100.0),
    )
    joint_state_timeout_s: float = param(
        StreamConfig.joint_state_timeout,
        "A goal starting from idle waits for joint states younger than this.",
        range=(0.01, 10.0),
    )
    joint_position_tolerance: float = param(
        StreamConfig.position_tolerance,
        "A measured position this far past a joint limit (rad or m) is still "
        "a plausible start pose; farther, or a jump faster than the joint can move, makes a goal wait.",
        range=(0.0, 1.0),
    )
    joint_state_qos_reliability: str = param(
        "reliable", "QoS reliability of the joint state subscriptions.", choices=RELIABILITY_CHOICES
    )
    command_qos_depth: int = param(1, "QoS depth of the controller command publishers (reliable).", range=(1, 100))
    realtime_priority: int = param(
        0,
        "SCHED_FIFO priority (1-99) for this process, as ros2_control's controller manager uses; 0 keeps "
        "normal scheduling. Needs CAP_SYS_NICE or an rtprio limit.",
        range=(0, 99),
        read_only=True,
    )

    def stream_config(self, period: float) -> StreamConfig:
        try:
            return StreamConfig(
                control_period=period,
                lookahead_points=self.trajectory_lookahead_points,
                status_timeout=self.status_timeout_s,
                max_chunk_latency=self.max_chunk_latency_s,
                hold_duration=self.hold_duration_s,
                handover=Handover.parse(self.chunk_handover),
                blend_duration=self.blend_duration_s,
                joint_state_timeout=self.joint_state_timeout_s,
                position_tolerance=self.joint_position_tolerance,
            )
        except ValueError as exc:  # settings valid one by one but not together (e.g. a slow control rate)
            raise ParameterError(f"{exc}; control_rate_hz is {1.0 / period:g}") from exc


PARAMS = parameter_specs(StreamerParameters)  # as declared (e.g. to check a parameters file)


class CommandStreamerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_command_streamer", **kwargs)
        params = declare_and_read(self, StreamerParameters)
        if params.realtime_priority:
            self._use_realtime_scheduling(params.realtime_priority)
        description = load_robot_description(params.robot_description)
        rate = params.control_rate_hz or description.control_rate_hz
        period = 1.0 / rate
        self.description = description
        self.stream = CommandStream(
            params.stream_config(period), CommandLimiter.for_robot(description, period), description.policy.actions
        )
        self.builder = ControllerCommandBuilder(description, period)
        # A 2 s window: an idle streamer reads 0 Hz soon after it stops, as a monitor expects.
        self.rate_monitor = RateMonitor(period, max_age=2.0)
        self._last_logged: tuple[StreamMode, str] | None = None
        self._logged_at: dict[tuple[StreamMode, str], float] = {}  # monotonic time each state was logged
        self._last_tick = StreamTick(StreamMode.IDLE, "starting", None)
        self._create_interfaces(description, params, period)

    def _use_realtime_scheduling(self, priority: int) -> None:
        """Keeps the 50 Hz loop on time when inference and rendering load every core."""
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (AttributeError, OSError) as exc:
            self.get_logger().warning(
                f"could not use SCHED_FIFO priority {priority} ({exc}); commands may jitter under load. "
                "Grant it with an rtprio limit (/etc/security/limits.conf) or CAP_SYS_NICE."
            )
        else:
            self.get_logger().info(f"running with SCHED_FIFO priority {priority}")

    def _create_interfaces(self, description: RobotDescription, params: StreamerParameters, period: float) -> None:
        command_qos = qos_profile("reliable", params.command_qos_depth)
        self.command_publishers = {
            c.name: self.create_publisher(controller_message_class(c), c.topic, command_qos)
            for c in description.controllers
        }
        self.status_publisher = self.create_publisher(StreamerStatus, "streamer_status", qos_profile("reliable", 10))
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos_profile("reliable", 10))
        self.create_subscription(
            PolicyStatus, "policy_status", self._on_policy_status, qos_profile("reliable", 1, transient_local=True)
        )
        joint_qos = qos_profile(params.joint_state_qos_reliability, 10)
        for topic in description.joint_state_topics:
            self.create_subscription(JointState, topic, self._on_joint_state, joint_qos)
        self.create_timer(period, self._on_tick)
        self.create_timer(1.0 / params.status_rate_hz, self._publish_status)
        self.create_timer(1.0, self._publish_diagnostics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_policy_status(self, message: PolicyStatus) -> None:
        self.stream.on_status(message.goal_active, message.goal_id, self._now())

    def _on_chunk(self, message: ActionChunk) -> None:
        try:
            refusal = self.stream.on_chunk(received_chunk(message, self.stream.action_names), self._now())
        except ChunkRefusedError as exc:
            refusal = str(exc)
        if refusal:
            self.get_logger().warning(refusal, throttle_duration_sec=1.0)

    def _on_joint_state(self, message: JointState) -> None:
        if len(message.name) == len(message.position):
            problems = self.stream.on_joint_positions(dict(zip(message.name, message.position)), self._now())
            if problems:
                self.get_logger().warning(
                    f"ignoring implausible joint states: {'; '.join(problems)}", throttle_duration_sec=5.0
                )
        else:
            self.get_logger().warning(
                f"ignoring JointState with {len(message.name)} names and {len(message.position)} positions",
                throttle_duration_sec=5.0,
            )

    def _on_tick(self) -> None:
        now = self._now()
        tick = self.stream.tick(now)
        self._last_tick = tick
        if tick.commands is not None:
            self.rate_monitor.record(time.monotonic())
            self._publish_commands(now, tick.commands)
        self._log_mode_change(tick)

    def _publish_commands(self, now: float, commands: np.ndarray) -> None:
        stamp = seconds_to_stamp(now)
        for controller, message in self.builder.messages(stamp, commands):
            self.command_publishers[controller.name].publish(message)

    def destroy_node(self) -> None:
        # The process is ending (Ctrl-C, SIGTERM): a robot this node was commanding is left holding its
        # last command with the base stopped, as when a goal ends, not with a trajectory running out or a
        # base velocity the controller keeps until its timeout. The stream sees it as the goal's end.
        now = self._now()
        self.stream.on_status(False, self.stream.goal_id, now)
        tick = self.stream.tick(now)
        if tick.commands is not None:
            self._publish_commands(now, tick.commands)
            wait_for_delivery(self.command_publishers.values())
            self.get_logger().info("stopping: holding position")
        super().destroy_node()

    def _log_mode_change(self, tick: StreamTick) -> None:
        # A change of state is logged, but the same state (numbers left out: chunk sequences, ages) at most
        # every 10 s: with the wait hand-over and a slow model every chunk ends in a short hold.
        detail = self.stream.goal_id if tick.mode is StreamMode.STREAMING else re.sub(r"[0-9.]+", "#", tick.hold_reason)
        key = (tick.mode, detail)
        if key == self._last_logged:
            return
        self._last_logged = key
        now = time.monotonic()
        if now - self._logged_at.get(key, -math.inf) < 10.0:
            return
        # Only entries still inside the 10 s window matter (goal ids would otherwise accumulate).
        self._logged_at = {k: t for k, t in self._logged_at.items() if now - t < 10.0}
        self._logged_at[key] = now
        if tick.mode is StreamMode.STREAMING:
            self.get_logger().info(f"streaming goal {self.stream.goal_id[:8]}")
        elif tick.mode is StreamMode.HOLDING:
            self.get_logger().warning(f"holding position: {tick.hold_reason}")
        else:
            self.get_logger().info(f"idle: {tick.hold_reason}")

    def _publish_status(self) -> None:
        stats = self.rate_monitor.stats(time.monotonic())
        tick = self._last_tick
        status = StreamerStatus(
            mode=int(tick.mode),
            hold_reason=tick.hold_reason,
            goal_id=self.stream.goal_id,
            not_ready_reason=self.stream.start_problem(self._now()),
            commands_sent=self.stream.commands_sent,
            active_chunk_sequence=tick.chunk_sequence,
            command_rate_hz=stats.rate_hz,
            jitter_p99_ms=stats.jitter_p99_ms,
            clamped_commands=self.stream.clamped_commands,
        )
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_publisher.publish(status)

    def _publish_diagnostics(self) -> None:
        stats = self.rate_monitor.stats(time.monotonic())
        tick = self._last_tick
        level = DiagnosticStatus.WARN if tick.mode is StreamMode.HOLDING else DiagnosticStatus.OK
        summary = {
            StreamMode.IDLE: "idle",
            StreamMode.HOLDING: f"holding: {tick.hold_reason}",
            StreamMode.STREAMING: "streaming",
        }[tick.mode]
        values = {
            "mode": tick.mode.name.lower(),
            "hold_reason": tick.hold_reason,
            "goal_id": self.stream.goal_id,
            "commands_sent": str(self.stream.commands_sent),
            "clamped_commands": str(self.stream.clamped_commands),
            "command_rate_hz": f"{stats.rate_hz:.2f}",
            "jitter_p50_ms": f"{stats.jitter_p50_ms:.3f}",
            "jitter_p99_ms": f"{stats.jitter_p99_ms:.3f}",
            "max_gap_ms": f"{stats.max_gap_ms:.1f}",
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.get_name()}: commands",
                hardware_id=self.description.name,
                message=summary,
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        ]
        self.diagnostics_publisher.publish(array)


def main(args=None) -> NoReturn:
    spin_node(CommandStreamerNode, args=args)


if __name__ == "__main__":
    main()
