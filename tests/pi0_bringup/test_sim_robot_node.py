"""The simulated robot node on a real DDS graph: real controller messages in, joint states, odometry and
images out at their rates; and the process exits cleanly on SIGINT/SIGTERM."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_bringup.sim_robot_node import SimRobotNode
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.ros.conversions import qos_profile, seconds_to_stamp
from pi0_ros.ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb
from pi0_ros.ros.parameters import ParameterError
from support.node_process import assert_clean_prompt_exit, start_node, stop_like_launch
from support.robots import robot_yaml

pytestmark = pytest.mark.ros

LEFT_ARM = ("left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle", "left_wrist_rotate")
WIDTH, HEIGHT = 64, 48


class Recorder:
    """Collects (receive time, message) per topic from a peer node."""

    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.messages: dict[str, list] = {}

    def subscribe(self, message_type, topic, qos):
        def store(message):
            with self.lock:
                self.messages.setdefault(topic, []).append((time.monotonic(), message))

        self.node.create_subscription(message_type, topic, store, qos)

    def count(self, topic, since=0.0):
        with self.lock:
            return sum(1 for t, _ in self.messages.get(topic, []) if t >= since)

    def last(self, topic):
        with self.lock:
            entries = self.messages.get(topic)
            return entries[-1][1] if entries else None


def start_sim(ros_graph, robot_name, **parameters):
    overrides = {
        "robot_description": str(robot_yaml(robot_name)),
        "image_width": WIDTH,
        "image_height": HEIGHT,
        **parameters,
    }
    return ros_graph.add(
        SimRobotNode(
            context=ros_graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]
        )
    )


def observe(ros_graph, robot_name, raw_images=True):
    """A peer node recording the sim's joint states, odometry and camera images."""
    description = load_robot_description(robot_yaml(robot_name))
    recorder = Recorder(ros_graph.node(f"observer_{robot_name}"))
    recorder.subscribe(JointState, "joint_states", qos_profile("reliable", 10))
    if description.base is not None:
        recorder.subscribe(Odometry, description.base.odometry_topic, qos_profile("reliable", 10))
    for camera in description.cameras:
        if raw_images:
            recorder.subscribe(Image, camera.topic, qos_profile("best_effort", 2))
    return description, recorder


def joint_position(recorder, name):
    message = recorder.last("joint_states")
    return None if message is None else message.position[list(message.name).index(name)]


def wait_for_traffic(ros_graph, recorder, topics):
    ros_graph.wait_for(lambda: all(recorder.count(t) > 0 for t in topics), what=f"messages on {topics}")


def assert_rates(recorder, expected_hz, window=1.5):
    """Counts every topic of `expected_hz` over one shared window."""
    start = time.monotonic()
    time.sleep(window)
    for topic, expected in expected_hz.items():
        rate = recorder.count(topic, since=start) / window
        # The publisher keeps its rate; the receiving Python node in this same busy process drops or delays
        # some best-effort images on a shared 2-core machine. Catch a wrong or stalled rate, not jitter.
        assert 0.6 * expected <= rate <= 1.2 * expected, f"{topic}: {rate:.1f} Hz, expected {expected}"


