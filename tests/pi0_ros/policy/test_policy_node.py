"""The policy lifecycle node with the tiny model on a real DDS graph, driven by a real action client."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from pi0_bringup.supervisor import spin_until
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import PolicyStatus, StreamerStatus
from pi0_ros.policy.observation_sync import SyncStatus
from pi0_ros.ros.conversions import action_service_qos, qos_profile, stamp_to_seconds
from support.policy_harness import make_policy_node

pytestmark = pytest.mark.ros
Result = ExecuteInstruction.Result
Feedback = ExecuteInstruction.Feedback


@pytest.fixture
def harness(active_policy):
    # A goal waiting for observations (test_stale_observations_abort_the_goal) must not give up on a loaded machine.
    harness = active_policy(goal_start_timeout_s=60.0)
    harness.wait_ready()
    return harness


def test_goal_runs_to_its_chunk_limit_with_feedback_and_stamped_chunks(harness):
    feedback = []
    handle = harness.send(max_chunks=3, feedback=lambda m: feedback.append(m.feedback))
    assert handle.accepted
    response = harness.result(handle)
    result = response.result
    assert result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, result.message
    assert result.chunks_generated == 3 and result.inference_latency_max_ms > 0
    chunks = harness.graph.wait_for(lambda: len(harness.chunks) >= 3 and harness.chunks, what="3 chunks")
    goal_id = bytes(handle.goal_id.uuid).hex()
    assert {c.goal_id for c in chunks} == {goal_id}
    assert [c.sequence for c in chunks] == sorted(c.sequence for c in chunks)
    for chunk in chunks:
        assert chunk.horizon == 50 and list(chunk.names) == list(harness.description.policy.actions)
        assert len(chunk.actions) == 50 * 14 and np.all(np.isfinite(chunk.actions))
        assert chunk.step_period.nanosec == 20_000_000
        # Stamped with the observation time: within one camera period of a published frame, and before
        # the chunk was ready by its latency.
        assert 0 < chunk.inference_latency_ms < 10_000
    stamps = [stamp_to_seconds(c.header.stamp) for c in chunks]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3, "each chunk from a newer observation"
    now = harness.peer.get_clock().now().nanoseconds * 1e-9
    assert all(now - 20.0 < s < now for s in stamps)
    assert feedback == [] or all(f.elapsed.sec >= 0 for f in feedback)


def test_duration_limit_succeeds_and_reports_feedback(harness):
    feedback = []
    handle = harness.send(max_duration=1.2, feedback=lambda m: feedback.append(m.feedback))
    result = harness.result(handle).result
    assert result.end_reason == Result.END_REASON_DURATION_REACHED
    assert 1.2 <= result.elapsed.sec + result.elapsed.nanosec * 1e-9 < 3.0
    assert len(feedback) >= 5, "feedback at ~10 Hz"
    running = [f for f in feedback if f.phase == ExecuteInstruction.Feedback.PHASE_RUNNING]
    assert running and running[-1].chunks_generated >= 1 and running[-1].last_inference_latency_ms > 0
    assert all(0 <= f.observation_age_ms < 500 for f in running)


def test_cancel_ends_the_goal_and_clears_goal_active_at_once(harness):
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    cancel = handle.cancel_goal_async()
    harness.graph.wait_for(lambda: cancel.done(), what="cancel response")
    assert len(cancel.result().goals_canceling) == 1
    harness.graph.wait_for(
        lambda: harness.last_status() and not harness.last_status().goal_active,
        timeout=1.0,
        what="status without an active goal",
    )
    result = harness.result(handle).result
    assert result.end_reason == Result.END_REASON_CANCELED


def test_new_goal_preempts_the_running_one(harness):
    first = harness.send("pick up the cup")
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    second = harness.send("put it down", max_chunks=2)
    assert second.accepted
    first_result = harness.result(first).result
    assert first_result.end_reason == Result.END_REASON_PREEMPTED and "put it down" in first_result.message
    assert harness.result(second).result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED
    second_id = bytes(second.goal_id.uuid).hex()
    late = [c for c in harness.chunks if c.goal_id != second_id and c.sequence > harness.chunks[-1].sequence]
    assert late == []


@pytest.mark.parametrize(
    "instruction, reason",
    [
        ("   ", "instruction is empty"),
        ("x" * 501, "501 characters"),
        # Control characters arrive intact (except NUL, see test_goal_session) and used to run as typed.
        ("fold\x1b[2J the towel", "control character '\\x1b' (U+001B) at index 4"),
        ("fold the towel\x07", "control character '\\x07' (U+0007) at index 14"),
        ("\x7ffold", "control character '\\x7f' (U+007F) at index 0"),
        ("fold\x9b2J", "control character '\\x9b' (U+009B) at index 4"),
    ],
)
def test_bad_instructions_are_rejected_with_a_reason(harness, instruction, reason):
    handle = harness.send(instruction)
    assert not handle.accepted
    status = harness.graph.wait_for(
        lambda: harness.last_status() and harness.last_status().last_goal_rejection and harness.last_status(),
        what="rejection reason",
    )
    assert reason in status.last_goal_rejection


def test_tabs_and_line_breaks_in_an_instruction_become_single_spaces(harness):
    handle = harness.send("  fold\tthe\r\n  towel\n")
    assert handle.accepted
    status = harness.graph.wait_for(
        lambda: harness.last_status() and harness.last_status().goal_active and harness.last_status(),
        what="status of the running goal",
    )
    assert status.instruction == "fold the towel"
    cancel = handle.cancel_goal_async()
    harness.graph.wait_for(cancel.done, what="cancel response")
    assert harness.result(handle).result.end_reason == Result.END_REASON_CANCELED


def test_stale_observations_abort_the_goal(harness):
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    harness.sensors.running.clear()
    result = harness.result(handle).result
    assert result.end_reason == Result.END_REASON_OBSERVATION_STALE
    assert "no new synchronized observation" in result.message
    status = harness.graph.wait_for(
        lambda: harness.last_status().level == PolicyStatus.LEVEL_WARN and harness.last_status(),
        what="a status saying why the goal ended",
    )
    assert status.message.startswith("last goal ended (observation_stale): no new synchronized observation")
    # A goal sent meanwhile waits for the streams (a camera driver restarting) and runs once they are back.
    harness.graph.wait_for(lambda: harness.policy._source.latest().status is SyncStatus.STALE, what="stale streams")
    phases = []
    waiting = harness.send(max_chunks=1, feedback=lambda m: phases.append(m.feedback.phase))
    assert waiting.accepted
    harness.graph.wait_for(lambda: Feedback.PHASE_WAITING_FOR_OBSERVATION in phases, what="feedback while waiting")
    waiting_id = bytes(waiting.goal_id.uuid).hex()
    assert not any(c.goal_id == waiting_id for c in harness.chunks) and not harness.last_status().goal_active
    harness.sensors.running.set()
    assert harness.result(waiting).result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED


def test_deactivation_ends_the_goal_and_inactive_node_rejects_goals(harness):
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    assert harness.policy.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert harness.result(handle).result.end_reason == Result.END_REASON_NODE_INACTIVE
    assert not harness.send().accepted
    status = harness.graph.wait_for(
        lambda: harness.last_status().last_goal_rejection and harness.last_status(), what="rejection"
    )
    assert "inactive" in status.last_goal_rejection and status.lifecycle_state == "inactive"


def test_configure_with_a_missing_checkpoint_fails_cleanly(ros_graph, tmp_path):
    policy = make_policy_node(ros_graph, checkpoint=str(tmp_path / "nope"))
    assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert policy._state_machine.current_state[1] == "unconfigured"
    assert (
        "configure failed: CheckpointError: checkpoint" in policy._health[1]
        and "nope does not exist" in policy._health[1]
    )


def test_invalid_parameters_fail_configure_with_every_problem_named(ros_graph):
    policy = make_policy_node(ros_graph, dtype="float8", sync_slop_s=5.0)
    assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
    message = policy._health[1]
    assert "dtype" in message and "sync_slop_s" in message


def run_cli(*args, timeout=60.0):
    return subprocess.run(
        [sys.executable, "-m", "pi0_ros.tools.send_instruction", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_runs_a_goal_and_prints_the_result(harness):
    done = run_cli("stack the cups", "--chunks", "2")
    assert done.returncode == 0, done.stderr
    assert "accepted: 'stack the cups'" in done.stdout
    assert "chunk limit reached: generated the requested 2 chunks" in done.stdout
    assert "inference latency mean" in done.stdout


def test_cli_explains_rejections(harness):
    done = run_cli("x" * 600)
    assert done.returncode == 2 and "goal rejected: the instruction has 600 characters" in done.stderr
    # The latched status still carries that reason when the next CLI starts: it must not be shown again.
    done = run_cli("y" * 700)
    assert done.returncode == 2 and "goal rejected: the instruction has 700 characters" in done.stderr
    done = run_cli("   ")  # refused by the CLI itself, with the policy node's words
    assert done.returncode == 2 and "goal rejected: the instruction is empty" in done.stderr
    done = run_cli("fold\x1b[2J the towel")  # a NUL cannot even reach argv; an escape sequence can
    assert done.returncode == 2 and "control character '\\x1b' (U+001B) at index 4" in done.stderr, done.stderr


def test_cli_reports_a_missing_policy_node(ros_graph):
    done = run_cli("fold", "--namespace", "/nobody_here", "--server-timeout", "0.5")
    assert done.returncode == 3 and "no policy node serves /nobody_here/execute_instruction" in done.stderr


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_cli_cancels_on_ctrl_c(harness, first):
    # The first signal cancels the goal (SIGTERM too: a supervisor's stop must not leave the robot moving);
    # a second in quick succession (Ctrl-C pressed again) changes nothing.
    process = subprocess.Popen(
        [sys.executable, "-m", "pi0_ros.tools.send_instruction", "wipe the table"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        harness.graph.wait_for(lambda: harness.chunks, timeout=20.0, what="chunks of the CLI's goal")
        signalled = time.monotonic()
        process.send_signal(first)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr
    assert "canceling..." in stdout and "canceled: canceled by the client" in stdout
    assert "Traceback" not in stderr, stderr
    assert time.monotonic() - signalled < 5.0, "the CLI did not exit promptly"


def test_a_goal_sent_right_after_activation_waits_for_the_streamer_and_observations(active_policy):
    # No camera, joint state or streamer yet.
    harness = active_policy(sensors=False, require_streamer=True, goal_start_timeout_s=120.0)
    feedback = []
    handle = harness.send(max_chunks=2, feedback=lambda m: feedback.append(m.feedback))
    assert handle.accepted
    harness.graph.wait_for(
        lambda: feedback and feedback[-1].phase == Feedback.PHASE_WAITING_FOR_STREAMER,
        what="feedback: waiting for the streamer",
    )
    assert not harness.chunks and not any(s.goal_active for s in harness.statuses), "nothing runs before the streamer"
    harness.start_streamer_status()
    harness.graph.wait_for(
        lambda: feedback[-1].phase == Feedback.PHASE_WAITING_FOR_OBSERVATION, what="feedback: waiting for observations"
    )
    assert not harness.chunks and not any(s.goal_active for s in harness.statuses)
    harness.start_sensors()
    response = harness.result(handle, timeout=120.0)
    assert response.result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, response.result.message
    assert {c.goal_id for c in harness.chunks} == {bytes(handle.goal_id.uuid).hex()}


def test_a_goal_that_cannot_start_in_time_aborts_with_the_reason(active_policy):
    harness = active_policy(require_streamer=True, goal_start_timeout_s=1.0)
    harness.wait_ready()  # observations flow; no command streamer ever comes
    handle = harness.send()
    assert handle.accepted
    response = harness.result(handle)
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.end_reason == Result.END_REASON_NOT_READY
    assert response.result.message.startswith(
        "not ready within goal_start_timeout_s (1 s): no command streamer is connected"
    ), response.result.message
    assert response.result.chunks_generated == 0 and not harness.chunks
    status = harness.graph.wait_for(
        lambda: harness.last_status().level == PolicyStatus.LEVEL_WARN and harness.last_status(),
        what="a status saying why the goal ended",
    )
    assert status.message.startswith("last goal ended (not_ready): not ready within goal_start_timeout_s")
    assert not any(s.goal_active for s in harness.statuses)


def test_a_goal_waits_while_the_streamer_says_it_is_not_ready(active_policy):
    harness = active_policy(require_streamer=True, goal_start_timeout_s=60.0)
    reason = ["it hears no policy_status (DDS discovery may still be under way)"]
    publisher = harness.peer.create_publisher(StreamerStatus, "streamer_status", qos_profile("reliable", 10))
    harness.peer.create_timer(0.1, lambda: publisher.publish(StreamerStatus(not_ready_reason=reason[0])))
    harness.wait_ready()
    feedback = []
    handle = harness.send(max_chunks=2, feedback=lambda m: feedback.append(m.feedback))
    harness.graph.wait_for(
        lambda: feedback and feedback[-1].phase == Feedback.PHASE_WAITING_FOR_STREAMER,
        what="feedback: waiting for the streamer",
    )
    time.sleep(0.5)
    assert not harness.chunks and not any(s.goal_active for s in harness.statuses), "nothing runs before it is ready"
    reason[0] = ""
    response = harness.result(handle, timeout=60.0)
    assert response.result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, response.result.message


def test_a_goal_whose_streamer_is_lost_aborts_and_clears_goal_active(active_policy):
    harness = active_policy(require_streamer=True, goal_start_timeout_s=60.0)
    streamer = harness.start_streamer_status()
    harness.wait_ready()
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="chunks")
    streamer.cancel()  # the streamer process dies
    response = harness.result(handle)
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.end_reason == Result.END_REASON_STREAMER_LOST
    assert "command streamer was lost" in response.result.message
    harness.graph.wait_for(lambda: not harness.last_status().goal_active, what="goal_active cleared")


class BurstClients:
    """Action clients on a node that the test thread spins itself: rclpy's ActionClient files a request's
    future only after sending the request, so sending from one thread while another spins can drop a
    fast response (the test would then blame the server)."""

    def __init__(self, graph, count):
        self.node = rclpy.create_node("policy_burst_client", context=graph.context)
        self.executor = SingleThreadedExecutor(context=graph.context)
        self.executor.add_node(self.node)
        self.clients = [
            ActionClient(self.node, ExecuteInstruction, "execute_instruction", **action_service_qos())
            for _ in range(count)
        ]

    def spin_until(self, predicate, timeout, what):
        spin_until(self.executor, predicate, timeout, what)

    def wait_all(self, futures, what, timeout=120.0):
        """Spins until every future is done; the failure says how many were."""
        try:
            self.spin_until(lambda: all(f.done() for f in futures), timeout, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {sum(f.done() for f in futures)} of {len(futures)} done") from None
        return [f.result() for f in futures]

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=max(0.0, deadline - time.monotonic()))

    def connect(self):
        """Waits until every client's goal gets a response (DDS discovery done both ways); returns the handles."""
        handles = []
        for client in self.clients:
            assert client.wait_for_server(timeout_sec=30.0)
            future = client.send_goal_async(ExecuteInstruction.Goal(instruction="warm up", max_chunks=2))
            self.spin_until(future.done, 60.0, "the warm-up goal's response")
            handles.append(future.result())
        return handles

    def close(self):
        for client in self.clients:
            client.destroy()
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def camera_frames(harness):
    """Frames received by the policy node per camera."""
    cameras = {c.name for c in harness.description.policy_cameras}
    return {h.name: h.received for h in harness.policy._source.health() if h.name in cameras}


