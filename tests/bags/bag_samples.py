"""Sample suite messages and small bags made with the plain writer (tests create them in tmp_path)."""

from __future__ import annotations

from pathlib import Path

from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header

from pi0_msgs.msg import ActionChunk, PolicyStatus
from pi0_ros.bag import BagWriter, OfferedQos

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND  # a realistic epoch start, so nothing relies on small numbers


def image(index: int) -> Image:
    data = bytes((index + i) % 256 for i in range(4 * 3 * 3))
    return Image(header=_header(index), height=3, width=4, encoding="rgb8", step=12, data=data)


def joint_state(index: int) -> JointState:
    return JointState(header=_header(index), name=["waist", "gripper"], position=[0.1 * index, 0.5])


def action_chunk(index: int) -> ActionChunk:
    return ActionChunk(
        header=_header(index),
        goal_id="0123456789abcdef0123456789abcdef",
        sequence=index,
        names=["waist", "gripper"],
        step_period=Duration(nanosec=20_000_000),
        horizon=2,
        actions=[0.1 * index, 0.5, 0.1 * index + 0.02, 0.5],
        inference_latency_ms=42.5,
    )


def policy_status(index: int) -> PolicyStatus:
    return PolicyStatus(
        header=_header(index),
        lifecycle_state="active",
        goal_active=True,
        goal_id="0123456789abcdef0123456789abcdef",
        instruction="fold the towel",
        chunks_generated=index,
    )


def _header(index: int) -> Header:
    return Header(stamp=Time(sec=1_700_000_000, nanosec=index * 1000), frame_id=f"f{index}")


# (topic, builder, offered QoS, period in ns): cameras best effort as drivers offer them.
STREAMS = (
    ("/cam_high/image_raw", image, OfferedQos.sensor_data(), 100_000_000),
    ("/joint_states", joint_state, OfferedQos(), 50_000_000),
    ("/action_chunk", action_chunk, OfferedQos(), 200_000_000),
)


def sample_messages(duration_ns: int = 400_000_000) -> list[tuple[str, int, object]]:
    """(topic, timestamp, message) of every stream over `duration_ns`, in timestamp order."""
    messages = []
    for topic, build, _, period in STREAMS:
        for index, offset in enumerate(range(0, duration_ns + 1, period)):
            messages.append((topic, T0 + offset, build(index)))
    return sorted(messages, key=lambda m: (m[1], m[0]))


def write_sample_bag(path: Path, storage: str = "mcap", duration_ns: int = 400_000_000) -> list:
    messages = sample_messages(duration_ns)
    qos = {topic: offered for topic, _, offered, _ in STREAMS}
    with BagWriter(path, storage=storage) as bag:
        for topic, timestamp, message in messages:
            bag.write(topic, message, timestamp, offered_qos=[qos[topic]])
    return messages


def pacing_errors(pairs: list[tuple[float, float]]) -> list[float]:
    """Deviations of (wall time, expected wall offset) pairs from their common (median) start."""
    offsets = sorted(wall - expected for wall, expected in pairs)
    start = offsets[len(offsets) // 2]
    return [abs(wall - expected - start) for wall, expected in pairs]
