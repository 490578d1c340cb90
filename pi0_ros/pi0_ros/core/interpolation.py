"""Linear interpolation, written once: between two values, and along the rows of a table."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Value = TypeVar("Value", float, np.ndarray)


def lerp(start: Value, end: Value, fraction: float) -> Value:
    """`start` at fraction 0, `end` at fraction 1."""
    return start + (end - start) * fraction


def interpolate_rows(rows: np.ndarray, position: float) -> np.ndarray:
    """The row at fractional index `position` of `rows` [K, ...], clamped to [0, K - 1]; a new array."""
    last = rows.shape[0] - 1
    position = min(max(position, 0.0), float(last))
    row = min(int(position), last)
    if row == last:
        return rows[last].copy()
    return lerp(rows[row], rows[row + 1], position - row)


def fractional_index(times: np.ndarray, t: float) -> float:
    """Where `t` falls in the increasing `times` [K], as a fractional row index (clamped to the ends)."""
    upper = int(np.searchsorted(times, t, side="right"))
    if upper == 0:
        return 0.0
    if upper >= len(times):
        return float(len(times) - 1)
    return upper - 1 + (t - times[upper - 1]) / (times[upper] - times[upper - 1])
