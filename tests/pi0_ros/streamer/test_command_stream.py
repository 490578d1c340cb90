import numpy as np
import pytest

from pi0_ros.core.chunk import Handover, TimedChunk
from pi0_ros.streamer.command_limits import CommandLimiter
from pi0_ros.streamer.command_stream import CommandStream, StreamConfig, StreamMode

PERIOD = 0.02
NAMES = ("j0", "j1")


def make_stream(**overrides) -> CommandStream:
    settings = dict(
        control_period=PERIOD,
        lookahead_points=3,
        status_timeout=0.5,
        max_chunk_latency=1.0,
        hold_duration=1.0,
        handover=Handover.SPLICE,
    )
    settings.update(overrides)
    limiter = CommandLimiter(
        np.array([-2.0, -2.0]), np.array([2.0, 2.0]), np.array([0.05, 0.05]), np.array([False, False])
    )
    return CommandStream(StreamConfig(**settings), limiter, NAMES)


def timed(goal_id, sequence, stamp, flat_rows, step=PERIOD):
    """A received chunk (past the message gate) of `flat_rows` in NAMES order."""
    return TimedChunk(goal_id, sequence, stamp, step, np.asarray(flat_rows, dtype=float).reshape(-1, len(NAMES)))


def chunk_rows(values, horizon=50):
    """Flat row-major actions for NAMES with every row equal to `values`."""
    return list(np.tile(np.asarray(values, dtype=float), horizon))


def start(stream: CommandStream, now: float = 0.0, goal: str = "goal-a") -> None:
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, now)
    stream.on_status(True, goal, now)


def test_nothing_is_published_before_any_goal_even_with_chunks_and_joint_states():
    stream = make_stream()
    stream.on_joint_positions({"j0": 0.1, "j1": 0.2}, 0.0)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([1.0, 1.0])), now=0.01)
    tick = stream.tick(0.02)
    assert tick.mode is StreamMode.IDLE and tick.commands is None


def test_a_chunk_that_arrives_before_its_goal_status_is_used_once_the_goal_starts():
    stream = make_stream()
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, 0.0)
    stream.on_chunk(timed("goal-old", 1, 0.0, chunk_rows([-0.04, -0.04])), now=0.0)
    stream.on_chunk(timed("goal-a", 2, 0.0, chunk_rows([0.04, 0.04])), now=0.01)
    stream.on_status(True, "goal-a", 0.02)
    tick = stream.tick(0.03)
    assert tick.mode is StreamMode.STREAMING and tick.chunk_sequence == 2


def test_an_early_chunk_of_another_goal_is_not_used():
    stream = make_stream()
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, 0.0)
    stream.on_chunk(timed("goal-old", 1, 0.0, chunk_rows([-0.04, -0.04])), now=0.0)
    stream.on_status(True, "goal-a", 0.02)
    assert stream.tick(0.03).mode is StreamMode.HOLDING


def test_streams_the_chunk_limited_and_with_lookahead_points():
    stream = make_stream()
    start(stream)
    assert stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.01, -0.02])), now=0.01) is None
    tick = stream.tick(0.02)
    assert tick.mode is StreamMode.STREAMING and tick.chunk_sequence == 1
    assert tick.commands.shape == (4, 2)
    np.testing.assert_allclose(tick.commands[0], [0.01, -0.02])
    assert stream.commands_sent == 1


def test_a_far_chunk_is_approached_at_the_velocity_limit_not_jumped_to():
    stream = make_stream()
    start(stream)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([1.0, 1.0])), now=0.0)
    first = stream.tick(0.02)
    np.testing.assert_allclose(first.commands[0], [0.05, 0.05])
    assert first.clamped
    np.testing.assert_allclose(np.diff(first.commands, axis=0), 0.05), "lookahead also respects the limit"


def test_late_chunks_are_refused():
    stream = make_stream(max_chunk_latency=0.3)
    start(stream)
    refusal = stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.0, 0.0])), now=0.5)
    assert refusal and "500 ms after its observation" in refusal


def test_goal_end_holds_the_last_command_then_goes_idle():
    stream = make_stream(hold_duration=0.1)
    start(stream)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.03, 0.03])), now=0.0)
    last = stream.tick(0.02).commands[0]
    stream.on_status(False, "goal-a", 0.03)
    held = stream.tick(0.04)
    assert held.mode is StreamMode.HOLDING and held.hold_reason == "goal goal-a ended (policy status)"
    np.testing.assert_allclose(held.commands, np.tile(last, (4, 1)))
    assert stream.tick(0.2).mode is StreamMode.IDLE and stream.tick(0.2).commands is None