def test_aloha_publishes_at_its_rates_and_follows_real_controller_messages(ros_graph):
    description, recorder = observe(ros_graph, "aloha")
    sim = start_sim(ros_graph, "aloha")
    cameras = [c.topic for c in description.cameras]
    wait_for_traffic(ros_graph, recorder, ["joint_states", *cameras])

    message = recorder.last("joint_states")
    assert list(message.name) == list(description.joint_names)
    np.testing.assert_allclose(message.position, [j.home for j in description.joints])
    image = recorder.last("cam_high/image_raw")
    assert (image.width, image.height, image.encoding) == (WIDTH, HEIGHT, "rgb8")
    assert image.header.frame_id == "cam_high_optical_frame"
    wrist_before = image_msg_to_rgb(recorder.last("cam_left_wrist/image_raw")).copy()
    assert_rates(recorder, {"joint_states": 50.0, **{topic: 30.0 for topic in cameras}})

    peer = ros_graph.node("aloha_commander")
    trajectory_publisher = peer.create_publisher(JointTrajectory, "left_arm_controller/joint_trajectory", 10)
    gripper_publisher = peer.create_publisher(Float64MultiArray, "right_gripper_controller/commands", 10)
    ros_graph.wait_for(
        lambda: trajectory_publisher.get_subscription_count() and gripper_publisher.get_subscription_count(),
        what="the sim's controller subscriptions",
    )
    # Reordered joint names, stamp 0 ("start now").
    goal = {
        "left_wrist_rotate": 0.8,
        "left_waist": 0.3,
        "left_elbow": 1.0,
        "left_shoulder": -0.8,
        "left_forearm_roll": 0.1,
        "left_wrist_angle": -0.1,
    }
    trajectory_publisher.publish(
        JointTrajectory(
            joint_names=list(goal),
            points=[JointTrajectoryPoint(positions=list(goal.values()), time_from_start=Duration(nanosec=300_000_000))],
        )
    )
    gripper_publisher.publish(Float64MultiArray(data=[0.9]))
    ros_graph.wait_for(
        lambda: (
            all(abs(joint_position(recorder, n) - v) < 1e-6 for n, v in goal.items())
            and abs(joint_position(recorder, "right_gripper") - 0.9) < 1e-6
        ),
        timeout=5.0,
        what="the joints reaching the commanded positions",
    )
    time.sleep(0.1)
    wrist_after = image_msg_to_rgb(recorder.last("cam_left_wrist/image_raw"))
    assert np.mean(np.any(wrist_before != wrist_after, axis=2)) > 0.1, "the wrist camera view follows the arm"

    gripper_publisher.publish(Float64MultiArray(data=[0.1, 0.2]))  # wrong size: rejected, last command held
    ros_graph.wait_for(lambda: sim.robot.rejections.get("right_gripper_controller") == 1, what="the rejection")
    time.sleep(0.2)
    assert joint_position(recorder, "right_gripper") == pytest.approx(0.9)


def test_mobile_aloha_base_follows_twist_stamped_and_stops_on_timeout(ros_graph):
    description, recorder = observe(ros_graph, "mobile_aloha")
    start_sim(ros_graph, "mobile_aloha", camera_rate_hz=15.0, cmd_vel_timeout_s=0.3)
    odometry = description.base.odometry_topic
    wait_for_traffic(ros_graph, recorder, ["joint_states", odometry, "cam_high/image_raw"])
    assert_rates(recorder, {odometry: 50.0, "joint_states": 50.0, "cam_right_wrist/image_raw": 15.0})
    high_before = image_msg_to_rgb(recorder.last("cam_high/image_raw")).copy()

    peer = ros_graph.node("base_commander")
    publisher = peer.create_publisher(TwistStamped, description.base.controller.topic, 10)
    ros_graph.wait_for(lambda: publisher.get_subscription_count(), what="the sim's base subscription")
    command = TwistStamped()
    command.twist.linear.x, command.twist.angular.z = 0.4, 0.5
    for _ in range(40):  # 0.8 s at 50 Hz, stamp 0 = now
        publisher.publish(command)
        time.sleep(0.02)
    moving = recorder.last(odometry)
    assert moving.header.frame_id == "odom" and moving.child_frame_id == "base_link"
    assert moving.twist.twist.linear.x > 0.2 and moving.twist.twist.angular.z > 0.2
    assert moving.pose.pose.position.x > 0.05 and moving.pose.pose.orientation.z > 0.02
    # Timeout (0.3 s) plus deceleration (0.4 m/s at 1 m/s^2): stopped well within a second.
    ros_graph.wait_for(
        lambda: (
            recorder.last(odometry).twist.twist.linear.x == 0.0 and recorder.last(odometry).twist.twist.angular.z == 0.0
        ),
        timeout=2.0,
        what="the base stopping",
    )
    high_after = image_msg_to_rgb(recorder.last("cam_high/image_raw"))
    assert np.mean(np.any(high_before != high_after, axis=2)) > 0.05, "base motion pans the body camera"


