"""Offline evaluation core: predicted action chunks against a bag's recorded references.

Plain Python (numpy, and matplotlib's Agg canvas for the plots; no ROS): the
``bag_evaluate`` command (:mod:`pi0_ros.bag.evaluate`) reads a bag, runs the
policy and hands this module the chunks and the recorded signals.

Conventions, as in docs/ARCHITECTURE.md: row ``k`` of a chunk is the command
for ``stamp + k * step``. A *reference* is a recorded signal per action name
(the measured joint trajectory, or the commands the streamer sent); it is
linearly interpolated at each row's time and is missing (NaN) outside its
recorded span or across a gap longer than ``max_reference_gap``, e.g. between
goals, when no command was sent. Errors are prediction minus reference, in the
action's own unit (rad, gripper opening, m/s); joint-averaged figures mix those
units and are summaries only.

A *hand-over* is the moment a chunk replaces the previous one. Offline there is
no inference latency, so it happens at the new chunk's first row: the jump is
``|previous chunk at the new stamp - new chunk row 0|`` per action, counted
only while the previous chunk still covers that time.

The JSON report is versioned by ``schema_version`` (``SCHEMA_VERSION``) and
documented in docs/bags.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from pi0_ros.core.chunk import TimedChunk

SCHEMA = "pi0_ros.bag_evaluation"
SCHEMA_VERSION = 1

JOINT_STATES = "joint_states"  # reference: the measured trajectory (joint states, base odometry)
COMMANDS = "commands"  # reference: the recorded controller commands
REPORT_FILE = "report.json"
PLOT_FILES = {"joints": "joints.png", "horizon": "horizon_error.png", "discontinuity": "discontinuity.png"}

# Chunks drawn per joint in the trajectory plot; more only hide each other.
_MAX_PLOTTED_CHUNKS = 200


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated as given; the message says why."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EvaluationError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One recorded signal: samples of a scalar at strictly increasing times (s)."""

    times: np.ndarray  # float64 [N]
    values: np.ndarray  # float64 [N]

    def __post_init__(self) -> None:
        _require(
            self.times.ndim == 1 and self.times.shape == self.values.shape and self.times.size > 0,
            f"a trajectory needs matching 1-D times and values, got {self.times.shape} and {self.values.shape}",
        )
        _require(
            bool(np.all(np.isfinite(self.times)) and np.all(np.isfinite(self.values))),
            "trajectory times and values must be finite",
        )
        _require(bool(np.all(np.diff(self.times) > 0)), "trajectory times must strictly increase")

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[float, float]]) -> Trajectory:
        """From (time, value) pairs in any order; of samples sharing a time, the last one given wins."""
        latest = {float(t): float(v) for t, v in samples}
        times = np.array(sorted(latest))
        return cls(times, np.array([latest[t] for t in times]))

    def sample(self, t: np.ndarray, max_gap: float) -> np.ndarray:
        """Values at times `t` (any shape), linearly interpolated; NaN outside the span or across a longer gap."""
        t = np.asarray(t, dtype=np.float64)
        upper = np.clip(np.searchsorted(self.times, t, side="left"), 0, self.times.size - 1)
        lower = np.clip(upper - 1, 0, None)
        # A time that hits a sample needs no neighbour, however far away the next one is.
        gap = np.where(self.times[upper] == t, 0.0, self.times[upper] - self.times[lower])
        inside = (t >= self.times[0]) & (t <= self.times[-1]) & (gap <= max_gap)
        return np.where(inside, np.interp(t, self.times, self.values), np.nan)


@dataclass(frozen=True)
class Reference:
    """A recorded signal per action name, from the named bag topics."""

    label: str  # JOINT_STATES or COMMANDS
    topics: tuple[str, ...]  # where the samples came from
    series: Mapping[str, Trajectory]  # action name -> its recorded trajectory

    def sample(self, names: Sequence[str], times: np.ndarray, max_gap: float) -> np.ndarray:
        """[len(times), len(names)] values; NaN for names this reference does not record."""
        columns = [
            self.series[n].sample(times, max_gap) if n in self.series else np.full(times.shape, np.nan) for n in names
        ]
        return np.stack(columns, axis=-1)


