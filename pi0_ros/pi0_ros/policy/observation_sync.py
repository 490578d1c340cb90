"""The observation synchronizer: camera frames matched into sets, joint state sampled at set time.

Plain Python (no rclpy), so it is unit-tested without a ROS graph; the ROS
wrapper (:mod:`pi0_ros.policy.observation_source`) decodes messages and feeds it, and
the inference thread pulls from it. All times are float seconds.

We do not use message_filters' ApproximateTimeSynchronizer: it pushes every
matched set into a callback while holding its lock, whereas the inference loop
pulls the newest set whenever it is ready; it cannot interpolate a fast joint
state stream to the image time; and it keeps no per-stream health. (It is also
missing from the PyPI ROS 2 wheels.)

Rules
- A set holds one frame per camera whose stamps spread by at most the slop.
  Frames may arrive out of order; each camera keeps its newest `queue_size`
  frames. A candidate set ends at some kept stamp and takes each camera's newest
  frame at or before it; the newest candidate within the slop is the newest
  complete set. `latest()` picks, among the candidates whose newest frame is at
  most 1.5 frame periods (of the fastest camera) older than the oldest frame of
  the newest complete set, the one with the smallest spread, newest first among
  spreads within a quarter period of each other. So when one camera's frame of
  the newest capture moment is late or lost, the complete set of the previous
  moment wins over a set mixing both moments, and the picked set's newest frame
  is never more than slop + 1.5 frame periods older than the newest complete
  set's. Until every camera's rate is measured only the newest complete set is
  a candidate.
- The slop is `slop_s`, or when that is None, derived from the measured camera
  rates: (1 - 1/n) of the shortest frame period for n cameras, clamped to
  [5 ms, 50 ms] (50 ms until a rate is known). n free-running cameras always
  have a set spreading less than that, while frames of neighbouring moments of
  synchronized cameras spread by a whole period, so they are never one set.
- The set time is the middle of its stamp range, so no image is more than
  slop/2 away from the state.
- The state is every configured joint's position linearly interpolated at set
  time. Joint states may come from several streams (one per arm), each carrying
  any subset of the joints; names that are not configured are ignored. A set
  newer than a joint's newest sample uses that sample if the gap is at most
  `joint_extrapolation_s`, otherwise the set is not usable yet.
- Nothing old reaches the policy: `latest(now)` returns no observation, with a
  status and reason, while a camera or joint has never arrived, its newest data
  is older than `max_age_s`, or the newest set itself is older than that.
- `latest(now, newer_than=t)` returns only a set newer than `t`, so a loop that
  passes its previous observation's stamp gets each set once. A `t` more than
  `max_age_s` ahead of `now` predates a clock jump back and is ignored.
- Bad input never raises: it is counted on its stream (see :meth:`health`), its
  text kept as the stream's last error, and the data dropped. Passing a stream
  name that is not configured is a programming error and raises ValueError.
- A stamp that jumps back means the clock jumped back (a bag replay
  restarting, a simulator reset): a camera frame older than its camera's newest
  by more than the queue could hold (queue_size frame periods, at least 50 ms),
  or a joint sample older than its joint's newest by more than 50 ms (both at
  most `max_age_s`). Then all history is cleared and a warning counted on every
  stream, so no set mixes data from before and after the jump; shorter steps
  back are reordering (frames are sorted in, joint samples dropped).
  :meth:`ObservationSynchronizer.clear` does the same for a jump of the node's
  clock. A `newer_than` newer than every kept frame predates such a clear and
  is ignored.

Thread safety: one lock guards the queues; ROS callbacks add while the inference
thread pulls. Validation happens before taking the lock and images arrive
already decoded, so the lock is only held for list updates, matching a few
frames and interpolating a few joints. `add_image`, `add_joint_state` and
`latest` are plain method calls, so their cost per message can be timed directly.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from pi0_ros.core.interpolation import lerp
from pi0_ros.core.rgb_image import rgb_image_problem

# Stamps are integer nanoseconds turned into float seconds; at epoch scale a
# float resolves about 0.24 us, so comparisons allow 1 us.
STAMP_TOLERANCE_S = 1e-6

# Accepted stamps kept per stream to estimate its rate.
_RATE_WINDOW = 20

# Automatic slop: bounds and the value used until a camera rate is measured (see the module rules).
AUTO_SLOP_MIN_S = 0.005
AUTO_SLOP_MAX_S = 0.05

# Candidate sets end at most this many frame periods before the newest complete set's oldest frame.
_RECENT_PERIODS = 1.5
# Spreads closer than this many frame periods count as equal, so jitter does not cost a frame of latency.
_SPREAD_TIE_PERIODS = 0.25

# A stream stepping back by more than this (and than its reorder window) means the clock jumped back.
_JUMP_BACK_MIN_S = 0.05

# Hard bound on joint samples kept per joint, whatever the stamps say.
_MAX_JOINT_SAMPLES = 4096

CAMERA = "camera"
JOINT_STATE = "joint_state"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SyncLimits:
    """Matching and freshness limits (the tunable part of the synchronizer)."""

    slop_s: float | None = None  # widest spread of camera stamps inside one set; None: from the camera rates
    queue_size: int = 5  # frames kept per camera for matching
    max_age_s: float = 0.5  # every stream's newest data, and the set, must be younger than this
    joint_extrapolation_s: float = 0.05  # a set may lie this far past a joint's newest sample

    def __post_init__(self) -> None:
        _require(
            self.slop_s is None or (_is_number(self.slop_s) and self.slop_s >= 0),
            f"slop_s must be None or a finite number >= 0, got {self.slop_s!r}",
        )
        _require(
            isinstance(self.queue_size, int) and not isinstance(self.queue_size, bool) and self.queue_size >= 1,
            f"queue_size must be an integer >= 1, got {self.queue_size!r}",
        )
        _require(
            _is_number(self.max_age_s) and self.max_age_s > 0,
            f"max_age_s must be a finite number > 0, got {self.max_age_s!r}",
        )
        _require(
            _is_number(self.joint_extrapolation_s) and self.joint_extrapolation_s >= 0,
            f"joint_extrapolation_s must be a finite number >= 0, got {self.joint_extrapolation_s!r}",
        )


@dataclass(frozen=True)
class SyncConfig:
    """What to synchronize: the cameras of a set, the state's joints and the joint-state streams."""

    camera_names: tuple[str, ...]  # every set holds one frame of each
    joint_names: tuple[str, ...]  # the state vector, in this order
    joint_streams: tuple[str, ...] = ("joint_states",)  # names of the joint-state inputs (topics), for health
    limits: SyncLimits = SyncLimits()

    def __post_init__(self) -> None:
        for label in ("camera_names", "joint_names", "joint_streams"):
            names = getattr(self, label)
            _require(
                isinstance(names, tuple) and all(isinstance(n, str) and n for n in names),
                f"{label} must be a tuple of non-empty strings, got {names!r}",
            )
            _require(len(names) > 0, f"{label} must not be empty")
            _require(len(set(names)) == len(names), f"{label} lists a name twice: {names}")
        shared = sorted(set(self.camera_names) & set(self.joint_streams))
        _require(not shared, f"camera and joint stream names must differ, both use {', '.join(shared)}")
        _require(isinstance(self.limits, SyncLimits), f"limits must be SyncLimits, got {type(self.limits).__name__}")


