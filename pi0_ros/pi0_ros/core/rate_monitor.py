"""Rate and jitter of a periodic event over a sliding window."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

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
    """Keeps the event times of the last `max_age` seconds (at most `window`) and summarizes them on demand.

    Thread-safe: events may be recorded on one thread and summarized on another.
    """

    def __init__(self, period: float, window: int = 500, max_age: float = 10.0) -> None:
        if period <= 0 or window < 2 or max_age <= 0:
            raise ValueError("RateMonitor needs a positive period and max_age and a window of at least 2")
        self.period = period
        self.max_age = max_age
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, t: float) -> None:
        with self._lock:
            self._times.append(t)

    def stats(self, now: float) -> RateStats:
        """Statistics of the events within `max_age` of `now` (same clock as record): an idle stream reads 0 Hz."""
        with self._lock:
            while self._times and now - self._times[0] > self.max_age:
                self._times.popleft()
            times = list(self._times)
        return rate_stats(times, self.period)
