"""A kinematic simulated robot with the command semantics of ros2_control's controllers.

Plain Python (no ROS): :class:`SimRobot` holds every joint of a robot
description (position, velocity) and, when the description has one, a planar
differential-drive base. Commands arrive in the form the real controllers take
them, minus the message wrapping:

- joint_trajectory_controller: a new trajectory replaces the active one; a
  start time of ``None`` (header stamp 0) means "start now"; points have
  strictly increasing ``time_from_start``; a trajectory that ends in the past
  is rejected; joint names may be a reordered subset of the controller's; the
  trajectory is sampled in time (linear interpolation, re-interpolated from the
  state at receipt to the first point) and its last point is held.
- forward_position_controller: one value per joint in the controller's joint
  order, held until the next command; a size mismatch is rejected.
- diff_drive_controller: linear/angular velocity with a stamp (``None``: now);
  a command older than ``cmd_vel_timeout`` stops the base.

Every rejected command raises :class:`CommandRejected` with the reason and is
counted per controller. :meth:`SimRobot.step` advances time: each joint
tracks its controller's desired position within its position limits,
``max_velocity`` and an acceleration limit; the base follows its command within
the description's velocity and acceleration limits and integrates its pose.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pi0_ros.core.interpolation import fractional_index, interpolate_rows
from pi0_ros.core.robot_description import BaseSpec, JointGroup, RobotDescription


class CommandRejected(ValueError):
    """A command a real controller would refuse; the message gives the reason."""


@dataclass(frozen=True)
class SimConfig:
    # Seconds a joint needs to reach max_velocity from rest; sets each joint's
    # acceleration limit (the descriptions carry no joint accelerations).
    acceleration_time: float = 0.1
    # diff_drive_controller's cmd_vel_timeout: an older command stops the base.
    cmd_vel_timeout: float = 0.5
    # joint_trajectory_controller's allow_partial_joints_goal (false on a real
    # controller unless configured); missing joints hold their position.
    allow_partial_joints_goal: bool = True
    # Longest integration sub-step, s; keeps the acceleration limit accurate at low publish rates.
    max_substep: float = 0.01
    # Longest time integrated by one step(), s: a stalled or paused clock must not teleport the robot.
    max_step_gap: float = 0.5

    def __post_init__(self) -> None:
        for label in ("acceleration_time", "cmd_vel_timeout", "max_substep", "max_step_gap"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SimConfig.{label} must be a positive number, got {value}")


@dataclass(frozen=True)
class TrajectoryPoint:
    time_from_start: float  # s after the trajectory's start time
    positions: tuple[float, ...]  # one per joint name of the trajectory
    velocities: tuple[float, ...] = ()  # checked for size like the real controller, not used for interpolation


@dataclass(frozen=True)
class BaseState:
    x: float  # m, odometry frame
    y: float
    yaw: float  # rad
    linear_x: float  # m/s, base frame
    angular_z: float  # rad/s


@dataclass(frozen=True)
class SimState:
    """An immutable snapshot of the robot, safe to hand to another thread."""

    time: float  # s, the clock the robot was stepped with
    joint_names: tuple[str, ...]
    positions: np.ndarray  # [num_joints], read-only
    velocities: np.ndarray  # [num_joints], read-only
    base: BaseState | None = None

    def position(self, joint_name: str) -> float:
        return float(self.positions[self.joint_names.index(joint_name)])


class _TrajectoryController:
    """joint_trajectory_controller: samples the newest accepted trajectory in time."""

    def __init__(self, group: JointGroup, allow_partial: bool) -> None:
        self.joint_names = group.joint_names
        self._allow_partial = allow_partial
        self._knot_times: np.ndarray | None = None  # [K] absolute s
        self._knot_positions: np.ndarray | None = None  # [K, J]

    def accept(
        self,
        joint_names: Sequence[str],
        points: Sequence[TrajectoryPoint],
        start_time: float | None,
        now: float,
        current: np.ndarray,
    ) -> None:
        """Replaces the active trajectory; `current` [J] is the group's measured position."""
        columns = self._columns(joint_names)
        _check_points(points, len(joint_names))
        start = now if start_time is None else start_time
        end = start + points[-1].time_from_start
        if start_time is not None and end < now:
            raise CommandRejected(f"trajectory with non-zero start time ends in the past ({now - end:.3f} s ago)")
        # Joints the trajectory leaves out hold the position they have at receipt.
        positions = np.tile(current, (len(points), 1))  # [P, J]
        positions[:, columns] = np.array([p.positions for p in points], dtype=float)
        times = np.array([start + p.time_from_start for p in points])  # [P]
        # Like the real controller, the state at receipt is the knot before the first point,
        # unless the first point is already due.
        if times[0] > now:
            times = np.concatenate(([now], times))
            positions = np.vstack((current, positions))
        self._knot_times, self._knot_positions = times, positions

    def desired(self, time: float) -> np.ndarray | None:
        """[J] desired positions at `time`, or None to hold (no trajectory yet, or before its receipt)."""
        if self._knot_times is None or time < self._knot_times[0]:
            return None
        return _interpolate(self._knot_times, self._knot_positions, time)

    def _columns(self, joint_names: Sequence[str]) -> list[int]:
        if not joint_names:
            raise CommandRejected("empty joint names")
        if len(set(joint_names)) != len(joint_names):
            raise CommandRejected("a joint name appears twice")
        unknown = [n for n in joint_names if n not in self.joint_names]
        if unknown:
            raise CommandRejected(
                f"unknown joint(s) {', '.join(unknown)}; controller joints: {', '.join(self.joint_names)}"
            )
        if not self._allow_partial and len(joint_names) != len(self.joint_names):
            raise CommandRejected(
                "joints on the trajectory don't match the controller joints (partial goals not allowed)"
            )
        return [self.joint_names.index(n) for n in joint_names]


