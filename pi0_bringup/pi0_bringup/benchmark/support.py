"""Plumbing of the runtime benchmark that needs no ROS graph: the bare-loop baseline and the
analysis of what the benchmark recorded (its processes are pi0_bringup.supervisor's).

Kept free of rclpy imports so that the baseline child (``python -m
pi0_bringup.benchmark.support bare-loop PERIOD START_AT DURATION``) starts quickly and the
analysis is unit-testable on plain records.

Clocks: every time in the records is system time in float seconds (header
stamps, DDS source and reception timestamps all use it), so stamps written in
one process compare with receptions in another. The bare loop uses the
monotonic clock; only its intervals are used.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi0_bringup.supervisor import ProcessExitedError
from pi0_ros.core.chunk import Handover, TimedChunk
from pi0_ros.core.rate_monitor import RateStats, rate_stats
from pi0_ros.streamer.chunk_schedule import ChunkScheduler

# -- bare-loop baseline ----------------------------------------------------------------------------


def bare_loop(period: float, start_at: float, duration: float) -> list[float]:
    """Wake-up times (monotonic s) of a plain absolute-deadline loop: the machine's noise floor.

    Starts at system time `start_at`, so that it covers the same window as the graph
    measurement and its own interpreter start-up happens before. Missed deadlines are
    skipped, as an rcl timer skips missed periods, so a stall shows as one long interval
    in both and their jitter compares like for like.
    """
    time.sleep(max(0.0, start_at - time.time()))
    start = time.monotonic()
    end = start + duration
    times: list[float] = []
    deadline = start + period
    while deadline <= end:
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        times.append(now)
        deadline += period * (int((now - deadline) / period) + 1)
    return times


def bare_loop_command(period: float, start_at: float, duration: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pi0_bringup.benchmark.support",
        "bare-loop",
        repr(period),
        repr(start_at),
        repr(duration),
    ]


def parse_bare_loop_output(text: str) -> list[float]:
    try:
        return [float(t) for t in json.loads(text)]
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ProcessExitedError(f"the bare-loop baseline printed no tick times: {exc}") from None


# -- CPU usage ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float  # monotonic s
    machine: tuple[int, ...]  # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
    processes: Mapping[str, int]  # process name -> utime + stime, clock ticks


@dataclass(frozen=True)
class CpuUsage:
    """Where the machine's CPU time went during the window; explains jitter that the code does not."""

    machine_busy_pct: float  # of all CPUs together (100 = every core busy)
    steal_pct: float  # time the hypervisor gave our virtual CPUs to someone else
    process_pct: Mapping[str, float]  # process -> % of one core


def cpu_snapshot(pids: Mapping[str, int]) -> CpuSnapshot | None:
    """None where /proc is not available (not Linux)."""
    try:
        machine = tuple(int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:])
    except (OSError, ValueError, IndexError):
        return None
    return CpuSnapshot(time.monotonic(), machine, {name: _process_ticks(pid) for name, pid in pids.items()})


def _process_ticks(pid: int) -> int:
    try:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def cpu_usage(before: CpuSnapshot | None, after: CpuSnapshot | None) -> CpuUsage | None:
    if before is None or after is None or after.wall <= before.wall:
        return None
    delta = [b - a for a, b in zip(before.machine, after.machine)]
    total = sum(delta[:8]) or 1
    idle = delta[3] + delta[4]
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    elapsed = after.wall - before.wall
    return CpuUsage(
        machine_busy_pct=100.0 * (total - idle) / total,
        steal_pct=100.0 * delta[7] / total,
        process_pct={
            name: 100.0 * (after.processes[name] - ticks) / ticks_per_s / elapsed
            for name, ticks in before.processes.items()
            if name in after.processes
        },
    )


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandSample:
    stamp: float | None  # header stamp = the streamer's tick time; None for unstamped messages
    published: float  # DDS source timestamp (after the message was built)
    received: float  # DDS reception timestamp in the benchmark process
    sequence: int  # publication sequence number of the streamer's publisher

    @property
    def tick_time(self) -> float:
        return self.published if self.stamp is None else self.stamp