@dataclass(frozen=True, eq=False)
class PredictedChunk:
    """One chunk the policy predicted for a recorded observation."""

    chunk: TimedChunk  # robot units and action order; row 0 is for the observation time
    inference_ms: float
    instruction: str


@dataclass(frozen=True)
class EvaluationSettings:
    action_names: tuple[str, ...]  # the columns of every chunk
    step: float  # s between chunk rows (1 / the description's action rate)
    horizon_checkpoints: tuple[float, ...] = (0.1, 0.5, 1.0)  # s after the observation, reported per joint
    max_reference_gap: float = 0.2  # s; a reference is missing across longer gaps between its samples

    def __post_init__(self) -> None:
        _require(
            len(self.action_names) > 0 and len(set(self.action_names)) == len(self.action_names),
            f"action names must be unique and not empty, got {self.action_names}",
        )
        _require(math.isfinite(self.step) and self.step > 0, f"step must be positive seconds, got {self.step}")
        _require(
            all(math.isfinite(h) and h >= 0 for h in self.horizon_checkpoints),
            f"horizon checkpoints must be seconds >= 0, got {self.horizon_checkpoints}",
        )
        _require(
            math.isfinite(self.max_reference_gap) and self.max_reference_gap > 0,
            f"max_reference_gap must be positive seconds, got {self.max_reference_gap}",
        )


@dataclass(frozen=True)
class Selection:
    """Which synchronized observations get a chunk: every N-th one, or one per stride of seconds."""

    every: int | None = 1
    stride: float | None = None  # s between evaluated observations (at least)
    max_chunks: int | None = None  # stop after this many chunks

    def __post_init__(self) -> None:
        _require((self.every is None) != (self.stride is None), "choose either every N observations or a stride")
        _require(
            self.every is None or (_is_int(self.every) and self.every >= 1),
            f"every must be an integer >= 1, got {self.every!r}",
        )
        _require(
            self.stride is None or (math.isfinite(self.stride) and self.stride > 0),
            f"stride must be positive seconds, got {self.stride!r}",
        )
        _require(
            self.max_chunks is None or (_is_int(self.max_chunks) and self.max_chunks >= 1),
            f"max_chunks must be an integer >= 1, got {self.max_chunks!r}",
        )


class ObservationSelector:
    """Applies a :class:`Selection` to synchronized observations arriving in time order."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self.seen = 0  # synchronized observations offered
        self.taken = 0
        self._last_taken: float | None = None

    @property
    def done(self) -> bool:
        return self.selection.max_chunks is not None and self.taken >= self.selection.max_chunks

    def take(self, stamp: float) -> bool:
        """Whether the observation at `stamp` gets a chunk."""
        self.seen += 1
        if self.done:
            return False
        if self.selection.every is not None:
            chosen = (self.seen - 1) % self.selection.every == 0
        else:
            # The small tolerance keeps a camera running at exactly 1/stride from skipping frames on rounding.
            chosen = self._last_taken is None or stamp - self._last_taken >= self.selection.stride - 1e-6
        if chosen:
            self.taken += 1
            self._last_taken = stamp
        return chosen


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Chunks with their errors against each reference, and the hand-over jumps between them."""

    settings: EvaluationSettings
    chunks: tuple[PredictedChunk, ...]
    references: tuple[Reference, ...]
    errors: Mapping[str, np.ndarray]  # reference label -> [chunks, horizon, action_dim], NaN where missing
    jumps: np.ndarray  # [hand-overs, action_dim]
    jump_chunks: tuple[int, ...]  # index of the new chunk of each hand-over
    skipped_handovers: int  # consecutive chunks that did not overlap in time


def evaluate(
    chunks: Sequence[PredictedChunk], references: Sequence[Reference], settings: EvaluationSettings
) -> Evaluation:
    """Errors of every chunk against every reference, and the jumps at each hand-over."""
    _require(len(chunks) > 0, "no chunks to evaluate")
    labels = [r.label for r in references]
    _require(len(set(labels)) == len(labels), f"reference labels must be unique, got {labels}")
    width = len(settings.action_names)
    for predicted in chunks:
        shape = predicted.chunk.actions.shape
        _require(shape[1] == width, f"chunk actions must be [horizon, {width}], got {shape}")
        _require(predicted.chunk.step == settings.step, f"chunk step {predicted.chunk.step} is not {settings.step}")
    errors = {r.label: np.stack([chunk_errors(c.chunk, r, settings) for c in chunks]) for r in references}
    jumps, jump_chunks, skipped = handover_jumps(chunks)
    return Evaluation(settings, tuple(chunks), tuple(references), errors, jumps, jump_chunks, skipped)


