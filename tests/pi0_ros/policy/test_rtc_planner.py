import numpy as np
import pytest

from pi0_ros.core.chunk import TimedChunk
from pi0_ros.policy.rtc_planner import LatencyEstimate, plan_rtc


def test_previous_chunk_is_shifted_onto_the_new_observation_time():
    previous = TimedChunk("g", 1, 1.0, 0.02, np.arange(50, dtype=float)[:, None])
    plan = plan_rtc(previous, observation_time=1.2, step=0.02, expected_latency=0.07)
    assert plan.previous_actions.shape == (40, 1), "rows past the previous chunk's end are free"
    np.testing.assert_allclose(plan.previous_actions[:3, 0], [10.0, 11.0, 12.0])
    assert plan.frozen_steps == 4, "ceil(70 ms / 20 ms) actions execute during inference"


def test_no_plan_without_an_overlapping_previous_chunk():
    previous = TimedChunk("g", 1, 0.0, 0.02, np.zeros((50, 2)))
    assert plan_rtc(None, 0.5, 0.02, 0.05) is None
    assert plan_rtc(previous, 5.0, 0.02, 0.05) is None
    assert plan_rtc(previous, -0.1, 0.02, 0.05) is None, "an observation older than the chunk (clock jump)"


def test_frozen_steps_never_exceed_the_overlap():
    previous = TimedChunk("g", 1, 0.0, 0.02, np.zeros((50, 2)))
    plan = plan_rtc(previous, 0.9, 0.02, expected_latency=0.5)
    assert plan.previous_actions.shape[0] == 5 and plan.frozen_steps == 5


def test_latency_estimate_is_the_recent_maximum():
    estimate = LatencyEstimate(initial=0.1, window=3)
    assert estimate.value == pytest.approx(0.1)
    for latency in (0.05, 0.04, 0.06, float("nan")):
        estimate.record(latency)
    assert estimate.value == pytest.approx(0.06)
