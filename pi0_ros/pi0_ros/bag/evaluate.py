"""bag_evaluate: runs pi0 over a bag's observations and compares its chunks with what the robot recorded.

    ros2 run pi0_ros bag_evaluate runs/towel_01 --robot-description pi0_bringup/config/robots/aloha.yaml
    ros2 run pi0_ros bag_evaluate runs/towel_01 --robot-description aloha.yaml --checkpoint ~/ckpt/pi0_aloha \\
        --device cuda --dtype bfloat16 --stride 0.1 --output runs/towel_01_eval

No ROS graph and no streaming: the bag is read twice with :class:`BagReader`.
The first pass decodes the recorded references (joint states, base odometry,
controller commands) and the instructions on ``policy_status``, and checks the
storage end to end, so a damaged bag fails before any model time is spent. The
second pass feeds the camera and joint-state messages, in bag order, to the
policy node's :class:`ObservationSynchronizer` and runs the model on the
selected synchronized observations as fast as it goes. Metrics, the JSON
report and the plots come from :mod:`pi0_ros.bag.evaluation`.

Times are header stamps, as the policy node uses them (the bag's receive time
when a stamp is zero); the synchronizer's "now" is the newest stamp read so
far, so bags whose receive times are offset from their stamps still match.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    TextIO,
)

import numpy as np
import torch

from pi0_client.options import DEVICE_FORMS, DTYPE_NAMES, device_problem
from pi0_model.errors import Pi0Error
from pi0_model.policy import Pi0Policy
from pi0_ros.bag.cli import report_error
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.evaluation import (
    COMMANDS,
    JOINT_STATES,
    REPORT_FILE,
    Evaluation,
    EvaluationError,
    EvaluationSettings,
    ObservationSelector,
    PredictedChunk,
    Reference,
    RunInfo,
    Selection,
    Trajectory,
    evaluate,
    report,
    summary_lines,
    write_plots,
    write_report,
)
from pi0_ros.bag.interfaces import deserialize
from pi0_ros.bag.reader import BagInfo, BagReader
from pi0_ros.core.chunk import TimedChunk
from pi0_ros.core.robot_description import (
    BASE_ACTION_NAMES,
    CameraSpec,
    ControllerSpec,
    DescriptionError,
    RobotDescription,
    load_robot_description,
)
from pi0_ros.policy.model_loader import load_policy
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.policy.observation_source import state_joint_topics
from pi0_ros.policy.observation_sync import (
    ObservationSynchronizer,
    SyncConfig,
    SyncedObservation,
    SyncLimits,
    SyncStatus,
)
from pi0_ros.ros.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)

PROG = "bag_evaluate"
_NS = 1_000_000_000
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
POLICY_STATUS_TYPE = "pi0_msgs/msg/PolicyStatus"
POLICY_STATUS_TOPIC = "policy_status"


@dataclass(frozen=True)
class EvaluateConfig:
    bag: Path
    description: RobotDescription
    model: ModelSettings  # its seed also seeds the sampling noise of every chunk
    selection: Selection
    output: Path  # directory for the report and plots; created when missing
    instruction: str | None = None  # None: the instructions recorded on policy_status
    namespace: str = ""  # namespace the robot's relative topics were recorded under
    sync_limits: SyncLimits = SyncLimits()  # the policy node's defaults
    torch_threads: int = 0  # CPU threads for torch; 0 leaves torch's default

    def __post_init__(self) -> None:
        if self.instruction is not None and not self.instruction.strip():
            raise EvaluationError("the instruction must not be empty")
        if self.torch_threads < 0:
            raise EvaluationError(f"torch threads must be 0 (default) or more, got {self.torch_threads}")


@dataclass(frozen=True)
class BagTopics:
    """The bag topics the evaluation reads, by role (absolute names as stored)."""

    cameras: Mapping[str, CameraSpec]  # policy cameras
    joint_states: Mapping[str, str]  # bag topic -> the description's joint-state topic (synchronizer stream)
    commands: Mapping[str, ControllerSpec]  # controllers whose topic the bag holds
    odometry: str | None
    policy_status: str | None

    @property
    def observed(self) -> tuple[str, ...]:
        return (*self.cameras, *self.joint_states)

    @property
    def recorded(self) -> tuple[str, ...]:
        """Everything read in the first pass."""
        optional = tuple(t for t in (self.odometry, self.policy_status) if t is not None)
        return (*self.observed, *self.commands, *optional)

    def expected_types(self) -> dict[str, str]:
        """Topic -> the message type the description implies for it."""
        types = {topic: _camera_type(camera) for topic, camera in self.cameras.items()}
        types.update({topic: JOINT_STATE_TYPE for topic in self.joint_states})
        types.update({topic: controller.message_type for topic, controller in self.commands.items()})
        if self.odometry is not None:
            types[self.odometry] = ODOMETRY_TYPE
        if self.policy_status is not None:
            types[self.policy_status] = POLICY_STATUS_TYPE
        return types


def plan_topics(reader: BagReader, description: RobotDescription, namespace: str = "") -> BagTopics:
    """Finds the description's topics in the bag; BagError for missing observation topics and any wrong type."""

    def name(topic: str) -> str:
        return _absolute(topic, namespace)

    cameras = {name(c.topic): c for c in description.policy_cameras}
    joint_states = {name(t): t for t in state_joint_topics(description)}
    reader.require_topics([*cameras, *joint_states])
    present = reader.info.topics
    odometry = name(description.base.odometry_topic) if description.base is not None else None
    status = name(POLICY_STATUS_TOPIC)
    topics = BagTopics(
        cameras=cameras,
        joint_states=joint_states,
        commands={name(c.topic): c for c in description.controllers if name(c.topic) in present},
        odometry=odometry if odometry in present else None,
        policy_status=status if status in present else None,
    )
    for topic, msgtype in topics.expected_types().items():
        if present[topic].msgtype != msgtype:
            raise BagError(
                f"{reader.path}: topic {topic} holds {present[topic].msgtype}, expected {msgtype} "
                f"for robot '{description.name}'"
            )
    reader.require_known_types(topics.recorded)
    return topics