def chunk_errors(chunk: TimedChunk, reference: Reference, settings: EvaluationSettings) -> np.ndarray:
    """[horizon, action_dim] prediction minus reference at every row's time."""
    recorded = reference.sample(settings.action_names, chunk.row_times(), settings.max_reference_gap)
    return chunk.actions - recorded


def handover_jumps(chunks: Sequence[PredictedChunk]) -> tuple[np.ndarray, tuple[int, ...], int]:
    """(|jump| per hand-over and action [n, dim], index of each new chunk, hand-overs without overlap)."""
    jumps, indices, skipped = [], [], 0
    for index in range(1, len(chunks)):
        previous, current = chunks[index - 1].chunk, chunks[index].chunk
        planned = previous.sample(current.stamp)
        if planned is None:
            skipped += 1
            continue
        jumps.append(np.abs(current.actions[0] - planned))
        indices.append(index)
    width = chunks[0].chunk.actions.shape[1] if chunks else 0
    return (np.array(jumps) if jumps else np.empty((0, width))), tuple(indices), skipped


# -- the report -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """Where the chunks came from, for the report."""

    bag_path: str
    bag_storage: str
    bag_start_ns: int
    bag_end_ns: int
    bag_message_count: int
    robot: str
    checkpoint: str  # "" for the random-init tiny model
    device: str
    dtype: str
    seed: int
    selection: Selection
    synchronized_observations: int  # sets the synchronizer produced up to where evaluation stopped
    wall_time_s: float  # reading, inference and metrics
    skipped_messages: Mapping[str, int] = field(default_factory=dict)  # topic -> messages that did not decode


def report(evaluation: Evaluation, run: RunInfo) -> dict[str, Any]:
    """The JSON-ready report (schema version SCHEMA_VERSION; NaN becomes null)."""
    settings = evaluation.settings
    latencies = np.array([c.inference_ms for c in evaluation.chunks])
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "bag": {
            "path": run.bag_path,
            "storage": run.bag_storage,
            "start_ns": run.bag_start_ns,
            "end_ns": run.bag_end_ns,
            "duration_s": (run.bag_end_ns - run.bag_start_ns) / 1e9,
            "message_count": run.bag_message_count,
            "skipped_messages": dict(run.skipped_messages),
        },
        "robot": run.robot,
        "model": {"checkpoint": run.checkpoint, "device": run.device, "dtype": run.dtype, "seed": run.seed},
        "action_names": list(settings.action_names),
        "step_s": settings.step,
        "horizon": int(evaluation.chunks[0].chunk.actions.shape[0]),
        "instructions": list(dict.fromkeys(c.instruction for c in evaluation.chunks)),
        "selection": {
            "every": run.selection.every,
            "stride_s": run.selection.stride,
            "max_chunks": run.selection.max_chunks,
            "synchronized_observations": run.synchronized_observations,
            "evaluated_chunks": len(evaluation.chunks),
        },
        "timing": {
            "wall_s": run.wall_time_s,
            "chunks_per_s": len(evaluation.chunks) / run.wall_time_s if run.wall_time_s > 0 else None,
            "inference_ms": _distribution(latencies),
        },
        "references": {
            r.label: _reference_section(r, evaluation.errors[r.label], settings) for r in evaluation.references
        },
        "discontinuity": _discontinuity_section(evaluation),
        "chunks": _chunk_rows(evaluation),
    }
    return _json_ready(document)


