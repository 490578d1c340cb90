"""ObservationSource on a real DDS graph: real publishers in, synchronized observations and diagnostics out."""

import array

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState

from pi0_ros.core.robot_description import load_robot_description, parse_robot_description
from pi0_ros.policy.observation_source import (
    ObservationSource,
    ObservationSourceParams,
    QosSettings,
    state_joint_topics,
)
from pi0_ros.policy.observation_sync import SyncLimits, SyncStatus
from pi0_ros.ros.conversions import qos_profile, seconds_to_stamp
from pi0_ros.ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from support.robots import robot_yaml

pytestmark = pytest.mark.ros

RAW_TOPIC = "cam_raw/image_raw"
JPEG_TOPIC = "cam_jpeg/image_raw/compressed"
LEFT_TOPIC = "left/joint_states"
RIGHT_TOPIC = "right/joint_states"


def two_arm_description():
    """Two one-joint arms on their own joint-state topics, a raw and a JPEG policy camera, and an unused camera."""

    def group(side, joint):
        return {
            "name": f"{side}_arm",
            "joint_state_topic": f"{side}/joint_states",
            "controller": {"name": f"{side}_controller", "interface": "forward_position"},
            "joints": [{"name": joint, "lower": -5.0, "upper": 5.0, "max_velocity": 1.0}],
        }

    return parse_robot_description(
        {
            "name": "two_arms",
            "joint_groups": [group("left", "left_joint"), group("right", "right_joint")],
            "cameras": [
                {"name": "cam_raw", "slot": "base_0_rgb"},
                {"name": "cam_jpeg", "slot": "left_wrist_0_rgb", "compressed": True},
                {"name": "cam_unused", "slot": None},
            ],
            # The state lists the right arm first: merging must follow this order, not the topics'.
            "policy": {"state": ["right_joint", "left_joint"]},
        }
    )


