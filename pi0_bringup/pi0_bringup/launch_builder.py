"""launch_ros actions for the graph of pi0_bringup.graph (used by launch/*.launch.py).

Only the launch files import this module: `launch` and `launch_ros` exist on
apt-installed ROS 2, not on the PyPI-wheel ROS 2 of the dev machines, where
pi0_bringup.run starts the very same node_graph() instead.
"""

from __future__ import annotations

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from pi0_bringup.graph import GraphOptions, NodeSpec, node_graph
from pi0_client.options import DEVICE_FORMS, DTYPE_NAMES, MODEL_TYPES
from pi0_ros.core.chunk import Handover

# name -> (default, description); every argument maps onto a GraphOptions field.
ARGUMENTS = {
    "policy_server": ("", "ws://host:port of a policy server (pi0_serve, openpi); empty runs the model here"),
    "checkpoint": ("", "pi0 or pi0.5 checkpoint directory (it decides the model); empty runs the tiny demo model"),
    "model_type": (
        GraphOptions.model_type,
        f"type of the tiny demo model: {' or '.join(MODEL_TYPES)}; only without a checkpoint (it decides its own)",
    ),
    "device": (GraphOptions.device, f"torch device: {DEVICE_FORMS}"),
    "dtype": (GraphOptions.dtype, f"model dtype: {' or '.join(DTYPE_NAMES)}"),
    "namespace": ("", "namespace of all nodes and topics, e.g. /left_robot"),
    "use_sim_time": (
        "false",
        "use /clock (bag replay, Gazebo); not with sim:=true, whose robot runs on the system clock",
    ),
    "sim": ("false", "also start the simulated robot"),
    "autostart": ("true", "configure and activate the policy node on startup"),
    "chunk_handover": (GraphOptions.chunk_handover, ", ".join(Handover.choices())),
    "seed": ("0", "seed of the sampling noise (and of the tiny model)"),
    "torch_threads": ("0", "CPU threads for torch; 0 = default"),
    "streamer_priority": ("10", "SCHED_FIFO priority of the command streamer; 0 = normal scheduling"),
    "sim_image_width": ("0", "simulator image width; 0 = description's"),
    "sim_image_height": ("0", "simulator image height; 0 = description's"),
    "params_file": ("", "ros__parameters YAML tuning the nodes (these arguments take precedence)"),
    "respawn_delay": ("2.0", "restart a node this many seconds after it dies; 0 = never"),
}


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got '{text}'")
    return text.lower() in ("true", "1")


def _options(context: LaunchContext) -> GraphOptions:
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return GraphOptions(
        robot=LaunchConfiguration("robot").perform(context),
        checkpoint=value["checkpoint"],
        policy_server=value["policy_server"],
        model_type=value["model_type"],
        device=value["device"],
        dtype=value["dtype"],
        namespace=value["namespace"],
        use_sim_time=_flag(value["use_sim_time"]),
        sim=_flag(value["sim"]),
        autostart=_flag(value["autostart"]),
        chunk_handover=value["chunk_handover"],
        seed=int(value["seed"]),
        torch_threads=int(value["torch_threads"]),
        streamer_priority=int(value["streamer_priority"]),
        sim_image_size=(int(value["sim_image_width"]), int(value["sim_image_height"])),
        params_file=value["params_file"],
        respawn_delay=float(value["respawn_delay"]),
    )


def _action(spec: NodeSpec, namespace: str):
    kind = LifecycleNode if spec.lifecycle else Node
    respawn = {} if spec.respawn_delay is None else {"respawn": True, "respawn_delay": spec.respawn_delay}
    return kind(
        package=spec.package,
        executable=spec.executable,
        name=spec.name,
        namespace=namespace,
        parameters=[*spec.params_files, dict(spec.parameters)],
        output="screen",
        emulate_tty=True,
        **respawn,
    )


def _nodes(context: LaunchContext):
    options = _options(context)
    return [_action(spec, options.namespace) for spec in node_graph(options)]


def robot_launch_description(default_robot: str = "") -> LaunchDescription:
    """Declares the arguments and starts node_graph() for the `robot` argument."""
    robot = DeclareLaunchArgument(
        "robot",
        default_value=default_robot,
        description="robot name (aloha, mobile_aloha, ur5e, franka) or description YAML",
    )
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([robot, *declared, OpaqueFunction(function=_nodes)])
