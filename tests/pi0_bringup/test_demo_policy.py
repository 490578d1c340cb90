"""The demo policy: synthetic demonstrations and a tiny pi0 trained on them, saved as a checkpoint."""

import numpy as np
import pytest

from pi0_bringup.demo_policy import (
    DEMO_INSTRUCTIONS,
    DemoTraining,
    demo_checkpoint,
    demonstration_chunk,
    goal_pose,
    make_demonstrations,
    model_space,
    train_demo_policy,
)
from pi0_bringup.robots import load_robot
from pi0_model.policy import Pi0Policy
from pi0_ros.policy.model_loader import robot_io
from support.robots import ROBOT_NAMES

QUICK = DemoTraining(steps=3, batch_size=2, demonstrations=6, image_size=(32, 24))


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_goal_poses_lie_within_the_limits_and_differ_per_instruction(robot):
    description = load_robot(robot)
    goals = {i: goal_pose(description, i) for i in DEMO_INSTRUCTIONS}
    for goal in goals.values():
        for name, value in zip(description.policy.actions, goal):
            if not name.startswith("base_"):
                joint = description.joint(name)
                assert joint.lower <= value <= joint.upper
    home = np.array([0.0 if n.startswith("base_") else description.joint(n).home for n in description.policy.actions])
    np.testing.assert_allclose(goals["go home"], home)
    assert np.abs(goals["reach forward"] - goals["raise the arms"]).max() > 0.1


def test_demonstration_chunks_start_at_the_pose_and_approach_the_goal_smoothly():
    description = load_robot("aloha")
    home = np.array([j.home for j in description.joints])
    goal = goal_pose(description, "reach forward")
    chunk = demonstration_chunk(description, home, goal, horizon=50)
    assert chunk.shape == (50, 14)
    np.testing.assert_allclose(chunk[0], home)
    distance = np.abs(chunk - goal).max(axis=1)
    assert np.all(np.diff(distance) <= 1e-12) and distance[-1] < 0.2 * distance[0]


def test_model_space_stats_normalize_the_demonstrations():
    description = load_robot("mobile_aloha")
    demos = make_demonstrations(description, 8, 50, (32, 24), np.random.default_rng(0))
    assert demos.images["cam_high"].shape == (8, 24, 32, 3) and demos.chunks.shape == (8, 50, 16)
    states, chunks, normalization = model_space(description, demos)
    normalized = normalization.normalize_actions(chunks.reshape(-1, 16))
    assert np.all(np.abs(normalized.mean(0)) < 1e-6)


def test_trained_checkpoint_loads_like_any_pi0_checkpoint(tmp_path):
    description = load_robot("ur5e")
    reports = []
    path = train_demo_policy(description, tmp_path / "ckpt", QUICK, report=reports.append)
    assert {"model.safetensors", "config.json", "tokenizer.model"} <= {p.name for p in path.iterdir()}
    assert any("step    3/3" in line for line in reports)
    policy = Pi0Policy.from_checkpoint(path, robot_io(description))
    images = {c.name: np.zeros((24, 32, 3), np.uint8) for c in description.policy_cameras}
    state = np.array([description.joint(n).home for n in description.policy.state])
    actions = policy.infer(images, state, "reach forward").actions
    assert actions.shape == (50, 7) and np.all(np.isfinite(actions))


def test_demo_checkpoint_is_cached_per_description_and_settings(tmp_path):
    description = load_robot("franka")
    first = demo_checkpoint(description, QUICK, report=lambda line: None, cache=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = demo_checkpoint(description, QUICK, report=lambda line: pytest.fail("trained twice"), cache=tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    other = demo_checkpoint(
        description,
        DemoTraining(steps=2, batch_size=2, demonstrations=6, image_size=(32, 24)),
        report=lambda line: None,
        cache=tmp_path,
    )
    assert other != first
