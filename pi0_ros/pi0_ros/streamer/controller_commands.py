"""Turns action vectors into the messages ros2_control controllers expect.

One message per controller of the robot description, each holding only that
controller's joints in its own joint order:

- joint_trajectory_controller: a JointTrajectory stamped with the tick time
  whose points are the command now and a short lookahead sampled from the
  chunk. An absolute stamp (not 0) keeps the controller on our timeline
  instead of re-interpolating from its current state on every message, which
  is what makes naive 50 Hz streaming jiggle (REFERENCE.md §3).
- forward_position_controller: Float64MultiArray with one value per joint.
- diff_drive_controller: TwistStamped (or Twist) from the base dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist, TwistStamped
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_ros.core.robot_description import BASE_ACTION_NAMES, ControllerSpec, RobotDescription
from pi0_ros.ros.conversions import seconds_to_duration


def controller_message_class(controller: ControllerSpec) -> type:
    if controller.interface == "joint_trajectory":
        return JointTrajectory
    if controller.interface == "forward_position":
        return Float64MultiArray
    return TwistStamped if controller.stamped else Twist


@dataclass(frozen=True)
class _Route:
    controller: ControllerSpec
    joint_names: tuple[str, ...]
    indices: np.ndarray  # positions of this controller's dimensions in the action vector


class ControllerCommandBuilder:
    """Splits [points, dims] command arrays into one message per controller."""

    def __init__(self, description: RobotDescription, point_period: float) -> None:
        order = {name: i for i, name in enumerate(description.policy.actions)}
        self.point_period = point_period
        self.routes = [
            _Route(g.controller, g.joint_names, np.array([order[n] for n in g.joint_names]))
            for g in description.joint_groups
        ]
        if description.base is not None:
            self.routes.append(
                _Route(description.base.controller, BASE_ACTION_NAMES, np.array([order[n] for n in BASE_ACTION_NAMES]))
            )

    def messages(self, stamp: Time, commands: np.ndarray) -> list[tuple[ControllerSpec, Any]]:
        """commands: [points, dims]; row 0 is for `stamp`, row k for stamp + k * point_period."""
        if commands.ndim != 2 or commands.shape[0] < 2:
            raise ValueError(f"commands must be [points>=2, dims], got {commands.shape}")
        return [(route.controller, self._message(route, stamp, commands[:, route.indices])) for route in self.routes]

    def _message(self, route: _Route, stamp: Time, values: np.ndarray) -> Any:
        interface = route.controller.interface
        if interface == "joint_trajectory":
            return self._trajectory(route, stamp, values)
        if interface == "forward_position":
            return Float64MultiArray(data=[float(v) for v in values[0]])
        return self._twist(route, stamp, values[0])

    def _trajectory(self, route: _Route, stamp: Time, values: np.ndarray) -> JointTrajectory:
        message = JointTrajectory()
        message.header.stamp = stamp
        message.joint_names = list(route.joint_names)
        message.points = [
            JointTrajectoryPoint(
                positions=[float(v) for v in row],
                time_from_start=seconds_to_duration(k * self.point_period),
            )
            for k, row in enumerate(values)
        ]
        return message

    def _twist(self, route: _Route, stamp: Time, values: np.ndarray) -> Any:
        twist = Twist()
        twist.linear.x, twist.angular.z = float(values[0]), float(values[1])
        if not route.controller.stamped:
            return twist
        message = TwistStamped()
        message.header.stamp = stamp
        message.twist = twist
        return message
