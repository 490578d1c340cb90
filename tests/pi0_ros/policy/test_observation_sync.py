"""The plain-Python observation synchronizer: matching, interpolation, freshness, health, bad input."""

import math
import random
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from pi0_ros.policy.observation_sync import (
    AUTO_SLOP_MAX_S,
    AUTO_SLOP_MIN_S,
    CAMERA,
    JOINT_STATE,
    ObservationSynchronizer,
    SyncConfig,
    SyncLimits,
    SyncStatus,
)

T0 = 1_700_000_000.0  # epoch-scale stamps, as real header stamps are


def frame(value: int, height: int = 4, width: int = 6) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def make_sync(cameras=("cam_a", "cam_b"), joints=("j0", "j1"), streams=("joint_states",), **limits):
    defaults = dict(slop_s=0.01, queue_size=5, max_age_s=0.5, joint_extrapolation_s=0.02)
    defaults.update(limits)
    return ObservationSynchronizer(SyncConfig(tuple(cameras), tuple(joints), tuple(streams), SyncLimits(**defaults)))


def add_ramp(sync, start, stop, step=0.01, stream="joint_states", joints=("j0", "j1")):
    """Joint samples whose positions are (t - T0) and 10 * (t - T0), so interpolation is exact."""
    for k in range(int(round((stop - start) / step)) + 1):
        t = start + k * step
        assert sync.add_joint_state(stream, t, list(joints), [t - T0, 10 * (t - T0)][: len(joints)]) is None


def health_of(sync, name, now=T0 + 1.0):
    return next(h for h in sync.health(now) if h.name == name)


# --- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits, message",
    [
        (dict(slop_s=-0.01), "slop_s must be None or a finite number >= 0"),
        (dict(slop_s=math.nan), "slop_s must be None or a finite number >= 0"),
        (dict(queue_size=0), "queue_size must be an integer >= 1"),
        (dict(queue_size=2.5), "queue_size must be an integer >= 1"),
        (dict(max_age_s=0.0), "max_age_s must be a finite number > 0"),
        (dict(joint_extrapolation_s=-1.0), "joint_extrapolation_s must be a finite number >= 0"),
    ],
)
def test_limits_reject_invalid_values_with_the_field_name(limits, message):
    with pytest.raises(ValueError, match=message):
        SyncLimits(**limits)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(camera_names=()), "camera_names must not be empty"),
        (dict(camera_names="cam_a"), "camera_names must be a tuple of non-empty strings"),
        (dict(joint_names=("j0", "j0")), "joint_names lists a name twice"),
        (dict(joint_streams=("",)), "joint_streams must be a tuple of non-empty strings"),
        (dict(joint_streams=("cam_a",)), "camera and joint stream names must differ, both use cam_a"),
    ],
)
def test_config_rejects_invalid_names(fields, message):
    values = dict(camera_names=("cam_a",), joint_names=("j0",), joint_streams=("joint_states",))
    values.update(fields)
    with pytest.raises(ValueError, match=message):
        SyncConfig(**values)


def test_unconfigured_stream_names_are_programming_errors():
    sync = make_sync()
    with pytest.raises(ValueError, match="'cam_z' is not a configured camera"):
        sync.add_image("cam_z", T0, frame(1))
    with pytest.raises(ValueError, match="'cam_a' is not a configured joint_state"):
        sync.add_joint_state("cam_a", T0, ["j0"], [0.0])


# --- matching ----------------------------------------------------------------------------------------------------


def test_missing_streams_are_named():
    sync = make_sync()
    sync.add_image("cam_a", T0, frame(1))
    sync.add_joint_state("joint_states", T0, ["j0"], [0.0])
    result = sync.latest(T0)
    assert result.status is SyncStatus.MISSING and result.observation is None
    assert result.reason == "no image yet from cam_b; no joint state yet for j1"


