"""A progress bar over bag time, for the bag tools that read a bag as fast as they can (stderr)."""

from __future__ import annotations

import time
from typing import TextIO

_NS = 1_000_000_000


class Progress:
    """Redrawn in place on a terminal, a plain line every few seconds otherwise.

    `unit` names what is counted (chunks, frames); `label` prefixes the line
    (which bag of several).
    """

    def __init__(
        self, stream: TextIO, start_ns: int, end_ns: int, unit: str = "chunks", label: str = "", width: int = 24
    ) -> None:
        self._stream = stream
        self._start_ns = start_ns
        self._span_ns = max(1, end_ns - start_ns)
        self._unit = unit
        self._label = f"{label}  " if label else ""
        self._width = width
        self._interactive = stream.isatty()
        self._interval = 0.1 if self._interactive else 5.0
        self._began = time.monotonic()
        self._last_drawn = self._began

    def update(self, bag_time_ns: int, count: int) -> None:
        now = time.monotonic()
        if now - self._last_drawn < self._interval:
            return
        self._last_drawn = now
        self._draw(self.line(bag_time_ns, count, now - self._began))

    def line(self, bag_time_ns: int, count: int, elapsed: float) -> str:
        done = min(1.0, max(0.0, (bag_time_ns - self._start_ns) / self._span_ns))
        filled = int(round(done * self._width))
        rate = count / elapsed if elapsed > 0 else 0.0
        return (
            f"{self._label}[{'#' * filled}{'.' * (self._width - filled)}] {done:4.0%}  "
            f"{(bag_time_ns - self._start_ns) / _NS:.1f}/{self._span_ns / _NS:.1f} s of bag  "
            f"{count} {self._unit}  {rate:.2f} {self._unit}/s"
        )

    def finish(self) -> None:
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, line: str) -> None:
        self._stream.write(f"\r{line}" if self._interactive else f"{line}\n")
        self._stream.flush()