def _absolute(topic: str, namespace: str) -> str:
    if topic.startswith("/"):
        return topic
    prefix = namespace.strip("/")
    return f"/{prefix}/{topic}" if prefix else f"/{topic}"


def _camera_type(camera: CameraSpec) -> str:
    return "sensor_msgs/msg/CompressedImage" if camera.compressed else "sensor_msgs/msg/Image"


def _stamp(header: Any, bag_time_ns: int) -> float:
    """The header stamp in seconds; the receive time for a zero stamp (as the policy node does)."""
    stamp = header.stamp.sec * _NS + header.stamp.nanosec
    return (stamp or bag_time_ns) / _NS


# -- first pass: what the robot recorded ---------------------------------------------------------------------


class _Unusable(ValueError):
    """A message whose names and values disagree in number: skipped, like one that does not decode."""


class _Samples:
    """(time, value) samples per action name, turned into trajectories at the end."""

    def __init__(self, wanted: Sequence[str]) -> None:
        self._wanted = frozenset(wanted)
        self._samples: dict[str, list[tuple[float, float]]] = {}

    def add(self, t: float, names: Sequence[str], values: Sequence[float]) -> None:
        if len(names) != len(values):
            raise _Unusable(f"{len(values)} values for {len(names)} names")
        for name, value in zip(names, values):
            if name in self._wanted and np.isfinite(value):
                self._samples.setdefault(name, []).append((t, float(value)))

    def trajectories(self) -> dict[str, Trajectory]:
        return {name: Trajectory.from_samples(samples) for name, samples in self._samples.items()}


@dataclass(frozen=True)
class Recording:
    """The first pass's result."""

    references: tuple[Reference, ...]
    instructions: tuple[tuple[float, str], ...]  # (time, instruction) whenever a goal was active, in time order
    skipped: Mapping[str, int]  # topic -> messages that did not deserialize or had names and values disagree


