import numpy as np
import pytest

from pi0_ros.core.chunk import Handover, TimedChunk
from pi0_ros.streamer.chunk_schedule import ChunkScheduler

STEP = 0.02


def ramp_chunk(sequence: int, stamp: float, start: float, horizon: int = 50, goal: str = "g") -> TimedChunk:
    """Chunk whose single dimension is `start + row` (easy to read back which row played)."""
    return TimedChunk(goal, sequence, stamp, STEP, (start + np.arange(horizon, dtype=float))[:, None])


def test_sample_interpolates_between_rows_and_ends_after_last_row():
    chunk = ramp_chunk(1, stamp=10.0, start=0.0, horizon=5)
    assert chunk.sample(10.0)[0] == pytest.approx(0.0)
    assert chunk.sample(10.03)[0] == pytest.approx(1.5)
    assert chunk.sample(10.08)[0] == pytest.approx(4.0)
    assert chunk.sample(10.0801) is None
    assert chunk.sample(9.99)[0] == pytest.approx(0.0), "times before the observation use row 0"


def test_row_times_and_validation():
    np.testing.assert_allclose(ramp_chunk(1, stamp=10.0, start=0.0, horizon=3).row_times(), [10.0, 10.02, 10.04])
    with pytest.raises(ValueError, match="horizon>=1"):
        TimedChunk("g", 1, 0.0, STEP, np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        TimedChunk("g", 1, float("nan"), STEP, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="positive"):
        TimedChunk("g", 1, 0.0, 0.0, np.zeros((3, 1)))


def test_splice_switches_at_once_skipping_rows_that_passed_during_inference():
    scheduler = ChunkScheduler(Handover.SPLICE)
    scheduler.offer(ramp_chunk(1, stamp=0.0, start=0.0), now=0.05)
    assert scheduler.target(0.05).action[0] == pytest.approx(2.5)
    # Second chunk observed at t=0.5, available at t=0.6: it starts at its row 5.
    scheduler.offer(ramp_chunk(2, stamp=0.5, start=100.0), now=0.6)
    target = scheduler.target(0.6)
    assert target.action[0] == pytest.approx(105.0) and target.chunk_sequence == 2


def test_wait_runs_each_chunk_from_its_first_row_to_its_end_before_taking_the_newest():
    scheduler = ChunkScheduler(Handover.WAIT)
    scheduler.offer(ramp_chunk(1, stamp=0.0, start=0.0, horizon=10), now=0.3)
    assert scheduler.target(0.3).action[0] == pytest.approx(0.0), "re-timed to start when taken"
    scheduler.offer(ramp_chunk(2, stamp=0.35, start=100.0, horizon=10), now=0.4)
    scheduler.offer(ramp_chunk(3, stamp=0.40, start=200.0, horizon=10), now=0.45)
    assert scheduler.target(0.45).action[0] == pytest.approx(7.5), "chunk 1 keeps running"
    after = scheduler.target(0.49)
    assert after.chunk_sequence == 3 and after.action[0] == pytest.approx(200.0), "newest chunk, from row 0"


def test_wait_reports_a_reason_while_no_next_chunk_exists():
    scheduler = ChunkScheduler(Handover.WAIT)
    scheduler.offer(ramp_chunk(1, stamp=0.0, start=0.0, horizon=3), now=0.0)
    result = scheduler.target(0.1)
    assert result.action is None and "waiting for the next chunk" in result.reason


def test_blend_cross_fades_from_the_old_chunk_to_the_new_one():
    scheduler = ChunkScheduler(Handover.BLEND, blend_duration=0.1)
    old = TimedChunk("g", 1, 0.0, STEP, np.zeros((50, 1)))
    new = TimedChunk("g", 2, 0.0, STEP, np.ones((50, 1)))
    scheduler.offer(old, now=0.0)
    scheduler.offer(new, now=0.2)
    assert scheduler.target(0.2).action[0] == pytest.approx(0.0)
    assert scheduler.target(0.25).action[0] == pytest.approx(0.5)
    assert scheduler.target(0.30).action[0] == pytest.approx(1.0)
    assert scheduler.target(0.40).action[0] == pytest.approx(1.0)


def test_a_chunk_arriving_mid_blend_fades_from_the_output_as_it_is():
    scheduler = ChunkScheduler(Handover.BLEND, blend_duration=0.2)
    scheduler.offer(TimedChunk("g", 1, 0.0, STEP, np.zeros((50, 1))), now=0.0)
    scheduler.offer(TimedChunk("g", 2, 0.0, STEP, np.ones((50, 1))), now=0.2)
    assert scheduler.target(0.3).action[0] == pytest.approx(0.5)
    scheduler.offer(TimedChunk("g", 3, 0.0, STEP, np.ones((50, 1))), now=0.3)
    outputs = [scheduler.target(0.3 + k * STEP).action[0] for k in range(0, 16)]
    assert outputs[0] == pytest.approx(0.5), "no jump when the new chunk arrives"
    assert np.all(np.diff(outputs) >= -1e-12) and outputs[-1] == pytest.approx(1.0)
    # Two overlapping fades, each moving at most the full difference (1.0) over 0.2 s.
    assert np.max(np.diff(outputs)) <= 2 * 1.0 * STEP / 0.2 + 1e-9


def test_rtc_splices_guided_chunks_and_blends_one_without_guidance():
    scheduler = ChunkScheduler(Handover.RTC, blend_duration=0.1)
    scheduler.offer(TimedChunk("g", 1, 0.0, STEP, np.zeros((50, 1))), now=0.0)
    scheduler.offer(TimedChunk("g", 2, 0.0, STEP, np.ones((50, 1)), frozen_steps=5), now=0.2)
    assert scheduler.target(0.2).action[0] == pytest.approx(1.0), "a guided chunk is spliced in"
    # A policy server without real-time chunking returns unguided chunks: cross-faded, no jump.
    scheduler.offer(TimedChunk("g", 3, 0.0, STEP, np.full((50, 1), 3.0)), now=0.3)
    assert scheduler.target(0.3).action[0] == pytest.approx(1.0)
    assert scheduler.target(0.35).action[0] == pytest.approx(2.0)
    # A guided chunk arriving during that fade continues from the output as it is.
    scheduler.offer(TimedChunk("g", 4, 0.0, STEP, np.full((50, 1), 3.0), frozen_steps=5), now=0.36)
    assert scheduler.target(0.36).action[0] == pytest.approx(2.2)
    assert scheduler.target(0.5).action[0] == pytest.approx(3.0)


def test_peek_does_not_change_state():
    scheduler = ChunkScheduler(Handover.WAIT)
    scheduler.offer(ramp_chunk(1, stamp=0.0, start=0.0, horizon=3), now=0.0)
    scheduler.offer(ramp_chunk(2, stamp=0.0, start=100.0, horizon=3), now=0.01)
    assert scheduler.peek(0.5).action is None
    assert scheduler.current.sequence == 1


def test_a_chunk_of_another_goal_replaces_everything():
    scheduler = ChunkScheduler(Handover.WAIT)
    scheduler.offer(ramp_chunk(1, stamp=0.0, start=0.0, goal="a"), now=0.0)
    scheduler.offer(ramp_chunk(2, stamp=0.1, start=100.0, goal="b"), now=0.2)
    assert scheduler.target(0.2).action[0] == pytest.approx(100.0)


def test_unknown_handover_names_the_choices():
    with pytest.raises(ValueError, match="wait, splice, blend, rtc"):
        Handover.parse("teleport")
