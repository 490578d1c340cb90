"""Safety at the robot boundary: every command is finite and within limits.

Joint dimensions are positions: targets are clamped to [lower, upper] and the
command moves at most ``max_velocity * period`` per tick from the previous
command, so a new chunk far from the current pose, or a bad model output, can
never make the robot jump. The step limit is applied last and always holds: a
previous command outside the position limits (a start pose measured just past
a limit) is brought back inside at the velocity limit, not in one tick. Base
dimensions are velocities: clamped to the velocity limits and changed at most
``max_acceleration * period`` per tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pi0_ros.core.robot_description import BASE_ACTION_NAMES, RobotDescription


@dataclass(frozen=True)
class LimitedCommand:
    command: np.ndarray  # [dims], always finite and within limits
    clamped: bool  # some dimension was changed by a limit
    nonfinite: bool  # the target held NaN/inf; those dimensions kept their previous value


class CommandLimiter:
    """Clamps targets to position/velocity limits relative to the previous command."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_step: np.ndarray, is_velocity: np.ndarray) -> None:
        # lower/upper: [dims] position limits (velocity limits for velocity dims)
        # max_step:    [dims] largest change per tick (position or velocity units)
        # is_velocity: [dims] bool, True for base velocity dimensions
        shapes = {a.shape for a in (lower, upper, max_step, is_velocity)}
        if len(shapes) != 1 or lower.ndim != 1:
            raise ValueError(f"limit arrays must share one 1-D shape, got {sorted(shapes)}")
        if np.any(lower >= upper) or np.any(max_step <= 0):
            raise ValueError("limits need lower < upper and a positive max_step in every dimension")
        self.lower, self.upper, self.max_step, self.is_velocity = lower, upper, max_step, is_velocity

    @classmethod
    def for_robot(cls, description: RobotDescription, period: float) -> CommandLimiter:
        """Limits for the description's action vector at a control period of `period` seconds."""
        lower, upper, step, velocity = [], [], [], []
        base = description.base
        for name in description.policy.actions:
            if name in BASE_ACTION_NAMES:
                assert base is not None
                index = BASE_ACTION_NAMES.index(name)
                limit = base.velocity_limits[index]
                lower.append(-limit)
                upper.append(limit)
                step.append(base.acceleration_limits[index] * period)
                velocity.append(True)
            else:
                joint = description.joint(name)
                lower.append(joint.lower)
                upper.append(joint.upper)
                step.append(joint.max_velocity * period)
                velocity.append(False)
        return cls(np.array(lower), np.array(upper), np.array(step), np.array(velocity, dtype=bool))

    @property
    def dims(self) -> int:
        return self.lower.shape[0]

    def limit(self, target: np.ndarray, previous: np.ndarray) -> LimitedCommand:
        """The command closest to `target` reachable from `previous` within one tick."""
        if target.shape != (self.dims,) or previous.shape != (self.dims,):
            raise ValueError(f"expected [{self.dims}] vectors, got {target.shape} and {previous.shape}")
        finite = np.isfinite(target)
        wanted = np.where(finite, target, previous)
        bounded = np.clip(wanted, self.lower, self.upper)
        # No position clip after this step: it would move a `previous` that lies outside the limits
        # back inside in one tick, however far, bypassing the velocity limit.
        command = previous + np.clip(bounded - previous, -self.max_step, self.max_step)
        clamped = bool(np.any(np.abs(command - wanted) > 1e-12))
        return LimitedCommand(command, clamped, not bool(np.all(finite)))

    def hold(self, previous: np.ndarray) -> np.ndarray:
        """The holding command: positions stay where they are (even just past a limit: no jump), velocities stop."""
        return np.where(self.is_velocity, 0.0, previous)
