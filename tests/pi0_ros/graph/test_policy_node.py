"""The policy lifecycle node with the tiny model on a real DDS graph, driven by a real action client."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from lifecycle_msgs.msg import State
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.lifecycle import TransitionCallbackReturn

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.policy_node import PolicyNode
from pi0_ros.robot_description import load_robot_description
from pi0_ros.ros_conversions import qos_profile, stamp_to_seconds
from support.fake_sensors import FakeSensors
from support.robots import robot_yaml

pytestmark = pytest.mark.ros
Result = ExecuteInstruction.Result


def make_policy_node(ros_graph, **params):
    # No command streamer runs in these tests unless one says so.
    overrides = [Parameter("robot_description", value=str(robot_yaml("aloha"))),
                 Parameter("warmup_iterations", value=1), Parameter("torch_threads", value=1),
                 Parameter("require_streamer", value=params.pop("require_streamer", False))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ros_graph.add(PolicyNode(context=ros_graph.context, parameter_overrides=overrides))


class Harness:
    def __init__(self, ros_graph, policy):
        self.graph, self.policy = ros_graph, policy
        self.peer = ros_graph.node("policy_test_peer")
        self.description = load_robot_description(robot_yaml("aloha"))
        self.sensors = FakeSensors(self.peer, self.description)
        self.chunks, self.statuses = [], []
        self.peer.create_subscription(ActionChunk, "action_chunk", self.chunks.append, qos_profile("reliable", 50))
        self.peer.create_subscription(PolicyStatus, "policy_status", self.statuses.append,
                                      qos_profile("reliable", 1, transient_local=True))
        self.client = ActionClient(self.peer, ExecuteInstruction, "execute_instruction")

    def send(self, instruction="fold the towel", max_chunks=0, max_duration=0.0, feedback=None):
        assert self.client.wait_for_server(timeout_sec=10.0)
        goal = ExecuteInstruction.Goal(instruction=instruction, max_chunks=max_chunks,
                                       max_duration=Duration(sec=int(max_duration),
                                                             nanosec=int((max_duration % 1) * 1e9)))
        future = self.client.send_goal_async(goal, feedback_callback=feedback)
        return self.graph.wait_for(lambda: future.done() and future.result(), what="goal response")

    def result(self, handle, timeout=20.0):
        future = handle.get_result_async()
        return self.graph.wait_for(lambda: future.done() and future.result(), timeout=timeout, what="goal result")

    def wait_ready(self):
        self.graph.wait_for(lambda: self.policy._source is not None and self.policy._source.latest().ok,
                            what="synchronized observations")

    def last_status(self):
        return self.statuses[-1] if self.statuses else None


@pytest.fixture
def harness(ros_graph):
    policy = make_policy_node(ros_graph)
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness = Harness(ros_graph, policy)
    harness.wait_ready()
    yield harness
    harness.client.destroy()


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
    harness.graph.wait_for(lambda: harness.last_status() and not harness.last_status().goal_active,
                           timeout=1.0, what="status without an active goal")
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


@pytest.mark.parametrize("instruction, reason", [
    ("   ", "instruction is empty"),
    ("x" * 501, "501 characters"),
])
def test_bad_instructions_are_rejected_with_a_reason(harness, instruction, reason):
    handle = harness.send(instruction)
    assert not handle.accepted
    status = harness.graph.wait_for(lambda: harness.last_status() and harness.last_status().last_goal_rejection
                                    and harness.last_status(), what="rejection reason")
    assert reason in status.last_goal_rejection


def test_stale_observations_abort_the_goal(harness):
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    harness.sensors.running.clear()
    result = harness.result(handle).result
    assert result.end_reason == Result.END_REASON_OBSERVATION_STALE
    assert "no new synchronized observation" in result.message
    status = harness.graph.wait_for(lambda: harness.last_status().level == PolicyStatus.LEVEL_WARN
                                    and harness.last_status(), what="a status saying why the goal ended")
    assert status.message.startswith("last goal ended (observation_stale): no new synchronized observation")
    rejected = harness.send()
    assert not rejected.accepted, "no goal without fresh observations"


def test_deactivation_ends_the_goal_and_inactive_node_rejects_goals(harness):
    handle = harness.send()
    harness.graph.wait_for(lambda: harness.chunks, what="first chunk")
    assert harness.policy.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert harness.result(handle).result.end_reason == Result.END_REASON_NODE_INACTIVE
    assert not harness.send().accepted
    status = harness.graph.wait_for(lambda: harness.last_status().last_goal_rejection and harness.last_status(),
                                    what="rejection")
    assert "inactive" in status.last_goal_rejection and status.lifecycle_state == "inactive"


def test_configure_with_a_missing_checkpoint_fails_cleanly(ros_graph, tmp_path):
    policy = make_policy_node(ros_graph, checkpoint=str(tmp_path / "nope"))
    assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert policy._state_machine.current_state[1] == "unconfigured"
    assert "configure failed: CheckpointError: checkpoint" in policy._health[1] and "nope does not exist" in policy._health[1]


def test_invalid_parameters_fail_configure_with_every_problem_named(ros_graph):
    policy = make_policy_node(ros_graph, dtype="float8", sync_slop_s=5.0)
    assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
    message = policy._health[1]
    assert "dtype" in message and "sync_slop_s" in message


def run_cli(*args, timeout=60.0):
    return subprocess.run([sys.executable, "-m", "pi0_ros.send_instruction", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_runs_a_goal_and_prints_the_result(harness):
    done = run_cli("stack the cups", "--chunks", "2")
    assert done.returncode == 0, done.stderr
    assert "accepted: 'stack the cups'" in done.stdout
    assert "chunk limit reached: generated the requested 2 chunks" in done.stdout
    assert "inference latency mean" in done.stdout


def test_cli_explains_rejections(harness):
    done = run_cli("   ")
    assert done.returncode == 2 and "goal rejected: the instruction is empty" in done.stderr
    # The latched status still carries that reason when the next CLI starts: it must not be shown again.
    done = run_cli("x" * 600)
    assert done.returncode == 2 and "goal rejected: the instruction has 600 characters" in done.stderr


def test_cli_reports_a_missing_policy_node(ros_graph):
    done = run_cli("fold", "--namespace", "/nobody_here", "--server-timeout", "0.5")
    assert done.returncode == 3 and "no policy node serves /nobody_here/execute_instruction" in done.stderr


def test_cli_cancels_on_ctrl_c(harness):
    process = subprocess.Popen([sys.executable, "-m", "pi0_ros.send_instruction", "wipe the table"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        harness.graph.wait_for(lambda: harness.chunks, timeout=20.0, what="chunks of the CLI's goal")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr
    assert "canceling..." in stdout and "canceled: canceled by the client" in stdout


def test_goals_wait_for_a_connected_command_streamer(ros_graph):
    policy = make_policy_node(ros_graph, require_streamer=True)
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness = Harness(ros_graph, policy)
    harness.wait_ready()
    rejected = harness.send()
    assert not rejected.accepted
    status = harness.graph.wait_for(lambda: harness.last_status() and harness.last_status().last_goal_rejection
                                    and harness.last_status(), what="rejection reason")
    assert "no command streamer is connected" in status.last_goal_rejection
    streamer_status = harness.peer.create_publisher(StreamerStatus, "streamer_status", qos_profile("reliable", 10))
    harness.peer.create_timer(0.1, lambda: streamer_status.publish(StreamerStatus()))
    harness.graph.wait_for(policy._streamer_connected, what="the policy hearing the streamer")
    accepted = harness.send(max_chunks=1)
    assert accepted.accepted
    assert harness.result(accepted).result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED
    harness.client.destroy()
