"""What a bag recorded of a robot, read the way the runtime sees it: shared by bag_evaluate and bag_to_dataset.

No ROS graph: the bag is read with :class:`BagReader`, messages are decoded with
the generated types. Two passes, both in bag order:

- :func:`read_recording` decodes the signals: the measured joint states and
  base odometry, the controller commands, optional teleoperation leader joint
  states, the policy status (instruction, goal id, goal active), the action's
  goal status and an optional task topic. The camera topics are read raw only,
  so a damaged storage fails here, before anything slow runs.
- :class:`BagObservations` feeds the camera and joint-state messages to the
  policy node's :class:`ObservationSynchronizer`, with the same image
  conversion, and asks it for observations: once per new camera set (what the
  live inference loop takes) or at given times (a dataset's frame grid).

Times are header stamps, as the policy node uses them (the bag's receive time
when a stamp is zero, or for messages without a header); the synchronizer's
"now" is the newest stamp read so far, so bags whose receive times are offset
from their stamps still match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.evaluation import COMMANDS, JOINT_STATES, Reference, Trajectory
from pi0_ros.bag.interfaces import deserialize
from pi0_ros.bag.reader import BagReader
from pi0_ros.core.robot_description import BASE_ACTION_NAMES, CameraSpec, ControllerSpec, RobotDescription
from pi0_ros.policy.observation_source import state_joint_topics
from pi0_ros.policy.observation_sync import (
    ObservationSynchronizer,
    SyncConfig,
    SyncedObservation,
    SyncLimits,
    SyncResult,
    SyncStatus,
)
from pi0_ros.ros.image_conversion import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb

NS = 1_000_000_000
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
POLICY_STATUS_TYPE = "pi0_msgs/msg/PolicyStatus"
GOAL_STATUS_TYPE = "action_msgs/msg/GoalStatusArray"
STRING_TYPE = "std_msgs/msg/String"
POLICY_STATUS_TOPIC = "policy_status"
GOAL_STATUS_TOPIC = "execute_instruction/_action/status"


@dataclass(frozen=True)
class BagTopics:
    """The bag topics read, by role (absolute names as stored)."""

    cameras: Mapping[str, CameraSpec]  # policy cameras
    joint_states: Mapping[str, str]  # bag topic -> the description's joint-state topic (synchronizer stream)
    commands: Mapping[str, ControllerSpec]  # controllers whose topic the bag holds
    odometry: str | None
    policy_status: str | None
    goal_status: str | None = None  # the instruction action's status topic, when recorded
    leader: tuple[str, ...] = ()  # teleoperation leader joint states (JointState), when asked for
    task: str | None = None  # a std_msgs/String topic naming the task, when asked for

    @property
    def observed(self) -> tuple[str, ...]:
        return (*self.cameras, *self.joint_states)

    @property
    def recorded(self) -> tuple[str, ...]:
        """Everything read in the first pass."""
        optional = tuple(t for t in (self.odometry, self.policy_status, self.goal_status, self.task) if t is not None)
        return (*self.observed, *self.commands, *self.leader, *optional)

    def expected_types(self) -> dict[str, str]:
        """Topic -> the message type the description implies for it."""
        types = {topic: _camera_type(camera) for topic, camera in self.cameras.items()}
        types.update({topic: JOINT_STATE_TYPE for topic in (*self.joint_states, *self.leader)})
        types.update({topic: controller.message_type for topic, controller in self.commands.items()})
        for topic, msgtype in (
            (self.odometry, ODOMETRY_TYPE),
            (self.policy_status, POLICY_STATUS_TYPE),
            (self.goal_status, GOAL_STATUS_TYPE),
            (self.task, STRING_TYPE),
        ):
            if topic is not None:
                types[topic] = msgtype
        return types


def plan_topics(
    reader: BagReader,
    description: RobotDescription,
    namespace: str = "",
    leader: Sequence[str] = (),
    task: str | None = None,
) -> BagTopics:
    """Finds the description's topics in the bag; BagError for missing required topics and any wrong type.

    Required: the policy cameras, the state's joint-state topics, and the
    `leader` and `task` topics when given.
    """

    def name(topic: str) -> str:
        return absolute_topic(topic, namespace)

    cameras = {name(c.topic): c for c in description.policy_cameras}
    joint_states = {name(t): t for t in state_joint_topics(description)}
    leader_topics = tuple(name(t) for t in leader)
    task_topic = name(task) if task is not None else None
    reader.require_topics([*cameras, *joint_states, *leader_topics, *((task_topic,) if task_topic else ())])
    present = reader.info.topics
    odometry = name(description.base.odometry_topic) if description.base is not None else None
    status = name(POLICY_STATUS_TOPIC)
    goal_status = name(GOAL_STATUS_TOPIC)
    topics = BagTopics(
        cameras=cameras,
        joint_states=joint_states,
        commands={name(c.topic): c for c in description.controllers if name(c.topic) in present},
        odometry=odometry if odometry in present else None,
        policy_status=status if status in present else None,
        goal_status=goal_status if goal_status in present else None,
        leader=leader_topics,
        task=task_topic,
    )
    for topic, msgtype in topics.expected_types().items():
        if present[topic].msgtype != msgtype:
            raise BagError(
                f"{reader.path}: topic {topic} holds {present[topic].msgtype}, expected {msgtype} "
                f"for robot '{description.name}'"
            )
    reader.require_known_types(topics.recorded)
    return topics


def absolute_topic(topic: str, namespace: str) -> str:
    """A description's topic as recorded: relative names resolve in `namespace`."""
    if topic.startswith("/"):
        return topic
    prefix = namespace.strip("/")
    return f"/{prefix}/{topic}" if prefix else f"/{topic}"


