"""Bad bags and bad requests end in a BagError and a one-line CLI error, never a traceback (no graph)."""

import re
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_share_directory
from bag_samples import SECOND, T0, write_sample_bag
from std_msgs.msg import String

from pi0_ros.bag import BagError, BagReader, BagWriter, PlaybackConfig, Player, plan_playback, play, record
from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.interfaces import deserialize


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def read_all(bag: Path) -> int:
    with BagReader(bag) as reader:
        return sum(1 for _ in reader.read())


def assert_cli_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err  # one line


# A truncated MCAP file is read up to the cut instead (test_bag_recovery.py).
@pytest.mark.parametrize(
    "storage, damage",
    [("sqlite3", "truncated"), ("mcap", "garbage"), ("sqlite3", "garbage"), ("mcap", "empty"), ("sqlite3", "empty")],
)
def test_damaged_storage_files_are_bag_errors(tmp_path, storage, damage, capsys):
    write_sample_bag(tmp_path / "bag", storage, duration_ns=2 * SECOND)
    path = storage_file(tmp_path / "bag")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a bag" * 50, "empty": b""}[damage])
    with pytest.raises(BagError, match="bag"):
        read_all(tmp_path / "bag")
    assert_cli_error(capsys, play.main([str(tmp_path / "bag")]), "bag_play: error:")


def test_a_chunk_that_silently_ends_early_is_reported(tmp_path):
    write_sample_bag(tmp_path / "bag", "mcap", duration_ns=2 * SECOND)
    path = storage_file(tmp_path / "bag")
    data = path.read_bytes()
    third = len(data) // 3
    path.write_bytes(data[:third] + bytes(200) + data[third + 200 :])
    with pytest.raises(BagError, match=r"bag\.mcap is corrupt: read \d+ of the \d+ messages its index lists"):
        read_all(tmp_path / "bag")


@pytest.mark.parametrize(
    "metadata, message",
    [
        (None, "no metadata.yaml"),
        (b"rosbag2_bagfile_information: [unclosed", "metadata.yaml is not valid YAML: while parsing"),
        (b"rosbag2_bagfile_information: {version: 9}", "metadata.yaml has no storage_identifier"),
        (b"just a string", "metadata.yaml has no rosbag2_bagfile_information mapping"),
        (b"", "metadata.yaml has no rosbag2_bagfile_information mapping"),
        (b"\xff\xfe\x00rosbag2", "metadata.yaml is not UTF-8 text (byte 0 is not valid UTF-8)"),
    ],
)
def test_missing_or_garbled_metadata_is_a_bag_error(tmp_path, metadata, message, capsys):
    write_sample_bag(tmp_path / "bag", "mcap")
    if metadata is None:
        (tmp_path / "bag" / "metadata.yaml").unlink()
    else:
        (tmp_path / "bag" / "metadata.yaml").write_bytes(metadata)
    with pytest.raises(BagError, match=re.escape(message)):
        BagReader(tmp_path / "bag")
    assert_cli_error(capsys, play.main([str(tmp_path / "bag")]), message)


def test_paths_that_are_not_bags(tmp_path, capsys):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in (
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty_dir", "no metadata.yaml"),
        (tmp_path / "notes.txt", "not a readable rosbag2 bag"),
    ):
        with pytest.raises(BagError, match=message):
            BagReader(path)
        assert_cli_error(capsys, play.main([str(path)]), message)


def fake_package_bag(tmp_path: Path) -> Path:
    """A bag whose type comes from a package that is not installed here."""
    share = tmp_path / "share" / "fake_msgs"
    (share / "msg").mkdir(parents=True)
    (share / "msg" / "Thing.msg").write_text("int32 value\n")
    definitions = DefinitionSource(
        share_directory=lambda package: str(share) if package == "fake_msgs" else get_package_share_directory(package)
    )
    with BagWriter(tmp_path / "bag", definitions=definitions) as bag:
        bag.add_topic("/thing", "fake_msgs/msg/Thing")
        bag.write_serialized("/thing", b"\x00\x01\x00\x00\x07\x00\x00\x00", T0)
        bag.write("/chatter", String(data="hi"), T0 + 1)
    return tmp_path / "bag"


def test_unknown_message_type_is_a_bag_error_unless_deselected(tmp_path, capsys):
    bag_path = fake_package_bag(tmp_path)
    with BagReader(bag_path) as bag:
        assert bag.info.topics["/thing"].msgtype == "fake_msgs/msg/Thing"
        with pytest.raises(BagError, match="topic /thing: unknown message type 'fake_msgs/msg/Thing'"):
            plan_playback(bag, PlaybackConfig())
        assert [t.bag_topic for t in plan_playback(bag, PlaybackConfig(topics=("/chatter",)))] == ["/chatter"]
        with pytest.raises(BagError, match="unknown message type"):
            list(bag.read(["/thing"]))
    assert_cli_error(capsys, play.main([str(bag_path)]), "unknown message type 'fake_msgs/msg/Thing'")


