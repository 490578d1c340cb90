"""Bookkeeping of one instruction goal: the instruction rules, limits, counters, and how it ended.

Shared by the action server callbacks (executor threads) and the inference
worker thread; every method is thread-safe and the first ``stop`` wins, so a
cancel racing a timeout or a preemption ends the goal exactly once.
"""

from __future__ import annotations

import enum
import math
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class EndReason(enum.IntEnum):
    # Values match pi0_msgs/action/ExecuteInstruction Result END_REASON_* constants.
    UNKNOWN = 0
    DURATION_REACHED = 1
    CHUNK_LIMIT_REACHED = 2
    CANCELED = 3
    PREEMPTED = 4
    OBSERVATION_STALE = 5
    INFERENCE_FAILED = 6
    NODE_INACTIVE = 7
    NOT_READY = 8
    STREAMER_LOST = 9
    POLICY_SERVER_LOST = 10

    @property
    def succeeded(self) -> bool:
        return self in (EndReason.DURATION_REACHED, EndReason.CHUNK_LIMIT_REACHED)


# Tabs and line breaks are whitespace a person types or pastes (a multi-line YAML value): they are
# normalized to single spaces. Every other control character is refused: NUL cuts the string in
# ROS's C layer, escape sequences rewrite the terminal that shows the log, and none of them means
# anything to the model.
_WHITESPACE_CONTROLS = frozenset("\t\n\r")


def instruction_problem(text: str, max_chars: int) -> str:
    """Why `text` cannot be an instruction ("" when it can); checks the text as sent, before normalizing."""
    if len(text) > max_chars:
        return f"the instruction has {len(text)} characters (max_instruction_chars is {max_chars})"
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cc" and char not in _WHITESPACE_CONTROLS:
            return f"the instruction contains control character {char!r} (U+{ord(char):04X}) at index {index}"
    if not normalize_instruction(text):
        return "the instruction is empty"
    return ""


def normalize_instruction(text: str) -> str:
    """Every run of whitespace (tabs and line breaks too) becomes one space; the ends are trimmed."""
    return " ".join(text.split())


@dataclass(frozen=True)
class GoalOutcome:
    reason: EndReason
    message: str


@dataclass(frozen=True)
class GoalStats:
    elapsed: float  # s since the goal started
    chunks: int
    commands_sent: int
    last_inference_ms: float
    latency_mean_ms: float
    latency_p95_ms: float
    latency_max_ms: float


class GoalSession:
    def __init__(
        self,
        goal_id: str,
        instruction: str,
        started: float | None,
        max_duration: float | None = None,
        max_chunks: int = 0,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """`started` is when the goal started running, None while it waits to start (see `begin`): its
        duration and elapsed time count from then. `on_end` is called once, on the thread of the first
        `stop`, after the outcome is set."""
        if max_duration is not None and not (math.isfinite(max_duration) and max_duration > 0):
            raise ValueError(f"max_duration must be positive, got {max_duration}")
        self.goal_id = goal_id
        self.instruction = instruction
        self._started = started
        self.max_duration = max_duration
        self.max_chunks = max_chunks
        self.ended = threading.Event()
        self._on_end = on_end
        self._lock = threading.Lock()
        self._outcome: GoalOutcome | None = None
        self._chunks = 0
        self._commands_sent = 0
        self._inference_ms: list[float] = []

    @property
    def outcome(self) -> GoalOutcome | None:
        with self._lock:
            return self._outcome

    @property
    def active(self) -> bool:
        return not self.ended.is_set()

    @property
    def started(self) -> float | None:
        with self._lock:
            return self._started

    @property
    def waiting(self) -> bool:
        """Accepted, not yet started, not ended."""
        return self.started is None and self.active

    @property
    def running(self) -> bool:
        return self.started is not None and self.active

    def begin(self, now: float) -> bool:
        """Starts a waiting goal at `now`; False when it had already started or ended."""
        with self._lock:
            if self._outcome is not None or self._started is not None:
                return False
            self._started = now
            return True

    def stop(self, reason: EndReason, message: str) -> bool:
        """Ends the goal; returns False when it had already ended (the first reason stays)."""
        with self._lock:
            if self._outcome is not None:
                return False
            self._outcome = GoalOutcome(reason, message)
        self.ended.set()
        if self._on_end is not None:
            self._on_end()
        return True

    def check_duration(self, now: float) -> None:
        started = self.started
        if self.max_duration is not None and started is not None and now - started >= self.max_duration:
            self.stop(EndReason.DURATION_REACHED, f"ran for the requested {self.max_duration:.1f} s")

    def record_chunk(self, inference_ms: float) -> int:
        """Counts a published chunk; ends the goal when max_chunks is reached. Returns the count."""
        with self._lock:
            self._chunks += 1
            self._inference_ms.append(inference_ms)
            count = self._chunks
        if self.max_chunks and count >= self.max_chunks:
            self.stop(EndReason.CHUNK_LIMIT_REACHED, f"generated the requested {self.max_chunks} chunks")
        return count

    def set_commands_sent(self, count: int) -> None:
        with self._lock:
            self._commands_sent = max(self._commands_sent, count)

    def stats(self, now: float) -> GoalStats:
        with self._lock:
            latencies = np.array(self._inference_ms) if self._inference_ms else np.zeros(1)
            return GoalStats(
                elapsed=0.0 if self._started is None else max(0.0, now - self._started),
                chunks=self._chunks,
                commands_sent=self._commands_sent,
                last_inference_ms=float(latencies[-1]),
                latency_mean_ms=float(latencies.mean()),
                latency_p95_ms=float(np.percentile(latencies, 95)),
                latency_max_ms=float(latencies.max()),
            )
