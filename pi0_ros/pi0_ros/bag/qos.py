"""Offered QoS profiles as bags store them, and the QoS recording and playback use.

rosbag2 stores, per topic, the QoS profiles its publishers offered. Recording
requests what every publisher can serve (best effort as soon as one publisher
is best effort, transient local only when all are); playback offers the
recorded reliability and durability when all recorded publishers agreed, and
the reliable volatile default otherwise. Both rules are rosbag2's, so a bag
behaves the same under these tools and under ``ros2 bag``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)

from pi0_ros.bag.errors import BagError

INFINITE_NS = 2**63 - 1  # RMW_DURATION_INFINITE; stored as {sec: 9223372036, nsec: 854775807}
_NS = 1_000_000_000

RELIABILITIES = ("reliable", "best_effort", "system_default", "best_available", "unknown")
DURABILITIES = ("volatile", "transient_local", "system_default", "best_available", "unknown")
HISTORIES = ("keep_last", "keep_all", "system_default", "unknown")
LIVELINESSES = ("automatic", "manual_by_topic", "manual_by_node", "system_default", "best_available", "unknown")


@dataclass(frozen=True)
class OfferedQos:
    """One publisher's QoS, with the policy names rmw and rosbag2 metadata (version 9) use."""

    reliability: str = "reliable"
    durability: str = "volatile"
    history: str = "keep_last"  # what a publisher reports through the graph is "unknown", depth 0
    depth: int = 10
    deadline_ns: int = INFINITE_NS
    lifespan_ns: int = INFINITE_NS
    liveliness: str = "automatic"
    liveliness_lease_duration_ns: int = INFINITE_NS
    avoid_ros_namespace_conventions: bool = False

    def __post_init__(self) -> None:
        for label, value, allowed in (
            ("reliability", self.reliability, RELIABILITIES),
            ("durability", self.durability, DURABILITIES),
            ("history", self.history, HISTORIES),
            ("liveliness", self.liveliness, LIVELINESSES),
        ):
            if value not in allowed:
                raise BagError(f"QoS {label} must be one of {', '.join(allowed)}, got '{value}'")
        for label, value in (
            ("depth", self.depth),
            ("deadline_ns", self.deadline_ns),
            ("lifespan_ns", self.lifespan_ns),
            ("liveliness_lease_duration_ns", self.liveliness_lease_duration_ns),
        ):
            if not 0 <= value <= INFINITE_NS:
                raise BagError(f"QoS {label} must be within [0, {INFINITE_NS}], got {value}")

    @classmethod
    def sensor_data(cls, depth: int = 5) -> OfferedQos:
        """What camera drivers offer: best effort, volatile."""
        return cls(reliability="best_effort", depth=depth)

    @classmethod
    def latched(cls, depth: int = 1) -> OfferedQos:
        """Reliable transient local, like policy_status."""
        return cls(durability="transient_local", depth=depth)

    def to_rosbags(self) -> Qos:
        return Qos(
            history=QosHistory[self.history.upper()],
            depth=self.depth,
            reliability=QosReliability[self.reliability.upper()],
            durability=QosDurability[self.durability.upper()],
            deadline=_qos_time(self.deadline_ns),
            lifespan=_qos_time(self.lifespan_ns),
            liveliness=QosLiveliness[self.liveliness.upper()],
            liveliness_lease_duration=_qos_time(self.liveliness_lease_duration_ns),
            avoid_ros_namespace_conventions=self.avoid_ros_namespace_conventions,
        )

    @classmethod
    def from_rosbags(cls, qos: Qos) -> OfferedQos:
        return cls(
            reliability=qos.reliability.name.lower(),
            durability=qos.durability.name.lower(),
            history=qos.history.name.lower(),
            depth=qos.depth,
            deadline_ns=_ns(qos.deadline),
            lifespan_ns=_ns(qos.lifespan),
            liveliness=qos.liveliness.name.lower(),
            liveliness_lease_duration_ns=_ns(qos.liveliness_lease_duration),
            avoid_ros_namespace_conventions=bool(qos.avoid_ros_namespace_conventions),
        )

    @classmethod
    def from_rclpy(cls, profile: QoSProfile) -> OfferedQos:
        """From a publisher's profile as `Node.get_publishers_info_by_topic` reports it."""
        return cls(
            reliability=ReliabilityPolicy(profile.reliability).name.lower(),
            durability=DurabilityPolicy(profile.durability).name.lower(),
            history=HistoryPolicy(profile.history).name.lower(),
            depth=profile.depth,
            deadline_ns=_clamped_ns(profile.deadline),
            lifespan_ns=_clamped_ns(profile.lifespan),
            liveliness=LivelinessPolicy(profile.liveliness).name.lower(),
            liveliness_lease_duration_ns=_clamped_ns(profile.liveliness_lease_duration),
            avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions,
        )


def recording_qos(offers: Sequence[OfferedQos], depth: int) -> QoSProfile:
    """A subscription profile that matches every one of the publishers' `offers`."""
    all_reliable = bool(offers) and all(o.reliability == "reliable" for o in offers)
    all_latched = bool(offers) and all(o.durability == "transient_local" for o in offers)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if all_reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if all_latched else DurabilityPolicy.VOLATILE,
    )


def playback_qos(offers: Sequence[OfferedQos], depth: int) -> QoSProfile:
    """The publisher profile for replaying a topic recorded with `offers`."""
    reliability, durability = ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE
    agreed = {(o.reliability, o.durability) for o in offers}
    if len(agreed) == 1:
        recorded_reliability, recorded_durability = agreed.pop()
        if recorded_reliability == "best_effort":
            reliability = ReliabilityPolicy.BEST_EFFORT
        if recorded_durability == "transient_local":
            durability = DurabilityPolicy.TRANSIENT_LOCAL
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def _qos_time(ns: int) -> QosTime:
    return QosTime(ns // _NS, ns % _NS)


def _ns(time: QosTime) -> int:
    return min(time.sec * _NS + time.nsec, INFINITE_NS)


def _clamped_ns(duration: Duration) -> int:
    return min(max(duration.nanoseconds, 0), INFINITE_NS)
