"""The offline evaluation core (pi0_ros.bag.evaluation) on hand-made chunks and references: no bag, no model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pi0_ros.bag.evaluation import (
    COMMANDS,
    JOINT_STATES,
    SCHEMA,
    SCHEMA_VERSION,
    EvaluationError,
    EvaluationSettings,
    ObservationSelector,
    PredictedChunk,
    Reference,
    RunInfo,
    Selection,
    Trajectory,
    checkpoint_row,
    evaluate,
    handover_jumps,
    report,
    summary_lines,
    write_plots,
    write_report,
)
from pi0_ros.core.chunk import TimedChunk

STEP = 0.1
NAMES = ("a", "b")
SETTINGS = EvaluationSettings(NAMES, STEP, horizon_checkpoints=(0.1, 0.25, 5.0))


def line(times, slope, offset=0.0) -> Trajectory:
    times = np.asarray(times, dtype=np.float64)
    return Trajectory(times, slope * times + offset)


def chunk(stamp: float, actions, instruction: str = "go") -> PredictedChunk:
    timed = TimedChunk("", 0, stamp, STEP, np.asarray(actions, dtype=np.float64))
    return PredictedChunk(timed, inference_ms=10.0, instruction=instruction)


def run_info(**overrides) -> RunInfo:
    values = dict(
        bag_path="/bags/run",
        bag_storage="mcap",
        bag_start_ns=0,
        bag_end_ns=2_000_000_000,
        bag_message_count=10,
        robot="bot",
        checkpoint="",
        device="cpu",
        dtype="float32",
        seed=0,
        selection=Selection(),
        synchronized_observations=3,
        wall_time_s=2.0,
    )
    values.update(overrides)
    return RunInfo(**values)


def test_trajectory_interpolates_inside_its_span_and_across_short_gaps_only():
    trajectory = Trajectory(np.array([0.0, 1.0, 2.0, 5.0]), np.array([0.0, 10.0, 20.0, 50.0]))
    sampled = trajectory.sample(np.array([-0.1, 0.0, 0.5, 2.0, 3.0, 5.0, 5.1]), max_gap=1.5)
    np.testing.assert_array_equal(sampled[[1, 2, 3, 5]], [0.0, 5.0, 20.0, 50.0])
    assert np.isnan(sampled[[0, 4, 6]]).all(), "outside the span, or inside the 3 s gap"
    assert trajectory.sample(np.array([[3.0]]), max_gap=3.0).shape == (1, 1)


def test_trajectory_from_unordered_samples_keeps_the_last_of_equal_times():
    trajectory = Trajectory.from_samples([(2.0, 4.0), (1.0, 1.0), (2.0, 5.0)])
    np.testing.assert_array_equal(trajectory.times, [1.0, 2.0])
    np.testing.assert_array_equal(trajectory.values, [1.0, 5.0])


@pytest.mark.parametrize(
    "times, values",
    [
        ([0.0, 0.0], [1.0, 2.0]),
        ([1.0, 0.0], [1.0, 2.0]),
        ([0.0, 1.0], [1.0]),
        ([], []),
        ([0.0, math.nan], [1, 2]),
        ([0.0, 1.0], [1.0, math.inf]),
    ],
)
def test_trajectory_rejects_bad_samples(times, values):
    with pytest.raises(EvaluationError):
        Trajectory(np.array(times, dtype=float), np.array(values, dtype=float))


def test_reference_samples_missing_names_as_nan():
    reference = Reference(JOINT_STATES, ("/joint_states",), {"b": line([0, 1], 1.0)})
    values = reference.sample(("a", "b"), np.array([0.25, 0.5]), max_gap=1.0)
    assert np.isnan(values[:, 0]).all()
    np.testing.assert_allclose(values[:, 1], [0.25, 0.5])


def test_errors_are_prediction_minus_reference_per_row_and_joint():
    # a is recorded at 1.0 * t, b at a constant 2.0; both chunks predict a = t + 0.5 and b = 2.0 exactly.
    times = np.arange(0, 1.01, 0.05)
    references = [Reference(JOINT_STATES, ("/js",), {"a": line(times, 1.0), "b": line(times, 0.0, 2.0)})]
    chunks = [chunk(s, [[s + k * STEP + 0.5, 2.0] for k in range(4)]) for s in (0.0, 0.2)]
    evaluation = evaluate(chunks, references, SETTINGS)
    errors = evaluation.errors[JOINT_STATES]
    assert errors.shape == (2, 4, 2)
    np.testing.assert_allclose(errors[:, :, 0], 0.5)
    np.testing.assert_allclose(errors[:, :, 1], 0.0)

    document = report(evaluation, run_info())
    section = document["references"][JOINT_STATES]
    assert section["per_joint"]["a"] == {"mae": pytest.approx(0.5), "rmse": pytest.approx(0.5), "count": 8}
    assert section["per_joint"]["b"]["mae"] == pytest.approx(0.0)
    assert section["overall"] == {"mae": pytest.approx(0.25), "rmse": pytest.approx(math.sqrt(0.125)), "count": 16}
    assert section["per_step"]["time_s"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert section["per_step"]["mae"] == pytest.approx([0.25] * 4)
    # 0.1 s is row 1, 0.25 s the last row at or before it (row 2), and 5 s is past the chunk: its last row.
    assert [(c["horizon_s"], c["step"]) for c in section["at_horizon"]] == [(0.1, 1), (0.25, 2), (5.0, 3)]
    assert section["at_horizon"][0]["mae"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.0)}


def test_rows_without_a_reference_are_left_out_and_reported_as_null():
    references = [Reference(COMMANDS, ("/cmd",), {"a": line([0.0, 0.15], 1.0)})]
    evaluation = evaluate([chunk(0.0, [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])], references, SETTINGS)
    document = report(evaluation, run_info())
    section = document["references"][COMMANDS]
    assert section["names"] == ["a"] and set(section["per_joint"]) == {"a"}
    assert section["per_joint"]["a"]["count"] == 2  # rows at 0.0 and 0.1 s; 0.2 s is past the last command
    assert section["per_step"]["mae"][2] is None and section["per_step"]["count"] == [1, 1, 0]
    json.dumps(document, allow_nan=False)


def test_handover_jumps_compare_the_new_first_row_with_the_previous_chunk_at_that_time():
    chunks = [
        chunk(0.0, [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]),
        chunk(0.15, [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]),  # previous at 0.15 s: [1.5, 3.0]
        chunk(5.0, [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
    ]  # no overlap with the one before
    jumps, indices, skipped = handover_jumps(chunks)
    np.testing.assert_allclose(jumps, [[0.5, 1.0]])
    assert indices == (1,) and skipped == 1
    document = report(evaluate(chunks, [], SETTINGS), run_info())
    section = document["discontinuity"]
    assert section["handovers"] == 1 and section["without_overlap"] == 1
    assert section["max_over_joints"]["max"] == pytest.approx(1.0)
    assert section["per_joint"]["a"]["mean"] == pytest.approx(0.5)
    assert [row["jump_max"] for row in document["chunks"]] == [None, pytest.approx(1.0), None]


def test_report_is_versioned_json_with_run_details_and_speed():
    chunks = [chunk(0.0, [[0.0, 0.0]], "open"), chunk(0.5, [[0.0, 0.0]], "close"), chunk(1.0, [[0.0, 0.0]], "open")]
    document = report(
        evaluate(chunks, [], EvaluationSettings(NAMES, STEP)),
        run_info(selection=Selection(every=None, stride=0.5, max_chunks=3), skipped_messages={"/x": 2}),
    )
    assert document["schema"] == SCHEMA and document["schema_version"] == SCHEMA_VERSION == 1
    assert document["bag"]["duration_s"] == 2.0 and document["bag"]["skipped_messages"] == {"/x": 2}
    assert document["selection"] == {
        "every": None,
        "stride_s": 0.5,
        "max_chunks": 3,
        "synchronized_observations": 3,
        "evaluated_chunks": 3,
    }
    assert document["timing"]["chunks_per_s"] == 1.5 and document["timing"]["inference_ms"]["mean"] == 10.0
    assert document["instructions"] == ["open", "close"]
    assert [row["instruction"] for row in document["chunks"]] == [0, 1, 0]
    assert document["horizon"] == 1 and document["references"] == {}
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_summary_names_speed_errors_and_jumps():
    times = np.arange(0, 1.01, 0.1)
    references = [Reference(JOINT_STATES, ("/js",), {"a": line(times, 0.0), "b": line(times, 0.0)})]
    document = report(
        evaluate([chunk(0.0, [[0.1, -0.1]] * 4), chunk(0.1, [[0.3, 0.3]] * 4)], references, SETTINGS),
        run_info(wall_time_s=4.0),
    )
    lines = summary_lines(document)
    assert lines[0].startswith("2 chunks from 3 synchronized observations in 4.0 s (0.50 chunks/s")
    assert lines[1].startswith("vs recorded joint_states: MAE 0.2000")
    assert "0.10 s 0.2000" in lines[1]
    assert lines[2].startswith("hand-over jump (largest joint): mean 0.4000")


def test_write_report_and_plots(tmp_path):
    times = np.arange(0, 1.01, 0.1)
    references = [
        Reference(JOINT_STATES, ("/js",), {"a": line(times, 1.0)}),
        Reference(COMMANDS, ("/cmd",), {"a": line(times, 1.0, 0.1), "b": line(times, 0.0)}),
    ]
    evaluation = evaluate(
        [chunk(0.1 * i, np.random.default_rng(i).normal(size=(5, 2))) for i in range(4)], references, SETTINGS
    )
    write_report(report(evaluation, run_info()), tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["schema_version"] == SCHEMA_VERSION
    paths = write_plots(evaluation, tmp_path)
    assert [p.name for p in paths] == ["joints.png", "horizon_error.png", "discontinuity.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_without_references_or_hand_overs(tmp_path):
    evaluation = evaluate([chunk(0.0, [[0.0, 1.0]] * 3)], [], SETTINGS)
    assert all(p.stat().st_size > 0 for p in write_plots(evaluation, tmp_path))


def test_evaluate_rejects_inconsistent_inputs():
    with pytest.raises(EvaluationError, match="no chunks"):
        evaluate([], [], SETTINGS)
    with pytest.raises(EvaluationError, match=r"\[horizon, 2\]"):
        evaluate([chunk(0.0, [[1.0, 2.0, 3.0]])], [], SETTINGS)
    twice = Reference(JOINT_STATES, (), {})
    with pytest.raises(EvaluationError, match="unique"):
        evaluate([chunk(0.0, [[1.0, 2.0]])], [twice, twice], SETTINGS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action_names": ()},
        {"action_names": ("a", "a")},
        {"step": 0.0},
        {"step": math.nan},
        {"horizon_checkpoints": (-1.0,)},
        {"max_reference_gap": 0.0},
    ],
)
def test_settings_are_validated(kwargs):
    values = {"action_names": NAMES, "step": STEP, **kwargs}
    with pytest.raises(EvaluationError):
        EvaluationSettings(**values)


def test_checkpoint_rows():
    assert checkpoint_row(0.1, 0.02, 50) == 5
    assert checkpoint_row(0.5, 0.02, 50) == 25
    assert checkpoint_row(1.0, 0.02, 50) == 49  # the 50-row chunk ends at 0.98 s
    assert checkpoint_row(0.03, 0.02, 50) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every": None},
        {"every": 2, "stride": 0.5},
        {"every": 0},
        {"every": None, "stride": -1.0},
        {"max_chunks": 0},
        {"every": 1.5},
        {"every": True},
    ],
)
def test_selection_is_validated(kwargs):
    with pytest.raises(EvaluationError):
        Selection(**kwargs)


def test_selector_takes_every_nth_observation_up_to_the_limit():
    selector = ObservationSelector(Selection(every=3, max_chunks=2))
    taken = [selector.take(0.1 * i) for i in range(10)]
    assert taken == [True, False, False, True] + [False] * 6
    assert selector.done and selector.seen == 10 and selector.taken == 2


def test_selector_with_a_stride_takes_one_observation_per_stride():
    selector = ObservationSelector(Selection(every=None, stride=0.25))
    stamps = [1_700_000_000 + 0.1 * i for i in range(11)]  # epoch seconds: rounding must not skip a frame
    assert [s for s in stamps if selector.take(s)] == [stamps[0], stamps[3], stamps[6], stamps[9]]
    selector = ObservationSelector(Selection(every=None, stride=0.2))
    assert sum(selector.take(s) for s in stamps) == 6
