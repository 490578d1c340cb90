"""MCAP files cut short (a crash, a full disk) are read up to the cut, and what was lost is said (no graph).

A recording's MCAP file gets its index, summary and footer only when it is
closed; cut anywhere else, every complete record before the cut still holds
its messages. The messages expected back are counted with the `mcap` library's
stream reader, independently of the reader under test.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from bag_samples import SECOND, T0
from mcap.exceptions import EndOfFile
from mcap.records import Message
from mcap.stream_reader import StreamReader
from sensor_msgs.msg import Image, JointState

from pi0_ros.bag import BagError, BagReader, BagWriter, PlaybackConfig, Player, play
from pi0_ros.bag.interfaces import deserialize


def image(index: int) -> Image:
    # 48 KiB each: rosbags closes a chunk at 1 MiB, so a recording spans several chunks.
    return Image(height=128, width=128, encoding="rgb8", step=384, data=bytes([index % 256]) * (128 * 384))


def write_recording(path: Path, count: int = 100) -> list[tuple[str, int, object]]:
    written = []
    with BagWriter(path) as bag:
        for index in range(count):
            for topic, message in (
                ("/camera/image_raw", image(index)),
                ("/joint_states", JointState(name=["j"], position=[0.01 * index])),
            ):
                timestamp = T0 + index * SECOND // 30
                bag.write(topic, message, timestamp)
                written.append((topic, timestamp, message))
    return written


def cut(file: Path, size: int) -> None:
    file.write_bytes(file.read_bytes()[:size])


def messages_before_the_cut(file: Path) -> int:
    count = 0
    with open(file, "rb") as stream:
        try:
            for record in StreamReader(stream).records:
                count += isinstance(record, Message)
        except EndOfFile:
            pass
    return count


@pytest.fixture
def recording(tmp_path):
    written = write_recording(tmp_path / "bag")
    return tmp_path / "bag", tmp_path / "bag" / "bag.mcap", written


def test_a_recording_cut_short_is_read_up_to_the_cut(recording):
    bag_path, file, written = recording
    cut(file, file.stat().st_size * 6 // 10)
    expected = messages_before_the_cut(file)
    assert 0 < expected < len(written)
    with BagReader(bag_path) as bag:
        info = bag.info
        read = list(bag.read())
    (truncated,) = info.truncated
    assert (truncated.path, truncated.recovered, truncated.listed) == (file, expected, len(written))
    assert 0 < truncated.unreadable_bytes < 2 * 2**20  # at most the one chunk the cut went through
    assert info.message_count == expected
    assert sum(topic.message_count for topic in info.topics.values()) == expected
    assert [(m.topic, m.timestamp_ns, m.message) for m in read] == written[:expected]
    assert info.end_ns == written[expected - 1][1]
    assert (
        f"is cut short (no MCAP footer; {truncated.unreadable_bytes} bytes after its last complete record "
        f"cannot be read): read the {expected} messages before the cut, {len(written) - expected} of the "
        f"{len(written)} messages metadata.yaml lists for it are lost"
    ) in str(truncated)


def test_a_cut_recording_plays_what_it_holds(recording):
    bag_path, file, written = recording
    cut(file, file.stat().st_size // 2)
    expected = messages_before_the_cut(file)

    class Sink:
        def publish(self, topic: str, data: bytes) -> None:
            pass

        def publish_clock(self, bag_time_ns: int) -> None:
            pass

    with BagReader(bag_path) as bag:
        stats = Player(bag, PlaybackConfig(rate=100.0, clock_hz=0.0), validate=deserialize).run(Sink())
    assert stats.published_count == expected


def test_a_bare_mcap_file_cut_short_says_its_loss_is_unknown(recording):
    _, file, written = recording
    cut(file, file.stat().st_size * 3 // 4)
    expected = messages_before_the_cut(file)
    with BagReader(file) as bag:
        (truncated,) = bag.info.truncated
        assert [m.timestamp_ns for m in bag.messages()] == [t for _, t, _ in written[:expected]]
    assert (truncated.recovered, truncated.listed) == (expected, None)
    assert "how many messages followed is not recorded anywhere" in str(truncated)


def test_a_cut_inside_the_summary_loses_no_message(recording):
    bag_path, file, written = recording
    cut(file, file.stat().st_size - 4)
    with BagReader(bag_path) as bag:
        (truncated,) = bag.info.truncated
        assert len(list(bag.messages())) == len(written)
    assert (truncated.recovered, truncated.listed) == (len(written), len(written))
    assert "0 of the 200 messages metadata.yaml lists for it are lost" in str(truncated)


def test_an_intact_file_is_not_reported_as_truncated(recording):
    bag_path, _, written = recording
    with BagReader(bag_path) as bag:
        assert bag.info.truncated == ()
        assert bag.info.message_count == len(written)


@pytest.mark.parametrize(
    "size, message",
    [
        (0, "bag.mcap: the file is empty"),
        (20, "bag.mcap: cut short inside its MCAP header: no message can be read"),
    ],
)
def test_a_file_cut_before_any_record_is_a_clear_error(recording, size, message, capsys):
    bag_path, file, _ = recording
    cut(file, size)
    with pytest.raises(BagError, match=message):
        BagReader(bag_path)
    assert play.main([str(bag_path)]) == 1
    err = capsys.readouterr().err
    assert f"bag_play: error: {bag_path} is not a readable rosbag2 bag: {message}\n" == err


@pytest.mark.ros
def test_bag_play_says_what_was_lost(recording):
    bag_path, file, written = recording
    cut(file, file.stat().st_size // 2)
    expected = messages_before_the_cut(file)
    code = "import sys; from pi0_ros.bag.play import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, str(bag_path), "--rate", "100", "--clock-hz", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"bag_play: warning: {file} is cut short (no MCAP footer; " in result.stderr
        and f"{len(written) - expected} of the {len(written)} messages metadata.yaml lists for it are lost"
        in result.stderr
    )
    assert f"bag_play: published {expected} messages" in result.stderr


def test_a_cut_file_whose_receive_times_are_out_of_order_is_read_in_file_order(tmp_path):
    # Receive times can step back (threads of a recorder); the index that sorts them is what the cut lost.
    timestamps = [T0 + SECOND * (index + (1 if index % 2 == 0 else -1)) for index in range(1, 101)]
    with BagWriter(tmp_path / "bag") as bag:
        for index, timestamp in enumerate(timestamps):
            bag.write("/camera/image_raw", image(index), timestamp)
    file = tmp_path / "bag" / "bag.mcap"
    cut(file, file.stat().st_size * 6 // 10)
    expected = messages_before_the_cut(file)
    with BagReader(tmp_path / "bag") as bag:
        assert [m.timestamp_ns for m in bag.messages()] == timestamps[:expected]
