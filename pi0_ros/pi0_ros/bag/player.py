"""Replays a bag's messages with their recorded timing, and bag time as a clock.

The player is plain Python: it reads, paces and hands messages to a sink (the
ROS node publishes them; tests can collect them). Messages and /clock values
come from one thread in one merged schedule, so their order is deterministic:
a clock tick is published before any message stamped after it, and with
`clock_per_message` the clock is set to each message's time right before it.

Bag time t maps to wall time ``wall_start + (t - t0) / rate`` with
``t0 = bag start + start_offset``; clock ticks at `clock_hz` carry the bag time
of their place in that schedule. Messages whose bytes do not deserialize as
their type are counted and skipped, never published.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import deserialize
from pi0_ros.bag.qos import OfferedQos
from pi0_ros.bag.reader import BagInfo, BagReader, RawMessage

_NS = 1_000_000_000


@dataclass(frozen=True)
class PlaybackConfig:
    rate: float = 1.0  # playback speed factor: 2.0 plays twice as fast
    start_offset: float = 0.0  # seconds into the bag to start from
    topics: tuple[str, ...] = ()  # topics to play; empty plays all
    remaps: tuple[tuple[str, str], ...] = ()  # (bag topic, published topic)
    clock_hz: float = 100.0  # rate of /clock ticks; 0 publishes no periodic clock
    clock_per_message: bool = False  # also set /clock to each message's time right before publishing it
    loop: bool = False  # start over at the end until stopped

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise BagError(f"rate must be a positive number, got {self.rate}")
        if not (math.isfinite(self.start_offset) and self.start_offset >= 0):
            raise BagError(f"start offset must be zero or positive seconds, got {self.start_offset}")
        if not (math.isfinite(self.clock_hz) and self.clock_hz >= 0):
            raise BagError(f"clock rate must be zero or a positive number of Hz, got {self.clock_hz}")
        sources = [source for source, _ in self.remaps]
        if len(set(sources)) != len(sources):
            raise BagError("a topic is remapped twice")

    @property
    def publishes_clock(self) -> bool:
        return self.clock_hz > 0 or self.clock_per_message


def parse_remap(text: str) -> tuple[str, str]:
    """``old:=new`` as on the ros2 command line."""
    source, separator, target = text.partition(":=")
    if not separator or not source or not target:
        raise BagError(f"remap must look like old_topic:=new_topic, got '{text}'")
    return source, target


@dataclass(frozen=True)
class PlaybackTopic:
    bag_topic: str
    output_topic: str  # as given in a remap (relative names resolve in the player's namespace)
    msgtype: str
    offered_qos: tuple[OfferedQos, ...]


def plan_playback(reader: BagReader, config: PlaybackConfig) -> tuple[PlaybackTopic, ...]:
    """The topics to publish; BagError for a requested or remapped topic the bag lacks, or an unknown type."""
    info = reader.info
    selected = reader.require_topics(config.topics) if config.topics else tuple(info.topics)
    sources = reader.require_topics([source for source, _ in config.remaps])
    remaps = dict(zip(sources, (target for _, target in config.remaps), strict=True))
    unplayed = sorted(set(remaps) - set(selected))
    if unplayed:
        raise BagError(f"remapped topic {', '.join(unplayed)} is not among the topics to play")
    reader.require_known_types(selected)
    return tuple(
        PlaybackTopic(topic, remaps.get(topic, topic), info.topics[topic].msgtype, info.topics[topic].offered_qos)
        for topic in selected
    )


class PlaybackSink(Protocol):
    def publish(self, topic: str, data: bytes) -> None:
        """Publishes CDR bytes on a bag topic (the sink applies remaps)."""

    def publish_clock(self, bag_time_ns: int) -> None:
        """Publishes bag time on /clock."""


@dataclass
class PlaybackStats:
    published: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # messages that did not deserialize, skipped
    first_failure: dict[str, str] = field(default_factory=dict)  # the first such error per topic
    clock_ticks: int = 0
    passes: int = 0  # completed passes over the bag (more than one when looping)
    stopped: bool = False  # stopped before the end

    @property
    def published_count(self) -> int:
        return sum(self.published.values())

    @property
    def failed_count(self) -> int:
        return sum(self.failed.values())


Validator = Callable[[str, bytes], object]  # (msgtype, data) -> message; raises when data is not one
FailureCallback = Callable[[str, Exception], None]  # (topic, error) for each message that did not deserialize


class Player:
    """Publishes a bag through a sink; `validate` decides which messages are fit to publish."""

    def __init__(self, reader: BagReader, config: PlaybackConfig, validate: Validator = deserialize) -> None:
        self.reader = reader
        self.config = config
        self.topics = plan_playback(reader, config)
        self._validate = validate
        info: BagInfo = reader.info
        self.start_ns = info.start_ns + round(config.start_offset * _NS)
        if info.message_count and self.start_ns > info.end_ns:
            raise BagError(
                f"start offset {config.start_offset} s lies past the bag's end ({info.duration_ns / _NS:.3f} s)"
            )

    def run(
        self, sink: PlaybackSink, stop: threading.Event | None = None, on_failure: FailureCallback | None = None
    ) -> PlaybackStats:
        """Plays into `sink` until the end (or forever when looping) or until `stop` is set."""
        playback = _Playback(
            sink, stop or threading.Event(), on_failure, PlaybackStats(published={t.bag_topic: 0 for t in self.topics})
        )
        while self._play_once(playback):
            playback.stats.passes += 1
            if not self.config.loop:
                break
        playback.stats.stopped = playback.stop.is_set()
        return playback.stats

    def _play_once(self, playback: _Playback) -> bool:
        """One pass over the bag; False when stopped."""
        schedule = _Schedule(time.monotonic(), self.start_ns, self.config.rate, self.config.clock_hz)
        for message in self.reader.messages([t.bag_topic for t in self.topics], start_ns=self.start_ns):
            if not self._tick_clock_until(message.timestamp_ns, schedule, playback):
                return False
            if not self._wait_until(schedule.wall_time(message.timestamp_ns), playback.stop):
                return False
            self._play(message, playback)
        return not playback.stop.is_set()

    def _tick_clock_until(self, bag_time_ns: int, schedule: _Schedule, playback: _Playback) -> bool:
        """Publishes the clock ticks stamped up to `bag_time_ns`, each at its wall time."""
        while (tick := schedule.next_tick()) is not None and tick <= bag_time_ns:
            if not self._wait_until(schedule.wall_time(tick), playback.stop):
                return False
            # After a stall, publish only the newest tick that is due instead of a burst.
            playback.sink.publish_clock(schedule.take_tick(min(schedule.bag_time(time.monotonic()), bag_time_ns)))
            playback.stats.clock_ticks += 1
        return True

    def _wait_until(self, wall: float, stop: threading.Event) -> bool:
        remaining = wall - time.monotonic()
        if remaining > 0:
            return not stop.wait(remaining)
        return not stop.is_set()

    def _play(self, message: RawMessage, playback: _Playback) -> None:
        stats = playback.stats
        try:
            self._validate(message.msgtype, message.data)
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the replay
            stats.failed[message.topic] = stats.failed.get(message.topic, 0) + 1
            stats.first_failure.setdefault(message.topic, str(exc))
            if playback.on_failure is not None:
                playback.on_failure(message.topic, exc)
            return
        if self.config.clock_per_message:
            playback.sink.publish_clock(message.timestamp_ns)
            stats.clock_ticks += 1
        playback.sink.publish(message.topic, message.data)
        stats.published[message.topic] += 1


@dataclass
class _Playback:
    """The state of one run()."""

    sink: PlaybackSink
    stop: threading.Event
    on_failure: FailureCallback | None
    stats: PlaybackStats


class _Schedule:
    """Maps bag time to wall time for one pass, and keeps the clock ticks (in bag time)."""

    def __init__(self, wall_start: float, bag_start_ns: int, rate: float, clock_hz: float) -> None:
        self._wall_start = wall_start
        self._bag_start_ns = bag_start_ns
        self._rate = rate
        # Ticks are spaced in integer bag nanoseconds so that comparing them with
        # message stamps is exact: no tick is published after a later-stamped message.
        self._tick_ns = max(1, round(_NS * rate / clock_hz)) if clock_hz > 0 else None
        self._next_tick_ns = bag_start_ns

    def wall_time(self, bag_time_ns: int) -> float:
        return self._wall_start + (bag_time_ns - self._bag_start_ns) / _NS / self._rate

    def bag_time(self, wall: float) -> int:
        return self._bag_start_ns + math.floor((wall - self._wall_start) * self._rate * _NS)

    def next_tick(self) -> int | None:
        return self._next_tick_ns if self._tick_ns is not None else None

    def take_tick(self, latest_ns: int) -> int:
        """Consumes every tick stamped up to `latest_ns` (at least the next one); returns the newest."""
        assert self._tick_ns is not None
        newest = self._bag_start_ns + (latest_ns - self._bag_start_ns) // self._tick_ns * self._tick_ns
        newest = max(newest, self._next_tick_ns)
        self._next_tick_ns = newest + self._tick_ns
        return newest