def test_newest_set_is_chosen_from_out_of_order_arrivals():
    sync = make_sync(slop_s=0.005)
    frames = [("cam_a", T0 + k / 30, 10 + k) for k in range(4)]
    frames += [("cam_b", T0 + k / 30 + 0.002, 20 + k) for k in range(4)]
    random.Random(3).shuffle(frames)
    for camera, stamp, value in frames:
        assert sync.add_image(camera, stamp, frame(value)) is None
    add_ramp(sync, T0 - 0.05, T0 + 0.2)

    obs = sync.latest(T0 + 0.2).observation
    assert obs.image_stamps == {"cam_a": T0 + 3 / 30, "cam_b": T0 + 3 / 30 + 0.002}
    assert obs.images["cam_a"][0, 0, 0] == 13 and obs.images["cam_b"][0, 0, 0] == 23
    assert list(obs.images) == ["cam_a", "cam_b"]


def test_a_dropped_frame_makes_the_previous_complete_set_the_newest():
    sync = make_sync()
    for k in range(3):
        sync.add_image("cam_a", T0 + k * 0.1, frame(10 + k))
    for k in range(2):  # cam_b lost its frame at T0 + 0.2
        sync.add_image("cam_b", T0 + k * 0.1 + 0.003, frame(20 + k))
    add_ramp(sync, T0, T0 + 0.3)

    obs = sync.latest(T0 + 0.3).observation
    assert obs.image_stamps == {"cam_a": T0 + 0.1, "cam_b": T0 + 0.103}
    assert (obs.images["cam_a"][0, 0, 0], obs.images["cam_b"][0, 0, 0]) == (11, 21)


@pytest.mark.parametrize("spread, matched", [(0.0, True), (0.010, True), (0.0101, False), (0.011, False)])
def test_slop_is_inclusive_at_the_edge(spread, matched):
    sync = make_sync(slop_s=0.010)
    sync.add_image("cam_a", T0, frame(1))
    sync.add_image("cam_b", T0 + spread, frame(2))
    add_ramp(sync, T0 - 0.05, T0 + 0.05)
    result = sync.latest(T0 + 0.05)
    assert result.ok is matched
    if not matched:
        assert result.status is SyncStatus.UNMATCHED
        assert result.reason.startswith("no camera set within slop 0.01 s")


def test_set_time_is_the_middle_of_the_set_and_the_state_is_interpolated_there():
    sync = make_sync(slop_s=0.02)
    sync.add_image("cam_a", T0 + 0.013, frame(1))
    sync.add_image("cam_b", T0 + 0.021, frame(2))
    samples = ((0.0, [1.0, -2.0]), (0.010, [2.0, -4.0]), (0.020, [4.0, -8.0]), (0.030, [5.0, 0.0]))
    for t, values in samples:
        sync.add_joint_state("joint_states", T0 + t, ["j0", "j1"], values)

    obs = sync.latest(T0 + 0.03).observation
    assert obs.stamp == pytest.approx(T0 + 0.017, abs=1e-6)
    # 0.017 lies 70 % of the way from the sample at 0.010 to the one at 0.020.
    np.testing.assert_allclose(obs.state, [2.0 + 0.7 * 2.0, -4.0 - 0.7 * 4.0], atol=1e-4)
    assert obs.state.dtype == np.float64 and obs.state.shape == (2,)


@pytest.mark.parametrize("lag, usable", [(0.0, True), (0.02, True), (0.021, False)])
def test_a_set_after_the_newest_joint_sample_uses_it_only_within_the_extrapolation_limit(lag, usable):
    sync = make_sync(joint_extrapolation_s=0.02)
    add_ramp(sync, T0, T0 + 0.1)
    sync.add_image("cam_a", T0 + 0.1 + lag, frame(1))
    sync.add_image("cam_b", T0 + 0.1 + lag, frame(2))
    result = sync.latest(T0 + 0.2)
    assert result.ok is usable
    if usable:
        np.testing.assert_allclose(result.observation.state, [0.1, 1.0], atol=1e-4)
    else:
        assert result.status is SyncStatus.UNMATCHED
        assert "j0 newest sample is 0.021 s older" in result.reason and "j1" in result.reason