def gradient(height=24, width=32, offset=0):
    """Smooth ramps (no wrap-around edges), so JPEG keeps them within a few grey levels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 + offset, y * 10, np.full_like(x, 128)], axis=-1).astype(np.uint8)


class FakeRobot:
    """Publishes the two cameras (best effort) and the two joint-state topics (reliable)."""

    def __init__(self, node):
        camera_qos = qos_profile("best_effort", 2)
        self.raw = node.create_publisher(Image, RAW_TOPIC, camera_qos)
        self.jpeg = node.create_publisher(CompressedImage, JPEG_TOPIC, camera_qos)
        self.left = node.create_publisher(JointState, LEFT_TOPIC, qos_profile("reliable", 10))
        self.right = node.create_publisher(JointState, RIGHT_TOPIC, qos_profile("reliable", 10))

    @property
    def publishers(self):
        return (self.raw, self.jpeg, self.left, self.right)

    def joints(self, stamp, left, right):
        for publisher, name, value in ((self.left, "left_joint", left), (self.right, "right_joint", right)):
            publisher.publish(JointState(header=_header(stamp), name=[name, "finger_mimic"], position=[value, 0.0]))

    def images(self, stamp_raw, stamp_jpeg, raw, jpeg):
        self.raw.publish(rgb_to_image_msg(raw, "bgr8", stamp=seconds_to_stamp(stamp_raw), frame_id="cam_raw"))
        self.jpeg.publish(rgb_to_compressed_msg(jpeg, "jpeg", stamp=seconds_to_stamp(stamp_jpeg), jpeg_quality=95))


def _header(stamp):
    msg = JointState()
    msg.header.stamp = seconds_to_stamp(stamp)
    return msg.header


@pytest.fixture
def setup(ros_graph):
    node = ros_graph.node("policy_under_test")
    params = ObservationSourceParams(
        limits=SyncLimits(slop_s=0.02, queue_size=4, max_age_s=2.0, joint_extrapolation_s=0.05), log_period_s=0.0
    )
    source = ObservationSource(node, two_arm_description(), params)
    robot = FakeRobot(ros_graph.node("fake_robot"))
    ros_graph.wait_for(
        lambda: all(p.get_subscription_count() == 1 for p in robot.publishers), what="the source's subscriptions"
    )
    yield ros_graph, node, source, robot
    source.destroy()


def stream(source, name):
    return next(h for h in source.health() if h.name == name)


def test_subscribes_policy_cameras_and_joint_topics_with_the_configured_qos(setup):
    ros_graph, node, source, robot = setup
    assert {h.name for h in source.health()} == {"cam_raw", "cam_jpeg", LEFT_TOPIC, RIGHT_TOPIC}
    reliability = {
        topic: node.get_subscriptions_info_by_topic("/" + topic)[0].qos_profile.reliability
        for topic in (RAW_TOPIC, JPEG_TOPIC, LEFT_TOPIC, RIGHT_TOPIC)
    }
    assert reliability == {
        RAW_TOPIC: ReliabilityPolicy.BEST_EFFORT,
        JPEG_TOPIC: ReliabilityPolicy.BEST_EFFORT,
        LEFT_TOPIC: ReliabilityPolicy.RELIABLE,
        RIGHT_TOPIC: ReliabilityPolicy.RELIABLE,
    }
    assert node.get_subscriptions_info_by_topic("/cam_unused/image_raw") == []


def test_publishers_feed_a_synchronized_observation(setup):
    ros_graph, node, source, robot = setup
    now = source.now()
    assert source.latest().status is SyncStatus.MISSING
    overall = source.diagnostic_status()[0]
    assert overall.level == DiagnosticStatus.ERROR and "no image yet from cam_raw, cam_jpeg" in overall.message

    for k, t in enumerate((now - 0.3, now - 0.2, now - 0.1)):
        robot.joints(t, left=1.0 + k, right=-10.0 * k)
    # Otherwise a set could be taken while the newest joint sample is still in flight.
    ros_graph.wait_for(
        lambda: all(stream(source, t).received == 3 for t in (LEFT_TOPIC, RIGHT_TOPIC)), what="the joint states"
    )
    raw, jpeg = gradient(), gradient(offset=30)
    stamp_raw, stamp_jpeg = now - 0.17, now - 0.15

    def observed():
        robot.images(stamp_raw, stamp_jpeg, raw, jpeg)  # best effort: repeat until both arrive
        return source.latest().observation

    obs = ros_graph.wait_for(observed, timeout=10.0, what="a synchronized observation")

    assert obs.image_stamps["cam_raw"] == pytest.approx(stamp_raw, abs=1e-6)
    assert obs.image_stamps["cam_jpeg"] == pytest.approx(stamp_jpeg, abs=1e-6)
    assert obs.stamp == pytest.approx(now - 0.16, abs=1e-6)
    np.testing.assert_array_equal(obs.images["cam_raw"], raw)  # bgr8 on the wire, RGB out
    assert np.abs(obs.images["cam_jpeg"].astype(int) - jpeg.astype(int)).mean() < 3.0
    # now - 0.16 lies 40 % of the way from the sample at now - 0.2 to the one at now - 0.1.
    np.testing.assert_allclose(obs.state, [-10.0 - 0.4 * 10.0, 2.0 + 0.4], atol=1e-4)

    assert source.latest(newer_than=obs.stamp).status is SyncStatus.NOT_NEW
    overall, *streams = source.diagnostic_status()
    assert overall.level == DiagnosticStatus.OK and overall.message == "synchronized"
    values = {v.key: v.value for v in overall.values}
    assert (values["set_spread_s"], values["slop_s"], values["slop_mode"]) == ("0.0200", "0.0200", "fixed")
    assert {s.name: s.level for s in streams} == {
        f"policy_under_test: observation stream {name}": DiagnosticStatus.OK
        for name in ("cam_raw", "cam_jpeg", LEFT_TOPIC, RIGHT_TOPIC)
    }


def test_malformed_messages_become_diagnostics_not_crashes(setup):
    ros_graph, node, source, robot = setup
    now = source.now()
    short = rgb_to_image_msg(gradient(), stamp=seconds_to_stamp(now))
    short.data = array.array("B", bytes(len(short.data) - 1))
    corrupt = CompressedImage(header=_header(now), format="jpeg", data=array.array("B", b"not a jpeg at all"))

    def rejected():
        robot.raw.publish(short)
        robot.jpeg.publish(corrupt)
        return stream(source, "cam_raw").errors and stream(source, "cam_jpeg").errors

    ros_graph.wait_for(rejected, what="the malformed images to be counted")
    robot.left.publish(JointState(header=_header(now), name=["left_joint"], position=[float("nan")]))
    robot.right.publish(JointState(header=_header(now), name=["right_joint", "extra"], position=[1.0]))
    ros_graph.wait_for(
        lambda: stream(source, LEFT_TOPIC).errors and stream(source, RIGHT_TOPIC).errors,
        what="the malformed joint states to be counted",
    )

    overall, *streams = source.diagnostic_status()
    by_stream = {s.name.rsplit(" ", 1)[-1]: s for s in streams}
    assert "data holds 2303 bytes, expected step 96 x height 24 = 2304" in by_stream["cam_raw"].message
    assert "cannot decode compressed image" in by_stream["cam_jpeg"].message
    assert "non-finite position for left_joint" in by_stream[LEFT_TOPIC].message
    assert "2 names but 1 positions" in by_stream[RIGHT_TOPIC].message
    values = {kv.key: kv.value for kv in by_stream[LEFT_TOPIC].values}
    assert values["errors"] == "1" and values["received"] == "0"
    # No data was accepted, so the streams are ERROR (no data) and the synchronizer reports what is missing.
    assert all(s.level == DiagnosticStatus.ERROR for s in streams)
    assert overall.level == DiagnosticStatus.ERROR and source.latest().status is SyncStatus.MISSING

    # The callbacks survived: good data is still accepted, and the errors are no longer news.
    robot.joints(now, left=0.5, right=0.25)
    ros_graph.wait_for(
        lambda: stream(source, LEFT_TOPIC).received and stream(source, RIGHT_TOPIC).received,
        what="good joint states after bad ones",
    )
    levels = {s.name.rsplit(" ", 1)[-1]: s.level for s in source.diagnostic_status()[1:]}
    assert levels[LEFT_TOPIC] == DiagnosticStatus.OK


def test_zero_stamps_use_the_receive_time_and_warn(setup):
    ros_graph, node, source, robot = setup
    before = source.now()
    unstamped = rgb_to_image_msg(gradient())  # header stamp left at zero

    def counted():
        robot.raw.publish(unstamped)
        return stream(source, "cam_raw").received

    ros_graph.wait_for(counted, what="an unstamped image")
    health = stream(source, "cam_raw")
    assert health.warnings >= 1 and health.last_warning == "zero header stamp; used the receive time"
    assert before <= health.last_stamp <= source.now()
    status = next(s for s in source.diagnostic_status() if s.name.endswith("cam_raw"))
    assert status.level == DiagnosticStatus.WARN and "zero header stamp" in status.message


def test_destroy_removes_the_subscriptions(setup):
    ros_graph, node, source, robot = setup
    source.destroy()
    ros_graph.wait_for(
        lambda: all(p.get_subscription_count() == 0 for p in robot.publishers), what="the subscriptions to disappear"
    )
    assert list(node.subscriptions) == []
    source.destroy()  # idempotent: the lifecycle node may clean up twice


def test_now_follows_sim_time(ros_graph):
    node = ros_graph.node("sim_time_policy", parameter_overrides=[Parameter("use_sim_time", value=True)])
    source = ObservationSource(
        node, two_arm_description(), ObservationSourceParams(limits=SyncLimits(slop_s=0.02, max_age_s=0.5))
    )
    robot = FakeRobot(ros_graph.node("sim_robot"))
    clock = ros_graph.node("sim_clock").create_publisher(Clock, "/clock", qos_profile("reliable", 1))

    def at_sim_time():
        clock.publish(Clock(clock=seconds_to_stamp(1000.0)))
        robot.joints(999.9, left=1.0, right=2.0)
        robot.joints(1000.0, left=1.0, right=2.0)
        robot.images(999.95, 999.95, gradient(), gradient())
        return source.latest().observation

    obs = ros_graph.wait_for(at_sim_time, what="an observation in simulated time")
    assert obs.stamp == pytest.approx(999.95, abs=1e-6)
    assert source.now() == pytest.approx(1000.0)

    # A simulator reset sets the clock back by less than max_age: the history from before it is dropped.
    def reset():
        clock.publish(Clock(clock=seconds_to_stamp(999.7)))
        return source.now() == pytest.approx(999.7)

    # (Messages still in flight from before the reset may refill it, so only the warning is checked here;
    # the clearing itself is unit-tested on the synchronizer.)
    ros_graph.wait_for(reset, what="the clock to jump back")
    health = source.health()
    assert all(h.last_warning == "clock jumped back 0.300 s; observation history cleared" for h in health)
    source.destroy()


# --- parameters and topic selection (no messages exchanged) ----------------------------------------------------


def test_params_validate_their_qos_fields():
    with pytest.raises(ValueError, match="QoS reliability must be one of reliable, best_effort, got 'fast'"):
        QosSettings("fast", 2)
    with pytest.raises(ValueError, match="QoS depth must be an integer >= 1, got 0"):
        QosSettings("reliable", 0)
    with pytest.raises(ValueError, match="log_period_s must be a number >= 0"):
        ObservationSourceParams(log_period_s=-1.0)
    defaults = ObservationSourceParams()
    assert defaults.camera_qos.profile().reliability == ReliabilityPolicy.BEST_EFFORT
    assert (defaults.joint_state_qos.profile().reliability, defaults.joint_state_qos.depth) == (
        ReliabilityPolicy.RELIABLE,
        10,
    )


def test_only_topics_carrying_state_joints_are_subscribed():
    assert state_joint_topics(two_arm_description()) == (LEFT_TOPIC, RIGHT_TOPIC)
    assert state_joint_topics(load_robot_description(robot_yaml("aloha"))) == ("joint_states",)
    raw = two_arm_description()
    only_right = parse_robot_description(
        {
            "name": "right_only",
            "joint_groups": [
                {
                    "name": g.name,
                    "joint_state_topic": g.joint_state_topic,
                    "controller": {"name": g.controller.name, "interface": g.controller.interface},
                    "joints": [
                        {"name": j.name, "lower": j.lower, "upper": j.upper, "max_velocity": j.max_velocity}
                        for j in g.joints
                    ],
                }
                for g in raw.joint_groups
            ],
            "cameras": [{"name": "cam", "slot": "base_0_rgb"}],
            "policy": {"state": ["right_joint"]},
        }
    )
    assert state_joint_topics(only_right) == (RIGHT_TOPIC,)
