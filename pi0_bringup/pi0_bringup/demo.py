"""The closed-loop demo behind `make demo`: simulated robot, pi0, 50 Hz streaming.

    python -m pi0_bringup.demo [--robot aloha] [--model pi0|pi05 | --checkpoint DIR] [--instruction TEXT ...]
                               [--duration S]

Starts the simulated robot, the policy node and the command streamer (the
graph of pi0_bringup.graph, one process each), sends each instruction as an
ExecuteInstruction goal with live progress, records the commands the
controllers receive, and ends with a summary (per instruction: whether it
reached its goal pose, how smooth the commands were) and a plot of the
commanded joint trajectories. Without --checkpoint it uses the demo policy:
the tiny pi0 (or pi0.5 with --model pi05) fine-tuned through the suite's own
pipeline on scripted demonstrations recorded from the simulated robot
(pi0_bringup.demo_policy).

The demo runs on a private ROS domain on localhost, so its simulated robot
and streamer can never reach a real robot on the network.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi0_bringup import supervisor
from pi0_bringup.demo_client import GoalReport
from pi0_bringup.demo_tasks import DEMO_IMAGE_SIZE, DEMO_INSTRUCTIONS, DEMONSTRATION, goal_pose
from pi0_bringup.graph_client import CommandRecorder
from pi0_client.options import DEFAULT_MODEL_TYPE, MODEL_TYPES
from pi0_ros.core.chunk import Handover
from pi0_ros.core.rate_monitor import RateStats, rate_stats
from pi0_ros.core.robot_description import DescriptionError, RobotDescription

DEFAULT_INSTRUCTIONS = ("raise the arms", "reach forward", "go home")
SETTLED_S = 0.5  # the end of a goal over which its commanded pose is averaged for the goal check
GOAL_TOLERANCE = 0.1  # rad (grippers: opening): a demo instruction succeeds when every joint ends this close


def isolate_ros_domain() -> int:
    """A private domain on localhost for this process and the graph it starts (PI0_DEMO_DOMAIN_ID chooses it)."""
    chosen = os.environ.get("PI0_DEMO_DOMAIN_ID")
    return supervisor.isolate_ros_domain(int(chosen) if chosen else None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Closed-loop pi0 demo on a simulated robot.")
    parser.add_argument("--robot", default="aloha", help="robot name or description YAML (default: aloha)")
    parser.add_argument(
        "--checkpoint", default="", help="a pi0 or pi0.5 checkpoint directory (default: the demo policy)"
    )
    parser.add_argument(
        "--model",
        choices=MODEL_TYPES,
        help=f"type of the demo policy (default: {DEFAULT_MODEL_TYPE}); a checkpoint decides its own",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--instruction",
        action="append",
        help=f"instruction to run (repeatable); default: {', '.join(repr(i) for i in DEFAULT_INSTRUCTIONS)}",
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per instruction (default: 4)")
    parser.add_argument(
        "--chunk-handover",
        default=Handover.RTC.value,
        choices=[h.value for h in Handover],
        help="how chunks take over from each other (default: rtc, real-time chunking)",
    )
    parser.add_argument(
        "--image-size",
        help="simulated camera resolution WxH (default: the demo policy's training images; 224x224 with --checkpoint)",
    )
    parser.add_argument("--output", default="artifacts/demo", help="directory for the plot and node logs")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.checkpoint and args.model:
        parser.error("--model chooses the demo policy; a --checkpoint decides its own model type")
    args.model = args.model or DEFAULT_MODEL_TYPE
    if args.image_size is None:
        args.image_size = (224, 224) if args.checkpoint else DEMO_IMAGE_SIZE
    else:
        try:
            width, height = (int(v) for v in args.image_size.lower().split("x"))
        except ValueError:
            parser.error(f"--image-size must look like 224x224, got '{args.image_size}'")
        args.image_size = (width, height)
    args.instruction = tuple(args.instruction or DEFAULT_INSTRUCTIONS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    domain = isolate_ros_domain()
    from pi0_bringup.robots import load_robot

    try:
        description = load_robot(args.robot)
    except DescriptionError as exc:
        print(f"[demo] error: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output).resolve()
    try:
        checkpoint = args.checkpoint or str(_demo_checkpoint(description, args.model))
        print(
            f"[demo] {description.name}: {len(description.policy.actions)} action dims, "
            f"{len(description.policy_cameras)} policy cameras, {description.control_rate_hz:.0f} Hz; "
            f"ROS domain {domain} (localhost only)"
        )
        return _run(args, description, checkpoint, output)
    except KeyboardInterrupt:
        print("[demo] interrupted; nothing is left running", file=sys.stderr)
        return 130


def _demo_checkpoint(description: RobotDescription, model_type: str) -> Path:
    from pi0_bringup.demo_policy import DemoTraining, demo_checkpoint

    return demo_checkpoint(
        description, DemoTraining(model_type=model_type), report=lambda line: print(f"[demo] {line}", flush=True)
    )


def _run(args: argparse.Namespace, description: RobotDescription, checkpoint: str, output: Path) -> int:
    from pi0_bringup.demo_client import run_instructions, streamer_jitter_p99_ms
    from pi0_bringup.graph import GraphOptions, node_graph
    from pi0_bringup.graph_client import GraphClient

    options = GraphOptions(
        robot=str(description.source),
        checkpoint=checkpoint,
        device=args.device,
        dtype=args.dtype,
        sim=True,
        chunk_handover=args.chunk_handover,
        torch_threads=1,
        sim_image_size=args.image_size,
    )
    logs = output / "logs"
    print(f"[demo] starting simulated robot, policy and streamer (logs in {logs})")
    # GraphClient leaves rclpy's signal handlers off: SIGTERM interrupts the waits like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    with (
        supervisor.GraphProcesses(node_graph(options), log_dir=logs) as graph,
        GraphClient(description, name="pi0_demo_client") as client,
    ):
        reports = run_instructions(client, args.instruction, args.duration, graph)
        first = description.controllers[0].name  # every controller gets one command per tick
        stats = rate_stats(client.commands.times(first), description.control_period)
        streamer_jitter = streamer_jitter_p99_ms(client)
        plot = _plot(description, client.commands, output / f"{description.name}_commands.png")
        goal_checks = demo_goal_checks(description, reports, client.commands)
    print(
        _summary(
            description,
            args.checkpoint or f"the demo {args.model} policy",
            reports,
            goal_checks,
            stats,
            streamer_jitter,
            plot,
        )
    )
    return 0 if reports and all(_moved_the_robot(r) for r in reports) else 1


def _moved_the_robot(report: GoalReport) -> bool:
    """A goal counts when it ran its course and commands streamed from its chunks."""
    return report.outcome.startswith(("duration reached", "chunk limit")) and report.chunks > 0 and report.commands > 0


@dataclass(frozen=True)
class GoalCheck:
    """How a goal of a demo instruction went: where it ended and how smoothly it got there."""

    error: float  # largest |settled command - goal| over the joints (joint units: rad, gripper opening)
    worst_joint: str
    # Tick-to-tick change of the joint commands during the goal, per controller and tick its joints' largest:
    step_p50: float  # median: the noise floor while moving or holding
    step_p95: float
    step_max: float  # typically a chunk's start from rest, which the streamer's velocity limit spreads over ticks

    @property
    def reached(self) -> bool:
        return self.error <= GOAL_TOLERANCE


def demo_goal_checks(
    description: RobotDescription, reports: list[GoalReport], commands: CommandRecorder
) -> dict[int, GoalCheck]:
    """By report index, each demo instruction's goal check: the commands averaged over the goal's last
    SETTLED_S against the instruction's goal pose, and the change of each joint command from one tick to the
    next. Only the demo instructions have a goal pose."""
    checks = {}
    for index, report in enumerate(reports):
        if report.instruction not in DEMO_INSTRUCTIONS or report.started is None or report.ended is None:
            continue
        goal = dict(zip(description.policy.actions, goal_pose(description, report.instruction)))
        gaps, steps = {}, []
        for group in description.joint_groups:
            during = [
                c for c in commands.all(group.controller.name, since=report.started) if c.received <= report.ended
            ]
            values = np.array([c.values for c in during])  # [ticks, joints of the group]
            settled = values[[c.received >= report.ended - SETTLED_S for c in during]]
            if len(settled):
                pose = settled.mean(axis=0)
                gaps.update({name: abs(pose[i] - goal[name]) for i, name in enumerate(group.joint_names)})
            if len(values) > 1:
                steps.append(np.abs(np.diff(values, axis=0)).max(axis=1))  # [ticks - 1]
        if gaps and steps:
            worst = max(gaps, key=lambda name: gaps[name])
            change = np.concatenate(steps)  # per controller and tick: its joints' largest change
            p50, p95 = np.quantile(change, [0.5, 0.95])
            checks[index] = GoalCheck(float(gaps[worst]), worst, float(p50), float(p95), float(change.max()))
    return checks


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _summary(
    description: RobotDescription,
    model: str,
    reports: list[GoalReport],
    goal_checks: dict[int, GoalCheck],
    stats: RateStats,
    streamer_jitter_ms: float,
    plot: Path | None,
) -> str:
    lines = ["", f"pi0_ros demo summary ({description.name}, {model})", "-" * 40]
    for index, report in enumerate(reports):
        lines.append(f"'{report.instruction}': {report.outcome}")
        lines.append(
            f"    {report.chunks} chunks, {report.commands} commands, inference latency "
            f"mean {report.latency_mean_ms:.0f} ms / p95 {report.latency_p95_ms:.0f} ms"
        )
        check = goal_checks.get(index)
        if check is not None:
            verdict = "reached the demo's goal pose" if check.reached else "MISSED the demo's goal pose"
            demonstrated = DEMONSTRATION.max_speed * description.control_period
            lines += [
                f"    {verdict}: ended {check.error:.3f} from it (tolerance {GOAL_TOLERANCE}, worst joint "
                f"{check.worst_joint})",
                f"    smoothness, tick-to-tick change of the commands: p50 {check.step_p50:.4f}, p95 "
                f"{check.step_p95:.4f}, max {check.step_max:.4f} (the demonstrations: at most {demonstrated:.3f})",
            ]
        if not _moved_the_robot(report):
            lines.append("    FAILED: the goal did not run its course with streamed commands (see the node logs)")
    lines += [
        f"commands received: {sum(r.commands for r in reports)} ticks; rate {stats.rate_hz:.2f} Hz "
        f"(target {description.control_rate_hz:.0f} Hz)",
        f"tick jitter reported by the streamer: p99 {streamer_jitter_ms:.2f} ms",
        f"inter-command jitter at this client (adds its own scheduling): p50 {stats.jitter_p50_ms:.2f} ms, "
        f"p99 {stats.jitter_p99_ms:.2f} ms, max gap {stats.max_gap_ms:.1f} ms",
    ]
    if plot is not None:
        lines.append(f"plot of the commanded joint trajectories: {plot}")
    return "\n".join(lines)


def _plot(description: RobotDescription, commands: CommandRecorder, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One snapshot per controller: the client keeps recording while this runs.
    received = {c.name: commands.all(c.name) for c in description.controllers}
    times = {name: [c.received for c in records] for name, records in received.items()}
    groups = [g for g in description.joint_groups if times[g.controller.name]]
    if description.base is not None and times[description.base.controller.name]:
        groups.append(None)
    if not groups:
        return None
    start = min(t[0] for t in times.values() if t)
    figure, axes = plt.subplots(len(groups), 1, figsize=(10, 2.2 * len(groups)), sharex=True, squeeze=False)
    for axis, group in zip(axes[:, 0], groups):
        name = description.base.controller.name if group is None else group.controller.name
        labels = ("linear x [m/s]", "angular z [rad/s]") if group is None else group.joint_names
        values = np.array([c.values for c in received[name]])
        for column, label in enumerate(labels):
            axis.plot(np.array(times[name]) - start, values[:, column], label=label, linewidth=1.2)
        axis.set_title(name, fontsize=9, loc="left")
        axis.legend(fontsize=7, loc="upper right", ncol=2)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [s]")
    figure.suptitle(f"pi0_ros demo: commands sent to the {description.name} controllers")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