class SyncStatus(Enum):
    OK = "ok"  # an observation is returned
    NOT_NEW = "not_new"  # the newest usable set is not newer than `newer_than`
    UNMATCHED = "unmatched"  # data is fresh but no camera set fits the slop, or the joint state does not reach it
    STALE = "stale"  # some stream's newest data, or the newest set, is older than max_age
    MISSING = "missing"  # some camera or joint has not arrived yet


@dataclass(frozen=True, eq=False)
class SyncedObservation:
    stamp: float  # set time: middle of the set's image stamps, s
    images: Mapping[str, np.ndarray]  # camera -> read-only uint8 [H, W, 3] RGB, in configured camera order
    state: np.ndarray  # float64 [n_joints] in configured joint order, interpolated at `stamp`
    image_stamps: Mapping[str, float]  # camera -> stamp of its frame, s

    @property
    def spread_s(self) -> float:
        """Newest minus oldest image stamp of the set, s."""
        return max(self.image_stamps.values()) - min(self.image_stamps.values())


@dataclass(frozen=True)
class SyncResult:
    observation: SyncedObservation | None  # set exactly when status is OK
    status: SyncStatus
    reason: str  # why there is no observation, for logs and diagnostics ("" when OK)

    @property
    def ok(self) -> bool:
        return self.observation is not None


