import threading

import pytest

from pi0_ros.goal_session import EndReason, GoalSession


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
