"""Start a robot's node graph without `ros2 launch`:

    python -m pi0_bringup.run aloha --sim        # the graph of: ros2 launch pi0_bringup aloha.launch.py sim:=true
    python -m pi0_bringup.run ur5e --checkpoint DIR --device cuda --dtype bfloat16
    python -m pi0_bringup.run aloha --sim --model-type pi05   # the tiny pi0.5 instead of the tiny pi0

Each node of pi0_bringup.graph.node_graph() runs as its own process (the 50 Hz
streamer must not share a process with inference). The first Ctrl-C or SIGTERM
stops them all (later ones are ignored while they stop). A node that crashes
(any exit code but 0, and 2 for a configuration error) is restarted after
`--respawn-delay` seconds, as launch's `respawn` does; otherwise, when a node
ends, the others are stopped too. No process is left behind: every child gets its own
process group, which is signalled and, if it does not exit in time, killed, and dies with
the runner should the runner itself be killed (pi0_bringup.supervisor).
The exit code is 0 only when every node stopped cleanly (exit code 0).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import NoReturn

from pi0_bringup.graph import GraphOptions, node_graph
from pi0_bringup.robots import available_robots
from pi0_bringup.supervisor import GraphProcesses
from pi0_client.options import DEVICE_FORMS, DTYPE_NAMES, MODEL_TYPES
from pi0_ros.core.chunk import Handover
from pi0_ros.core.robot_description import DescriptionError
from pi0_ros.core.stop_signals import exit_process, stop_on_first_signal


def graph_options_from_args(args: argparse.Namespace) -> GraphOptions:
    return GraphOptions(
        robot=args.robot,
        checkpoint=args.checkpoint,
        policy_server=args.policy_server,
        model_type=args.model_type,
        device=args.device,
        dtype=args.dtype,
        namespace=args.namespace,
        use_sim_time=args.use_sim_time,
        sim=args.sim,
        autostart=not args.no_autostart,
        chunk_handover=args.chunk_handover,
        seed=args.seed,
        torch_threads=args.torch_threads,
        streamer_priority=args.streamer_priority,
        params_file=args.params_file,
        sim_image_size=(args.sim_image_width, args.sim_image_height),
        respawn_delay=args.respawn_delay,
    )


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The launch files' arguments, as command-line options."""
    parser.add_argument("robot", help=f"robot name ({', '.join(available_robots())}) or description YAML path")
    parser.add_argument(
        "--checkpoint", default="", help="pi0 or pi0.5 checkpoint directory, which decides the model (default: tiny)"
    )
    parser.add_argument(
        "--model-type",
        default=GraphOptions.model_type,
        choices=MODEL_TYPES,
        help="type of the tiny demo model; only without --checkpoint",
    )
    parser.add_argument(
        "--policy-server", default="", help="ws://host:port of a policy server (default: run the model here)"
    )
    parser.add_argument("--device", default=GraphOptions.device, help=DEVICE_FORMS)
    parser.add_argument("--dtype", default=GraphOptions.dtype, choices=DTYPE_NAMES)
    parser.add_argument("--namespace", default="", help="namespace of all nodes and topics, e.g. /left_robot")
    parser.add_argument("--use-sim-time", action="store_true", help="use /clock (bag replay); not with --sim")
    parser.add_argument("--sim", action="store_true", help="also start the simulated robot")
    parser.add_argument("--no-autostart", action="store_true", help="leave the policy node unconfigured")
    parser.add_argument("--chunk-handover", default=Handover.SPLICE.value, choices=Handover.choices())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument(
        "--streamer-priority",
        type=int,
        default=10,
        help="SCHED_FIFO priority of the command streamer; 0 = normal scheduling",
    )
    parser.add_argument(
        "--params-file",
        default="",
        help="ros__parameters YAML tuning the nodes (explicit options above take precedence)",
    )
    parser.add_argument("--sim-image-width", type=int, default=0)
    parser.add_argument("--sim-image-height", type=int, default=0)
    parser.add_argument(
        "--respawn-delay",
        type=float,
        default=GraphOptions.respawn_delay,
        help="restart a crashed node after this many seconds; 0 = stop the graph instead",
    )


# Exit codes after which a restart cannot help: a deliberate end (lifecycle shutdown) and a configuration error.
_NO_RESPAWN_CODES = (0, 2)


def _wait_for_stop(graph: GraphProcesses, stop: threading.Event) -> int:
    restart_at: dict[str, float] = {}  # node name -> time.monotonic() of its respawn
    while not stop.wait(0.2):
        for name, when in list(restart_at.items()):
            if time.monotonic() >= when:
                del restart_at[name]
                print(f"[run] restarting {name}", file=sys.stderr)
                graph.restart(name)
        ended = graph.exited(ignore=restart_at)
        if ended is None:
            continue
        name, code = ended
        delay = graph.spec(name).respawn_delay
        if delay is not None and code not in _NO_RESPAWN_CODES:
            print(f"[run] node {name} exited with code {code}; restarting it in {delay:g} s", file=sys.stderr)
            restart_at[name] = time.monotonic() + delay
            continue
        print(f"[run] node {name} exited with code {code}; stopping the others", file=sys.stderr)
        return 0 if code == 0 else 1
    return 0


def run_until_stopped(graph: GraphProcesses, stop: threading.Event) -> int:
    """Runs until `stop` is set or a node dies, then stops the graph; 0 only when every node stopped cleanly."""
    code = _wait_for_stop(graph, stop)
    unclean = {name: c for name, c in graph.stop().items() if c != 0}
    if code == 0 and unclean:
        print(f"[run] nodes that did not stop cleanly (exit codes): {unclean}", file=sys.stderr)
        return 1
    return code


def main(argv: list[str] | None = None) -> NoReturn:
    exit_process(_run_graph(argv))


def _run_graph(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description="Start a pi0_ros node graph (what the launch files start).")
    add_graph_arguments(parser)
    args = parser.parse_args(argv)
    try:
        specs = node_graph(graph_options_from_args(args))
    except (DescriptionError, ValueError) as exc:
        print(f"[run] error: {exc}", file=sys.stderr)
        return 2
    # Installed before any child starts, so none is orphaned.
    stop = threading.Event()
    stop_on_first_signal(stop)
    with GraphProcesses(specs, namespace=args.namespace) as graph:
        print(f"[run] started {', '.join(s.name for s in specs)} for {args.robot}; Ctrl-C stops", file=sys.stderr)
        return run_until_stopped(graph, stop)


if __name__ == "__main__":
    main()