@dataclass(frozen=True)
class StreamHealth:
    name: str  # camera name or joint-state stream name
    kind: str  # CAMERA or JOINT_STATE
    received: int  # messages accepted
    errors: int  # messages rejected as malformed
    dropped: int  # well-formed messages not kept (too old for the queue, duplicate stamp, out of order)
    warnings: int  # accepted with a warning (e.g. a zero stamp replaced by the receive time)
    last_stamp: float | None  # newest accepted stamp, s
    age_s: float | None  # now - last_stamp
    rate_hz: float | None  # from the stamps of the last few accepted messages
    last_error: str
    last_warning: str
    stale: bool  # nothing accepted yet, or the newest is older than max_age

    @property
    def ok(self) -> bool:
        return not self.stale


class _StreamStats:
    """Counters and recent stamps of one input stream; guarded by the synchronizer's lock."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.received = self.errors = self.dropped = self.warnings = 0
        self.last_error = self.last_warning = ""
        self.last_stamp: float | None = None
        self._recent: deque[float] = deque(maxlen=_RATE_WINDOW)

    def accept(self, stamp: float) -> None:
        self.received += 1
        self.last_stamp = stamp if self.last_stamp is None else max(self.last_stamp, stamp)
        self._recent.append(stamp)

    def reject(self, error: str) -> None:
        self.errors += 1
        self.last_error = error

    def warn(self, warning: str) -> None:
        self.warnings += 1
        self.last_warning = warning

    def restart(self, warning: str) -> None:
        """Forgets the stamps after the clock jumped back (the history was cleared)."""
        self.warn(warning)
        self.last_stamp = None
        self._recent.clear()

    def rate_hz(self) -> float | None:
        stamps = set(self._recent)  # a replaced duplicate is not an extra message per second
        if len(stamps) < 2:
            return None
        return (len(stamps) - 1) / (max(stamps) - min(stamps))

    def snapshot(self, now_s: float, max_age_s: float) -> StreamHealth:
        age = None if self.last_stamp is None else now_s - self.last_stamp
        return StreamHealth(
            name=self.name,
            kind=self.kind,
            received=self.received,
            errors=self.errors,
            dropped=self.dropped,
            warnings=self.warnings,
            last_stamp=self.last_stamp,
            age_s=age,
            rate_hz=self.rate_hz(),
            last_error=self.last_error,
            last_warning=self.last_warning,
            stale=age is None or age > max_age_s + STAMP_TOLERANCE_S,
        )


class _Insert(Enum):
    STORED = "stored"
    REPLACED = "replaced"  # same stamp as a queued frame, which it replaces (that one counts as dropped)
    TOO_OLD = "too_old"  # the queue is full of newer frames


class _FrameQueue:
    """One camera's newest frames, sorted by stamp, at most `size` of them."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.stamps: list[float] = []
        self.images: list[np.ndarray] = []

    @property
    def newest(self) -> float | None:
        return self.stamps[-1] if self.stamps else None

    def insert(self, stamp: float, image: np.ndarray) -> _Insert:
        """Adds a frame in stamp order."""
        i = bisect_right(self.stamps, stamp + STAMP_TOLERANCE_S)
        if i > 0 and stamp - self.stamps[i - 1] <= STAMP_TOLERANCE_S:
            self.images[i - 1] = image
            return _Insert.REPLACED
        if i == 0 and len(self.stamps) == self._size:
            return _Insert.TOO_OLD
        self.stamps.insert(i, stamp)
        self.images.insert(i, image)
        if len(self.stamps) > self._size:
            del self.stamps[0], self.images[0]
        return _Insert.STORED

    def index_at_or_before(self, stamp: float) -> int | None:
        i = bisect_right(self.stamps, stamp + STAMP_TOLERANCE_S)
        return i - 1 if i > 0 else None

    def clear(self) -> None:
        self.stamps.clear()
        self.images.clear()


