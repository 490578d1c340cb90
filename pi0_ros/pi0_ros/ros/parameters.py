"""Node parameters declared once and read back typed.

A node lists its parameters as the fields of one frozen dataclass; each field's
default comes from :func:`param`, which also carries the description, the
inclusive range or the allowed choices (the idea of generate_parameter_library):

    @dataclass(frozen=True)
    class MyParameters:
        rate_hz: float = param(10.0, "Publish rate.", range=(1.0, 100.0))
        mode: str = param("fast", "Mode.", choices=("fast", "slow"))

    values = declare_and_read(node, MyParameters)  # a MyParameters instance

:class:`DeclaredParameters` declares them with descriptors (so ``ros2 param
describe`` shows ranges and choices) and its ``read()`` returns an instance,
raising :class:`ParameterError` with every problem listed when a value has the
wrong type, is out of range, is not an allowed choice or fails the field's
check, or when the class's ``parameter_problems()`` (cross-field checks) lists any.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

Value = bool | int | float | str
Check = Callable[[Any], str | None]  # a value's problem, or None when it is fine
P = TypeVar("P")
_METADATA_KEY = "pi0_ros.parameter"


class ParameterError(ValueError):
    """One or more parameter values are invalid; the message lists them all."""


@dataclass(frozen=True)
class Param:
    """One declared parameter: built from a :func:`param` field by :func:`parameter_specs`."""

    name: str
    default: Value
    description: str
    low: float | None = None  # inclusive range for int/float parameters
    high: float | None = None
    choices: Sequence[str] = ()  # allowed values of a string parameter
    read_only: bool = False
    check: Check | None = None  # a further check of the value (e.g. a device string)

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        descriptor = ParameterDescriptor(name=self.name, description=text, read_only=self.read_only)
        if isinstance(self.default, float) and self.low is not None and self.high is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(self.low), to_value=float(self.high))
            ]
        elif (
            isinstance(self.default, int)
            and not isinstance(self.default, bool)
            and self.low is not None
            and self.high is not None
        ):
            descriptor.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)]
        return descriptor

    def problem(self, value: Any) -> str | None:
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"{self.name}: expected {expected.__name__}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name}: '{value}' is not one of {', '.join(self.choices)}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return f"{self.name}: {value} is outside [{self.low}, {self.high}]"
        if self.check is not None:
            problem = self.check(value)
            if problem:
                return f"{self.name}: {problem}"
        return None


@dataclass(frozen=True)
class _FieldSpec:
    description: str
    range: tuple[float, float] | None
    choices: tuple[str, ...]
    read_only: bool
    check: Check | None


def param(
    default: Value,
    description: str,
    *,
    range: tuple[float, float] | None = None,
    choices: Sequence[str] = (),
    read_only: bool = False,
    check: Check | None = None,
) -> Any:
    """A dataclass field that is a ROS parameter: its default, description, range or choices, and check."""
    if not isinstance(default, (bool, int, float, str)):
        raise TypeError(f"a parameter default must be bool, int, float or str, got {default!r}")
    if choices and default not in choices:
        raise ValueError(f"default {default!r} is not one of the choices {choices}")
    spec = _FieldSpec(description, None if range is None else (range[0], range[1]), tuple(choices), read_only, check)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: spec})


def parameter_specs(cls: type) -> tuple[Param, ...]:
    """The parameters of a parameters dataclass, in field order."""
    specs = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with param()")
        low, high = spec.range if spec.range is not None else (None, None)
        specs.append(
            Param(field.name, field.default, spec.description, low, high, spec.choices, spec.read_only, spec.check)
        )
    return tuple(specs)


class DeclaredParameters(Generic[P]):
    """Declares the fields of `cls` as parameters of `node` at construction; read() returns a `cls`."""

    def __init__(self, node: Node, cls: type[P]) -> None:
        self._node = node
        self._cls = cls
        self.params = parameter_specs(cls)
        self._declare_problems: list[str] = []
        for spec in self.params:
            try:
                node.declare_parameter(spec.name, spec.default, spec.descriptor())
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # A bad override (YAML or command line) must become a clear configure
                # error, not an exception in the constructor: declare the default instead.
                self._declare_problems.append(f"{spec.name}: {exc}")
                node.declare_parameter(spec.name, spec.default, spec.descriptor(), ignore_override=True)

    def read(self) -> P:
        """The current values, typed; raises ParameterError listing every invalid one."""
        values: dict[str, Value] = {}
        problems = list(self._declare_problems)
        for spec in self.params:
            value = self._current(spec)
            problem = spec.problem(value)
            if problem:
                problems.append(problem)
            values[spec.name] = value
        if problems:
            raise ParameterError("invalid parameters: " + "; ".join(problems))
        instance = self._cls(**values)
        cross_checks = getattr(instance, "parameter_problems", None)
        problems = list(cross_checks()) if cross_checks is not None else []
        if problems:
            raise ParameterError("invalid parameters: " + "; ".join(problems))
        return instance

    def read_one(self, name: str) -> Value:
        """One parameter's current value, checked as read() checks it.

        For a value needed before the whole set has to be valid: the policy node decides
        on autostart in its constructor, while its other parameters are read on configure.
        """
        spec = next((spec for spec in self.params if spec.name == name), None)
        if spec is None:
            raise KeyError(f"{self._cls.__name__} declares no parameter {name!r}")
        value = self._current(spec)
        problem = spec.problem(value)
        if problem:
            raise ParameterError(f"invalid parameter: {problem}")
        return value

    def _current(self, spec: Param) -> Value:
        value = self._node.get_parameter(spec.name).value
        # ROS keeps an integer override of a double parameter as an int.
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return value


def declare_and_read(node: Node, cls: type[P]) -> P:
    """Declares the fields of `cls` as parameters of `node` and returns their values as a `cls`."""
    return DeclaredParameters(node, cls).read()
