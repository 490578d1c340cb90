"""Writes rosbag2 bags (MCAP or sqlite3) that ``ros2 bag info/play`` read.

The storage files come from the `rosbags` library; this module adds what it
does not know: complete message definitions and type hashes from the installed
interface packages (pi0_msgs included), absolute topic names, and the
per-channel ``topic_type_hash`` entry that rosbag2's MCAP plugin writes.

    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/cam_high/image_raw", image, timestamp_ns, offered_qos=[OfferedQos.sensor_data()])
        bag.write("/action_chunk", chunk, timestamp_ns)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence

from rclpy.serialization import serialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string

from .definitions import DefinitionSource
from .errors import BagError
from .interfaces import parse_type_name, type_name_of
from .qos import OfferedQos

STORAGES = ("mcap", "sqlite3")
DEFAULT_STORAGE = "mcap"  # rosbag2's default since Iron; Humble's is sqlite3
# rosbag2 metadata version: 9 is what Jazzy and Kilted write; 8 (QoS as a string
# with numeric policies) is what Iron writes and older readers parse.
METADATA_VERSIONS = (8, 9)
DEFAULT_METADATA_VERSION = 9

_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass(frozen=True)
class BagSummary:
    """What a closed bag holds."""

    path: Path
    storage: str
    message_counts: dict[str, int] = field(default_factory=dict)  # per topic, including empty topics

    @property
    def message_count(self) -> int:
        return sum(self.message_counts.values())


class BagWriter:
    """Creates a new bag directory at `path` and writes messages into it (not thread-safe)."""

    def __init__(self, path: str | Path, storage: str = DEFAULT_STORAGE,
                 metadata_version: int = DEFAULT_METADATA_VERSION,
                 definitions: Optional[DefinitionSource] = None) -> None:
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}, got '{storage}'")
        if metadata_version not in METADATA_VERSIONS:
            raise BagError(f"metadata version must be one of {METADATA_VERSIONS}, got {metadata_version}")
        self.path = Path(path)
        self.storage = storage
        self._definitions = definitions or DefinitionSource()
        self._connections: dict[str, Connection] = {}
        self._counts: dict[str, int] = {}
        try:
            self._writer: Optional[_Rosbag2Writer] = _Rosbag2Writer(
                self.path, version=metadata_version, storage_plugin=_PLUGINS[storage])
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from None

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type of every topic added so far."""
        return {name: connection.msgtype for name, connection in self._connections.items()}

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[OfferedQos] = (),
                  type_hash: Optional[str] = None) -> None:
        """Declares a topic; `type_hash` overrides the installed one (e.g. as a publisher reported it)."""
        topic = absolute_topic(topic)
        msgtype = str(parse_type_name(msgtype))
        if topic in self._connections:
            raise BagError(f"topic {topic} was already added to {self.path}")
        definition = self._definitions.definition(msgtype)
        try:
            self._connections[topic] = self._open_writer().add_connection(
                topic, msgtype, msgdef=definition.text, rihs01=type_hash or definition.type_hash,
                offered_qos_profiles=[q.to_rosbags() for q in offered_qos])
        except WriterError as exc:
            raise BagError(f"cannot add topic {topic} to {self.path}: {exc}") from None
        self._counts[topic] = 0

    def write(self, topic: str, message: Any, timestamp_ns: int, offered_qos: Sequence[OfferedQos] = ()) -> None:
        """Serializes and writes a message; its topic is added on first use (`offered_qos` applies then)."""
        topic = absolute_topic(topic)
        msgtype = type_name_of(message)
        if topic not in self._connections:
            self.add_topic(topic, msgtype, offered_qos)
        elif self._connections[topic].msgtype != msgtype:
            raise BagError(f"topic {topic} holds {self._connections[topic].msgtype}, not {msgtype}")
        self.write_serialized(topic, serialize_message(message), timestamp_ns)

    def write_serialized(self, topic: str, data: bytes, timestamp_ns: int) -> None:
        """Writes CDR bytes to an added topic at `timestamp_ns` (the receive time rosbag2 replays by)."""
        topic = absolute_topic(topic)
        if topic not in self._connections:
            raise BagError(f"topic {topic} was not added to {self.path}")
        if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, int) or timestamp_ns < 0:
            raise BagError(f"timestamp must be a non-negative integer of nanoseconds, got {timestamp_ns!r}")
        try:
            self._open_writer().write(self._connections[topic], timestamp_ns, data)
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot write to {self.path}: {exc}") from None
        self._counts[topic] += 1

    def close(self) -> BagSummary:
        """Finalizes the storage file and writes metadata.yaml."""
        writer = self._open_writer()
        self._writer = None
        try:
            writer.close()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot finalize {self.path}: {exc}") from None
        return BagSummary(self.path, self.storage, dict(self._counts))

    def abort(self) -> None:
        """Stops without metadata.yaml, so the partial bag is never taken for a complete one."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_writer(self) -> _Rosbag2Writer:
        if self._writer is None:
            raise BagError(f"bag {self.path} is closed")
        return self._writer


def absolute_topic(topic: str) -> str:
    """Bags store fully qualified names, as rosbag2 records them."""
    if not topic or topic == "/":
        raise BagError("topic name must not be empty")
    return topic if topic.startswith("/") else f"/{topic}"


class _McapStorage(McapWriter):
    """rosbags' MCAP storage, plus the per-channel type hash rosbag2 (Iron and newer) writes."""

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        metadata = BytesIO()
        for key, value in (("offered_qos_profiles", offered_qos_profiles),
                           ("topic_type_hash", connection.digest)):
            write_string(metadata, key)
            write_string(metadata, value)
        self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                     connection.ext.serialization_format, metadata.getvalue()))
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, self.channels[-1], self.schemas)


class _Rosbag2Writer(Writer):
    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _McapStorage}
