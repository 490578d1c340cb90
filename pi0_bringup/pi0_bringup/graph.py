"""The node graph of a pi0_ros deployment, in one place.

`node_graph(options)` lists the nodes to start for a robot, with their
parameters. The launch files (launch/*.launch.py) turn it into launch_ros
actions; the runner (pi0_bringup.run) starts the same list as processes where
`ros2 launch` is not available. Both therefore bring up the identical graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pi0_bringup.robots import load_robot, robot_description_path
from pi0_client.options import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_MODEL_TYPE, MODEL_TYPES, check_device, check_dtype
from pi0_ros.core.chunk import Handover
from pi0_ros.core.heartbeat import STREAMER_TIMEOUT_S
from pi0_ros.core.robot_description import RobotDescription


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str  # console script installed in lib/<package> (what launch_ros starts)
    module: str  # the same entry point as `python -m <module>` (what the runner starts)
    name: str
    parameters: Mapping[str, Any]
    lifecycle: bool = False
    params_files: tuple[str, ...] = ()  # ros__parameters YAML files, applied before `parameters`
    respawn_delay: float | None = None  # restart the process this many seconds after it dies; None: never


@dataclass(frozen=True)
class GraphOptions:
    robot: str  # shipped robot name (aloha, mobile_aloha, ur5e, franka) or a description YAML path
    policy_server: str = ""  # ws://host:port: the model runs on a policy server; "" runs it in the policy node
    checkpoint: str = ""  # pi0 or pi0.5 checkpoint directory; "" runs the tiny demo model
    model_type: str = DEFAULT_MODEL_TYPE  # the tiny demo model's type (MODEL_TYPES); a checkpoint decides its own
    device: str = DEFAULT_DEVICE  # "cpu", "cuda" or "cuda:N"
    dtype: str = DEFAULT_DTYPE  # one of pi0_client.options.DTYPE_NAMES
    namespace: str = ""
    use_sim_time: bool = False
    sim: bool = False  # also start the simulated robot
    autostart: bool = True  # configure and activate the policy node on startup
    chunk_handover: str = Handover.SPLICE.value
    seed: int = 0
    torch_threads: int = 0  # 0 = torch's default
    streamer_priority: int = 10  # SCHED_FIFO priority of the streamer (as ros2_control's controller manager); 0 = off
    sim_image_size: tuple[int, int] = (0, 0)  # (width, height) rendered by the simulator; 0 = description's
    params_file: str = ""  # ros__parameters YAML tuning any node (e.g. "pi0_policy: ros__parameters: ...")
    policy_parameters: Mapping[str, Any] = field(default_factory=dict)  # extra pi0_policy parameters
    streamer_parameters: Mapping[str, Any] = field(default_factory=dict)  # extra pi0_command_streamer parameters
    # A node that dies is restarted after this many seconds (launch's respawn); 0 disables. Longer than the
    # policy's streamer timeout (STREAMER_TIMEOUT_S), so a goal of a dead streamer ends before a new streamer appears.
    respawn_delay: float = 2.0 * STREAMER_TIMEOUT_S

    def __post_init__(self) -> None:
        Handover.parse(self.chunk_handover)
        check_dtype(self.dtype)
        check_device(self.device)
        if self.namespace and not self.namespace.startswith("/"):
            raise ValueError(f"namespace must be absolute (start with '/'), got '{self.namespace}'")
        if self.checkpoint and not Path(self.checkpoint).is_dir():
            raise ValueError(f"checkpoint directory {self.checkpoint} does not exist")
        if self.policy_server and not self.policy_server.startswith(("ws://", "wss://")):
            raise ValueError(f"policy_server must be ws://host:port or wss://host:port, got '{self.policy_server}'")
        if self.policy_server and self.checkpoint:
            raise ValueError("checkpoint and policy_server exclude each other: the policy server loads its checkpoint")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got '{self.model_type}'")
        if (self.checkpoint or self.policy_server) and self.model_type != DEFAULT_MODEL_TYPE:
            # The node would ignore it; a type that contradicts the checkpoint would only mislead.
            where = f"checkpoint {self.checkpoint}" if self.checkpoint else f"the policy server {self.policy_server}"
            raise ValueError(f"model_type chooses the tiny demo model only; {where} decides its own type")
        if any(v < 0 for v in self.sim_image_size) or self.torch_threads < 0:
            raise ValueError("sim_image_size and torch_threads must not be negative")
        if self.params_file and not Path(self.params_file).is_file():
            raise ValueError(f"parameters file {self.params_file} does not exist")
        if self.sim and self.use_sim_time:
            raise ValueError(
                "use_sim_time needs a /clock publisher (e.g. `ros2 bag play --clock` or Gazebo); the "
                "built-in simulated robot runs on the system clock: start it without use_sim_time"
            )
        if not (0 <= self.respawn_delay <= 600):
            raise ValueError(
                f"respawn_delay must be within [0, 600] s (0 disables respawning), got {self.respawn_delay}"
            )
        if not 0 <= self.streamer_priority <= 99:
            raise ValueError(f"streamer_priority must be within [0, 99], got {self.streamer_priority}")


def node_graph(options: GraphOptions, description: RobotDescription | None = None) -> tuple[NodeSpec, ...]:
    """The nodes of a deployment; validates the robot description on the way."""
    description = description or load_robot(options.robot, model_here=not options.policy_server)
    yaml_path = str(description.source or robot_description_path(options.robot))
    common = {"robot_description": yaml_path, "use_sim_time": options.use_sim_time}
    files = (str(Path(options.params_file).resolve()),) if options.params_file else ()
    respawn = options.respawn_delay or None
    policy = NodeSpec(
        "pi0_ros",
        "policy_node",
        "pi0_ros.policy.node",
        "pi0_policy",
        {
            **common,
            "checkpoint": options.checkpoint,
            "policy_server": options.policy_server,
            "model_type": options.model_type,
            "device": options.device,
            "dtype": options.dtype,
            "autostart": options.autostart,
            "chunk_handover": options.chunk_handover,
            "seed": options.seed,
            "torch_threads": options.torch_threads,
            **options.policy_parameters,
        },
        lifecycle=True,
        params_files=files,
        respawn_delay=respawn,
    )
    streamer = NodeSpec(
        "pi0_ros",
        "command_streamer",
        "pi0_ros.streamer.node",
        "pi0_command_streamer",
        {
            **common,
            "chunk_handover": options.chunk_handover,
            "realtime_priority": options.streamer_priority,
            **options.streamer_parameters,
        },
        params_files=files,
        respawn_delay=respawn,
    )
    nodes = [policy, streamer]
    if options.sim:
        width, height = options.sim_image_size
        nodes.insert(
            0,
            NodeSpec(
                "pi0_bringup",
                "sim_robot",
                "pi0_bringup.sim_robot_node",
                "pi0_sim_robot",
                {**common, "image_width": width, "image_height": height},
                params_files=files,
                respawn_delay=respawn,
            ),
        )
    return tuple(nodes)


def command_topics(description: RobotDescription, namespace: str = "") -> dict[str, str]:
    """Fully qualified command topic of every controller, by controller name."""
    return {c.name: qualify(c.topic, namespace) for c in description.controllers}


def qualify(name: str, namespace: str = "") -> str:
    if name.startswith("/"):
        return name
    return f"{namespace.rstrip('/')}/{name}"
