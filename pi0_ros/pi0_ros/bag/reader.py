"""Reads rosbag2 bags (MCAP or sqlite3, from these tools or from ``ros2 bag record``).

Real recordings are read the way rosbag2 reads them:

- a topic's messages are selected by its name and type. The QoS a storage file
  keeps per topic often differs from metadata.yaml's (durations stored as the
  old "infinite" values against 0/0 in metadata.yaml, or no QoS at all), and
  rosbag2 never compares the two;
- the files of a split bag are read together, messages merged in timestamp order;
- playback starts at metadata.yaml's start time, even when a file holds earlier
  messages (rosbag2 seeks there and plays on);
- an MCAP file without its footer (a recording cut by a crash or a full disk) is
  read up to the cut, as rosbag2 falls back to scanning it, and
  :attr:`BagInfo.truncated` says what was lost.

Every failure of the storage layer, whatever the library raised, becomes one
line of :class:`BagError` naming the bag or the file and what is wrong with it.

    with BagReader(path) as bag:
        print(bag.info.topics["/action_chunk"].message_count)
        for message in bag.read(["/action_chunk"]):
            chunk = message.message  # a pi0_msgs.msg.ActionChunk
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import deserialize, message_class
from pi0_ros.bag.qos import OfferedQos
from pi0_ros.bag.writer import absolute_topic

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

_NO_TIME = 2**63 - 1  # rosbags' start time of a storage without messages


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    message_count: int  # what the storage files hold (after a cut: what was read before it)
    offered_qos: tuple[OfferedQos, ...]
    type_hash: str  # RIHS01 hash, empty when the recorder did not store one (Humble)


@dataclass(frozen=True)
class TruncatedFile:
    """A storage file cut short (a recording ended by a crash or a full disk), read up to the cut."""

    path: Path
    recovered: int  # messages read before the cut
    listed: int | None  # messages metadata.yaml lists for the file; None when nothing says
    unreadable_bytes: int  # from the end of the last complete record to the end of the file

    def __str__(self) -> str:
        if self.listed is None:
            lost = "how many messages followed is not recorded anywhere"
        else:
            lost = (
                f"{max(self.listed - self.recovered, 0)} of the {self.listed} messages metadata.yaml lists "
                "for it are lost"
            )
        return (
            f"{self.path} is cut short (no MCAP footer; {self.unreadable_bytes} bytes after its last complete "
            f"record cannot be read): read the {self.recovered} messages before the cut, {lost}"
        )


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str  # "mcap" or "sqlite3"
    start_ns: int  # the bag's start time (metadata.yaml's), where playback starts
    end_ns: int  # the bag's end time (metadata.yaml's; the last message read when a file was cut short)
    message_count: int
    topics: dict[str, TopicInfo]
    truncated: tuple[TruncatedFile, ...] = ()  # files read only up to a cut; their messages count as the bag's

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


@dataclass(frozen=True)
class _StorageFile:
    path: Path  # as the bag names it
    storage: McapReader | Sqlite3Reader


class BagReader:
    """An open bag; BagError on anything that keeps it from being read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = _open(self.path)
        storages = getattr(self._reader.storage, "storages", None) or [self._reader.storage]
        self._files = [_StorageFile(self.path / s.path.name if self.path.is_dir() else self.path, s) for s in storages]
        self._compressed_messages = self._reader.compression_mode == "message"
        try:
            self.info = self._read_info()
        except BagError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - malformed metadata surfaces as assorted errors
            self.close()
            raise BagError(f"{self.path}: unreadable bag metadata: {_reason(exc)}") from None

    def require_topics(self, topics: Collection[str]) -> tuple[str, ...]:
        """The bag's names for `topics` (given with or without the leading '/'); BagError for missing ones."""
        names = tuple(self._stored_name(t) for t in topics)
        missing = [t for t, name in zip(topics, names, strict=True) if name not in self.info.topics]
        if missing:
            raise BagError(
                f"{self.path} has no topic {', '.join(missing)} "
                f"(it has {', '.join(sorted(self.info.topics)) or 'none'})"
            )
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

    def messages(
        self, topics: Collection[str] | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[RawMessage]:
        """Serialized messages in timestamp order, of `topics` (all when None), from start_ns up to before stop_ns.

        The files of a split bag are merged; a file cut short yields its
        messages in the order they were written. Reading every message of a
        file checks their count against the file's own index: a storage that
        silently ends early (damaged chunk) is reported, not taken as the end.
        """
        names = set(self.require_topics(topics)) if topics is not None else set(self.info.topics)
        streams = [self._file_messages(f, names, start_ns, stop_ns) for f in self._files]
        yield from heapq.merge(*streams, key=lambda message: message.timestamp_ns)

    def _file_messages(
        self, file: _StorageFile, names: set[str], start_ns: int | None, stop_ns: int | None
    ) -> Iterator[RawMessage]:
        connections = [c for c in file.storage.connections if self._selects(c, names)]
        if not connections:
            return
        # The file's own time range decides, not metadata.yaml's: its start can lie after a split bag's
        # first message, and then playing from it reads only part of the earlier files.
        stored = file.storage.metadata
        complete = (start_ns is None or start_ns <= stored.start_time) and (
            stop_ns is None or stop_ns >= stored.end_time
        )
        stream = file.storage.messages(connections, start_ns, stop_ns)
        count = 0
        while True:
            try:
                connection, timestamp, data = next(stream)
                if self._compressed_messages:
                    data = zstd.decompress(data)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - corrupt storage surfaces as assorted errors
                raise BagError(f"{file.path}: corrupt data after {count} of its messages: {_reason(exc)}") from None
            count += 1
            yield RawMessage(connection.topic, self.info.topics[connection.topic].msgtype, timestamp, bytes(data))
        indexed = sum(c.msgcount for c in connections)
        if complete and count != indexed:
            raise BagError(f"{file.path} is corrupt: read {count} of the {indexed} messages its index lists")

    def _selects(self, connection: Connection, names: set[str]) -> bool:
        # By name and type only: the QoS stored with a topic is no reason to skip its messages.
        return connection.topic in names and _full_type(connection.msgtype) == _full_type(
            self.info.topics[connection.topic].msgtype
        )

    def read(
        self, topics: Collection[str] | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Like :meth:`messages`, deserialized; BagError on the first message that does not decode."""
        for raw in self.messages(topics, start_ns, stop_ns):
            yield BagMessage(raw.topic, raw.timestamp_ns, deserialize(raw.msgtype, raw.data))

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _read_info(self) -> BagInfo:
        listed: dict[str, TopicInfo] = {}
        for connection in self._reader.connections:  # metadata.yaml's topics, or a single file's own
            if connection.topic in listed:
                raise BagError(f"{self.path}: topic {connection.topic} is listed twice")
            listed[connection.topic] = TopicInfo(
                name=connection.topic,
                msgtype=connection.msgtype,
                message_count=connection.msgcount,
                offered_qos=self._offered_qos(connection),
                type_hash=connection.digest or "",
            )
        stored = self._stored_counts(listed)
        truncated = tuple(
            self._truncation(f)
            for f in self._files
            if isinstance(f.storage, _McapStorage) and f.storage.unreadable_bytes is not None
        )
        differing = [t for t in listed if listed[t].message_count != stored[t]]
        if differing and not truncated:
            # Not blamed on corruption: each file's own index agrees with itself, metadata.yaml does not.
            raise BagError(
                f"{self.path}/metadata.yaml does not match the storage files: "
                + "; ".join(f"{t}: {listed[t].message_count} messages listed, {stored[t]} stored" for t in differing)
            )
        topics = {t: TopicInfo(i.name, i.msgtype, stored[t], i.offered_qos, i.type_hash) for t, i in listed.items()}
        count = sum(t.message_count for t in topics.values())
        start = self._reader.start_time if count else 0
        # rosbags reports the end as one past the last timestamp.
        end = self._reader.end_time - 1 if count else 0
        if truncated and count:
            end = max(f.storage.metadata.end_time for f in self._files if f.storage.metadata.message_count) - 1
        return BagInfo(self.path, self._storage_name(), start, end, count, topics, truncated)

    def _offered_qos(self, connection: Connection) -> tuple[OfferedQos, ...]:
        try:
            return tuple(OfferedQos.from_rosbags(q) for q in connection.ext.offered_qos_profiles)
        except BagError as exc:
            raise BagError(f"{self.path}: topic {connection.topic} has an invalid offered QoS: {exc}") from None

    def _stored_counts(self, listed: dict[str, TopicInfo]) -> dict[str, int]:
        counts = dict.fromkeys(listed, 0)
        for file in self._files:
            for connection in file.storage.connections:
                if connection.topic not in listed:
                    continue  # rosbag2 plays only the topics metadata.yaml lists
                if _full_type(connection.msgtype) != _full_type(listed[connection.topic].msgtype):
                    raise BagError(
                        f"{file.path} stores {connection.topic} as {connection.msgtype}, but "
                        f"metadata.yaml lists it as {listed[connection.topic].msgtype}"
                    )
                counts[connection.topic] += connection.msgcount
        return counts

    def _truncation(self, file: _StorageFile) -> TruncatedFile:
        storage = file.storage
        files = getattr(self._reader.storage, "files", None) or []  # per-file counts: metadata version 5+
        listed = next((f["message_count"] for f in files if Path(f["path"]).name == storage.path.name), None)
        if listed is None and self.path.is_dir() and len(self._files) == 1:
            listed = self._reader.message_count
        return TruncatedFile(file.path, storage.metadata.message_count, listed, storage.unreadable_bytes)

    def _storage_name(self) -> str:
        return "mcap" if isinstance(self._files[0].storage, McapReader) else "sqlite3"


def _full_type(msgtype: str) -> str:
    """pkg/msg/Type for the short pkg/Type that early rosbag2 bags store."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


# -- opening --------------------------------------------------------------------------------------------------

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_NONE, _OP_HEADER, _OP_DATA_END = 0x00, 0x01, 0x0F  # 0x00 is no record: a zero-filled tail
_RECORD_PREFIX = struct.Struct("<BQ")  # opcode, content length


class _McapStorage(McapReader):
    """rosbags' MCAP reader; a file without its footer is scanned up to its last complete record.

    rosbag2 writes the index, the summary and the footer when a recording
    closes, so a crash or a full disk leaves a file that ends inside a record.
    Every complete record before that point is intact: the file is read as an
    unindexed MCAP that ends there, as rosbag2's fallback scan reads it.
    """

    unreadable_bytes: int | None = None  # set when the file was cut short: bytes after the last complete record

    def _open(self) -> None:
        assert self.bio is not None
        try:
            size = self.bio.seek(0, 2)
            if self._ends_with_magic(size):
                self.bio.seek(0)
                super()._open()
            else:
                self._open_cut(size)
        except ReaderError as exc:
            raise ReaderError(f"{self.path.name}: {_reason(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - garbled bytes surface as assorted errors (UTF-8, sizes)
            raise ReaderError(f"{self.path.name} is corrupt: {_reason(exc)}") from None

    def _ends_with_magic(self, size: int) -> bool:
        assert self.bio is not None
        if size < 2 * len(_MCAP_MAGIC):
            return False
        self.bio.seek(size - len(_MCAP_MAGIC))
        return self.bio.read() == _MCAP_MAGIC

    def _open_cut(self, size: int) -> None:
        assert self.bio is not None
        self.bio.seek(0)
        if size == 0:
            raise ReaderError("the file is empty")
        if self.bio.read(len(_MCAP_MAGIC)) != _MCAP_MAGIC:
            raise ReaderError("not an MCAP file (it does not start with the MCAP magic)")
        header_end = self._complete_record_end(len(_MCAP_MAGIC), size)
        if header_end is None:
            raise ReaderError("cut short inside its MCAP header: no message can be read")
        if self._opcode_at(len(_MCAP_MAGIC)) != _OP_HEADER:
            raise ReaderError("not an MCAP file (its first record is not a header)")
        self.data_start = self.data_end = header_end
        while (end := self._complete_record_end(self.data_end, size)) is not None:
            if self._opcode_at(self.data_end) in (_OP_NONE, _OP_DATA_END):  # zero fill, or the summary follows
                break
            self.data_end = end
        self.unreadable_bytes = size - self.data_end
        self.meta_scan()
        assert self.statistics is not None
        stats = self.statistics
        self.connections = [c._replace(msgcount=stats.channel_message_counts.get(c.id, 0)) for c in self.connections]
        count = stats.message_count
        self.metadata = self.metadata._replace(
            duration=stats.end_time - stats.start_time + 1 if count else 0,
            start_time=stats.start_time if count else _NO_TIME,
            end_time=stats.end_time + 1 if count else 0,
            message_count=count,
        )

    def messages(
        self, connections: Collection[Connection], start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes]]:
        if self.unreadable_bytes is None:
            yield from super().messages(connections, start, stop)
        else:
            # Without the index there is nothing to sort by: file order, as rosbag2's scan plays it
            # (rosbags refuses an unindexed file whose receive times are not in order).
            yield from self.messages_scan(connections, start, stop)

    def _opcode_at(self, offset: int) -> int:
        assert self.bio is not None
        self.bio.seek(offset)
        return self.bio.read(1)[0]

    def _complete_record_end(self, offset: int, size: int) -> int | None:
        """Where the record at `offset` ends, or None when the file ends before it does."""
        assert self.bio is not None
        if offset + _RECORD_PREFIX.size > size:
            return None
        self.bio.seek(offset)
        _, length = _RECORD_PREFIX.unpack(self.bio.read(_RECORD_PREFIX.size))
        end = offset + _RECORD_PREFIX.size + length
        return end if end <= size else None


class _DirectoryReader(DirectoryReader):
    STORAGE_PLUGINS = {**DirectoryReader.STORAGE_PLUGINS, "mcap": _McapStorage}


class _Reader(Reader):
    STORAGE_PLUGINS = {"dir": _DirectoryReader, ".mcap": _McapStorage, ".db3": Sqlite3Reader}


def _open(path: Path) -> Reader:
    if not path.exists():
        raise BagError(f"{path} does not exist")
    if path.is_dir():
        _check_metadata(path / "metadata.yaml")
    try:
        reader = _Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags reports bad bags with assorted exception types
        raise BagError(f"{path} is not a readable rosbag2 bag: {_reason(exc)}") from None
    return reader


def _reason(exc: BaseException) -> str:
    """The exception's message on one line; its type when it has none."""
    if isinstance(exc, MemoryError):  # a garbled length field asked for the allocation
        return "a record claims to be larger than the memory available"
    return " ".join(str(exc).split()) or f"{type(exc).__name__} without a message"


# Fields every rosbag2 metadata version has, and the YAML type they need.
_METADATA_FIELDS = (
    (("version",), int),
    (("storage_identifier",), str),
    (("relative_file_paths",), list),
    (("duration", "nanoseconds"), int),
    (("starting_time", "nanoseconds_since_epoch"), int),
    (("message_count",), int),
    (("topics_with_message_count",), list),
)
_TOPIC_FIELDS = (
    (("message_count",), int),
    (("topic_metadata", "name"), str),
    (("topic_metadata", "type"), str),
    (("topic_metadata", "serialization_format"), str),
)
_FILES_VERSION = 5  # the version that added the per-file list
_FILE_FIELDS = ((("path",), str), (("message_count",), int))
_NEWEST_METADATA_VERSION = 9
_KIND_NAMES = {int: "an integer", str: "a string", list: "a list"}


def _check_metadata(file: Path) -> None:
    """BagError naming metadata.yaml and what is wrong with it (rosbags' own errors name neither)."""
    if not file.is_file():
        raise BagError(
            f"{file.parent} is not a rosbag2 bag: it has no metadata.yaml (an interrupted recording "
            "leaves none: `ros2 bag reindex` recreates it, or give the storage file itself)"
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BagError(f"{file} is not UTF-8 text (byte {exc.start} is not valid UTF-8)") from None
    except OSError as exc:
        raise BagError(f"cannot read {file}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BagError(f"{file} is not valid YAML: {_reason(exc)}") from None
    info = document.get("rosbag2_bagfile_information") if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"{file} has no rosbag2_bagfile_information mapping: it is not rosbag2 metadata")
    _check_fields(file, info, _METADATA_FIELDS, "")
    if not 1 <= info["version"] <= _NEWEST_METADATA_VERSION:
        raise BagError(
            f"{file} has metadata version {info['version']}; these tools read versions 1 to {_NEWEST_METADATA_VERSION}"
        )
    for index, topic in enumerate(info["topics_with_message_count"]):
        _check_fields(file, topic, _TOPIC_FIELDS, f"topics_with_message_count[{index}].")
    if info["version"] >= _FILES_VERSION:  # rosbag2 requires the per-file list from then on
        _check_fields(file, info, ((("files",), list),), "")
        for index, entry in enumerate(info["files"]):
            _check_fields(file, entry, _FILE_FIELDS, f"files[{index}].")


def _check_fields(file: Path, mapping: Any, fields: tuple[tuple[tuple[str, ...], type], ...], prefix: str) -> None:
    for keys, kind in fields:
        value = mapping
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        # bool is an int to Python, never to rosbag2.
        if not isinstance(value, kind) or isinstance(value, bool):
            name = prefix + ".".join(keys)
            raise BagError(
                f"{file}: {name} must be {_KIND_NAMES[kind]}, got {value!r}"
                if value is not None
                else f"{file} has no {name}"
            )
