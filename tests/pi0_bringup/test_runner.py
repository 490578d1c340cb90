"""The runner brings up each robot's whole graph in simulation, as separate processes.

A graph client (pi0_bringup.graph_client, as the demo and the benchmark use) sends a goal;
the streamer's rate is checked at the source, the commands arriving on every controller
topic against the limits; stopping the runner leaves no process behind.
"""

import os
import signal
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest

from pi0_bringup.graph import NodeSpec
from pi0_bringup.graph_client import GraphClient
from pi0_bringup.robots import load_robot
from pi0_bringup.run import run_until_stopped
from pi0_bringup.supervisor import GraphProcesses, wait_until
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import StreamerStatus
from support.robots import ROBOT_NAMES

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def graph_processes(namespace):
    found = subprocess.run(["pgrep", "-f", f"__ns:={namespace}"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_runner_brings_up_the_graph_runs_a_goal_and_leaves_nothing_behind(robot, ros_graph):
    namespace = f"/t{uuid.uuid4().hex[:8]}"
    description = load_robot(robot)
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi0_bringup.run",
            robot,
            "--sim",
            "--namespace",
            namespace,
            "--torch-threads",
            "1",
            "--sim-image-width",
            "96",
            "--sim-image-height",
            "72",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = GraphClient(description, namespace, context=ros_graph.context, name="runner_test")
    try:
        client.wait_until_ready(120.0, observations=True, streamer=True)
        result = client.result(client.send_goal("tidy up", max_duration=3.0), timeout=30.0)
        assert result.end_reason == ExecuteInstruction.Result.END_REASON_DURATION_REACHED, result.message
        assert result.chunks_generated >= 3
        # The rate at the source: ticks the streamer published during the 3 s goal, and its own
        # tick-time measurement (the runtime benchmark measures jitter precisely).
        period = description.control_period
        assert 0.85 * 3.0 / period <= result.commands_sent <= 1.02 * 3.0 / period, result.commands_sent
        streaming = [
            s.command_rate_hz
            for s in client.streamer_statuses()
            if s.mode == StreamerStatus.MODE_STREAMING and s.command_rate_hz > 0
        ]
        assert streaming and abs(streaming[-1] * period - 1.0) < 0.05, streaming[-3:]

        limits = {n: description.joint(n) for n in description.joint_names}
        for group in description.joint_groups:
            samples = client.commands.values(group.controller.name)
            # Command publishers keep only the newest message (depth 1, like the controllers' QoS
            # intent), so a busy Python receiver may miss some; at least half must arrive.
            assert len(samples) >= 0.5 * 3.0 / period, (group.controller.name, len(samples))
            values = np.array(samples)
            for column, joint in enumerate(group.joint_names):
                limit = limits[joint]
                assert np.all(values[:, column] >= limit.lower - 1e-9) and np.all(
                    values[:, column] <= limit.upper + 1e-9
                )
                steps = np.abs(np.diff(values[:, column]))
                assert np.all(steps <= limit.max_velocity * period + 1e-9), f"{joint} jumped"
        if description.base is not None:
            base = np.array(client.commands.values(description.base.controller.name))
            assert np.all(np.abs(base[:, 0]) <= description.base.max_linear_velocity + 1e-9)
            assert np.all(np.abs(base[:, 1]) <= description.base.max_angular_velocity + 1e-9)
    finally:
        client.close()
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
        wait_until(
            lambda: all((tmp_path / f"{n}.ready").exists() for n in ("clean", "unclean")),
            30.0,
            "the stub nodes to start",
            graph.check_running,
        )
        stop.set()
        assert run_until_stopped(graph, stop) == 1
        assert {name: p.returncode for name, p in graph.processes.items()} == {"clean": 0, "unclean": 3}
