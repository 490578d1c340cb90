"""Bags as rosbag2 recorded them read and play completely; bags written here parse on every distribution.

No graph. The bags are generated (rosbag2_bags.py) with what real recordings
hold: metadata versions 4 to 9, both storages, storage files whose QoS differs
from metadata.yaml's or is missing, split bags whose metadata.yaml starts after
their first message. What Humble's and Jazzy's rosbag2 accept is checked with
their metadata parsing rules (rosbag2_parsers.py).
"""

import importlib.metadata
import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from bag_samples import sample_messages, write_sample_bag
from mcap.reader import make_reader
from rosbag2_bags import EXTENSIONS, INFINITE_BEFORE_GALACTIC, BagContents, profile, write_rosbag2_bag
from rosbag2_parsers import BadConversion, parse_metadata, parse_metadata_file, parse_qos_string
from rosbags.interfaces import QosReliability

from pi0_ros.bag import BagReader, BagWriter, PlaybackConfig, Player
from pi0_ros.bag.interfaces import deserialize
from pi0_ros.bag.writer import ros_distro

CAMERA = "/cam_high/image_raw"


def recording(storage_qos: str) -> BagContents:
    messages = sample_messages()
    topics = dict.fromkeys(topic for topic, _, _ in messages)
    metadata_qos = {
        t: [profile(QosReliability.BEST_EFFORT if t == CAMERA else QosReliability.RELIABLE)] for t in topics
    }
    stored = {
        # What Foxy-era rmw reported as infinite durations, against 0/0 in metadata.yaml (the talker test bags).
        "infinite durations": {
            t: [
                q._replace(
                    deadline=INFINITE_BEFORE_GALACTIC,
                    lifespan=INFINITE_BEFORE_GALACTIC,
                    liveliness_lease_duration=INFINITE_BEFORE_GALACTIC,
                )
                for q in qos
            ]
            for t, qos in metadata_qos.items()
        },
        "none": dict.fromkeys(topics, []),
        "as in metadata.yaml": metadata_qos,
    }[storage_qos]
    return BagContents(messages, metadata_qos, stored)


class Collector:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))

    def publish_clock(self, bag_time_ns: int) -> None:
        pass


@pytest.mark.parametrize("storage_qos", ["infinite durations", "none", "as in metadata.yaml"])
@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9])
def test_every_message_of_a_rosbag2_recording_is_read(tmp_path, storage, version, storage_qos):
    recorded = recording(storage_qos)
    write_rosbag2_bag(tmp_path / "bag", recorded, storage, version, files=2)
    with BagReader(tmp_path / "bag") as bag:
        info = bag.info
        read = list(bag.read())
    assert info.storage == storage
    assert info.message_count == len(recorded.messages)
    assert [(m.topic, m.timestamp_ns, m.message) for m in read] == list(recorded.messages)
    # The QoS playback offers is metadata.yaml's, as with ros2 bag play.
    assert info.topics[CAMERA].offered_qos[0].reliability == "best_effort"
    assert info.topics["/joint_states"].offered_qos[0].reliability == "reliable"


def test_a_split_bag_plays_on_from_a_start_time_after_its_first_message(tmp_path, storage):
    recorded = recording("as in metadata.yaml")
    times = [timestamp for _, timestamp, _ in recorded.messages]
    per_file = -(-len(times) // 3)
    start = times[2 * per_file]  # the last of three files' first message, as in the wbag test bags
    write_rosbag2_bag(tmp_path / "bag", recorded, storage, version=5, files=3, starting_time_ns=start)
    extension = EXTENSIONS[storage]
    assert sorted(p.name for p in (tmp_path / "bag").iterdir()) == [
        f"bag_0.{extension}",
        f"bag_1.{extension}",
        f"bag_2.{extension}",
        "metadata.yaml",
    ]
    with BagReader(tmp_path / "bag") as bag:
        assert bag.info.start_ns == start
        assert [(m.topic, m.timestamp_ns) for m in bag.messages()] == [(t, ts) for t, ts, _ in recorded.messages]
        sink = Collector()
        stats = Player(bag, PlaybackConfig(rate=20.0, clock_hz=0.0), validate=deserialize).run(sink)
    # Like ros2 bag play: from metadata.yaml's start on, every message, and no complaint about the others.
    played = [(topic, timestamp) for topic, timestamp, _ in recorded.messages if timestamp >= start]
    assert stats.published_count == len(played) and not stats.failed
    assert [topic for topic, _ in sink.published] == [topic for topic, _ in played]


def stored_metadata(bag: Path, storage: str) -> tuple[dict, list[str]]:
    """The metadata copy a storage file holds (for bags without metadata.yaml) and its per-topic QoS strings."""
    if storage == "mcap":
        with open(bag / "bag.mcap", "rb") as stream:
            reader = make_reader(stream)
            (record,) = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
            channels = reader.get_summary().channels.values()
            return (
                yaml.safe_load(record.metadata["serialized_metadata"]),
                [c.metadata["offered_qos_profiles"] for c in channels],
            )
    with sqlite3.connect(bag / "bag.db3") as db:
        (text,) = db.execute("SELECT metadata FROM metadata").fetchone()
        return yaml.safe_load(text), [q for (q,) in db.execute("SELECT offered_qos_profiles FROM topics")]


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_bags_written_here_parse_with_the_rosbag2_of_every_distribution(tmp_path, storage, distro):
    write_sample_bag(tmp_path / "bag", storage)
    topics = parse_metadata_file((tmp_path / "bag" / "metadata.yaml").read_text(), distro)
    assert {name for name, _ in topics} == {CAMERA, "/joint_states", "/action_chunk"}
    info, qos_strings = stored_metadata(tmp_path / "bag", storage)
    parse_metadata(info, distro)
    assert len(qos_strings) == 3
    for qos in qos_strings:
        parse_qos_string(qos, distro)


def test_the_rules_reject_what_humble_cannot_parse(tmp_path):
    # Jazzy's own format, version 9: Humble's parser takes the QoS list for a string and fails.
    with BagWriter(tmp_path / "bag", metadata_version=9) as bag:
        for topic, timestamp, message in sample_messages(100_000_000):
            bag.write(topic, message, timestamp)
    text = (tmp_path / "bag" / "metadata.yaml").read_text()
    parse_metadata_file(text, "jazzy")
    with pytest.raises(BadConversion, match="offered_qos_profiles is not a scalar"):
        parse_metadata_file(text, "humble")


def test_the_ros_distribution_is_recorded_where_rosbag2_records_it(tmp_path, storage, monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "kilted")
    write_sample_bag(tmp_path / "bag", storage)
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["ros_distro"] == "kilted"
    assert stored_metadata(tmp_path / "bag", storage)[0]["ros_distro"] == "kilted"
    if storage == "sqlite3":
        with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:
            assert db.execute("SELECT ros_distro FROM schema").fetchone() == ("kilted",)


def test_the_pypi_wheels_name_their_distribution(monkeypatch):
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    names = [d.metadata.get("Name") or "" for d in importlib.metadata.distributions()]
    if not any(re.fullmatch(r"ros-[a-z]+-rclpy", name) for name in names):
        pytest.skip("ROS 2 is not installed from the PyPI wheels here")
    assert ros_distro() == "jazzy"  # requirements/ros-jazzy-wheels.txt
