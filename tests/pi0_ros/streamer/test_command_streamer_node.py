"""The command streamer node on a real DDS graph."""

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.ros.conversions import qos_profile, seconds_to_stamp, stamp_to_seconds
from support.node_process import assert_clean_prompt_exit, start_node, stop_like_launch
from support.robots import robot_yaml

pytestmark = pytest.mark.ros


class Recorder:
    """Collects (receive time, message) per topic."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages: dict[str, list] = {}

    def callback(self, topic):
        def store(message):
            with self.lock:
                self.messages.setdefault(topic, []).append((time.monotonic(), message))

        return store

    def count(self, topic):
        with self.lock:
            return len(self.messages.get(topic, []))

    def last(self, topic):
        with self.lock:
            return self.messages[topic][-1][1]

    def since(self, topic, start):
        with self.lock:
            return [m for t, m in self.messages.get(topic, []) if t >= start]

    def clear(self):
        with self.lock:
            self.messages.clear()


def start_streamer():
    # status_timeout_s 2 s: the test's Python peer sends policy_status at 10 Hz, and a loaded 2-core machine
    # can starve it for half a second (the default timeout), which would end goals as "policy node lost".
    parameters = {"robot_description": robot_yaml("mobile_aloha"), "hold_duration_s": 0.3, "status_timeout_s": 2.0}
    return start_node("pi0_ros.streamer.node", parameters)


@pytest.fixture
def streamer_graph(ros_graph):
    """The streamer in its own process, as deployed; the test plays policy, robot and controllers."""
    description = load_robot_description(robot_yaml("mobile_aloha"))
    streamer = start_streamer()
    try:
        peer = ros_graph.node("streamer_peer")
        recorder = Recorder()
        reliable = qos_profile("reliable", 10)
        types = {
            "joint_trajectory": JointTrajectory,
            "forward_position": Float64MultiArray,
            "base_velocity": TwistStamped,
        }
        for controller in description.controllers:
            peer.create_subscription(
                types[controller.interface], controller.topic, recorder.callback(controller.topic), reliable
            )
        peer.create_subscription(StreamerStatus, "streamer_status", recorder.callback("streamer_status"), reliable)
        publishers = {
            "status": peer.create_publisher(PolicyStatus, "policy_status", qos_profile("reliable", 1, True)),
            "chunk": peer.create_publisher(ActionChunk, "action_chunk", reliable),
            "joints": peer.create_publisher(JointState, "joint_states", reliable),
        }
        ros_graph.wait_for(
            lambda: publishers["chunk"].get_subscription_count() > 0 and recorder.count("streamer_status") > 0,
            timeout=20.0,
            what="streamer discovery",
        )
        fake_policy = FakePolicy(description, peer, publishers)
        peer.create_timer(0.1, fake_policy.publish)
        yield description, fake_policy, recorder
    finally:
        streamer.send_signal(signal.SIGINT)
        output, _ = streamer.communicate(timeout=10)
    assert streamer.returncode == 0 and "Traceback" not in output, output


class FakePolicy:
    """Plays the policy node and the robot: status at 10 Hz, a fresh chunk of `rows` every 0.1 s while
    active, and joint states at the home pose."""

    def __init__(self, description, node, publishers):
        self.description, self.node, self.publishers = description, node, publishers
        self.active = False
        self.rows = None
        self.home = np.array([j.home for j in description.joints])
        self.measured = self.home  # joint states the fake robot reports
        self.sequence = 0

    def set(self, active, rows=None):
        self.active, self.rows = active, rows
        self.publish()

    def publish(self):
        self.publishers["joints"].publish(
            JointState(name=list(self.description.joint_names), position=list(self.measured))
        )
        self.publishers["status"].publish(PolicyStatus(goal_active=self.active, goal_id=GOAL, lifecycle_state="active"))
        if self.active and self.rows is not None:
            self.sequence += 1
            self.publishers["chunk"].publish(
                make_chunk(self.description, now_s(self.node), self.rows, sequence=self.sequence)
            )


def now_s(node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


GOAL = "a" * 32


def make_chunk(description, stamp, rows, goal_id=GOAL, sequence=1):
    chunk = ActionChunk(
        goal_id=goal_id,
        sequence=sequence,
        names=list(description.policy.actions),
        step_period=Duration(nanosec=20_000_000),
        horizon=rows.shape[0],
    )
    chunk.header.stamp = seconds_to_stamp(stamp)
    chunk.actions = [float(v) for v in rows.ravel()]
    return chunk


def streamer_status(recorder):
    return recorder.count("streamer_status") and recorder.last("streamer_status")


def test_no_command_before_a_goal_then_every_controller_streams_at_the_control_rate(streamer_graph, ros_graph):
    description, policy, recorder = streamer_graph
    time.sleep(0.3)
    assert all(recorder.count(c.topic) == 0 for c in description.controllers), "commands before any goal"

    target = np.concatenate([policy.home, [0.01, 0.0]])
    target[0] += 0.01  # left_waist, within one tick of velocity limit; base 0.01 m/s within one tick of accel
    policy.set(True, np.tile(target, (50, 1)))
    ros_graph.wait_for(
        lambda: all(recorder.count(c.topic) > 0 for c in description.controllers),
        what="commands on every controller topic",
    )
    recorder.clear()
    time.sleep(1.0)
    # The rate from the streamer's own tick stamps, not from arrivals in a wall-clock window (a loaded
    # 2-core machine delays deliveries): the median tick interval catches a wrong rate (25 or 100 Hz);
    # the runtime benchmark measures rate and jitter precisely. Every controller gets every tick.
    stamps = [stamp_to_seconds(m.header.stamp) for m in recorder.since("left_arm_controller/joint_trajectory", 0.0)]
    assert len(stamps) >= 20, len(stamps)
    assert np.median(np.diff(stamps)) == pytest.approx(description.control_period, abs=0.004)
    counts = [recorder.count(c.topic) for c in description.controllers]
    assert max(counts) - min(counts) <= 2, dict(zip((c.topic for c in description.controllers), counts))
    trajectory = recorder.last("left_arm_controller/joint_trajectory")
    assert trajectory.header.stamp.sec > 0, "stamped trajectories, not 'start now'"
    assert trajectory.points[0].positions[0] == pytest.approx(target[0])
    assert list(recorder.last("left_gripper_controller/commands").data) == pytest.approx([target[6]])
    twist = recorder.last("base_controller/cmd_vel").twist
    assert (twist.linear.x, twist.angular.z) == pytest.approx((0.01, 0.0))
    status = ros_graph.wait_for(lambda: streamer_status(recorder), what="streamer status")
    assert status.mode == StreamerStatus.MODE_STREAMING and status.commands_sent > 20


def test_goal_end_holds_position_stops_the_base_then_goes_quiet(streamer_graph, ros_graph):
    description, policy, recorder = streamer_graph
    policy.set(True, np.tile(np.concatenate([policy.home, [0.02, 0.0]]), (50, 1)))
    ros_graph.wait_for(lambda: recorder.count("base_controller/cmd_vel") > 3, what="streaming")
    policy.set(False)

    def holding():
        status = streamer_status(recorder)
        return status and status.mode == StreamerStatus.MODE_HOLDING and status

    status = ros_graph.wait_for(holding, timeout=2.0, what="holding status")
    assert status.hold_reason.startswith("goal ") and status.hold_reason.endswith(" ended (policy status)")
    assert recorder.last("base_controller/cmd_vel").twist.linear.x == 0.0, "base stops on goal end"
    held = recorder.last("left_arm_controller/joint_trajectory")
    assert all(list(p.positions) == list(held.points[0].positions) for p in held.points)
    # hold_duration_s is 0.3: then nothing more, not even late deliveries, for half a second.
    ros_graph.wait_for(
        lambda: not recorder.since("left_arm_controller/joint_trajectory", time.monotonic() - 0.5),
        timeout=5.0,
        what="quiet after hold_duration",
    )
    ros_graph.wait_for(lambda: streamer_status(recorder).mode == StreamerStatus.MODE_IDLE, what="idle status")


def test_refused_chunks_keep_the_robot_holding_at_the_measured_pose(streamer_graph, ros_graph):
    description, policy, recorder = streamer_graph
    policy.set(True, np.full((50, 16), np.nan))

    def holding():
        status = streamer_status(recorder)
        return status and status.mode == StreamerStatus.MODE_HOLDING and status

    status = ros_graph.wait_for(holding, what="holding status")
    assert "no chunk received" in status.hold_reason
    ros_graph.wait_for(lambda: recorder.count("left_arm_controller/joint_trajectory"), what="hold command")
    held = recorder.last("left_arm_controller/joint_trajectory").points[0].positions
    assert list(held) == pytest.approx(list(policy.home[:6]))


def test_implausible_joint_states_make_a_goal_wait_and_never_command_a_jump(streamer_graph, ros_graph):
    """A driver reporting finite positions far outside the limits (a unit error) is no start pose."""
    description, policy, recorder = streamer_graph
    waist = description.joint("left_waist")
    policy.measured = policy.home.copy()
    policy.measured[0] = waist.upper + 3.5
    time.sleep(0.8)  # the plausible home pose of before is older than joint_state_timeout_s (0.5 s)
    policy.set(True, np.tile(np.concatenate([policy.home, [0.0, 0.0]]), (50, 1)))

    def waiting():
        status = streamer_status(recorder)
        return status and status.goal_id == GOAL and "plausible joint states" in status.hold_reason and status

    status = ros_graph.wait_for(waiting, what="a hold reason naming the implausible joint")
    assert "left_waist" in status.hold_reason and status.mode == StreamerStatus.MODE_HOLDING
    time.sleep(0.5)
    assert recorder.count("left_arm_controller/joint_trajectory") == 0, "nothing moves without a start pose"

    policy.measured = policy.home  # the driver is fixed: the goal starts from the real pose
    ros_graph.wait_for(lambda: recorder.count("left_arm_controller/joint_trajectory"), what="commands")
    first = recorder.messages["left_arm_controller/joint_trajectory"][0][1].points[0].positions[0]
    assert abs(first - policy.home[0]) <= waist.max_velocity * 0.02 + 1e-9


def test_parameters_come_from_a_yaml_file_and_bad_values_are_refused_clearly(tmp_path, ros_graph):
    description = load_robot_description(robot_yaml("ur5e"))
    tuning = tmp_path / "ur5e_tuning.yaml"
    tuning.write_text("/**/pi0_command_streamer:\n  ros__parameters:\n    trajectory_lookahead_points: 2\n")
    streamer = start_node("pi0_ros.streamer.node", {"robot_description": robot_yaml("ur5e")}, params_file=tuning)
    try:
        peer = ros_graph.node("yaml_peer")
        trajectories = []
        peer.create_subscription(
            JointTrajectory,
            description.joint_groups[0].controller.topic,
            trajectories.append,
            qos_profile("reliable", 10),
        )
        publishers = {
            "status": peer.create_publisher(PolicyStatus, "policy_status", qos_profile("reliable", 1, True)),
            "chunk": peer.create_publisher(ActionChunk, "action_chunk", qos_profile("reliable", 10)),
            "joints": peer.create_publisher(JointState, "joint_states", qos_profile("reliable", 10)),
        }
        ros_graph.wait_for(
            lambda: publishers["chunk"].get_subscription_count() > 0, timeout=20.0, what="streamer discovery"
        )
        policy = FakePolicy(description, peer, publishers)
        peer.create_timer(0.1, policy.publish)
        policy.set(True, np.tile(policy.home, (50, 1)))
        message = ros_graph.wait_for(lambda: trajectories and trajectories[-1], what="a trajectory")
        assert len(message.points) == 3, "now plus the 2 lookahead points set in the YAML file"
    finally:
        streamer.send_signal(signal.SIGINT)
        streamer.communicate(timeout=10)

    tuning.write_text(
        "/**/pi0_command_streamer:\n  ros__parameters:\n    trajectory_lookahead_points: 500\n"
        "    chunk_handover: teleport\n"
    )
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pi0_ros.streamer.node",
            "--ros-args",
            "--params-file",
            str(tuning),
            "-p",
            f"robot_description:={robot_yaml('ur5e')}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "trajectory_lookahead_points" in refused.stderr and "'teleport' is not one of" in refused.stderr


def test_ctrl_c_under_launch_stops_the_process_at_once_leaving_the_robot_held(ros_graph):
    # Each run gets two signals in quick succession, as a node under `ros2 launch` may; repeated because
    # the crash this guards against (rclpy's signal thread, SIGSEGV) came in 4 of 19 runs.
    description = load_robot_description(robot_yaml("mobile_aloha"))
    peer = ros_graph.node("shutdown_peer")
    recorder = Recorder()
    arm, base = "left_arm_controller/joint_trajectory", "base_controller/cmd_vel"
    peer.create_subscription(JointTrajectory, arm, recorder.callback(arm), qos_profile("reliable", 10))
    peer.create_subscription(TwistStamped, base, recorder.callback(base), qos_profile("reliable", 10))
    reliable = qos_profile("reliable", 10)
    policy = FakePolicy(
        description,
        peer,
        {
            "status": peer.create_publisher(PolicyStatus, "policy_status", qos_profile("reliable", 1, True)),
            "chunk": peer.create_publisher(ActionChunk, "action_chunk", reliable),
            "joints": peer.create_publisher(JointState, "joint_states", reliable),
        },
    )
    peer.create_timer(0.1, policy.publish)
    policy.set(True, np.tile(np.concatenate([policy.home, [0.02, 0.0]]), (50, 1)))
    for first in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        recorder.clear()
        streamer = start_streamer()
        ros_graph.wait_for(
            lambda: any(m.twist.linear.x > 0 for m in recorder.since(base, 0.0)),
            timeout=30.0,
            what="the base streaming",
        )
        signalled = time.monotonic()
        assert_clean_prompt_exit(stop_like_launch(streamer, first))
        # Its last commands, published after the signal: hold the arm where it is and stop the base.
        ros_graph.wait_for(
            lambda: recorder.since(base, signalled) and recorder.since(arm, signalled), what="commands after the signal"
        )
        assert recorder.last(base).twist.linear.x == 0.0, f"base still driving after {first.name}"
        held = recorder.last(arm).points
        assert all(list(p.positions) == list(held[0].positions) for p in held), "the arm holds still"