class _RecordingBuilder:
    """Sorts decoded messages into the measured and commanded references and the instruction timeline."""

    def __init__(self, topics: BagTopics, description: RobotDescription) -> None:
        self._topics = topics
        self._description = description
        self._measured = _Samples(description.policy.actions)
        self._commanded = _Samples(description.policy.actions)
        self._instructions: list[tuple[float, str]] = []

    def add(self, topic: str, message: Any, bag_time_ns: int) -> None:
        if topic in self._topics.joint_states:
            self._measured.add(_stamp(message.header, bag_time_ns), message.name, message.position)
        elif topic == self._topics.odometry:
            twist = message.twist.twist
            self._measured.add(
                _stamp(message.header, bag_time_ns), BASE_ACTION_NAMES, (twist.linear.x, twist.angular.z)
            )
        elif topic == self._topics.policy_status:
            if message.goal_active and message.instruction.strip():
                self._instructions.append((_stamp(message.header, bag_time_ns), message.instruction.strip()))
        else:
            self._add_command(self._topics.commands[topic], message, bag_time_ns)

    def build(self, skipped: Mapping[str, int]) -> Recording:
        topics = self._topics
        references = [
            Reference(
                JOINT_STATES,
                tuple(t for t in (*topics.joint_states, topics.odometry) if t),
                self._measured.trajectories(),
            )
        ]
        commanded = self._commanded.trajectories()
        if commanded:
            references.append(Reference(COMMANDS, tuple(topics.commands), commanded))
        return Recording(tuple(references), tuple(sorted(self._instructions, key=lambda item: item[0])), dict(skipped))

    def _add_command(self, controller: ControllerSpec, message: Any, bag_time_ns: int) -> None:
        """Point 0 of a trajectory, the values of a position command, or the base twist, by action name."""
        if controller.interface == "joint_trajectory":
            if message.points:
                point = message.points[0]
                offset = point.time_from_start.sec + point.time_from_start.nanosec / _NS
                self._commanded.add(_stamp(message.header, bag_time_ns) + offset, message.joint_names, point.positions)
        elif controller.interface == "forward_position":
            joints = next(g.joint_names for g in self._description.joint_groups if g.controller.name == controller.name)
            # Float64MultiArray has no header: its receive time is all there is.
            self._commanded.add(bag_time_ns / _NS, joints, message.data)
        else:
            twist = message.twist if controller.stamped else message
            t = _stamp(message.header, bag_time_ns) if controller.stamped else bag_time_ns / _NS
            self._commanded.add(t, BASE_ACTION_NAMES, (twist.linear.x, twist.angular.z))


def read_recording(reader: BagReader, topics: BagTopics, description: RobotDescription) -> Recording:
    """Decodes every recorded reference and instruction; reads the camera topics raw, only to check the storage."""
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


def instruction_lookup(recorded: Sequence[tuple[float, str]], fixed: str | None) -> Callable[[float], str]:
    """The instruction for an observation time: `fixed`, else the one of the goal active last before it.

    Observations before the first goal get the first recorded instruction.
    """
    if fixed is not None:
        return lambda stamp: fixed
    if not recorded:
        raise BagError(
            "the bag records no instruction (no policy_status with an active goal): give one with --instruction"
        )
    times = np.array([t for t, _ in recorded])

    def lookup(stamp: float) -> str:
        index = max(0, int(np.searchsorted(times, stamp, side="right")) - 1)
        return recorded[index][1]

    return lookup


# -- second pass: observations, as the policy node would synchronize them -------------------------------------


