"""The demo policy: synthetic demonstrations and a tiny pi0 or pi0.5 trained on them, saved as a checkpoint."""

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
from pi0_model.checkpoint import read_config
from pi0_model.normalization import load_normalization
from pi0_model.policy import Pi0Policy
from pi0_ros.policy.model_loader import robot_io
from support.robots import ROBOT_NAMES

QUICK = DemoTraining(steps=3, batch_size=2, demonstrations=6, image_size=(32, 24))
QUICK_PI05 = DemoTraining(steps=3, batch_size=2, demonstrations=6, image_size=(32, 24), model_type="pi05")


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
    # pi0.5 normalizes by quantiles: the 1st..99th percentile of every moving dimension spans [-1, 1], and a
    # constant one (the base's angular velocity) gets a finite width instead of a division by zero.
    quantiles = normalization.with_mode("quantile").normalize_actions(chunks.reshape(-1, 16))
    assert np.all(np.isfinite(quantiles))
    moving = np.ptp(chunks.reshape(-1, 16), axis=0) > 0.1
    assert moving.any()
    low, high = np.quantile(quantiles[:, moving], [0.01, 0.99], axis=0)
    np.testing.assert_allclose(low, -1.0, atol=1e-4)
    np.testing.assert_allclose(high, 1.0, atol=1e-4)


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


def test_a_trained_pi05_checkpoint_has_quantile_stats_and_reads_the_state_in_its_prompt(tmp_path):
    description = load_robot("aloha")
    path = train_demo_policy(description, tmp_path / "ckpt", QUICK_PI05, report=lambda line: None)
    assert read_config(path).model_type == "pi05"
    stats = load_normalization(path / "norm_stats.json")
    assert stats.state.has_quantiles and stats.actions.has_quantiles
    policy = Pi0Policy.from_checkpoint(path, robot_io(description))
    images = {c.name: np.zeros((24, 32, 3), np.uint8) for c in description.policy_cameras}
    home = np.array([description.joint(n).home for n in description.policy.state])
    moved = home + 0.3
    noise = np.random.default_rng(0).normal(size=(50, 32))
    at_home = policy.infer(images, home, "reach forward", noise=noise).actions
    elsewhere = policy.infer(images, moved, "reach forward", noise=noise).actions
    assert at_home.shape == (50, 14) and np.all(np.isfinite(at_home))
    # pi0.5 reads the state only through the prompt: a different state gives a different chunk.
    assert not np.allclose(at_home, elsewhere)


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
    assert first.name.startswith("franka-pi0-"), "the model type is part of the key and the name"


def test_the_demo_reports_how_far_each_taught_goal_ended_from_its_pose():
    from pi0_bringup.demo import SETTLED_S, demo_goal_errors
    from pi0_bringup.demo_client import GoalReport
    from pi0_bringup.graph_client import CommandRecorder, ReceivedCommand

    description = load_robot("aloha")
    goal = dict(zip(description.policy.actions, goal_pose(description, "raise the arms")))
    commands = CommandRecorder()

    def send(at, offset=0.0):
        for group in description.joint_groups:
            values = tuple(goal[n] + (offset if n == "left_elbow" else 0.0) for n in group.joint_names)
            commands.add(ReceivedCommand(at, group.controller.name, values, None, at, at, 0))

    send(10.0 - 2 * SETTLED_S, offset=1.0)  # on the way: before the settled window
    send(10.0 - SETTLED_S / 2, offset=0.1)
    send(10.0, offset=0.3)
    send(10.5, offset=5.0)  # after the goal ended (hold, next goal)
    reports = [
        GoalReport("raise the arms", "duration reached", ended=10.0),
        GoalReport("fold the towel", "duration reached", ended=10.0),  # not taught: no goal pose
        GoalReport("go home", "rejected: no response"),
    ]
    errors = demo_goal_errors(description, reports, commands)
    assert list(errors) == [0]
    error, joint = errors[0]
    assert joint == "left_elbow" and error == pytest.approx(0.2)


def test_the_demo_takes_the_model_type_of_its_policy_but_not_of_a_checkpoint(tmp_path, capsys):
    from pi0_bringup.demo import parse_args

    assert parse_args([]).model == "pi0" and parse_args(["--model", "pi05"]).model == "pi05"
    assert parse_args(["--checkpoint", str(tmp_path)]).checkpoint == str(tmp_path)
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", str(tmp_path), "--model", "pi05"])
    assert "a --checkpoint decides its own model type" in capsys.readouterr().err
