import pytest

from pi0_ros.core.rate_monitor import RateMonitor


def test_rate_and_jitter_of_a_steady_stream_with_one_late_event():
    monitor = RateMonitor(period=0.02, max_age=10.0)
    times = [k * 0.02 for k in range(101)]
    times[50] += 0.004
    for t in times:
        monitor.record(t)
    stats = monitor.stats(now=2.0)
    assert stats.count == 100 and stats.rate_hz == pytest.approx(50.0)
    assert stats.jitter_p50_ms == pytest.approx(0.0, abs=1e-9) and stats.jitter_max_ms == pytest.approx(4.0)


def test_events_older_than_max_age_leave_the_window_so_idle_reads_zero():
    monitor = RateMonitor(period=0.02, max_age=2.0)
    for k in range(100):
        monitor.record(k * 0.02)
    assert monitor.stats(now=2.0).rate_hz == pytest.approx(50.0)
    assert monitor.stats(now=60.0).rate_hz == 0.0
    for k in range(3):
        monitor.record(60.0 + k * 0.02)
    resumed = monitor.stats(now=60.05)
    assert resumed.rate_hz == pytest.approx(50.0) and resumed.max_gap_ms == pytest.approx(20.0)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        RateMonitor(period=0.02, max_age=0.0)
