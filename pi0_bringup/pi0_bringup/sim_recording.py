"""Recording the simulated robot with the suite's recorder, in this process.

    with SimRecording(settings) as recording:       # the simulated robot and the recorder, sensors flowing
        operator = recording.add(MyOperator(recording.context))
        recording.spin_until(lambda: operator.done, timeout=60.0, what="the demonstrations")
    # the bag is closed here

Every node shares one executor spun on this thread, so nothing runs the
recorder's callbacks while it closes the bag. The scripted demonstrations of
the demo and the bag tests record through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from pi0_bringup.sim_robot_node import SimRobotNode
from pi0_bringup.supervisor import spin_until
from pi0_ros.bag.record import RecordConfig, RecordNode
from pi0_ros.bag.writer import DEFAULT_STORAGE
from pi0_ros.core.robot_description import RobotDescription

N = TypeVar("N", bound=Node)


@dataclass(frozen=True)
class SimRecordingSettings:
    description: RobotDescription  # loaded from a file (the simulator node reads it again from there)
    bag: Path  # bag directory to create
    topics: tuple[str, ...]  # what to record; relative names are the robot's
    storage: str = DEFAULT_STORAGE
    image_size: tuple[int, int] = (0, 0)  # (width, height) the cameras render; 0: each camera's own
    camera_rate_hz: float = 30.0
    ready_timeout_s: float = 20.0  # for the first message of every sensor topic

    def __post_init__(self) -> None:
        if self.description.source is None:
            raise ValueError("the simulated robot needs a robot description loaded from a file")

    @property
    def sensor_topics(self) -> tuple[str, ...]:
        """The recorded topics the simulator publishes on its own (cameras, joint states), fully qualified."""
        sensors = {c.topic for c in self.description.policy_cameras} | set(self.description.joint_state_topics)
        return tuple(f"/{t}" for t in self.topics if t in sensors)


class SimRecording:
    """The simulated robot and a RecordNode on one executor; `add` more nodes (the operator) once sensors flow."""

    def __init__(self, settings: SimRecordingSettings) -> None:
        self.settings = settings
        self.context = rclpy.Context()
        self._executor: SingleThreadedExecutor | None = None
        self._nodes: list[Node] = []
        self._recorder: RecordNode | None = None

    def __enter__(self) -> SimRecording:
        settings = self.settings
        rclpy.init(context=self.context)
        try:
            self._executor = SingleThreadedExecutor(context=self.context)
            width, height = settings.image_size
            self.add(
                SimRobotNode(
                    context=self.context,
                    parameter_overrides=[
                        Parameter("robot_description", value=str(settings.description.source)),
                        Parameter("image_width", value=width),
                        Parameter("image_height", value=height),
                        Parameter("camera_rate_hz", value=settings.camera_rate_hz),
                    ],
                )
            )
            config = RecordConfig(
                output=settings.bag, topics=settings.topics, storage=settings.storage, status_period=0
            )
            self._recorder = self.add(RecordNode(config, context=self.context))
            recorder = self._recorder
            self.spin_until(
                lambda: all(recorder.message_counts().get(t, 0) > 0 for t in settings.sensor_topics),
                settings.ready_timeout_s,
                "the simulated robot's sensor topics to be recorded",
            )
        except BaseException:
            self._shutdown()
            raise
        return self

    def add(self, node: N) -> N:
        assert self._executor is not None, "SimRecording is not running"
        self._executor.add_node(node)
        self._nodes.append(node)
        return node

    def spin_until(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        assert self._executor is not None, "SimRecording is not running"
        spin_until(self._executor, predicate, timeout, what)

    def message_counts(self) -> dict[str, int]:
        """Messages recorded so far by fully qualified topic."""
        assert self._recorder is not None, "SimRecording is not running"
        return self._recorder.message_counts()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self._recorder is not None:
                self._recorder.close()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
        for node in self._nodes:
            node.destroy_node()
        self._nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
