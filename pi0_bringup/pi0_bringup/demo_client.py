"""The demo's use of the graph client: sends the goals with live progress and reports how each ended."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pi0_bringup.graph_client import GoalRejectedError, GraphClient, GraphClientError
from pi0_bringup.supervisor import GraphProcesses, ProcessExitedError
from pi0_msgs.msg import StreamerStatus
from pi0_ros.policy.goal_session import EndReason
from pi0_ros.tools.send_instruction import StatusLine, format_feedback

STARTUP_TIMEOUT = 120.0  # s; the policy node loads and warms up the model first


@dataclass
class GoalReport:
    instruction: str
    outcome: str  # end reason and message, or why the goal was not run
    chunks: int = 0
    commands: int = 0
    latency_mean_ms: float = 0.0
    latency_p95_ms: float = 0.0
    started: float | None = None  # time.monotonic() when it was accepted; None when it was not
    ended: float | None = None  # time.monotonic() when its result arrived; None when it has none


def streamer_jitter_p99_ms(client: GraphClient) -> float:
    """The streamer's own tick statistics: its last status while streaming."""
    streaming = [s for s in client.streamer_statuses() if s.mode == StreamerStatus.MODE_STREAMING]
    return streaming[-1].jitter_p99_ms if streaming else 0.0


def run_instructions(
    client: GraphClient, instructions: Sequence[str], duration: float, graph: GraphProcesses
) -> list[GoalReport]:
    """Waits until the graph is ready, then runs each instruction for `duration` s; [] if it never got ready."""
    try:
        client.wait_until_ready(STARTUP_TIMEOUT, observations=True, streamer=True, processes=graph)
    except ProcessExitedError as exc:
        print(f"[demo] a node exited during start-up: {exc}", file=sys.stderr)
        return []
    except GraphClientError as exc:
        print(f"[demo] the graph did not get ready: {exc}", file=sys.stderr)
        return []
    return [_run_goal(client, instruction, duration, graph) for instruction in instructions]


def _run_goal(client: GraphClient, instruction: str, duration: float, graph: GraphProcesses) -> GoalReport:
    line = StatusLine(sys.stdout)
    print(f"[demo] instruction: '{instruction}' for {duration:.0f} s")
    try:
        handle = client.send_goal(
            instruction, duration, lambda m: line.show(format_feedback(m.feedback, duration)), processes=graph
        )
    except GoalRejectedError as exc:
        return GoalReport(instruction, f"rejected: {exc}")
    except (GraphClientError, ProcessExitedError):
        return GoalReport(instruction, "rejected: no response")
    started = time.monotonic()
    try:
        result = client.result(handle, duration + 30.0, processes=graph)
        ended = time.monotonic()
    except (GraphClientError, ProcessExitedError):
        return GoalReport(instruction, "no result (a node stopped?)")
    finally:
        line.close()
    reason = EndReason(result.end_reason).name.lower().replace("_", " ")
    return GoalReport(
        instruction,
        f"{reason}: {result.message}",
        result.chunks_generated,
        result.commands_sent,
        result.inference_latency_mean_ms,
        result.inference_latency_p95_ms,
        started,
        ended,
    )
