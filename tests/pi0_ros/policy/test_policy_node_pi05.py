"""The policy node with pi0.5 on a real DDS graph: the tiny pi0.5 (model_type:=pi05) and a pi0.5 checkpoint
loaded with the launch parameters unchanged, each running a goal end to end through a real action client."""

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from pi0_model.checkpoint import save_checkpoint
from pi0_model.policy import Pi0Policy
from pi0_model.tokenizer import SENTENCEPIECE_FILE, tiny_sentencepiece_model
from pi0_msgs.action import ExecuteInstruction
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.policy.model_loader import demo_normalization, robot_io

# The harness of the pi0 node tests (a sibling module: pytest puts this directory on the path).
from support.policy_harness import Harness, make_policy_node
from support.robots import robot_yaml

pytestmark = pytest.mark.ros
Result = ExecuteInstruction.Result


def run_goal(ros_graph, chunks=3, **params):
    """Configures and activates a policy node with `params`, runs one goal to `chunks` chunks; returns the
    harness and the goal's result."""
    policy = make_policy_node(ros_graph, goal_start_timeout_s=60.0, **params)
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS, policy._health
    assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness = Harness(ros_graph, policy)
    try:
        harness.wait_ready()
        handle = harness.send("raise the arms", max_chunks=chunks)
        assert handle.accepted
        result = harness.result(handle, timeout=60.0).result
        harness.graph.wait_for(lambda: len(harness.chunks) >= chunks, what=f"{chunks} chunks")
    finally:
        harness.client.destroy()
    return harness, result


def assert_chunks_fit_the_robot(harness, count):
    description = harness.description
    width = len(description.policy.actions)
    assert len(harness.chunks) == count
    for chunk in harness.chunks:
        assert chunk.horizon == 50 and list(chunk.names) == list(description.policy.actions)
        actions = np.asarray(chunk.actions).reshape(50, width)
        assert np.all(np.isfinite(actions))
        lower = np.array([description.joint(n).lower for n in description.policy.actions])
        upper = np.array([description.joint(n).upper for n in description.policy.actions])
        # Small motions around the home pose (demo stats): far inside the joint ranges.
        assert np.all(actions > lower - 0.5 * (upper - lower)) and np.all(actions < upper + 0.5 * (upper - lower))


def test_the_tiny_pi05_runs_a_goal_to_its_chunk_limit(ros_graph):
    harness, result = run_goal(ros_graph, model_type="pi05")
    assert harness.policy._policy.describe().startswith("pi05 in this process")
    assert result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, result.message
    assert result.chunks_generated == 3 and result.inference_latency_max_ms > 0
    assert_chunks_fit_the_robot(harness, 3)


@pytest.fixture
def pi05_checkpoint(tmp_path):
    """A tiny pi0.5 saved as any pi0.5 checkpoint is: weights, config, quantile stats and tokenizer."""
    description = load_robot_description(robot_yaml("aloha"))
    normalization = demo_normalization(description)
    policy = Pi0Policy.tiny(robot_io(description), normalization, seed=5, model_type="pi05")
    directory = save_checkpoint(policy.model, tmp_path / "pi05_ckpt", normalization)
    (directory / SENTENCEPIECE_FILE).write_bytes(tiny_sentencepiece_model())
    return directory


def test_a_pi05_checkpoint_loads_with_the_launch_parameters_unchanged(ros_graph, pi05_checkpoint):
    # model_type keeps its default (pi0): the checkpoint decides.
    harness, result = run_goal(ros_graph, chunks=2, checkpoint=str(pi05_checkpoint))
    assert harness.policy._policy.describe().startswith("pi05 in this process")
    assert result.end_reason == Result.END_REASON_CHUNK_LIMIT_REACHED, result.message
    assert_chunks_fit_the_robot(harness, 2)
