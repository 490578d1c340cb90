import threading

import pytest

from pi0_ros.policy.goal_session import EndReason, GoalSession, instruction_problem, normalize_instruction


def test_first_stop_wins_even_when_racing():
    session = GoalSession("g", "fold", started=0.0)
    reasons = [EndReason.CANCELED, EndReason.PREEMPTED, EndReason.DURATION_REACHED] * 20
    threads = [threading.Thread(target=session.stop, args=(r, r.name)) for r in reasons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert session.ended.is_set() and not session.active
    assert session.outcome.message == session.outcome.reason.name


def test_the_end_hook_runs_once_and_sees_the_outcome():
    seen = []
    session = GoalSession("g", "fold", started=0.0, on_end=lambda: seen.append(session.outcome))
    threads = [threading.Thread(target=session.stop, args=(EndReason.CANCELED, "canceled")) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.check_duration(1e9)
    assert [outcome.reason for outcome in seen] == [EndReason.CANCELED]


def test_duration_and_chunk_limits_end_the_goal_successfully():
    timed = GoalSession("g", "fold", started=10.0, max_duration=2.0)
    timed.check_duration(11.9)
    assert timed.active
    timed.check_duration(12.0)
    assert timed.outcome.reason is EndReason.DURATION_REACHED and timed.outcome.reason.succeeded

    counted = GoalSession("g", "fold", started=0.0, max_chunks=2)
    assert counted.record_chunk(30.0) == 1 and counted.active
    counted.record_chunk(50.0)
    assert counted.outcome.reason is EndReason.CHUNK_LIMIT_REACHED


def test_a_waiting_goal_counts_its_duration_from_its_start():
    session = GoalSession("g", "fold", started=None, max_duration=2.0)
    assert session.waiting and not session.running
    session.check_duration(1e9)
    assert session.active and session.stats(now=50.0).elapsed == 0.0
    assert session.begin(10.0) and not session.begin(11.0), "starts once"
    assert session.running and not session.waiting and session.started == 10.0
    session.check_duration(11.9)
    assert session.active and session.stats(now=11.5).elapsed == 1.5
    session.check_duration(12.0)
    assert session.outcome.reason is EndReason.DURATION_REACHED

    canceled = GoalSession("g", "fold", started=None)
    canceled.stop(EndReason.CANCELED, "canceled")
    assert not canceled.begin(1.0) and not canceled.waiting and not canceled.running


@pytest.mark.parametrize(
    "text, problem",
    [
        ("fold the towel", ""),
        ("fold\tthe\r\ntowel\n", ""),  # tabs and line breaks are normalized, not refused
        ("   \t\n", "the instruction is empty"),
        ("x" * 21, "the instruction has 21 characters (max_instruction_chars is 20)"),
        ("fold\x00rm", "control character '\\x00' (U+0000) at index 4"),
        ("\x1b[2Jfold", "control character '\\x1b' (U+001B) at index 0"),
        ("fold\x7f", "control character '\\x7f' (U+007F) at index 4"),
        ("a\x85b", "control character '\\x85' (U+0085) at index 1"),  # C1 NEL: str.split() would eat it
        ("\x0bx", "control character '\\x0b' (U+000B) at index 0"),
    ],
)
def test_instruction_rules(text, problem):
    found = instruction_problem(text, max_chars=20)
    assert (problem in found) if problem else found == ""


def test_a_nul_is_cut_on_the_way_so_only_a_client_can_refuse_it():
    """rosidl's C conversion ends a string at its first NUL (when the client serializes it, and again when
    the server deserializes it): "fold\\x00..." reaches the policy node as "fold", which no server-side
    check can tell from a plain "fold". A client refuses it before sending with instruction_problem."""
    from rclpy.serialization import deserialize_message, serialize_message

    from pi0_msgs.action import ExecuteInstruction

    sent = ExecuteInstruction.Goal(instruction="fold\x00 and drop it")
    assert deserialize_message(serialize_message(sent), ExecuteInstruction.Goal).instruction == "fold"
    assert "U+0000" in instruction_problem(sent.instruction, max_chars=500)


def test_instructions_are_normalized_to_single_spaces():
    assert normalize_instruction("  fold\tthe\r\n  towel \n") == "fold the towel"


def test_stats_summarize_latencies_and_commands():
    session = GoalSession("g", "fold", started=1.0)
    for ms in (10.0, 20.0, 30.0):
        session.record_chunk(ms)
    session.set_commands_sent(120)
    session.set_commands_sent(100)  # a late, older status never lowers the count
    stats = session.stats(now=3.5)
    assert (stats.elapsed, stats.chunks, stats.commands_sent) == (2.5, 3, 120)
    assert stats.last_inference_ms == 30.0 and stats.latency_mean_ms == pytest.approx(20.0)
    assert stats.latency_max_ms == 30.0 and 20.0 < stats.latency_p95_ms <= 30.0


def test_end_reasons_match_the_action_definition():
    from pi0_msgs.action import ExecuteInstruction

    for reason in EndReason:
        assert getattr(ExecuteInstruction.Result, f"END_REASON_{reason.name}") == reason.value


def test_bad_duration_is_refused():
    with pytest.raises(ValueError, match="max_duration"):
        GoalSession("g", "fold", started=0.0, max_duration=-1.0)
