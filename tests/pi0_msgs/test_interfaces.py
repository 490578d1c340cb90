"""The generated pi0_msgs types exist and work over a real DDS graph."""

import threading

import pytest
from builtin_interfaces.msg import Duration
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import QoSProfile, ReliabilityPolicy

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus

pytestmark = pytest.mark.ros


def test_generated_types_have_the_documented_fields_and_constants():
    goal = ExecuteInstruction.Goal(instruction="fold the towel", max_duration=Duration(sec=3), max_chunks=5)
    assert (goal.instruction, goal.max_duration.sec, goal.max_chunks) == ("fold the towel", 3, 5)
    result = ExecuteInstruction.Result
    reasons = {
        result.END_REASON_DURATION_REACHED,
        result.END_REASON_CHUNK_LIMIT_REACHED,
        result.END_REASON_CANCELED,
        result.END_REASON_PREEMPTED,
        result.END_REASON_OBSERVATION_STALE,
        result.END_REASON_INFERENCE_FAILED,
        result.END_REASON_NODE_INACTIVE,
        result.END_REASON_NOT_READY,
        result.END_REASON_STREAMER_LOST,
        result.END_REASON_POLICY_SERVER_LOST,
    }
    assert len(reasons) == 10 and result.END_REASON_UNKNOWN not in reasons
    feedback = ExecuteInstruction.Feedback
    phases = {feedback.PHASE_WAITING_FOR_OBSERVATION, feedback.PHASE_RUNNING, feedback.PHASE_WAITING_FOR_STREAMER}
    assert len(phases) == 3
    assert len({PolicyStatus.LEVEL_OK, PolicyStatus.LEVEL_WARN, PolicyStatus.LEVEL_ERROR}) == 3
    assert len({StreamerStatus.MODE_IDLE, StreamerStatus.MODE_HOLDING, StreamerStatus.MODE_STREAMING}) == 3


def test_instruction_action_exchanges_goal_feedback_and_result(ros_graph):
    server_node = ros_graph.node("instruction_server")
    client_node = ros_graph.node("instruction_client")
    received_goals = []

    def execute(goal_handle):
        received_goals.append(goal_handle.request.instruction)
        for chunk in range(1, 4):
            goal_handle.publish_feedback(
                ExecuteInstruction.Feedback(
                    phase=ExecuteInstruction.Feedback.PHASE_RUNNING,
                    chunks_generated=chunk,
                    last_inference_latency_ms=12.5,
                )
            )
        goal_handle.succeed()
        return ExecuteInstruction.Result(
            end_reason=ExecuteInstruction.Result.END_REASON_CHUNK_LIMIT_REACHED,
            message="reached 3 chunks",
            chunks_generated=3,
            commands_sent=150,
        )

    server = ActionServer(
        server_node,
        ExecuteInstruction,
        "execute_instruction",
        execute_callback=execute,
        goal_callback=lambda goal: GoalResponse.ACCEPT,
        cancel_callback=lambda handle: CancelResponse.ACCEPT,
        callback_group=ReentrantCallbackGroup(),
    )
    client = ActionClient(client_node, ExecuteInstruction, "execute_instruction")
    assert client.wait_for_server(timeout_sec=10.0)

    feedback = []
    send_future = client.send_goal_async(
        ExecuteInstruction.Goal(instruction="stack the cups", max_chunks=3),
        feedback_callback=lambda msg: feedback.append(msg.feedback.chunks_generated),
    )
    goal_handle = ros_graph.wait_for(lambda: send_future.done() and send_future.result(), what="goal acceptance")
    assert goal_handle.accepted
    result_future = goal_handle.get_result_async()
    response = ros_graph.wait_for(lambda: result_future.done() and result_future.result(), what="result")

    assert received_goals == ["stack the cups"]
    assert response.result.end_reason == ExecuteInstruction.Result.END_REASON_CHUNK_LIMIT_REACHED
    assert (response.result.chunks_generated, response.result.commands_sent) == (3, 150)
    assert response.result.message == "reached 3 chunks"
    # Feedback travels on its own topic; all three were published before the result.
    ros_graph.wait_for(lambda: feedback == [1, 2, 3], timeout=5.0, what="three feedback messages")
    server.destroy()
    client.destroy()


def test_action_chunk_round_trips_through_publisher_and_subscriber(ros_graph):
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publisher = ros_graph.node("chunk_publisher").create_publisher(ActionChunk, "action_chunk", qos)
    received = []
    arrived = threading.Event()

    def on_chunk(msg):
        received.append(msg)
        arrived.set()

    ros_graph.node("chunk_subscriber").create_subscription(ActionChunk, "action_chunk", on_chunk, qos)
    ros_graph.wait_for(lambda: publisher.get_subscription_count() > 0, what="subscriber discovery")

    chunk = ActionChunk()
    chunk.header.stamp.sec, chunk.header.stamp.nanosec = 1700000000, 123456789
    chunk.header.frame_id = "aloha"
    chunk.goal_id = "0123456789abcdef0123456789abcdef"
    chunk.sequence = 7
    chunk.names = ["left_waist", "left_gripper"]
    chunk.step_period = Duration(sec=0, nanosec=20_000_000)
    chunk.horizon = 3
    chunk.actions = [0.1, 0.0, 0.2, 0.5, 0.3, 1.0]
    chunk.inference_latency_ms = 42.0
    chunk.frozen_actions = 1
    publisher.publish(chunk)

    assert arrived.wait(10.0), "chunk never arrived"
    got = received[0]
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1700000000, 123456789)
    assert got.goal_id == chunk.goal_id and got.sequence == 7 and got.names == chunk.names
    assert got.step_period.nanosec == 20_000_000 and got.horizon == 3
    assert list(got.actions) == [0.1, 0.0, 0.2, 0.5, 0.3, 1.0]
    assert got.inference_latency_ms == pytest.approx(42.0) and got.frozen_actions == 1