class _JointHistory:
    """Recent (stamp, position) samples of every configured joint, in stamp order."""

    def __init__(self, joint_names: Sequence[str], retention_s: float) -> None:
        self._names = tuple(joint_names)
        self._retention_s = retention_s
        self._stamps: list[deque[float]] = [deque(maxlen=_MAX_JOINT_SAMPLES) for _ in self._names]
        self._values: list[deque[float]] = [deque(maxlen=_MAX_JOINT_SAMPLES) for _ in self._names]

    def newest(self, joint: int) -> float | None:
        stamps = self._stamps[joint]
        return stamps[-1] if stamps else None

    def add(self, stamp: float, joints: Sequence[int], values: np.ndarray) -> None:
        """Appends one sample per joint; the caller guarantees stamp >= each joint's newest."""
        for joint, value in zip(joints, values.tolist()):
            stamps, samples = self._stamps[joint], self._values[joint]
            if stamps and stamp - stamps[-1] <= STAMP_TOLERANCE_S:
                samples[-1] = value
                continue
            stamps.append(stamp)
            samples.append(value)
            while stamps[0] < stamp - self._retention_s:
                stamps.popleft()
                samples.popleft()

    def clear(self, joints: Sequence[int]) -> None:
        for joint in joints:
            self._stamps[joint].clear()
            self._values[joint].clear()

    def sample(self, t: float, extrapolation_s: float) -> tuple[np.ndarray | None, str]:
        """Every joint's position at time t (float64 [n_joints]), or None and why not."""
        state = np.empty(len(self._names))
        gaps = []
        for joint, name in enumerate(self._names):
            value, gap = self._sample_joint(joint, t, extrapolation_s)
            if gap:
                gaps.append(f"{name} {gap}")
            else:
                state[joint] = value
        if gaps:
            return None, f"joint state does not cover set time {t:.6f}: {'; '.join(gaps)}"
        return state, ""

    def _sample_joint(self, joint: int, t: float, extrapolation_s: float) -> tuple[float, str]:
        stamps, values = self._stamps[joint], self._values[joint]
        if not stamps:
            return 0.0, "has no samples"
        if t >= stamps[-1]:
            late = t - stamps[-1]
            if late <= extrapolation_s + STAMP_TOLERANCE_S:
                return values[-1], ""
            return 0.0, f"newest sample is {late:.3f} s older"
        if t <= stamps[0]:
            if stamps[0] - t <= STAMP_TOLERANCE_S:
                return values[0], ""
            return 0.0, f"oldest kept sample is {stamps[0] - t:.3f} s newer"
        i = bisect_right(stamps, t)  # stamps[i - 1] <= t < stamps[i]
        s0, s1 = stamps[i - 1], stamps[i]
        return lerp(values[i - 1], values[i], (t - s0) / (s1 - s0)), ""