def test_requested_topics_missing_from_the_bag(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", "mcap")
    with BagReader(tmp_path / "bag") as bag:
        with pytest.raises(BagError, match="has no topic /nope"):
            plan_playback(bag, PlaybackConfig(topics=("/joint_states", "/nope")))
        with pytest.raises(BagError, match="has no topic /gone"):
            plan_playback(bag, PlaybackConfig(remaps=(("/gone", "/x"),)))
        with pytest.raises(BagError, match="not among the topics to play"):
            plan_playback(bag, PlaybackConfig(topics=("/joint_states",), remaps=(("/action_chunk", "/x"),)))
    assert_cli_error(capsys, play.main([str(tmp_path / "bag"), "--topics", "/nope"]), "has no topic /nope")
    assert_cli_error(capsys, play.main([str(tmp_path / "bag"), "--remap", "nonsense"]), "old_topic:=new_topic")


def test_bad_playback_requests_are_bag_errors(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", "mcap")
    for kwargs in (
        {"rate": 0.0},
        {"rate": float("nan")},
        {"start_offset": -1.0},
        {"clock_hz": -5.0},
        {"remaps": (("/a", "/b"), ("/a", "/c"))},
    ):
        with pytest.raises(BagError):
            PlaybackConfig(**kwargs)
    with BagReader(tmp_path / "bag") as bag, pytest.raises(BagError, match="past the bag's end"):
        Player(bag, PlaybackConfig(start_offset=60.0), validate=deserialize)
    assert_cli_error(capsys, play.main([str(tmp_path / "bag"), "--rate", "-2"]), "rate must be a positive number")


def test_record_cli_errors_before_touching_the_graph(tmp_path, capsys):
    assert_cli_error(capsys, record.main(["--output", str(tmp_path / "b")]), "nothing to record")
    assert_cli_error(
        capsys,
        record.main(["--output", str(tmp_path / "b"), "--robot-description", str(tmp_path / "missing.yaml")]),
        "cannot read robot description",
    )
    assert_cli_error(
        capsys,
        record.main(["--output", str(tmp_path / "b"), "--topics", "/a", "--duration", "0"]),
        "duration must be a positive number",
    )


def rewrite_metadata(bag: Path, change) -> None:
    path = bag / "metadata.yaml"
    document = yaml.safe_load(path.read_text())
    change(document["rosbag2_bagfile_information"])
    path.write_text(yaml.safe_dump(document))


def topic_entry(info: dict, name: str) -> dict:
    return next(t for t in info["topics_with_message_count"] if t["topic_metadata"]["name"] == name)


def test_metadata_counts_that_disagree_with_the_storage_are_named_not_blamed_on_corruption(tmp_path, storage, capsys):
    write_sample_bag(tmp_path / "bag", storage)
    rewrite_metadata(tmp_path / "bag", lambda info: topic_entry(info, "/joint_states").update(message_count=90))
    message = (
        f"{tmp_path / 'bag'}/metadata.yaml does not match the storage files: "
        "/joint_states: 90 messages listed, 9 stored"
    )
    with pytest.raises(BagError) as raised:
        BagReader(tmp_path / "bag")
    assert str(raised.value) == message
    assert_cli_error(capsys, play.main([str(tmp_path / "bag")]), message)


def test_a_topic_stored_with_another_type_than_metadata_lists_is_named(tmp_path, storage):
    write_sample_bag(tmp_path / "bag", storage)
    rewrite_metadata(
        tmp_path / "bag",
        lambda info: topic_entry(info, "/joint_states")["topic_metadata"].update(type="std_msgs/msg/String"),
    )
    with pytest.raises(
        BagError,
        match="stores /joint_states as sensor_msgs/msg/JointState, but metadata.yaml lists it as std_msgs/msg/String",
    ):
        BagReader(tmp_path / "bag")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda info: info.update(version=10),
            "metadata.yaml has metadata version 10; these tools read versions 1 to 9",
        ),
        (
            lambda info: info["duration"].update(nanoseconds="long"),
            "metadata.yaml: duration.nanoseconds must be an integer, got 'long'",
        ),
        (
            lambda info: info["topics_with_message_count"][1].pop("message_count"),
            "metadata.yaml has no topics_with_message_count[1].message_count",
        ),
    ],
)
def test_malformed_metadata_fields_are_named(tmp_path, change, message, capsys):
    write_sample_bag(tmp_path / "bag", "mcap")
    rewrite_metadata(tmp_path / "bag", change)
    with pytest.raises(BagError, match=re.escape(message)):
        BagReader(tmp_path / "bag")
    assert_cli_error(capsys, play.main([str(tmp_path / "bag")]), message)


def test_garbled_text_inside_an_mcap_file_names_the_file(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", "mcap")
    path = storage_file(tmp_path / "bag")
    path.write_bytes(path.read_bytes().replace(b"/joint_states", b"/joint\xffstates"))
    message = "bag.mcap is corrupt: 'utf-8' codec can't decode byte 0xff"
    with pytest.raises(BagError, match=message):
        BagReader(tmp_path / "bag")
    assert_cli_error(capsys, play.main([str(tmp_path / "bag")]), message)
