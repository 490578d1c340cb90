"""Building the policy the node runs: the tiny model's type and the demo stats that serve pi0 and pi0.5."""

import numpy as np
import pytest

from pi0_client.options import MODEL_TYPES
from pi0_model.transforms import TransformPipeline
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.policy.model_loader import demo_normalization, load_policy
from pi0_ros.policy.model_settings import ModelSettings
from support.robots import robot_yaml

DESCRIPTION = load_robot_description(robot_yaml("aloha"))


def test_demo_stats_map_model_outputs_to_the_same_motions_under_either_normalization():
    normalization = demo_normalization(DESCRIPTION)
    outputs = np.random.default_rng(0).normal(size=(50, 14))
    by_mode = {mode: normalization.with_mode(mode).unnormalize_actions(outputs) for mode in ("mean_std", "quantile")}
    np.testing.assert_allclose(by_mode["quantile"], by_mode["mean_std"], atol=1e-5)
    home = np.array([DESCRIPTION.joint(n).home for n in DESCRIPTION.policy.state])
    model_space_home = TransformPipeline.parse(DESCRIPTION.policy.transforms).adapt_state(home)[-1]
    np.testing.assert_allclose(normalization.with_mode("quantile").normalize_state(model_space_home), 0.0, atol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_without_a_checkpoint_the_tiny_model_is_of_the_type_asked_for(model_type):
    policy = load_policy(DESCRIPTION, ModelSettings(model_type=model_type))
    assert policy.config.model_type == model_type
    images = {c.name: np.zeros((24, 32, 3), np.uint8) for c in DESCRIPTION.policy_cameras}
    state = np.array([DESCRIPTION.joint(n).home for n in DESCRIPTION.policy.state])
    actions = policy.infer(images, state, "raise the arms").actions
    assert actions.shape == (50, 14) and np.all(np.isfinite(actions))


def test_an_unknown_model_type_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="model_type must be one of pi0, pi05, got 'pi1'"):
        ModelSettings(model_type="pi1")
