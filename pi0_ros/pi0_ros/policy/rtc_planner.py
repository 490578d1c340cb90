"""What real-time chunking needs from the runtime: the previous chunk on the
new chunk's time base and how many of its actions execute during inference.

The streamer splices a new chunk in at the row whose time is "now", so the
actions for [t_obs, t_obs + latency) come from the previous chunk. The model
freezes exactly those and guides the rest toward the previous chunk
(arXiv 2506.07339), so the hand-over is continuous.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from pi0_client.interface import RtcGuidance
from pi0_ros.core.chunk import TimedChunk


def plan_rtc(
    previous: TimedChunk | None, observation_time: float, step: float, expected_latency: float
) -> RtcGuidance | None:
    """The guidance for a chunk observed at `observation_time`, or None without a usable previous chunk.

    The previous chunk's remaining rows are at most a horizon: it began no later than this observation.
    """
    if previous is None or observation_time < previous.stamp:
        return None
    rows: list[np.ndarray] = []
    while (action := previous.sample(observation_time + len(rows) * step)) is not None:
        rows.append(action)
    if not rows:
        return None
    frozen = min(len(rows), max(0, math.ceil(expected_latency / step - 1e-9)))
    # Row k of previous_actions is the previous chunk at observation_time + k * step.
    return RtcGuidance(np.stack(rows), frozen)


class LatencyEstimate:
    """A conservative observation-to-chunk latency: the largest of the recent ones."""

    def __init__(self, initial: float, window: int = 5) -> None:
        self._recent: deque[float] = deque([initial], maxlen=window)

    def record(self, latency: float) -> None:
        if math.isfinite(latency) and latency >= 0:
            self._recent.append(latency)

    @property
    def value(self) -> float:
        return max(self._recent)
