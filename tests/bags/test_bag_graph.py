"""Recording real publishers and replaying into real subscribers over DDS."""

import threading
import time

import pytest
from bag_samples import SECOND, T0, action_chunk, image, joint_state, pacing_errors, policy_status, write_sample_bag
from rclpy.action import ActionClient, ActionServer
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus
from pi0_ros.bag import BagError, BagReader, PlaybackConfig, Player
from pi0_ros.bag.interfaces import deserialize
from pi0_ros.bag.play import PlayNode
from pi0_ros.bag.record import RecordConfig, RecordNode

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
ACTION_TOPICS = ("/execute_instruction/_action/feedback", "/execute_instruction/_action/status")


def start_instruction_server(node):
    def execute(goal_handle):
        for chunk in (1, 2):
            feedback = ExecuteInstruction.Feedback(
                phase=ExecuteInstruction.Feedback.PHASE_RUNNING, chunks_generated=chunk
            )
            goal_handle.publish_feedback(feedback)
        goal_handle.succeed()
        return ExecuteInstruction.Result(chunks_generated=2)

    return ActionServer(node, ExecuteInstruction, "execute_instruction", execute)


def test_recorder_stores_real_publishers_with_their_qos_and_types(ros_graph, tmp_path):
    publishers = ros_graph.node("bag_test_publishers")
    status = publishers.create_publisher(PolicyStatus, "policy_status", LATCHED)
    status.publish(policy_status(1))  # latched before the recorder exists
    camera = publishers.create_publisher(Image, "cam_high/image_raw", qos_profile_sensor_data)
    joints = publishers.create_publisher(JointState, "joint_states", RELIABLE)
    chunks = publishers.create_publisher(ActionChunk, "action_chunk", RELIABLE)
    start_instruction_server(ros_graph.node("bag_test_instruction_server"))
    wanted = ("cam_high/image_raw", "joint_states", "action_chunk", "policy_status", *ACTION_TOPICS)
    config = RecordConfig(
        output=tmp_path / "rec", topics=(*wanted, "/nobody_publishes"), storage="mcap", status_period=0.2
    )
    before_ns = time.time_ns()
    recorder = ros_graph.add(RecordNode(config, context=ros_graph.context))
    ros_graph.wait_for(lambda: len(recorder.recorded_topics) == len(wanted), what="recorder subscriptions")
    for publisher in (camera, joints, chunks):
        ros_graph.wait_for(lambda p=publisher: p.get_subscription_count() > 0, what="matched subscription")

    for index in range(5):
        camera.publish(image(index))
        joints.publish(joint_state(index))
        chunks.publish(action_chunk(index))
        time.sleep(0.01)
    client = ActionClient(ros_graph.node("bag_test_client"), ExecuteInstruction, "execute_instruction")
    assert client.wait_for_server(timeout_sec=5.0)
    client.send_goal_async(ExecuteInstruction.Goal(instruction="fold the towel"))
    expected = {
        "/cam_high/image_raw": 5,
        "/joint_states": 5,
        "/action_chunk": 5,
        "/policy_status": 1,
        ACTION_TOPICS[0]: 2,
    }
    ros_graph.wait_for(
        lambda: (
            all(recorder.message_counts().get(t, 0) >= n for t, n in expected.items())
            and recorder.message_counts().get(ACTION_TOPICS[1], 0) >= 1
        ),
        what="recorded messages",
    )
    ros_graph.stop_spinning(recorder)  # close() destroys subscriptions: not while they are spun
    summary = recorder.close()
    after_ns = time.time_ns()

    assert summary.message_counts["/joint_states"] == 5
    with BagReader(tmp_path / "rec") as bag:
        info = bag.info
        messages = list(bag.read())
    assert "/nobody_publishes" not in info.topics
    assert info.topics["/cam_high/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert info.topics[ACTION_TOPICS[0]].msgtype == "pi0_msgs/action/ExecuteInstruction_FeedbackMessage"
    assert info.topics[ACTION_TOPICS[1]].msgtype == "action_msgs/msg/GoalStatusArray"
    camera_qos = info.topics["/cam_high/image_raw"].offered_qos
    assert [q.reliability for q in camera_qos] == ["best_effort"]
    assert [q.durability for q in info.topics["/policy_status"].offered_qos] == ["transient_local"]
    graph_hash = publishers.get_publishers_info_by_topic("/action_chunk")[0].topic_type_hash
    assert info.topics["/action_chunk"].type_hash == str(graph_hash)

    by_topic = {}
    for message in messages:
        by_topic.setdefault(message.topic, []).append(message)
    assert [m.message for m in by_topic["/joint_states"]] == [joint_state(i) for i in range(5)]
    assert [m.message for m in by_topic["/cam_high/image_raw"]] == [image(i) for i in range(5)]
    assert [m.message for m in by_topic["/action_chunk"]] == [action_chunk(i) for i in range(5)]
    assert by_topic["/policy_status"][0].message.instruction == "fold the towel"
    assert [m.message.feedback.chunks_generated for m in by_topic[ACTION_TOPICS[0]]] == [1, 2]
    stamps = [m.timestamp_ns for m in messages]
    assert stamps == sorted(stamps) and before_ns <= stamps[0] and stamps[-1] <= after_ns


class Listener:
    """Real subscribers on the sample topics and /clock, recording receive times."""

    def __init__(self, ros_graph, topics):
        self.node = ros_graph.node("bag_test_listener")
        self.received: list[tuple[str, object, float]] = []
        self.clock: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        for topic, msg_type, qos in topics:
            self.node.create_subscription(msg_type, topic, lambda m, t=topic: self._on(t, m), qos)
        self.node.create_subscription(Clock, "/clock", self._on_clock, QoSProfile(depth=1000))

    def _on(self, topic, message):
        with self._lock:
            self.received.append((topic, message, time.monotonic()))

    def _on_clock(self, message):
        with self._lock:
            self.clock.append((message.clock.sec * SECOND + message.clock.nanosec, time.monotonic()))

    def on_topic(self, topic):
        with self._lock:
            return [(m, t) for name, m, t in self.received if name == topic]


SAMPLE_SUBSCRIPTIONS = (
    ("/cam_high/image_raw", Image, qos_profile_sensor_data),
    ("/joint_states", JointState, RELIABLE),
    ("/action_chunk", ActionChunk, RELIABLE),
)


def replay(ros_graph, bag_path, config, subscriptions):
    listener = Listener(ros_graph, subscriptions)
    with BagReader(bag_path) as bag:
        player = Player(bag, config, validate=deserialize)
        node = ros_graph.add(PlayNode(player.topics, config.publishes_clock, qos_depth=100, context=ros_graph.context))
        node.wait_for_subscribers(5.0, threading.Event())
        ros_graph.wait_for(lambda: node.count_subscribers("/clock") > 0, what="/clock subscriber")
        stats = player.run(node)
    return listener, node, stats


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_replay_reaches_real_subscribers_in_order_with_timing_and_clock(ros_graph, tmp_path, rate):
    written = write_sample_bag(tmp_path / "bag", "mcap", duration_ns=600_000_000)
    listener, _, stats = replay(
        ros_graph, tmp_path / "bag", PlaybackConfig(rate=rate, clock_hz=50.0), SAMPLE_SUBSCRIPTIONS
    )
    ros_graph.wait_for(lambda: len(listener.received) == len(written), timeout=5.0, what="replayed messages")
    assert stats.published_count == len(written) and stats.failed_count == 0

    pacing = []  # (receive time, expected offset) over all topics: checks the order across topics too
    for topic, _, _ in SAMPLE_SUBSCRIPTIONS:
        sent = [(m, stamp) for name, stamp, m in written if name == topic]
        got = listener.on_topic(topic)
        assert [m for m, _ in got] == [m for m, _ in sent]  # content and per-topic order
        pacing += [(wall, (stamp - T0) / SECOND / rate) for (_, wall), (_, stamp) in zip(got, sent, strict=True)]
    assert max(pacing_errors(pacing)) < 0.08

    clock = [value for value, _ in listener.clock]
    assert clock[0] == T0 and clock == sorted(clock)
    assert clock[-1] <= written[-1][1]
    tick_ns = round(SECOND * rate / 50.0)
    assert all((value - T0) % tick_ns == 0 for value in clock)
    clock_pacing = [(wall, (value - T0) / SECOND / rate) for value, wall in listener.clock]
    assert max(pacing_errors(pacing + clock_pacing)) < 0.08


def test_replay_topic_selection_remap_and_recorded_qos(ros_graph, tmp_path):
    written = write_sample_bag(tmp_path / "bag", "sqlite3", duration_ns=200_000_000)
    config = PlaybackConfig(
        topics=("/cam_high/image_raw", "/action_chunk"),
        rate=4.0,
        clock_hz=0,
        clock_per_message=True,
        remaps=(("/action_chunk", "/replayed/action_chunk"),),
    )
    subscriptions = (
        ("/cam_high/image_raw", Image, qos_profile_sensor_data),
        ("/replayed/action_chunk", ActionChunk, RELIABLE),
        ("/joint_states", JointState, RELIABLE),
        ("/action_chunk", ActionChunk, RELIABLE),
    )
    listener, node, _ = replay(ros_graph, tmp_path / "bag", config, subscriptions)
    sent_chunks = [m for topic, _, m in written if topic == "/action_chunk"]
    sent_images = [m for topic, _, m in written if topic == "/cam_high/image_raw"]
    ros_graph.wait_for(
        lambda: (
            len(listener.on_topic("/replayed/action_chunk")) == len(sent_chunks)
            and len(listener.on_topic("/cam_high/image_raw")) == len(sent_images)
        ),
        what="replay",
    )
    time.sleep(0.1)
    assert [m for m, _ in listener.on_topic("/replayed/action_chunk")] == sent_chunks
    assert listener.on_topic("/action_chunk") == [] and listener.on_topic("/joint_states") == []
    played_stamps = sorted(s for topic, s, _ in written if topic in ("/cam_high/image_raw", "/action_chunk"))
    assert sorted(value for value, _ in listener.clock) == played_stamps
    (camera_publisher,) = node.get_publishers_info_by_topic("/cam_high/image_raw")
    assert camera_publisher.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    (chunk_publisher,) = node.get_publishers_info_by_topic("/replayed/action_chunk")
    assert chunk_publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE


def test_wait_for_subscribers_names_the_topics_nobody_listens_to(ros_graph, tmp_path):
    write_sample_bag(tmp_path / "bag", "mcap", duration_ns=100_000_000)
    with BagReader(tmp_path / "bag") as bag:
        player = Player(bag, PlaybackConfig(topics=("/joint_states",)), validate=deserialize)
    node = ros_graph.add(PlayNode(player.topics, context=ros_graph.context))
    with pytest.raises(BagError, match="no subscriber after 0.2 s on /joint_states"):
        node.wait_for_subscribers(0.2, threading.Event())
