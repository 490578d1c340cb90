"""ObservationSource: a node's subscriptions to the robot's cameras and joint states, feeding the synchronizer.

Not a node of its own: the policy node creates one on its node (on_configure or
on_activate) and calls :meth:`ObservationSource.destroy` on cleanup. From the
robot description it subscribes to every policy camera (Image or
CompressedImage, per ``CameraSpec.compressed``) and to every joint-state topic
that carries a state joint, decodes images in the callback (outside the
synchronizer's lock) and hands them to :class:`ObservationSynchronizer`.

Times: message header stamps date the data; "now" is the node's clock, so
``use_sim_time`` works. A zero header stamp is replaced by the receive time and
counted as a warning. Bad messages are counted on their stream, logged at most
once per stream and ``log_period_s``, and never raise out of a callback.

When the node clock jumps back (a simulator reset, a bag replay restarting) or
switches between ROS and system time, the synchronizer's history is cleared and
a warning logged: stamps from before the jump would otherwise be matched with
those after it, or keep newer data out until the new stamps pass the old ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.callback_groups import CallbackGroup
from rclpy.clock import ClockChange, JumpHandle, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image, JointState

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble names the module qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks

from pi0_ros.core.robot_description import CameraSpec, RobotDescription
from pi0_ros.policy.observation_sync import (
    ObservationSynchronizer,
    StreamHealth,
    SyncConfig,
    SyncLimits,
    SyncResult,
    SyncStatus,
)
from pi0_ros.ros.conversions import RELIABILITY_CHOICES, qos_profile, stamp_to_seconds
from pi0_ros.ros.image_conversion import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb

# No QoS event handlers on our subscriptions: rclpy (Humble, Jazzy) can raise
# InvalidHandle in the spinning executor when a subscription that has them is
# destroyed (ros2/rclpy#1206), which the lifecycle cleanup does. A publisher with
# incompatible QoS then shows as a stream without data in the diagnostics.
_NO_EVENT_HANDLERS = SubscriptionEventCallbacks(use_default_callbacks=False)

# A backward step of the node clock larger than this is a jump (1 ms: ROS time never steps back in normal use).
_CLOCK_JUMP_BACK = Duration(nanoseconds=-1_000_000)

# Diagnostic level of the synchronizer for each outcome of latest().
_SYNC_LEVEL = {
    SyncStatus.OK: DiagnosticStatus.OK,
    SyncStatus.NOT_NEW: DiagnosticStatus.OK,
    SyncStatus.UNMATCHED: DiagnosticStatus.WARN,
    SyncStatus.STALE: DiagnosticStatus.ERROR,
    SyncStatus.MISSING: DiagnosticStatus.ERROR,
}


@dataclass(frozen=True)
class QosSettings:
    """A subscription's QoS in parameter form."""

    reliability: str  # one of ros_conversions.RELIABILITY_CHOICES
    depth: int  # keep-last history depth

    def __post_init__(self) -> None:
        if self.reliability not in RELIABILITY_CHOICES:
            raise ValueError(
                f"QoS reliability must be one of {', '.join(RELIABILITY_CHOICES)}, got '{self.reliability}'"
            )
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1:
            raise ValueError(f"QoS depth must be an integer >= 1, got {self.depth!r}")

    def profile(self) -> QoSProfile:
        return qos_profile(self.reliability, self.depth)


@dataclass(frozen=True)
class ObservationSourceParams:
    limits: SyncLimits = SyncLimits()  # slop, queue size, max age, joint extrapolation
    camera_qos: QosSettings = QosSettings("best_effort", 2)  # sensor data: newest frame wins
    joint_state_qos: QosSettings = QosSettings("reliable", 10)  # as joint_state_broadcaster publishes
    log_period_s: float = 5.0  # at most one bad-input log line per stream and period

    def __post_init__(self) -> None:
        if not isinstance(self.limits, SyncLimits):
            raise ValueError(f"limits must be SyncLimits, got {type(self.limits).__name__}")
        for label in ("camera_qos", "joint_state_qos"):
            if not isinstance(getattr(self, label), QosSettings):
                raise ValueError(f"{label} must be QosSettings, got {type(getattr(self, label)).__name__}")
        if not (isinstance(self.log_period_s, (int, float)) and self.log_period_s >= 0):
            raise ValueError(f"log_period_s must be a number >= 0, got {self.log_period_s!r}")


