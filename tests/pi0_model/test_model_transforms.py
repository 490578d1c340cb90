"""Robot adaptations: ALOHA joint flips and gripper conversion, delta actions, the registry and the order."""

import math

import numpy as np
import pytest

from pi0_model.errors import ConfigError
from pi0_model.transforms import (
    AlohaAdaptation,
    DeltaActions,
    TransformPipeline,
    make_bool_mask,
    make_transform,
    pad_to,
)

FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1])


def openpi_gripper_to_angular(value: float) -> float:
    """openpi aloha_policy._gripper_to_angular, written out for one value."""
    linear = value * (0.05800 - 0.01844) + 0.01844
    ratio = (0.022**2 + linear**2 - 0.036**2) / (2 * 0.022 * linear)
    return (math.asin(max(-1.0, min(1.0, ratio))) - 0.5476) / (1.6296 - 0.5476)


def test_aloha_state_flips_joints_and_converts_grippers(rng):
    state = rng.normal(size=14)
    state[[6, 13]] = [0.3, 0.9]
    adapted = AlohaAdaptation().state_in(state)
    joints = [i for i in range(14) if i not in (6, 13)]
    assert np.array_equal(adapted[joints], (FLIP * state)[joints])
    assert adapted[6] == pytest.approx(openpi_gripper_to_angular(0.3))
    assert adapted[13] == pytest.approx(openpi_gripper_to_angular(0.9))
    assert state[6] == 0.3, "inputs are not modified in place"


def test_aloha_action_output_matches_openpi(rng):
    actions = rng.normal(size=(5, 14))
    out = AlohaAdaptation().actions_out(actions, np.zeros(14))
    assert np.allclose(out[:, [0, 1, 2]], actions[:, [0, 1, 2]] * [1, -1, -1])
    expected_gripper = (actions[:, 6] + 0.5476 - (-0.6213)) / (1.4910 - (-0.6213))
    assert np.allclose(out[:, 6], expected_gripper)


def test_aloha_actions_in_inverts_actions_out(rng):
    actions = rng.normal(size=(50, 14))
    aloha = AlohaAdaptation()
    assert np.allclose(aloha.actions_out(aloha.actions_in(actions, None), None), actions, atol=1e-12)


def test_aloha_leaves_mobile_base_dims_alone(rng):
    state = rng.normal(size=16)
    state[[6, 13]] = 0.5
    actions = rng.normal(size=(3, 16))
    aloha = AlohaAdaptation()
    assert np.array_equal(aloha.state_in(state)[14:], state[14:])
    assert np.array_equal(aloha.actions_out(actions, state)[:, 14:], actions[:, 14:])


def test_delta_actions_round_trip_and_use_the_state(rng):
    delta = DeltaActions(make_bool_mask(6, -1, 6, -1))
    state = rng.normal(size=16)
    actions = rng.normal(size=(4, 16))
    relative = delta.actions_in(actions, state)
    assert np.allclose(relative[:, :6], actions[:, :6] - state[:6])
    assert np.array_equal(relative[:, 6], actions[:, 6])
    assert np.array_equal(relative[:, 14:], actions[:, 14:])
    assert np.allclose(delta.actions_out(relative, state), actions)


def test_pipeline_order_delta_sees_the_adapted_state(rng):
    pipeline = TransformPipeline.parse(["aloha", "delta:6,-1,6,-1"])
    state = rng.normal(size=14)
    state[[6, 13]] = 0.4
    stages = pipeline.adapt_state(state)
    assert len(stages) == 3 and np.array_equal(stages[0], state)
    absolute_model_space = rng.normal(size=(2, 14))
    robot = pipeline.actions_out(absolute_model_space - np.where(make_bool_mask(6, -1, 6, -1), stages[1], 0), stages)
    # Undo the delta against the adapted state first, then the ALOHA output conversion.
    assert np.allclose(robot, AlohaAdaptation().actions_out(absolute_model_space, None))
    assert np.allclose(
        pipeline.actions_in(robot, stages), absolute_model_space - np.where(make_bool_mask(6, -1, 6, -1), stages[1], 0)
    )


def test_registry_errors_are_clear():
    assert isinstance(make_transform("aloha"), AlohaAdaptation)
    assert make_transform("delta:2,-1").mask == (True, True, False)
    with pytest.raises(ConfigError, match="unknown transform 'franka'"):
        make_transform("franka")
    with pytest.raises(ConfigError, match="needs its mask"):
        make_transform("delta")
    with pytest.raises(ConfigError, match="bad delta mask"):
        make_transform("delta:a,b")
    with pytest.raises(ConfigError, match="takes no argument"):
        make_transform("aloha:1")
    with pytest.raises(ConfigError, match="sequence of names"):
        TransformPipeline.parse("aloha")
    with pytest.raises(ConfigError, match="reads 14 dims"):
        TransformPipeline.parse(["aloha"]).check_dims(7, 7)


def test_pad_to():
    assert pad_to(np.ones((2, 3)), 5).tolist() == [[1, 1, 1, 0, 0]] * 2
    with pytest.raises(ConfigError):
        pad_to(np.ones(40), 32)
