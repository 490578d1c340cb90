"""Bags of a small robot for bag_to_dataset, with signals known in closed form (written in tmp_path).

testbot has an arm (j1, j2; joint_trajectory) and a gripper (g; forward_position)
and two cameras. Everything moves linearly in time, so linear interpolation is
exact and every frame's expected state and action can be computed here:

- joint states at 50 Hz on the 20 ms grid from T0, measured(t);
- cameras at 20 Hz, 5 ms after the joint grid, smooth images that change per frame;
- arm and gripper commands at 50 Hz on the joint grid, commanded(t) = measured(t) + offsets;
- leader joint states at 50 Hz, 1 ms after the grid, leader(t);
- two instruction goals on policy_status (stamped 3 ms off the grid, so no frame time
  meets a message time), their outcomes on the action's status topic, and the
  same two tasks on a std_msgs/String topic.

`write_testbot_bag` writes with the suite's BagWriter, or (`ros2_record=True`)
the way `ros2 bag record` lays a bag out (tests/bags/rosbag2_bags.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from action_msgs.msg import GoalInfo, GoalStatus, GoalStatusArray
from builtin_interfaces.msg import Duration, Time
from rosbag2_bags import BagContents, profile, write_rosbag2_bag
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from unique_identifier_msgs.msg import UUID

from pi0_msgs.msg import PolicyStatus
from pi0_ros.bag import BagWriter, OfferedQos

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND
WIDTH, HEIGHT = 32, 24
CAMERA_OFFSET_NS = 5_000_000
CAMERA_PERIOD_NS = 50_000_000
JOINT_PERIOD_NS = 20_000_000
ARM_OFFSET, GRIPPER_OFFSET = 0.1, 0.05

ROBOT_YAML = """\
name: testbot
control_rate_hz: 50
joint_groups:
  - name: arm
    joints:
      - {name: j1, lower: -2.0, upper: 2.0, max_velocity: 2.0, home: 0.0}
      - {name: j2, lower: -2.0, upper: 2.0, max_velocity: 2.0, home: 0.0}
    controller: {name: arm_controller, interface: joint_trajectory}
  - name: gripper
    joints:
      - {name: g, lower: 0.0, upper: 1.0, max_velocity: 2.0, home: 0.5}
    controller: {name: gripper_controller, interface: forward_position}
cameras:
  - {name: front, slot: base_0_rgb, width: 32, height: 24}
  - {name: wrist, slot: left_wrist_0_rgb, width: 32, height: 24}
"""
# testbot on a differential-drive base (the evaluation tests)
MOBILE_ROBOT_YAML = (
    ROBOT_YAML
    + """\
base:
  controller: {name: base_controller, interface: base_velocity}
  max_linear_velocity: 0.5
  max_angular_velocity: 1.0
  max_linear_acceleration: 1.0
  max_angular_acceleration: 2.0
"""
)
JOINTS = ("j1", "j2", "g")
CAMERAS = ("front", "wrist")
LEADER_TOPIC = "/leader/joint_states"
TASK_TOPIC = "/task"


@dataclass(frozen=True)
class Goal:
    start: float  # s after T0
    end: float
    instruction: str
    goal_id: str
    status: int  # GoalStatus.STATUS_* reported at its end


GOALS = (
    Goal(0.203, 1.203, "stack the blocks", "0a" * 16, GoalStatus.STATUS_SUCCEEDED),
    Goal(1.503, 2.503, "fold the towel", "0b" * 16, GoalStatus.STATUS_CANCELED),
)
DURATION_S = 3.0


def measured(t: float) -> np.ndarray:
    return np.array([0.3 * t - 0.1, -0.2 * t + 0.4, 0.5 + 0.1 * t])


def commanded(t: float) -> np.ndarray:
    return measured(t) + np.array([ARM_OFFSET, ARM_OFFSET, GRIPPER_OFFSET])


def leader(t: float) -> np.ndarray:
    return np.array([0.25 * t, 0.1 * t - 0.3, 0.9 - 0.2 * t])


def frame_image(camera: int, index: int) -> np.ndarray:
    """Smooth and different per frame (video codecs keep such images well)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = (40 * camera + 3 * index) % 120
    return np.stack([2 * x + base, 3 * y + base, np.full_like(x, 160 - base)], -1).astype(np.uint8)


