"""bag_to_dataset: rosbag2 bags of a robot -> a LeRobotDataset (v2.1 or v3.0) and openpi's norm_stats.json.

    ros2 run pi0_ros bag_to_dataset runs/towel_* --robot aloha --output ~/data/towels
    python -m pi0_ros.bag.to_dataset runs/teleop_01 --robot pi0_bringup/config/robots/aloha.yaml \\
        --episodes task-topic:/task --action-source leader:/leader_left/joint_states,/leader_right/joint_states \\
        --format v2.1 --repo-id me/aloha_towels

Each bag is read twice (:mod:`pi0_ros.bag.recording`, the path ``bag_evaluate``
takes): the first pass decodes the actions' source, the episode boundaries and
the joint names; the second feeds cameras and joint states to the policy
node's synchronizer, which is asked for the observation at every frame time
(episode start + k / fps), exactly as the live node would pull it then: same
slop, joint interpolation, freshness limits and camera-to-slot mapping. The
frame's action is the action source sampled at the frame time, linearly
interpolated between its samples, in the description's action order.

An episode is written whole or not at all. It is skipped, with the reason in
the summary, when the bag lacks a topic it needs, the description's joints are
not all recorded (its joint states name others), no observation or action
exists within ``max_start_delay_s`` of its start, a frame inside it has none
(a camera went stale or missing, the recording has a gap, the action source
paused longer than ``max_action_gap_s``), it names no task, or it is empty.
Missing frames at its start and end (the synchronizer warming up, the first
command coming after the goal started) are trimmed within the same
``max_start_delay_s``. Nothing is padded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import ACTION, INFO_PATH, STATE, V30, VERSIONS, DatasetFormatError
from pi0_model.dataset_writer import CameraSpec, DatasetSpec, DatasetWriter, EpisodeRecorder
from pi0_model.errors import Pi0Error
from pi0_model.normalization import OPENPI_STATS_FILE, compute_normalization
from pi0_model.video import CODECS, VideoSettings
from pi0_ros.bag.episodes import EpisodeSpan, bag_episode, goal_episodes, task_topic_episodes
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.evaluation import Trajectory
from pi0_ros.bag.progress import Progress
from pi0_ros.bag.reader import BagReader
from pi0_ros.bag.recording import NS, BagObservations, BagTopics, Recording, plan_topics, read_recording
from pi0_ros.core.robot_description import BASE_ACTION_NAMES, DescriptionError, RobotDescription, load_robot_description
from pi0_ros.policy.observation_sync import SyncedObservation, SyncLimits, SyncResult

PROG = "bag_to_dataset"
ROBOTS_DIR = Path(__file__).resolve().parents[3] / "pi0_bringup" / "config" / "robots"
GOALS, WHOLE_BAG, TASK_TOPIC = "goals", "bag", "task-topic"
COMMANDS, LEADER = "commands", "leader"
PI0_ACTION_HORIZON = 50  # rows per chunk of the pi0 checkpoints: openpi's norm stats cover whole chunks


@dataclass(frozen=True)
class EpisodeSource:
    """How a bag splits into episodes: GOALS, WHOLE_BAG (with `task`) or TASK_TOPIC (with `topic`)."""

    kind: str
    topic: str | None = None
    task: str | None = None

    @classmethod
    def parse(cls, text: str, task: str | None) -> EpisodeSource:
        kind, _, topic = text.partition(":")
        if kind == TASK_TOPIC and topic.strip():
            source = cls(TASK_TOPIC, topic=topic.strip())
        elif text in (GOALS, WHOLE_BAG):
            source = cls(text, task=task.strip() if task else None)
        else:
            raise ValueError(f"--episodes must be {GOALS}, {WHOLE_BAG} or {TASK_TOPIC}:<topic>, got {text!r}")
        if source.kind == WHOLE_BAG and not source.task:
            raise ValueError(f"--episodes {WHOLE_BAG} needs the episodes' task: give --task")
        if source.kind != WHOLE_BAG and task is not None:
            raise ValueError(f"--task only applies to --episodes {WHOLE_BAG} (the other sources name their tasks)")
        return source


@dataclass(frozen=True)
class ActionSource:
    """COMMANDS (what the streamer sent the controllers) or LEADER joint states (teleoperation)."""

    kind: str
    leader_topics: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ActionSource:
        kind, _, topics = text.partition(":")
        names = tuple(t.strip() for t in topics.split(",") if t.strip())
        if text == COMMANDS:
            return cls(COMMANDS)
        if kind == LEADER and names:
            return cls(LEADER, names)
        raise ValueError(
            f"--action-source must be {COMMANDS} or {LEADER}:<joint state topic>[,<topic>...], got {text!r}"
        )


@dataclass(frozen=True)
class ConvertConfig:
    bags: tuple[Path, ...]
    description: RobotDescription
    output: Path  # the dataset directory; must not exist unless `overwrite`
    version: str = V30  # V21 or V30
    episodes: EpisodeSource = EpisodeSource(GOALS)
    actions: ActionSource = ActionSource(COMMANDS)
    fps: int | None = None  # None: the description's action rate
    namespace: str = ""  # namespace the robot's relative topics were recorded under
    video: VideoSettings = VideoSettings()
    overwrite: bool = False  # replace an existing dataset at `output`
    sync_limits: SyncLimits = SyncLimits()  # the policy node's defaults
    max_start_delay_s: float = 1.0  # missing frames trimmed at an episode's start and end, at most
    max_action_gap_s: float = 0.2  # longer pauses of the action source are gaps
    action_horizon: int = PI0_ACTION_HORIZON  # rows per action chunk, for norm_stats.json

    def __post_init__(self) -> None:
        if not self.bags:
            raise ValueError("give at least one bag")
        if self.version not in VERSIONS:
            raise ValueError(f"--format must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        if self.frame_rate < 1 or self.frame_rate != round(self.frame_rate):
            raise ValueError(
                f"the dataset rate must be a whole number of frames per second (LeRobot stores fps as an integer), "
                f"got {self.fps if self.fps is not None else self.description.policy.action_rate_hz}: give --fps"
            )
        for label in ("max_start_delay_s", "max_action_gap_s"):
            if not getattr(self, label) > 0:
                raise ValueError(f"{label} must be positive")
        if self.action_horizon < 1:
            raise ValueError("the action horizon must be at least 1")

    @property
    def frame_rate(self) -> int:
        rate = self.fps if self.fps is not None else self.description.policy.action_rate_hz
        return int(rate) if float(rate).is_integer() else -1


@dataclass(frozen=True)
class EpisodeReport:
    """One line of the summary: an episode (or a whole bag that could not be read) and what became of it."""

    bag: Path
    label: str
    task: str
    start: float | None  # s, None for a bag that could not be read
    end: float | None
    frames: int  # written
    episode_index: int | None  # in the dataset; None when skipped
    reason: str = ""  # why it was skipped
    outcome: str = ""  # the goal's outcome

    @property
    def written(self) -> bool:
        return self.episode_index is not None


@dataclass(frozen=True)
class Conversion:
    output: Path
    version: str
    reports: tuple[EpisodeReport, ...]
    frames: int
    tasks: tuple[str, ...]
    norm_stats: Path | None

    @property
    def written(self) -> tuple[EpisodeReport, ...]:
        return tuple(r for r in self.reports if r.written)


def convert(config: ConvertConfig, progress_stream: TextIO | None = None) -> Conversion:
    """Converts every bag; the dataset appears at config.output only when complete (and some episode was kept)."""
    _check_output(config.output, config.overwrite)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.output.name}.partial-", dir=config.output.parent))
    try:
        dataset = _Dataset(staging / "dataset", config)
        reports: list[EpisodeReport] = []
        for number, bag in enumerate(config.bags, start=1):
            label = f"bag {number}/{len(config.bags)}" if len(config.bags) > 1 else ""
            reports.extend(_convert_bag(bag, config, dataset, progress_stream, label))
        if dataset.writer is None:
            return Conversion(config.output, config.version, tuple(reports), 0, (), None)
        summary = dataset.writer.finish()
        norm_stats = _write_norm_stats(summary.root, config)
        if config.output.exists():
            shutil.rmtree(config.output)
        summary.root.rename(config.output)
        return Conversion(
            config.output,
            config.version,
            tuple(reports),
            summary.info.total_frames,
            summary.tasks,
            config.output / norm_stats.name,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_output(output: Path, overwrite: bool) -> None:
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise ValueError(f"{output} exists: give --overwrite to replace it")
    if not output.is_dir() or not ((output / INFO_PATH).is_file() or not any(output.iterdir())):
        raise ValueError(f"{output} is not a LeRobot dataset (no {INFO_PATH}): refusing to replace it")


def _write_norm_stats(root: Path, config: ConvertConfig) -> Path:
    """openpi's norm_stats.json from the dataset as written (float32 values), in the policy's model space."""
    dataset = DatasetReader(root)
    episodes = [
        (dataset.columns[STATE][e.dataset_from_index : e.dataset_to_index],
         dataset.columns[ACTION][e.dataset_from_index : e.dataset_to_index])
        for e in dataset.episodes
    ]  # fmt: skip
    normalization = compute_normalization(episodes, config.description.policy.transforms, config.action_horizon)
    path = root / OPENPI_STATS_FILE
    normalization.save(path)
    return path


class _Dataset:
    """The writer, created at the first frame (its camera sizes come from the images)."""

    def __init__(self, root: Path, config: ConvertConfig) -> None:
        self.root = root
        self.config = config
        self.writer: DatasetWriter | None = None

    def begin(self, task: str, observation: SyncedObservation) -> EpisodeRecorder:
        if self.writer is None:
            policy = self.config.description.policy
            cameras = tuple(
                CameraSpec(name, image.shape[0], image.shape[1]) for name, image in observation.images.items()
            )
            spec = DatasetSpec(
                version=self.config.version,
                fps=self.config.frame_rate,
                robot_type=self.config.description.name,
                state_names=policy.state,
                action_names=policy.actions,
                cameras=cameras,
                video=self.config.video,
            )
            self.writer = DatasetWriter(self.root, spec)
        return self.writer.begin_episode(task)

    @property
    def frames(self) -> int:
        return 0 if self.writer is None else self.writer.frames


# -- one bag --------------------------------------------------------------------------------------------------


def _convert_bag(
    bag: Path, config: ConvertConfig, dataset: _Dataset, progress_stream: TextIO | None, label: str
) -> list[EpisodeReport]:
    try:
        with BagReader(bag) as reader:
            info = reader.info
            if info.message_count == 0:
                raise BagError(f"{bag} holds no messages")
            topics = plan_topics(
                reader,
                config.description,
                config.namespace,
                leader=config.actions.leader_topics,
                task=config.episodes.topic,
            )
            recording = read_recording(reader, topics, config.description)
            spans = _episode_spans(config.episodes, recording, info.start_ns / NS, info.end_ns / NS)
            problem = _missing_joints(config, topics, recording)
            signals = _action_signals(config, recording)
            builders = [_EpisodeBuilder(bag, span, config, dataset, signals, problem) for span in spans]
            progress = (
                Progress(progress_stream, info.start_ns, info.end_ns, unit="frames", label=label)
                if progress_stream is not None
                else None
            )
            _fill(builders, BagObservations(reader, topics, config.description, config.sync_limits), dataset, progress)
            if progress is not None:
                progress.finish()
            return [builder.report() for builder in builders] or [
                EpisodeReport(bag, "-", "", None, None, 0, None, _no_episodes_reason(config.episodes))
            ]
    except BagError as exc:
        return [EpisodeReport(bag, "whole bag", "", None, None, 0, None, str(exc))]


def _episode_spans(source: EpisodeSource, recording: Recording, start: float, end: float) -> tuple[EpisodeSpan, ...]:
    if source.kind == GOALS:
        return goal_episodes(recording.statuses, recording.goal_states, end)
    if source.kind == TASK_TOPIC:
        return task_topic_episodes(recording.task_messages, end)
    assert source.task is not None
    return bag_episode(start, end, source.task)


def _no_episodes_reason(source: EpisodeSource) -> str:
    if source.kind == GOALS:
        return "no instruction goal: policy_status never shows an active goal (try --episodes bag or task-topic)"
    return f"no task message on {source.topic}"


def _missing_joints(config: ConvertConfig, topics: BagTopics, recording: Recording) -> str:
    """Why no episode of the bag can be built from its joint names ("" when nothing is missing)."""
    policy = config.description.policy
    problems = []
    state_topics = tuple(topics.joint_states)
    leader_joints = [n for n in policy.actions if n not in BASE_ACTION_NAMES] if topics.leader else []
    for names, where in ((policy.state, state_topics), (leader_joints, topics.leader)):
        seen = frozenset().union(*(recording.joint_names_seen.get(t, frozenset()) for t in where))
        missing = [n for n in names if n not in seen]
        if missing:
            unknown = sorted(seen - set(config.description.joint_names))
            problems.append(
                f"joint(s) {', '.join(missing)} of robot '{config.description.name}' never appear on "
                f"{', '.join(where)}"
                + (f" (it names {', '.join(unknown)}, unknown to the description)" if unknown else "")
            )
    return "; ".join(problems)


def _action_signals(config: ConvertConfig, recording: Recording) -> Mapping[str, Trajectory]:
    """The recorded signal of every action name that has one (leader joints, else commands)."""
    if config.actions.kind == COMMANDS:
        return recording.commanded
    # The base has no leader arm: its actions stay the commands the base controller got.
    signals = dict(recording.leader)
    signals.update({n: recording.commanded[n] for n in BASE_ACTION_NAMES if n in recording.commanded})
    return signals


def _grid(span: EpisodeSpan, fps: int) -> Iterator[float]:
    """start + k / fps within [start, end), computed from k so no rounding accumulates.

    Stamps at epoch scale resolve 0.24 us, so the span is rounded to a thousandth of a frame first.
    """
    frames = max(0, int(np.ceil((span.end - span.start) * fps - 1e-3)))
    for k in range(frames):
        yield span.start + k / fps


def _fill(
    builders: Sequence[_EpisodeBuilder], observations: BagObservations, dataset: _Dataset, progress: Progress | None
) -> None:
    """Samples the synchronizer at every frame time of every episode, in time order, and hands out the frames."""
    schedule = sorted(
        ((t, number) for number, b in enumerate(builders) if b.runnable for t in _grid(b.span, b.fps)),
        key=lambda item: item[0],
    )
    current = None
    for (_, number), (bag_time_ns, t, result) in zip(schedule, observations.sample(t for t, _ in schedule)):
        if current is not None and current is not builders[number]:
            current.finish()
        current = builders[number]
        current.add(t, result)
        if progress is not None:
            progress.update(bag_time_ns, dataset.frames)
    if current is not None:
        current.finish()


@dataclass
class _EpisodeBuilder:
    """Turns one episode's samples into frames: trims its edges, skips it on any gap inside."""

    bag: Path
    span: EpisodeSpan
    config: ConvertConfig
    dataset: _Dataset
    signals: Mapping[str, Trajectory]
    problem: str  # a reason known before any frame, e.g. missing joints
    recorder: EpisodeRecorder | None = None
    frames: int = 0
    episode_index: int | None = None
    reason: str = ""
    gap: tuple[float, str, bool] | None = None  # first missing frame after the last good one: (time, why, observed)
    finished: bool = False
    _action_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._action_names = self.config.description.policy.actions
        if not self.problem and not self.span.task:
            self.problem = "the goal has no instruction"
        if not self.problem:
            missing = [n for n in self._action_names if n not in self.signals]
            if missing:
                source = (
                    "commands" if self.config.actions.kind == COMMANDS else ", ".join(self.config.actions.leader_topics)
                )
                self.problem = f"no action for {', '.join(missing)} in the bag's {source}"
        self.reason = self.problem

    @property
    def fps(self) -> int:
        return self.config.frame_rate

    @property
    def runnable(self) -> bool:
        return not self.problem

    def add(self, t: float, result: SyncResult) -> None:
        if self.reason:
            return
        why, action = self._missing(t, result)
        observation = result.observation
        if why or observation is None or action is None:
            if self.recorder is None and t - self.span.start > self.config.max_start_delay_s:
                self._fail(f"nothing to record within {self.config.max_start_delay_s:g} s of the start: {why}")
            elif self.recorder is not None and self.gap is None:
                self.gap = (t, why, observation is not None)
            return
        if self.gap is not None:
            self._fail(f"gap at {self.gap[0] - self.span.start:.2f} s: {self.gap[1]}")
            return
        try:
            if self.recorder is None:
                self.recorder = self.dataset.begin(self.span.task, observation)
            self.recorder.add(observation.state, action, observation.images)
        except DatasetFormatError as exc:
            self._fail(str(exc))

    def _missing(self, t: float, result: SyncResult) -> tuple[str, np.ndarray | None]:
        if result.observation is None:
            return f"no observation ({result.status.value}: {result.reason})", None
        action = np.array(
            [float(self.signals[n].sample(np.array(t), self.config.max_action_gap_s)) for n in self._action_names]
        )
        absent = [n for n, v in zip(self._action_names, action) if not np.isfinite(v)]
        if absent:
            return f"no action for {', '.join(absent)} within {self.config.max_action_gap_s:g} s", None
        return "", action

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.reason:
            return
        if self.recorder is None:
            self._fail(
                "empty: shorter than one frame" if (self.span.end - self.span.start) * self.fps < 1e-3 else "no frame"
            )
            return
        if self.gap is not None:
            gap_time, why, observed = self.gap
            # Only the action source may end early (the goal's end is reported after its last command).
            if not observed or self.span.end - gap_time > self.config.max_start_delay_s:
                self._fail(f"gap at {gap_time - self.span.start:.2f} s, to the end: {why}")
                return
        self.frames = len(self.recorder)
        self.episode_index = self.recorder.commit().index
        self.recorder = None

    def _fail(self, reason: str) -> None:
        self.reason = reason
        if self.recorder is not None:
            self.recorder.discard()
            self.recorder = None

    def report(self) -> EpisodeReport:
        if not self.finished and not self.reason:
            self.finish()
        return EpisodeReport(
            self.bag,
            self.span.label,
            self.span.task,
            self.span.start,
            self.span.end,
            self.frames if self.episode_index is not None else 0,
            self.episode_index,
            self.reason,
            self.span.outcome,
        )


