"""Writes rosbag2 bags (MCAP or sqlite3) that ``ros2 bag info/play`` read on Humble, Jazzy and Kilted.

The storage files come from the `rosbags` library; this module adds what it
does not know: complete message definitions and type hashes from the installed
interface packages (pi0_msgs included), absolute topic names, the per-channel
``topic_type_hash`` entry that rosbag2's MCAP plugin writes, and the ROS
distribution the recording ran on where rosbags writes its own name.

    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/cam_high/image_raw", image, timestamp_ns, offered_qos=[OfferedQos.sensor_data()])
        bag.write("/action_chunk", chunk, timestamp_ns)
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any

from rclpy.serialization import serialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import (
    Channel,
    McapWriter,
    write_channel,
    write_string,
)
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import parse_type_name, type_name_of
from pi0_ros.bag.qos import OfferedQos

STORAGES = ("mcap", "sqlite3")
DEFAULT_STORAGE = "mcap"  # rosbag2's default since Iron; Humble's is sqlite3
# rosbag2 metadata version. 9 is what Jazzy and Kilted write, with the offered QoS
# as a YAML list, which Humble's parser rejects ("bad conversion"). 8 (Iron's) keeps
# the QoS as a string of numeric policies: Humble's parser reads it (it skips the
# fields it does not know), and so do Jazzy's and Kilted's.
METADATA_VERSIONS = (8, 9)
DEFAULT_METADATA_VERSION = 8

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

    def __init__(
        self,
        path: str | Path,
        storage: str = DEFAULT_STORAGE,
        metadata_version: int = DEFAULT_METADATA_VERSION,
        definitions: DefinitionSource | None = None,
    ) -> None:
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
            self._writer: _Rosbag2Writer | None = _Rosbag2Writer(
                self.path, version=metadata_version, storage_plugin=_PLUGINS[storage]
            )
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from None

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type of every topic added so far."""
        return {name: connection.msgtype for name, connection in self._connections.items()}

    def add_topic(
        self, topic: str, msgtype: str, offered_qos: Sequence[OfferedQos] = (), type_hash: str | None = None
    ) -> None:
        """Declares a topic; `type_hash` overrides the installed one (e.g. as a publisher reported it)."""
        topic = absolute_topic(topic)
        msgtype = str(parse_type_name(msgtype))
        if topic in self._connections:
            raise BagError(f"topic {topic} was already added to {self.path}")
        definition = self._definitions.definition(msgtype)
        try:
            self._connections[topic] = self._open_writer().add_connection(
                topic,
                msgtype,
                msgdef=definition.text,
                rihs01=type_hash or definition.type_hash,
                offered_qos_profiles=[q.to_rosbags() for q in offered_qos],
            )
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
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


def ros_distro() -> str:
    """The ROS 2 distribution these tools run on, as rosbag2 records it (metadata version 8 and newer).

    rosbag2 stores $ROS_DISTRO, which sourcing an apt-installed ROS 2 sets; the
    PyPI wheels set nothing but name the distribution in their packages. Empty
    when neither says, as rosbag2 then writes.
    """
    return os.environ.get("ROS_DISTRO") or _wheels_distro()


@cache
def _wheels_distro() -> str:
    # Each distribution's PyPI wheels install rclpy through its own meta-package, ros-<distro>-rclpy.
    for distribution in importlib.metadata.distributions():
        match = re.fullmatch(r"ros-([a-z]+)-rclpy", (distribution.metadata.get("Name") or "").lower())
        if match:
            return match.group(1)
    return ""


def _with_ros_distro(metadata: str) -> str:
    """rosbags' metadata YAML with this distribution where rosbags writes its own name."""
    text, replaced = re.subn(
        r"^(\s*ros_distro: )rosbags$", lambda m: m.group(1) + json.dumps(ros_distro()), metadata, flags=re.MULTILINE
    )
    if replaced != 1:
        raise BagError("the rosbags library wrote metadata without its 'ros_distro: rosbags' line")
    return text


class _Sqlite3Storage(Sqlite3Writer):
    """rosbags' sqlite3 storage, recording this distribution in the file as rosbag2 does."""

    def close(self, version: int, metadata: str) -> None:
        self.cursor.execute("UPDATE schema SET ros_distro = ?", (ros_distro(),))
        super().close(version, _with_ros_distro(metadata))


class _McapStorage(McapWriter):
    """rosbags' MCAP storage, plus the per-channel type hash rosbag2 (Iron and newer) writes and the distribution."""

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        metadata = BytesIO()
        for key, value in (("offered_qos_profiles", offered_qos_profiles), ("topic_type_hash", connection.digest)):
            write_string(metadata, key)
            write_string(metadata, value)
        self.channels.append(
            Channel(
                connection.id,
                connection.msgtype,
                connection.topic,
                connection.ext.serialization_format,
                metadata.getvalue(),
            )
        )
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    def close(self, version: int, metadata: str) -> None:
        super().close(version, _with_ros_distro(metadata))


class _Rosbag2Writer(Writer):
    STORAGE_PLUGINS = {StoragePlugin.SQLITE3: _Sqlite3Storage, StoragePlugin.MCAP: _McapStorage}

    def close(self) -> None:
        super().close()
        # Replaced whole, like rosbags wrote it: a reader never sees half a metadata.yaml.
        partial = self.metapath.with_suffix(".yaml.tmp")
        partial.write_text(_with_ros_distro(self.metapath.read_text()))
        partial.replace(self.metapath)
