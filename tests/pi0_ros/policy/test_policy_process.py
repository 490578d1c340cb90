"""The policy node in its own process, as launched: Ctrl-C and a lifecycle shutdown end it at once, cleanly,
with the running goal ended first."""

import signal
import subprocess
import threading
import time

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.action import ActionClient

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.ros.conversions import action_service_qos, qos_profile
from support.fake_sensors import FakeSensors
from support.node_process import EXIT_LIMIT_S, assert_clean_prompt_exit, start_node, stop_like_launch
from support.robots import robot_yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def start_policy() -> subprocess.Popen:
    return start_node(
        "pi0_ros.policy.node",
        {
            "robot_description": robot_yaml("aloha"),
            "autostart": True,
            "require_streamer": False,
            "warmup_iterations": 1,
            "torch_threads": 1,
        },
    )


class Peer:
    """The robot's sensors and a recorder of the policy's statuses and chunks, with receive times."""

    def __init__(self, ros_graph, name):
        self.graph = ros_graph
        self.node = ros_graph.node(name)
        FakeSensors(self.node, load_robot_description(robot_yaml("aloha")))
        self.lock = threading.Lock()
        self.statuses: list[tuple[float, PolicyStatus]] = []
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(
            PolicyStatus, "policy_status", self._on_status, qos_profile("reliable", 1, transient_local=True)
        )
        self.node.create_subscription(ActionChunk, "action_chunk", self.chunks.append, qos_profile("reliable", 10))

    def _on_status(self, message):
        with self.lock:
            self.statuses.append((time.monotonic(), message))

    def statuses_since(self, start):
        with self.lock:
            return [m for t, m in self.statuses if t >= start]

    def wait_active(self, process, since):
        self.graph.wait_for(
            lambda: (
                any(s.lifecycle_state == "active" for s in self.statuses_since(since)) or process.poll() is not None
            ),
            timeout=90.0,
            what="the policy process active",
        )
        assert process.poll() is None, process.communicate()[0]


def send_goal(ros_graph, client, patience: float = 60.0):
    """The goal's response. A request sent before this client has discovered the new server's services is
    lost (they are not durable), so it is sent again, as a person would, until a response comes."""
    assert client.wait_for_server(timeout_sec=20.0)
    deadline = time.monotonic() + patience
    while True:
        future = client.send_goal_async(ExecuteInstruction.Goal(instruction="wipe the table"))
        try:
            return ros_graph.wait_for(lambda: future.done() and future.result(), timeout=5.0, what="goal response")
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_ctrl_c_under_launch_ends_the_goal_then_the_process_at_once(ros_graph):
    # Two signals in quick succession, as a node under `ros2 launch` may get them: the second used to kill
    # the policy in the middle of a cleanup that took over a second (exit -2, in 19 of 19 runs).
    peer = Peer(ros_graph, "policy_process_peer")
    for first in (signal.SIGINT, signal.SIGTERM):
        started = time.monotonic()
        policy = start_policy()
        # A client of its own per process: the killed server's endpoints linger in DDS for a while.
        client = ActionClient(peer.node, ExecuteInstruction, "execute_instruction", **action_service_qos())
        try:
            peer.wait_active(policy, started)
            handle = send_goal(ros_graph, client)
            assert handle.accepted, peer.statuses_since(started)[-1:]
            goal_id = bytes(handle.goal_id.uuid).hex()
            ros_graph.wait_for(
                lambda: any(c.goal_id == goal_id for c in peer.chunks), timeout=30.0, what="chunks of the goal"
            )
            signalled = time.monotonic()
            assert_clean_prompt_exit(stop_like_launch(policy, first))
        finally:  # a failed iteration must not leave a policy node behind for the tests after it
            if policy.poll() is None:
                policy.kill()
                policy.communicate()
            client.destroy()
        # Its last word: no goal active, so the streamer holds the robot.
        last = ros_graph.wait_for(
            lambda: peer.statuses_since(signalled) and peer.statuses_since(signalled)[-1],
            what="a status after the signal",
        )
        assert not last.goal_active, last


def test_a_lifecycle_shutdown_ends_the_process(ros_graph):
    peer = Peer(ros_graph, "lifecycle_peer")
    started = time.monotonic()
    policy = start_policy()
    try:
        peer.wait_active(policy, started)
        change_state = peer.node.create_client(ChangeState, "/pi0_policy/change_state")
        assert change_state.wait_for_service(timeout_sec=20.0)
        future = change_state.call_async(
            ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN))
        )
        response = ros_graph.wait_for(
            lambda: future.done() and future.result(), timeout=20.0, what="the shutdown transition's response"
        )
        answered = time.monotonic()
        assert response.success
        output, _ = policy.communicate(timeout=20.0)
    finally:
        if policy.poll() is None:
            policy.kill()
            policy.communicate()
    assert policy.returncode == 0 and "Traceback" not in output, output
    assert time.monotonic() - answered < EXIT_LIMIT_S
    ros_graph.wait_for(
        lambda: peer.statuses_since(started)[-1].lifecycle_state == "finalized", what="the finalized status"
    )