def test_unstamped_base_takes_twist_on_cmd_vel_unstamped(ros_graph, tmp_path):
    # Humble's diff_drive_controller without stamps: geometry_msgs/Twist on ~/cmd_vel_unstamped.
    text = robot_yaml("mobile_aloha").read_text().replace("stamped: true", "stamped: false")
    assert "stamped: false" in text
    description_file = tmp_path / "mobile_aloha_unstamped.yaml"
    description_file.write_text(text)
    recorder = Recorder(ros_graph.node("unstamped_observer"))
    recorder.subscribe(Odometry, "base_controller/odom", qos_profile("reliable", 10))
    ros_graph.add(
        SimRobotNode(
            context=ros_graph.context,
            parameter_overrides=[
                Parameter("robot_description", value=str(description_file)),
                Parameter("camera_rate_hz", value=1.0),
                Parameter("image_width", value=16),
                Parameter("image_height", value=16),
            ],
        )
    )
    publisher = ros_graph.node("unstamped_commander").create_publisher(Twist, "base_controller/cmd_vel_unstamped", 10)
    ros_graph.wait_for(lambda: publisher.get_subscription_count(), what="the sim's unstamped base subscription")
    command = Twist()
    command.linear.x = 0.3
    for _ in range(25):
        publisher.publish(command)
        time.sleep(0.02)
    odometry = "base_controller/odom"
    ros_graph.wait_for(
        lambda: recorder.last(odometry) is not None and recorder.last(odometry).pose.pose.position.x > 0.02,
        what="the base moving forward",
    )


def test_compressed_images_override_publishes_on_image_transport_topics(ros_graph):
    _, recorder = observe(ros_graph, "franka", raw_images=False)
    recorder.subscribe(CompressedImage, "wrist_camera/image_raw/compressed", qos_profile("best_effort", 2))
    start_sim(ros_graph, "franka", compressed_images=True)
    wait_for_traffic(ros_graph, recorder, ["wrist_camera/image_raw/compressed"])
    message = recorder.last("wrist_camera/image_raw/compressed")
    assert message.format == "jpeg"
    assert compressed_msg_to_rgb(message).shape == (HEIGHT, WIDTH, 3)


def test_stamps_follow_sim_time(ros_graph):
    _, recorder = observe(ros_graph, "ur5e", raw_images=False)
    clock_publisher = ros_graph.node("clock_source").create_publisher(Clock, "/clock", 10)
    start_sim(ros_graph, "ur5e", use_sim_time=True)
    sim_time = 1000.0
    deadline = time.monotonic() + 10.0
    while recorder.count("joint_states") < 5 and time.monotonic() < deadline:
        sim_time += 0.01
        clock_publisher.publish(Clock(clock=seconds_to_stamp(sim_time)))
        time.sleep(0.005)
    message = recorder.last("joint_states")
    assert message is not None, "joint states are published as sim time advances"
    stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
    assert 1000.0 < stamp <= sim_time + 1e-6


def test_missing_robot_description_is_a_parameter_error(ros_graph):
    with pytest.raises(ParameterError, match="robot_description"):
        SimRobotNode(context=ros_graph.context)


def test_process_exits_cleanly_and_at_once_on_ctrl_c_under_launch(ros_graph):
    # Two signals in quick succession, as a node under `ros2 launch` may get them; the second used to kill
    # the process (exit -2) in 8 of 19 runs, hence several runs.
    _, recorder = observe(ros_graph, "aloha", raw_images=False)
    for first in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        process = start_node(
            "pi0_bringup.sim_robot_node",
            {"robot_description": robot_yaml("aloha"), "image_width": 32, "image_height": 24},
        )
        started = time.monotonic()
        ros_graph.wait_for(
            lambda: recorder.count("joint_states", since=started) > 5 or process.poll() is not None,
            timeout=20.0,
            what="joint states from the sim process",
        )
        assert process.poll() is None, process.communicate()[0]
        assert_clean_prompt_exit(stop_like_launch(process, first))


def test_process_reports_a_missing_description_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "pi0_bringup.sim_robot_node"],
        capture_output=True,
        text=True,
        timeout=20.0,
        env=dict(os.environ),
    )
    assert result.returncode == 2
    assert "robot_description" in result.stderr and "Traceback" not in result.stderr
