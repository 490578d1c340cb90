"""Per-robot adaptations between the robot's raw vectors and the space pi0 was trained in.

Each adaptation is a small frozen dataclass with three maps:

    state_in     robot state            -> model-space state
    actions_in   robot action chunk     -> model-space chunk   (training data, RTC's previous chunk)
    actions_out  model-space chunk      -> robot action chunk  (inverse of actions_in)

They run in an explicit order, like openpi's transform groups:

    raw -> adapt (transforms in order) -> normalize -> pad to 32 -> model
        -> crop -> unnormalize -> un-adapt (transforms in reverse order) -> robot

`actions_in`/`actions_out` receive the state as it was when it entered that
transform (what openpi's DeltaActions/AbsoluteActions see).

Registered names (RobotIO.transforms): "aloha", "delta:<dims>" (e.g.
"delta:6,-1,6,-1": positive n = n delta dims, negative n = n absolute dims).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError


@runtime_checkable
class RobotTransform(Protocol):
    """One adaptation step. Arrays are float64; actions are [T, D], states [D]."""

    @property
    def dims(self) -> int:
        """How many leading dimensions of state and actions it reads (the robot needs at least these)."""
        ...

    def state_in(self, state: np.ndarray) -> np.ndarray: ...

    def actions_in(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray: ...

    def actions_out(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray: ...


# -- ALOHA (openpi policies/aloha_policy.py, adapt_to_pi=True) ---------------------

# pi0's base model was trained on an internal runtime whose joint signs and
# gripper units differ from the ALOHA stack's.
_ALOHA_FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1], dtype=np.float64)
_ALOHA_GRIPPERS = [6, 13]
# Interbotix / ALOHA constants: puppet gripper linear positions and joint angles.
_GRIPPER_LINEAR_OPEN, _GRIPPER_LINEAR_CLOSED = 0.01844, 0.05800
_GRIPPER_ARM_LENGTH, _GRIPPER_HORN_RADIUS = 0.036, 0.022
# pi0's normalized gripper range, 0..1 over encoder counts 2405..3110, in radians.
_PI_GRIPPER_MIN, _PI_GRIPPER_MAX = 0.5476, 1.6296
_ALOHA_GRIPPER_JOINT_MIN, _ALOHA_GRIPPER_JOINT_MAX = -0.6213, 1.4910


def _to_unit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (x - low) / (high - low)


def _from_unit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return x * (high - low) + low


def _gripper_to_angular(value: np.ndarray) -> np.ndarray:
    """ALOHA's linearized gripper state -> pi0's normalized angular gripper."""
    linear = _from_unit(value, _GRIPPER_LINEAR_OPEN, _GRIPPER_LINEAR_CLOSED)
    # Inverse of the Interbotix horn/arm linkage (angle -> linear travel).
    ratio = (_GRIPPER_HORN_RADIUS**2 + linear**2 - _GRIPPER_ARM_LENGTH**2) / (2 * _GRIPPER_HORN_RADIUS * linear)
    angle = np.arcsin(np.clip(ratio, -1.0, 1.0))
    return _to_unit(angle, _PI_GRIPPER_MIN, _PI_GRIPPER_MAX)


def _gripper_from_angular(value: np.ndarray) -> np.ndarray:
    """pi0's gripper action -> ALOHA's normalized gripper joint command."""
    return _to_unit(value + _PI_GRIPPER_MIN, _ALOHA_GRIPPER_JOINT_MIN, _ALOHA_GRIPPER_JOINT_MAX)


def _gripper_from_angular_inv(value: np.ndarray) -> np.ndarray:
    return _from_unit(value, _ALOHA_GRIPPER_JOINT_MIN, _ALOHA_GRIPPER_JOINT_MAX) - _PI_GRIPPER_MIN


@dataclass(frozen=True)
class AlohaAdaptation:
    """openpi's ALOHA adaptation on the first 14 dims (extra dims, e.g. a mobile base, pass through)."""

    @property
    def dims(self) -> int:
        return len(_ALOHA_FLIP)

    def state_in(self, state: np.ndarray) -> np.ndarray:
        out = state.copy()
        out[: self.dims] *= _ALOHA_FLIP
        out[_ALOHA_GRIPPERS] = _gripper_to_angular(out[_ALOHA_GRIPPERS])
        return out

    def actions_in(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = actions.copy()
        out[:, : self.dims] *= _ALOHA_FLIP
        out[:, _ALOHA_GRIPPERS] = _gripper_from_angular_inv(out[:, _ALOHA_GRIPPERS])
        return out

    def actions_out(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = actions.copy()
        out[:, : self.dims] *= _ALOHA_FLIP
        out[:, _ALOHA_GRIPPERS] = _gripper_from_angular(out[:, _ALOHA_GRIPPERS])
        return out


# -- delta actions (openpi DeltaActions / AbsoluteActions) ----------------------


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """(6, -1, 6, -1) -> six True, one False, six True, one False."""
    mask: list[bool] = []
    for dim in dims:
        if dim == 0:
            raise ConfigError("mask run lengths must be non-zero")
        mask.extend([dim > 0] * abs(dim))
    return tuple(mask)


@dataclass(frozen=True)
class DeltaActions:
    """Masked action dims are predicted relative to the current state (e.g. joints, not grippers)."""

    mask: tuple[bool, ...]  # True = this leading dim is a delta; dims past the mask are absolute

    def __post_init__(self) -> None:
        if not self.mask or not all(isinstance(m, bool) for m in self.mask):
            raise ConfigError(f"DeltaActions.mask must be a non-empty tuple of bools, got {self.mask!r}")

    @property
    def dims(self) -> int:
        return len(self.mask)

    def state_in(self, state: np.ndarray) -> np.ndarray:
        return state

    def actions_in(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = actions.copy()
        out[:, : self.dims] -= np.where(self.mask, state[: self.dims], 0.0)
        return out

    def actions_out(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = actions.copy()
        out[:, : self.dims] += np.where(self.mask, state[: self.dims], 0.0)
        return out


# -- registry and pipeline -----------------------------------------------------


def _aloha(argument: str | None) -> RobotTransform:
    if argument:
        raise ConfigError(f"transform 'aloha' takes no argument, got {argument!r}")
    return AlohaAdaptation()


def _delta(argument: str | None) -> RobotTransform:
    if not argument:
        raise ConfigError("transform 'delta' needs its mask as run lengths, e.g. 'delta:6,-1,6,-1'")
    try:
        runs = [int(part) for part in argument.split(",")]
    except ValueError as error:
        raise ConfigError(f"bad delta mask {argument!r}: expected comma-separated ints") from error
    return DeltaActions(make_bool_mask(*runs))


TRANSFORMS: dict[str, Callable[[str | None], RobotTransform]] = {"aloha": _aloha, "delta": _delta}


def make_transform(spec: str | RobotTransform) -> RobotTransform:
    """A transform from its registered name ("aloha", "delta:6,-1,6,-1") or an instance."""
    if isinstance(spec, RobotTransform):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a transform is a name or a RobotTransform, got {type(spec).__name__}")
    name, _, argument = spec.partition(":")
    if name not in TRANSFORMS:
        raise ConfigError(f"unknown transform {spec!r}; known: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](argument or None)


@dataclass(frozen=True)
class TransformPipeline:
    """The robot's adaptations, applied in order on the way in and in reverse on the way out."""

    transforms: tuple[RobotTransform, ...] = ()

    @classmethod
    def parse(cls, specs: Sequence[str | RobotTransform]) -> TransformPipeline:
        if isinstance(specs, str):
            raise ConfigError(f"transforms must be a sequence of names, got the string {specs!r}")
        return cls(tuple(make_transform(spec) for spec in specs))

    def check_dims(self, state_dim: int, action_dim: int) -> None:
        for transform in self.transforms:
            if transform.dims > min(state_dim, action_dim):
                raise ConfigError(
                    f"{type(transform).__name__} reads {transform.dims} dims but the robot has "
                    f"state_dim={state_dim}, action_dim={action_dim}"
                )

    def adapt_state(self, state: np.ndarray) -> list[np.ndarray]:
        """The state entering each transform, then the model-space state (last element)."""
        stages = [state]
        for transform in self.transforms:
            stages.append(transform.state_in(stages[-1]))
        return stages

    def actions_in(self, actions: np.ndarray, stages: list[np.ndarray]) -> np.ndarray:
        for transform, state in zip(self.transforms, stages[:-1], strict=True):
            actions = transform.actions_in(actions, state)
        return actions

    def actions_out(self, actions: np.ndarray, stages: list[np.ndarray]) -> np.ndarray:
        for transform, state in reversed(list(zip(self.transforms, stages[:-1], strict=True))):
            actions = transform.actions_out(actions, state)
        return actions


def pad_to(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad the last axis to `width` (pi0 pads states and actions to 32)."""
    if x.shape[-1] > width:
        raise ConfigError(f"vector of width {x.shape[-1]} does not fit the model width {width}")
    padding = [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])]
    return np.pad(x, padding)
