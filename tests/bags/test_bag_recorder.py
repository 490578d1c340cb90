"""Topic selection from robot descriptions and the threaded recorder component (no graph)."""

import threading

import pytest
from bag_samples import T0, joint_state
from rclpy.serialization import serialize_message

from pi0_ros.bag import SUITE_TOPICS, BagError, BagReader, BagRecorder, OfferedQos, select_topics
from pi0_ros.core.robot_description import load_robot_description
from support.robots import robot_yaml


def test_aloha_topics_cover_cameras_joint_states_controllers_and_the_suite():
    topics = select_topics(load_robot_description(robot_yaml("aloha")), ["/tf"])
    for expected in (
        "cam_high/image_raw",
        "cam_low/image_raw",
        "cam_left_wrist/image_raw",
        "joint_states",
        "left_arm_controller/joint_trajectory",
        "right_gripper_controller/commands",
        "action_chunk",
        "policy_status",
        "streamer_status",
        "execute_instruction/_action/feedback",
        "execute_instruction/_action/status",
        "/diagnostics",
        "/tf",
    ):
        assert expected in topics
    assert len(topics) == len(set(topics))


def test_mobile_base_adds_its_command_and_odometry_topics():
    topics = select_topics(load_robot_description(robot_yaml("mobile_aloha")))
    assert "base_controller/cmd_vel" in topics and "base_controller/odom" in topics
    assert "cam_low/image_raw" not in topics


def test_explicit_topics_alone_and_nothing_at_all():
    assert select_topics(None, ["/a", "b", "/a"]) == ("/a", "b")
    assert set(SUITE_TOPICS) <= set(select_topics(load_robot_description(robot_yaml("ur5e"))))
    with pytest.raises(BagError, match="nothing to record"):
        select_topics(None, [])


def test_recorder_writes_messages_from_several_threads(tmp_path, storage):
    recorder = BagRecorder(tmp_path / "bag", storage)
    recorder.add_topic("/joint_states", "sensor_msgs/msg/JointState", [OfferedQos()])
    recorder.add_topic("/idle", "std_msgs/msg/String")

    def publish(offset):
        for index in range(50):
            assert recorder.record("/joint_states", T0 + offset + 10 * index, serialize_message(joint_state(index)))

    threads = [threading.Thread(target=publish, args=(offset,)) for offset in (0, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.stats().received == {"/joint_states": 150, "/idle": 0}
    summary = recorder.stop()
    assert summary.message_counts == {"/joint_states": 150, "/idle": 0}
    with BagReader(tmp_path / "bag") as bag:
        messages = list(bag.read())
    assert [m.timestamp_ns for m in messages] == sorted(T0 + o + 10 * i for o in (0, 1, 2) for i in range(50))
    assert messages[0].message == joint_state(0)


def test_recorder_drops_instead_of_queueing_without_bound(tmp_path):
    recorder = BagRecorder(tmp_path / "bag", max_queue_bytes=8)
    recorder.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    assert not recorder.record("/joint_states", T0, serialize_message(joint_state(0)))
    assert recorder.stats().dropped == 1
    assert recorder.stop().message_counts == {"/joint_states": 0}


def test_recorder_refuses_an_existing_output_at_once(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError, match="exists"):
        BagRecorder(tmp_path / "bag")


def test_a_writer_failure_stops_recording_and_is_reported(tmp_path):
    recorder = BagRecorder(tmp_path / "bag")
    recorder.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    recorder.record("/joint_states", -5, b"\x00\x01\x00\x00")  # a negative stamp makes the writer fail
    with pytest.raises(BagError, match="non-negative"):
        recorder.stop()
    assert recorder.error is not None
    assert not recorder.record("/joint_states", T0, b"\x00\x01\x00\x00")
