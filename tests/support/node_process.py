"""Starting a node in a process of its own, and stopping it the way `ros2 launch` does on Ctrl-C, timed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# A node must exit within a second of the first signal; this much is allowed for a loaded 2-core machine.
EXIT_LIMIT_S = 3.0


def start_node(
    module: str, parameters: Mapping[str, str | int | float | bool], params_file: Path | None = None
) -> subprocess.Popen:
    """`python -m <module> --ros-args [--params-file F] -p name:=value ...`, output piped as text."""
    ros_args = ["--params-file", str(params_file)] if params_file is not None else []
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        ros_args += ["-p", f"{name}:={text}"]
    return subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", *ros_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
