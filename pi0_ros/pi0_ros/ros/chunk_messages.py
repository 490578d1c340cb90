"""pi0_msgs/ActionChunk <-> TimedChunk: where a chunk crosses the wire, and the one gate a received chunk passes.

A received chunk is validated here once (names cover the robot's actions, rows are complete, every value is
finite, the step is positive, the frozen rows are rows) and reordered into the receiver's action order; past
this gate the streamer trusts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pi0_msgs.msg import ActionChunk
from pi0_ros.core.chunk import TimedChunk
from pi0_ros.ros.conversions import duration_to_seconds, seconds_to_duration, seconds_to_stamp, stamp_to_seconds


class ChunkRefusedError(ValueError):
    """A received ActionChunk that cannot be executed; the message says why."""


def chunk_message(chunk: TimedChunk, names: Sequence[str], frame_id: str, inference_latency_ms: float) -> ActionChunk:
    """The message of `chunk`, whose action columns are `names`; stamped with its observation time."""
    message = ActionChunk(
        goal_id=chunk.goal_id,
        sequence=chunk.sequence,
        names=list(names),
        step_period=seconds_to_duration(chunk.step),
        horizon=chunk.actions.shape[0],
        actions=chunk.actions.astype(np.float64).ravel().tolist(),
        inference_latency_ms=inference_latency_ms,
        frozen_actions=chunk.frozen_steps,
    )
    message.header.stamp = seconds_to_stamp(chunk.stamp)
    message.header.frame_id = frame_id
    return message


def received_chunk(message: ActionChunk, action_names: Sequence[str]) -> TimedChunk:
    """The chunk in `action_names` order; raises ChunkRefusedError with the reason when it is malformed."""
    names = list(message.names)
    missing = [n for n in action_names if n not in names]
    if missing:
        raise ChunkRefusedError(f"chunk {message.sequence} refused: missing action names {missing}")
    values = message.actions
    if len(values) % len(names):
        raise ChunkRefusedError(
            f"chunk {message.sequence} refused: {len(values)} values do not fill rows of {len(names)} names"
        )
    table = np.asarray(values, dtype=np.float64).reshape(-1, len(names))  # [horizon, len(names)]
    if not np.all(np.isfinite(table)):
        raise ChunkRefusedError(f"chunk {message.sequence} refused: actions contain NaN or inf")
    try:
        return TimedChunk(
            message.goal_id,
            message.sequence,
            stamp_to_seconds(message.header.stamp),
            duration_to_seconds(message.step_period),
            table[:, [names.index(n) for n in action_names]],
            message.frozen_actions,
        )
    except ValueError as exc:  # no rows, a step that is not positive, more frozen rows than rows
        raise ChunkRefusedError(f"chunk {message.sequence} refused: {exc}") from None
