"""bag_evaluate: runs pi0 over a bag's observations and compares its chunks with what the robot recorded.

    ros2 run pi0_ros bag_evaluate runs/towel_01 --robot-description pi0_bringup/config/robots/aloha.yaml
    ros2 run pi0_ros bag_evaluate runs/towel_01 --robot-description aloha.yaml --checkpoint ~/ckpt/pi0_aloha \\
        --device cuda --dtype bfloat16 --stride 0.1 --output runs/towel_01_eval

No ROS graph and no streaming: the bag is read twice (:mod:`pi0_ros.bag.recording`).
The first pass decodes the recorded references (joint states, base odometry,
controller commands) and the instructions on ``policy_status``, and checks the
storage end to end, so a damaged bag fails before any model time is spent. The
second pass feeds the camera and joint-state messages, in bag order, to the
policy node's :class:`ObservationSynchronizer` and runs the model on the
selected synchronized observations as fast as it goes. Metrics, the JSON
report and the plots come from :mod:`pi0_ros.bag.evaluation`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from pi0_client.options import DEVICE_FORMS, DTYPE_NAMES, device_problem
from pi0_model.errors import Pi0Error
from pi0_model.policy import Pi0Policy
from pi0_ros.bag.cli import report_error
from pi0_ros.bag.errors import BagError
from pi0_ros.bag.evaluation import (
    REPORT_FILE,
    Evaluation,
    EvaluationError,
    EvaluationSettings,
    ObservationSelector,
    PredictedChunk,
    RunInfo,
    Selection,
    evaluate,
    report,
    summary_lines,
    write_plots,
    write_report,
)
from pi0_ros.bag.progress import Progress
from pi0_ros.bag.reader import BagInfo, BagReader
from pi0_ros.bag.recording import BagObservations, plan_topics, read_recording
from pi0_ros.core.chunk import TimedChunk
from pi0_ros.core.robot_description import DescriptionError, RobotDescription, load_robot_description
from pi0_ros.policy.model_loader import load_policy
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.policy.observation_sync import SyncedObservation, SyncLimits

PROG = "bag_evaluate"


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
