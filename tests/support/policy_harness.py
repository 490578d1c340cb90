"""A pi0_policy node in the test's ROS graph with a peer that sends goals and watches chunks and status."""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from rclpy.action import ActionClient
from rclpy.parameter import Parameter

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.policy.node import PolicyNode
from pi0_ros.ros.conversions import action_service_qos, qos_profile
from support.fake_sensors import FakeSensors
from support.robots import robot_yaml


def make_policy_node(ros_graph, **params):
    # No command streamer runs in these tests unless one says so.
    overrides = [
        Parameter("robot_description", value=str(robot_yaml("aloha"))),
        Parameter("warmup_iterations", value=1),
        Parameter("torch_threads", value=1),
        Parameter("require_streamer", value=params.pop("require_streamer", False)),
    ]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ros_graph.add(PolicyNode(context=ros_graph.context, parameter_overrides=overrides))


class Harness:
    def __init__(self, ros_graph, policy, sensors=True):
        self.graph, self.policy = ros_graph, policy
        self.peer = ros_graph.node("policy_test_peer")
        self.description = load_robot_description(robot_yaml("aloha"))
        self.sensors = None
        if sensors:
            self.start_sensors()
        self.chunks, self.statuses = [], []
        self.peer.create_subscription(ActionChunk, "action_chunk", self.chunks.append, qos_profile("reliable", 50))
        self.peer.create_subscription(
            PolicyStatus, "policy_status", self.statuses.append, qos_profile("reliable", 1, transient_local=True)
        )
        self.client = ActionClient(self.peer, ExecuteInstruction, "execute_instruction", **action_service_qos())

    def start_sensors(self):
        self.sensors = FakeSensors(self.peer, self.description)

    def start_streamer_status(self):
        """Stands in for pi0_command_streamer: its status at 10 Hz."""
        publisher = self.peer.create_publisher(StreamerStatus, "streamer_status", qos_profile("reliable", 10))
        return self.peer.create_timer(0.1, lambda: publisher.publish(StreamerStatus()))

    def send(self, instruction="fold the towel", max_chunks=0, max_duration=0.0, feedback=None):
        assert self.client.wait_for_server(timeout_sec=10.0)
        goal = ExecuteInstruction.Goal(
            instruction=instruction,
            max_chunks=max_chunks,
            max_duration=Duration(sec=int(max_duration), nanosec=int((max_duration % 1) * 1e9)),
        )
        future = self.client.send_goal_async(goal, feedback_callback=feedback)
        return self.graph.wait_for(lambda: future.done() and future.result(), what="goal response")

    def result(self, handle, timeout=20.0):
        future = handle.get_result_async()
        return self.graph.wait_for(lambda: future.done() and future.result(), timeout=timeout, what="goal result")

    def wait_ready(self):
        self.graph.wait_for(
            lambda: self.policy._source is not None and self.policy._source.latest().ok,
            what="synchronized observations",
        )

    def last_status(self):
        return self.statuses[-1] if self.statuses else None