def camera_times(duration_s: float = DURATION_S) -> np.ndarray:
    """Camera stamps, s after T0."""
    count = int(duration_s * SECOND // CAMERA_PERIOD_NS) + 1
    return (CAMERA_OFFSET_NS + CAMERA_PERIOD_NS * np.arange(count)) / SECOND


def joint_times(duration_s: float = DURATION_S) -> np.ndarray:
    count = int(duration_s * SECOND // JOINT_PERIOD_NS) + 1
    return JOINT_PERIOD_NS * np.arange(count) / SECOND


def _stamp(t_ns: int) -> Time:
    return Time(sec=t_ns // SECOND, nanosec=t_ns % SECOND)


def _header(t_ns: int) -> Header:
    return Header(stamp=_stamp(t_ns))


def _ns(t: float) -> int:
    return T0 + round(t * SECOND)


@dataclass(frozen=True)
class Variant:
    """What to change in the bag, for the bad-bag tests."""

    camera_gap: tuple[float, float] | None = None  # no camera frames in [from, to) s
    joint_names: tuple[str, ...] = JOINTS  # as the joint states name them
    skip_topics: tuple[str, ...] = ()
    goals: tuple[Goal, ...] = GOALS


def testbot_messages(variant: Variant = Variant()) -> list[tuple[str, int, object]]:
    messages: list[tuple[str, int, object]] = []
    for index, t in enumerate(camera_times()):
        if variant.camera_gap is not None and variant.camera_gap[0] <= t < variant.camera_gap[1]:
            continue
        for number, camera in enumerate(CAMERAS):
            rgb = frame_image(number, index)
            message = Image(
                header=_header(_ns(t)), height=HEIGHT, width=WIDTH, encoding="rgb8", step=3 * WIDTH, data=rgb.tobytes()
            )
            messages.append((f"/{camera}/image_raw", _ns(t), message))
    for t in joint_times():
        t_ns = _ns(t)
        state = measured(t)
        messages.append(
            ("/joint_states", t_ns, JointState(header=_header(t_ns), name=list(variant.joint_names), position=state))
        )
        command = commanded(t)
        point = JointTrajectoryPoint(positions=list(command[:2]), time_from_start=Duration())
        messages.append(
            (
                "/arm_controller/joint_trajectory",
                t_ns,
                JointTrajectory(header=_header(t_ns), joint_names=["j1", "j2"], points=[point]),
            )
        )
        messages.append(("/gripper_controller/commands", t_ns, Float64MultiArray(data=[float(command[2])])))
        leader_ns = t_ns + 1_000_000
        messages.append(
            (
                LEADER_TOPIC,
                leader_ns,
                JointState(header=_header(leader_ns), name=list(JOINTS), position=leader(t + 0.001)),
            )
        )
    for goal in variant.goals:
        messages.append(("/policy_status", _ns(goal.start), _status(goal, True, goal.start)))
        messages.append(("/policy_status", _ns(goal.end), _status(goal, False, goal.end)))
        messages.append(("/execute_instruction/_action/status", _ns(goal.end), _goal_status(goal)))
        messages.append((TASK_TOPIC, _ns(goal.start), String(data=goal.instruction)))
        messages.append((TASK_TOPIC, _ns(goal.end), String(data="")))
    messages = [m for m in messages if m[0] not in variant.skip_topics]
    return sorted(messages, key=lambda m: (m[1], m[0]))


def _status(goal: Goal, active: bool, t: float) -> PolicyStatus:
    return PolicyStatus(
        header=_header(_ns(t)),
        lifecycle_state="active",
        goal_active=active,
        goal_id=goal.goal_id,
        instruction=goal.instruction,
    )


def _goal_status(goal: Goal) -> GoalStatusArray:
    info = GoalInfo(goal_id=UUID(uuid=list(bytes.fromhex(goal.goal_id))), stamp=_stamp(_ns(goal.start)))
    return GoalStatusArray(status_list=[GoalStatus(goal_info=info, status=goal.status)])


QOS = {
    "/front/image_raw": OfferedQos.sensor_data(),
    "/wrist/image_raw": OfferedQos.sensor_data(),
    "/policy_status": OfferedQos.latched(),
}


def write_testbot_bag(path: Path, storage: str = "mcap", variant: Variant = Variant(), ros2_record: bool = False):
    messages = testbot_messages(variant)
    if ros2_record:
        topics = {topic for topic, _, _ in messages}
        qos = {topic: [profile()] for topic in topics}
        write_rosbag2_bag(path, BagContents(messages, qos, qos), storage, version=9)
        return
    with BagWriter(path, storage=storage) as bag:
        for topic, t_ns, message in messages:
            bag.write(topic, message, t_ns, offered_qos=[QOS.get(topic, OfferedQos())])


def newest_at_or_before(times: np.ndarray, t: float) -> int:
    """Index of the newest of `times` at or before t."""
    return int(np.searchsorted(times, t + 1e-9, side="right")) - 1


def expected_frame(t: float, signal: Callable[[float], np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """(camera frame index, state, action) the converter must produce at frame time t (s after T0).

    The synchronizer's newest set at t is the newest camera frame at or before t
    (both cameras share stamps); the state is the joint samples stamped up to t
    interpolated at that frame's stamp (the newest one held when the frame is newer);
    the action is the source's value at t.
    """
    cameras = camera_times()
    index = newest_at_or_before(cameras, t)
    samples = joint_times()
    samples = samples[samples <= t + 1e-9]
    values = np.array([measured(s) for s in samples])
    state = np.array([np.interp(cameras[index], samples, values[:, j]) for j in range(3)])
    return index, state, signal(t)
