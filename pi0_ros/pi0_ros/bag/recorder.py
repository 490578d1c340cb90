"""What to record for a robot, and a recorder that writes on a thread of its own.

Subscription callbacks hand serialized messages to :class:`BagRecorder`, which
queues them for one writer thread: disk writes never stall the executor, and
the storage (sqlite3 connections are bound to the thread that opened them) is
only ever touched from that thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.qos import OfferedQos
from pi0_ros.bag.writer import (
    DEFAULT_METADATA_VERSION,
    DEFAULT_STORAGE,
    BagSummary,
    BagWriter,
)
from pi0_ros.core.robot_description import RobotDescription

# Topics of the suite itself (relative, so a launch namespace applies). The
# instruction goal travels over the action's services, which are not topics:
# the bag holds it through policy_status (instruction, goal_id, goal_active) and
# the action's feedback and status topics.
SUITE_TOPICS = (
    "action_chunk",
    "policy_status",
    "streamer_status",
    "execute_instruction/_action/feedback",
    "execute_instruction/_action/status",
    "/diagnostics",
)


def robot_topics(description: RobotDescription) -> tuple[str, ...]:
    """Every sensor and command topic of a robot: cameras, joint states, controllers, odometry."""
    topics = [camera.topic for camera in description.cameras]
    topics += description.joint_state_topics
    topics += [controller.topic for controller in description.controllers]
    if description.base is not None:
        topics.append(description.base.odometry_topic)
    return tuple(topics)


def select_topics(description: RobotDescription | None, explicit: Sequence[str] = ()) -> tuple[str, ...]:
    """The robot's topics and the suite's (when a description is given) plus `explicit`, without repeats."""
    topics: list[str] = []
    if description is not None:
        topics += robot_topics(description) + SUITE_TOPICS
    topics += explicit
    if not topics:
        raise BagError("nothing to record: give a robot description, topics, or both")
    return tuple(dict.fromkeys(topics))


@dataclass(frozen=True)
class _Topic:
    name: str
    msgtype: str
    offered_qos: tuple[OfferedQos, ...]
    type_hash: str | None


@dataclass(frozen=True)
class _Message:
    topic: str
    timestamp_ns: int
    data: bytes


_STOP = object()  # queued by stop(): write out what came before it, then finalize


@dataclass
class RecorderStats:
    """Counters shared with the writer thread; read them through BagRecorder.stats()."""

    received: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # messages refused because the queue held max_queue_bytes


class BagRecorder:
    """Opens a bag and writes queued messages from a thread; BagError at start when it cannot."""

    def __init__(
        self,
        path: str | Path,
        storage: str = DEFAULT_STORAGE,
        metadata_version: int = DEFAULT_METADATA_VERSION,
        max_queue_bytes: int = 512 * 2**20,
    ) -> None:
        if max_queue_bytes <= 0:
            raise BagError(f"max_queue_bytes must be positive, got {max_queue_bytes}")
        self._max_queue_bytes = max_queue_bytes
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # _Topic, _Message or _STOP
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._stats = RecorderStats()
        self._error: BagError | None = None
        self._summary: BagSummary | None = None
        opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(Path(path), storage, metadata_version, opened), name="bag_writer", daemon=True
        )
        self._thread.start()
        opened.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def error(self) -> BagError | None:
        """The writer's failure (disk full, bad definition), after which nothing more is written."""
        return self._error

    def add_topic(
        self, topic: str, msgtype: str, offered_qos: Sequence[OfferedQos] = (), type_hash: str | None = None
    ) -> None:
        """Declares a topic before its first message; its definition must be installed (check first)."""
        with self._lock:
            self._stats.received.setdefault(topic, 0)
        self._queue.put(_Topic(topic, msgtype, tuple(offered_qos), type_hash))

    def record(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queues one message of an added topic; False when it was dropped (queue full or writer failed)."""
        with self._lock:
            if self._error is not None or self._queued_bytes + len(data) > self._max_queue_bytes:
                self._stats.dropped += 1
                return False
            self._queued_bytes += len(data)
            self._stats.received[topic] = self._stats.received.get(topic, 0) + 1
        self._queue.put(_Message(topic, timestamp_ns, data))
        return True

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(dict(self._stats.received), self._stats.dropped)

    def stop(self) -> BagSummary:
        """Writes what is queued, finalizes the bag and returns its summary; BagError if writing failed."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def _run(self, path: Path, storage: str, metadata_version: int, opened: threading.Event) -> None:
        try:
            writer = BagWriter(path, storage, metadata_version)
        except BagError as exc:
            self._error = exc
            opened.set()
            return
        opened.set()
        try:
            self._drain(writer)
        except BagError as exc:
            self._fail(exc)
            self._discard_queue()
        finally:
            self._finalize(writer)

    def _drain(self, writer: BagWriter) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, _Topic):
                writer.add_topic(item.name, item.msgtype, item.offered_qos, item.type_hash)
            elif isinstance(item, _Message):
                with self._lock:
                    self._queued_bytes -= len(item.data)
                writer.write_serialized(item.topic, item.data, item.timestamp_ns)

    def _discard_queue(self) -> None:
        while self._queue.get() is not _STOP:
            pass

    def _finalize(self, writer: BagWriter) -> None:
        try:
            self._summary = writer.close()
        except BagError as exc:
            self._fail(exc)

    def _fail(self, exc: BagError) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
