"""rosbag2 recording and replay for the pi0 suite (MCAP or sqlite3, readable by ``ros2 bag``).

Plain-Python API (no ROS graph needed):

- :class:`BagWriter` writes in-memory ROS messages or CDR bytes into a new bag;
- :class:`BagReader` reads a bag's metadata and its messages, raw or deserialized;
- :class:`Player` replays a bag into a :class:`PlaybackSink` with its recorded
  timing and bag time as a clock.

The nodes behind the ``bag_record`` and ``bag_play`` commands live in
:mod:`pi0_ros.bag.record` and :mod:`pi0_ros.bag.play`. Every failure is a
:class:`BagError`.
"""

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.player import (
    PlaybackConfig,
    PlaybackSink,
    PlaybackStats,
    PlaybackTopic,
    Player,
    parse_remap,
    plan_playback,
)
from pi0_ros.bag.qos import OfferedQos
from pi0_ros.bag.reader import (
    BagInfo,
    BagMessage,
    BagReader,
    RawMessage,
    TopicInfo,
    TruncatedFile,
)
from pi0_ros.bag.recorder import SUITE_TOPICS, BagRecorder, robot_topics, select_topics
from pi0_ros.bag.writer import DEFAULT_STORAGE, STORAGES, BagSummary, BagWriter

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGES",
    "SUITE_TOPICS",
    "BagError",
    "BagInfo",
    "BagMessage",
    "BagReader",
    "BagRecorder",
    "BagSummary",
    "BagWriter",
    "OfferedQos",
    "PlaybackConfig",
    "PlaybackSink",
    "PlaybackStats",
    "PlaybackTopic",
    "Player",
    "RawMessage",
    "TopicInfo",
    "TruncatedFile",
    "parse_remap",
    "plan_playback",
    "robot_topics",
    "select_topics",
]
