"""What rosbag2's metadata parsers accept, per distribution, rewritten in Python for the tests.

Read from rosbag2's yaml-cpp code (github.com/ros2/rosbag2):
- Humble (writes version 5): rosbag2_storage/src/rosbag2_storage/metadata_io.cpp decodes
  metadata.yaml; it reads only the fields of versions up to its own, and takes
  ``offered_qos_profiles`` as a string (``as<std::string>()``), which a YAML list is
  not ("bad conversion"). rosbag2_transport/src/rosbag2_transport/qos.cpp then loads
  that string as a list of profiles whose policies are integers (``as<int>()``) and
  whose durations are unsigned seconds and nanoseconds (``as<uint64_t>()``).
- Jazzy (writes version 9): rosbag2_storage/include/rosbag2_storage/yaml.hpp and
  src/rosbag2_storage/qos.cpp read every field up to the file's version; before
  version 9 the QoS is the same string as Humble's, from version 9 a list; a
  profile whose history is an integer has integer policies, otherwise policy names.

yaml-cpp's conversions are modelled on PyYAML's values: a string conversion takes any
scalar, an integer conversion an integer, a list conversion a sequence. The MCAP
channels and sqlite3 topics of a bag hold the same QoS string as metadata.yaml.
"""

from __future__ import annotations

from typing import Any

import yaml

QOS_POLICIES = ("history", "reliability", "durability", "liveliness")
QOS_DURATIONS = ("deadline", "lifespan", "liveliness_lease_duration")
POLICY_NAMES = {
    "system_default",
    "reliable",
    "best_effort",
    "volatile",
    "transient_local",
    "keep_last",
    "keep_all",
    "automatic",
    "manual_by_topic",
    "best_available",
    "unknown",
}


class BadConversion(Exception):
    """yaml-cpp's YAML::BadConversion: a field is missing or of another kind than the parser asks for."""


def parse_metadata_file(text: str, distro: str) -> list[tuple[str, Any]]:
    """Parses metadata.yaml as `distro`'s rosbag2 does; (topic, offered QoS field) per topic; BadConversion."""
    return parse_metadata(_get(yaml.safe_load(text), "rosbag2_bagfile_information"), distro)


def parse_metadata(info: Any, distro: str) -> list[tuple[str, Any]]:
    """The bag metadata mapping (metadata.yaml's, or the copy a storage file holds), as `distro` decodes it."""
    version = _integer(_get(info, "version"), "version")
    newest = {"humble": 5, "jazzy": 9}[distro]
    _string(_get(info, "storage_identifier"), "storage_identifier")
    _integer(_get(_get(info, "duration"), "nanoseconds"), "duration")
    _integer(_get(_get(info, "starting_time"), "nanoseconds_since_epoch"), "starting_time")
    _integer(_get(info, "message_count"), "message_count")
    for path in _sequence(_get(info, "relative_file_paths"), "relative_file_paths"):
        _string(path, "relative_file_paths")
    if version >= 3:
        _string(_get(info, "compression_format"), "compression_format")
        _string(_get(info, "compression_mode"), "compression_mode")
    if version >= 5:
        for entry in _sequence(_get(info, "files"), "files"):
            _string(_get(entry, "path"), "files.path")
            _integer(_get(_get(entry, "starting_time"), "nanoseconds_since_epoch"), "files.starting_time")
            _integer(_get(_get(entry, "duration"), "nanoseconds"), "files.duration")
            _integer(_get(entry, "message_count"), "files.message_count")
    if version >= 6 and newest >= 6:
        _mapping_or_null(_get(info, "custom_data"), "custom_data")
    if version >= 8 and newest >= 8:
        _string(_get(info, "ros_distro"), "ros_distro")
    topics = []
    for entry in _sequence(_get(info, "topics_with_message_count"), "topics_with_message_count"):
        _integer(_get(entry, "message_count"), "topics_with_message_count.message_count")
        topic = _get(entry, "topic_metadata")
        name = _string(_get(topic, "name"), "topic_metadata.name")
        _string(_get(topic, "type"), "topic_metadata.type")
        _string(_get(topic, "serialization_format"), "topic_metadata.serialization_format")
        if version >= 7 and newest >= 7:
            _string(_get(topic, "type_description_hash"), "topic_metadata.type_description_hash")
        qos: Any = None
        if version >= 9 and newest >= 9:
            qos = _sequence(_get(topic, "offered_qos_profiles"), "offered_qos_profiles")
            for profile in qos:
                parse_qos_profile(profile, distro)
        elif version >= 4:
            qos = _string(_get(topic, "offered_qos_profiles"), "offered_qos_profiles")
            parse_qos_string(qos, distro)
        topics.append((name, qos))
    return topics


def parse_qos_string(text: str, distro: str) -> None:
    """Loads a QoS string (metadata before version 9, MCAP channels, sqlite3 topics) as `distro` does."""
    if text == "":
        return  # "no QoS recorded": both play with the default profile
    for profile in _sequence(yaml.safe_load(text), "offered_qos_profiles"):
        parse_qos_profile(profile, distro)


def parse_qos_profile(profile: Any, distro: str) -> None:
    numeric = distro == "humble" or isinstance(profile.get("history") if isinstance(profile, dict) else None, int)
    for policy in QOS_POLICIES:
        value = _get(profile, policy)
        if numeric:
            _integer(value, policy)
        elif _string(value, policy) not in POLICY_NAMES:
            raise BadConversion(f"{policy}: unknown policy name {value!r}")
    _integer(_get(profile, "depth"), "depth")
    for duration in QOS_DURATIONS:
        for part in ("sec", "nsec"):
            if _integer(_get(_get(profile, duration), part), f"{duration}.{part}") < 0:
                raise BadConversion(f"{duration}.{part} is negative (uint64 expected)")
    if not isinstance(_get(profile, "avoid_ros_namespace_conventions"), bool):
        raise BadConversion("avoid_ros_namespace_conventions is not a boolean")


def _get(node: Any, key: str) -> Any:
    if not isinstance(node, dict) or key not in node:
        raise BadConversion(f"missing {key}")
    return node[key]


def _string(value: Any, what: str) -> str:
    if value is None or isinstance(value, (list, dict)):
        raise BadConversion(f"{what} is not a scalar: {value!r}")
    return str(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadConversion(f"{what} is not an integer: {value!r}")
    return value


def _sequence(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise BadConversion(f"{what} is not a sequence: {value!r}")
    return value


def _mapping_or_null(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, dict):
        raise BadConversion(f"{what} is not a map: {value!r}")
