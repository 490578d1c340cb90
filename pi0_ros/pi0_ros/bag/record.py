"""bag_record: records the suite's inputs and outputs into a rosbag2 bag.

    ros2 run pi0_ros bag_record --robot-description aloha.yaml --output runs/towel_01
    ros2 run pi0_ros bag_record --topics /cam_high/image_raw /joint_states --storage sqlite3 \\
        --output runs/short --duration 30

Topics are subscribed as soon as a publisher for them appears, with a QoS that
matches every publisher (best effort for cameras, transient local for
policy_status), and stored serialized exactly as received. Ctrl-C or SIGTERM
finalizes the bag. Timestamps are the node's clock at reception (sim time when
run with use_sim_time), as ``ros2 bag record`` stores them.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.topic_endpoint_info import TopicEndpointInfo

from pi0_ros.bag.cli import report_error, signals_request_stop, split_argv
from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import message_class
from pi0_ros.bag.qos import OfferedQos, recording_qos
from pi0_ros.bag.recorder import BagRecorder, select_topics
from pi0_ros.bag.writer import (
    DEFAULT_METADATA_VERSION,
    DEFAULT_STORAGE,
    METADATA_VERSIONS,
    STORAGES,
    BagSummary,
)
from pi0_ros.core.robot_description import DescriptionError, load_robot_description

PROG = "bag_record"


RECORDER_NODE = "bag_record"


@dataclass(frozen=True)
class RecordConfig:
    output: Path  # bag directory to create; must not exist
    topics: tuple[str, ...]  # relative names resolve in the node's namespace
    storage: str = DEFAULT_STORAGE
    metadata_version: int = DEFAULT_METADATA_VERSION
    duration: float | None = None  # seconds of recording; None records until stopped
    status_period: float = 5.0  # seconds between status lines; 0 turns them off
    discovery_period: float = 0.2  # how often the graph is checked for new publishers, seconds
    qos_depth: int = 100  # subscription queue; generous, so bursts are not lost before the executor takes them

    def __post_init__(self) -> None:
        if not self.topics:
            raise BagError("no topics to record")
        if self.storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}, got '{self.storage}'")
        if self.metadata_version not in METADATA_VERSIONS:
            raise BagError(f"metadata version must be one of {METADATA_VERSIONS}, got {self.metadata_version}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise BagError(f"duration must be a positive number of seconds, got {self.duration}")
        if not (math.isfinite(self.status_period) and self.status_period >= 0):
            raise BagError(f"status period must be zero or a positive number of seconds, got {self.status_period}")
        if not (math.isfinite(self.discovery_period) and self.discovery_period > 0):
            raise BagError(f"discovery period must be positive, got {self.discovery_period}")
        if self.qos_depth < 1:
            raise BagError(f"qos depth must be at least 1, got {self.qos_depth}")


class RecordNode(Node):
    """Subscribes raw to the configured topics as their publishers appear and records them."""

    def __init__(self, config: RecordConfig, **node_kwargs: Any) -> None:
        super().__init__(RECORDER_NODE, **node_kwargs)
        self.config = config
        self.finished = threading.Event()  # set when the duration is reached or the writer failed
        self._definitions = DefinitionSource()
        self._wanted = tuple(dict.fromkeys(self.resolve_topic_name(t) for t in config.topics))
        self._topic_subscriptions: dict[str, Subscription] = {}
        self._skipped: set[str] = set()
        self._recorder = BagRecorder(config.output, config.storage, config.metadata_version)
        self._started = time.monotonic()
        # Steady timers: with use_sim_time and no /clock yet, ROS-time timers would never fire.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(config.discovery_period, self._discover, clock=steady)
        if config.status_period > 0:
            self.create_timer(config.status_period, self._report_status, clock=steady)
        if config.duration is not None:
            self.create_timer(min(config.duration, 0.05), self._check_duration, clock=steady)
        self.get_logger().info(
            f"recording into {config.output} ({config.storage}); waiting for publishers on {', '.join(self._wanted)}"
        )
        self._discover()

    @property
    def recorded_topics(self) -> tuple[str, ...]:
        """Topics subscribed so far (absolute names)."""
        return tuple(self._topic_subscriptions)

    def message_counts(self) -> dict[str, int]:
        return self._recorder.stats().received

    def close(self) -> BagSummary:
        """Stops recording and finalizes the bag; BagError when writing failed.

        Call it once no executor spins the node any more: it destroys the subscriptions.
        """
        for subscription in self._topic_subscriptions.values():
            self.destroy_subscription(subscription)
        self._topic_subscriptions.clear()
        summary = self._recorder.stop()
        self.get_logger().info(
            f"wrote {summary.message_count} messages on {len(summary.message_counts)} topics to {summary.path}"
        )
        return summary

    def _discover(self) -> None:
        self._finish_on_writer_error()
        for topic in self._wanted:
            if topic in self._topic_subscriptions or topic in self._skipped:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if publishers:
                self._subscribe(topic, publishers)

    def _subscribe(self, topic: str, publishers: Sequence[TopicEndpointInfo]) -> None:
        msgtypes = {p.topic_type for p in publishers}
        if len(msgtypes) > 1:
            self._skip(topic, f"publishers disagree on its type ({', '.join(sorted(msgtypes))})")
            return
        msgtype = msgtypes.pop()
        try:
            msg_class = message_class(msgtype)
            self._definitions.definition(msgtype)
        except BagError as exc:
            self._skip(topic, str(exc))
            return
        offers = [OfferedQos.from_rclpy(p.qos_profile) for p in publishers]
        self._recorder.add_topic(topic, msgtype, offers, _graph_type_hash(publishers[0]))
        qos = recording_qos(offers, self.config.qos_depth)
        self._topic_subscriptions[topic] = self.create_subscription(
            msg_class, topic, partial(self._on_message, topic), qos, raw=True
        )
        self.get_logger().info(
            f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, {qos.durability.name.lower()})"
        )

    def _skip(self, topic: str, reason: str) -> None:
        self._skipped.add(topic)
        self.get_logger().warning(f"not recording {topic}: {reason}")

    def _on_message(self, topic: str, data: bytes) -> None:
        if not self._recorder.record(topic, self.get_clock().now().nanoseconds, data):
            self._finish_on_writer_error()

    def _finish_on_writer_error(self) -> None:
        error = self._recorder.error
        if error is not None and not self.finished.is_set():
            self.get_logger().error(f"recording stopped: {error}")
            self.finished.set()

    def _check_duration(self) -> None:
        if time.monotonic() - self._started >= self.config.duration:
            self.finished.set()

    def _report_status(self) -> None:
        stats = self._recorder.stats()
        counts = ", ".join(f"{topic} {count}" for topic, count in stats.received.items()) or "nothing yet"
        line = f"{time.monotonic() - self._started:.0f} s: {counts}"
        if stats.dropped:
            line += f"; dropped {stats.dropped}"
        waiting = [t for t in self._wanted if t not in self._topic_subscriptions and t not in self._skipped]
        if waiting:
            line += f"; no publisher yet on {', '.join(waiting)}"
        self.get_logger().info(line)


def _graph_type_hash(publisher: TopicEndpointInfo) -> str | None:
    # rosbag2 stores the hash the publisher announces; Humble's graph has none.
    type_hash = str(getattr(publisher, "topic_type_hash", "") or "")
    return type_hash if type_hash.startswith("RIHS01_") else None


def parse_args(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Record the pi0 suite's topics into a rosbag2 bag.")
    parser.add_argument(
        "--robot-description",
        type=Path,
        help="robot YAML: record its cameras, joint states, controller commands and the suite's topics",
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="bag directory to create")
    parser.add_argument("--storage", "-s", choices=STORAGES, default=DEFAULT_STORAGE)
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="topics to record (as well)")
    parser.add_argument("--duration", "-d", type=float, help="stop after this many seconds")
    parser.add_argument("--status-period", type=float, default=5.0, help="seconds between status lines (0: none)")
    parser.add_argument(
        "--metadata-version",
        type=int,
        choices=METADATA_VERSIONS,
        default=DEFAULT_METADATA_VERSION,
        help="rosbag2 metadata version: 8 (default) is read on Humble, Jazzy and Kilted; 9 is "
        "Jazzy's own format, which Humble cannot parse",
    )
    return parser.parse_args(args)


def config_from_args(args: argparse.Namespace) -> RecordConfig:
    description = load_robot_description(args.robot_description) if args.robot_description else None
    return RecordConfig(
        output=args.output,
        topics=select_topics(description, args.topics),
        storage=args.storage,
        metadata_version=args.metadata_version,
        duration=args.duration,
        status_period=args.status_period,
    )


def main(argv: Sequence[str] | None = None) -> int:
    full_argv, own_args = split_argv(PROG, argv)
    try:
        config = config_from_args(parse_args(own_args))
    except (BagError, DescriptionError) as exc:
        return report_error(PROG, exc)
    stop = threading.Event()
    with signals_request_stop(stop):
        rclpy.init(args=full_argv, signal_handler_options=SignalHandlerOptions.NO)
        try:
            return _record(config, stop)
        finally:
            rclpy.try_shutdown()


def _record(config: RecordConfig, stop: threading.Event) -> int:
    try:
        node = RecordNode(config)
    except BagError as exc:
        return report_error(PROG, exc)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not (stop.is_set() or node.finished.is_set()):
            executor.spin_once(timeout_sec=0.1)
        node.close()
    except BagError as exc:
        return report_error(PROG, exc)
    finally:
        executor.shutdown()
        node.destroy_node()
    return 0
