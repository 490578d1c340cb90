"""The pi0_policy node's parameters, declared once; the model, sensor and worker settings come from them.

Defaults that a component's own settings define (SyncLimits, the QoS of
ObservationSourceParams, ModelSettings) are taken from there, so each default
lives in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pi0_client.options import (
    COMPILE_MODES,
    DEVICE_FORMS,
    DTYPE_NAMES,
    MODEL_TYPES,
    NO_COMPILE,
    compile_mode_or_none,
    device_problem,
)
from pi0_ros.core.chunk import Handover
from pi0_ros.policy.inference_worker import WorkerConfig
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.policy.observation_source import ObservationSourceParams, QosSettings
from pi0_ros.policy.observation_sync import SyncLimits
from pi0_ros.policy.remote_backend import RemoteSettings
from pi0_ros.ros.conversions import RELIABILITY_CHOICES
from pi0_ros.ros.parameters import param, parameter_specs

_SOURCE = ObservationSourceParams()  # the sensor defaults
API_KEY_VARIABLE = "PI0_POLICY_SERVER_API_KEY"  # read when the policy_server_api_key parameter is empty


def _server_url_problem(url: str) -> str | None:
    if url == "" or url.startswith(("ws://", "wss://")):
        return None
    return f"expected ws://host:port, wss://host:port or empty, got '{url}'"


@dataclass(frozen=True)
class PolicyParameters:
    robot_description: str = param("", "Path to the robot description YAML.", read_only=True)
    autostart: bool = param(
        False, "Configure and activate on startup (portable stand-in for launch_ros autostart).", read_only=True
    )
    policy_server: str = param(
        "",
        "ws://host:port of a policy server speaking openpi's websocket protocol (pi0_serve, openpi's "
        "serve_policy); empty runs the model in this process (checkpoint, device, dtype, ... apply then).",
        check=_server_url_problem,
    )
    policy_server_api_key: str = param(
        "",
        f"API key for the policy server; empty reads ${API_KEY_VARIABLE} (parameters are visible to anyone "
        "on the ROS graph, the environment is not).",
    )
    policy_server_timeout_s: float = param(
        RemoteSettings.response_timeout_s,
        "A policy server response later than this ends the goal (end_reason POLICY_SERVER_LOST).",
        range=(0.05, 60.0),
    )
    checkpoint: str = param(
        ModelSettings.checkpoint, "pi0 checkpoint directory (LeRobot/openpi PyTorch layout); empty = tiny demo model."
    )
    model_type: str = param(
        ModelSettings.model_type,
        "Type of the tiny demo model (no checkpoint only): a checkpoint decides its own type.",
        choices=MODEL_TYPES,
    )
    tokenizer_path: str = param(
        "", "PaliGemma tokenizer (tokenizer.model or tokenizer.json); empty = inside the checkpoint."
    )
    norm_stats: str = param("", "norm_stats.json overriding the description's and the checkpoint's; empty = none.")
    device: str = param(ModelSettings.device, f"Torch device: {DEVICE_FORMS}.", check=device_problem)
    dtype: str = param(ModelSettings.dtype, "Model weights dtype.", choices=DTYPE_NAMES)
    compile_mode: str = param(NO_COMPILE, "torch.compile mode for the model.", choices=(NO_COMPILE, *COMPILE_MODES))
    num_denoising_steps: int = param(0, "Euler steps per chunk; 0 keeps the checkpoint's (10 for pi0).", range=(0, 100))
    seed: int = param(
        ModelSettings.seed, "Seed of the tiny model's weights and of the sampling noise.", range=(0, 2**31 - 1)
    )
    torch_threads: int = param(0, "CPU threads for torch; 0 leaves torch's default.", range=(0, 256))
    warmup_iterations: int = param(
        2, "Inferences on a blank observation at configure (compilation, latency estimate).", range=(0, 100)
    )
    chunk_handover: str = param(
        Handover.SPLICE.value,
        "Hand-over used by the streamer; 'rtc' also enables real-time chunking here.",
        choices=Handover.choices(),
    )
    max_instruction_chars: int = param(500, "Longer instructions are rejected.", range=(1, 100_000))
    require_streamer: bool = param(
        True,
        "Start a goal only once a command streamer is heard on streamer_status, so a goal never runs while "
        "nothing would move the robot (e.g. before DDS discovery completes).",
    )
    goal_start_timeout_s: float = param(
        5.0,
        "How long an accepted goal waits for the command streamer (require_streamer) and a first "
        "synchronized observation before it aborts (end_reason NOT_READY).",
        range=(0.0, 600.0),
    )
    stale_observation_timeout_s: float = param(
        0.5, "End the goal when no new observation arrives for this long.", range=(0.05, 30.0)
    )
    feedback_rate_hz: float = param(10.0, "Action feedback rate.", range=(0.5, 100.0))
    status_rate_hz: float = param(
        10.0,
        "policy_status rate (also published on every goal change); the streamer holds when none arrives "
        "for its status_timeout_s.",
        range=(5.0, 100.0),
    )
    sync_slop_s: float = param(
        0.0,
        "Widest spread of camera stamps inside one synchronized set; 0 = from the measured camera rates "
        "((1 - 1/n) of the shortest frame period for n cameras, within 5-50 ms).",
        range=(0.0, 1.0),
    )
    sync_queue_size: int = param(SyncLimits.queue_size, "Frames kept per camera for matching.", range=(1, 100))
    max_observation_age_s: float = param(
        SyncLimits.max_age_s, "Streams and sets older than this are stale.", range=(0.01, 30.0)
    )
    joint_extrapolation_s: float = param(
        SyncLimits.joint_extrapolation_s, "How far a set may lie past a joint's newest sample.", range=(0.0, 1.0)
    )
    camera_qos_reliability: str = param(
        _SOURCE.camera_qos.reliability, "Camera subscription reliability.", choices=RELIABILITY_CHOICES
    )
    camera_qos_depth: int = param(_SOURCE.camera_qos.depth, "Camera subscription depth.", range=(1, 100))
    joint_state_qos_reliability: str = param(
        _SOURCE.joint_state_qos.reliability, "Joint state subscription reliability.", choices=RELIABILITY_CHOICES
    )
    joint_state_qos_depth: int = param(
        _SOURCE.joint_state_qos.depth, "Joint state subscription depth.", range=(1, 1000)
    )

    @property
    def real_time_chunking(self) -> bool:
        return self.chunk_handover == Handover.RTC.value

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            checkpoint=self.checkpoint,
            model_type=self.model_type,
            device=self.device,
            dtype=self.dtype,
            num_steps=self.num_denoising_steps or None,
            tokenizer_path=self.tokenizer_path or None,
            norm_stats_path=self.norm_stats or None,
            seed=self.seed,
            compile_mode=compile_mode_or_none(self.compile_mode),
        )

    def remote_settings(self) -> RemoteSettings:
        return RemoteSettings(
            url=self.policy_server,
            api_key=self.policy_server_api_key or os.environ.get(API_KEY_VARIABLE) or None,
            response_timeout_s=self.policy_server_timeout_s,
        )

    def parameter_problems(self) -> list[str]:
        if self.policy_server and self.checkpoint:
            return ["checkpoint and policy_server exclude each other: the policy server loads its own checkpoint"]
        return []

    def source_params(self) -> ObservationSourceParams:
        return ObservationSourceParams(
            limits=SyncLimits(
                slop_s=self.sync_slop_s or None,  # a parameter cannot be None, so 0 stands for automatic
                queue_size=self.sync_queue_size,
                max_age_s=self.max_observation_age_s,
                joint_extrapolation_s=self.joint_extrapolation_s,
            ),
            camera_qos=QosSettings(self.camera_qos_reliability, self.camera_qos_depth),
            joint_state_qos=QosSettings(self.joint_state_qos_reliability, self.joint_state_qos_depth),
        )

    def worker_config(self, action_step: float, initial_latency: float) -> WorkerConfig:
        return WorkerConfig(
            action_step=action_step,
            stale_timeout=self.stale_observation_timeout_s,
            real_time_chunking=self.real_time_chunking,
            initial_latency=initial_latency,
        )


PARAMS = parameter_specs(PolicyParameters)  # as declared (e.g. to check a parameters file)
