"""Offered QoS as stored in bags, and the QoS recording and playback choose (no graph)."""

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from pi0_ros.bag import BagError, OfferedQos
from pi0_ros.bag.qos import playback_qos, recording_qos

BEST_EFFORT = OfferedQos.sensor_data()
RELIABLE = OfferedQos()
LATCHED = OfferedQos.latched()


def test_offered_qos_round_trips_through_the_stored_form():
    offered = OfferedQos(
        reliability="best_effort",
        durability="transient_local",
        history="unknown",
        depth=0,
        deadline_ns=1_500_000_000,
        liveliness="manual_by_topic",
    )
    stored = offered.to_rosbags()
    assert (stored.deadline.sec, stored.deadline.nsec) == (1, 500_000_000)
    assert (stored.lifespan.sec, stored.lifespan.nsec) == (9223372036, 854775807)
    assert OfferedQos.from_rosbags(stored) == offered


def test_offered_qos_reads_a_publisher_profile():
    offered = OfferedQos.from_rclpy(qos_profile_sensor_data)
    assert (offered.reliability, offered.durability, offered.depth) == ("best_effort", "volatile", 5)
    assert offered.deadline_ns == 0


@pytest.mark.parametrize(
    "kwargs", [{"reliability": "sometimes"}, {"durability": "forever"}, {"depth": -1}, {"lifespan_ns": 2**63}]
)
def test_offered_qos_rejects_invalid_policies(kwargs):
    with pytest.raises(BagError):
        OfferedQos(**kwargs)


@pytest.mark.parametrize(
    "offers, reliability, durability",
    [
        ([RELIABLE, RELIABLE], ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
        ([RELIABLE, BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE),
        ([LATCHED], ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL),
        ([LATCHED, RELIABLE], ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
    ],
)
def test_recording_requests_what_every_publisher_serves(offers, reliability, durability):
    qos = recording_qos(offers, depth=100)
    assert (qos.reliability, qos.durability, qos.depth) == (reliability, durability, 100)


@pytest.mark.parametrize(
    "offers, reliability, durability",
    [
        ([BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE),
        ([LATCHED, LATCHED], ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL),
        ([BEST_EFFORT, RELIABLE], ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
        ([], ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
    ],
)
def test_playback_offers_the_recorded_policies_only_when_publishers_agreed(offers, reliability, durability):
    qos = playback_qos(offers, depth=10)
    assert isinstance(qos, QoSProfile)
    assert (qos.reliability, qos.durability) == (reliability, durability)