class BagObservations:
    """Feeds a bag's camera and joint-state messages to the synchronizer in bag order.

    Iterating yields ``(bag time ns, observation or None)`` after every message;
    each synchronized set is yielded once, when it becomes usable. Afterwards
    ``last_reason`` says why the newest attempt found no set and ``skipped``
    counts messages that did not decode.
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
        for raw in self._reader.messages(self.topics.observed):
            try:
                message = deserialize(raw.msgtype, raw.data)
            except BagError:
                self.skipped[raw.topic] = self.skipped.get(raw.topic, 0) + 1
                continue
            stamp = _stamp(message.header, raw.timestamp_ns)
            self._add(raw.topic, stamp, message)
            newest = stamp if newest is None else max(newest, stamp)
            result = self.synchronizer.latest(newest, newer_than=previous)
            if result.observation is not None:
                previous = result.observation.stamp
            elif result.status is not SyncStatus.NOT_NEW:
                self.last_reason = result.reason
            yield raw.timestamp_ns, result.observation

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


class ChunkPredictor:
    """Runs the policy with explicit sampling noise.

    The noise of the i-th evaluated chunk is the i-th draw of a CPU generator
    seeded with the seed, so a chunk's noise never depends on the device or on
    what ran before in the process. It is also the sequence the policy node
    draws on a CPU device: with ``warmup_iterations:=0`` and the same seed, the
    evaluator's chunks equal the live node's for the same observations.
    """

    def __init__(self, policy: Pi0Policy, seed: int, step: float) -> None:
        self._policy = policy
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._shape = (1, policy.horizon, policy.config.action_dim)
        self._step = step  # s between chunk rows
        self._predicted = 0

    def predict(self, observation: SyncedObservation, instruction: str) -> PredictedChunk:
        noise = torch.randn(self._shape, generator=self._generator, dtype=torch.float32)[0].numpy()
        result = self._policy.infer(dict(observation.images), observation.state, instruction, noise=noise)
        chunk = TimedChunk("", self._predicted, observation.stamp, self._step, result.actions)
        self._predicted += 1
        return PredictedChunk(chunk, result.timing.total_ms, instruction)


class Progress:
    """A progress bar over bag time: redrawn in place on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, start_ns: int, end_ns: int, width: int = 24) -> None:
        self._stream = stream
        self._start_ns = start_ns
        self._span_ns = max(1, end_ns - start_ns)
        self._width = width
        self._interactive = stream.isatty()
        self._interval = 0.1 if self._interactive else 5.0
        self._began = time.monotonic()
        self._last_drawn = self._began

    def update(self, bag_time_ns: int, chunks: int) -> None:
        now = time.monotonic()
        if now - self._last_drawn < self._interval:
            return
        self._last_drawn = now
        self._draw(self.line(bag_time_ns, chunks, now - self._began))

    def line(self, bag_time_ns: int, chunks: int, elapsed: float) -> str:
        done = min(1.0, max(0.0, (bag_time_ns - self._start_ns) / self._span_ns))
        filled = int(round(done * self._width))
        rate = chunks / elapsed if elapsed > 0 else 0.0
        return (
            f"[{'#' * filled}{'.' * (self._width - filled)}] {done:4.0%}  "
            f"{(bag_time_ns - self._start_ns) / _NS:.1f}/{self._span_ns / _NS:.1f} s of bag  "
            f"{chunks} chunks  {rate:.2f} chunks/s"
        )

    def finish(self) -> None:
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, line: str) -> None:
        self._stream.write(f"\r{line}" if self._interactive else f"{line}\n")
        self._stream.flush()


ObservationStream = Iterable[tuple[int, SyncedObservation | None]]  # (bag time ns, observation or None)


def predict_chunks(
    observations: ObservationStream,
    predictor: ChunkPredictor,
    selector: ObservationSelector,
    instruction_at: Callable[[float], str],
    progress: Progress | None,
) -> list[PredictedChunk]:
    chunks: list[PredictedChunk] = []
    for bag_time_ns, observation in observations:
        if observation is not None and selector.take(observation.stamp):
            chunks.append(predictor.predict(observation, instruction_at(observation.stamp)))
        if progress is not None:
            progress.update(bag_time_ns, len(chunks))
        if selector.done:
            break
    return chunks


@dataclass(frozen=True)
class Outcome:
    evaluation: Evaluation
    report: Mapping[str, Any]  # as written to report.json
    files: tuple[Path, ...]  # report and plots


def evaluate_bag(config: EvaluateConfig, progress_stream: TextIO | None = None) -> Outcome:
    """Runs the policy over the bag and writes report.json and the plots into config.output."""
    began = time.perf_counter()
    with BagReader(config.bag) as reader:
        if reader.info.message_count == 0:
            raise BagError(f"{config.bag} holds no messages")
        topics = plan_topics(reader, config.description, config.namespace)
        recording = read_recording(reader, topics, config.description)
        instruction_at = instruction_lookup(recording.instructions, config.instruction)
        observations = BagObservations(reader, topics, config.description, config.sync_limits)
        selector = ObservationSelector(config.selection)
        chunks = _run_policy(config, observations, selector, instruction_at, reader.info, progress_stream)
    evaluation = evaluate(
        chunks,
        recording.references,
        EvaluationSettings(config.description.policy.actions, config.description.action_period),
    )
    skipped = Counter(recording.skipped) + Counter(observations.skipped)
    document = report(
        evaluation,
        RunInfo(
            bag_path=str(config.bag),
            bag_storage=reader.info.storage,
            bag_start_ns=reader.info.start_ns,
            bag_end_ns=reader.info.end_ns,
            bag_message_count=reader.info.message_count,
            robot=config.description.name,
            checkpoint=config.model.checkpoint,
            device=config.model.device,
            dtype=config.model.dtype,
            seed=config.model.seed,
            selection=config.selection,
            synchronized_observations=selector.seen,
            wall_time_s=time.perf_counter() - began,
            skipped_messages=dict(skipped),
        ),
    )
    return Outcome(evaluation, document, _write_outputs(evaluation, document, config.output))