# -- summary --------------------------------------------------------------------------------------------------


def summary_table(conversion: Conversion) -> list[str]:
    """The summary: a line per episode (written or skipped and why), then the totals."""
    rows = [("bag", "episode", "task", "span s", "frames", "result")]
    for r in conversion.reports:
        span = "-" if r.start is None or r.end is None else f"{r.end - r.start:.2f}"
        result = f"episode {r.episode_index}" if r.written else f"skipped: {r.reason}"
        label = f"{r.label} ({r.outcome})" if r.outcome else r.label
        rows.append((r.bag.name, label, _clip(r.task, 32), span, str(r.frames), result))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    written = conversion.written
    skipped = len(conversion.reports) - len(written)
    lines.append(
        f"{len(written)} episodes, {conversion.frames} frames, {len(conversion.tasks)} tasks written; {skipped} skipped"
    )
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert rosbag2 bags of a robot into a LeRobotDataset (v2.1 or v3.0) with the runtime's "
        "observation synchronizer, plus openpi's norm_stats.json.",
    )
    parser.add_argument("bags", nargs="+", type=Path, help="bag directories (or single .mcap / .db3 files)")
    parser.add_argument("--robot", required=True, help=f"robot description YAML, or a robot name in {ROBOTS_DIR}")
    parser.add_argument("--output", "-o", type=Path, help="dataset directory (default: $HF_LEROBOT_HOME/<repo id>)")
    parser.add_argument("--repo-id", help="dataset name, e.g. me/aloha_towels: where LeRobot and openpi look it up")
    parser.add_argument("--format", default=V30, choices=VERSIONS, help="LeRobotDataset version (default: v3.0)")
    parser.add_argument(
        "--episodes",
        default=GOALS,
        help=f"{GOALS} (one per instruction goal, default), {WHOLE_BAG} (one per bag, needs --task) "
        f"or {TASK_TOPIC}:<std_msgs/String topic>",
    )
    parser.add_argument("--task", help=f"the task of every episode with --episodes {WHOLE_BAG}")
    parser.add_argument(
        "--action-source",
        default=COMMANDS,
        help=f"{COMMANDS} (what the streamer sent the controllers, default) or "
        f"{LEADER}:<topic>[,<topic>] (teleoperation leader joint states)",
    )
    parser.add_argument("--fps", type=int, help="frames per second (default: the robot's action rate)")
    parser.add_argument("--namespace", default="", help="namespace the robot's topics were recorded under")
    parser.add_argument("--video-codec", default="h264", choices=CODECS, help="camera video codec (default: h264)")
    parser.add_argument("--crf", type=int, help="video quality, lower is better (default: 18 h264, 30 AV1)")
    parser.add_argument(
        "--action-horizon",
        type=int,
        default=PI0_ACTION_HORIZON,
        help=f"action chunk length for norm_stats.json (default: {PI0_ACTION_HORIZON}, pi0's)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at the output")
    return parser, parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    """ValueError or DescriptionError for arguments that make no conversion."""
    if args.output is None and not args.repo_id:
        raise ValueError("give --output or --repo-id")
    output = args.output or _lerobot_home() / args.repo_id
    return ConvertConfig(
        bags=tuple(args.bags),
        description=load_robot_description(_robot_path(args.robot)),
        output=output.expanduser().absolute(),
        version=args.format,
        episodes=EpisodeSource.parse(args.episodes, args.task),
        actions=ActionSource.parse(args.action_source),
        fps=args.fps,
        namespace=args.namespace,
        video=VideoSettings(args.video_codec, args.crf),
        overwrite=args.overwrite,
        action_horizon=args.action_horizon,
    )


def _robot_path(robot: str) -> Path:
    path = Path(robot)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return ROBOTS_DIR / f"{robot}.yaml"


def _lerobot_home() -> Path:
    """Where LeRobot keeps datasets by repo id: $HF_LEROBOT_HOME, else $HF_HOME/lerobot."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "lerobot"


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        config = config_from_args(args)
        _check_output(config.output, config.overwrite)
    except (ValueError, DescriptionError) as exc:
        parser.error(str(exc))  # exits 2
    try:
        conversion = convert(config, progress_stream=sys.stderr)
    except (BagError, Pi0Error, DatasetFormatError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    for line in summary_table(conversion):
        print(line)
    if not conversion.written:
        print(f"{PROG}: error: no episode could be written; nothing was created", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {conversion.version} dataset {conversion.output} and {conversion.norm_stats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
