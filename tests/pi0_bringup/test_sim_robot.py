"""The simulated robot's core: controller semantics, limits and base integration (no ROS graph)."""

import math

import numpy as np
import pytest

from pi0_bringup.sim_robot import CommandRejected, SimConfig, SimRobot, TrajectoryPoint
from pi0_ros.core.robot_description import load_robot_description
from support.robots import robot_yaml

DT = 0.02  # the descriptions' 50 Hz control rate

LEFT_ARM = ("left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle", "left_wrist_rotate")
HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])


@pytest.fixture(scope="module")
def aloha():
    return load_robot_description(robot_yaml("aloha"))


@pytest.fixture(scope="module")
def mobile_aloha():
    return load_robot_description(robot_yaml("mobile_aloha"))


def started(description, config=None, at=0.0):
    robot = SimRobot(description, config or SimConfig())
    robot.step(at)
    return robot


def run(robot, start, end, dt=DT):
    """Steps from `start` to `end` at `dt`; returns [(time, positions, velocities)] after each step."""
    trace = []
    for k in range(1, round((end - start) / dt) + 1):
        time = start + k * dt
        robot.step(time)
        state = robot.state()
        trace.append((time, state.positions.copy(), state.velocities.copy()))
    return trace


def arm(robot):
    state = robot.state()
    return np.array([state.position(n) for n in LEFT_ARM])


def point(t, *positions):
    return TrajectoryPoint(t, tuple(float(p) for p in positions))


# --- start-up --------------------------------------------------------------------------------------------


def test_starts_at_home_and_holds_without_commands(aloha):
    robot = started(aloha)
    run(robot, 0.0, 1.0)
    state = robot.state()
    assert state.joint_names == aloha.joint_names
    np.testing.assert_allclose(state.positions, [j.home for j in aloha.joints])
    np.testing.assert_allclose(state.velocities, 0.0)
    assert state.base is None


def test_state_snapshot_is_read_only_and_independent(aloha):
    robot = started(aloha)
    state = robot.state()
    with pytest.raises(ValueError):
        state.positions[0] = 1.0
    robot.command_positions("left_gripper_controller", [1.0])
    run(robot, 0.0, 0.5)
    assert state.position("left_gripper") == 0.5


# --- joint_trajectory_controller ---------------------------------------------------------------------------


def test_trajectory_is_sampled_by_linear_interpolation_and_last_point_held(aloha):
    # Slow trajectory, so the joints track it closely without hitting limits.
    robot = started(aloha)
    goal = HOME + 0.2
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(2.0, *goal)], None, now=0.0)
    trace = run(robot, 0.0, 3.0)
    at_one_second = trace[49][1][:6]
    np.testing.assert_allclose(at_one_second, HOME + 0.1, atol=0.01)  # halfway in time, halfway in space
    np.testing.assert_allclose(arm(robot), goal, atol=1e-9)
    np.testing.assert_allclose(robot.state().velocities[:6], 0.0, atol=1e-9)


def test_stamp_zero_starts_from_current_state_at_receipt(aloha):
    robot = started(aloha, at=10.0)
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(1.0, *(HOME + 0.1))], None, now=10.0)
    trace = run(robot, 10.0, 10.5)
    np.testing.assert_allclose(trace[-1][1][:6], HOME + 0.05, atol=0.01)


def test_new_trajectory_replaces_the_old_one(aloha):
    robot = started(aloha)
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(1.0, *(HOME + 0.3))], None, now=0.0)
    run(robot, 0.0, 0.2)
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(0.5, *HOME)], None, now=0.2)
    run(robot, 0.2, 1.5)
    np.testing.assert_allclose(arm(robot), HOME, atol=1e-9)


def test_future_start_time_interpolates_from_receipt_to_first_point(aloha):
    robot = started(aloha)
    points = [point(0.0, *(HOME + 0.1)), point(1.0, *(HOME + 0.2))]
    robot.command_trajectory("left_arm_controller", LEFT_ARM, points, start_time=1.0, now=0.0)
    trace = run(robot, 0.0, 2.5)
    np.testing.assert_allclose(trace[24][1][:6], HOME + 0.05, atol=0.01)  # t=0.5: halfway to the first point
    np.testing.assert_allclose(trace[74][1][:6], HOME + 0.15, atol=0.01)  # t=1.5: halfway between the points
    np.testing.assert_allclose(arm(robot), HOME + 0.2, atol=1e-9)


