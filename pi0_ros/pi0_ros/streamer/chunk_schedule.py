"""Which action the robot should execute now, given the chunks received so far.

A chunk is a time-indexed trajectory: row k is meant for ``stamp + k * step``
(see docs/ARCHITECTURE.md). The scheduler evaluates the current chunk at the
tick time and decides when a newer chunk takes over. Hand-over strategies:

- ``wait``:   the classic synchronous baseline: a chunk runs from its first
              row (re-timed to start when it is taken) to its last, and only
              then does the newest received chunk take over.
- ``splice``: a new chunk takes over at once, at the row whose time is now,
              skipping the actions whose time passed during inference.
- ``blend``:  like splice, but cross-fades from what was being executed (the
              old chunk, or a cross-fade still in progress) to the new
              chunk over ``blend_duration`` seconds.
- ``rtc``:    real-time chunking: the policy already froze the actions that
              execute during inference and guided the rest toward the old
              chunk, so the streamer splices. A chunk that replaces a running
              one without that guidance (a policy server without real-time
              chunking, a guidance the model could not apply) is blended in
              instead, and so is any chunk while such a blend runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pi0_ros.core.chunk import Handover, TimedChunk
from pi0_ros.core.interpolation import lerp


@dataclass(frozen=True)
class _Blend:
    """A cross-fade from what was executed when `target` arrived to `target`."""

    source: TimedChunk | _Blend
    target: TimedChunk
    start: float
    duration: float

    def settled(self, t: float) -> TimedChunk | _Blend:
        """What this blend amounts to at t: the target alone once the cross-fade is over."""
        return self.target if t - self.start >= self.duration else self

    def sample(self, t: float) -> np.ndarray | None:
        """The faded action at t; None once the target has run out."""
        new_action = self.target.sample(t)
        weight = (t - self.start) / self.duration
        old_action = self.source.sample(t) if weight < 1.0 else None
        if new_action is None or old_action is None:
            return new_action
        return lerp(old_action, new_action, weight)


@dataclass(frozen=True)
class ScheduledTarget:
    action: np.ndarray | None  # [dims], or None when nothing may be executed
    reason: str  # why there is no action ("" when there is one)
    chunk_sequence: int = 0


DEFAULT_BLEND_DURATION_S = 0.2  # cross-fade time of the blend hand-over (the blend_duration_s parameter's default)


class ChunkScheduler:
    """Chooses the target action at each tick from the chunks offered so far."""

    def __init__(self, handover: Handover, blend_duration: float = DEFAULT_BLEND_DURATION_S) -> None:
        if handover in (Handover.BLEND, Handover.RTC) and not blend_duration > 0:
            raise ValueError(f"the {handover.value} handover needs a positive blend_duration")
        self.handover = handover
        self.blend_duration = blend_duration
        self._current: TimedChunk | None = None
        self._pending: TimedChunk | None = None
        self._blend: _Blend | None = None  # the cross-fade into _current, while it lasts

    @property
    def current(self) -> TimedChunk | None:
        return self._current

    def reset(self) -> None:
        self._current = self._pending = None
        self._blend = None

    def offer(self, chunk: TimedChunk, now: float) -> None:
        """Hands a newly received chunk to the scheduler."""
        if self._current is not None and chunk.goal_id != self._current.goal_id:
            self.reset()
        if self.handover is Handover.WAIT:
            if self._current is None:
                self._current = chunk.restarted_at(now)
            else:
                self._pending = chunk
            return
        if self.handover is Handover.BLEND or (
            self.handover is Handover.RTC and (chunk.frozen_steps == 0 or self._blend is not None)
        ):
            self._blend = self._blend_into(chunk, now)
        self._current = chunk

    def _blend_into(self, chunk: TimedChunk, now: float) -> _Blend | None:
        if self._current is None or not self._current.covers(now):
            return None  # nothing is being executed to fade from
        # From the output as it is, mid-fade included: chunks may come faster than blend_duration.
        source = self._current if self._blend is None else self._blend.settled(now)
        return _Blend(source, chunk, now, self.blend_duration)

    def target(self, now: float) -> ScheduledTarget:
        """The action for the tick at `now`; advances hand-overs that are due."""
        if (
            self.handover is Handover.WAIT
            and self._pending is not None
            and (self._current is None or not self._current.covers(now))
        ):
            self._current, self._pending = self._pending.restarted_at(now), None
        if self._blend is not None and self._blend.settled(now) is not self._blend:
            self._blend = None
        return self.peek(now)

    def peek(self, t: float) -> ScheduledTarget:
        """The action planned for time t (now or later) without changing any state."""
        if self._current is None:
            return ScheduledTarget(None, "no chunk received for the active goal yet")
        action = (self._blend or self._current).sample(t)  # a blend's target is _current
        if action is None:
            if self.handover is Handover.WAIT:
                return ScheduledTarget(None, f"chunk {self._current.sequence} finished; waiting for the next chunk")
            return ScheduledTarget(None, f"chunk {self._current.sequence} ran out and no newer chunk arrived")
        return ScheduledTarget(action, "", self._current.sequence)
