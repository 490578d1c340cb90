"""Rate and jitter of a periodic event over a sliding window."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class RateStats:
    count: int  # intervals in the window
    rate_hz: float  # events per second over the window (0 without intervals)
    jitter_p50_ms: float  # |interval - expected period|, percentiles
    jitter_p99_ms: float
    jitter_max_ms: float
    max_gap_ms: float  # longest interval


def rate_stats(times: Iterable[float], period: float) -> RateStats:
    """Statistics of event times (seconds, increasing) against an expected period."""
    stamps = np.fromiter(times, dtype=np.float64)
    if stamps.size < 2:
        return RateStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    intervals = np.diff(stamps)
    jitter_ms = np.abs(intervals - period) * 1e3
    span = stamps[-1] - stamps[0]
    return RateStats(
        count=int(intervals.size),
        rate_hz=float(intervals.size / span) if span > 0 else 0.0,
        jitter_p50_ms=float(np.percentile(jitter_ms, 50)),
        jitter_p99_ms=float(np.percentile(jitter_ms, 99)),
        jitter_max_ms=float(jitter_ms.max()),
        max_gap_ms=float(intervals.max() * 1e3),
    )


class RateMonitor:
    """Keeps the last `window` event times and summarizes them on demand."""

    def __init__(self, period: float, window: int = 500) -> None:
        if period <= 0 or window < 2:
            raise ValueError("RateMonitor needs a positive period and a window of at least 2")
        self.period = period
        self._times: deque[float] = deque(maxlen=window)

    def record(self, t: float) -> None:
        self._times.append(t)

    def stats(self) -> RateStats:
        return rate_stats(list(self._times), self.period)