def test_trajectory_ending_in_the_past_is_rejected_and_counted(aloha):
    robot = started(aloha, at=5.0)
    with pytest.raises(CommandRejected, match="ends in the past"):
        robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(1.0, *(HOME + 0.3))], start_time=3.0, now=5.0)
    assert robot.rejections == {"left_arm_controller": 1}
    run(robot, 5.0, 6.0)
    np.testing.assert_allclose(arm(robot), HOME)


def test_trajectory_started_in_the_past_that_ends_in_the_future_is_accepted(aloha):
    robot = started(aloha, at=5.0)
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(2.0, *(HOME + 0.1))], start_time=4.0, now=5.0)
    run(robot, 5.0, 7.0)
    np.testing.assert_allclose(arm(robot), HOME + 0.1, atol=1e-9)
    assert robot.rejections == {}


@pytest.mark.parametrize("times", [(0.5, 0.5), (0.5, 0.4)])
def test_time_from_start_must_strictly_increase(aloha, times):
    robot = started(aloha)
    points = [point(t, *HOME) for t in times]
    with pytest.raises(CommandRejected, match="strictly increasing"):
        robot.command_trajectory("left_arm_controller", LEFT_ARM, points, None, now=0.0)


def test_subset_and_reordered_joint_names_map_by_name(aloha):
    robot = started(aloha)
    names = ("left_elbow", "left_waist")
    robot.command_trajectory("left_arm_controller", names, [point(0.5, 1.0, 0.4)], None, now=0.0)
    run(robot, 0.0, 1.5)
    expected = HOME.copy()
    expected[2], expected[0] = 1.0, 0.4
    np.testing.assert_allclose(arm(robot), expected, atol=1e-9)


def test_partial_goals_can_be_refused_like_the_real_default(aloha):
    robot = started(aloha, SimConfig(allow_partial_joints_goal=False))
    with pytest.raises(CommandRejected, match="don't match"):
        robot.command_trajectory("left_arm_controller", ("left_waist",), [point(0.5, 0.4)], None, now=0.0)


@pytest.mark.parametrize(
    "names, points, reason",
    [
        (("left_waist", "right_waist"), [point(0.5, 0.1, 0.1)], "unknown joint"),
        (("left_waist", "left_waist"), [point(0.5, 0.1, 0.1)], "twice"),
        ((), [point(0.5)], "empty joint names"),
        (("left_waist",), [], "no points"),
        (("left_waist", "left_elbow"), [point(0.5, 0.1)], "1 positions for 2"),
        (("left_waist",), [point(0.5, math.nan)], "NaN"),
        (("left_waist",), [TrajectoryPoint(0.5, (0.1,), (0.0, 0.0))], "2 velocities"),
    ],
)
def test_malformed_trajectories_are_rejected_with_a_reason(aloha, names, points, reason):
    robot = started(aloha)
    with pytest.raises(CommandRejected, match=reason):
        robot.command_trajectory("left_arm_controller", names, points, None, now=0.0)
    assert robot.rejections["left_arm_controller"] == 1
    run(robot, 0.0, 0.5)
    np.testing.assert_allclose(arm(robot), HOME)


def test_rejected_trajectory_keeps_the_active_one(aloha):
    robot = started(aloha)
    robot.command_trajectory("left_arm_controller", LEFT_ARM, [point(0.5, *(HOME + 0.2))], None, now=0.0)
    run(robot, 0.0, 0.2)
    with pytest.raises(CommandRejected):
        robot.command_trajectory("left_arm_controller", ("bogus",), [point(0.5, 0.0)], None, now=0.2)
    run(robot, 0.2, 1.5)
    np.testing.assert_allclose(arm(robot), HOME + 0.2, atol=1e-9)


# --- limits ------------------------------------------------------------------------------------------------


