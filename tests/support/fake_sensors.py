"""Camera and joint-state publishers that behave like a robot's drivers (topics, types, QoS, rates)."""

from __future__ import annotations

import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from pi0_ros.core.robot_description import RobotDescription
from pi0_ros.ros.conversions import qos_profile
from pi0_ros.ros.image_conversion import rgb_to_image_msg


class FakeSensors:
    """Publishes every policy camera (best effort, 30 Hz) and the joint states (reliable, 100 Hz) of a
    description. `running` stops and restarts all streams, `stopped` (camera names and "joints") single
    ones; `state` is the published joint vector."""

    def __init__(
        self,
        node: Node,
        description: RobotDescription,
        width: int = 64,
        height: int = 48,
        camera_hz: float = 30.0,
        joint_hz: float = 100.0,
    ) -> None:
        self.node = node
        self.description = description
        self.running = threading.Event()
        self.running.set()
        self.stopped: set[str] = set()
        self.state = np.array([j.home for j in description.joints])
        self.frames = 0
        rng = np.random.default_rng(0)
        self._image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        cameras = qos_profile("best_effort", 2)
        self._cameras = [
            (c, node.create_publisher(type(rgb_to_image_msg(self._image)), c.topic, cameras))
            for c in description.policy_cameras
        ]
        self._joints = {
            t: node.create_publisher(JointState, t, qos_profile("reliable", 10)) for t in description.joint_state_topics
        }
        node.create_timer(1.0 / camera_hz, self._publish_images)
        node.create_timer(1.0 / joint_hz, self._publish_joints)

    def _publish_images(self) -> None:
        if not self.running.is_set():
            return
        stamp = self.node.get_clock().now().to_msg()
        for camera, publisher in self._cameras:
            if camera.name in self.stopped:
                continue
            publisher.publish(rgb_to_image_msg(self._image, "rgb8", stamp=stamp, frame_id=camera.name))
        self.frames += 1

    def _publish_joints(self) -> None:
        if not self.running.is_set() or "joints" in self.stopped:
            return
        stamp = self.node.get_clock().now().to_msg()
        for topic, publisher in self._joints.items():
            names = [j.name for g in self.description.joint_groups if g.joint_state_topic == topic for j in g.joints]
            message = JointState(
                name=names, position=[float(self.state[self.description.joint_names.index(n)]) for n in names]
            )
            message.header.stamp = stamp
            publisher.publish(message)
