"""The plain player: order, pacing, /clock schedule, selection, offsets, loops, bad messages (no graph)."""

import threading
import time

import pytest
from bag_samples import SECOND, T0, pacing_errors, write_sample_bag
from std_msgs.msg import String

from pi0_ros.bag import BagReader, BagWriter, PlaybackConfig, Player, parse_remap, plan_playback
from pi0_ros.bag.interfaces import deserialize


class Collector:
    """A sink that records what was published, with the wall time since the first call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, float]] = []
        self._start = None

    def _now(self) -> float:
        now = time.monotonic()
        self._start = self._start if self._start is not None else now
        return now - self._start

    def publish(self, topic: str, data: bytes) -> None:
        self.events.append(("message", (topic, data), self._now()))

    def publish_clock(self, bag_time_ns: int) -> None:
        self.events.append(("clock", bag_time_ns, self._now()))

    def messages(self):
        return [(value, wall) for kind, value, wall in self.events if kind == "message"]

    def clocks(self):
        return [(value, wall) for kind, value, wall in self.events if kind == "clock"]


def play(bag_path, **config):
    sink = Collector()
    with BagReader(bag_path) as bag:
        stats = Player(bag, PlaybackConfig(**config), validate=deserialize).run(sink)
    return sink, stats


def deserialize_sample(topic, data):
    types = {
        "/cam_high/image_raw": "sensor_msgs/msg/Image",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/action_chunk": "pi0_msgs/msg/ActionChunk",
    }
    return deserialize(types[topic], data)


@pytest.fixture
def bag(tmp_path):
    written = write_sample_bag(tmp_path / "bag", "mcap", duration_ns=300_000_000)
    return tmp_path / "bag", written


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_messages_are_published_in_order_with_their_recorded_spacing(tmp_path, rate):
    # Long enough that playing at the wrong rate is off by far more than the tolerance.
    path, written = tmp_path / "bag", write_sample_bag(tmp_path / "bag", "mcap", duration_ns=600_000_000)
    sink, stats = play(path, rate=rate, clock_hz=0)
    published = sink.messages()
    assert [topic for (topic, _), _ in published] == [t for t, _, _ in written]
    assert [deserialize_sample(topic, data) for (topic, data), _ in published] == [m for _, _, m in written]
    expected = [(stamp - T0) / SECOND / rate for _, stamp, _ in written]
    assert max(pacing_errors([(wall, e) for (_, wall), e in zip(published, expected, strict=True)])) < 0.07
    assert stats.published_count == len(written) and stats.passes == 1 and not stats.stopped


def test_clock_ticks_carry_bag_time_and_never_run_ahead_of_messages(bag):
    path, written = bag
    sink, stats = play(path, rate=2.0, clock_hz=50.0)
    clocks = [value for value, _ in sink.clocks()]
    assert clocks[0] == T0
    assert clocks == sorted(clocks)
    # 50 Hz wall at rate 2 is one tick per 40 ms of bag time.
    assert all((value - T0) % 40_000_000 == 0 for value in clocks)
    latest_clock = None
    stamps = iter(stamp for _, stamp, _ in written)
    for kind, value, _ in sink.events:
        if kind == "clock":
            latest_clock = value
        else:
            assert latest_clock <= next(stamps)
    assert max(pacing_errors([(wall, (value - T0) / SECOND / 2.0) for value, wall in sink.clocks()])) < 0.05
    assert stats.clock_ticks == len(clocks)


def test_clock_per_message_sets_the_clock_to_each_message_time_first(bag):
    path, written = bag
    sink, _ = play(path, clock_hz=0, clock_per_message=True, rate=4.0)
    kinds = [kind for kind, _, _ in sink.events]
    assert kinds == ["clock", "message"] * len(written)
    assert [value for value, _ in sink.clocks()] == [stamp for _, stamp, _ in written]


def test_start_offset_and_topic_selection(bag):
    path, written = bag
    sink, _ = play(path, start_offset=0.15, topics=("/joint_states", "action_chunk"), clock_hz=20.0, rate=4.0)
    expected = [(t, s) for t, s, _ in written if t != "/cam_high/image_raw" and s >= T0 + 150_000_000]
    assert [topic for (topic, _), _ in sink.messages()] == [t for t, _ in expected]
    assert sink.clocks()[0][0] == T0 + 150_000_000


def test_remaps_are_planned_against_bag_topics(bag):
    path, _ = bag
    with BagReader(path) as reader:
        topics = plan_playback(reader, PlaybackConfig(remaps=(parse_remap("joint_states:=/replay/joint_states"),)))
    outputs = {t.bag_topic: t.output_topic for t in topics}
    assert outputs["/joint_states"] == "/replay/joint_states"
    assert outputs["/action_chunk"] == "/action_chunk"
    assert next(t for t in topics if t.bag_topic == "/cam_high/image_raw").offered_qos[0].reliability == "best_effort"


def test_loop_replays_until_stopped(bag):
    path, written = bag
    stop = threading.Event()
    sink = Collector()
    with BagReader(path) as reader:
        player = Player(reader, PlaybackConfig(loop=True, rate=10.0, clock_hz=0), validate=deserialize)
        results = []
        runner = threading.Thread(target=lambda: results.append(player.run(sink, stop)))
        runner.start()
        deadline = time.monotonic() + 5.0
        while len(sink.messages()) < 2 * len(written) + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        stop.set()
        runner.join(timeout=2.0)
    stats = results[0]
    assert stats.passes >= 2 and stats.stopped
    topics = [topic for (topic, _), _ in sink.messages()]
    assert topics[: 2 * len(written)] == [t for t, _, _ in written] * 2


def test_stop_ends_a_long_wait_promptly(tmp_path):
    with BagWriter(tmp_path / "bag") as writer:
        writer.write("/a", String(data="first"), T0)
        writer.write("/a", String(data="an hour later"), T0 + 3600 * SECOND)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    sink = Collector()
    started = time.monotonic()
    with BagReader(tmp_path / "bag") as reader:
        stats = Player(reader, PlaybackConfig(clock_hz=0), validate=deserialize).run(sink, stop)
    assert time.monotonic() - started < 1.0
    assert stats.stopped and stats.published == {"/a": 1}


def test_messages_that_do_not_deserialize_are_counted_and_skipped(tmp_path):
    with BagWriter(tmp_path / "bag") as writer:
        writer.write("/a", String(data="good"), T0)
        writer.add_topic("/b", "std_msgs/msg/String")
        writer.write_serialized("/b", b"\x00\x01\x00\x00\xff\xff\xff\x7f", T0 + 1000)
        writer.write("/a", String(data="still good"), T0 + 2000)
    failures = []
    sink = Collector()
    with BagReader(tmp_path / "bag") as reader:
        stats = Player(reader, PlaybackConfig(clock_hz=0), validate=deserialize).run(
            sink, on_failure=lambda topic, exc: failures.append(topic)
        )
    assert [deserialize("std_msgs/msg/String", data).data for (_, data), _ in sink.messages()] == ["good", "still good"]
    assert stats.failed == {"/b": 1} and stats.published == {"/a": 2, "/b": 0}
    assert "cannot deserialize" in stats.first_failure["/b"] and failures == ["/b"]