def test_joints_respect_velocity_acceleration_and_position_limits(aloha):
    config = SimConfig(acceleration_time=0.1)
    robot = started(aloha, config)
    waist = aloha.joint("left_waist")
    # A jump far beyond the position limit, due immediately.
    robot.command_trajectory("left_arm_controller", ("left_waist",), [point(0.0, 10.0)], None, now=0.0)
    trace = run(robot, 0.0, 3.0, dt=0.01)
    positions = np.array([p[0] for _, p, _ in trace])
    velocities = np.array([v[0] for _, _, v in trace])
    max_acceleration = waist.max_velocity / config.acceleration_time
    assert np.max(np.abs(np.diff(positions))) <= waist.max_velocity * 0.01 + 1e-9
    assert np.max(np.abs(np.diff(velocities))) <= max_acceleration * 0.01 + 1e-9
    assert np.max(np.abs(velocities)) == pytest.approx(waist.max_velocity)
    assert positions.max() == pytest.approx(waist.upper)
    assert positions.max() <= waist.upper
    # It takes at least distance / max_velocity to get there.
    reached = np.argmax(positions >= waist.upper - 1e-6) * 0.01
    assert reached >= (waist.upper - waist.home) / waist.max_velocity


def test_step_tracking_does_not_overshoot(aloha):
    robot = started(aloha)
    robot.command_positions("left_gripper_controller", [1.0])
    trace = run(robot, 0.0, 1.0)
    gripper = np.array([p[6] for _, p, _ in trace])
    assert gripper.max() <= 1.0 + 1e-9
    assert gripper[-1] == pytest.approx(1.0)
    assert np.all(np.diff(gripper) >= -1e-12)


def test_a_long_gap_between_steps_is_integrated_in_substeps(aloha):
    robot = started(aloha)
    robot.command_positions("left_gripper_controller", [1.0])
    robot.step(0.1)
    # Ten 0.01 s sub-steps accelerating at 20 rad/s^2 (0.2 rad/s per sub-step) travel 0.01 * 0.2 * (1 + ... + 10);
    # one 0.1 s step would have jumped to 2 rad/s and travelled 0.2.
    assert robot.state().position("left_gripper") == pytest.approx(0.5 + 0.01 * 0.2 * 55)
    assert robot.state().velocities[6] == pytest.approx(2.0)


def test_clock_jumping_back_restarts_without_moving(aloha):
    robot = started(aloha, at=100.0)
    robot.command_positions("left_gripper_controller", [1.0])
    robot.step(1.0)
    assert robot.state().position("left_gripper") == 0.5
    assert robot.state().time == 1.0


# --- forward_position_controller --------------------------------------------------------------------------


def test_forward_command_is_held_until_the_next(aloha):
    robot = started(aloha)
    robot.command_positions("left_gripper_controller", [0.9])
    run(robot, 0.0, 1.0)
    assert robot.state().position("left_gripper") == pytest.approx(0.9)
    run(robot, 1.0, 2.0)
    assert robot.state().position("left_gripper") == pytest.approx(0.9)


@pytest.mark.parametrize(
    "values, reason", [([0.1, 0.2], "size"), ([], "size"), ([math.nan], "NaN"), ([math.inf], "NaN")]
)
def test_bad_forward_commands_are_rejected_and_the_last_is_held(aloha, values, reason):
    robot = started(aloha)
    robot.command_positions("left_gripper_controller", [0.9])
    with pytest.raises(CommandRejected, match=reason):
        robot.command_positions("left_gripper_controller", values)
    assert robot.rejections == {"left_gripper_controller": 1}
    run(robot, 0.0, 1.0)
    assert robot.state().position("left_gripper") == pytest.approx(0.9)


def test_forward_command_beyond_limits_is_clamped(aloha):
    robot = started(aloha)
    robot.command_positions("right_gripper_controller", [-3.0])
    run(robot, 0.0, 1.0)
    assert robot.state().position("right_gripper") == 0.0


def test_commands_for_unknown_or_mismatched_controllers_raise_key_error(aloha):
    robot = started(aloha)
    with pytest.raises(KeyError):
        robot.command_positions("left_arm_controller", [0.0] * 6)
    with pytest.raises(KeyError):
        robot.command_trajectory("nope", LEFT_ARM, [point(1.0, *HOME)], None, now=0.0)
    with pytest.raises(KeyError):
        robot.command_base(0.1, 0.0, None, now=0.0)


# --- diff drive base ----------------------------------------------------------------------------------------