def test_a_set_older_than_the_kept_joint_history_is_not_usable():
    sync = make_sync(max_age_s=0.5)
    add_ramp(sync, T0, T0 + 0.2)
    sync.add_image("cam_a", T0 - 0.1, frame(1))
    sync.add_image("cam_b", T0 - 0.1, frame(2))
    result = sync.latest(T0 + 0.2)
    assert result.status is SyncStatus.UNMATCHED
    assert "j0 oldest kept sample is 0.100 s newer" in result.reason


def test_joints_from_two_streams_are_merged_into_the_configured_order():
    sync = make_sync(cameras=("cam",), joints=("r_wrist", "l_wrist", "l_grip", "r_grip"), streams=("left", "right"))
    for t in (T0, T0 + 0.01):
        # Drivers publish joints the policy does not use (here "l_finger_mimic"); they are ignored.
        sync.add_joint_state("left", t, ["l_grip", "l_finger_mimic", "l_wrist"], [0.5, 99.0, 1.5])
        sync.add_joint_state("right", t, ["r_grip", "r_wrist"], [-0.5, -1.5])
    sync.add_image("cam", T0 + 0.005, frame(1))

    obs = sync.latest(T0 + 0.01).observation
    np.testing.assert_allclose(obs.state, [-1.5, 1.5, 0.5, -0.5])
    assert {h.name: h.kind for h in sync.health(T0)} == {"cam": CAMERA, "left": JOINT_STATE, "right": JOINT_STATE}


def test_joints_that_no_stream_publishes_leave_the_observation_incomplete():
    sync = make_sync(cameras=("cam",), joints=("a", "b", "c"), streams=("left", "right"))
    sync.add_joint_state("left", T0, ["a"], [1.0])
    sync.add_joint_state("right", T0, ["b", "unknown"], [2.0, 3.0])
    sync.add_image("cam", T0, frame(1))
    result = sync.latest(T0)
    assert result.status is SyncStatus.MISSING
    assert result.reason == "no joint state yet for c"


# --- freshness and emitting once ---------------------------------------------------------------------------------


def fresh_sync():
    sync = make_sync(max_age_s=0.5)
    add_ramp(sync, T0, T0 + 1.0, step=0.05)
    for k in range(3):
        sync.add_image("cam_a", T0 + 0.8 + 0.1 * k, frame(k))
        sync.add_image("cam_b", T0 + 0.8 + 0.1 * k, frame(k))
    return sync


def test_fresh_data_yields_the_newest_set():
    result = fresh_sync().latest(T0 + 1.1)
    assert result.status is SyncStatus.OK and result.reason == ""
    assert result.observation.stamp == pytest.approx(T0 + 1.0, abs=1e-6)


def test_a_camera_older_than_max_age_makes_the_observation_stale():
    sync = fresh_sync()
    result = sync.latest(T0 + 1.55)
    assert result.status is SyncStatus.STALE and result.observation is None
    assert "cam_a 0.550 s old" in result.reason and "cam_b 0.550 s old" in result.reason
    assert health_of(sync, "cam_a", T0 + 1.55).stale
    assert not health_of(sync, "cam_a", T0 + 1.45).stale


def test_a_joint_older_than_max_age_makes_the_observation_stale():
    sync = make_sync(max_age_s=0.5)
    sync.add_joint_state("joint_states", T0, ["j0"], [0.0])
    add_ramp(sync, T0 + 0.5, T0 + 1.0, joints=("j1",))
    sync.add_image("cam_a", T0 + 1.0, frame(1))
    sync.add_image("cam_b", T0 + 1.0, frame(1))
    result = sync.latest(T0 + 1.0)
    assert result.status is SyncStatus.STALE
    assert result.reason == "older than max_age 0.5 s: joint j0 1.000 s old"


def test_fresh_streams_whose_only_matching_set_is_old_are_stale():
    sync = make_sync(max_age_s=0.5)
    add_ramp(sync, T0, T0 + 0.9, step=0.05)
    sync.add_image("cam_a", T0, frame(1))
    sync.add_image("cam_b", T0, frame(1))
    sync.add_image("cam_a", T0 + 0.9, frame(2))
    sync.add_image("cam_b", T0 + 0.5, frame(2))  # never within slop of cam_a's newest
    result = sync.latest(T0 + 0.9)
    assert result.status is SyncStatus.STALE
    assert result.reason == "newest camera set is 0.900 s old (max_age 0.5 s)"


