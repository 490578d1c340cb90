"""The policy node with its model on a policy server (policy_server:=ws://...): pi0_serve over real websockets."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from action_msgs.msg import GoalStatus

from pi0_msgs.action import ExecuteInstruction
from pi0_ros.policy.node import PolicyNode
from pi0_ros.serve.server import ServerConfig, ServerThread
from support.robots import robot_yaml
from support.serve_process import ServeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]
Result = ExecuteInstruction.Result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, *args: str) -> ServeProcess:
    return ServeProcess(["--robot", str(robot_yaml("aloha")), "--port", str(port), *args])


@pytest.fixture(scope="module")
def server():
    process = start_server(free_port())
    yield process
    process.stop()


def remote_policy(active_policy, url: str, **params):
    # Timeouts generous enough for a loaded 2-core machine running the server, the node and the test.
    return active_policy(policy_server=url, policy_server_timeout_s=20.0, goal_start_timeout_s=60.0, **params)


def test_a_goal_runs_on_the_policy_server(active_policy, server):
    harness = remote_policy(active_policy, server.url)
    harness.wait_ready()
    handle = harness.send(max_chunks=3)
    assert handle.accepted
    response = harness.result(handle, timeout=120.0)
    assert response.result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, response.result.message
    assert len(harness.chunks) == 3
    for chunk in harness.chunks:
        assert chunk.horizon == 50 and len(chunk.names) == 14 and np.all(np.isfinite(chunk.actions))


def test_the_remote_path_loads_neither_torch_nor_pi0_model(server):
    # The robot PC's process: configure connects to the server and runs warm-up inferences through it.
    code = (
        "import json, sys, rclpy\n"
        "from rclpy.lifecycle import TransitionCallbackReturn\n"
        "from rclpy.parameter import Parameter\n"
        "from pi0_ros.policy.node import PolicyNode\n"
        "rclpy.init()\n"
        f"node = PolicyNode(parameter_overrides=[Parameter('robot_description', value={str(robot_yaml('aloha'))!r}),"
        f" Parameter('policy_server', value={server.url!r}), Parameter('require_streamer', value=False)])\n"
        "configured = node.trigger_configure() == TransitionCallbackReturn.SUCCESS\n"
        "print(json.dumps([configured, node._policy.unavailable_reason(),"
        " sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'pi0_model'})]))\n"
        "node._policy.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    configured, unavailable, ml = json.loads(done.stdout.strip().splitlines()[-1])
    assert configured and unavailable == "" and ml == [], (configured, unavailable, ml)


def test_an_unreachable_server_refuses_goals_with_the_reason(active_policy):
    harness = remote_policy(active_policy, f"ws://127.0.0.1:{free_port()}")
    harness.wait_ready()
    handle = harness.send()
    assert not handle.accepted
    status = harness.graph.wait_for(
        lambda: "unreachable" in harness.last_status().message and harness.last_status(), what="the reason"
    )
    assert "policy server ws://127.0.0.1:" in status.message and "ConnectError" in status.message


def test_a_wrong_api_key_refuses_goals_with_the_servers_answer(active_policy, server):
    secured = start_server(free_port(), "--api-key", "secret")
    try:
        harness = remote_policy(active_policy, secured.url, policy_server_api_key="wrong")
        harness.wait_ready()
        assert not harness.send().accepted
        harness.graph.wait_for(lambda: "401" in harness.last_status().last_goal_rejection, what="the 401 refusal")
        assert secured.alive()
    finally:
        secured.stop()


def test_a_server_lost_mid_goal_ends_the_goal_at_once_and_a_new_server_serves_the_next(active_policy):
    port = free_port()
    first = start_server(port)
    harness = remote_policy(active_policy, first.url)
    harness.wait_ready()
    handle = harness.send()  # no limit: runs until the server goes
    harness.graph.wait_for(lambda: len(harness.chunks) >= 2, timeout=120.0, what="chunks from the server")
    first.process.kill()
    killed = time.monotonic()
    harness.graph.wait_for(
        lambda: harness.last_status() is not None and not harness.last_status().goal_active,
        timeout=10.0,
        what="goal_active cleared",
    )
    cleared_after = time.monotonic() - killed
    response = harness.result(handle)
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.end_reason == Result.END_REASON_POLICY_SERVER_LOST, response.result.message
    assert "lost" in response.result.message
    # The streamer holds as soon as it hears goal_active false; a lost connection is noticed at once.
    assert cleared_after < 2.0, f"goal_active cleared {cleared_after:.2f} s after the server died"
    first.stop()

    second = start_server(port)  # same address: the node reconnects on its own
    try:
        harness.graph.wait_for(
            lambda: harness.policy._policy.unavailable_reason() == "", timeout=60.0, what="the node to reconnect"
        )
        again = harness.send(max_chunks=2)
        assert again.accepted
        result = harness.result(again, timeout=120.0)
        assert result.result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, result.result.message
    finally:
        second.stop()


class NaNPolicy:
    """A policy server backend that answers with NaN actions (a broken server or checkpoint)."""

    def __init__(self, metadata):
        self.metadata = metadata

    def infer(self, request, request_index):
        return {"actions": np.full((50, 14), np.nan), "policy_timing": {"infer_ms": 1.0}}


def test_unusable_responses_fail_the_goal_with_a_diagnostic_and_the_node_serves_on(active_policy, server):
    from pi0_client.websocket_client import WebsocketClient

    with WebsocketClient.connect(server.url) as probe:  # the real server's metadata, so the node connects
        metadata = probe.metadata
    with ServerThread(NaNPolicy(metadata), ServerConfig("127.0.0.1", 0)) as broken:
        harness = remote_policy(active_policy, broken.url)
        harness.wait_ready()
        # Warm-up met the NaN answer and dropped that session; the goal goes out once the node reconnected.
        harness.graph.wait_for(lambda: harness.policy._policy.unavailable_reason() == "", what="a new session")
        handle = harness.send()
        assert handle.accepted
        response = harness.result(handle, timeout=60.0)
        assert response.result.end_reason == Result.END_REASON_INFERENCE_FAILED
        assert "ResponseError" in response.result.message and "NaN or inf" in response.result.message
        assert not harness.chunks, "no chunk of a refused response reaches the streamer"
        assert isinstance(harness.policy, PolicyNode) and harness.policy._active
