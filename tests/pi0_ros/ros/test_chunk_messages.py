"""The one gate a received ActionChunk passes, and the message a chunk becomes."""

import numpy as np
import pytest

from pi0_ros.core.chunk import TimedChunk
from pi0_ros.ros.chunk_messages import ChunkRefusedError, chunk_message, received_chunk

NAMES = ("j0", "j1")


def test_a_chunk_survives_the_round_trip_and_is_reordered_to_the_receiver():
    actions = np.arange(6, dtype=float).reshape(3, 2)  # [horizon 3, (j0, j1)]
    sent = TimedChunk("a" * 32, 7, 12.5, 0.02, actions, frozen_steps=2)
    message = chunk_message(sent, NAMES, frame_id="aloha", inference_latency_ms=41.0)
    assert (message.horizon, message.header.frame_id, message.frozen_actions) == (3, "aloha", 2)
    back = received_chunk(message, ("j1", "j0"))
    assert (back.goal_id, back.sequence, back.frozen_steps) == (sent.goal_id, 7, 2)
    assert back.stamp == pytest.approx(12.5) and back.step == pytest.approx(0.02)
    np.testing.assert_array_equal(back.actions, actions[:, ::-1])


@pytest.mark.parametrize(
    "names, values, step, problem",
    [
        (("j0",), [0.0] * 50, 0.02, "missing action names ['j1']"),
        (NAMES, [0.0] * 51, 0.02, "51 values do not fill rows of 2 names"),
        (NAMES, [np.nan] * 100, 0.02, "NaN or inf"),
        (NAMES, [], 0.02, "horizon>=1"),
        (NAMES, [0.0] * 4, 0.0, "step must be positive"),
        (NAMES, [0.0] * 2, 0.02, "frozen_steps 3 is outside [0, horizon 1]"),
    ],
)
def test_malformed_chunks_are_refused_with_a_reason(names, values, step, problem):
    message = chunk_message(TimedChunk("g", 3, 0.0, 1.0, np.zeros((1, 2))), NAMES, "", 0.0)
    message.names, message.actions = list(names), [float(v) for v in values]
    message.step_period.sec, message.step_period.nanosec = 0, int(step * 1e9)
    message.frozen_actions = 3 if "frozen" in problem else 0
    with pytest.raises(ChunkRefusedError) as refused:
        received_chunk(message, NAMES)
    assert str(refused.value).startswith("chunk 3 refused: ") and problem in str(refused.value)