def test_each_set_is_emitted_once_when_the_caller_passes_the_previous_stamp():
    sync = fresh_sync()
    first = sync.latest(T0 + 1.0)
    again = sync.latest(T0 + 1.0, newer_than=first.observation.stamp)
    assert again.status is SyncStatus.NOT_NEW and again.observation is None
    assert sync.latest(T0 + 1.0).ok  # without newer_than the newest set is always returned

    add_ramp(sync, T0 + 1.05, T0 + 1.1, step=0.05)
    sync.add_image("cam_a", T0 + 1.1, frame(9))
    assert sync.latest(T0 + 1.1, newer_than=first.observation.stamp).status is SyncStatus.NOT_NEW  # cam_b not yet
    sync.add_image("cam_b", T0 + 1.1, frame(9))
    second = sync.latest(T0 + 1.1, newer_than=first.observation.stamp)
    assert second.ok and second.observation.stamp == pytest.approx(T0 + 1.1, abs=1e-6)


# --- queues, ordering and clock jumps ----------------------------------------------------------------------------


def test_frames_older_than_a_full_queue_and_duplicate_stamps_count_as_dropped():
    sync = make_sync(queue_size=2)
    sync.add_image("cam_a", T0 + 0.1, frame(1))
    sync.add_image("cam_a", T0 + 0.2, frame(2))
    sync.add_image("cam_a", T0 + 0.05, frame(3))  # older than both queued frames
    sync.add_image("cam_a", T0 + 0.2, frame(4))  # same stamp: replaces frame 2
    health = health_of(sync, "cam_a")
    assert (health.received, health.dropped, health.errors) == (3, 2, 0)

    sync.add_image("cam_b", T0 + 0.2, frame(5))
    add_ramp(sync, T0, T0 + 0.2)
    assert sync.latest(T0 + 0.2).observation.images["cam_a"][0, 0, 0] == 4


def test_out_of_order_joint_samples_are_dropped():
    sync = make_sync(cameras=("cam",))
    sync.add_joint_state("joint_states", T0 + 0.02, ["j0", "j1"], [2.0, 2.0])
    sync.add_joint_state("joint_states", T0 + 0.01, ["j0", "j1"], [100.0, 100.0])
    sync.add_joint_state("joint_states", T0 + 0.03, ["j0", "j1"], [3.0, 3.0])
    sync.add_image("cam", T0 + 0.025, frame(1))
    np.testing.assert_allclose(sync.latest(T0 + 0.03).observation.state, [2.5, 2.5], atol=1e-4)
    assert health_of(sync, "joint_states").dropped == 1


def test_a_clock_jump_back_restarts_the_streams_instead_of_blocking_them():
    sync = make_sync(cameras=("cam",), max_age_s=0.5)
    add_ramp(sync, T0 + 9.0, T0 + 10.0, step=0.1)
    sync.add_image("cam", T0 + 10.0, frame(1))
    # A bag replay restarts at T0: far older than everything kept.
    add_ramp(sync, T0, T0 + 0.1)
    sync.add_image("cam", T0 + 0.05, frame(2))

    obs = sync.latest(T0 + 0.1).observation
    assert obs.images["cam"][0, 0, 0] == 2
    np.testing.assert_allclose(obs.state, [0.05, 0.5], atol=1e-6)
    for name in ("cam", "joint_states"):
        health = health_of(sync, name, T0 + 0.1)
        assert health.warnings == 1 and "stamp jumped back" in health.last_warning and not health.stale
    # A loop that remembers the stamp of its last observation from before the jump still gets new ones.
    assert sync.latest(T0 + 0.1, newer_than=T0 + 10.0).ok


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, error",
    [
        (np.zeros((4, 6, 3), np.float32), "image must be uint8 [H, W, 3] RGB, got float32"),
        (np.zeros((4, 6), np.uint8), "image must be uint8 [H, W, 3] RGB"),
        (np.zeros((4, 6, 4), np.uint8), "image must be uint8 [H, W, 3] RGB"),
        (np.zeros((0, 6, 3), np.uint8), "empty image"),
        ([[1, 2, 3]], "image is a list, not a numpy array"),
    ],
)
def test_bad_images_are_counted_and_dropped(image, error):
    sync = fresh_sync()
    before = sync.latest(T0 + 1.0).observation
    assert error in sync.add_image("cam_a", T0 + 1.05, image)
    health = health_of(sync, "cam_a")
    assert health.errors == 1 and error in health.last_error and health.received == 3
    assert sync.latest(T0 + 1.0).observation.stamp == before.stamp


