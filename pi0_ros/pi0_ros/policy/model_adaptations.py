"""The description's model adaptations checked against pi0_model (numpy only, no torch)."""

from __future__ import annotations

from pi0_model.errors import ConfigError
from pi0_model.transforms import TransformPipeline
from pi0_ros.core.robot_description import DescriptionError, RobotDescription


def check_model_adaptations(description: RobotDescription) -> RobotDescription:
    """Raises DescriptionError when policy.transforms names an unknown adaptation or does not fit the
    state and action dimensions; returns the description for chaining."""
    policy = description.policy
    try:
        TransformPipeline.parse(policy.transforms).check_dims(len(policy.state), len(policy.actions))
    except ConfigError as exc:
        raise DescriptionError(f"{description.source or description.name}: policy.transforms: {exc}") from None
    return description
