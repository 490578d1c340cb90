"""The node graph that the launch files and the runner share."""
import ast
from pathlib import Path

import pytest

from pi0_bringup.graph import GraphOptions, command_topics, node_graph, qualify
from pi0_bringup.robots import available_robots, load_robot, robot_description_path
from pi0_ros.robot_description import DescriptionError
from support.robots import ROBOT_NAMES

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "pi0_bringup" / "launch"


def test_every_shipped_robot_is_available():
    assert set(ROBOT_NAMES) <= set(available_robots())


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_graph_is_consistent_for_every_robot(robot):
    nodes = {n.name: n for n in node_graph(GraphOptions(robot=robot, sim=True, use_sim_time=True))}
    assert list(nodes) == ["pi0_sim_robot", "pi0_policy", "pi0_command_streamer"]
    descriptions = {n.parameters["robot_description"] for n in nodes.values()}
    assert descriptions == {str(robot_description_path(robot))}, "every node reads the same description"
    assert all(n.parameters["use_sim_time"] is True for n in nodes.values())
    assert nodes["pi0_policy"].lifecycle and nodes["pi0_policy"].parameters["autostart"] is True
    assert nodes["pi0_policy"].parameters["chunk_handover"] == nodes["pi0_command_streamer"].parameters[
        "chunk_handover"], "policy and streamer agree on the hand-over (RTC needs both)"
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
