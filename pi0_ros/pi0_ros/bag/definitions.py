"""Message definitions and type hashes, read from the installed interface packages.

For every type it stores, rosbag2 keeps the complete definition (the type's own
.msg text, then each nested type's text after a line of 80 '=' and a line
``MSG: pkg/msg/Type``) and, since Iron, the RIHS01 type description hash. Both
come from the packages' share directories here, the way rosbag2's own
LocalMessageDefinitionSource finds them, so bags written by these tools carry
what ``ros2 bag record`` writes and tools that decode from the stored
definitions (Foxglove, rosbags, the MCAP libraries) can read them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ament_index_python.packages import (
    PackageNotFoundError,
    get_package_share_directory,
)
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from pi0_ros.bag.errors import BagError
from pi0_ros.bag.interfaces import TypeName, parse_type_name

SEPARATOR = "=" * 80

_PRIMITIVES = frozenset(
    {
        "bool",
        "byte",
        "char",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "string",
        "wstring",
    }
)
# Messages rosidl derives from an .action file; the rest of its derived types are services.
_ACTION_PARTS = ("Goal", "Result", "Feedback")


@dataclass(frozen=True)
class TypeDefinition:
    msgtype: str  # pkg/msg/Type
    text: str  # complete ros2msg definition: own text, then every nested type's
    type_hash: str  # RIHS01_<sha256 hex>


class DefinitionSource:
    """Finds and caches definitions; `share_directory` maps a package name to its share dir."""

    def __init__(self, share_directory: Callable[[str], str] = get_package_share_directory) -> None:
        self._share_directory = share_directory
        self._texts: dict[str, str] = {}
        self._definitions: dict[str, TypeDefinition] = {}

    def definition(self, msgtype: str) -> TypeDefinition:
        """The definition of `msgtype`; BagError when its package or file is not installed."""
        msgtype = str(parse_type_name(msgtype))
        if msgtype not in self._definitions:
            text = self._full_text(msgtype)
            type_hash = self._installed_hash(msgtype) or computed_type_hash(msgtype, text)
            self._definitions[msgtype] = TypeDefinition(msgtype, text, type_hash)
        return self._definitions[msgtype]

    def _full_text(self, root: str) -> str:
        parts = [self._own_text(root)]
        seen: set[str] = set()

        def append_dependencies(msgtype: str) -> None:
            for reference in _references(self._own_text(msgtype), parse_type_name(msgtype).package):
                if reference not in seen:
                    seen.add(reference)
                    dependency = _resolve_reference(reference)
                    # Named as the field references it (pkg/Type), like rosbag2 does.
                    parts.append(f"{SEPARATOR}\nMSG: {reference}\n{self._own_text(dependency)}")
                    append_dependencies(dependency)

        append_dependencies(root)
        return "\n".join(parts)

    def _own_text(self, msgtype: str) -> str:
        if msgtype not in self._texts:
            type_name = parse_type_name(msgtype)
            if type_name.namespace == "action":
                self._texts[msgtype] = self._action_part_text(type_name)
            else:
                self._texts[msgtype] = self._read(type_name, f"{type_name.namespace}/{type_name.name}.msg")
        return self._texts[msgtype]

    def _action_part_text(self, type_name: TypeName) -> str:
        action, _, part = type_name.name.partition("_")
        if part == "FeedbackMessage":
            # The message on <action>/_action/feedback, as rosidl generates it.
            return f"unique_identifier_msgs/UUID goal_id\n{type_name.package}/{action}_Feedback feedback\n"
        if part not in _ACTION_PARTS:
            raise BagError(f"no message definition for '{type_name}': not a message derived from an action")
        sections = _split_sections(self._read(type_name, f"action/{action}.action"))
        if len(sections) != len(_ACTION_PARTS):
            raise BagError(f"{type_name.package}/action/{action}.action does not have three sections")
        return sections[_ACTION_PARTS.index(part)]

    def _read(self, type_name: TypeName, relative: str) -> str:
        path = self._share(type_name) / relative
        try:
            return path.read_text()
        except OSError as exc:
            raise BagError(f"no message definition for '{type_name}': cannot read {path} ({exc.strerror})") from None

    def _share(self, type_name: TypeName) -> Path:
        try:
            return Path(self._share_directory(type_name.package))
        except (PackageNotFoundError, LookupError, ValueError):
            raise BagError(
                f"no message definition for '{type_name}': package '{type_name.package}' "
                "is not installed or not sourced"
            ) from None

    def _installed_hash(self, msgtype: str) -> str | None:
        # rosidl (Iron and newer) installs <Type>.json next to each interface with the
        # hashes of the type and everything derived from it; Humble has none.
        type_name = parse_type_name(msgtype)
        base = type_name.name.partition("_")[0] if type_name.namespace == "action" else type_name.name
        path = self._share(type_name) / type_name.namespace / f"{base}.json"
        try:
            hashes = json.loads(path.read_text())["type_hashes"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return next((h.get("hash_string") for h in hashes if h.get("type_name") == msgtype), None)


def computed_type_hash(msgtype: str, text: str) -> str:
    """The RIHS01 hash of a complete ros2msg definition (rosbags implements the REP-2011 algorithm)."""
    typestore = get_typestore(Stores.EMPTY)
    try:
        typestore.register(get_types_from_msg(text, msgtype))
        return typestore.hash_rihs01(msgtype)
    except Exception as exc:  # noqa: BLE001 - the parser reports bad text with assorted exception types
        raise BagError(f"cannot compute the type hash of '{msgtype}' from its definition: {exc}") from None


def _split_sections(text: str) -> list[str]:
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip() == "---":
            sections.append([])
        else:
            sections[-1].append(line)
    return ["\n".join(lines) + "\n" for lines in sections]


def _references(text: str, package: str) -> list[str]:
    """Nested message types of a .msg text as pkg/Type, in order of appearance."""
    found: list[str] = []
    for line in text.splitlines():
        tokens = line.split("#", 1)[0].split()
        if len(tokens) < 2:
            continue
        base = tokens[0].split("[", 1)[0].split("<=", 1)[0]
        if base in _PRIMITIVES:
            continue
        reference = base if "/" in base else f"{package}/{base}"
        if reference not in found:
            found.append(reference)
    return found


def _resolve_reference(reference: str) -> str:
    """pkg/Type as written in a .msg field to its full name; only action-derived names hold a '_'."""
    type_name = parse_type_name(reference)
    if type_name.namespace == "msg" and type_name.name.partition("_")[2] in _ACTION_PARTS:
        return f"{type_name.package}/action/{type_name.name}"
    return str(type_name)