def _best_set(queues: Mapping[str, _FrameQueue], slop_s: float, period_s: float | None) -> dict[str, int] | None:
    """Frame index per camera of the best-matched recent set within slop_s (see the module rules).

    `period_s` is the fastest camera's frame period, None while unknown.
    """
    window = _RECENT_PERIODS * period_s if period_s is not None else 0.0
    tie = _SPREAD_TIE_PERIODS * period_s if period_s is not None else STAMP_TOLERANCE_S
    best: dict[str, int] | None = None
    best_spread = floor = 0.0
    for upper in sorted({s for q in queues.values() for s in q.stamps}, reverse=True):
        if best is not None and upper < floor - STAMP_TOLERANCE_S:
            break
        # Each camera's newest frame at or before `upper` gives the tightest set ending at `upper`.
        picks = {}
        for name, queue in queues.items():
            index = queue.index_at_or_before(upper)
            if index is None:
                return best  # this camera has nothing this old, so no lower `upper` helps either
            picks[name] = index
        spread = upper - min(queues[name].stamps[i] for name, i in picks.items())
        if spread > slop_s + STAMP_TOLERANCE_S:
            continue
        if best is None:
            # The newest complete set; the window starts at its oldest frame, so when a frame of the
            # newest moment is lost, the previous moment (one period before that frame) still competes.
            best, best_spread, floor = picks, spread, upper - spread - window
        elif spread < best_spread - tie:  # uppers descend, so a tie keeps the newer set
            best, best_spread = picks, spread
    return best


def _stamp_problem(stamp_s: object) -> str:
    return "" if _is_number(stamp_s) else f"stamp must be a finite number of seconds, got {stamp_s!r}"


class _JointStateError(ValueError):
    pass


def _parse_joint_state(
    stamp_s: float, names: Sequence[str], positions: Sequence[float], index: Mapping[str, int]
) -> tuple[list[int], np.ndarray]:
    """Configured joint indices and their positions (float64 [k]) from one message."""
    if _stamp_problem(stamp_s):
        raise _JointStateError(_stamp_problem(stamp_s))
    names = list(names)
    try:
        values = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise _JointStateError("positions are not numbers") from None
    if values.ndim != 1 or len(names) != values.size:
        raise _JointStateError(f"{len(names)} names but {values.size} positions")
    if not names:
        raise _JointStateError("empty joint state")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise _JointStateError(f"joint name(s) listed twice: {', '.join(map(str, duplicates))}")
    known = [(index[n], k) for k, n in enumerate(names) if n in index]
    if not known:
        raise _JointStateError(f"none of the names is a configured joint: {', '.join(map(str, names))}")
    joints = [j for j, _ in known]
    picked = values[[k for _, k in known]]
    bad = [names[k] for (_, k), v in zip(known, picked) if not math.isfinite(v)]
    if bad:
        raise _JointStateError(f"non-finite position for {', '.join(bad)}")
    return joints, picked


