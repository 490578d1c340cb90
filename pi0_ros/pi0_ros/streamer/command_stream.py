"""The command streamer's decisions, free of ROS: what to send at each tick.

Inputs arrive as calls (policy status, chunks, measured joint positions);
:meth:`CommandStream.tick` returns the limited commands to publish, or that
nothing may be published. Safety rules enforced here:

- nothing is commanded before the first goal is active;
- motion is commanded only while a fresh policy status says the goal is
  active and a chunk of that goal covers the current time;
- otherwise the robot holds its last commanded position and the base stops;
  the hold reason is reported;
- a goal that starts while commands are flowing (preemption, a status gap)
  continues from the last command; one that starts after the streamer fell
  idle starts from the measured pose, which must be fresh: meanwhile another
  controller or a person may have moved the robot;
- a measured position is a start pose only when it is plausible: finite,
  inside the joint's limits (within ``position_tolerance``) and reachable from
  the previous plausible measurement at the joint's velocity limit. A driver
  with a unit error or a corrupted message therefore makes a goal wait, with
  the reason reported, instead of commanding a jump;
- every command goes through :class:`CommandLimiter` (finite, within position
  limits, at most one tick of velocity away from the previous command).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pi0_ros.core.chunk import Handover, TimedChunk
from pi0_ros.streamer.chunk_schedule import DEFAULT_BLEND_DURATION_S, ChunkScheduler
from pi0_ros.streamer.command_limits import CommandLimiter


class StreamMode(enum.IntEnum):
    # Values match pi0_msgs/StreamerStatus MODE_* constants.
    IDLE = 0
    HOLDING = 1
    STREAMING = 2


@dataclass(frozen=True)
class StreamConfig:
    control_period: float  # seconds between ticks
    lookahead_points: int  # extra trajectory points after "now" (joint_trajectory controllers)
    status_timeout: float  # a policy status older than this counts as "no goal active"
    max_chunk_latency: float  # chunks arriving later than this after their observation are refused
    hold_duration: float  # keep publishing the hold command this long after a goal ends
    handover: Handover
    blend_duration: float = DEFAULT_BLEND_DURATION_S
    joint_state_timeout: float = 0.5  # measured positions older than this are not used as a start pose
    position_tolerance: float = 0.05  # a measured position this far past a limit is still plausible

    def __post_init__(self) -> None:
        checks = {
            "control_period": self.control_period > 0,
            "lookahead_points": self.lookahead_points >= 1,
            "status_timeout": self.status_timeout > self.control_period,
            "max_chunk_latency": self.max_chunk_latency > 0,
            "hold_duration": self.hold_duration >= 0,
            "blend_duration": self.blend_duration > 0,
            "joint_state_timeout": self.joint_state_timeout > 0,
            "position_tolerance": self.position_tolerance >= 0,
        }
        bad = [name for name, ok in checks.items() if not (ok and math.isfinite(getattr(self, name)))]
        if bad:
            raise ValueError(
                f"invalid streamer settings: {', '.join(f'{n}={getattr(self, n)}' for n in bad)}"
                " (periods/timeouts must be positive; status_timeout above one control period)"
            )


@dataclass(frozen=True)
class StreamTick:
    mode: StreamMode
    hold_reason: str
    commands: np.ndarray | None  # [1 + lookahead_points, dims] to publish, or None: publish nothing
    clamped: bool = False
    chunk_sequence: int = 0


class CommandStream:
    """Decides the command of every control tick."""

    def __init__(self, config: StreamConfig, limiter: CommandLimiter, action_names: Sequence[str]) -> None:
        if len(action_names) != limiter.dims:
            raise ValueError(f"{len(action_names)} action names for a {limiter.dims}-dim limiter")
        self.config = config
        self.limiter = limiter
        self.action_names = tuple(action_names)
        self._index = {name: i for i, name in enumerate(self.action_names)}
        self.scheduler = ChunkScheduler(config.handover, config.blend_duration)
        self._goal_id = ""
        self._goal_active = False
        self._status_time: float | None = None
        self._goal_ended_at: float | None = None
        self._end_reason = ""  # why the last goal stopped streaming, reported while holding
        self._ever_active = False
        self._early_chunk: TimedChunk | None = None  # a chunk that beat the status of its goal
        self._last_command: np.ndarray | None = None
        self._last_published: float | None = None  # time of the last tick that published commands
        self._measured = np.full(len(self.action_names), np.nan)  # [dims]; NaN where never measured
        self._measured_at = np.full(len(self.action_names), -np.inf)  # [dims] time of each measurement
        # Why the newest implausible measurement was ignored, and when: the hold reason while a goal waits.
        self._implausible: tuple[str, float] | None = None
        self.commands_sent = 0  # ticks published for the current goal
        self.clamped_commands = 0

    @property
    def goal_id(self) -> str:
        return self._goal_id

    def on_status(self, goal_active: bool, goal_id: str, now: float) -> None:
        self._status_time = now
        if goal_active and (goal_id != self._goal_id or not self._goal_active):
            self._start_goal(goal_id, now)
        elif not goal_active and self._goal_active:
            self._end_goal(now, f"goal {self._goal_id[:8]} ended (policy status)")

    def on_chunk(self, chunk: TimedChunk, now: float) -> str | None:
        """Offers a received chunk (validated, in this stream's action order); returns why it was refused, or
        None when accepted."""
        if chunk.actions.shape[1] != len(self.action_names):
            raise ValueError(
                f"a chunk of {chunk.actions.shape[1]} actions for a {len(self.action_names)}-action stream"
            )
        if not self._goal_active or chunk.goal_id != self._goal_id:
            # Chunks and status travel on different topics without a common order, so the
            # first chunk of a goal may arrive before the status that activates the goal.
            self._early_chunk = chunk
            return None
        latency = now - chunk.stamp
        if latency > self.config.max_chunk_latency:
            return (
                f"chunk {chunk.sequence} arrived {latency * 1e3:.0f} ms after its observation "
                f"(max_chunk_latency {self.config.max_chunk_latency * 1e3:.0f} ms)"
            )
        self.scheduler.offer(chunk, now)
        return None

    def on_joint_positions(self, positions: Mapping[str, float], now: float) -> list[str]:
        """Measured joint positions (any subset); the start pose of a goal that starts from idle.

        Returns why measurements were ignored as implausible (empty when all were used).
        """
        problems = []
        for name, value in positions.items():
            index = self._index.get(name)
            if index is None or self.limiter.is_velocity[index]:
                continue
            problem = self._implausibility(index, value, now)
            if problem:
                problems.append(f"{name} {problem}")
                continue
            self._measured[index] = value
            self._measured_at[index] = now
        if problems:
            self._implausible = ("; ".join(problems), now)
        return problems

    def _implausibility(self, index: int, value: float, now: float) -> str:
        """Why a measured position cannot be the robot's real pose, or "" when it can."""
        if not math.isfinite(value):
            return f"measured {value}"
        lower, upper = self.limiter.lower[index], self.limiter.upper[index]
        tolerance = self.config.position_tolerance
        if not lower - tolerance <= value <= upper + tolerance:
            return (
                f"measured {value:.4g} outside its limits [{lower:.4g}, {upper:.4g}] (position_tolerance {tolerance:g})"
            )
        last = self._measured[index]
        if math.isfinite(last):
            elapsed = max(0.0, now - self._measured_at[index])
            max_velocity = self.limiter.max_step[index] / self.config.control_period
            # Twice the velocity limit and one period of delivery jitter: only a jump the joint
            # cannot make counts, never fast but real motion.
            reachable = tolerance + 2.0 * max_velocity * (elapsed + self.config.control_period)
            if abs(value - last) > reachable:
                return (
                    f"jumped from {last:.4g} to {value:.4g} in {elapsed * 1e3:.0f} ms "
                    f"(at most {reachable:.3g} is reachable at its velocity limit)"
                )
        return ""

    def start_problem(self, now: float) -> str:
        """Why a goal starting now could not be streamed yet; "" when it could."""
        if self._status_time is None or now - self._status_time > self.config.status_timeout:
            return "it hears no policy_status (DDS discovery may still be under way)"
        if self._last_command is not None and self._recently_published(now):
            return ""  # a new goal continues from the last command
        if self._measured_pose(now) is None:
            return self._start_pose_wait_reason(now)
        return ""

    def tick(self, now: float) -> StreamTick:
        tick = self._decide(now)
        if tick.commands is not None:
            self._last_published = now
        return tick

    def _decide(self, now: float) -> StreamTick:
        if not self._ever_active:
            return StreamTick(StreamMode.IDLE, "no goal has been active yet", None)
        if self._goal_active and self._status_time is not None and now - self._status_time > self.config.status_timeout:
            self._end_goal(now, f"no policy status for {now - self._status_time:.2f} s; policy node lost")
        if not self._goal_active:
            return self._hold(now, self._end_reason)
        previous = self._previous_command(now)
        if previous is None:
            return StreamTick(StreamMode.HOLDING, self._start_pose_wait_reason(now), None)
        target = self.scheduler.target(now)
        if target.action is None:
            return self._hold(now, target.reason)
        points = [target.action] + [
            self._peek_or_last(now + k * self.config.control_period, target.action)
            for k in range(1, self.config.lookahead_points + 1)
        ]
        commands, clamped = self._limit_chain(points, previous)
        self._last_command = commands[0]
        self.commands_sent += 1
        self.clamped_commands += int(clamped)
        return StreamTick(StreamMode.STREAMING, "", commands, clamped, target.chunk_sequence)

    def _start_goal(self, goal_id: str, now: float) -> None:
        if goal_id != self._goal_id:
            # The same id again means the status came back after a gap: same goal, same count.
            self.commands_sent = 0
        self._goal_id = goal_id
        self._goal_active = True
        self._ever_active = True
        self._goal_ended_at = None
        self.scheduler.reset()
        early, self._early_chunk = self._early_chunk, None
        if early is not None and early.goal_id == goal_id:
            self.on_chunk(early, now)
        if not self._recently_published(now):
            # After idle the controllers' setpoints may have moved: start from where the robot is (or wait).
            self._last_command = None

    def _recently_published(self, now: float) -> bool:
        return self._last_published is not None and now - self._last_published <= self.config.status_timeout

    def _end_goal(self, now: float, reason: str) -> None:
        self._end_reason = reason
        self._goal_active = False
        self._goal_ended_at = now
        self.scheduler.reset()

    def _hold(self, now: float, reason: str) -> StreamTick:
        if (
            not self._goal_active
            and self._goal_ended_at is not None
            and now - self._goal_ended_at > self.config.hold_duration
        ):
            return StreamTick(StreamMode.IDLE, reason, None)
        previous = self._previous_command(now)
        if previous is None:
            return StreamTick(StreamMode.HOLDING, reason, None)
        hold = self.limiter.hold(previous)
        self._last_command = hold
        return StreamTick(StreamMode.HOLDING, reason, np.tile(hold, (self.config.lookahead_points + 1, 1)))

    def _previous_command(self, now: float) -> np.ndarray | None:
        if self._last_command is not None:
            return self._last_command
        return self._measured_pose(now)

    def _measured_pose(self, now: float) -> np.ndarray | None:
        """The measured positions (velocity dims 0), or None unless every position is fresh."""
        fresh = self.limiter.is_velocity | (now - self._measured_at <= self.config.joint_state_timeout)
        if not np.all(fresh):
            return None
        pose = np.where(self.limiter.is_velocity, 0.0, self._measured)
        return pose if np.all(np.isfinite(pose)) else None

    def _start_pose_wait_reason(self, now: float) -> str:
        if self._implausible is not None and now - self._implausible[1] <= self.config.joint_state_timeout:
            return f"waiting for plausible joint states: {self._implausible[0]}"
        return "waiting for fresh joint states of every commanded joint"

    def _peek_or_last(self, t: float, fallback: np.ndarray) -> np.ndarray:
        action = self.scheduler.peek(t).action
        return fallback if action is None else action

    def _limit_chain(self, points: list[np.ndarray], previous: np.ndarray) -> tuple[np.ndarray, bool]:
        """Limits every point relative to the one before, so the whole lookahead respects velocity limits.

        Returns the limited points and whether the command for now (point 0) was clamped.
        """
        results = []
        for point in points:
            results.append(self.limiter.limit(point, previous))
            previous = results[-1].command
        return np.stack([r.command for r in results]), results[0].clamped
