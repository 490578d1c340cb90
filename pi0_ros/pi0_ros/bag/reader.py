"""Reads rosbag2 bags (MCAP or sqlite3, from these tools or from ``ros2 bag record``).

Every failure of the storage layer, whatever the library raised, becomes a
:class:`BagError` naming the bag, so callers and the CLIs report it in one line.

    with BagReader(path) as bag:
        print(bag.info.topics["/action_chunk"].message_count)
        for message in bag.read(["/action_chunk"]):
            chunk = message.message  # a pi0_msgs.msg.ActionChunk
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Collection, Iterator, Optional

from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader

from .errors import BagError
from .interfaces import deserialize, message_class
from .qos import OfferedQos
from .writer import absolute_topic


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    message_count: int
    offered_qos: tuple[OfferedQos, ...]
    type_hash: str  # RIHS01 hash, empty when the recorder did not store one (Humble)


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str  # "mcap" or "sqlite3"
    start_ns: int  # timestamp of the first message
    end_ns: int  # timestamp of the last message
    message_count: int
    topics: dict[str, TopicInfo]

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str
    timestamp_ns: int  # receive time as recorded
    data: bytes  # CDR


@dataclass(frozen=True)
class BagMessage:
    topic: str
    timestamp_ns: int
    message: Any  # the generated ROS message


class BagReader:
    """An open bag; BagError on anything that keeps it from being read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = _open(self.path)
        try:
            self.info = self._read_info()
        except Exception as exc:  # noqa: BLE001 - malformed metadata surfaces as assorted errors
            self.close()
            raise BagError(f"{self.path}: unreadable bag metadata: {exc}") from None

    def require_topics(self, topics: Collection[str]) -> tuple[str, ...]:
        """The bag's names for `topics` (given with or without the leading '/'); BagError for missing ones."""
        names = tuple(self._stored_name(t) for t in topics)
        missing = [t for t, name in zip(topics, names, strict=True) if name not in self.info.topics]
        if missing:
            raise BagError(f"{self.path} has no topic {', '.join(missing)} "
                           f"(it has {', '.join(sorted(self.info.topics)) or 'none'})")
        return names

    def _stored_name(self, topic: str) -> str:
        # rosbag2 records absolute names, but bags written by other tools may hold relative ones.
        return topic if topic in self.info.topics else absolute_topic(topic)

    def require_known_types(self, topics: Collection[str]) -> None:
        """BagError when a topic's message type is not installed here (it could not be decoded or published)."""
        for topic in topics:
            msgtype = self.info.topics[topic].msgtype
            try:
                message_class(msgtype)
            except BagError as exc:
                raise BagError(f"{self.path}: topic {topic}: {exc}") from None

    def messages(self, topics: Optional[Collection[str]] = None, start_ns: Optional[int] = None,
                 stop_ns: Optional[int] = None) -> Iterator[RawMessage]:
        """Serialized messages in timestamp order, of `topics` (all when None), from start_ns up to before stop_ns.

        Reading the whole bag checks the count against the metadata: a storage
        that silently ends early (damaged chunk) is reported, not taken as the end.
        """
        names = set(self.require_topics(topics)) if topics is not None else set(self.info.topics)
        connections = [c for c in self._reader.connections if c.topic in names]
        if not connections:
            return
        stream = self._reader.messages(connections, start_ns, stop_ns)
        count = 0
        while True:
            try:
                connection, timestamp, data = next(stream)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - corrupt storage surfaces as assorted errors
                raise BagError(f"{self.path}: corrupt or truncated data after {count} messages: {exc}") from None
            count += 1
            yield RawMessage(connection.topic, connection.msgtype, timestamp, bytes(data))
        if self._covers_everything(start_ns, stop_ns):
            self._check_count(names, count)

    def _covers_everything(self, start_ns: Optional[int], stop_ns: Optional[int]) -> bool:
        return ((start_ns is None or start_ns <= self.info.start_ns)
                and (stop_ns is None or stop_ns > self.info.end_ns))

    def _check_count(self, topics: Collection[str], count: int) -> None:
        expected = sum(self.info.topics[t].message_count for t in topics)
        if count != expected:
            raise BagError(f"{self.path}: corrupt or truncated data: read {count} of the {expected} messages "
                           "its metadata lists")

    def read(self, topics: Optional[Collection[str]] = None, start_ns: Optional[int] = None,
             stop_ns: Optional[int] = None) -> Iterator[BagMessage]:
        """Like :meth:`messages`, deserialized; BagError on the first message that does not decode."""
        for raw in self.messages(topics, start_ns, stop_ns):
            yield BagMessage(raw.topic, raw.timestamp_ns, deserialize(raw.msgtype, raw.data))

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()

    def _read_info(self) -> BagInfo:
        topics: dict[str, TopicInfo] = {}
        for connection in self._reader.connections:
            if connection.topic in topics:
                raise BagError(f"topic {connection.topic} is stored twice, with different types or QoS")
            topics[connection.topic] = TopicInfo(
                name=connection.topic,
                msgtype=connection.msgtype,
                message_count=connection.msgcount,
                offered_qos=tuple(OfferedQos.from_rosbags(q) for q in connection.ext.offered_qos_profiles),
                type_hash=connection.digest or "",
            )
        count = self._reader.message_count
        start = self._reader.start_time if count else 0
        # rosbags reports the end as one past the last timestamp.
        end = self._reader.end_time - 1 if count else 0
        storage = self._storage_name()
        return BagInfo(self.path, storage, start, end, count, topics)

    def _storage_name(self) -> str:
        # A bag directory wraps one storage reader per file; a single file is its own.
        storages = getattr(self._reader.storage, "storages", None) or [self._reader.storage]
        return "mcap" if isinstance(storages[0], McapReader) else "sqlite3"


def _open(path: Path) -> Reader:
    if not path.exists():
        raise BagError(f"{path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 bag: it has no metadata.yaml (an interrupted recording "
                       "leaves none; `ros2 bag reindex` recreates it for sqlite3 bags)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags reports bad bags with assorted exception types
        raise BagError(f"{path} is not a readable rosbag2 bag: {exc}") from None
    return reader
