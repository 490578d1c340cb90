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
from typing import NoReturn, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState

from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.core.chunk import Handover
from pi0_ros.streamer.command_limits import CommandLimiter
from pi0_ros.streamer.command_stream import CommandStream, StreamConfig, StreamMode, StreamTick
from pi0_ros.streamer.controller_commands import ControllerCommandBuilder, controller_message_class
from pi0_ros.ros.node_main import spin_node, wait_for_delivery
from pi0_ros.ros.parameters import NodeParameters, Param, ParameterError
from pi0_ros.core.rate_monitor import RateMonitor
from pi0_ros.core.robot_description import RobotDescription, load_robot_description
from pi0_ros.ros.conversions import duration_to_seconds, qos_profile, seconds_to_stamp, stamp_to_seconds

PARAMS = (
    Param("robot_description", "", "Path to the robot description YAML (joints, limits, controllers).",
          read_only=True),
    Param("control_rate_hz", 0.0, "Command rate; 0 uses the description's control_rate_hz.", 0.0, 1000.0),
    Param("chunk_handover", "splice", "How a new chunk takes over from the running one.",
          choices=tuple(h.value for h in Handover)),
    Param("blend_duration_s", 0.2, "Cross-fade time of the blend hand-over.", 0.01, 2.0),
    Param("trajectory_lookahead_points", 5, "Points after 'now' in each JointTrajectory (one control period apart).",
          1, 100),
    Param("status_timeout_s", 0.5, "Hold when the policy status is older than this.", 0.05, 10.0),
    Param("max_chunk_latency_s", 1.0, "Refuse chunks that arrive later than this after their observation.",
          0.01, 10.0),
    Param("hold_duration_s", 1.0, "Keep publishing the hold command this long after a goal ends.", 0.0, 60.0),
    Param("status_rate_hz", 10.0, "Rate of streamer_status (the policy accepts goals only while it hears it at "
          "least once a second) and of the command-rate statistics.", 2.0, 100.0),
    Param("joint_state_timeout_s", 0.5, "A goal starting from idle waits for joint states younger than this.",
          0.01, 10.0),
    Param("joint_position_tolerance", 0.05, "A measured position this far past a joint limit (rad or m) is still "
          "a plausible start pose; farther, or a jump faster than the joint can move, makes a goal wait.",
          0.0, 1.0),
    Param("joint_state_qos_reliability", "reliable", "QoS reliability of the joint state subscriptions.",
          choices=("reliable", "best_effort")),
    Param("command_qos_depth", 1, "QoS depth of the controller command publishers (reliable).", 1, 100),
    Param("realtime_priority", 0, "SCHED_FIFO priority (1-99) for this process, as ros2_control's controller "
          "manager uses; 0 keeps normal scheduling. Needs CAP_SYS_NICE or an rtprio limit.", 0, 99,
          read_only=True),
)


class CommandStreamerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_command_streamer", **kwargs)
        values = NodeParameters(self, PARAMS).read()
        if values["realtime_priority"]:
            self._use_realtime_scheduling(values["realtime_priority"])
        description = load_robot_description(values["robot_description"])
        rate = values["control_rate_hz"] or description.control_rate_hz
        period = 1.0 / rate
        self.description = description
        self.stream = CommandStream(_stream_config(values, period), CommandLimiter.for_robot(description, period),
                                    description.policy.actions)
        self.builder = ControllerCommandBuilder(description, period)
        # A 2 s window: an idle streamer reads 0 Hz soon after it stops, as a monitor expects.
        self.rate_monitor = RateMonitor(period, max_age=2.0)
        self._last_logged: Optional[tuple[StreamMode, str]] = None
        self._logged_at: dict[tuple[StreamMode, str], float] = {}  # monotonic time each state was logged
        self._last_tick = StreamTick(StreamMode.IDLE, "starting", None)
        self._create_interfaces(description, values, period)

    def _use_realtime_scheduling(self, priority: int) -> None:
        """Keeps the 50 Hz loop on time when inference and rendering load every core."""
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (AttributeError, OSError) as exc:
            self.get_logger().warning(
                f"could not use SCHED_FIFO priority {priority} ({exc}); commands may jitter under load. "
                "Grant it with an rtprio limit (/etc/security/limits.conf) or CAP_SYS_NICE.")
        else:
            self.get_logger().info(f"running with SCHED_FIFO priority {priority}")

    def _create_interfaces(self, description: RobotDescription, values: dict, period: float) -> None:
        command_qos = qos_profile("reliable", values["command_qos_depth"])
        self.command_publishers = {
            c.name: self.create_publisher(controller_message_class(c), c.topic, command_qos)
            for c in description.controllers
        }
        self.status_publisher = self.create_publisher(StreamerStatus, "streamer_status", qos_profile("reliable", 10))
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos_profile("reliable", 10))
        self.create_subscription(PolicyStatus, "policy_status", self._on_policy_status,
                                 qos_profile("reliable", 1, transient_local=True))
        joint_qos = qos_profile(values["joint_state_qos_reliability"], 10)
        for topic in description.joint_state_topics:
            self.create_subscription(JointState, topic, self._on_joint_state, joint_qos)
        self.create_timer(period, self._on_tick)
        self.create_timer(1.0 / values["status_rate_hz"], self._publish_status)
        self.create_timer(1.0, self._publish_diagnostics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_policy_status(self, message: PolicyStatus) -> None:
        self.stream.on_status(message.goal_active, message.goal_id, self._now())

    def _on_chunk(self, message: ActionChunk) -> None:
        refusal = self.stream.on_chunk(
            message.goal_id, message.sequence, stamp_to_seconds(message.header.stamp),
            duration_to_seconds(message.step_period), message.names, message.actions, self._now())
        if refusal:
            self.get_logger().warning(refusal, throttle_duration_sec=1.0)

    def _on_joint_state(self, message: JointState) -> None:
        if len(message.name) == len(message.position):
            problems = self.stream.on_joint_positions(dict(zip(message.name, message.position)), self._now())
            if problems:
                self.get_logger().warning(f"ignoring implausible joint states: {'; '.join(problems)}",
                                          throttle_duration_sec=5.0)
        else:
            self.get_logger().warning(
                f"ignoring JointState with {len(message.name)} names and {len(message.position)} positions",
                throttle_duration_sec=5.0)

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
        summary = {StreamMode.IDLE: "idle", StreamMode.HOLDING: f"holding: {tick.hold_reason}",
                   StreamMode.STREAMING: "streaming"}[tick.mode]
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
        array.status = [DiagnosticStatus(
            level=level, name=f"{self.get_name()}: commands", hardware_id=self.description.name, message=summary,
            values=[KeyValue(key=k, value=v) for k, v in values.items()])]
        self.diagnostics_publisher.publish(array)


def _stream_config(values: dict, period: float) -> StreamConfig:
    try:
        return StreamConfig(
            control_period=period,
            lookahead_points=values["trajectory_lookahead_points"],
            status_timeout=values["status_timeout_s"],
            max_chunk_latency=values["max_chunk_latency_s"],
            hold_duration=values["hold_duration_s"],
            handover=Handover.parse(values["chunk_handover"]),
            blend_duration=values["blend_duration_s"],
            joint_state_timeout=values["joint_state_timeout_s"],
            position_tolerance=values["joint_position_tolerance"],
        )
    except ValueError as exc:  # settings valid one by one but not together (e.g. a slow control rate)
        raise ParameterError(f"{exc}; control_rate_hz is {1.0 / period:g}") from exc


def main(args=None) -> NoReturn:
    spin_node(CommandStreamerNode, args=args)


if __name__ == "__main__":
    main()
