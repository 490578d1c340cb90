"""Builds the pi0 policy a robot description asks for (checkpoint or tiny demo model), to run in this process."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pi0_client.interface import Inference, RtcGuidance
from pi0_model.normalization import Normalization, NormStats
from pi0_model.policy import Pi0Policy, RobotIO
from pi0_model.transforms import TransformPipeline
from pi0_ros.core.robot_description import BASE_ACTION_NAMES, RobotDescription
from pi0_ros.policy.model_settings import ModelSettings


def robot_io(description: RobotDescription, norm_stats_path: str | None = None) -> RobotIO:
    """How the description's cameras, state and actions map onto the model."""
    stats = norm_stats_path or description.norm_stats_path()
    return RobotIO(
        camera_slots=description.camera_slots,
        state_dim=len(description.policy.state),
        action_dim=len(description.policy.actions),
        transforms=description.policy.transforms,
        norm_stats_path=None if stats is None else str(stats),
        state_names=description.policy.state,
        action_names=description.policy.actions,
    )


def demo_normalization(description: RobotDescription) -> Normalization:
    """Stats that map the tiny random model's unit-scale outputs to small motions around the home pose.

    A random-init model has no stats of its own. Stats live in model space, after
    the robot adaptations (e.g. ALOHA's sign flips), so the home pose is adapted
    the same way before it becomes the mean. The quantiles are mean -/+ std, so
    that pi0.5's quantile normalization maps the model's outputs to the same
    motions as pi0's mean/std (-1, 0, 1 to mean - std, mean, mean + std).
    """
    pipeline = TransformPipeline.parse(description.policy.transforms)
    home_state = description.home_state
    home_actions = np.array(
        [0.0 if n in BASE_ACTION_NAMES else description.joint(n).home for n in description.policy.actions]
    )
    stages = pipeline.adapt_state(home_state)
    action_mean = pipeline.actions_in(home_actions[None, :], stages)[0]
    state_std = np.array(
        [0.05 * (description.joint(n).upper - description.joint(n).lower) for n in description.policy.state]
    )
    action_std = np.array(
        [
            0.05 if n in BASE_ACTION_NAMES else 0.05 * (description.joint(n).upper - description.joint(n).lower)
            for n in description.policy.actions
        ]
    )
    return Normalization(state=_unit_band(stages[-1], state_std), actions=_unit_band(action_mean, action_std))


def _unit_band(mean: np.ndarray, std: np.ndarray) -> NormStats:
    return NormStats(mean=mean, std=std, q01=mean - std, q99=mean + std)


def load_policy(description: RobotDescription, settings: ModelSettings) -> Pi0Policy:
    io = robot_io(description, settings.norm_stats_path)
    if not settings.checkpoint:
        return Pi0Policy.tiny(
            io,
            normalization=demo_normalization(description),
            seed=settings.seed,
            device=settings.device,
            num_steps=settings.num_steps,
            model_type=settings.model_type,
        )
    return Pi0Policy.from_checkpoint(
        settings.checkpoint,
        io,
        device=settings.device,
        dtype=settings.dtype,
        num_steps=settings.num_steps,
        tokenizer_path=settings.tokenizer_path,
        compile_mode=settings.compile_mode,
        seed=settings.seed,
    )


class LocalPolicy:
    """A PolicyBackend: pi0 in this process, always available."""

    def __init__(self, model: Pi0Policy) -> None:
        self.model = model

    def infer(
        self, images: Mapping[str, np.ndarray], state: np.ndarray, instruction: str, rtc: RtcGuidance | None
    ) -> Inference:
        return self.model.infer(images, state, instruction, rtc=rtc)

    def unavailable_reason(self) -> str:
        return ""

    def describe(self) -> str:
        return f"{self.model.config.model_type} in this process (horizon {self.model.horizon})"

    def close(self) -> None:
        """Nothing to release beyond dropping the reference (the node frees accelerator memory)."""