def test_exhausted_chunk_holds_until_a_new_one_arrives():
    stream = make_stream()
    start(stream)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.02, 0.02], horizon=5)), now=0.0)
    assert stream.tick(0.05).mode is StreamMode.STREAMING
    held = stream.tick(0.2)
    assert held.mode is StreamMode.HOLDING and "ran out" in held.hold_reason
    np.testing.assert_allclose(held.commands[0], [0.02, 0.02])


def test_stale_policy_status_stops_motion():
    stream = make_stream(status_timeout=0.1)
    start(stream, now=0.0)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.02, 0.02])), now=0.0)
    assert stream.tick(0.05).mode is StreamMode.STREAMING
    held = stream.tick(0.2)
    assert held.mode is StreamMode.HOLDING and "policy node lost" in held.hold_reason
    assert "policy node lost" in stream.tick(0.22).hold_reason, "the cause stays while holding"


def test_new_goal_starts_from_the_measured_pose_and_resets_counts():
    stream = make_stream()
    start(stream, goal="goal-a")
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.0, 0.0])), now=0.0)
    stream.tick(0.02)
    stream.on_status(False, "goal-a", 0.05)
    stream.on_joint_positions({"j0": 0.5, "j1": -0.5}, 1.9)
    stream.on_status(True, "goal-b", 2.0)
    assert stream.commands_sent == 0
    stream.on_chunk(timed("goal-b", 2, 2.0, chunk_rows([0.5, -0.5])), now=2.0)
    np.testing.assert_allclose(stream.tick(2.02).commands[0], [0.5, -0.5])


def test_a_preempting_goal_continues_from_the_last_command_not_the_lagging_measurement():
    stream = make_stream()
    start(stream, goal="goal-a")
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.5, 0.5])), now=0.0)
    for k in range(1, 11):
        commanded = stream.tick(k * PERIOD).commands[0]  # ramps at 0.05 per tick
    stream.on_joint_positions({"j0": 0.2, "j1": 0.2}, 0.2)  # the robot lags (or a gripper is blocked)
    stream.on_status(True, "goal-b", 0.21)
    held = stream.tick(0.22)
    assert held.mode is StreamMode.HOLDING
    np.testing.assert_allclose(held.commands[0], commanded)


def test_a_goal_after_idle_starts_from_a_fresh_measurement_and_waits_for_one():
    stream = make_stream(joint_state_timeout=0.5)
    start(stream, goal="goal-a")
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.0, 0.0])), now=0.0)
    stream.tick(PERIOD)
    stream.on_status(False, "goal-a", 0.05)
    assert stream.tick(5.0).commands is None  # idle after hold_duration
    stream.on_status(True, "goal-b", 10.0)
    stale = stream.tick(10.02)
    assert stale.commands is None and "fresh joint states" in stale.hold_reason
    stream.on_joint_positions({"j0": 0.3, "j1": -0.3}, 10.03)
    np.testing.assert_allclose(stream.tick(10.04).commands[0], [0.3, -0.3])


def test_without_joint_states_an_active_goal_publishes_nothing():
    stream = make_stream()
    stream.on_status(True, "goal-a", 0.0)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.0, 0.0])), now=0.0)
    tick = stream.tick(0.02)
    assert tick.commands is None and "joint states" in tick.hold_reason


def test_invalid_config_names_the_setting():
    with pytest.raises(ValueError, match="status_timeout"):
        StreamConfig(
            control_period=0.02,
            lookahead_points=1,
            status_timeout=0.01,
            max_chunk_latency=1.0,
            hold_duration=1.0,
            handover=Handover.SPLICE,
        )


def test_a_status_gap_holds_but_keeps_the_goal_and_its_command_count():
    stream = make_stream(status_timeout=0.1)
    start(stream, now=0.0)
    stream.on_chunk(timed("goal-a", 1, 0.0, chunk_rows([0.0, 0.0])), now=0.0)
    for k in range(1, 4):
        stream.tick(k * PERIOD)
    assert stream.commands_sent == 3
    assert stream.tick(0.3).mode is StreamMode.HOLDING
    stream.on_status(True, "goal-a", 0.31)
    stream.on_chunk(timed("goal-a", 2, 0.31, chunk_rows([0.0, 0.0])), now=0.31)
    assert stream.tick(0.32).mode is StreamMode.STREAMING and stream.commands_sent == 4


