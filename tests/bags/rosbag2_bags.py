"""Bags shaped like the ones rosbag2 recorders wrote, generated in tmp_path (nothing is stored in git).

What is reproduced, read from rosbag2's metadata code (rosbag2_storage yaml.hpp and
metadata_io.cpp of the humble and jazzy branches) and its own test bags
(rosbag2_py/test/resources/{mcap,sqlite3}/{talker,wbag}):

- metadata.yaml of versions 4 to 9: version 4 stores each topic's offered QoS as
  a YAML string with numeric policies, 5 adds the per-file ``files`` list, 6
  ``custom_data``, 7 ``type_description_hash``, 8 ``ros_distro``, and 9 stores
  the QoS as a YAML list with policy names;
- the QoS kept in the storage files (MCAP channel metadata, the sqlite3 topics
  table) need not be metadata.yaml's: the talker bags hold the durations rmw
  reported before Galactic ({sec: 2147483647, nsec: 4294967295}, "infinite")
  where metadata.yaml says 0/0, and bags written by other tools keep no QoS;
- split bags: files ``<bag>_<n>.<ext>``, listed in order in metadata.yaml, every
  topic registered in every file;
- the wbag bags' metadata.yaml starts at their last file's first message,
  later than the bag's first message.

The storage files are written with the rosbags library, as plain storages; the
metadata.yaml beside them is written here.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rclpy.serialization import serialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.interfaces import type_name_of

EXTENSIONS = {"mcap": "mcap", "sqlite3": "db3"}
INFINITE_BEFORE_GALACTIC = QosTime(2147483647, 4294967295)  # Fast DDS's "infinite" in Foxy bags
ZERO = QosTime(0, 0)


def profile(
    reliability: QosReliability = QosReliability.RELIABLE,
    durability: QosDurability = QosDurability.VOLATILE,
    duration: QosTime = ZERO,
) -> Qos:
    """A publisher's offered QoS as rosbag2 recorded it (history unknown, depth 0: what the graph reports)."""
    return Qos(
        QosHistory.UNKNOWN, 0, reliability, durability, duration, duration, QosLiveliness.AUTOMATIC, duration, False
    )


@dataclass(frozen=True)
class BagContents:
    """Messages and the QoS that rosbag2 stored for them."""

    messages: Sequence[tuple[str, int, Any]]  # (topic, timestamp, message) in timestamp order
    metadata_qos: dict[str, list[Qos]]  # per topic, as metadata.yaml lists it
    storage_qos: dict[str, list[Qos]]  # per topic, as the storage files keep it

    @property
    def topics(self) -> dict[str, str]:
        return {topic: type_name_of(message) for topic, _, message in self.messages}


def write_rosbag2_bag(
    path: Path, recording: BagContents, storage: str, version: int, files: int = 1, starting_time_ns: int | None = None
) -> None:
    """A bag directory at `path` as rosbag2 wrote it; `starting_time_ns` overrides metadata.yaml's start."""
    path.mkdir()
    definitions = DefinitionSource()
    parts = _split(list(recording.messages), files)
    file_infos = []
    for index, part in enumerate(parts):
        name = f"{path.name}_{index}.{EXTENSIONS[storage]}"
        _write_storage(path / name, part, recording, storage, definitions)
        times = [timestamp for _, timestamp, _ in part]
        file_infos.append(
            {
                "path": name,
                "starting_time": {"nanoseconds_since_epoch": min(times)},
                "duration": {"nanoseconds": max(times) - min(times)},
                "message_count": len(part),
            }
        )
    times = [timestamp for _, timestamp, _ in recording.messages]
    start = min(times) if starting_time_ns is None else starting_time_ns
    info: dict[str, Any] = {
        "version": version,
        "storage_identifier": storage,
        "relative_file_paths": [f["path"] for f in file_infos],
        "duration": {"nanoseconds": max(times) - start},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": len(recording.messages),
        "topics_with_message_count": [
            _topic_entry(recording, topic, msgtype, version, definitions) for topic, msgtype in recording.topics.items()
        ],
        "compression_format": "",
        "compression_mode": "",
    }
    if version >= 5:
        info["files"] = file_infos
    if version >= 6:
        info["custom_data"] = None
    if version >= 8:
        info["ros_distro"] = "iron" if version == 8 else "jazzy"
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))


def _topic_entry(
    recording: BagContents, topic: str, msgtype: str, version: int, definitions: DefinitionSource
) -> dict[str, Any]:
    offered = recording.metadata_qos[topic]
    metadata: dict[str, Any] = {
        "name": topic,
        "type": msgtype,
        "serialization_format": "cdr",
        "offered_qos_profiles": qos_list(offered) if version >= 9 else qos_string(offered),
    }
    if version >= 7:
        metadata["type_description_hash"] = definitions.definition(msgtype).type_hash
    return {"topic_metadata": metadata, "message_count": sum(1 for t, _, _ in recording.messages if t == topic)}


def qos_string(profiles: Sequence[Qos]) -> str:
    """Metadata before version 9: a YAML string, policies as rmw's enum values."""
    if not profiles:
        return ""
    return yaml.safe_dump([_qos_dict(p, lambda policy: policy.value) for p in profiles], sort_keys=False)


def qos_list(profiles: Sequence[Qos]) -> list[dict[str, Any]]:
    """Metadata version 9: a YAML list, policies by name."""
    return [_qos_dict(p, lambda policy: policy.name.lower()) for p in profiles]


def _qos_dict(qos: Qos, policy: Any) -> dict[str, Any]:
    def duration(time: QosTime) -> dict[str, int]:
        return {"sec": time.sec, "nsec": time.nsec}

    return {
        "history": policy(qos.history),
        "depth": qos.depth,
        "reliability": policy(qos.reliability),
        "durability": policy(qos.durability),
        "deadline": duration(qos.deadline),
        "lifespan": duration(qos.lifespan),
        "liveliness": policy(qos.liveliness),
        "liveliness_lease_duration": duration(qos.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": qos.avoid_ros_namespace_conventions,
    }


def _write_storage(
    target: Path,
    part: Sequence[tuple[str, int, Any]],
    recording: BagContents,
    storage: str,
    definitions: DefinitionSource,
) -> None:
    scratch = target.with_name(target.name + ".writing")
    # Version 8 keeps the storage's QoS as the numeric string older rosbag2 stored too.
    with Writer(scratch, version=8, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        connections = {}
        for topic, msgtype in recording.topics.items():
            definition = definitions.definition(msgtype)
            connections[topic] = writer.add_connection(
                topic,
                msgtype,
                msgdef=definition.text,
                rihs01=definition.type_hash,
                offered_qos_profiles=recording.storage_qos[topic],
            )
        for topic, timestamp, message in part:
            writer.write(connections[topic], timestamp, serialize_message(message))
    next(scratch.glob(f"*.{EXTENSIONS[storage]}")).rename(target)
    shutil.rmtree(scratch)


def _split(messages: list, files: int) -> list[list]:
    size = -(-len(messages) // files)
    return [messages[i : i + size] for i in range(0, len(messages), size)]
