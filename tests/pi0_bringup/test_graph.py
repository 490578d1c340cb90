"""The node graph that the launch files and the runner share."""

import argparse
import ast
from pathlib import Path

import pytest

from pi0_bringup.graph import GraphOptions, command_topics, node_graph, qualify
from pi0_bringup.robots import available_robots, load_robot, robot_description_path
from pi0_ros.core.robot_description import DescriptionError
from support.robots import ROBOT_NAMES

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "pi0_bringup" / "launch"


def test_every_shipped_robot_is_available():
    assert set(ROBOT_NAMES) <= set(available_robots())


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_graph_is_consistent_for_every_robot(robot):
    nodes = {n.name: n for n in node_graph(GraphOptions(robot=robot, sim=True))}
    assert list(nodes) == ["pi0_sim_robot", "pi0_policy", "pi0_command_streamer"]
    descriptions = {n.parameters["robot_description"] for n in nodes.values()}
    assert descriptions == {str(robot_description_path(robot))}, "every node reads the same description"
    assert all(n.parameters["use_sim_time"] is False for n in nodes.values())
    assert nodes["pi0_policy"].lifecycle and nodes["pi0_policy"].parameters["autostart"] is True
    assert (
        nodes["pi0_policy"].parameters["chunk_handover"] == nodes["pi0_command_streamer"].parameters["chunk_handover"]
    ), "policy and streamer agree on the hand-over (RTC needs both)"
    assert nodes["pi0_command_streamer"].parameters["realtime_priority"] == 10
    for node in nodes.values():
        assert node.module.startswith(node.package + ".")


def test_without_sim_only_policy_and_streamer_start():
    names = [n.name for n in node_graph(GraphOptions(robot="ur5e"))]
    assert names == ["pi0_policy", "pi0_command_streamer"]


def test_options_are_validated():
    with pytest.raises(ValueError, match="dtype"):
        GraphOptions(robot="aloha", dtype="float16")
    with pytest.raises(ValueError, match="device"):
        GraphOptions(robot="aloha", device="tpu")
    with pytest.raises(ValueError, match="namespace must be absolute"):
        GraphOptions(robot="aloha", namespace="left")
    with pytest.raises(ValueError, match="checkpoint directory /no/such/ckpt does not exist"):
        GraphOptions(robot="aloha", checkpoint="/no/such/ckpt")
    with pytest.raises(ValueError, match="unknown chunk handover"):
        GraphOptions(robot="aloha", chunk_handover="jump")
    with pytest.raises(ValueError, match="streamer_priority"):
        GraphOptions(robot="aloha", streamer_priority=120)
    with pytest.raises(ValueError, match="use_sim_time needs a /clock publisher"):
        GraphOptions(robot="aloha", sim=True, use_sim_time=True)


def test_replay_runs_every_node_on_sim_time():
    nodes = node_graph(GraphOptions(robot="aloha", use_sim_time=True))
    assert [n.name for n in nodes] == ["pi0_policy", "pi0_command_streamer"]
    assert all(n.parameters["use_sim_time"] is True for n in nodes)


def test_unknown_robots_list_the_known_ones(tmp_path):
    with pytest.raises(DescriptionError, match="unknown robot 'r2d2'; shipped robots: aloha"):
        node_graph(GraphOptions(robot="r2d2"))
    custom = tmp_path / "my_arm.yaml"
    custom.write_text(robot_description_path("ur5e").read_text().replace("name: ur5e", "name: my_arm"))
    assert load_robot(str(custom)).name == "my_arm", "a YAML path works wherever a robot name does"


def test_command_topics_follow_the_namespace():
    description = load_robot("mobile_aloha")
    topics = command_topics(description, "/robot1")
    assert topics["left_arm_controller"] == "/robot1/left_arm_controller/joint_trajectory"
    assert topics["base_controller"] == "/robot1/base_controller/cmd_vel"
    assert qualify("/abs/topic", "/robot1") == "/abs/topic"


