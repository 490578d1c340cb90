"""The robot description: one YAML file per robot, read by every node.

A description names the robot's joint groups (joints, limits, the ros2_control
controller that drives them), an optional mobile base, the cameras and their
pi0 image slots, the joint-state topics, how the policy's state and action
vectors are laid out, and which openpi observation family a policy server
reads its observations in (remote inference). Nodes, the simulator and the launch files all derive
their topics and limits from it, so a robot is described exactly once.

Loading validates everything and raises :class:`DescriptionError` naming the
file and the offending entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pi0_client.errors import ObservationError
from pi0_client.observation_formats import FAMILIES, ObservationFormat

# The three image slots of pi0 checkpoints (openpi naming).
PI0_IMAGE_SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")

CONTROLLER_INTERFACES = ("joint_trajectory", "forward_position", "base_velocity")

# Action names of a mobile base, in this order at the end of the action vector.
BASE_ACTION_NAMES = ("base_linear_x", "base_angular_z")


class DescriptionError(ValueError):
    """A robot description is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class JointSpec:
    name: str
    lower: float  # position limit, rad (or m / normalized for grippers)
    upper: float
    max_velocity: float  # per second; the streamer allows max_velocity / rate per tick
    home: float  # start pose of the simulator and hold target before any state arrives

    def __post_init__(self) -> None:
        values = (self.lower, self.upper, self.max_velocity, self.home)
        if not all(math.isfinite(v) for v in values):
            raise DescriptionError(f"joint '{self.name}': limits must be finite numbers")
        if self.lower >= self.upper:
            raise DescriptionError(f"joint '{self.name}': lower limit {self.lower} must be below upper {self.upper}")
        if self.max_velocity <= 0:
            raise DescriptionError(f"joint '{self.name}': max_velocity must be positive")
        if not self.lower <= self.home <= self.upper:
            raise DescriptionError(f"joint '{self.name}': home {self.home} lies outside [{self.lower}, {self.upper}]")


@dataclass(frozen=True)
class ControllerSpec:
    name: str  # ros2_control controller name, e.g. "left_arm_controller"
    interface: str  # one of CONTROLLER_INTERFACES
    topic: str  # command topic, relative to the robot namespace
    stamped: bool = True  # base_velocity only: TwistStamped (Jazzy) or Twist (Humble, older drivers)

    @property
    def message_type(self) -> str:
        if self.interface == "joint_trajectory":
            return "trajectory_msgs/msg/JointTrajectory"
        if self.interface == "forward_position":
            return "std_msgs/msg/Float64MultiArray"
        return "geometry_msgs/msg/TwistStamped" if self.stamped else "geometry_msgs/msg/Twist"


@dataclass(frozen=True)
class JointGroup:
    name: str
    joints: tuple[JointSpec, ...]
    controller: ControllerSpec
    joint_state_topic: str  # where this group's joints are published

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)


@dataclass(frozen=True)
class BaseSpec:
    """A velocity-driven mobile base (diff drive): actions base_linear_x, base_angular_z."""

    controller: ControllerSpec
    max_linear_velocity: float  # m/s
    max_angular_velocity: float  # rad/s
    max_linear_acceleration: float  # m/s^2
    max_angular_acceleration: float  # rad/s^2
    odometry_topic: str

    def __post_init__(self) -> None:
        for label in (
            "max_linear_velocity",
            "max_angular_velocity",
            "max_linear_acceleration",
            "max_angular_acceleration",
        ):
            value = getattr(self, label)
            if not (math.isfinite(value) and value > 0):
                raise DescriptionError(f"base: {label} must be a positive number, got {value}")

    @property
    def velocity_limits(self) -> tuple[float, float]:
        return (self.max_linear_velocity, self.max_angular_velocity)

    @property
    def acceleration_limits(self) -> tuple[float, float]:
        return (self.max_linear_acceleration, self.max_angular_acceleration)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str  # sensor_msgs/Image topic, or the CompressedImage topic when compressed
    slot: str | None  # pi0 image slot, or None for a camera the policy does not use
    compressed: bool = False
    width: int = 640  # native size, used by the simulator
    height: int = 480
    rate_hz: float = 30.0


