"""Small conversions shared by the nodes: times, durations and QoS profiles."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Duration, Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_NS = 1_000_000_000


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    total = int(round(seconds * _NS))
    return Time(sec=total // _NS, nanosec=total % _NS)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def seconds_to_duration(seconds: float) -> Duration:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite non-negative number of seconds, got {seconds}")
    total = int(round(seconds * _NS))
    return Duration(sec=total // _NS, nanosec=total % _NS)


RELIABILITY_CHOICES = ("reliable", "best_effort")


def qos_profile(reliability: str, depth: int, transient_local: bool = False) -> QoSProfile:
    """A keep-last profile from parameter-style strings ("reliable" | "best_effort")."""
    if reliability not in RELIABILITY_CHOICES:
        raise ValueError(f"QoS reliability must be one of {RELIABILITY_CHOICES}, got '{reliability}'")
    if depth < 1:
        raise ValueError(f"QoS depth must be at least 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def action_service_qos() -> dict[str, QoSProfile]:
    """Keyword arguments for rclpy's ActionServer and ActionClient: keep-all goal, cancel and result services.

    rclpy's default keeps the last 10 requests and responses per service: a burst deeper than that (a client
    sending goals back to back, or asking for many results at once) silently drops requests at the server
    and responses at the client, whose futures then never complete. Keep-all reliable loses none; it is
    compatible with peers on the default profile, and both ends need it for a burst to survive.
    """
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE
    )
    return {f"{service}_service_qos_profile": profile for service in ("goal", "cancel", "result")}