class _ForwardPositionController:
    """forward_position_controller: the last accepted command is held."""

    def __init__(self, group: JointGroup) -> None:
        self.joint_names = group.joint_names
        self._command: np.ndarray | None = None  # [J]

    def accept(self, values: Sequence[float]) -> None:
        if len(values) != len(self.joint_names):
            raise CommandRejected(
                f"command size ({len(values)}) does not match number of joints ({len(self.joint_names)})"
            )
        command = np.array(values, dtype=float)
        if not np.all(np.isfinite(command)):
            raise CommandRejected("command contains NaN or infinite values")
        self._command = command

    def desired(self, time: float) -> np.ndarray | None:
        return self._command


_Controller = _TrajectoryController | _ForwardPositionController


class _DiffDriveBase:
    """A differential-drive base following (linear_x, angular_z) commands within limits."""

    def __init__(self, spec: BaseSpec, cmd_vel_timeout: float) -> None:
        self._max_velocity = np.array(spec.velocity_limits)  # [2] m/s, rad/s
        self._max_acceleration = np.array(spec.acceleration_limits)  # [2] m/s^2, rad/s^2
        self._timeout = cmd_vel_timeout
        self._command = np.zeros(2)  # [linear_x, angular_z]
        self._command_stamp = -math.inf
        self._velocity = np.zeros(2)
        self._pose = np.zeros(3)  # [x, y, yaw]

    def accept(self, linear_x: float, angular_z: float, stamp: float | None, now: float) -> None:
        """`stamp` None (a zero header stamp, or an unstamped Twist) counts as received now."""
        if not (math.isfinite(linear_x) and math.isfinite(angular_z)):
            raise CommandRejected("velocity command contains NaN or infinite values")
        self._command = np.array([linear_x, angular_z])
        self._command_stamp = now if stamp is None else stamp

    def integrate(self, time: float, dt: float) -> None:
        """Moves the base over `dt` seconds ending at `time`."""
        stale = time - self._command_stamp > self._timeout
        target = np.zeros(2) if stale else np.clip(self._command, -self._max_velocity, self._max_velocity)
        step = self._max_acceleration * dt
        self._velocity = np.clip(target, self._velocity - step, self._velocity + step)
        linear, angular = self._velocity
        # Midpoint heading: exact enough for the small sub-steps used here.
        heading = self._pose[2] + 0.5 * angular * dt
        self._pose += (linear * math.cos(heading) * dt, linear * math.sin(heading) * dt, angular * dt)
        self._pose[2] = math.remainder(self._pose[2], math.tau)

    def state(self) -> BaseState:
        x, y, yaw = (float(v) for v in self._pose)
        return BaseState(x, y, yaw, float(self._velocity[0]), float(self._velocity[1]))