@pytest.mark.parametrize("stamp", [math.nan, math.inf, None, "1.0"])
def test_bad_stamps_are_counted_and_dropped(stamp):
    sync = make_sync()
    assert "stamp must be a finite number" in sync.add_image("cam_a", stamp, frame(1))
    assert "stamp must be a finite number" in sync.add_joint_state("joint_states", stamp, ["j0"], [0.0])
    assert health_of(sync, "cam_a").errors == 1 and health_of(sync, "joint_states").errors == 1


@pytest.mark.parametrize(
    "names, positions, error",
    [
        (["j0", "j1"], [0.0, math.nan], "non-finite position for j1"),
        (["j0", "j1"], [math.inf, 0.0], "non-finite position for j0"),
        (["j0", "j1"], [0.0], "2 names but 1 positions"),
        ([], [0.0], "0 names but 1 positions"),
        ([], [], "empty joint state"),
        (["j0", "j0"], [0.0, 1.0], "joint name(s) listed twice: j0"),
        (["left_finger", "wheel"], [0.0, 1.0], "none of the names is a configured joint: left_finger, wheel"),
        (["j0"], ["high"], "positions are not numbers"),
    ],
)
def test_bad_joint_states_are_counted_and_dropped(names, positions, error):
    sync = make_sync()
    sync.add_joint_state("joint_states", T0, ["j0", "j1"], [1.0, 2.0])
    assert sync.add_joint_state("joint_states", T0 + 0.01, names, positions) == error
    health = health_of(sync, "joint_states")
    assert (health.received, health.errors, health.last_error) == (1, 1, error)
    sync.add_image("cam_a", T0 + 0.01, frame(1))
    sync.add_image("cam_b", T0 + 0.01, frame(1))
    # The bad sample left no trace: the set uses the last good sample.
    np.testing.assert_allclose(sync.latest(T0 + 0.01).observation.state, [1.0, 2.0])


def test_non_finite_positions_of_unconfigured_joints_do_not_reject_the_message():
    sync = make_sync()
    assert sync.add_joint_state("joint_states", T0, ["j0", "mimic", "j1"], [1.0, math.nan, 2.0]) is None
    assert health_of(sync, "joint_states").errors == 0


def test_errors_and_warnings_reported_from_outside_are_counted():
    sync = make_sync()
    sync.report_error("cam_b", "cannot decode compressed image")
    sync.report_warning("joint_states", "zero header stamp")
    sync.report_warning("joint_states", "zero header stamp again")
    cam_b, joints = health_of(sync, "cam_b"), health_of(sync, "joint_states")
    assert (cam_b.errors, cam_b.last_error) == (1, "cannot decode compressed image")
    assert (joints.warnings, joints.last_warning) == (2, "zero header stamp again")


# --- health and sharing ------------------------------------------------------------------------------------------


def test_health_reports_stamp_age_and_rate():
    sync = make_sync()
    for k in range(10):
        sync.add_image("cam_a", T0 + k / 30, frame(k))
    add_ramp(sync, T0, T0 + 0.5, step=0.01)
    health = {h.name: h for h in sync.health(T0 + 0.6)}
    cam_a, cam_b, joints = health["cam_a"], health["cam_b"], health["joint_states"]
    assert cam_a.last_stamp == pytest.approx(T0 + 0.3) and cam_a.age_s == pytest.approx(0.3)
    assert cam_a.rate_hz == pytest.approx(30.0, rel=1e-3) and not cam_a.stale and cam_a.ok
    assert joints.rate_hz == pytest.approx(100.0, rel=1e-3)
    assert cam_b.last_stamp is None and cam_b.age_s is None and cam_b.rate_hz is None and cam_b.stale


