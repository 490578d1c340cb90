"""bag_to_dataset on bags recorded from the simulated ALOHA with the suite's recorder, in both storages.

A scripted operator runs one instruction goal on policy_status and streams
arm and gripper commands that move the simulated robot; the recorder takes
everything the robot description names plus policy_status. What the bag holds
depends on scheduling, so the checks compare the dataset with the bag itself:
each frame's images are close to recorded camera images of at most max_age
before the frame (which one exactly is checked on the testbot bags), its state
lies within the recorded joint positions, and both dataset versions read back
the same frames.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_bringup.sim_recording import SimRecording, SimRecordingSettings
from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import V21, V30, image_key
from pi0_msgs.msg import PolicyStatus
from pi0_ros.bag import BagReader
from pi0_ros.bag.recorder import robot_topics
from pi0_ros.bag.to_dataset import ConvertConfig, convert
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.ros.conversions import qos_profile
from pi0_ros.ros.image_conversion import image_msg_to_rgb
from support.robots import robot_yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]

INSTRUCTION = "wave both arms"
GOAL_ID = "5e" * 16
WIDTH, HEIGHT, CAMERA_RATE_HZ = 96, 72, 15.0
GOAL_START_S, GOAL_END_S, RECORD_S = 0.5, 2.5, 3.0


class Operator(Node):
    """Starts and ends one goal on policy_status and streams smooth commands to both arms and grippers."""

    def __init__(self, context, description) -> None:
        super().__init__("operator", context=context)
        self._description = description
        latched = qos_profile("reliable", 1, transient_local=True)
        self._status = self.create_publisher(PolicyStatus, "policy_status", latched)
        self._commands = {
            g.controller.name: self.create_publisher(
                JointTrajectory if g.controller.interface == "joint_trajectory" else Float64MultiArray,
                g.controller.topic,
                10,
            )
            for g in description.joint_groups
        }
        self._started = time.monotonic()
        self._phase = "before"
        self.create_timer(0.02, self._tick)

    def _tick(self) -> None:
        elapsed = time.monotonic() - self._started
        phase = "before" if elapsed < GOAL_START_S else "running" if elapsed < GOAL_END_S else "after"
        if phase != self._phase:
            self._phase = phase
            status = PolicyStatus(lifecycle_state="active", goal_active=phase == "running", goal_id=GOAL_ID)
            status.instruction = INSTRUCTION
            status.header.stamp = self.get_clock().now().to_msg()
            self._status.publish(status)
        for group in self._description.joint_groups:
            values = [j.home + 0.2 * math.sin(2.0 * elapsed + k) * min(1.0, j.upper - j.home, j.home - j.lower)
                      for k, j in enumerate(group.joints)]  # fmt: skip
            if group.controller.interface == "joint_trajectory":
                # stamp 0: start now (a stamped trajectory starting at its stamp would end in the past)
                point = JointTrajectoryPoint(positions=values, time_from_start=Duration(nanosec=20_000_000))
                message = JointTrajectory(joint_names=list(group.joint_names), points=[point])
            else:
                message = Float64MultiArray(data=values)
            self._commands[group.controller.name].publish(message)


def record_sim_bag(path: Path, storage: str) -> None:
    description = load_robot_description(robot_yaml("aloha"))
    settings = SimRecordingSettings(
        description,
        path,
        (*robot_topics(description), "policy_status"),
        storage=storage,
        image_size=(WIDTH, HEIGHT),
        camera_rate_hz=CAMERA_RATE_HZ,
    )
    with SimRecording(settings) as recording:
        recording.add(Operator(recording.context, description))
        started = time.monotonic()
        recording.spin_until(lambda: time.monotonic() - started >= RECORD_S, RECORD_S + 5.0, "the recording")


def recorded_images(bag: Path) -> dict[str, list[tuple[float, np.ndarray]]]:
    description = load_robot_description(robot_yaml("aloha"))
    images: dict[str, list[tuple[float, np.ndarray]]] = {}
    with BagReader(bag) as reader:
        for camera in description.policy_cameras:
            images[camera.name] = [
                (m.message.header.stamp.sec + m.message.header.stamp.nanosec * 1e-9, image_msg_to_rgb(m.message).copy())
                for m in reader.read([f"/{camera.topic}"])
            ]
    return images


def test_sim_bag_converts_to_frames_of_the_recording(tmp_path, storage):
    bag = tmp_path / "bag"
    record_sim_bag(bag, storage)
    description = load_robot_description(robot_yaml("aloha"))
    conversions = {
        version: convert(ConvertConfig((bag,), description, tmp_path / version, version=version))
        for version in (V21, V30)
    }
    report = conversions[V30].reports
    assert len(report) == 1 and report[0].written, report
    assert report[0].task == INSTRUCTION
    v21, v30 = DatasetReader(tmp_path / V21), DatasetReader(tmp_path / V30)
    assert len(v21) == len(v30) > 0 and v30.info.fps == 50 and v30.info.robot_type == "aloha"
    assert v30.info.video_keys == tuple(image_key(c.name) for c in description.policy_cameras)
    images = recorded_images(bag)
    start = report[0].start
    with BagReader(bag) as reader:
        samples = [dict(zip(m.message.name, m.message.position)) for m in reader.read(["/joint_states"])]
    positions = np.array([[sample[name] for name in description.policy.state] for sample in samples])
    for frame_v21, frame in zip(v21.episode_frames(0), v30.episode_frames(0)):
        np.testing.assert_array_equal(frame_v21.state, frame.state)
        np.testing.assert_array_equal(frame_v21.action, frame.action)
        t = start + frame.timestamp
        for camera, recorded in images.items():
            candidates = [rgb for stamp, rgb in recorded if t - 0.5 - 1e-6 <= stamp <= t + 1e-6]
            errors = [np.abs(frame.images[image_key(camera)].astype(int) - rgb).mean() for rgb in candidates]
            # one of the recorded images, through 4:2:0 H.264 at 96x72 (exact frame identity: test_to_dataset.py)
            assert min(errors) < 6.0
        assert np.all(positions.min(axis=0) - 1e-6 <= frame.state)
        assert np.all(frame.state <= positions.max(axis=0) + 1e-6)