@dataclass(frozen=True)
class PolicyLayout:
    """How the robot's signals map onto the policy's state and action vectors."""

    state: tuple[str, ...]  # joint names, in the order of the state vector
    actions: tuple[str, ...]  # joint names then base action names, in action-vector order
    action_rate_hz: float  # rate the checkpoint's actions were recorded at (one chunk row per 1/rate s)
    transforms: tuple[str, ...] = ()  # robot adaptations applied by pi0_model, e.g. ("aloha",)
    norm_stats: str | None = None  # norm_stats.json overriding the checkpoint's, relative to the description


@dataclass(frozen=True)
class OpenpiSpec:
    """How the robot's observations travel to an openpi policy server (pi0_client.observation_formats)."""

    family: str  # "aloha", "droid" or "libero"
    cameras: tuple[tuple[str, str], ...]  # (robot camera name, the family's camera key)


@dataclass(frozen=True)
class RobotDescription:
    name: str
    control_rate_hz: float
    joint_groups: tuple[JointGroup, ...]
    cameras: tuple[CameraSpec, ...]
    policy: PolicyLayout
    base: BaseSpec | None = None
    openpi: OpenpiSpec | None = None  # None: no policy server can be used for this robot
    source: Path | None = field(default=None, compare=False)

    @property
    def joints(self) -> tuple[JointSpec, ...]:
        return tuple(j for g in self.joint_groups for j in g.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def joint(self, name: str) -> JointSpec:
        for joint in self.joints:
            if joint.name == name:
                return joint
        raise KeyError(name)

    @property
    def joint_state_topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.joint_state_topic for g in self.joint_groups))

    @property
    def policy_cameras(self) -> tuple[CameraSpec, ...]:
        """Cameras that feed the policy, in pi0 slot order."""
        by_slot = {c.slot: c for c in self.cameras if c.slot is not None}
        return tuple(by_slot[s] for s in PI0_IMAGE_SLOTS if s in by_slot)

    @property
    def home_state(self) -> np.ndarray:
        """float64 [len(policy.state)]: the policy's state vector at the home pose."""
        return np.array([self.joint(name).home for name in self.policy.state], dtype=np.float64)

    def blank_images(self) -> dict[str, np.ndarray]:
        """A black uint8 [H, W, 3] frame per policy camera at its size: warm-up inputs."""
        return {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.policy_cameras}

    @property
    def camera_slots(self) -> dict[str, str]:
        """Policy camera name -> its pi0 slot, in slot order."""
        return {c.name: c.slot for c in self.policy_cameras if c.slot is not None}  # (all have one; for the type)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def action_period(self) -> float:
        return 1.0 / self.policy.action_rate_hz

    @property
    def controllers(self) -> tuple[ControllerSpec, ...]:
        found = [g.controller for g in self.joint_groups]
        if self.base is not None:
            found.append(self.base.controller)
        return tuple(found)

    def observation_format(self) -> ObservationFormat:
        """The openpi observation dicts of this robot; DescriptionError when it has no `openpi` section."""
        if self.openpi is None:
            raise DescriptionError(
                f"robot '{self.name}' has no 'openpi' section: a policy server needs its observation family "
                f"({', '.join(FAMILIES)}) and camera mapping"
            )
        return ObservationFormat(self.openpi.family, dict(self.openpi.cameras), len(self.policy.state))

    def norm_stats_path(self) -> Path | None:
        if self.policy.norm_stats is None:
            return None
        path = Path(self.policy.norm_stats)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