def test_observation_images_are_read_only_views_of_the_added_arrays():
    sync = make_sync()
    image_a = frame(7)
    sync.add_image("cam_a", T0, image_a)
    sync.add_image("cam_b", T0, frame(8))
    add_ramp(sync, T0 - 0.01, T0)
    shared = sync.latest(T0).observation.images["cam_a"]
    assert np.shares_memory(shared, image_a)
    assert not shared.flags.writeable and image_a.flags.writeable
    with pytest.raises(ValueError):
        shared[0, 0, 0] = 1


def test_concurrent_producers_and_a_reader_always_see_consistent_observations():
    # No extrapolation: every set waits for a joint sample at or after its time, so the state is exact.
    sync = make_sync(cameras=("cam",), slop_s=0.0, queue_size=3, max_age_s=10.0, joint_extrapolation_s=0.0)
    count = 2000
    start = threading.Barrier(3)

    def joints():
        start.wait()
        for k in range(count):
            t = T0 + k * 0.001
            sync.add_joint_state("joint_states", t, ["j0", "j1"], [t - T0, 10 * (t - T0)])

    def images():
        start.wait()
        for k in range(0, count, 10):
            sync.add_image("cam", T0 + k * 0.001, frame(k % 256))

    threads = [threading.Thread(target=joints), threading.Thread(target=images)]
    for thread in threads:
        thread.start()
    start.wait()
    seen = []
    while any(t.is_alive() for t in threads) or not seen:
        result = sync.latest(T0 + count * 0.001, newer_than=seen[-1] if seen else None)
        if result.ok:
            obs = result.observation
            # The joint positions are a linear function of time, so interpolation is exact.
            np.testing.assert_allclose(obs.state, [obs.stamp - T0, 10 * (obs.stamp - T0)], atol=1e-5)
            assert obs.images["cam"][0, 0, 0] == round((obs.stamp - T0) * 1000) % 256
            seen.append(obs.stamp)
    for thread in threads:
        thread.join()
    assert seen == sorted(set(seen))
    assert health_of(sync, "joint_states", T0 + 2.0).received == count


# --- best-matched sets, automatic slop and resets on generated camera streams -------------------------------------

PERIOD = 1 / 30  # 30 Hz cameras
CAMERAS = ("cam_a", "cam_b", "cam_c")


@dataclass(frozen=True)
class Event:
    arrival: float  # receive time on the sensors' clock before any reset, s after T0
    camera: str | None  # None: a joint-state message
    stamp: float
    epoch: int  # 0 before the reset, 1 after
    index: int  # capture moment (frame number) of a camera frame


def sensor_events(seed, offsets=(0.0, 0.0, 0.0), jitter_s=0.0, drop=0.0, reset_at=None, reset_s=0.3, duration=8.0):
    """Arrivals of 3 cameras at 30 Hz and joint states at 100 Hz, optionally with the clock set back once.

    Frames take 5 to 35 ms to arrive, so cameras overtake each other and a camera's own frames are
    sometimes reordered; `offsets` shift each camera's capture moment, `jitter_s` its stamps.
    """
    rng = random.Random(seed)

    def clock(t):
        return (t - reset_s, 1) if reset_at is not None and t >= reset_at else (t, 0)

    events = []
    for index in range(int(duration / PERIOD)):
        for camera, offset in zip(CAMERAS, offsets):
            if rng.random() < drop:
                continue
            captured, epoch = clock(index * PERIOD + offset)
            stamp = T0 + captured + rng.uniform(-jitter_s, jitter_s)
            events.append(Event(index * PERIOD + offset + rng.uniform(0.005, 0.035), camera, stamp, epoch, index))
    for k in range(int(duration / 0.01)):
        sampled, epoch = clock(k * 0.01)
        events.append(Event(k * 0.01 + 0.002, None, T0 + sampled, epoch, k))
    return sorted(events, key=lambda e: e.arrival)