class ObservationSynchronizer:
    """Thread-safe store of recent frames and joint samples that yields the newest synchronized observation."""

    def __init__(self, config: SyncConfig) -> None:
        self._config = config
        self._limits = config.limits
        self._lock = threading.Lock()
        self._frames = {name: _FrameQueue(self._limits.queue_size) for name in config.camera_names}
        # Twice max_age: a usable set is at most max_age old, with the same again
        # for clock offsets between the joint publishers and this process.
        self._joints = _JointHistory(config.joint_names, retention_s=2 * self._limits.max_age_s)
        self._joint_index = {name: i for i, name in enumerate(config.joint_names)}
        self._stats = {name: _StreamStats(name, CAMERA) for name in config.camera_names}
        self._stats.update({name: _StreamStats(name, JOINT_STATE) for name in config.joint_streams})

    @property
    def config(self) -> SyncConfig:
        return self._config

    def add_image(self, camera: str, stamp_s: float, image: np.ndarray) -> str | None:
        """Adds a decoded uint8 [H, W, 3] RGB frame; returns the error text if it was rejected."""
        stats = self._stream(camera, CAMERA)
        problem = _stamp_problem(stamp_s) or rgb_image_problem(image)
        if problem:
            with self._lock:
                stats.reject(problem)
            return problem
        frame = image.view()  # read-only for every reader, without changing the caller's array
        frame.flags.writeable = False
        with self._lock:
            queue = self._frames[camera]
            if queue.newest is not None and stamp_s < queue.newest - self._camera_reorder_s(stats):
                self._clear(f"{camera} stamp jumped back {queue.newest - stamp_s:.3f} s; history cleared")
            outcome = queue.insert(stamp_s, frame)
            if outcome is not _Insert.STORED:
                stats.dropped += 1
            if outcome is not _Insert.TOO_OLD:
                stats.accept(stamp_s)
        return None

    def add_joint_state(
        self, stream: str, stamp_s: float, names: Sequence[str], positions: Sequence[float]
    ) -> str | None:
        """Adds one JointState's positions; names that are not configured are ignored.

        Returns the error text if the message was rejected.
        """
        stats = self._stream(stream, JOINT_STATE)
        try:
            joints, values = _parse_joint_state(stamp_s, names, positions, self._joint_index)
        except _JointStateError as exc:
            with self._lock:
                stats.reject(str(exc))
            return str(exc)
        with self._lock:
            newest = max((n for n in map(self._joints.newest, joints) if n is not None), default=None)
            if newest is not None and stamp_s < newest - min(_JUMP_BACK_MIN_S, self._limits.max_age_s):
                self._clear(f"{stream} stamp jumped back {newest - stamp_s:.3f} s; history cleared")
            elif newest is not None and stamp_s < newest - STAMP_TOLERANCE_S:
                stats.dropped += 1  # out of order: interpolation needs samples in stamp order
                return None
            self._joints.add(stamp_s, joints, values)
            stats.accept(stamp_s)
        return None

    def clear(self, warning: str) -> None:
        """Forgets all frames and joint samples (the clock jumped), counting `warning` on every stream."""
        with self._lock:
            self._clear(warning)

    def slop_s(self) -> float:
        """The slop in use: the configured one, or the one derived from the camera rates."""
        with self._lock:
            return self._slop_s(self._frame_period())

    def report_error(self, stream: str, error: str) -> None:
        """Counts a message rejected before it reached the synchronizer (e.g. an image that failed to decode)."""
        stats = self._stream(stream, None)
        with self._lock:
            stats.reject(error)

    def report_warning(self, stream: str, warning: str) -> None:
        """Counts a message accepted with a problem (e.g. a zero stamp replaced by the receive time)."""
        stats = self._stream(stream, None)
        with self._lock:
            stats.warn(warning)

    def latest(self, now_s: float, newer_than: float | None = None) -> SyncResult:
        """The newest synchronized observation, or why there is none; see the module rules."""
        with self._lock:
            problem = self._missing() or self._stale(now_s)
            if problem:
                return problem
            return self._match(now_s, newer_than)

    def health(self, now_s: float) -> tuple[StreamHealth, ...]:
        """Per-stream counters and freshness: cameras first, then joint-state streams."""
        with self._lock:
            return tuple(s.snapshot(now_s, self._limits.max_age_s) for s in self._stats.values())

    def _stream(self, name: str, kind: str | None) -> _StreamStats:
        stats = self._stats.get(name)
        if stats is None or (kind is not None and stats.kind != kind):
            raise ValueError(f"'{name}' is not a configured {kind or 'stream'}")
        return stats

    def _clear(self, warning: str) -> None:
        for queue in self._frames.values():
            queue.clear()
        self._joints.clear(range(len(self._config.joint_names)))
        for stats in self._stats.values():
            stats.restart(warning)

    def _frame_period(self) -> float | None:
        """Frame period of the fastest camera, s; None until every camera's rate is measured."""
        rates = [self._stats[name].rate_hz() for name in self._frames]
        known = [r for r in rates if r is not None]
        return 1.0 / max(known) if known and len(known) == len(rates) else None

    def _slop_s(self, period: float | None) -> float:
        """The slop in use, given the fastest camera's frame period (None while unknown)."""
        if self._limits.slop_s is not None:
            return self._limits.slop_s
        if period is None:
            return AUTO_SLOP_MAX_S
        fraction = 1.0 - 1.0 / len(self._frames)
        return min(AUTO_SLOP_MAX_S, max(AUTO_SLOP_MIN_S, fraction * period))

    def _camera_reorder_s(self, stats: _StreamStats) -> float:
        """How far back a frame may step and still be reordering rather than a clock jump."""
        rate = stats.rate_hz()
        if rate is None:
            return self._limits.max_age_s
        return min(self._limits.max_age_s, max(_JUMP_BACK_MIN_S, self._limits.queue_size / rate))

    def _missing(self) -> SyncResult | None:
        cameras = [name for name, q in self._frames.items() if q.newest is None]
        joints = [name for j, name in enumerate(self._config.joint_names) if self._joints.newest(j) is None]
        parts = []
        if cameras:
            parts.append(f"no image yet from {', '.join(cameras)}")
        if joints:
            parts.append(f"no joint state yet for {', '.join(joints)}")
        return SyncResult(None, SyncStatus.MISSING, "; ".join(parts)) if parts else None

    def _stale(self, now_s: float) -> SyncResult | None:
        newest = [(name, q.newest) for name, q in self._frames.items()]
        newest += [(f"joint {name}", self._joints.newest(j)) for j, name in enumerate(self._config.joint_names)]
        # Streams without any sample were reported as missing before this check.
        old = [
            f"{name} {now_s - stamp:.3f} s old"
            for name, stamp in newest
            if stamp is not None and now_s - stamp > self._limits.max_age_s + STAMP_TOLERANCE_S
        ]
        if not old:
            return None
        return SyncResult(None, SyncStatus.STALE, f"older than max_age {self._limits.max_age_s} s: {', '.join(old)}")

    def _match(self, now_s: float, newer_than: float | None) -> SyncResult:
        period = self._frame_period()
        slop = self._slop_s(period)
        picks = _best_set(self._frames, slop, period)
        if picks is None:
            newest = ", ".join(f"{name} {q.newest:.6f}" for name, q in self._frames.items())
            return SyncResult(
                None, SyncStatus.UNMATCHED, f"no camera set within slop {slop:g} s (newest stamps: {newest})"
            )
        image_stamps = {name: self._frames[name].stamps[i] for name, i in picks.items()}
        stamp = (max(image_stamps.values()) + min(image_stamps.values())) / 2
        if now_s - stamp > self._limits.max_age_s + STAMP_TOLERANCE_S:
            return SyncResult(
                None,
                SyncStatus.STALE,
                f"newest camera set is {now_s - stamp:.3f} s old (max_age {self._limits.max_age_s} s)",
            )
        if (
            newer_than is not None
            and stamp <= newer_than + STAMP_TOLERANCE_S
            and newer_than <= now_s + self._limits.max_age_s
            and newer_than <= max(q.stamps[-1] for q in self._frames.values()) + STAMP_TOLERANCE_S
        ):
            return SyncResult(None, SyncStatus.NOT_NEW, f"no camera set newer than {newer_than:.6f}")
        state, gap = self._joints.sample(stamp, self._limits.joint_extrapolation_s)
        if state is None:
            return SyncResult(None, SyncStatus.UNMATCHED, gap)
        images = {name: self._frames[name].images[i] for name, i in picks.items()}
        return SyncResult(SyncedObservation(stamp, images, state, image_stamps), SyncStatus.OK, "")