class SimRobot:
    """Every joint of a description, its controllers and its base; advanced by :meth:`step`."""

    def __init__(self, description: RobotDescription, config: SimConfig = SimConfig()) -> None:
        self.description = description
        self.config = config
        joints = description.joints
        self._lower = np.array([j.lower for j in joints])  # [N]
        self._upper = np.array([j.upper for j in joints])
        self._max_velocity = np.array([j.max_velocity for j in joints])
        self._max_acceleration = self._max_velocity / config.acceleration_time
        self._positions = np.array([j.home for j in joints])  # [N]
        self._velocities = np.zeros(len(joints))
        self._targets = self._positions.copy()  # [N] held desired positions
        self._controllers: dict[str, _Controller] = {}
        self._indices: dict[str, np.ndarray] = {}  # controller name -> joint indices into [N]
        offset = 0
        for group in description.joint_groups:
            self._controllers[group.controller.name] = _make_controller(group, config)
            self._indices[group.controller.name] = np.arange(offset, offset + len(group.joints))
            offset += len(group.joints)
        self._base = _DiffDriveBase(description.base, config.cmd_vel_timeout) if description.base else None
        self._base_controller = description.base.controller.name if description.base else ""
        self._time: float | None = None
        self._rejections: Counter[str] = Counter()

    @property
    def rejections(self) -> Mapping[str, int]:
        """Rejected commands so far, per controller name."""
        return dict(self._rejections)

    def command_trajectory(
        self,
        controller: str,
        joint_names: Sequence[str],
        points: Sequence[TrajectoryPoint],
        start_time: float | None,
        now: float,
    ) -> None:
        """A JointTrajectory for a joint_trajectory controller; `start_time` None means start now."""
        target = self._controller(controller, _TrajectoryController, "joint_trajectory")
        current = self._positions[self._indices[controller]]
        self._counted(controller, lambda: target.accept(joint_names, points, start_time, now, current))

    def command_positions(self, controller: str, values: Sequence[float]) -> None:
        """A Float64MultiArray for a forward_position controller, in the controller's joint order."""
        target = self._controller(controller, _ForwardPositionController, "forward_position")
        self._counted(controller, lambda: target.accept(values))

    def command_base(self, linear_x: float, angular_z: float, stamp: float | None, now: float) -> None:
        """A base velocity command; `stamp` None means received now."""
        base = self._base
        if base is None:
            raise KeyError(f"robot '{self.description.name}' has no mobile base")
        self._counted(self._base_controller, lambda: base.accept(linear_x, angular_z, stamp, now))

    def step(self, now: float) -> None:
        """Advances the simulation to `now` (s). The first call only sets the clock."""
        if self._time is None or now < self._time:
            # First call, or the clock jumped back (e.g. a replayed /clock): restart from here.
            self._time = now
            return
        elapsed = min(now - self._time, self.config.max_step_gap)
        substeps = max(1, math.ceil(elapsed / self.config.max_substep - 1e-9))
        dt = elapsed / substeps
        for k in range(1, substeps + 1):
            time = now - elapsed + k * dt
            self._update_targets(time)
            self._track(dt)
            if self._base is not None:
                self._base.integrate(time, dt)
        self._time = now

    def state(self) -> SimState:
        positions, velocities = self._positions.copy(), self._velocities.copy()
        positions.flags.writeable = False
        velocities.flags.writeable = False
        return SimState(
            time=self._time if self._time is not None else 0.0,
            joint_names=self.description.joint_names,
            positions=positions,
            velocities=velocities,
            base=self._base.state() if self._base is not None else None,
        )

    def _update_targets(self, time: float) -> None:
        for name, controller in self._controllers.items():
            desired = controller.desired(time)
            if desired is not None:
                self._targets[self._indices[name]] = desired
        np.clip(self._targets, self._lower, self._upper, out=self._targets)

    def _track(self, dt: float) -> None:
        """Moves every joint toward its target: velocity- and acceleration-limited, stopping on target."""
        error = self._targets - self._positions
        max_change = self._max_acceleration * dt
        speed = np.minimum(self._max_velocity, _braking_speed(np.abs(error), max_change, dt))
        self._velocities = np.clip(np.sign(error) * speed, self._velocities - max_change, self._velocities + max_change)
        self._positions = self._positions + self._velocities * dt
        # Targets lie within the limits, so this only catches numerical overshoot.
        outside = (self._positions < self._lower) | (self._positions > self._upper)
        self._positions = np.clip(self._positions, self._lower, self._upper)
        self._velocities[outside] = 0.0

    def _controller(self, name: str, kind: type, interface: str) -> _Controller:
        controller = self._controllers.get(name)
        if not isinstance(controller, kind):
            raise KeyError(f"robot '{self.description.name}' has no {interface} controller named '{name}'")
        return controller

    def _counted(self, controller: str, accept: Callable[[], None]) -> None:
        try:
            accept()
        except CommandRejected:
            self._rejections[controller] += 1
            raise