def replay(sync, events, reset_at=None, reset_s=0.3):
    """Feeds the events and pulls after every frame as a loop that passes its previous stamp would.

    Returns (arrival, observation, frames by camera and stamp) per observation returned.
    """
    frames, pulled, previous = {}, [], None
    for event in events:
        if event.camera is None:
            # j0 carries the epoch, so a state interpolated across the reset is recognisable.
            sync.add_joint_state("joint_states", event.stamp, ["j0", "j1"], [float(event.epoch), event.stamp - T0])
            continue
        sync.add_image(event.camera, event.stamp, frame(event.index % 256))
        frames[event.camera, event.stamp] = event
        after_reset = reset_at is not None and event.arrival >= reset_at
        result = sync.latest(T0 + event.arrival - (reset_s if after_reset else 0.0), newer_than=previous)
        if result.ok:
            previous = result.observation.stamp
            pulled.append((event.arrival, result.observation, dict(frames)))
    return pulled


def moments(observation, frames):
    return {frames[camera, stamp].index for camera, stamp in observation.image_stamps.items()}


def newest_complete_moment(frames, arrival, queue_size=5):
    """(index, oldest stamp) of the newest capture moment every camera delivered by `arrival` and still queues."""
    kept = {
        camera: sorted(e.stamp for (c, _), e in frames.items() if c == camera and e.arrival <= arrival)[-queue_size:]
        for camera in CAMERAS
    }
    by_moment = {}
    for (camera, stamp), event in frames.items():
        if stamp in kept[camera]:
            by_moment.setdefault(event.index, []).append(stamp)
    complete = [(index, min(stamps)) for index, stamps in sorted(by_moment.items()) if len(stamps) == len(CAMERAS)]
    return complete[-1] if complete else None


def three_cameras(slop_s):
    return make_sync(cameras=CAMERAS, slop_s=slop_s, max_age_s=0.5, joint_extrapolation_s=0.05)


@pytest.mark.parametrize(
    "offsets, jitter_s",
    [((0.0, 0.0, 0.0), 0.0), ((0.0, 0.004, 0.009), 0.002)],
    ids=["hardware-synced", "offsets-and-jitter"],
)
@pytest.mark.parametrize("slop_s", [None, 0.05], ids=["auto-slop", "slop-50ms"])
def test_pulls_return_sets_from_one_capture_moment_and_never_lag_far(offsets, jitter_s, slop_s):
    sync = three_cameras(slop_s)
    pulled = replay(sync, sensor_events(seed=7, offsets=offsets, jitter_s=jitter_s, drop=0.05))
    assert len(pulled) > 150

    # Pulls for which one moment, at most one frame older than the set's oldest frame, was complete.
    could_be_single = single = 0
    for arrival, obs, frames in pulled:
        complete = newest_complete_moment(frames, arrival)
        if complete is not None and complete[0] >= min(moments(obs, frames)) - 1:
            could_be_single += 1
            single += len(moments(obs, frames)) == 1
        if complete is not None:
            # The stated bound: the newest frame at most 1.5 periods older than the newest complete moment's oldest.
            assert max(obs.image_stamps.values()) >= complete[1] - 1.5 * PERIOD - 1e-6
        assert obs.spread_s == pytest.approx(max(obs.image_stamps.values()) - min(obs.image_stamps.values()))
    assert could_be_single > 0.95 * len(pulled) and single / could_be_single >= 0.99


def test_the_previous_moment_wins_over_a_newer_set_mixing_two_moments():
    sync = three_cameras(0.05)
    for k in range(4):
        for camera in CAMERAS:
            sync.add_image(camera, T0 + k * PERIOD, frame(k))
    sync.add_image("cam_a", T0 + 4 * PERIOD, frame(4))
    sync.add_image("cam_b", T0 + 4 * PERIOD, frame(4))  # cam_c's frame 4 is still on its way
    add_ramp(sync, T0, T0 + 0.2)
    obs = sync.latest(T0 + 0.2).observation
    assert set(obs.image_stamps.values()) == {T0 + 3 * PERIOD} and obs.spread_s == 0.0
    sync.add_image("cam_c", T0 + 4 * PERIOD, frame(4))
    assert set(sync.latest(T0 + 0.2).observation.image_stamps.values()) == {T0 + 4 * PERIOD}