def load_robot_description(path: str | Path) -> RobotDescription:
    """Reads and validates a robot description YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DescriptionError(f"cannot read robot description {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise DescriptionError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return parse_robot_description(raw, source=path)
    except DescriptionError as exc:
        raise DescriptionError(f"{path}: {exc}") from None


def parse_robot_description(raw: Any, source: Path | None = None) -> RobotDescription:
    """Builds a validated description from already-parsed YAML."""
    data = _mapping(raw, "description")
    _reject_unknown(
        data,
        "description",
        {
            "name",
            "control_rate_hz",
            "joint_state_topic",
            "joint_templates",
            "joint_groups",
            "base",
            "cameras",
            "policy",
            "openpi",
        },
    )
    name = _string(data, "name", "description")
    rate = _number(data, "control_rate_hz", "description", default=50.0)
    if not 1.0 <= rate <= 1000.0:
        raise DescriptionError(f"control_rate_hz must be within [1, 1000], got {rate}")
    default_state_topic = str(data.get("joint_state_topic", "joint_states"))
    templates = _mapping(data.get("joint_templates", {}), "joint_templates")
    groups = tuple(_parse_group(g, default_state_topic, templates) for g in _list(data, "joint_groups", "description"))
    if not groups:
        raise DescriptionError("joint_groups must list at least one group")
    _require_unique("joint", [j.name for g in groups for j in g.joints])
    base = _parse_base(data["base"]) if data.get("base") is not None else None
    cameras = tuple(_parse_camera(c) for c in _list(data, "cameras", "description"))
    description = RobotDescription(
        name=name,
        control_rate_hz=rate,
        joint_groups=groups,
        cameras=cameras,
        policy=_parse_policy(data.get("policy", {}), groups, base, rate),
        base=base,
        source=source,
    )
    _check_unique(description)
    if data.get("openpi") is not None:
        description = replace(description, openpi=_parse_openpi(data["openpi"], description))
    stats = description.norm_stats_path()
    if stats is not None and source is not None and not stats.is_file():
        raise DescriptionError(f"policy.norm_stats: {stats} does not exist")
    return description


def _parse_group(raw: Any, default_state_topic: str, templates: Mapping[str, Any]) -> JointGroup:
    data = _mapping(raw, "joint group")
    name = _string(data, "name", "joint group")
    where = f"joint group '{name}'"
    _reject_unknown(data, where, {"name", "joints", "template", "prefix", "controller", "joint_state_topic"})
    if "template" in data:
        # A template describes identical arms once; each group only names its prefix.
        if "joints" in data:
            raise DescriptionError(f"{where}: give either 'joints' or 'template', not both")
        template = data["template"]
        if template not in templates:
            raise DescriptionError(f"{where}: unknown joint template '{template}'")
        raw_joints = [
            dict(_mapping(j, f"joint template '{template}' joint"))
            for j in _list(templates, template, "joint_templates")
        ]
        for joint in raw_joints:
            joint["name"] = f"{data.get('prefix', '')}{joint.get('name', '')}"
    else:
        raw_joints = _list(data, "joints", where)
    joints = tuple(_parse_joint(j, where) for j in raw_joints)
    if not joints:
        raise DescriptionError(f"{where}: joints must not be empty")
    controller = _parse_controller(data.get("controller"), where)
    if controller.interface == "base_velocity":
        raise DescriptionError(f"{where}: base_velocity controllers belong under 'base'")
    return JointGroup(name, joints, controller, str(data.get("joint_state_topic", default_state_topic)))


def _parse_joint(raw: Any, where: str) -> JointSpec:
    data = _mapping(raw, f"{where} joint")
    name = _string(data, "name", f"{where} joint")
    joint_where = f"{where}, joint '{name}'"
    _reject_unknown(data, joint_where, {"name", "lower", "upper", "max_velocity", "home"})
    for key in ("lower", "upper", "max_velocity"):
        if key not in data:
            raise DescriptionError(f"{joint_where}: missing limit '{key}'")
    lower = _number(data, "lower", joint_where)
    upper = _number(data, "upper", joint_where)
    home = _number(data, "home", joint_where, default=min(max(0.0, lower), upper))
    try:
        return JointSpec(name, lower, upper, _number(data, "max_velocity", joint_where), home)
    except DescriptionError as exc:
        raise DescriptionError(f"{where}: {exc}") from None


def _parse_controller(raw: Any, where: str) -> ControllerSpec:
    data = _mapping(raw, f"{where} controller")
    _reject_unknown(data, f"{where} controller", {"name", "interface", "topic", "stamped"})
    name = _string(data, "name", f"{where} controller")
    interface = _string(data, "interface", f"{where} controller")
    if interface not in CONTROLLER_INTERFACES:
        raise DescriptionError(
            f"{where} controller '{name}': unknown interface '{interface}' "
            f"(expected one of {', '.join(CONTROLLER_INTERFACES)})"
        )
    stamped = bool(data.get("stamped", True))
    default_topic = {
        "joint_trajectory": f"{name}/joint_trajectory",
        "forward_position": f"{name}/commands",
        "base_velocity": f"{name}/cmd_vel" if stamped else f"{name}/cmd_vel_unstamped",
    }[interface]
    return ControllerSpec(name, interface, str(data.get("topic", default_topic)), stamped)


def _parse_base(raw: Any) -> BaseSpec:
    data = _mapping(raw, "base")
    _reject_unknown(
        data,
        "base",
        {
            "controller",
            "max_linear_velocity",
            "max_angular_velocity",
            "max_linear_acceleration",
            "max_angular_acceleration",
            "odometry_topic",
        },
    )
    controller = _parse_controller(data.get("controller"), "base")
    if controller.interface != "base_velocity":
        raise DescriptionError("base: controller interface must be base_velocity")
    return BaseSpec(
        controller=controller,
        max_linear_velocity=_number(data, "max_linear_velocity", "base"),
        max_angular_velocity=_number(data, "max_angular_velocity", "base"),
        max_linear_acceleration=_number(data, "max_linear_acceleration", "base"),
        max_angular_acceleration=_number(data, "max_angular_acceleration", "base"),
        odometry_topic=str(data.get("odometry_topic", f"{controller.name}/odom")),
    )


def _parse_camera(raw: Any) -> CameraSpec:
    data = _mapping(raw, "camera")
    name = _string(data, "name", "camera")
    where = f"camera '{name}'"
    _reject_unknown(data, where, {"name", "topic", "slot", "compressed", "width", "height", "rate_hz"})
    slot = data.get("slot")
    if slot is not None and slot not in PI0_IMAGE_SLOTS:
        raise DescriptionError(
            f"{where}: unknown pi0 slot '{slot}' (expected one of {', '.join(PI0_IMAGE_SLOTS)} or null)"
        )
    compressed = bool(data.get("compressed", False))
    default_topic = f"{name}/image_raw/compressed" if compressed else f"{name}/image_raw"
    width = int(_number(data, "width", where, default=640))
    height = int(_number(data, "height", where, default=480))
    rate = _number(data, "rate_hz", where, default=30.0)
    if width <= 0 or height <= 0 or rate <= 0:
        raise DescriptionError(f"{where}: width, height and rate_hz must be positive")
    return CameraSpec(name, str(data.get("topic", default_topic)), slot, compressed, width, height, rate)


def _parse_policy(
    raw: Any, groups: Sequence[JointGroup], base: BaseSpec | None, control_rate_hz: float
) -> PolicyLayout:
    data = _mapping(raw, "policy")
    _reject_unknown(data, "policy", {"state", "actions", "action_rate_hz", "transforms", "norm_stats"})
    action_rate = _number(data, "action_rate_hz", "policy", default=control_rate_hz)
    if not 1.0 <= action_rate <= control_rate_hz:
        raise DescriptionError(
            f"policy.action_rate_hz must be within [1, control_rate_hz={control_rate_hz}], got {action_rate}"
        )
    joint_names = [j.name for g in groups for j in g.joints]
    default_actions = joint_names + (list(BASE_ACTION_NAMES) if base is not None else [])
    state = tuple(data.get("state", joint_names))
    actions = tuple(data.get("actions", default_actions))
    for label, names, allowed in (("state", state, joint_names), ("actions", actions, default_actions)):
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise DescriptionError(f"policy.{label} names unknown joint(s): {', '.join(map(str, unknown))}")
        if len(set(names)) != len(names):
            raise DescriptionError(f"policy.{label} lists a name twice")
        if not names:
            raise DescriptionError(f"policy.{label} must not be empty")
    missing = [n for n in default_actions if n not in actions]
    if missing:
        raise DescriptionError(f"policy.actions must command every joint; missing: {', '.join(missing)}")
    # Their names and dimensions are checked against pi0_model by check_model_adaptations (policy side):
    # the streamer, which loads descriptions too, must not need the ML packages.
    transforms = tuple(str(t) for t in data.get("transforms", ()))
    norm_stats = data.get("norm_stats")
    return PolicyLayout(state, actions, action_rate, transforms, None if norm_stats is None else str(norm_stats))


def _parse_openpi(raw: Any, description: RobotDescription) -> OpenpiSpec:
    """The family and camera mapping, checked against the family (camera keys, state length) and the cameras."""
    data = _mapping(raw, "openpi")
    _reject_unknown(data, "openpi", {"family", "cameras"})
    family = _string(data, "family", "openpi")
    if family not in FAMILIES:
        raise DescriptionError(f"openpi: unknown family '{family}' (expected one of {', '.join(FAMILIES)})")
    camera_names = [c.name for c in description.cameras]
    if "cameras" in data:
        cameras = {str(k): str(v) for k, v in _mapping(data["cameras"], "openpi.cameras").items()}
    else:
        # Robots that name their cameras like the family (ALOHA's cam_high, ...) need no mapping.
        cameras = {name: name for name in camera_names if name in FAMILIES[family].camera_keys}
    unknown = [name for name in cameras if name not in camera_names]
    if unknown:
        raise DescriptionError(f"openpi.cameras: unknown camera(s) {', '.join(unknown)}")
    unmapped = [c.name for c in description.policy_cameras if c.name not in cameras]
    if unmapped:
        raise DescriptionError(
            f"openpi.cameras: policy camera(s) {', '.join(unmapped)} have no {family} key "
            f"(one of {', '.join(FAMILIES[family].camera_keys)})"
        )
    try:
        ObservationFormat(family, cameras, len(description.policy.state))
    except ObservationError as exc:
        raise DescriptionError(f"openpi: {exc}") from None
    return OpenpiSpec(family, tuple(cameras.items()))


def _require_unique(label: str, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DescriptionError(f"duplicate {label} '{name}'")
        seen.add(name)


def _check_unique(description: RobotDescription) -> None:
    _require_unique("joint group", [g.name for g in description.joint_groups])
    _require_unique("camera", [c.name for c in description.cameras])
    _require_unique("camera topic", [c.topic for c in description.cameras])
    _require_unique("controller", [c.name for c in description.controllers])
    slots = [c.slot for c in description.cameras if c.slot is not None]
    if len(set(slots)) != len(slots):
        raise DescriptionError("two cameras map to the same pi0 slot")
    if not slots:
        raise DescriptionError("at least one camera must map to a pi0 slot")


def _mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise DescriptionError(f"{what} must be a mapping, got {type(raw).__name__}")
    return raw


def _list(data: Mapping[str, Any], key: str, where: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise DescriptionError(f"{where}: '{key}' must be a list")
    return value


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise DescriptionError(f"{where}: '{key}' must be a non-empty string")
    return value


def _number(data: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DescriptionError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def _reject_unknown(data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise DescriptionError(f"{where}: unknown key(s) {', '.join(unknown)}")