def _braking_speed(distance: np.ndarray, max_change: np.ndarray, dt: float) -> np.ndarray:
    """The fastest speed [N] from which a joint stops exactly `distance` [N] ahead in steps of `dt`,
    slowing by at most `max_change` [N] per step.

    Braking from m * max_change covers max_change * dt * m (m + 1) / 2; the rest of the distance
    is spread evenly over the m + 1 steps as a constant extra speed below max_change, so the last
    step lands on the target and the stop after it stays within the acceleration limit.
    """
    per_step = max_change * dt
    m = np.floor((np.sqrt(1.0 + 8.0 * distance / per_step) - 1.0) / 2.0)
    return m * max_change + (distance - per_step * m * (m + 1) / 2) / ((m + 1) * dt)


def _make_controller(group: JointGroup, config: SimConfig) -> _Controller:
    if group.controller.interface == "joint_trajectory":
        return _TrajectoryController(group, config.allow_partial_joints_goal)
    return _ForwardPositionController(group)


def _check_points(points: Sequence[TrajectoryPoint], num_joints: int) -> None:
    if not points:
        raise CommandRejected("empty trajectory (no points)")
    previous = -math.inf
    for i, point in enumerate(points):
        if not math.isfinite(point.time_from_start) or point.time_from_start < 0:
            raise CommandRejected(f"point {i}: time_from_start must be a finite non-negative time")
        if point.time_from_start <= previous:
            raise CommandRejected(f"time_from_start of points {i - 1} and {i} is not strictly increasing")
        previous = point.time_from_start
        if len(point.positions) != num_joints:
            raise CommandRejected(f"point {i}: {len(point.positions)} positions for {num_joints} joint names")
        if point.velocities and len(point.velocities) != num_joints:
            raise CommandRejected(f"point {i}: {len(point.velocities)} velocities for {num_joints} joint names")
        if not all(math.isfinite(v) for v in (*point.positions, *point.velocities)):
            raise CommandRejected(f"point {i} contains NaN or infinite values")


def _interpolate(times: np.ndarray, positions: np.ndarray, time: float) -> np.ndarray:
    """Linear interpolation of knots `positions` [K, J] at `times` [K]; holds the ends."""
    return interpolate_rows(positions, fractional_index(times, time))