def test_spreads_within_a_quarter_period_count_as_equal_so_the_newer_set_wins():
    sync = make_sync(slop_s=0.05)
    for k in range(4):
        sync.add_image("cam_a", T0 + k * PERIOD, frame(k))
        sync.add_image("cam_b", T0 + k * PERIOD + (0.006 if k == 3 else 0.001), frame(k))
    add_ramp(sync, T0, T0 + 0.2)
    assert sync.latest(T0 + 0.2).observation.image_stamps["cam_a"] == T0 + 3 * PERIOD


def add_frames(sync, camera, rate_hz, count=10):
    for k in range(count):
        sync.add_image(camera, T0 + k / rate_hz, frame(k))


def test_the_default_slop_follows_the_camera_rates():
    assert SyncLimits().slop_s is None
    sync = make_sync(cameras=CAMERAS, slop_s=None)
    assert sync.slop_s() == AUTO_SLOP_MAX_S  # no rate measured yet
    for camera in CAMERAS:
        add_frames(sync, camera, 30.0)
    # Three free-running cameras always have a set within 2/3 of a period; neighbouring moments are a period apart.
    assert sync.slop_s() == pytest.approx(2 / 3 / 30, rel=1e-3)

    two = make_sync(slop_s=None)
    add_frames(two, "cam_a", 15.0)
    assert two.slop_s() == AUTO_SLOP_MAX_S  # cam_b's rate is not known yet
    add_frames(two, "cam_b", 30.0)
    assert two.slop_s() == pytest.approx(0.5 / 30, rel=1e-3)  # half the fastest camera's period

    fast = make_sync(cameras=("cam",), slop_s=None)
    add_frames(fast, "cam", 1000.0)
    assert fast.slop_s() == AUTO_SLOP_MIN_S

    slow = make_sync(slop_s=None)
    add_frames(slow, "cam_a", 5.0)
    add_frames(slow, "cam_b", 5.0)
    assert slow.slop_s() == AUTO_SLOP_MAX_S

    explicit = make_sync(slop_s=0.03)
    add_frames(explicit, "cam_a", 30.0)
    add_frames(explicit, "cam_b", 30.0)
    assert explicit.slop_s() == 0.03


def test_a_reset_smaller_than_max_age_clears_history_and_never_mixes_epochs():
    sync = three_cameras(None)
    reset_at = 4.0
    events = sensor_events(seed=11, jitter_s=0.001, drop=0.02, reset_at=reset_at)
    pulled = replay(sync, events, reset_at=reset_at)

    for _, obs, frames in pulled:
        epochs = {frames[camera, stamp].epoch for camera, stamp in obs.image_stamps.items()}
        assert len(epochs) == 1
        assert obs.state[0] == epochs.pop()  # the joint state is from the same side of the reset
    before = [arrival for arrival, obs, frames in pulled if obs.state[0] == 0]
    after = [arrival for arrival, obs, frames in pulled if obs.state[0] == 1]
    assert before and after and max(before) < min(after)
    assert min(after) - reset_at < 0.15  # no stall until the new stamps pass the old ones
    for name in (*CAMERAS, "joint_states"):
        assert "jumped back" in health_of(sync, name, T0 + 8.0).last_warning


def test_frames_reordered_within_the_queue_span_do_not_clear_history():
    sync = make_sync(slop_s=None)
    for k in (0, 1, 2, 4, 5, 3):  # frame 3 arrives two frames late
        sync.add_image("cam_a", T0 + k * PERIOD, frame(k))
        sync.add_image("cam_b", T0 + k * PERIOD, frame(k))
    assert health_of(sync, "cam_a").warnings == 0


def test_clear_forgets_everything_and_warns_every_stream():
    sync = fresh_sync()
    sync.clear("clock jumped back 0.300 s")
    result = sync.latest(T0 + 1.0)
    assert result.status is SyncStatus.MISSING
    assert all(h.last_warning == "clock jumped back 0.300 s" and h.last_stamp is None for h in sync.health(T0))