def _run_policy(
    config: EvaluateConfig,
    observations: BagObservations,
    selector: ObservationSelector,
    instruction_at: Callable[[float], str],
    info: BagInfo,
    progress_stream: TextIO | None,
) -> list[PredictedChunk]:
    stream = iter(observations)
    # Find the first observation before loading the model, which can take a while for a real checkpoint.
    first = next((item for item in stream if item[1] is not None), None)
    if first is None:
        raise BagError(
            f"{config.bag} has no synchronizable observation of "
            f"{', '.join(observations.topics.observed)}: {observations.last_reason}"
        )
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    predictor = ChunkPredictor(
        load_policy(config.description, config.model), config.model.seed, config.description.action_period
    )
    progress = Progress(progress_stream, info.start_ns, info.end_ns) if progress_stream is not None else None
    chunks = predict_chunks(itertools.chain([first], stream), predictor, selector, instruction_at, progress)
    if progress is not None:
        progress.finish()
    return chunks


def _write_outputs(evaluation: Evaluation, document: Mapping[str, Any], directory: Path) -> tuple[Path, ...]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_report(document, directory / REPORT_FILE)
        plots = write_plots(evaluation, directory)
    except OSError as exc:
        raise EvaluationError(f"cannot write the evaluation into {directory}: {exc}") from None
    return (directory / REPORT_FILE, *plots)


# -- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run pi0 over a bag's observations and compare its action chunks with the recorded "
        "joint trajectory and controller commands (JSON report and PNG plots).",
    )
    parser.add_argument("bag", type=Path, help="bag directory (or a single .mcap / .db3 file)")
    parser.add_argument("--robot-description", type=Path, required=True, help="the robot's description YAML")
    parser.add_argument("--checkpoint", default="", help="pi0 checkpoint directory (default: the tiny random model)")
    parser.add_argument("--device", default=ModelSettings.device, type=_device, help=f"torch device: {DEVICE_FORMS}")
    parser.add_argument("--dtype", default=ModelSettings.dtype, choices=DTYPE_NAMES)
    parser.add_argument(
        "--seed", type=int, default=ModelSettings.seed, help="seed of the sampling noise (and of the tiny model)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine)",
    )
    parser.add_argument("--instruction", help="instruction for every observation (default: the recorded ones)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--every", type=int, help="evaluate every N-th synchronized observation (default: 1)")
    choice.add_argument("--stride", type=float, help="evaluate one observation per S seconds at most")
    parser.add_argument("--max-chunks", type=int, help="stop after N chunks")
    parser.add_argument("--namespace", default="", help="namespace the robot's topics were recorded under")
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        help="directory for report.json and the plots (default: <bag>_evaluation next to the bag)",
    )
    return parser.parse_args(argv)


def _device(text: str) -> str:
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    description = load_robot_description(args.robot_description)
    every = args.every if args.every is not None else (None if args.stride is not None else 1)
    selection = Selection(every=every, stride=args.stride, max_chunks=args.max_chunks)
    bag = args.bag
    output = args.output or bag.parent / f"{bag.name if bag.is_dir() else bag.stem}_evaluation"
    return EvaluateConfig(
        bag=bag,
        description=description,
        model=ModelSettings(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, seed=args.seed),
        selection=selection,
        output=output,
        instruction=args.instruction,
        namespace=args.namespace,
        torch_threads=args.torch_threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        outcome = evaluate_bag(config_from_args(args), progress_stream=sys.stderr)
    except (BagError, DescriptionError, EvaluationError, Pi0Error) as exc:
        return report_error(PROG, exc)
    for line in summary_lines(outcome.report):
        print(f"{PROG}: {line}")
    print(f"{PROG}: wrote {', '.join(str(p) for p in outcome.files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
