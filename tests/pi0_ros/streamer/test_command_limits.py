import numpy as np
import pytest

from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.streamer.command_limits import CommandLimiter
from support.robots import ROBOTS_DIR

ROBOTS = ROBOTS_DIR


def simple_limiter() -> CommandLimiter:
    # dim 0: joint in [-1, 1], 0.1 per tick; dim 1: base velocity in [-0.5, 0.5], 0.02 per tick
    return CommandLimiter(np.array([-1.0, -0.5]), np.array([1.0, 0.5]), np.array([0.1, 0.02]), np.array([False, True]))


def test_targets_within_limits_pass_unchanged():
    result = simple_limiter().limit(np.array([0.05, 0.01]), np.zeros(2))
    np.testing.assert_allclose(result.command, [0.05, 0.01])
    assert not result.clamped and not result.nonfinite


def test_far_targets_move_at_most_one_step_per_tick_no_jump():
    limiter, command = simple_limiter(), np.zeros(2)
    trace = []
    for _ in range(30):
        result = limiter.limit(np.array([5.0, 3.0]), command)
        assert result.clamped
        assert np.all(np.abs(result.command - command) <= limiter.max_step + 1e-12)
        command = result.command
        trace.append(command.copy())
    np.testing.assert_allclose(trace[-1], [1.0, 0.5]), "ends at the position and velocity limits"


def test_nan_and_inf_keep_the_previous_value():
    result = simple_limiter().limit(np.array([np.nan, np.inf]), np.array([0.3, 0.1]))
    np.testing.assert_allclose(result.command, [0.3, 0.1])
    assert result.nonfinite and np.all(np.isfinite(result.command))


def test_previous_outside_limits_is_brought_back_inside_at_the_velocity_limit():
    limiter, command = simple_limiter(), np.array([1.35, 0.0])
    for _ in range(10):
        result = limiter.limit(np.array([1.5, 0.0]), command)
        assert abs(result.command[0] - command[0]) <= limiter.max_step[0] + 1e-12, "no jump into the limits"
        command = result.command
    assert command[0] == pytest.approx(1.0), "ends on the limit"


@pytest.mark.parametrize("previous", [4.6, -3.0, 1.0 + 1e-9])
def test_the_velocity_limit_holds_for_any_previous_and_target(previous):
    limiter = simple_limiter()
    rng = np.random.default_rng(0)
    for target in rng.uniform(-10, 10, size=(100, 1)):
        result = limiter.limit(np.array([target[0], 0.0]), np.array([previous, 0.0]))
        assert abs(result.command[0] - previous) <= limiter.max_step[0] + 1e-12


def test_hold_keeps_positions_and_stops_velocities():
    np.testing.assert_allclose(simple_limiter().hold(np.array([0.4, 0.3])), [0.4, 0.0])


def test_hold_past_a_limit_stays_where_it_is():
    np.testing.assert_allclose(simple_limiter().hold(np.array([1.03, 0.3])), [1.03, 0.0])


def test_limits_come_from_the_robot_description():
    description = load_robot_description(ROBOTS / "mobile_aloha.yaml")
    limiter = CommandLimiter.for_robot(description, period=0.02)
    assert limiter.dims == 16
    shoulder = description.policy.actions.index("left_shoulder")
    assert limiter.lower[shoulder] == pytest.approx(-1.85005)
    assert limiter.max_step[shoulder] == pytest.approx(3.14 * 0.02)
    assert limiter.is_velocity[-2:].all() and not limiter.is_velocity[:-2].any()
    assert limiter.upper[-2:] == pytest.approx([0.5, 1.0])
    assert limiter.max_step[-2:] == pytest.approx([1.0 * 0.02, 2.0 * 0.02])


def test_inconsistent_limits_are_refused():
    with pytest.raises(ValueError, match="lower < upper"):
        CommandLimiter(np.array([1.0]), np.array([0.0]), np.array([0.1]), np.array([False]))
