"""ROS interface type names, their generated Python classes and CDR (de)serialization.

Bags name types the rosbag2 way, ``pkg/msg/Type`` (or ``pkg/action/Type_FeedbackMessage``
for an action's hidden topics). rosidl_runtime_py is not always installed, so
classes are imported from the generated modules directly.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, NamedTuple

from rclpy.serialization import deserialize_message

from pi0_ros.bag.errors import BagError

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_TYPE_RE = re.compile(rf"^({_NAME})/(?:({_NAME})/)?({_NAME})$")


class TypeName(NamedTuple):
    package: str
    namespace: str  # "msg", "action" or "srv"
    name: str

    def __str__(self) -> str:
        return f"{self.package}/{self.namespace}/{self.name}"


def parse_type_name(msgtype: str) -> TypeName:
    """Splits ``pkg/msg/Type`` (or the short ``pkg/Type``) into its parts."""
    match = _TYPE_RE.match(msgtype)
    if match is None:
        raise BagError(f"'{msgtype}' is not a ROS interface type name (expected pkg/msg/Type)")
    package, namespace, name = match.groups()
    return TypeName(package, namespace or "msg", name)


def type_name_of(message: Any) -> str:
    """The ``pkg/ns/Type`` name of a generated message instance or class."""
    cls = message if isinstance(message, type) else type(message)
    parts = cls.__module__.split(".")
    if len(parts) < 2 or not hasattr(cls, "_TYPE_SUPPORT"):
        raise BagError(f"{cls.__qualname__} is not a generated ROS message class")
    return f"{parts[0]}/{parts[1]}/{cls.__name__}"


def message_class(msgtype: str) -> type:
    """Imports the generated class of `msgtype`; BagError when its package is not installed."""
    type_name = parse_type_name(msgtype)
    try:
        module = importlib.import_module(f"{type_name.package}.{type_name.namespace}")
    except ImportError as exc:
        raise BagError(
            f"unknown message type '{msgtype}': package '{type_name.package}' is not installed or not sourced ({exc})"
        ) from None
    cls = getattr(module, type_name.name, None)
    if cls is None:
        cls = _derived_action_class(module, type_name.name)
    if cls is None:
        raise BagError(f"unknown message type '{msgtype}': {module.__name__} has no '{type_name.name}'")
    return cls


def _derived_action_class(module: Any, name: str) -> type | None:
    # Types derived from an action (ExecuteInstruction_FeedbackMessage, ..._Goal) are
    # not exported by the package module, only by the action's own generated module.
    base = getattr(module, name.split("_", 1)[0], None)
    if base is None:
        return None
    return getattr(importlib.import_module(base.__module__), name, None)


def deserialize(msgtype: str, data: bytes) -> Any:
    """CDR bytes to a message of `msgtype`; BagError naming the type when the bytes are not one."""
    cls = message_class(msgtype)
    try:
        return deserialize_message(bytes(data), cls)
    except Exception as exc:  # noqa: BLE001 - rmw reports bad CDR with assorted exception types
        raise BagError(f"cannot deserialize {len(data)} bytes as {msgtype}: {exc}") from None
