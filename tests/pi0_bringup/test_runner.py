"""The runner brings up each robot's whole graph in simulation, as separate processes.

A real action client sends a goal; the streamer's rate is checked at the source,
the commands arriving on every controller topic against the limits; stopping the
runner leaves no process behind.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from rclpy.action import ActionClient
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from pi0_bringup.graph import NodeSpec, command_topics
from pi0_bringup.robots import load_robot
from pi0_bringup.run import GraphProcesses, run_until_stopped
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import StreamerStatus
from pi0_ros.streamer.controller_commands import controller_message_class
from pi0_ros.ros.conversions import qos_profile, seconds_to_duration
from support.robots import ROBOT_NAMES

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def positions(message):
    if isinstance(message, JointTrajectory):
        return list(message.points[0].positions)
    if isinstance(message, Float64MultiArray):
        return list(message.data)
    twist = message.twist if isinstance(message, TwistStamped) else message
    return [twist.linear.x, twist.angular.z]


def graph_processes(namespace):
    found = subprocess.run(["pgrep", "-f", f"__ns:={namespace}"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_runner_brings_up_the_graph_runs_a_goal_and_leaves_nothing_behind(robot, ros_graph):
    namespace = f"/t{uuid.uuid4().hex[:8]}"
    description = load_robot(robot)
    runner = subprocess.Popen(
        [sys.executable, "-m", "pi0_bringup.run", robot, "--sim", "--namespace", namespace, "--torch-threads", "1",
         "--sim-image-width", "96", "--sim-image-height", "72"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        peer = ros_graph.node("runner_test", namespace=namespace)
        received = {}
        lock = threading.Lock()
        topics = command_topics(description, namespace)
        for controller in description.controllers:
            def store(message, name=controller.name):
                with lock:
                    received.setdefault(name, []).append((time.monotonic(), positions(message)))
            peer.create_subscription(controller_message_class(controller), topics[controller.name], store,
                                     qos_profile("reliable", 50))
        rates = []
        peer.create_subscription(StreamerStatus, "streamer_status",
                                 lambda m: rates.append(m.command_rate_hz)
                                 if m.mode == StreamerStatus.MODE_STREAMING else None, qos_profile("reliable", 10))
        client = ActionClient(peer, ExecuteInstruction, "execute_instruction")
        assert client.wait_for_server(timeout_sec=60.0), "policy node did not come up"
        status_ready = time.monotonic() + 30.0
        while time.monotonic() < status_ready:  # the policy rejects goals until observations flow
            future = client.send_goal_async(ExecuteInstruction.Goal(instruction="tidy up",
                                                                     max_duration=seconds_to_duration(3.0)))
            handle = ros_graph.wait_for(lambda: future.done() and future.result(), timeout=10.0, what="response")
            if handle.accepted:
                break
            time.sleep(0.5)
        assert handle.accepted
        result_future = handle.get_result_async()
        result = ros_graph.wait_for(lambda: result_future.done() and result_future.result(), timeout=30.0,
                                    what="goal result").result
        assert result.end_reason == ExecuteInstruction.Result.END_REASON_DURATION_REACHED, result.message
        assert result.chunks_generated >= 3
        # The rate at the source: ticks the streamer published during the 3 s goal, and its own
        # tick-time measurement (the runtime benchmark measures jitter precisely).
        period = description.control_period
        assert 0.85 * 3.0 / period <= result.commands_sent <= 1.02 * 3.0 / period, result.commands_sent
        streaming = [r for r in rates if r > 0]
        assert streaming and abs(streaming[-1] * period - 1.0) < 0.05, streaming[-3:]

        limits = {n: description.joint(n) for n in description.joint_names}
        for group in description.joint_groups:
            samples = received.get(group.controller.name, [])
            # Command publishers keep only the newest message (depth 1, like the controllers' QoS
            # intent), so a busy Python receiver may miss some; at least half must arrive.
            assert len(samples) >= 0.5 * 3.0 / period, (group.controller.name, len(samples))
            values = np.array([v for _, v in samples])
            for column, joint in enumerate(group.joint_names):
                limit = limits[joint]
                assert np.all(values[:, column] >= limit.lower - 1e-9) and np.all(values[:, column] <= limit.upper + 1e-9)
                steps = np.abs(np.diff(values[:, column]))
                assert np.all(steps <= limit.max_velocity * period + 1e-9), f"{joint} jumped"
        if description.base is not None:
            base = np.array([v for _, v in received[description.base.controller.name]])
            assert np.all(np.abs(base[:, 0]) <= description.base.max_linear_velocity + 1e-9)
            assert np.all(np.abs(base[:, 1]) <= description.base.max_angular_velocity + 1e-9)
        client.destroy()
    finally:
        runner.send_signal(signal.SIGTERM if robot in ("ur5e", "franka") else signal.SIGINT)
        output, _ = runner.communicate(timeout=40)
        print(output)  # shown by pytest when the test fails
    assert runner.returncode == 0, output
    assert graph_processes(namespace) == [], "nodes left running after the runner stopped"
    assert "Traceback" not in output, output  # the message shows the whole runner output


STUB_NODE = """
import signal, sys, time
from pathlib import Path
name = next(a.split(":=")[1] for a in sys.argv if a.startswith("__node:="))
signal.signal(signal.SIGINT, lambda *_: sys.exit(3 if name == "unclean" else 0))
Path(__file__).with_name(name + ".ready").touch()
while True:
    time.sleep(0.05)
"""


def test_the_runner_fails_when_a_node_does_not_stop_cleanly(tmp_path):
    # Its exit code is what a person or CI sees of a node that crashed on Ctrl-C.
    (tmp_path / "stub_node.py").write_text(STUB_NODE)
    specs = [NodeSpec("stub", "stub", "stub_node", name, {}) for name in ("clean", "unclean")]
    stop = threading.Event()
    with GraphProcesses(specs, env={**os.environ, "PYTHONPATH": str(tmp_path)}) as graph:
        deadline = time.monotonic() + 30.0
        while not all((tmp_path / f"{n}.ready").exists() for n in ("clean", "unclean")):
            assert time.monotonic() < deadline and graph.exited() is None, "the stub nodes did not start"
            time.sleep(0.05)
        stop.set()
        assert run_until_stopped(graph, stop) == 1
        assert {name: p.returncode for name, p in graph.processes.items()} == {"clean": 0, "unclean": 3}
