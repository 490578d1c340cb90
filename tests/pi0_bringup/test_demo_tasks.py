"""The demo's instructions, goal poses and the scripted demonstrations the demo policy is trained on."""

import numpy as np
import pytest

from pi0_bringup.demo_tasks import (
    DEMO_INSTRUCTIONS,
    DEMONSTRATION,
    RESET,
    ScriptSettings,
    episodes,
    goal_pose,
    script,
)
from pi0_bringup.robots import load_robot
from pi0_ros.core.robot_description import BASE_ACTION_NAMES
from support.robots import ROBOT_NAMES


def joint_columns(description):
    return np.array([n not in BASE_ACTION_NAMES for n in description.policy.actions])


def home_command(description):
    return np.array([0.0 if n in BASE_ACTION_NAMES else description.joint(n).home for n in description.policy.actions])


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_goal_poses_lie_within_the_limits_and_differ_per_instruction(robot):
    description = load_robot(robot)
    goals = {i: goal_pose(description, i) for i in DEMO_INSTRUCTIONS}
    for goal in goals.values():
        for name, value in zip(description.policy.actions, goal):
            if name not in BASE_ACTION_NAMES:
                joint = description.joint(name)
                assert joint.lower <= value <= joint.upper
    np.testing.assert_allclose(goals["go home"], home_command(description))
    assert np.abs(goals["reach forward"] - goals["raise the arms"]).max() > 0.1


def test_the_approach_is_rate_limited_and_depends_only_on_the_command_and_the_goal():
    period = 0.02
    command, goal = np.zeros(3), np.array([1.0, -0.5, 0.01])
    steps = [command]
    for _ in range(200):
        steps.append(DEMONSTRATION.step(steps[-1], goal, period))
    moves = np.abs(np.diff(steps, axis=0))
    assert moves.max() <= DEMONSTRATION.max_speed * period + 1e-12
    # far away: at the speed limit, all joints scaled alike (a straight line in joint space)
    np.testing.assert_allclose(moves[0].max(), DEMONSTRATION.max_speed * period)
    np.testing.assert_allclose(steps[1] / np.linalg.norm(steps[1]), goal / np.linalg.norm(goal))
    # close by: exponential, never overshooting
    assert np.abs(steps[-1] - goal).max() < 1e-3
    assert np.all(np.sign(goal - np.array(steps)) * np.sign(goal) >= 0)
    np.testing.assert_array_equal(DEMONSTRATION.step(steps[57], goal, period), steps[58])


@pytest.mark.parametrize("robot", ["aloha", "mobile_aloha"])
def test_the_script_resets_to_each_start_then_demonstrates_its_instruction_to_the_goal(robot):
    description = load_robot(robot)
    settings = ScriptSettings(episodes_per_instruction=4, seed=3)
    schedule = episodes(description, settings)
    assert len(schedule) == settings.episode_count == 12
    assert [e.instruction for e in schedule[:3]] == list(DEMO_INSTRUCTIONS), "interleaved"
    joints = joint_columns(description)
    goals = {i: goal_pose(description, i) for i in DEMO_INSTRUCTIONS}
    for number, episode in enumerate(schedule[:9]):  # the first three rounds start at each goal pose in turn
        anchor = goals[DEMO_INSTRUCTIONS[number // 3]]
        assert np.abs(episode.start - anchor)[joints].max() < 0.25
    ticks = list(script(description, schedule, settings))
    period = description.control_period
    per_episode = round(settings.reset_s / period) + round(settings.demonstration_s / period)
    assert len(ticks) == settings.episode_count * per_episode
    commands = np.array([t.command for t in ticks])
    for number, episode in enumerate(schedule):
        reset = commands[number * per_episode : number * per_episode + round(settings.reset_s / period)]
        shown = [t for t in ticks[number * per_episode : (number + 1) * per_episode] if t.episode == number]
        assert len(shown) == round(settings.demonstration_s / period)
        assert np.abs(reset[-1] - episode.start)[joints].max() < 0.05, "reset reaches the start pose"
        demonstrated = np.array([t.command for t in shown])
        assert np.abs(demonstrated[-1] - episode.goal)[joints].max() < 0.01, "the demonstration ends at the goal"
        np.testing.assert_array_equal(demonstrated[:, ~joints], np.tile(episode.goal[~joints], (len(shown), 1)))
        moves = np.abs(np.diff(demonstrated[:, joints], axis=0))
        assert moves.max() <= DEMONSTRATION.max_speed * period + 1e-12
    lower = np.array([description.joint(n).lower for n, j in zip(description.policy.actions, joints) if j])
    upper = np.array([description.joint(n).upper for n, j in zip(description.policy.actions, joints) if j])
    assert np.all(commands[:, joints] >= lower) and np.all(commands[:, joints] <= upper)
    assert np.abs(np.diff(commands[:, joints], axis=0)).max() <= RESET.max_speed * period + 1e-12


def test_the_script_is_the_same_for_a_seed_and_differs_between_seeds():
    description = load_robot("aloha")
    first = episodes(description, ScriptSettings(episodes_per_instruction=5, seed=1))
    again = episodes(description, ScriptSettings(episodes_per_instruction=5, seed=1))
    other = episodes(description, ScriptSettings(episodes_per_instruction=5, seed=2))
    assert all(np.array_equal(a.start, b.start) for a, b in zip(first, again))
    assert not all(np.array_equal(a.start, b.start) for a, b in zip(first, other))


@pytest.mark.parametrize("changes", [{"episodes_per_instruction": 0}, {"demonstration_s": 0.0}, {"reset_s": -1.0}])
def test_invalid_script_settings_are_refused(changes):
    with pytest.raises(ValueError, match="invalid demonstration script"):
        ScriptSettings(**changes)


def test_the_demo_checks_where_each_demo_goal_ended_and_how_smoothly_it_got_there():
    from pi0_bringup.demo import GOAL_TOLERANCE, SETTLED_S, demo_goal_checks
    from pi0_bringup.demo_client import GoalReport
    from pi0_bringup.graph_client import CommandRecorder, ReceivedCommand

    description = load_robot("aloha")
    goal = dict(zip(description.policy.actions, goal_pose(description, "raise the arms")))
    commands = CommandRecorder()

    def send(at, offset=0.0):
        for group in description.joint_groups:
            values = tuple(goal[n] + (offset if n == "left_elbow" else 0.0) for n in group.joint_names)
            commands.add(ReceivedCommand(at, group.controller.name, values, None, at, at, 0))

    send(7.0, offset=9.0)  # before the goal started
    send(10.0 - 2 * SETTLED_S, offset=1.0)  # on the way: before the settled window
    send(10.0 - SETTLED_S / 2, offset=0.1)
    send(10.0, offset=0.3)
    send(10.5, offset=5.0)  # after the goal ended (hold, next goal)
    reports = [
        GoalReport("raise the arms", "duration reached", started=8.0, ended=10.0),
        GoalReport("fold the towel", "duration reached", started=8.0, ended=10.0),  # not a demo instruction
        GoalReport("go home", "rejected: no response"),
    ]
    checks = demo_goal_checks(description, reports, commands)
    assert list(checks) == [0]
    check = checks[0]
    assert check.worst_joint == "left_elbow" and check.error == pytest.approx(0.2)
    assert check.reached == (GOAL_TOLERANCE >= 0.2)
    assert check.step_max == pytest.approx(0.9), "from 1.0 to 0.1 within the goal; not the 9.0 before it"
