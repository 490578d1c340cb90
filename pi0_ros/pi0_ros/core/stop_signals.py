"""How a pi0_ros process stops: the first SIGINT or SIGTERM asks for a clean stop, later ones are ignored.

Under `ros2 launch` a node often gets more than one: Ctrl-C signals the whole
foreground process group, launch sends its own SIGINT when it shuts down for
another reason or runs --noninteractive, escalates to SIGTERM after its
sigterm_timeout (5 s) and SIGKILL 5 s later, and people press Ctrl-C again when
a stop seems slow. Python's default SIGINT handler (and rclpy's, which chains
to it) raises KeyboardInterrupt wherever the main thread happens to be: a
second one killed nodes in the middle of their cleanup (exit -2), and one
raised inside an rclpy callback left the executor believing that callback
still ran, so it never took another response. Here a signal only sets an
event that the main loop checks between callbacks. No rclpy import: the graph
runner, which starts no node itself, uses it too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_first_signal(stop: threading.Event) -> None:
    """Makes the first SIGINT or SIGTERM set `stop`, and every later one do nothing. Main thread only."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # The handler stays installed: switching to SIG_IGN here raised "OSError: Signal 15 ignored due to
        # race condition" when a second signal had already arrived and Python ran its handler next.
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


def exit_process(code: int) -> NoReturn:
    """Flushes stdout and stderr and ends the process at once, with `code`.

    The interpreter's normal shutdown restores the default SIGINT and SIGTERM handlers, so a second
    Ctrl-C arriving during it killed the process (exit -2) after a clean stop; os._exit skips that
    shutdown (and torch's slow teardown in the policy node). Call it once everything is released.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