@dataclass(frozen=True)
class ChunkSample:
    goal_id: str
    sequence: int
    stamp: float  # observation time t_obs (header stamp)
    step: float  # s between rows
    horizon: int
    ready_latency_ms: float  # t_obs to chunk ready, as the policy node reports it
    received: float  # DDS reception timestamp in the benchmark process


@dataclass(frozen=True)
class StatusSample:
    stamp: float
    mode: int
    hold_reason: str
    goal_id: str
    commands_sent: int
    jitter_p99_ms: float
    command_rate_hz: float


# -- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p95: float
    p99: float
    max: float


def summarize(values: Iterable[float]) -> Summary | None:
    data = np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return None
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return Summary(int(data.size), float(p50), float(p95), float(p99), float(data.max()))


@dataclass(frozen=True)
class CommandTiming:
    """Timing of one controller command topic over the measurement window."""

    topic: str
    interface: str
    messages: int
    rate_hz: float  # from tick times (header stamps, else DDS source timestamps)
    rate_error_pct: float  # (rate - nominal) / nominal
    tick: RateStats  # header stamps: when the streamer's timer callback ran (DDS source timestamps if unstamped)
    published: RateStats  # DDS source timestamps
    received: RateStats  # DDS reception timestamps in the benchmark process
    stamped: bool
    skipped_ticks: int  # control periods in which the streamer published nothing
    lost_messages: int  # published but never received (publication sequence gaps)


def command_timing(topic: str, interface: str, samples: Sequence[CommandSample], period: float) -> CommandTiming:
    samples = sorted(samples, key=lambda s: s.sequence)
    ticks = [s.tick_time for s in samples]
    tick = rate_stats(ticks, period)
    sequences = np.array([s.sequence for s in samples], dtype=np.int64)
    lost = int(np.sum(np.maximum(np.diff(sequences) - 1, 0))) if sequences.size > 1 else 0
    return CommandTiming(
        topic=topic,
        interface=interface,
        messages=len(samples),
        rate_hz=tick.rate_hz,
        rate_error_pct=(tick.rate_hz * period - 1.0) * 100.0 if tick.count else 0.0,
        tick=tick,
        published=rate_stats([s.published for s in samples], period),
        received=rate_stats(sorted(s.received for s in samples), period),
        stamped=bool(samples) and all(s.stamp is not None for s in samples),
        skipped_ticks=_skipped_ticks(ticks, sequences, period),
        lost_messages=lost,
    )


