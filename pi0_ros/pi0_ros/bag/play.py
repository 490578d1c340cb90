"""bag_play: publishes a bag's messages with their recorded timing and bag time on /clock.

    ros2 run pi0_ros bag_play runs/towel_01 --rate 0.5 --topics /cam_high/image_raw /joint_states
    ros2 run pi0_ros bag_play runs/towel_01 --remap /action_chunk:=/recorded/action_chunk --loop

Nodes under test run with use_sim_time:=true. The real-ROS equivalent is
``ros2 bag play runs/towel_01 --clock 100 --rate 0.5`` (see docs/bags.md).
Publishers offer the recorded QoS when all recorded publishers agreed on it
(best effort for cameras, transient local for policy_status), reliable volatile
otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from pi0_ros.bag.cli import report_error, signals_request_stop, split_argv
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import message_class
from pi0_ros.bag.player import (
    PlaybackConfig,
    PlaybackStats,
    PlaybackTopic,
    Player,
    parse_remap,
)
from pi0_ros.bag.qos import playback_qos
from pi0_ros.bag.reader import BagReader

PROG = "bag_play"
_NS = 1_000_000_000
ACK_POLL_S = 0.05  # slices of the wait for acknowledgements, so Ctrl-C is noticed
# Reliable keeps every tick for subscribers that ask for it; it still matches the
# best-effort /clock subscription of rclcpp and rclpy time sources.
CLOCK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


class PlayNode(Node):
    """Owns one publisher per played topic (and /clock); a playback sink for :class:`Player`."""

    def __init__(
        self, topics: Sequence[PlaybackTopic], publish_clock: bool = True, qos_depth: int = 10, **node_kwargs: Any
    ) -> None:
        super().__init__("bag_play", **node_kwargs)
        self._topic_publishers: dict[str, Publisher] = {
            t.bag_topic: self.create_publisher(
                message_class(t.msgtype), t.output_topic, playback_qos(t.offered_qos, qos_depth)
            )
            for t in topics
        }
        self._clock_publisher = self.create_publisher(Clock, "/clock", CLOCK_QOS) if publish_clock else None

    def publish(self, topic: str, data: bytes) -> None:
        self._topic_publishers[topic].publish(data)

    def publish_clock(self, bag_time_ns: int) -> None:
        if self._clock_publisher is not None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(bag_time_ns, _NS)
            self._clock_publisher.publish(clock)

    def topics_without_subscribers(self) -> list[str]:
        return [p.topic_name for p in self._topic_publishers.values() if p.get_subscription_count() == 0]

    def wait_for_acknowledgements(self, timeout: float, stop: threading.Event) -> list[str]:
        """Blocks until every reliable subscriber acknowledged every message published, at most `timeout` s.

        Returns the topics still waiting. Discovery runs both ways: a subscriber that this player already
        matched may not know the player yet when the first messages reach it, and drops them; it asks for
        them again once it knows the player, which must still exist to resend them.
        """
        deadline = time.monotonic() + timeout
        pending = [*self._topic_publishers.values(), *([self._clock_publisher] if self._clock_publisher else [])]
        while pending and not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            wait = Duration(nanoseconds=int(min(ACK_POLL_S, remaining) * _NS))
            pending = [p for p in pending if not p.wait_for_all_acked(wait)]
        return [p.topic_name for p in pending]

    def wait_for_subscribers(self, timeout: float, stop: threading.Event) -> None:
        """Blocks until every played topic has a subscriber; BagError naming the others after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (missing := self.topics_without_subscribers()) and not stop.is_set():
            if time.monotonic() >= deadline:
                raise BagError(
                    f"no subscriber after {timeout:g} s on {', '.join(missing)} (select topics with --topics)"
                )
            stop.wait(0.02)


def parse_args(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Replay a rosbag2 bag with bag time on /clock.")
    parser.add_argument("bag", type=Path, help="bag directory (or a single .mcap / .db3 file)")
    parser.add_argument("--rate", "-r", type=float, default=1.0, help="speed factor (2: twice as fast)")
    parser.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start at")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="topics to play (default: all)")
    parser.add_argument("--remap", "-m", nargs="+", default=[], metavar="OLD:=NEW", help="publish OLD as NEW")
    parser.add_argument("--clock-hz", type=float, default=100.0, help="/clock ticks per second (0: none)")
    parser.add_argument(
        "--clock-per-message", action="store_true", help="set /clock to each message's time right before publishing it"
    )
    parser.add_argument("--loop", "-l", action="store_true", help="start over at the end until stopped")
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        metavar="TIMEOUT",
        help="wait up to TIMEOUT s until every played topic has a subscriber, and at the end "
        "until the subscribers acknowledged every message",
    )
    parser.add_argument("--qos-depth", type=int, default=10, help="queue depth of the publishers")
    return parser.parse_args(args)


def config_from_args(args: argparse.Namespace) -> PlaybackConfig:
    if args.qos_depth < 1:
        raise BagError(f"--qos-depth must be at least 1, got {args.qos_depth}")
    return PlaybackConfig(
        rate=args.rate,
        start_offset=args.start_offset,
        topics=tuple(args.topics),
        remaps=tuple(parse_remap(r) for r in args.remap),
        clock_hz=args.clock_hz,
        clock_per_message=args.clock_per_message,
        loop=args.loop,
    )


def summary_line(stats: PlaybackStats) -> str:
    line = f"published {stats.published_count} messages, {stats.clock_ticks} clock ticks"
    if stats.failed_count:
        failures = "; ".join(f"{t}: {n} ({stats.first_failure[t]})" for t, n in stats.failed.items())
        line += f"; skipped {stats.failed_count} that did not deserialize: {failures}"
    return line + (" (stopped)" if stats.stopped else "")


def main(argv: Sequence[str] | None = None) -> int:
    full_argv, own_args = split_argv(PROG, argv)
    args = parse_args(own_args)
    try:
        config = config_from_args(args)
        reader = BagReader(args.bag)
    except BagError as exc:
        return report_error(PROG, exc)
    for truncated in reader.info.truncated:
        print(f"{PROG}: warning: {truncated}", file=sys.stderr)
    with reader:
        try:
            player = Player(reader, config)
        except BagError as exc:
            return report_error(PROG, exc)
        stop = threading.Event()
        with signals_request_stop(stop):
            rclpy.init(args=full_argv, signal_handler_options=SignalHandlerOptions.NO)
            try:
                return _play(player, args, stop)
            finally:
                rclpy.try_shutdown()


def _play(player: Player, args: argparse.Namespace, stop: threading.Event) -> int:
    node = PlayNode(player.topics, player.config.publishes_clock, args.qos_depth)
    try:
        if args.wait_for_subscribers is not None:
            node.wait_for_subscribers(args.wait_for_subscribers, stop)
            print(f"{PROG}: every played topic has a subscriber; playing", file=sys.stderr, flush=True)
        stats = player.run(
            node,
            stop,
            on_failure=lambda topic, exc: node.get_logger().warning(f"skipping a message on {topic}: {exc}", once=True),
        )
        if args.wait_for_subscribers is not None:
            unacknowledged = node.wait_for_acknowledgements(args.wait_for_subscribers, stop)
            if unacknowledged:
                print(
                    f"{PROG}: warning: not every subscriber acknowledged all messages on "
                    f"{', '.join(unacknowledged)} within {args.wait_for_subscribers:g} s",
                    file=sys.stderr,
                )
    except BagError as exc:
        return report_error(PROG, exc)
    finally:
        node.destroy_node()
    print(f"{PROG}: {summary_line(stats)}", file=sys.stderr)
    return 0