@pytest.mark.parametrize("robot", ROBOT_NAMES + ("robot",))
def test_launch_files_build_the_shared_graph(robot):
    """launch is not installed here; check each file delegates to the shared builder with its robot."""
    tree = ast.parse((LAUNCH_DIR / f"{robot}.launch.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    calls = [n for n in ast.walk(functions["generate_launch_description"]) if isinstance(n, ast.Call)]
    assert [c.func.id for c in calls] == ["robot_launch_description"]
    defaults = {k.arg: k.value.value for k in calls[0].keywords}
    assert defaults == ({} if robot == "robot" else {"default_robot": robot})


def test_a_parameters_file_reaches_every_node_before_the_graph_values(tmp_path):
    from pi0_bringup.supervisor import node_command

    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("/**/pi0_command_streamer:\n  ros__parameters:\n    trajectory_lookahead_points: 2\n")
    nodes = node_graph(GraphOptions(robot="aloha", sim=True, params_file=str(tuning)))
    assert all(n.params_files == (str(tuning),) for n in nodes)
    command = node_command(nodes[-1], "", tmp_path / "graph.yaml")
    files = [command[i + 1] for i, arg in enumerate(command) if arg == "--params-file"]
    assert files == [str(tuning), str(tmp_path / "graph.yaml")], "later files win: graph values override"
    with pytest.raises(ValueError, match="parameters file /no/such.yaml does not exist"):
        GraphOptions(robot="aloha", params_file="/no/such.yaml")


def test_the_shipped_example_parameters_file_names_only_declared_parameters():
    import yaml

    from pi0_ros.policy.parameters import PARAMS as POLICY_PARAMS
    from pi0_ros.streamer.node import PARAMS as STREAMER_PARAMS

    example = yaml.safe_load((LAUNCH_DIR.parent / "config" / "params" / "example.yaml").read_text())
    declared = {"/**/pi0_policy": POLICY_PARAMS, "/**/pi0_command_streamer": STREAMER_PARAMS}
    for node, section in example.items():
        params = {p.name: p for p in declared[node]}
        for name, value in section["ros__parameters"].items():
            assert name in params, f"{node}: {name} is not a parameter"
            assert params[name].problem(value) is None, params[name].problem(value)


def test_the_tiny_models_type_reaches_the_policy_node_and_a_checkpoint_decides_its_own(tmp_path):
    policy = {n.name: n for n in node_graph(GraphOptions(robot="aloha", model_type="pi05"))}["pi0_policy"]
    assert policy.parameters["model_type"] == "pi05" and policy.parameters["checkpoint"] == ""
    with pytest.raises(ValueError, match="model_type must be one of pi0, pi05, got 'pi1'"):
        GraphOptions(robot="aloha", model_type="pi1")
    with pytest.raises(ValueError, match="model_type chooses the tiny demo model only; checkpoint .* decides"):
        GraphOptions(robot="aloha", checkpoint=str(tmp_path), model_type="pi05")
    # Without a model_type the graph runs any checkpoint: the launch arguments are the same for pi0 and pi0.5.
    assert GraphOptions(robot="aloha", checkpoint=str(tmp_path)).model_type == "pi0"


def test_the_runner_and_the_benchmark_pass_the_tiny_models_type_on():
    from pi0_bringup.benchmark.runtime import benchmark_graph, make_config
    from pi0_bringup.benchmark.runtime import parse_args as benchmark_args
    from pi0_bringup.run import add_graph_arguments, graph_options_from_args

    parser = argparse.ArgumentParser()
    add_graph_arguments(parser)
    assert graph_options_from_args(parser.parse_args(["aloha", "--model-type", "pi05"])).model_type == "pi05"
    assert graph_options_from_args(parser.parse_args(["aloha"])).model_type == "pi0"
    config = make_config(benchmark_args(["--model", "pi05"]))
    nodes = {n.name: n for n in benchmark_graph(config, load_robot(config.description_path))}
    assert config.model_type == "pi05" and nodes["pi0_policy"].parameters["model_type"] == "pi05"