def _skipped_ticks(ticks: Sequence[float], sequences: np.ndarray, period: float, edge: int = 10) -> int:
    """Control periods in which nothing was published.

    A late tick is not a missing one, so long intervals alone would mistake lateness for gaps.
    The timer keeps its phase, though (an rcl timer skips missed periods rather than drifting):
    between two ticks that ran equally late the number of elapsed periods is exact, and the
    publication sequence numbers say how many ticks were published in between. The pair is
    taken from the first and last `edge` ticks, as the one whose separation is closest to a
    whole number of periods.
    """
    if len(ticks) < 2:
        return 0
    times = np.asarray(ticks)
    count = min(edge, len(times) // 2)
    first, last = np.arange(count), np.arange(len(times) - count, len(times))
    spans = (times[last][None, :] - times[first][:, None]) / period
    i, j = np.unravel_index(np.argmin(np.abs(spans - np.rint(spans))), spans.shape)
    published = int(sequences[last[j]] - sequences[first[i]])
    return max(0, int(np.rint(spans[i, j])) - published)


@dataclass(frozen=True)
class ChunkGaps:
    """Evidence of ticks without a chunk to execute."""

    hold_ticks: int | None  # ticks published as a hold (not streaming); None when not measurable
    holding_statuses: int  # streamer_status messages in HOLDING mode
    hold_reasons: tuple[str, ...]  # distinct hold reasons the streamer reported
    skipped_ticks: int  # control periods without any command (from the stamped topic)
    lost_messages: int  # commands lost between the streamer and the benchmark

    @property
    def none(self) -> bool:
        return not (self.hold_ticks or self.holding_statuses or self.skipped_ticks or self.lost_messages)


HOLDING_MODE = 1  # pi0_msgs/StreamerStatus.MODE_HOLDING


def chunk_gaps(
    commands: Sequence[CommandSample], statuses: Sequence[StatusSample], goal_id: str, timing: CommandTiming
) -> ChunkGaps:
    holding = [s for s in statuses if s.mode == HOLDING_MODE]
    return ChunkGaps(
        hold_ticks=hold_ticks(commands, statuses, goal_id),
        holding_statuses=len(holding),
        hold_reasons=tuple(dict.fromkeys(s.hold_reason for s in holding)),
        skipped_ticks=timing.skipped_ticks,
        lost_messages=timing.lost_messages,
    )


def hold_ticks(commands: Sequence[CommandSample], statuses: Sequence[StatusSample], goal_id: str) -> int | None:
    """Ticks the streamer published between its first and last status of the goal, minus its streaming ticks.

    The streamer counts streaming ticks in commands_sent and stamps its status after every tick
    that ran before it (one executor, one clock), so with stamped commands this count is exact.
    """
    goal = sorted((s for s in statuses if s.goal_id == goal_id), key=lambda s: s.stamp)
    stamped = sorted((c for c in commands if c.stamp is not None), key=lambda c: c.sequence)
    if len(goal) < 2 or not stamped:
        return None
    first, last = goal[0], goal[-1]
    published = _sequence_at(stamped, last.stamp) - _sequence_at(stamped, first.stamp)
    return max(0, published - (last.commands_sent - first.commands_sent))


def _sequence_at(commands: Sequence[CommandSample], t: float) -> int:
    before = [c.sequence for c in commands if c.stamp is not None and c.stamp <= t]
    return max(before) if before else commands[0].sequence - 1


@dataclass(frozen=True)
class ChunkLatency:
    """Observation-to-command latency of the chunks received in the window (ms)."""

    chunks: int  # chunks whose first command was found
    obs_to_chunk_ready: Summary | None  # t_obs -> chunk ready in the policy node (its report)
    obs_to_chunk_received: Summary | None  # t_obs -> chunk received by the benchmark (DDS)
    obs_to_first_command_tick: Summary | None  # t_obs -> tick time of the first command from the chunk
    obs_to_first_command_received: Summary | None  # t_obs -> that command received by the benchmark


def first_commands(
    chunks: Sequence[ChunkSample], ticks: Sequence[CommandSample], handover: Handover, blend_duration: float
) -> dict[int, CommandSample]:
    """The first command each chunk produced, by replaying the streamer's scheduler.

    Chunks are offered at their reception time in the benchmark process, a proxy for their
    reception in the streamer (same host, same topic), and every stamped tick asks the
    scheduler which chunk it executes. The attribution can be off by one control period
    when a chunk reaches the streamer on the other side of a tick than it reached us.
    """
    scheduler = ChunkScheduler(handover, blend_duration)
    pending = sorted(chunks, key=lambda c: c.received)
    found: dict[int, CommandSample] = {}
    index = 0
    for tick in sorted((t for t in ticks if t.stamp is not None), key=lambda t: t.stamp):
        while index < len(pending) and pending[index].received <= tick.stamp:
            chunk = pending[index]
            scheduler.offer(
                TimedChunk(chunk.goal_id, chunk.sequence, chunk.stamp, chunk.step, np.zeros((chunk.horizon, 1))),
                chunk.received,
            )
            index += 1
        sequence = scheduler.target(tick.stamp).chunk_sequence
        if sequence and sequence not in found:
            found[sequence] = tick
    return found


def chunk_latency(chunks: Sequence[ChunkSample], firsts: Mapping[int, CommandSample]) -> ChunkLatency:
    attributed = [(c, firsts[c.sequence]) for c in chunks if c.sequence in firsts]
    return ChunkLatency(
        chunks=len(attributed),
        obs_to_chunk_ready=summarize(c.ready_latency_ms for c in chunks),
        obs_to_chunk_received=summarize((c.received - c.stamp) * 1e3 for c in chunks),
        obs_to_first_command_tick=summarize((t.stamp - c.stamp) * 1e3 for c, t in attributed),
        obs_to_first_command_received=summarize((t.received - c.stamp) * 1e3 for c, t in attributed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4 or args[0] != "bare-loop":
        print(
            "usage: python -m pi0_bringup.benchmark.support bare-loop PERIOD_S START_AT_S DURATION_S", file=sys.stderr
        )
        return 2
    print(json.dumps(bare_loop(float(args[1]), float(args[2]), float(args[3]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