def _camera_type(camera: CameraSpec) -> str:
    return "sensor_msgs/msg/CompressedImage" if camera.compressed else "sensor_msgs/msg/Image"


def header_stamp(header: Any, bag_time_ns: int) -> float:
    """The header stamp in seconds; the receive time for a zero stamp (as the policy node does)."""
    stamp = header.stamp.sec * NS + header.stamp.nanosec
    return (stamp or bag_time_ns) / NS


# -- first pass: the recorded signals ------------------------------------------------------------------------


class _Unusable(ValueError):
    """A message whose names and values disagree in number: skipped, like one that does not decode."""


class _Samples:
    """(time, value) samples per name, turned into trajectories at the end; remembers every name seen."""

    def __init__(self, wanted: Sequence[str]) -> None:
        self._wanted = frozenset(wanted)
        self._samples: dict[str, list[tuple[float, float]]] = {}
        self.seen: set[str] = set()

    def add(self, t: float, names: Sequence[str], values: Sequence[float]) -> None:
        if len(names) != len(values):
            raise _Unusable(f"{len(values)} values for {len(names)} names")
        self.seen.update(names)
        for name, value in zip(names, values):
            if name in self._wanted and np.isfinite(value):
                self._samples.setdefault(name, []).append((t, float(value)))

    def trajectories(self) -> dict[str, Trajectory]:
        return {name: Trajectory.from_samples(samples) for name, samples in self._samples.items()}


@dataclass(frozen=True)
class StatusSample:
    """One policy_status message: which goal ran, and its instruction."""

    time: float  # s
    goal_id: str  # 32 hex characters, "" when no goal ever ran
    goal_active: bool
    instruction: str  # stripped


@dataclass(frozen=True)
class GoalState:
    """One goal's entry in the action's status topic."""

    time: float  # s, the receive time (GoalStatusArray has no header)
    goal_id: str  # 32 hex characters
    status: int  # action_msgs/GoalStatus STATUS_*


@dataclass(frozen=True)
class TaskMessage:
    time: float  # s, the receive time (std_msgs/String has no header)
    text: str  # stripped