def write_report(document: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


def _reference_section(reference: Reference, errors: np.ndarray, settings: EvaluationSettings) -> dict[str, Any]:
    names = settings.action_names
    steps = np.arange(errors.shape[1])
    per_joint = {name: _error_stats(errors[:, :, j]) for j, name in enumerate(names) if name in reference.series}
    per_step = [_error_stats(errors[:, k, :]) for k in steps]
    return {
        "topics": list(reference.topics),
        "names": [n for n in names if n in reference.series],
        "overall": _error_stats(errors),
        "per_joint": per_joint,
        "per_step": {
            "time_s": (steps * settings.step).tolist(),
            "mae": [s["mae"] for s in per_step],
            "rmse": [s["rmse"] for s in per_step],
            "count": [s["count"] for s in per_step],
        },
        "at_horizon": [_checkpoint(errors, reference, settings, h) for h in settings.horizon_checkpoints],
    }


def checkpoint_row(horizon_s: float, step: float, horizon: int) -> int:
    """The last chunk row at or before `horizon_s` (the final row for checkpoints past the chunk)."""
    return min(int(math.floor(horizon_s / step + 1e-9)), horizon - 1)


def _checkpoint(
    errors: np.ndarray, reference: Reference, settings: EvaluationSettings, horizon_s: float
) -> dict[str, Any]:
    row = checkpoint_row(horizon_s, settings.step, errors.shape[1])
    stats = {
        name: _error_stats(errors[:, row, j])
        for j, name in enumerate(settings.action_names)
        if name in reference.series
    }
    return {
        "horizon_s": horizon_s,
        "step": row,
        "time_s": row * settings.step,
        "mae": {n: s["mae"] for n, s in stats.items()},
        "rmse": {n: s["rmse"] for n, s in stats.items()},
        "count": {n: s["count"] for n, s in stats.items()},
    }


def _error_stats(errors: np.ndarray) -> dict[str, Any]:
    valid = errors[np.isfinite(errors)]
    if valid.size == 0:
        return {"mae": None, "rmse": None, "count": 0}
    return {"mae": float(np.mean(np.abs(valid))), "rmse": float(np.sqrt(np.mean(valid**2))), "count": int(valid.size)}


def _discontinuity_section(evaluation: Evaluation) -> dict[str, Any]:
    jumps = evaluation.jumps
    per_joint = {name: _distribution(jumps[:, j]) for j, name in enumerate(evaluation.settings.action_names)}
    largest = jumps.max(axis=1) if jumps.size else np.empty(0)
    return {
        "handovers": int(jumps.shape[0]),
        "without_overlap": evaluation.skipped_handovers,
        "max_over_joints": _distribution(largest),
        "per_joint": per_joint,
    }


def _distribution(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    return {
        "mean": float(np.mean(values)),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(np.max(values)),
    }


def _chunk_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    instructions = list(dict.fromkeys(c.instruction for c in evaluation.chunks))
    jump_of = dict(zip(evaluation.jump_chunks, evaluation.jumps.max(axis=1) if evaluation.jumps.size else []))
    rows = []
    for index, chunk in enumerate(evaluation.chunks):
        row: dict[str, Any] = {
            "index": index,
            "stamp_s": chunk.chunk.stamp,
            "inference_ms": chunk.inference_ms,
            "instruction": instructions.index(chunk.instruction),
        }
        for label, errors in evaluation.errors.items():
            row[f"{label}_mae"] = _error_stats(errors[index])["mae"]
        row["jump_max"] = float(jump_of[index]) if index in jump_of else None
        rows.append(row)
    return rows


def _json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# -- plots ----------------------------------------------------------------------------------------------------


def write_plots(evaluation: Evaluation, directory: Path) -> list[Path]:
    """PNG plots: each joint's predicted chunks over its recorded trajectory, error vs horizon, jump histogram."""
    paths = [directory / PLOT_FILES[key] for key in ("joints", "horizon", "discontinuity")]
    for figure, path in zip(
        (_joints_figure(evaluation), _horizon_figure(evaluation), _discontinuity_figure(evaluation)), paths
    ):
        FigureCanvasAgg(figure).print_png(str(path))
    return paths


def _joints_figure(evaluation: Evaluation) -> Figure:
    settings = evaluation.settings
    names = settings.action_names
    columns = 2
    rows = math.ceil(len(names) / columns)
    height = 2.0 * rows + 0.8
    figure = Figure(figsize=(7 * columns, height))
    # Fixed margins: constrained layout would cost more than drawing the data.
    figure.subplots_adjust(left=0.06, right=0.98, top=1 - 0.35 / height, bottom=0.75 / height, hspace=0.45, wspace=0.15)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True).ravel()
    plotted = evaluation.chunks[:: max(1, math.ceil(len(evaluation.chunks) / _MAX_PLOTTED_CHUNKS))]
    t0 = evaluation.chunks[0].chunk.stamp
    for j, (axis, name) in enumerate(zip(axes, names)):
        for reference, style in zip(evaluation.references, ("-", "--")):
            series = reference.series.get(name)
            if series is not None:
                axis.plot(
                    series.times - t0,
                    series.values,
                    style,
                    color="black",
                    linewidth=1.0,
                    label=f"recorded {reference.label}",
                )
        lines = [np.column_stack((c.chunk.row_times() - t0, c.chunk.actions[:, j])) for c in plotted]
        axis.add_collection(
            LineCollection(lines, colors="tab:orange", linewidths=0.8, alpha=0.5, label="predicted chunks")
        )
        axis.autoscale_view()
        axis.set_title(name, fontsize=9)
    for axis in axes[len(names) :]:
        axis.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    figure.supxlabel(f"time since the first observation (s); {len(plotted)} of {len(evaluation.chunks)} chunks")
    return figure


def _horizon_figure(evaluation: Evaluation) -> Figure:
    figure = Figure(figsize=(7, 4))
    figure.subplots_adjust(left=0.12, right=0.97, top=0.92, bottom=0.13)
    axis = figure.subplots()
    times = evaluation.chunks[0].chunk.row_times() - evaluation.chunks[0].chunk.stamp
    for label, errors in evaluation.errors.items():
        stats = [_error_stats(errors[:, k, :]) for k in range(errors.shape[1])]
        mae = np.array([np.nan if s["mae"] is None else s["mae"] for s in stats])
        rmse = np.array([np.nan if s["rmse"] is None else s["rmse"] for s in stats])
        (line,) = axis.plot(times, mae, label=f"MAE vs {label}")
        axis.plot(times, rmse, "--", color=line.get_color(), label=f"RMSE vs {label}")
    axis.set_xlabel("horizon (s after the observation)")
    axis.set_ylabel("error, averaged over joints")
    axis.set_title("prediction error vs horizon")
    if evaluation.errors:
        axis.legend(fontsize=8)
    return figure


def _discontinuity_figure(evaluation: Evaluation) -> Figure:
    figure = Figure(figsize=(7, 4))
    figure.subplots_adjust(left=0.12, right=0.97, top=0.92, bottom=0.13)
    axis = figure.subplots()
    largest = evaluation.jumps.max(axis=1) if evaluation.jumps.size else np.empty(0)
    if largest.size:
        axis.hist(largest, bins=min(50, max(5, largest.size // 4)), color="tab:blue")
    else:
        axis.text(0.5, 0.5, "no overlapping consecutive chunks", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel("largest jump over the joints at a hand-over")
    axis.set_ylabel("hand-overs")
    axis.set_title(f"chunk-to-chunk discontinuity ({largest.size} hand-overs)")
    return figure


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    """A few human-readable lines from a report: speed, errors per reference, hand-over jumps."""
    timing, selection = document["timing"], document["selection"]
    latency = timing["inference_ms"]
    lines = [
        f"{selection['evaluated_chunks']} chunks from {selection['synchronized_observations']} synchronized "
        f"observations in {timing['wall_s']:.1f} s ({_number(timing['chunks_per_s'], '.2f')} chunks/s; "
        f"inference mean {_number(latency['mean'], '.0f')} ms, p95 {_number(latency['p95'], '.0f')} ms)"
    ]
    for label, section in document["references"].items():
        overall = section["overall"]
        checkpoints = ", ".join(
            f"{c['time_s']:.2f} s {_number(_mean(c['mae'].values()), '.4f')}" for c in section["at_horizon"]
        )
        lines.append(
            f"vs recorded {label}: MAE {_number(overall['mae'], '.4f')}, "
            f"RMSE {_number(overall['rmse'], '.4f')} ({overall['count']} values); MAE at {checkpoints}"
        )
    jumps = document["discontinuity"]["max_over_joints"]
    lines.append(
        f"hand-over jump (largest joint): mean {_number(jumps['mean'], '.4f')}, "
        f"p95 {_number(jumps['p95'], '.4f')}, max {_number(jumps['max'], '.4f')} "
        f"over {document['discontinuity']['handovers']} hand-overs"
    )
    return lines


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