def state_joint_topics(description: RobotDescription) -> tuple[str, ...]:
    """Joint-state topics of the groups that hold at least one state joint, in group order."""
    state = set(description.policy.state)
    return tuple(
        dict.fromkeys(g.joint_state_topic for g in description.joint_groups if state.intersection(g.joint_names))
    )


class _LogThrottle:
    """Lets one line per key through per period and counts the lines it held back."""

    def __init__(self, period_s: float) -> None:
        self._period_s = period_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None to stay quiet, else how many lines were held back since the last one let through."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


class ObservationSource:
    """Subscribes `node` to the description's policy cameras and joint states and synchronizes them."""

    def __init__(
        self,
        node: Node,
        description: RobotDescription,
        params: ObservationSourceParams = ObservationSourceParams(),
        callback_group: CallbackGroup | None = None,
        on_image: Callable[[], None] | None = None,
    ) -> None:
        """`on_image` is called after every accepted camera frame: a new camera set may be complete."""
        self._node = node
        self._on_new_image = on_image
        self._params = params
        cameras = description.policy_cameras
        topics = state_joint_topics(description)
        self._sync = ObservationSynchronizer(
            SyncConfig(
                camera_names=tuple(c.name for c in cameras),
                joint_names=description.policy.state,
                joint_streams=topics,
                limits=params.limits,
            )
        )
        self._throttle = _LogThrottle(params.log_period_s)
        # (errors, warnings) per stream at the previous diagnostic_status() call.
        self._reported: dict[str, tuple[int, int]] = {}
        self._subscriptions: list[Subscription] = [self._subscribe_camera(c, callback_group) for c in cameras]
        self._subscriptions += [self._subscribe_joint_states(t, callback_group) for t in topics]
        self._jump_handle: JumpHandle | None = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=_CLOCK_JUMP_BACK, on_clock_change=True),
            post_callback=self._on_clock_jump,
        )

    @property
    def synchronizer(self) -> ObservationSynchronizer:
        return self._sync

    def now(self) -> float:
        """The node clock (sim time under use_sim_time), s."""
        return self._node.get_clock().now().nanoseconds * 1e-9

    def latest(self, newer_than: float | None = None) -> SyncResult:
        """The newest synchronized observation at the node's current time (see ObservationSynchronizer.latest)."""
        return self._sync.latest(self.now(), newer_than)

    def health(self) -> tuple[StreamHealth, ...]:
        return self._sync.health(self.now())

    def diagnostic_status(self) -> list[DiagnosticStatus]:
        """One status for the synchronizer, then one per stream.

        Meant for a periodic diagnostics timer: a stream is WARN when it had bad
        messages or warnings since the previous call, ERROR when missing or stale.
        """
        now = self.now()
        statuses = [self._sync_status(self._sync.latest(now), now)]
        statuses += [self._stream_status(h) for h in self._sync.health(now)]
        return statuses

    def destroy(self) -> None:
        """Removes the subscriptions and the clock jump callback; the source receives nothing afterwards."""
        if self._jump_handle is not None:
            self._jump_handle.unregister()
            self._jump_handle = None
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()

    def _on_clock_jump(self, jump: TimeJump) -> None:
        if jump.clock_change in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
            warning = f"clock switched ({jump.clock_change.name}); observation history cleared"
        else:
            warning = f"clock jumped back {-jump.delta.nanoseconds * 1e-9:.3f} s; observation history cleared"
        self._sync.clear(warning)
        self._node.get_logger().warning(warning)

    def _subscribe_camera(self, camera: CameraSpec, group: CallbackGroup | None) -> Subscription:
        msg_type = CompressedImage if camera.compressed else Image
        decode = compressed_msg_to_rgb if camera.compressed else image_msg_to_rgb
        return self._node.create_subscription(
            msg_type,
            camera.topic,
            self._guarded(camera.name, lambda msg: self._on_image(camera.name, decode, msg)),
            self._params.camera_qos.profile(),
            callback_group=group,
            event_callbacks=_NO_EVENT_HANDLERS,
        )

    def _subscribe_joint_states(self, topic: str, group: CallbackGroup | None) -> Subscription:
        return self._node.create_subscription(
            JointState,
            topic,
            self._guarded(topic, lambda msg: self._on_joint_state(topic, msg)),
            self._params.joint_state_qos.profile(),
            callback_group=group,
            event_callbacks=_NO_EVENT_HANDLERS,
        )

    def _guarded(self, stream: str, handle: Callable[[Any], None]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            try:
                handle(msg)
            except ImageConversionError as exc:
                self._reject(stream, str(exc))
            except Exception as exc:  # noqa: BLE001 - bad input must never take the executor down
                self._reject(stream, f"unexpected {type(exc).__name__}: {exc}")

        return callback

    def _on_image(self, camera: str, decode: Callable[[Any], Any], msg: Any) -> None:
        stamp = self._stamp(camera, msg.header)
        self._log(camera, self._sync.add_image(camera, stamp, decode(msg)))
        if self._on_new_image is not None:
            self._on_new_image()

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
        stamp = self._stamp(topic, msg.header)
        self._log(topic, self._sync.add_joint_state(topic, stamp, msg.name, msg.position))

    def _stamp(self, stream: str, header: Any) -> float:
        stamp = stamp_to_seconds(header.stamp)
        if stamp != 0.0:
            return stamp
        warning = "zero header stamp; used the receive time"
        self._sync.report_warning(stream, warning)
        self._log(stream, warning)
        return self.now()

    def _reject(self, stream: str, error: str) -> None:
        self._sync.report_error(stream, error)
        self._log(stream, error)

    def _log(self, stream: str, problem: str | None) -> None:
        if not problem:
            return
        held = self._throttle.allow(stream)
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            self._node.get_logger().warning(f"observation stream '{stream}': {problem}{more}")

    def _sync_status(self, result: SyncResult, now: float) -> DiagnosticStatus:
        limits = self._params.limits
        values = {
            "status": result.status.value,
            "slop_s": f"{self._sync.slop_s():.4f}",
            "slop_mode": "fixed" if limits.slop_s is not None else "auto",
            "max_age_s": limits.max_age_s,
        }
        if result.observation is not None:
            values["set_stamp"] = f"{result.observation.stamp:.6f}"
            values["set_age_s"] = f"{now - result.observation.stamp:.3f}"
            values["set_spread_s"] = f"{result.observation.spread_s:.4f}"
        return _status(
            _SYNC_LEVEL[result.status],
            "observation sync",
            result.reason or "synchronized",
            values,
            self._node.get_name(),
        )

    def _stream_status(self, health: StreamHealth) -> DiagnosticStatus:
        previous = self._reported.get(health.name, (0, 0))
        self._reported[health.name] = (health.errors, health.warnings)
        level, message = _stream_condition(health, health.errors - previous[0], health.warnings - previous[1])
        values = {
            "kind": health.kind,
            "received": health.received,
            "errors": health.errors,
            "dropped": health.dropped,
            "warnings": health.warnings,
            "rate_hz": _optional(health.rate_hz, 1),
            "age_s": _optional(health.age_s, 3),
            "last_stamp": _optional(health.last_stamp, 6),
            "last_error": health.last_error,
            "last_warning": health.last_warning,
        }
        return _status(level, f"observation stream {health.name}", message, values, self._node.get_name())


def _stream_condition(health: StreamHealth, new_errors: int, new_warnings: int) -> tuple[bytes, str]:
    """ERROR without usable data, WARN for bad input since the previous report, else OK; and why."""
    level, problems = DiagnosticStatus.OK, []
    if new_errors:
        level = DiagnosticStatus.WARN
        problems.append(f"{new_errors} bad message(s), last: {health.last_error}")
    if new_warnings:
        level = DiagnosticStatus.WARN
        problems.append(f"{new_warnings} warning(s), last: {health.last_warning}")
    if health.stale:
        level = DiagnosticStatus.ERROR
        problems.insert(
            0, "no data yet" if health.last_stamp is None else f"stale: newest data is {health.age_s:.3f} s old"
        )
    return level, "; ".join(problems) or "ok"


def _status(level: bytes, what: str, message: str, values: dict[str, Any], node_name: str) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=f"{node_name}: {what}",
        message=message,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def _optional(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
