"""Plain writer and reader: bags written from in-memory messages read back intact (no graph)."""

import sqlite3

import pytest
import yaml
from bag_samples import SECOND, STREAMS, T0, action_chunk, sample_messages, write_sample_bag
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from pi0_msgs.msg import ActionChunk
from pi0_ros.bag import BagError, BagReader, BagWriter, OfferedQos
from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.writer import METADATA_VERSIONS, ros_distro


def test_written_bag_reads_back_types_timestamps_and_content(tmp_path, storage):
    written = write_sample_bag(tmp_path / "bag", storage)
    with BagReader(tmp_path / "bag") as bag:
        info = bag.info
        read = list(bag.read())
    assert info.storage == storage
    assert info.message_count == len(written)
    assert (info.start_ns, info.end_ns) == (T0, T0 + 400_000_000)
    assert {t: i.msgtype for t, i in info.topics.items()} == {
        "/cam_high/image_raw": "sensor_msgs/msg/Image",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/action_chunk": "pi0_msgs/msg/ActionChunk",
    }
    assert [(m.topic, m.timestamp_ns) for m in read] == [(t, ts) for t, ts, _ in written]
    assert [m.message for m in read] == [m for _, _, m in written]
    chunk = next(m.message for m in read if m.topic == "/action_chunk")
    assert isinstance(chunk, ActionChunk) and chunk.step_period.nanosec == 20_000_000


def test_offered_qos_and_type_hashes_are_stored_per_topic(tmp_path, storage):
    write_sample_bag(tmp_path / "bag", storage)
    with BagReader(tmp_path / "bag") as bag:
        topics = bag.info.topics
    for topic, _, offered, _ in STREAMS:
        assert topics[topic].offered_qos == (offered,)
    assert topics["/cam_high/image_raw"].offered_qos[0].reliability == "best_effort"
    expected_hash = DefinitionSource().definition("pi0_msgs/msg/ActionChunk").type_hash
    assert topics["/action_chunk"].type_hash == expected_hash


def test_metadata_yaml_has_what_ros2_bag_info_parses(tmp_path, storage):
    write_sample_bag(tmp_path / "bag", storage)
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    assert info["ros_distro"] == ros_distro()
    assert info["storage_identifier"] == storage
    assert info["message_count"] == len(sample_messages())
    assert info["starting_time"]["nanoseconds_since_epoch"] == T0
    assert info["duration"]["nanoseconds"] == 400_000_000
    (stored_file,) = info["relative_file_paths"]
    assert (tmp_path / "bag" / stored_file).is_file()
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    camera = topics["/cam_high/image_raw"]["topic_metadata"]
    assert camera["type"] == "sensor_msgs/msg/Image"
    assert camera["serialization_format"] == "cdr"
    assert camera["type_description_hash"].startswith("RIHS01_")
    # Version 8 stores QoS as a YAML string with numeric policies (2: best effort), as Iron writes it.
    (offered,) = yaml.safe_load(camera["offered_qos_profiles"])
    assert offered["reliability"] == 2
    assert offered["deadline"] == {"sec": 9223372036, "nsec": 854775807}


def test_mcap_channels_carry_qos_and_type_hash_metadata_like_rosbag2(tmp_path):
    write_sample_bag(tmp_path / "bag", "mcap")
    data = (tmp_path / "bag" / "bag.mcap").read_bytes()
    type_hash = DefinitionSource().definition("sensor_msgs/msg/Image").type_hash
    assert data.startswith(b"\x89MCAP0\r\n")
    assert b"topic_type_hash" in data and type_hash.encode() in data
    assert b"ros2msg" in data and b"MSG: std_msgs/Header" in data


def test_sqlite3_storage_holds_definitions_and_hashes(tmp_path):
    write_sample_bag(tmp_path / "bag", "sqlite3")
    with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:
        topics = dict(db.execute("SELECT name, type_description_hash FROM topics"))
        definitions = dict(db.execute("SELECT topic_type, encoding FROM message_definitions"))
    assert topics["/action_chunk"] == DefinitionSource().definition("pi0_msgs/msg/ActionChunk").type_hash
    assert definitions["pi0_msgs/msg/ActionChunk"] == "ros2msg"


def test_metadata_version_9_stores_qos_as_a_list_like_jazzy(tmp_path):
    assert 9 in METADATA_VERSIONS
    with BagWriter(tmp_path / "bag", metadata_version=9) as bag:
        bag.write("/chatter", String(data="hi"), T0, offered_qos=[OfferedQos.latched()])
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    profiles = info["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"]
    assert info["version"] == 9 and profiles[0]["durability"] == "transient_local"
    with BagReader(tmp_path / "bag") as bag:
        assert bag.info.topics["/chatter"].offered_qos == (OfferedQos.latched(),)


def test_time_window_and_topic_selection(tmp_path, storage):
    written = write_sample_bag(tmp_path / "bag", storage)
    with BagReader(tmp_path / "bag") as bag:
        window = list(bag.messages(["joint_states"], start_ns=T0 + 100_000_000, stop_ns=T0 + 300_000_000))
    expected = [ts for t, ts, _ in written if t == "/joint_states" and T0 + 100_000_000 <= ts < T0 + 300_000_000]
    assert [m.timestamp_ns for m in window] == expected
    assert {m.topic for m in window} == {"/joint_states"}


def test_serialized_writes_and_topics_without_messages(tmp_path):
    with BagWriter(tmp_path / "bag") as bag:
        bag.add_topic("policy_status", "pi0_msgs/msg/PolicyStatus", [OfferedQos.latched()])
        bag.add_topic("/action_chunk", "pi0_msgs/msg/ActionChunk")
        bag.write_serialized("/action_chunk", serialize_message(action_chunk(3)), T0 + SECOND)
        summary_topics = bag.topics
    assert summary_topics == {
        "/policy_status": "pi0_msgs/msg/PolicyStatus",
        "/action_chunk": "pi0_msgs/msg/ActionChunk",
    }
    with BagReader(tmp_path / "bag") as bag:
        assert bag.info.topics["/policy_status"].message_count == 0
        (message,) = bag.read()
    assert message.message == action_chunk(3)


def test_writer_misuse_is_a_bag_error(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists"):
        BagWriter(tmp_path / "exists")
    with pytest.raises(BagError, match="storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    bag = BagWriter(tmp_path / "bag")
    bag.write("/a", String(data="x"), T0)
    with pytest.raises(BagError, match="holds std_msgs/msg/String"):
        bag.write("/a", action_chunk(0), T0)
    with pytest.raises(BagError, match="already added"):
        bag.add_topic("/a", "std_msgs/msg/String")
    with pytest.raises(BagError, match="not added"):
        bag.write_serialized("/b", b"", T0)
    with pytest.raises(BagError, match="non-negative integer"):
        bag.write("/a", String(), -1)
    summary = bag.close()
    assert summary.message_counts == {"/a": 1}
    with pytest.raises(BagError, match="closed"):
        bag.write("/a", String(), T0)


def test_a_failed_write_block_leaves_no_metadata(tmp_path):
    with pytest.raises(RuntimeError), BagWriter(tmp_path / "bag") as bag:
        bag.write("/a", String(data="x"), T0)
        raise RuntimeError("generator failed")
    assert not (tmp_path / "bag" / "metadata.yaml").exists()
    with pytest.raises(BagError, match="no metadata.yaml"):
        BagReader(tmp_path / "bag")
