"""The layers the tree shows hold: pure logic imports neither rclpy nor torch, and the robot-side
streamer (and the command-line client) run without the ML stack.

Each module is imported in a fresh interpreter, so what one test imported cannot hide another's import.
"""

import json
import subprocess
import sys

import pytest

# Importable without ROS and without torch: the logic the nodes wrap, unit-tested on plain data.
PURE = (
    "pi0_ros.core.chunk",
    "pi0_ros.core.interpolation",
    "pi0_ros.core.rate_monitor",
    "pi0_ros.core.rgb_image",
    "pi0_ros.core.robot_description",
    "pi0_ros.core.stop_signals",
    "pi0_ros.policy.goal_session",
    "pi0_ros.policy.inference_worker",
    "pi0_ros.policy.observation_sync",
    "pi0_ros.policy.rtc_planner",
    "pi0_ros.policy.policy_backend",
    "pi0_ros.policy.model_adaptations",
    "pi0_ros.streamer.chunk_schedule",
    "pi0_ros.streamer.command_limits",
    "pi0_ros.streamer.command_stream",
    "pi0_ros.serve.server",
    "pi0_model.transforms",
    "pi0_model.errors",
    "pi0_model.normalization",
    "pi0_model.dataset_format",
    "pi0_model.video",
    "pi0_model.dataset_writer",
    "pi0_model.dataset",
    "pi0_model.trained_io",
    "pi0_bringup.demo_tasks",
)
# The policy client: what a robot PC needs to use a remote policy server, without ROS or the model.
CLIENT = (
    "pi0_client.errors",
    "pi0_client.interface",
    "pi0_client.msgpack_numpy",
    "pi0_client.observation_formats",
    "pi0_client.protocol",
    "pi0_client.websocket_client",
    "pi0_client.remote_policy",
)
# The policy server: the model, but no ROS.
SERVER = ("pi0_ros.serve.cli", "pi0_ros.serve.benchmark")
# What runs on the robot PC beside the controllers: ROS, but no ML stack.
# The policy node too: with policy_server set it runs on the robot PC and the model on a GPU host.
ROBOT_SIDE = (
    "pi0_ros.streamer.node",
    "pi0_ros.tools.send_instruction",
    "pi0_ros.policy.node",
    "pi0_ros.policy.remote_backend",
    "pi0_bringup.graph",
)
ML = ("torch", "transformers", "pi0_model")


def imported_packages(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_ros_nor_torch(module):
    forbidden = {"rclpy", "torch", "transformers"} & imported_packages(module)
    assert not forbidden, f"{module} imports {sorted(forbidden)}"


@pytest.mark.parametrize("module", CLIENT)
def test_client_modules_need_neither_ros_nor_the_model(module):
    forbidden = ({"rclpy"} | set(ML)) & imported_packages(module)
    assert not forbidden, f"{module} imports {sorted(forbidden)}"


@pytest.mark.parametrize("module", SERVER)
def test_policy_server_needs_no_ros(module):
    assert "rclpy" not in imported_packages(module)


@pytest.mark.parametrize("module", ROBOT_SIDE)
def test_robot_side_modules_need_no_ml_stack(module):
    forbidden = set(ML) & imported_packages(module)
    assert not forbidden, f"{module} imports {sorted(forbidden)}"
