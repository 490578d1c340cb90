"""The runtime benchmark: its analysis on hand-made records and a short
end-to-end run of the real graph.

None of these tests asserts a timing: speed is what the benchmark prints, not what a test checks.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pi0_bringup.benchmark.support import (
    ChunkSample,
    CommandSample,
    StatusSample,
    bare_loop,
    command_timing,
    first_commands,
    hold_ticks,
)
from pi0_ros.core.chunk import Handover

PERIOD = 0.02
STREAMING, HOLDING = 2, 1


def ticks(start_stamp: float, count: int, skip: tuple = (), lose: tuple = (), late: dict | None = None) -> list:
    """Stamped commands every PERIOD; `skip` ticks are never published, `lose` ones published but not
    received, `late` ones ({tick: seconds}) run late."""
    samples, sequence = [], 0
    for k in range(count):
        if k in skip:
            continue
        sequence += 1
        if k in lose:
            continue
        stamp = start_stamp + k * PERIOD + (late or {}).get(k, 0.0)
        samples.append(CommandSample(stamp=stamp, published=stamp + 1e-4, received=stamp + 5e-4, sequence=sequence))
    return samples


def status(stamp: float, commands_sent: int, mode: int = STREAMING, goal: str = "g") -> StatusSample:
    return StatusSample(
        stamp=stamp,
        mode=mode,
        hold_reason="",
        goal_id=goal,
        commands_sent=commands_sent,
        jitter_p99_ms=0.0,
        command_rate_hz=50.0,
    )


def chunk(sequence: int, stamp: float, received: float, horizon: int = 50) -> ChunkSample:
    return ChunkSample(
        goal_id="g",
        sequence=sequence,
        stamp=stamp,
        step=PERIOD,
        horizon=horizon,
        ready_latency_ms=(received - stamp) * 1e3,
        received=received,
    )


# -- analysis ----------------------------------------------------------------------------------------


def test_command_timing_tells_skipped_ticks_from_lost_messages():
    timing = command_timing(
        "arm/joint_trajectory", "joint_trajectory", ticks(100.0, 50, skip=(10, 11), lose=(20,)), PERIOD
    )
    assert timing.skipped_ticks == 2
    assert timing.lost_messages == 1
    assert timing.messages == 47
    assert timing.stamped


def test_late_ticks_are_not_counted_as_skipped():
    late = {k: 0.017 for k in range(5, 60, 7)}
    timing = command_timing("arm/joint_trajectory", "joint_trajectory", ticks(100.0, 60, late=late), PERIOD)
    assert timing.skipped_ticks == 0
    late_and_skipped = command_timing(
        "arm/joint_trajectory", "joint_trajectory", ticks(100.0, 60, skip=(30,), late=late), PERIOD
    )
    assert late_and_skipped.skipped_ticks == 1


def test_unstamped_commands_use_the_publication_time():
    samples = [CommandSample(None, 100.0 + k * PERIOD, 100.0 + k * PERIOD + 1e-3, k + 1) for k in range(10)]
    timing = command_timing("gripper/commands", "forward_position", samples, PERIOD)
    assert not timing.stamped
    assert timing.skipped_ticks == 0
    assert timing.tick.count == 9


def test_hold_ticks_are_published_ticks_the_streamer_did_not_count_as_streaming():
    commands = ticks(100.0, 100)
    # Statuses after ticks 9 and 89: 80 ticks published in between, 75 of them streaming.
    statuses = [status(100.0 + 9 * PERIOD + 0.005, 10), status(100.0 + 89 * PERIOD + 0.005, 85, HOLDING)]
    assert hold_ticks(commands, statuses, "g") == 5
    assert hold_ticks(commands, statuses[:1], "g") is None
    assert hold_ticks(commands, statuses, "another goal") is None


def test_splice_attributes_a_chunk_to_the_first_tick_after_it_arrived():
    commands = ticks(100.0, 100)
    chunks = [chunk(1, 99.9, 100.005), chunk(2, 100.3, 100.41)]
    firsts = first_commands(chunks, commands, Handover.SPLICE, 0.2)
    assert firsts[1].stamp == pytest.approx(100.02)
    assert firsts[2].stamp == pytest.approx(100.42)


def test_wait_attributes_a_chunk_to_the_tick_after_the_previous_chunk_ran_out():
    commands = ticks(100.0, 100)
    chunks = [chunk(1, 99.9, 100.005, horizon=10), chunk(2, 100.0, 100.05, horizon=10)]
    firsts = first_commands(chunks, commands, Handover.WAIT, 0.2)
    # Chunk 1 restarts at 100.005 and covers 9 steps: up to 100.185; the tick at 100.20 takes chunk 2.
    assert firsts[1].stamp == pytest.approx(100.02)
    assert firsts[2].stamp == pytest.approx(100.20)


def test_bare_loop_ticks_are_increasing_and_no_more_than_the_window_holds():
    times = bare_loop(0.01, time.time(), 0.1)
    assert 0 < len(times) <= 10
    assert times == sorted(times)


# -- end to end -------------------------------------------------------------------------------------------

RESULT_FIELDS = {
    "config",
    "cpus",
    "window_s",
    "nominal_rate_hz",
    "commands",
    "streamer",
    "baseline",
    "jitter_ratio",
    "gaps",
    "latency",
    "inference",
    "sync_cost",
    "cpu",
    "targets",
    "passed",
}


def processes_with(token: str) -> list[str]:
    """Command lines of the live processes whose environment holds `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if token.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def run_benchmark(*args: str, timeout: float = 300.0) -> tuple[subprocess.CompletedProcess, str]:
    token = f"PI0_BENCHMARK_TEST_{uuid.uuid4().hex}"
    env = dict(os.environ, PI0_BENCHMARK_TEST_TOKEN=token)
    result = subprocess.run(
        [sys.executable, "-m", "pi0_bringup.benchmark.runtime", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return result, token


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc for leftover processes")
def test_benchmark_runs_the_graph_end_to_end_and_leaves_no_process_behind(tmp_path):
    output = tmp_path / "result.json"
    # This checks the benchmark's plumbing, not the machine: on a loaded machine the simulator's cameras can
    # stall past the default 0.5 s, which ends the goal (as it should on a robot) and the measurement with it.
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("/**/pi0_policy:\n  ros__parameters:\n    stale_observation_timeout_s: 5.0\n")
    result, token = run_benchmark(
        "--duration", "3", "--warmup", "1", "--image-size", "64x48", "--json", str(output), "--params-file", str(tuning)
    )
    assert result.returncode == 0, result.stderr
    assert processes_with(token) == []
    data = json.loads(output.read_text())
    assert set(data) >= RESULT_FIELDS
    assert {c["interface"] for c in data["commands"]} == {"joint_trajectory", "forward_position"}
    assert all(c["messages"] > 0 for c in data["commands"])
    assert data["baseline"]["count"] > 0
    assert data["inference"]["chunks"] > 0
    assert data["latency"]["chunks"] > 0
    assert {t["name"] for t in data["targets"]} >= {
        "command rate",
        "p99 jitter, streamer tick",
        "no gap between chunks",
    }
    for target in data["targets"]:
        assert ("PASS" if target["passed"] else "MISS") in result.stdout
    assert "ObservationSynchronizer.add_image" in result.stdout


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc for leftover processes")
def test_a_node_that_dies_at_start_fails_the_benchmark_with_its_output_and_no_process_behind():
    # The simulated robot refuses a camera rate above 120 Hz and exits.
    result, token = run_benchmark("--duration", "3", "--camera-rate", "500", timeout=120.0)
    kept_logs = re.search(r"child logs kept in (\S+)\)", result.stderr)
    if kept_logs:
        shutil.rmtree(kept_logs.group(1), ignore_errors=True)
    assert result.returncode == 1
    assert "sim_robot exited early" in result.stderr
    assert "camera_rate_hz" in result.stderr
    assert kept_logs, "a failed run says where the children's logs are"
    assert processes_with(token) == []
