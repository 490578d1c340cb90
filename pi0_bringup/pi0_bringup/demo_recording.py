"""Scripted demonstrations of the demo instructions, recorded from the simulated robot as a bag.

The scripted operator plays pi0_bringup.demo_tasks' script on the robot's
controllers with the streamer's own message builder, and announces each
episode on policy_status as an instruction goal would, so bag_to_dataset cuts
the recording into one episode per demonstration with its instruction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy.logging
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.node import Node

from pi0_bringup.demo_tasks import ScriptSettings, ScriptTick, episodes, script
from pi0_bringup.sim_recording import SimRecording, SimRecordingSettings
from pi0_msgs.msg import PolicyStatus
from pi0_ros.bag.record import RECORDER_NODE
from pi0_ros.bag.recorder import robot_topics
from pi0_ros.core.robot_description import RobotDescription
from pi0_ros.ros.conversions import qos_profile
from pi0_ros.streamer.controller_commands import ControllerCommandBuilder, controller_message_class

LOOKAHEAD_POINTS = 5  # after "now" in each JointTrajectory, as the streamer's default
POLICY_STATUS = "policy_status"


class ScriptedOperator(Node):
    """Plays the script in real time: the commands due at each control period, the episodes as goals."""

    def __init__(
        self,
        context: Context,
        description: RobotDescription,
        settings: ScriptSettings,
        on_progress: Callable[[float], None] = lambda fraction: None,
    ) -> None:
        """on_progress: called with the fraction of the script played, at every further tenth."""
        super().__init__("pi0_scripted_operator", context=context)
        self._on_progress = on_progress
        self._description = description
        self._episodes = episodes(description, settings)
        self._ticks: list[ScriptTick] = list(script(description, self._episodes, settings))
        self._builder = ControllerCommandBuilder(description, description.control_period)
        self._status = self.create_publisher(
            PolicyStatus, POLICY_STATUS, qos_profile("reliable", 1, transient_local=True)
        )
        self._commands = {
            c.name: self.create_publisher(controller_message_class(c), c.topic, 10) for c in description.controllers
        }
        self._next = 0  # index of the next tick to play
        self._episode: int | None = None
        self._goal_id = ""
        self._started_ns = self.get_clock().now().nanoseconds
        self.create_timer(description.control_period, self._on_tick)

    @property
    def done(self) -> bool:
        return self._next >= len(self._ticks)

    def _on_tick(self) -> None:
        if self.done:
            return
        now = self.get_clock().now()
        due = int((now.nanoseconds - self._started_ns) * 1e-9 / self._description.control_period) + 1
        index = min(due, len(self._ticks)) - 1
        if index < self._next:
            return
        if (index + 1) * 10 // len(self._ticks) > self._next * 10 // len(self._ticks):
            self._on_progress((index + 1) / len(self._ticks))
        self._next = index + 1
        tick = self._ticks[index]
        if tick.episode != self._episode:
            self._announce(tick.episode, now.to_msg())
        rows = [self._ticks[min(index + k, len(self._ticks) - 1)].command for k in range(LOOKAHEAD_POINTS + 1)]
        for controller, message in self._builder.messages(now.to_msg(), np.stack(rows)):
            self._commands[controller.name].publish(message)
        if self.done and self._episode is not None:
            self._announce(None, now.to_msg())

    def _announce(self, episode: int | None, stamp: Time) -> None:
        """policy_status as the policy node publishes it around a goal: active with its instruction, then idle."""
        if episode is not None:
            self._goal_id = uuid.uuid4().hex
        status = PolicyStatus(lifecycle_state="active", goal_active=episode is not None, goal_id=self._goal_id)
        status.header.stamp = stamp
        if episode is not None:
            status.instruction = self._episodes[episode].instruction
        self._status.publish(status)
        self._episode = episode


def demonstration_topics(description: RobotDescription) -> tuple[str, ...]:
    """What bag_to_dataset needs: the policy cameras, joint states, commands, odometry, and policy_status."""
    unused = {c.topic for c in description.cameras if c.slot is None}
    return (*(t for t in robot_topics(description) if t not in unused), POLICY_STATUS)


def record_demonstrations(
    description: RobotDescription,
    bag: Path,
    settings: ScriptSettings,
    image_size: tuple[int, int],
    camera_rate_hz: float,
    report: Callable[[float], None] = lambda fraction: None,
) -> None:
    """Records the script played on the simulated robot into a new bag (real time: settings.duration_s)."""
    rclpy.logging.set_logger_level(RECORDER_NODE, rclpy.logging.LoggingSeverity.WARN)  # progress: `report`
    recording_settings = SimRecordingSettings(
        description,
        bag,
        demonstration_topics(description),
        image_size=image_size,
        camera_rate_hz=camera_rate_hz,
    )
    with SimRecording(recording_settings) as recording:
        operator = recording.add(ScriptedOperator(recording.context, description, settings, on_progress=report))
        recording.spin_until(lambda: operator.done, settings.duration_s + 30.0, "the scripted demonstrations")
        # The last episode's end (goal inactive) was published on the last tick: record it before closing.
        announcements = 2 * settings.episode_count
        recording.spin_until(
            lambda: recording.message_counts().get(f"/{POLICY_STATUS}", 0) >= announcements,
            5.0,
            "the last episode's end on policy_status",
        )
