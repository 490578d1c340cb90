"""pi0_sim_robot: a simulated robot that stands in for ros2_control and the cameras.

Subscribes to every controller topic of the robot description with the message
types and QoS of the real controllers, steps :class:`SimRobot` and publishes
joint states (and base odometry) at the control rate, and renders every
camera with :class:`SceneRenderer` from the newest immutable state snapshot.

It spins on a SingleThreadedExecutor: rclpy's MultiThreadedExecutor stalled
this node for up to 0.4 s under load (the policy then, rightly, ended goals on
stale observations), while rendering inline delays joint states by at most a
frame's few milliseconds.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import qos_profile_system_default
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from pi0_bringup.sim_render import SceneRenderer
from pi0_bringup.sim_robot import CommandRejected, SimConfig, SimRobot, SimState, TrajectoryPoint
from pi0_ros.core.robot_description import CameraSpec, ControllerSpec, RobotDescription, load_robot_description
from pi0_ros.ros.conversions import duration_to_seconds, qos_profile, stamp_to_seconds
from pi0_ros.ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from pi0_ros.ros.node_main import spin_node
from pi0_ros.ros.parameters import ParameterError, declare_and_read, param, parameter_specs


def _required(path: str) -> str | None:
    return None if path else "required (path to the robot YAML)"


@dataclass(frozen=True)
class SimRobotParameters:
    robot_description: str = param(
        "", "Path to the robot description YAML (required).", read_only=True, check=_required
    )
    joint_state_rate_hz: float = param(
        0.0,
        "Physics step and joint state/odometry publish rate; 0 uses the description's control_rate_hz.",
        range=(0.0, 1000.0),
        read_only=True,
    )
    camera_rate_hz: float = param(
        30.0, "Render rate of every camera; 0 uses each camera's rate_hz.", range=(0.0, 120.0), read_only=True
    )
    image_width: int = param(
        0, "Rendered image width in pixels; 0 uses each camera's width.", range=(0, 4096), read_only=True
    )
    image_height: int = param(
        0, "Rendered image height in pixels; 0 uses each camera's height.", range=(0, 4096), read_only=True
    )
    acceleration_time_s: float = param(
        SimConfig.acceleration_time,
        "Time a joint needs to reach max_velocity from rest (its acceleration limit).",
        range=(0.001, 10.0),
        read_only=True,
    )
    cmd_vel_timeout_s: float = param(
        SimConfig.cmd_vel_timeout,
        "Base commands older than this stop the base (diff_drive cmd_vel_timeout).",
        range=(0.01, 10.0),
        read_only=True,
    )
    allow_partial_joints_goal: bool = param(
        SimConfig.allow_partial_joints_goal,
        "Accept trajectories that name a subset of a controller's joints.",
        read_only=True,
    )

    def sim_config(self) -> SimConfig:
        return SimConfig(
            acceleration_time=self.acceleration_time_s,
            cmd_vel_timeout=self.cmd_vel_timeout_s,
            allow_partial_joints_goal=self.allow_partial_joints_goal,
        )


PARAMS = parameter_specs(SimRobotParameters)  # as declared (e.g. to check a parameters file)
# Declared apart from SimRobotParameters: left unset, each camera keeps its description's choice.
COMPRESSED_IMAGES = "compressed_images"

ODOM_FRAME = "odom"  # diff_drive_controller's default frames
BASE_FRAME = "base_link"


class SimRobotNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_sim_robot", **kwargs)
        params = declare_and_read(self, SimRobotParameters)
        compressed_override = self._declare_compressed_images()
        description = load_robot_description(params.robot_description)
        self.robot = SimRobot(description, params.sim_config())
        self.renderer = SceneRenderer(description, params.image_width, params.image_height)
        self.robot.step(self._now())
        self._state = self.robot.state()
        self._subscribe_controllers(description)
        self._create_state_publishers(description, params.joint_state_rate_hz or description.control_rate_hz)
        self._create_cameras(description, params.camera_rate_hz, compressed_override)
        self.get_logger().info(
            f"simulating '{description.name}': {len(description.joints)} joints, "
            f"{len(description.cameras)} cameras{', mobile base' if description.base else ''}"
        )

    def _declare_compressed_images(self) -> bool | None:
        descriptor = ParameterDescriptor(
            name=COMPRESSED_IMAGES,
            read_only=True,
            description="Publish every camera as CompressedImage (true) or Image (false); unset follows the "
            "description. A camera switched away from its description's kind publishes on the "
            "image_transport topic of that kind (<raw topic>/compressed).",
        )
        try:
            return self.declare_parameter(COMPRESSED_IMAGES, Parameter.Type.BOOL, descriptor).value
        except InvalidParameterTypeException as exc:
            raise ParameterError(f"invalid parameters: {COMPRESSED_IMAGES}: {exc}") from None

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # Commands -----------------------------------------------------------------------------------

    def _subscribe_controllers(self, description: RobotDescription) -> None:
        # The controllers' own subscriptions use the system default QoS (reliable).
        for controller in description.controllers:
            message_type, handler = self._command_handler(controller)
            self.create_subscription(
                message_type, controller.topic, functools.partial(handler, controller.name), qos_profile_system_default
            )

    def _command_handler(self, controller: ControllerSpec) -> tuple[type, Callable[[str, Any], None]]:
        if controller.interface == "joint_trajectory":
            return JointTrajectory, self._on_trajectory
        if controller.interface == "forward_position":
            return Float64MultiArray, self._on_positions
        return (TwistStamped, self._on_twist_stamped) if controller.stamped else (Twist, self._on_twist)

    def _on_trajectory(self, controller: str, msg: JointTrajectory) -> None:
        points = [
            TrajectoryPoint(duration_to_seconds(p.time_from_start), tuple(p.positions), tuple(p.velocities))
            for p in msg.points
        ]
        with self._rejections_logged(controller):
            self.robot.command_trajectory(
                controller, list(msg.joint_names), points, _stamp_or_none(msg.header.stamp), self._now()
            )

    def _on_positions(self, controller: str, msg: Float64MultiArray) -> None:
        with self._rejections_logged(controller):
            self.robot.command_positions(controller, msg.data)

    def _on_twist_stamped(self, controller: str, msg: TwistStamped) -> None:
        with self._rejections_logged(controller):
            self.robot.command_base(
                msg.twist.linear.x, msg.twist.angular.z, _stamp_or_none(msg.header.stamp), self._now()
            )

    def _on_twist(self, controller: str, msg: Twist) -> None:
        with self._rejections_logged(controller):
            self.robot.command_base(msg.linear.x, msg.angular.z, None, self._now())

    @contextmanager
    def _rejections_logged(self, controller: str) -> Iterator[None]:
        try:
            yield
        except CommandRejected as exc:
            count = self.robot.rejections.get(controller, 0)
            self.get_logger().warning(
                f"{controller}: rejected command ({count} so far): {exc}", throttle_duration_sec=1.0
            )

    # Joint states and odometry ------------------------------------------------------------------

    def _create_state_publishers(self, description: RobotDescription, rate_hz: float) -> None:
        state_qos = qos_profile("reliable", 10)
        self._joint_state_publishers: list[tuple[Publisher, list[int]]] = []
        names = description.joint_names
        for topic in description.joint_state_topics:
            # Groups that share a topic are published together, like one joint_state_broadcaster.
            joints = [j.name for g in description.joint_groups if g.joint_state_topic == topic for j in g.joints]
            publisher = self.create_publisher(JointState, topic, state_qos)
            self._joint_state_publishers.append((publisher, [names.index(j) for j in joints]))
        self._odometry_publisher = (
            self.create_publisher(Odometry, description.base.odometry_topic, state_qos) if description.base else None
        )
        self.create_timer(1.0 / rate_hz, self._on_step)

    def _on_step(self) -> None:
        now = self.get_clock().now()
        self.robot.step(now.nanoseconds * 1e-9)
        state = self.robot.state()
        self._state = state
        stamp = now.to_msg()
        for publisher, indices in self._joint_state_publishers:
            msg = JointState(
                name=[state.joint_names[i] for i in indices],
                position=state.positions[indices].tolist(),
                velocity=state.velocities[indices].tolist(),
            )
            msg.header.stamp = stamp
            publisher.publish(msg)
        if self._odometry_publisher is not None:
            self._odometry_publisher.publish(_odometry(state, stamp))

    # Cameras ------------------------------------------------------------------------------------

    def _create_cameras(self, description: RobotDescription, rate_hz: float, compressed: bool | None) -> None:
        # Camera images are sensor data: best effort, shallow.
        image_qos = qos_profile("best_effort", 2)
        self._camera_publishers: dict[str, tuple[Publisher, bool]] = {}
        by_rate: dict[float, list[CameraSpec]] = defaultdict(list)
        for camera in description.cameras:
            as_compressed = camera.compressed if compressed is None else compressed
            publisher = self.create_publisher(
                CompressedImage if as_compressed else Image, _camera_topic(camera, as_compressed), image_qos
            )
            self._camera_publishers[camera.name] = (publisher, as_compressed)
            by_rate[rate_hz or camera.rate_hz].append(camera)
        for rate, cameras in by_rate.items():
            names = [c.name for c in cameras]
            self.create_timer(1.0 / rate, lambda names=names: self._on_cameras(names))

    def _on_cameras(self, cameras: list[str]) -> None:
        state = self._state
        stamp = self.get_clock().now().to_msg()
        for name in cameras:
            rgb = self.renderer.render(name, state)  # [H, W, 3] uint8
            publisher, compressed = self._camera_publishers[name]
            frame = f"{name}_optical_frame"
            publisher.publish(
                rgb_to_compressed_msg(rgb, stamp=stamp, frame_id=frame)
                if compressed
                else rgb_to_image_msg(rgb, stamp=stamp, frame_id=frame)
            )


def _camera_topic(camera: CameraSpec, compressed: bool) -> str:
    """The camera's topic for the chosen kind: image_transport's <raw>/compressed naming when switched."""
    if compressed == camera.compressed:
        return camera.topic
    if compressed:
        return f"{camera.topic}/compressed"
    suffix = "/compressed"
    return camera.topic[: -len(suffix)] if camera.topic.endswith(suffix) else f"{camera.topic}/raw"


def _stamp_or_none(stamp: Time) -> float | None:
    """A zero header stamp means "now" to the real controllers."""
    return None if stamp.sec == 0 and stamp.nanosec == 0 else stamp_to_seconds(stamp)


def _odometry(state: SimState, stamp: Time) -> Odometry:
    base = state.base
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = ODOM_FRAME
    msg.child_frame_id = BASE_FRAME
    msg.pose.pose.position.x = base.x
    msg.pose.pose.position.y = base.y
    msg.pose.pose.orientation = Quaternion(z=math.sin(base.yaw / 2), w=math.cos(base.yaw / 2))
    msg.twist.twist.linear.x = base.linear_x
    msg.twist.twist.angular.z = base.angular_z
    return msg


def main(args: list[str] | None = None) -> NoReturn:
    spin_node(SimRobotNode, args=args)


if __name__ == "__main__":
    main()
