"""Declare node parameters once: type, default, description, range, choices.

Each node lists its parameters as :class:`Param` entries; :class:`NodeParameters`
declares them with descriptors (so ``ros2 param describe`` shows ranges) and
its ``read()`` returns the values, raising :class:`ParameterError` with every
problem listed when a value has the wrong type, is out of range or is not an
allowed choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

Value = Union[bool, int, float, str]


class ParameterError(ValueError):
    """One or more parameter values are invalid; the message lists them all."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Value
    description: str
    low: Optional[float] = None  # inclusive range for int/float parameters
    high: Optional[float] = None
    choices: Sequence[str] = ()  # allowed values of a string parameter
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        descriptor = ParameterDescriptor(name=self.name, description=text, read_only=self.read_only)
        if isinstance(self.default, float) and self.low is not None and self.high is not None:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high))]
        elif isinstance(self.default, int) and not isinstance(self.default, bool) \
                and self.low is not None and self.high is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)]
        return descriptor

    def problem(self, value: Any) -> Optional[str]:
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"{self.name}: expected {expected.__name__}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name}: '{value}' is not one of {', '.join(self.choices)}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return f"{self.name}: {value} is outside [{self.low}, {self.high}]"
        return None


class NodeParameters:
    """Declares `params` on `node` at construction and validates them on read()."""

    def __init__(self, node: Node, params: Sequence[Param]) -> None:
        self._node = node
        self._params = tuple(params)
        self._declare_problems: list[str] = []
        for param in self._params:
            try:
                node.declare_parameter(param.name, param.default, param.descriptor())
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # A bad override (YAML or command line) must become a clear configure
                # error, not an exception in the constructor: declare the default instead.
                self._declare_problems.append(f"{param.name}: {exc}")
                node.declare_parameter(param.name, param.default, param.descriptor(), ignore_override=True)

    def read(self) -> dict[str, Value]:
        """Current values; raises ParameterError listing every invalid one."""
        values: dict[str, Value] = {}
        problems = list(self._declare_problems)
        for param in self._params:
            value = self._node.get_parameter(param.name).value
            if isinstance(param.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            problem = param.problem(value)
            if problem:
                problems.append(problem)
            values[param.name] = value
        if problems:
            raise ParameterError("invalid parameters: " + "; ".join(problems))
        return values
