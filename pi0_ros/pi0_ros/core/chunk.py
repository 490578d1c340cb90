"""An action chunk in time, and the hand-over strategies between chunks: shared by both sides.

A chunk is a time-indexed trajectory: row k is meant for ``stamp + k * step``
(docs/ARCHITECTURE.md). The policy produces it, the streamer executes it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import numpy as np

from pi0_ros.core.interpolation import interpolate_rows


class Handover(str, enum.Enum):
    WAIT = "wait"
    SPLICE = "splice"
    BLEND = "blend"
    RTC = "rtc"

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        """Every hand-over's name, as parameters and launch arguments spell it."""
        return tuple(h.value for h in cls)

    @classmethod
    def parse(cls, value: str) -> Handover:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(cls.choices())
            raise ValueError(f"unknown chunk handover '{value}' (expected one of {choices})") from None


@dataclass(frozen=True)
class TimedChunk:
    goal_id: str
    sequence: int
    stamp: float  # time of row 0, s (the observation time)
    step: float  # seconds between rows
    actions: np.ndarray  # [horizon, dims], in the streamer's action order
    # Leading rows that real-time chunking froze to the previous chunk; 0 when the chunk was not guided.
    frozen_steps: int = 0

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or self.actions.shape[0] < 1:
            raise ValueError(f"chunk actions must be [horizon>=1, dims], got shape {self.actions.shape}")
        if not self.step > 0:
            raise ValueError(f"chunk step must be positive, got {self.step}")
        if not math.isfinite(self.stamp):
            raise ValueError(f"chunk stamp must be finite, got {self.stamp}")
        if not 0 <= self.frozen_steps <= self.actions.shape[0]:
            raise ValueError(f"frozen_steps {self.frozen_steps} is outside [0, horizon {self.actions.shape[0]}]")

    def row_times(self) -> np.ndarray:
        """float64 [horizon]: the time each row is for, s."""
        return self.stamp + self.step * np.arange(self.actions.shape[0])

    @property
    def end(self) -> float:
        return self.stamp + (self.actions.shape[0] - 1) * self.step

    def covers(self, t: float) -> bool:
        return t <= self.end + 1e-9

    def sample(self, t: float) -> np.ndarray | None:
        """The action for time t, linearly interpolated between rows; None after the last row."""
        if not self.covers(t):
            return None
        return interpolate_rows(self.actions, (t - self.stamp) / self.step)

    def restarted_at(self, t: float) -> TimedChunk:
        return dataclasses.replace(self, stamp=t)