# -- implausible measurements are not a start pose (limits [-2, 2], 0.05 per tick = 2.5 units/s) ----------


def first_command_after_idle(stream: CommandStream, now: float):
    stream.on_status(True, "goal-a", now)
    stream.on_chunk(timed("goal-a", 1, now, chunk_rows([0.0, 0.0])), now=now)
    return stream.tick(now + 0.001)


@pytest.mark.parametrize("measured", [5.6, -2.2, np.nan, np.inf])
def test_a_measurement_outside_the_limits_makes_the_goal_wait_and_never_moves(measured):
    stream = make_stream(position_tolerance=0.05)
    assert stream.on_joint_positions({"j0": measured, "j1": 0.0}, 0.0), "reported as implausible"
    tick = first_command_after_idle(stream, 0.0)
    assert tick.mode is StreamMode.HOLDING and tick.commands is None
    assert "plausible joint states" in tick.hold_reason and "j0" in tick.hold_reason


def test_a_measurement_just_past_a_limit_is_approached_at_the_velocity_limit():
    stream = make_stream(position_tolerance=0.05)
    assert not stream.on_joint_positions({"j0": 2.04, "j1": 0.0}, 0.0)
    commands = [first_command_after_idle(stream, 0.0).commands[0]]
    for k in range(1, 4):
        commands.append(stream.tick(0.001 + k * PERIOD).commands[0])
    steps = np.abs(np.diff(np.array([[2.04, 0.0]] + commands), axis=0))
    assert np.all(steps <= 0.05 + 1e-12)
    assert commands[-1][0] < 2.0


def test_a_jump_faster_than_the_joint_can_move_is_ignored():
    stream = make_stream(position_tolerance=0.01)
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, 0.0)
    problems = stream.on_joint_positions({"j0": 1.9, "j1": 0.0}, 0.02)
    assert problems and "jumped" in problems[0]
    stream.on_joint_positions({"j0": 0.02, "j1": 0.0}, 0.04)  # the real pose again, moving slowly
    tick = first_command_after_idle(stream, 0.05)
    np.testing.assert_allclose(tick.commands[0], [0.0, 0.0], atol=0.05 + 1e-9)


def test_fast_real_motion_is_plausible():
    stream = make_stream(position_tolerance=0.0)
    for k in range(10):  # the joint at its velocity limit, 2.5 units/s, samples every 20 ms
        assert not stream.on_joint_positions({"j0": -1.0 + 0.05 * k, "j1": 0.0}, k * PERIOD)


def test_a_jump_is_plausible_once_the_joint_could_have_moved_there():
    stream = make_stream(position_tolerance=0.0, joint_state_timeout=5.0)
    stream.on_joint_positions({"j0": -1.0, "j1": 0.0}, 0.0)
    assert not stream.on_joint_positions({"j0": 1.0, "j1": 0.0}, 1.0), "2 units in 1 s at 2.5 units/s"
    tick = first_command_after_idle(stream, 1.0)
    assert tick.mode is StreamMode.STREAMING and tick.commands[0][0] == pytest.approx(0.95)


def test_start_problem_says_when_a_goal_could_not_be_streamed_yet():
    stream = make_stream(joint_state_timeout=0.5)
    assert "hears no policy_status" in stream.start_problem(0.0)
    stream.on_status(False, "", 0.0)
    assert "fresh joint states" in stream.start_problem(0.01)
    stream.on_joint_positions({"j0": 9.0, "j1": 0.0}, 0.02)
    assert "plausible joint states" in stream.start_problem(0.03)
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, 0.04)
    assert stream.start_problem(0.05) == ""
    assert "hears no policy_status" in stream.start_problem(0.6), "the policy status went quiet"
    stream.on_joint_positions({"j0": 0.0, "j1": 0.0}, 0.6)
    stream.on_status(True, "goal-a", 0.6)
    stream.on_chunk(timed("goal-a", 1, 0.6, chunk_rows([0.0, 0.0])), now=0.6)
    assert stream.tick(0.61).mode is StreamMode.STREAMING
    stream.on_status(True, "goal-a", 1.5)
    assert stream.tick(1.5).commands is not None
    assert stream.start_problem(1.51) == "", "while commanding, a new goal continues from the last command"
