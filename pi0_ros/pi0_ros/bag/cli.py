"""What bag_record and bag_play share on the command line: ROS arguments, stop signals, errors."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def split_argv(prog: str, argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(argv for rclpy.init: only the --ros-args sections, the tool's own arguments).

    rclpy.init must not see the tool's own arguments: rcl would take a bare
    ``old:=new`` (given to --remap) as a deprecated node-wide remap rule.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    own: list[str] = []
    in_ros_section = False
    for arg in args:
        if arg == "--ros-args":
            in_ros_section = True
            ros_args.append(arg)
        elif in_ros_section and arg == "--":
            in_ros_section = False
        elif in_ros_section:
            ros_args.append(arg)
        else:
            own.append(arg)
    return [prog, *ros_args], own


@contextmanager
def signals_request_stop(stop: threading.Event) -> Iterator[None]:
    """Within the block, every Ctrl-C and SIGTERM sets `stop` (a clean stop: bag finalized) instead of killing;
    the previous handlers return after it (unlike pi0_ros.core.stop_signals.stop_on_first_signal)."""
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def report_error(prog: str, error: Exception) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 1
