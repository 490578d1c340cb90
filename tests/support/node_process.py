"""Stopping a node's process the way `ros2 launch` does on Ctrl-C, and timing it."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass

# A node must exit within a second of the first signal; this much is allowed for a loaded 2-core machine.
EXIT_LIMIT_S = 3.0


@dataclass(frozen=True)
class Stopped:
    returncode: int
    seconds: float  # from the first signal to the exit
    output: str


def stop_like_launch(
    process: subprocess.Popen, first: signal.Signals = signal.SIGINT, gap: float = 0.05, timeout: float = 20.0
) -> Stopped:
    """Sends `first`, then SIGINT `gap` s later, as a node under `ros2 launch` may get them (Ctrl-C reaches the
    whole process group, launch may send its own, a person presses Ctrl-C again). `process` must pipe its
    output as text."""
    start = time.monotonic()
    process.send_signal(first)
    time.sleep(gap)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Stopped(process.returncode, time.monotonic() - start, output or "")


def assert_clean_prompt_exit(stopped: Stopped) -> None:
    assert stopped.returncode == 0, f"exit code {stopped.returncode}:\n{stopped.output}"
    assert "Traceback" not in stopped.output, stopped.output
    assert stopped.seconds < EXIT_LIMIT_S, f"exited {stopped.seconds:.2f} s after the first signal"