@dataclass(frozen=True)
class Recording:
    """The first pass's result."""

    measured: Mapping[str, Trajectory]  # joint states and base odometry, per action name
    commanded: Mapping[str, Trajectory]  # controller commands, per action name
    leader: Mapping[str, Trajectory]  # leader joint states, per joint name (empty without leader topics)
    statuses: tuple[StatusSample, ...]  # in time order
    goal_states: tuple[GoalState, ...]  # in time order
    task_messages: tuple[TaskMessage, ...]  # in time order
    joint_names_seen: Mapping[str, frozenset[str]]  # joint-state or leader topic -> every name it carried
    skipped: Mapping[str, int]  # topic -> messages that did not deserialize or had names and values disagree
    measured_topics: tuple[str, ...]
    command_topics: tuple[str, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        """The measured trajectory and, when recorded, the commands: what chunks are evaluated against."""
        references = [Reference(JOINT_STATES, self.measured_topics, self.measured)]
        if self.commanded:
            references.append(Reference(COMMANDS, self.command_topics, self.commanded))
        return tuple(references)

    @property
    def instructions(self) -> tuple[tuple[float, str], ...]:
        """(time, instruction) whenever a goal was active, in time order."""
        return tuple((s.time, s.instruction) for s in self.statuses if s.goal_active and s.instruction)


class _RecordingBuilder:
    """Sorts decoded messages into the recorded signals."""

    def __init__(self, topics: BagTopics, description: RobotDescription) -> None:
        self._topics = topics
        self._description = description
        self._measured = {topic: _Samples(description.policy.actions) for topic in topics.joint_states}
        self._odometry = _Samples(BASE_ACTION_NAMES)
        self._commanded = _Samples(description.policy.actions)
        self._leader = {topic: _Samples(description.joint_names) for topic in topics.leader}
        self._statuses: list[StatusSample] = []
        self._goal_states: list[GoalState] = []
        self._task_messages: list[TaskMessage] = []

    def add(self, topic: str, message: Any, bag_time_ns: int) -> None:
        topics = self._topics
        if topic in self._measured:
            self._measured[topic].add(header_stamp(message.header, bag_time_ns), message.name, message.position)
        elif topic in self._leader:
            self._leader[topic].add(header_stamp(message.header, bag_time_ns), message.name, message.position)
        elif topic == topics.odometry:
            twist = message.twist.twist
            self._odometry.add(
                header_stamp(message.header, bag_time_ns), BASE_ACTION_NAMES, (twist.linear.x, twist.angular.z)
            )
        elif topic == topics.policy_status:
            self._statuses.append(
                StatusSample(
                    header_stamp(message.header, bag_time_ns),
                    str(message.goal_id),
                    bool(message.goal_active),
                    str(message.instruction).strip(),
                )
            )
        elif topic == topics.goal_status:
            for status in message.status_list:
                goal_id = bytes(status.goal_info.goal_id.uuid).hex()
                self._goal_states.append(GoalState(bag_time_ns / NS, goal_id, int(status.status)))
        elif topic == topics.task:
            self._task_messages.append(TaskMessage(bag_time_ns / NS, str(message.data).strip()))
        else:
            self._add_command(topics.commands[topic], message, bag_time_ns)

    def build(self, skipped: Mapping[str, int]) -> Recording:
        topics = self._topics
        measured: dict[str, Trajectory] = {}
        for samples in (*self._measured.values(), self._odometry):
            measured.update(samples.trajectories())
        leader: dict[str, Trajectory] = {}
        for samples in self._leader.values():
            leader.update(samples.trajectories())
        seen = {topic: frozenset(s.seen) for topic, s in (*self._measured.items(), *self._leader.items())}
        return Recording(
            measured=measured,
            commanded=self._commanded.trajectories(),
            leader=leader,
            statuses=tuple(sorted(self._statuses, key=lambda s: s.time)),
            goal_states=tuple(sorted(self._goal_states, key=lambda s: s.time)),
            task_messages=tuple(sorted(self._task_messages, key=lambda m: m.time)),
            joint_names_seen=seen,
            skipped=dict(skipped),
            measured_topics=tuple(t for t in (*topics.joint_states, topics.odometry) if t),
            command_topics=tuple(topics.commands),
        )

    def _add_command(self, controller: ControllerSpec, message: Any, bag_time_ns: int) -> None:
        """Point 0 of a trajectory, the values of a position command, or the base twist, by action name."""
        if controller.interface == "joint_trajectory":
            if message.points:
                point = message.points[0]
                offset = point.time_from_start.sec + point.time_from_start.nanosec / NS
                self._commanded.add(
                    header_stamp(message.header, bag_time_ns) + offset, message.joint_names, point.positions
                )
        elif controller.interface == "forward_position":
            joints = next(g.joint_names for g in self._description.joint_groups if g.controller.name == controller.name)
            # Float64MultiArray has no header: its receive time is all there is.
            self._commanded.add(bag_time_ns / NS, joints, message.data)
        else:
            twist = message.twist if controller.stamped else message
            t = header_stamp(message.header, bag_time_ns) if controller.stamped else bag_time_ns / NS
            self._commanded.add(t, BASE_ACTION_NAMES, (twist.linear.x, twist.angular.z))


def read_recording(reader: BagReader, topics: BagTopics, description: RobotDescription) -> Recording:
    """Decodes every recorded signal; reads the camera topics raw, only to check the storage."""
    builder = _RecordingBuilder(topics, description)
    skipped: dict[str, int] = {}
    for raw in reader.messages(topics.recorded):
        if raw.topic in topics.cameras:
            continue
        try:
            builder.add(raw.topic, deserialize(raw.msgtype, raw.data), raw.timestamp_ns)
        except (BagError, _Unusable):
            skipped[raw.topic] = skipped.get(raw.topic, 0) + 1
    return builder.build(skipped)


# -- second pass: observations, as the policy node would synchronize them -------------------------------------


class BagObservations:
    """Feeds a bag's camera and joint-state messages to the synchronizer in bag order.

    Iterating yields ``(bag time ns, observation or None)`` after every message;
    each synchronized set is yielded once, when it becomes usable. Afterwards
    ``last_reason`` says why the newest attempt found no set and ``skipped``
    counts messages that did not decode. :meth:`sample` asks for the
    observation at given times instead.
    """

    def __init__(self, reader: BagReader, topics: BagTopics, description: RobotDescription, limits: SyncLimits) -> None:
        self._reader = reader
        self.topics = topics
        self.synchronizer = ObservationSynchronizer(
            SyncConfig(
                camera_names=tuple(c.name for c in topics.cameras.values()),
                joint_names=description.policy.state,
                joint_streams=tuple(topics.joint_states.values()),
                limits=limits,
            )
        )
        self.last_reason = "the bag holds no camera or joint-state message"
        self.skipped: dict[str, int] = {}

    def __iter__(self) -> Iterator[tuple[int, SyncedObservation | None]]:
        newest: float | None = None
        previous: float | None = None
        for bag_time_ns, topic, stamp, message in self._decoded():
            self._add(topic, stamp, message)
            newest = stamp if newest is None else max(newest, stamp)
            result = self.synchronizer.latest(newest, newer_than=previous)
            if result.observation is not None:
                previous = result.observation.stamp
            elif result.status is not SyncStatus.NOT_NEW:
                self.last_reason = result.reason
            yield bag_time_ns, result.observation

    def sample(self, times: Iterable[float]) -> Iterator[tuple[int, float, SyncResult]]:
        """``(bag time ns, t, the synchronizer's answer at t)`` for each of the increasing `times`.

        Time t is answered just before the first message stamped after t is
        added, so the answer uses everything stamped up to t and nothing newer,
        as the live node's inference loop pulling at t would. Times after the
        bag's last message see all of it.
        """
        pending = iter(times)
        t = next(pending, None)
        bag_time_ns = self._reader.info.start_ns
        for bag_time_ns, topic, stamp, message in self._decoded():
            while t is not None and stamp > t:
                yield bag_time_ns, t, self.synchronizer.latest(t)
                t = next(pending, None)
            if t is None:
                return
            self._add(topic, stamp, message)
        while t is not None:
            yield bag_time_ns, t, self.synchronizer.latest(t)
            t = next(pending, None)

    def _decoded(self) -> Iterator[tuple[int, str, float, Any]]:
        """(bag time ns, topic, stamp s, message) of every observed message that decodes."""
        for raw in self._reader.messages(self.topics.observed):
            try:
                message = deserialize(raw.msgtype, raw.data)
            except BagError:
                self.skipped[raw.topic] = self.skipped.get(raw.topic, 0) + 1
                continue
            yield raw.timestamp_ns, raw.topic, header_stamp(message.header, raw.timestamp_ns), message

    def _add(self, topic: str, stamp: float, message: Any) -> None:
        camera = self.topics.cameras.get(topic)
        if camera is None:
            self.synchronizer.add_joint_state(self.topics.joint_states[topic], stamp, message.name, message.position)
            return
        decode = compressed_msg_to_rgb if camera.compressed else image_msg_to_rgb
        try:
            image = decode(message)
        except ImageConversionError as exc:
            self.synchronizer.report_error(camera.name, str(exc))
            return
        self.synchronizer.add_image(camera.name, stamp, image)