def check_cameras_kept_flowing(harness, burst, frames_before, published_before):
    """Most frames published during the burst reached the policy node: its executor kept serving them."""
    burst.spin_until(lambda: harness.sensors.frames >= published_before + 15, 60.0, "15 more camera frames")
    published = harness.sensors.frames - published_before
    received = {name: count - frames_before[name] for name, count in camera_frames(harness).items()}
    assert all(count >= 0.5 * published for count in received.values()), (published, received)


def test_a_burst_of_goals_gets_every_response_cancel_and_result(harness):
    burst = BurstClients(harness.graph, 1)
    try:
        handles = burst.connect()
        frames_before, published_before = camera_frames(harness), harness.sensors.frames
        client = burst.clients[0]
        sends = [
            client.send_goal_async(ExecuteInstruction.Goal(instruction=f"goal {i}", max_chunks=2)) for i in range(50)
        ]
        handles += burst.wait_all(sends, "a response to every goal")
        assert all(h.accepted for h in handles)
        cancels = [h.cancel_goal_async() for h in handles]
        responses = burst.wait_all([h.get_result_async() for h in handles], "every result")
        burst.wait_all(cancels, "a response to every cancel")
        reasons = [r.result.end_reason for r in responses]
        assert set(reasons) <= {
            Result.END_REASON_PREEMPTED,
            Result.END_REASON_CHUNK_LIMIT_REACHED,
            Result.END_REASON_CANCELED,
        }, [r.result.message for r in responses]
        assert reasons.count(Result.END_REASON_PREEMPTED) >= 25
        assert all(
            "preempted by goal" in r.result.message
            for r in responses
            if r.result.end_reason == Result.END_REASON_PREEMPTED
        )
        check_cameras_kept_flowing(harness, burst, frames_before, published_before)
    finally:
        burst.close()


def test_goals_at_20_hz_from_several_clients_all_get_their_results(harness):
    burst = BurstClients(harness.graph, 3)
    try:
        handles = burst.connect()
        frames_before, published_before = camera_frames(harness), harness.sensors.frames
        sends = []
        for i in range(50):
            client = burst.clients[i % 3]
            sends.append(client.send_goal_async(ExecuteInstruction.Goal(instruction=f"goal {i}", max_chunks=2)))
            burst.spin_for(0.05)
        handles += burst.wait_all(sends, "a response to every goal")
        assert all(h.accepted for h in handles)
        # Asked for at once, as a client following many goals does: a burst of result requests.
        responses = burst.wait_all([h.get_result_async() for h in handles], "every result")
        reasons = [r.result.end_reason for r in responses]
        assert set(reasons) <= {Result.END_REASON_PREEMPTED, Result.END_REASON_CHUNK_LIMIT_REACHED}, [
            r.result.message for r in responses
        ]
        assert reasons[-1] == Result.END_REASON_CHUNK_LIMIT_REACHED, "the last goal runs to its limit"
        assert responses[-1].status == GoalStatus.STATUS_SUCCEEDED
        check_cameras_kept_flowing(harness, burst, frames_before, published_before)
    finally:
        burst.close()
