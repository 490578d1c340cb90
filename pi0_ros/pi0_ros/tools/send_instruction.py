"""send_instruction: send an instruction goal to pi0_policy and follow it live.

    send_instruction "fold the towel" [--duration 30] [--chunks 0] [--namespace /robot]

Shows a status line from the action feedback, cancels the goal on Ctrl-C or
SIGTERM (and waits at most 5 s for its result; later signals are ignored),
prints the result, and explains rejections using the reason the policy node
publishes on policy_status. Works where the `ros2` command line is not
installed; the equivalent there is
`ros2 action send_goal --feedback <ns>/execute_instruction pi0_msgs/action/ExecuteInstruction "{instruction: ...}"`.

Exit codes: 0 succeeded, 1 canceled or aborted, 2 rejected, 3 no policy node.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import NoReturn, TextIO

import rclpy
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import PolicyStatus
from pi0_ros.core.stop_signals import exit_process, stop_on_first_signal
from pi0_ros.policy.goal_session import EndReason, instruction_problem
from pi0_ros.ros.conversions import (
    action_service_qos,
    duration_to_seconds,
    qos_profile,
    seconds_to_duration,
    stamp_to_seconds,
)

EXIT_SUCCEEDED, EXIT_ENDED, EXIT_REJECTED, EXIT_NO_SERVER = 0, 1, 2, 3
CANCEL_WAIT_S = 5.0  # after Ctrl-C, how long to wait for the canceled goal's result
SPIN_SLICE_S = 0.1  # waits are sliced so that a Ctrl-C is noticed within this time


def format_feedback(feedback: ExecuteInstruction.Feedback, max_duration: float, width: int = 20) -> str:
    """One status line: progress bar (when the goal has a duration), elapsed, chunks, latency, commands."""
    elapsed = duration_to_seconds(feedback.elapsed)
    if feedback.phase == ExecuteInstruction.Feedback.PHASE_WAITING_FOR_STREAMER:
        state = "waiting for the command streamer"
    elif feedback.phase == ExecuteInstruction.Feedback.PHASE_WAITING_FOR_OBSERVATION:
        state = "waiting for observations"
    else:
        state = (
            f"{feedback.chunks_generated} chunks, {feedback.last_inference_latency_ms:.0f} ms inference, "
            f"{feedback.commands_sent} commands, obs age {feedback.observation_age_ms:.0f} ms"
        )
    if max_duration > 0:
        done = min(1.0, elapsed / max_duration)
        filled = int(round(done * width))
        return f"[{'#' * filled}{'.' * (width - filled)}] {elapsed:5.1f}/{max_duration:.1f} s  {state}"
    return f"{elapsed:6.1f} s  {state}"


def format_result(result: ExecuteInstruction.Result) -> str:
    try:
        reason = EndReason(result.end_reason).name.lower().replace("_", " ")
    except ValueError:
        reason = f"end reason {result.end_reason}"
    return (
        f"{reason}: {result.message}\n"
        f"  elapsed {duration_to_seconds(result.elapsed):.1f} s, {result.chunks_generated} chunks, "
        f"{result.commands_sent} commands\n"
        f"  inference latency mean {result.inference_latency_mean_ms:.1f} ms, "
        f"p95 {result.inference_latency_p95_ms:.1f} ms, max {result.inference_latency_max_ms:.1f} ms"
    )


class StatusLine:
    """Rewrites one line on a terminal; prints a line per second elsewhere (logs, pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_print = 0.0
        self._shown = False

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self._shown = True
        elif time.monotonic() - self._last_print >= 1.0:
            self.stream.write(text + "\n")
            self._last_print = time.monotonic()
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self._shown = False


class InstructionClient(Node):
    def __init__(self, namespace: str) -> None:
        super().__init__("pi0_send_instruction", namespace=namespace)
        self.client = ActionClient(self, ExecuteInstruction, "execute_instruction", **action_service_qos())
        self.status: PolicyStatus | None = None
        self.statuses_received = 0
        self.create_subscription(
            PolicyStatus, "policy_status", self._on_status, qos_profile("reliable", 1, transient_local=True)
        )

    def _on_status(self, message: PolicyStatus) -> None:
        # The latched status may arrive after newer ones: keep the newest by its stamp.
        if self.status is None or stamp_to_seconds(message.header.stamp) >= stamp_to_seconds(self.status.header.stamp):
            self.status = message
        self.statuses_received += 1


def _spin_until(node: Node, future: Future, timeout: float | None = None) -> bool:
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    return future.done()


def _spin_for(node: Node, seconds: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        rclpy.spin_once(node, timeout_sec=min(SPIN_SLICE_S, max(0.0, deadline - time.monotonic())))


def _wait_for_server(node: InstructionClient, timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while not node.client.server_is_ready():
        if stop.is_set() or time.monotonic() >= deadline:
            return False
        _spin_for(node, SPIN_SLICE_S, stop)
    return True


def _wait_for_result(node: InstructionClient, result: Future, stop: threading.Event, server_grace: float = 3.0) -> bool:
    """Spins until the result arrives or `stop` is set; False when the action server has been gone for
    `server_grace` s."""
    gone_since: float | None = None
    while not result.done() and not stop.is_set():
        rclpy.spin_until_future_complete(node, result, timeout_sec=SPIN_SLICE_S)
        if node.client.server_is_ready():
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
        elif time.monotonic() - gone_since > server_grace:
            return False
    return True


def run(args: argparse.Namespace, stop: threading.Event, out: TextIO = sys.stdout) -> int:
    """Sends the goal and follows it; `stop` (set by Ctrl-C) cancels it."""
    # Checked here because ROS strings end at a NUL on the way: the policy node would get a cut instruction.
    # The length limit is the policy node's parameter; it checks that itself.
    problem = instruction_problem(args.instruction, max_chars=len(args.instruction))
    if problem:
        print(f"goal rejected: {problem}", file=sys.stderr)
        return EXIT_REJECTED
    node = InstructionClient(args.namespace)
    action = node.resolve_topic_name("execute_instruction")
    if not _wait_for_server(node, args.server_timeout, stop):
        if stop.is_set():
            return EXIT_ENDED
        print(f"no policy node serves {action} (started and activated? same ROS_DOMAIN_ID?)", file=sys.stderr)
        return EXIT_NO_SERVER
    # wait_for_server only proves our requests reach the server; its responses reach us once
    # it has discovered our response readers too, which lags (a lost response would hang us).
    _spin_for(node, 0.5, stop)
    if stop.is_set():
        return EXIT_ENDED
    line = StatusLine(out)
    goal = ExecuteInstruction.Goal(
        instruction=args.instruction, max_duration=seconds_to_duration(args.duration), max_chunks=args.chunks
    )
    send = node.client.send_goal_async(
        goal, feedback_callback=lambda m: line.show(format_feedback(m.feedback, args.duration))
    )
    if not _spin_until(node, send, timeout=args.server_timeout):
        print(f"no response to the goal request from {action} within {args.server_timeout:.0f} s", file=sys.stderr)
        return EXIT_NO_SERVER
    handle = send.result()
    if not handle.accepted:
        print(f"goal rejected: {_rejection_reason(node, node.statuses_received)}", file=sys.stderr)
        return EXIT_REJECTED
    out.write(f"goal {bytes(handle.goal_id.uuid).hex()[:8]} accepted: '{args.instruction}' (Ctrl-C cancels)\n")
    result_future = handle.get_result_async()
    # A Ctrl-C while the goal request was in flight lands here too: the accepted goal is canceled.
    if not _wait_for_result(node, result_future, stop):
        line.close()
        print(f"the policy node serving {action} went away before the goal ended", file=sys.stderr)
        return EXIT_ENDED
    line.close()
    if not result_future.done():
        out.write("canceling...\n")
        handle.cancel_goal_async()
        _spin_until(node, result_future, timeout=CANCEL_WAIT_S)
        line.close()  # feedback may have come meanwhile
    if not result_future.done():
        print("no result from the policy node", file=sys.stderr)
        return EXIT_ENDED
    result = result_future.result().result
    out.write(format_result(result) + "\n")
    return EXIT_SUCCEEDED if EndReason(result.end_reason).succeeded else EXIT_ENDED


def _rejection_reason(node: InstructionClient, statuses_before: int) -> str:
    """The reason in the newest policy status once one arrived after the rejection and the next periodic one
    (every 0.2 s at least) could follow: an earlier one may still carry an older goal's reason."""
    deadline = time.monotonic() + 2.0
    settled: float | None = None
    while time.monotonic() < deadline:
        if settled is None and node.statuses_received > statuses_before:
            settled = time.monotonic() + 0.25
        if settled is not None and time.monotonic() >= settled and node.status.last_goal_rejection:
            return node.status.last_goal_rejection
        rclpy.spin_once(node, timeout_sec=0.05)
    return "(the policy node gave no reason)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send an instruction to the pi0 policy node and follow it.")
    parser.add_argument("instruction", help='what the robot should do, e.g. "fold the towel"')
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    parser.add_argument("--chunks", type=int, default=0, help="stop after this many chunks (0: no limit)")
    parser.add_argument("--namespace", default="", help="namespace of the policy node, e.g. /left_robot")
    parser.add_argument("--server-timeout", type=float, default=10.0, help="seconds to wait for the action server")
    args = parser.parse_args(argv)
    if args.duration < 0 or args.chunks < 0:
        parser.error("--duration and --chunks must not be negative")
    return args


def main(argv: list[str] | None = None) -> NoReturn:
    args = parse_args(rclpy.utilities.remove_ros_args(sys.argv)[1:] if argv is None else argv)
    # Ctrl-C only sets `stop`, checked between spins (stop_signals): rclpy's handler would shut the context
    # down before the cancel request is sent, and a KeyboardInterrupt raised inside an rclpy callback left
    # the action client's responses untaken for good, so the cancel and the result never arrived.
    stop = threading.Event()
    stop_on_first_signal(stop)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    try:
        code = run(args, stop)
    finally:
        rclpy.try_shutdown()
    exit_process(code)


if __name__ == "__main__":
    main()