def stream_base(robot, linear, angular, start, end, dt=DT):
    """Re-sends the command every step, as a 50 Hz streamer does."""
    for k in range(1, round((end - start) / dt) + 1):
        time = start + k * dt
        robot.command_base(linear, angular, None, now=time)
        robot.step(time)


def test_base_drives_straight_and_turns_in_place(mobile_aloha):
    robot = started(mobile_aloha)
    stream_base(robot, 0.4, 0.0, 0.0, 2.0)
    base = robot.state().base
    # 0.4 s of ramp at 1 m/s^2 (0.08 m) then 1.6 s at 0.4 m/s.
    assert base.x == pytest.approx(0.08 + 0.64, abs=0.01)
    assert base.y == pytest.approx(0.0, abs=1e-9)
    assert base.linear_x == pytest.approx(0.4)
    robot = started(mobile_aloha)
    stream_base(robot, 0.0, 0.5, 0.0, 2.0)
    base = robot.state().base
    assert (base.x, base.y) == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9))
    assert base.yaw == pytest.approx(0.5 * 2.0 - 0.5 * 0.25 * 0.5, abs=0.01)  # minus the 0.25 s ramp's deficit


def test_base_arc_follows_the_unicycle_model(mobile_aloha):
    robot = started(mobile_aloha)
    stream_base(robot, 0.3, 0.6, 0.0, 4.0)
    base = robot.state().base
    # Once at speed it moves on a circle of radius v / w = 0.5 m; distance from that circle's centre stays 0.5.
    centre = np.array([base.x, base.y]) + 0.5 * np.array([-math.sin(base.yaw), math.cos(base.yaw)])
    robot2 = started(mobile_aloha)
    stream_base(robot2, 0.3, 0.6, 0.0, 3.0)
    earlier = robot2.state().base
    assert np.linalg.norm(np.array([earlier.x, earlier.y]) - centre) == pytest.approx(0.5, abs=0.005)


def test_base_velocity_and_acceleration_are_limited(mobile_aloha):
    robot = started(mobile_aloha)
    linear = []
    for k in range(1, 101):
        robot.command_base(5.0, -5.0, None, now=k * DT)
        robot.step(k * DT)
        linear.append((robot.state().base.linear_x, robot.state().base.angular_z))
    linear = np.array(linear)
    assert np.max(np.abs(np.diff(linear[:, 0]))) <= 1.0 * DT + 1e-9
    assert np.max(np.abs(np.diff(linear[:, 1]))) <= 2.0 * DT + 1e-9
    assert linear[-1, 0] == pytest.approx(0.5) and linear[-1, 1] == pytest.approx(-1.0)


def test_base_stops_after_the_command_timeout(mobile_aloha):
    robot = started(mobile_aloha)
    stream_base(robot, 0.5, 0.0, 0.0, 1.0)
    assert robot.state().base.linear_x == pytest.approx(0.5)
    run(robot, 1.0, 1.5)  # no new command, within the 0.5 s timeout: keeps going
    assert robot.state().base.linear_x == pytest.approx(0.5)
    run(robot, 1.5, 2.5)  # timed out: decelerates at 1 m/s^2 to a stop
    assert robot.state().base.linear_x == 0.0
    x = robot.state().base.x
    run(robot, 2.5, 3.0)
    assert robot.state().base.x == x


def test_stale_stamped_base_command_is_ignored(mobile_aloha):
    robot = started(mobile_aloha, at=10.0)
    robot.command_base(0.5, 0.0, stamp=9.0, now=10.0)  # older than the 0.5 s timeout
    run(robot, 10.0, 11.0)
    assert robot.state().base.x == 0.0


def test_nan_base_command_is_rejected_and_previous_kept(mobile_aloha):
    robot = started(mobile_aloha)
    robot.command_base(0.2, 0.0, None, now=0.0)
    with pytest.raises(CommandRejected, match="NaN"):
        robot.command_base(math.nan, 0.0, None, now=0.1)
    assert robot.rejections == {"base_controller": 1}
    run(robot, 0.0, 0.4)
    assert robot.state().base.linear_x == pytest.approx(0.2)


def test_sim_config_validates():
    with pytest.raises(ValueError, match="cmd_vel_timeout"):
        SimConfig(cmd_vel_timeout=0.0)
    with pytest.raises(ValueError, match="acceleration_time"):
        SimConfig(acceleration_time=math.nan)
