import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from pi0_bringup.supervisor import wait_until
from pi0_client.interface import Inference, InferenceTiming
from pi0_ros.policy.goal_session import EndReason, GoalSession
from pi0_ros.policy.inference_worker import InferenceWorker, WorkerConfig


@dataclass
class Obs:
    stamp: float


class Camera:
    """Serves observations newer than asked for, one every `period` seconds of wall time."""

    def __init__(self, period=0.01):
        self.period, self.start, self.stopped = period, time.monotonic(), False

    def next(self, now, newer_than):
        if self.stopped:
            return None, "camera stopped"
        stamp = self.start + int((now - self.start) / self.period) * self.period
        if newer_than is not None and stamp <= newer_than:
            return None, "no new frame"
        return Obs(stamp), ""


def make_worker(infer, camera=None, rtc=False, stale_timeout=0.3):
    camera = camera or Camera()
    published = []
    worker = InferenceWorker(
        WorkerConfig(action_step=0.02, stale_timeout=stale_timeout, real_time_chunking=rtc, initial_latency=0.05),
        clock=time.monotonic,
        next_observation=camera.next,
        infer=infer,
        publish=published.append,
    )
    worker.start()
    return worker, published, camera


def model_output(actions, total_ms, frozen_steps=0):
    """What Pi0Policy.infer returns, for a model that takes `total_ms`."""
    return Inference(actions, InferenceTiming(0.0, 0.0, total_ms, 0.0, total_ms), frozen_steps)


def constant_model(value=0.5, delay=0.005):
    def infer(observation, instruction, plan):
        time.sleep(delay)
        return model_output(np.full((10, 2), value), delay * 1e3)

    return infer


def test_publishes_chunks_stamped_with_their_observation_until_the_chunk_limit():
    worker, published, _ = make_worker(constant_model())
    session = GoalSession("goal", "fold", started=time.monotonic(), max_chunks=3)
    worker.serve(session)
    assert session.ended.wait(5.0)
    worker.stop()
    assert session.outcome.reason is EndReason.CHUNK_LIMIT_REACHED
    assert [r.chunk.sequence for r in published] == [1, 2, 3]
    stamps = [r.chunk.stamp for r in published]
    assert stamps == sorted(set(stamps)), "each observation is used once"
    assert all(r.latency >= 0.005 for r in published)


def test_model_errors_and_nan_end_the_goal_with_inference_failed():
    def broken(observation, instruction, plan):
        raise RuntimeError("CUDA out of memory")

    worker, published, _ = make_worker(broken)
    session = GoalSession("goal", "fold", started=time.monotonic())
    worker.serve(session)
    assert session.ended.wait(5.0)
    assert session.outcome.reason is EndReason.INFERENCE_FAILED and "CUDA out of memory" in session.outcome.message

    nan_worker, nan_published, _ = make_worker(constant_model(value=float("nan")))
    nan_session = GoalSession("goal2", "fold", started=time.monotonic())
    nan_worker.serve(nan_session)
    assert nan_session.ended.wait(5.0)
    assert nan_session.outcome.reason is EndReason.INFERENCE_FAILED and "NaN" in nan_session.outcome.message
    worker.stop()
    nan_worker.stop()
    assert published == [] and nan_published == []


def test_stale_observations_end_the_goal():
    worker, published, camera = make_worker(constant_model(), stale_timeout=0.1)
    session = GoalSession("goal", "fold", started=time.monotonic())
    worker.serve(session)
    wait_until(lambda: len(published) >= 2, 5.0, "two chunks", poll=0.005)
    camera.stopped = True
    assert session.ended.wait(5.0)
    worker.stop()
    assert session.outcome.reason is EndReason.OBSERVATION_STALE and "camera stopped" in session.outcome.message


def test_a_chunk_finished_after_preemption_is_dropped_and_the_new_goal_is_served():
    release = threading.Event()
    calls = []

    def slow(observation, instruction, plan):
        calls.append(instruction)
        if instruction == "first":
            release.wait(5.0)
        return model_output(np.zeros((10, 2)), 1.0)

    worker, published, _ = make_worker(slow)
    first = GoalSession("a", "first", started=time.monotonic())
    worker.serve(first)
    wait_until(lambda: calls == ["first"], 5.0, "the first inference", poll=0.005)
    first.stop(EndReason.PREEMPTED, "preempted")
    second = GoalSession("b", "second", started=time.monotonic(), max_chunks=2)
    worker.serve(second)
    release.set()
    assert second.ended.wait(5.0)
    worker.stop()
    assert {r.chunk.goal_id for r in published} == {"b"}


def test_real_time_chunking_passes_the_previous_chunk_from_the_second_chunk_on():
    plans = []

    def model(observation, instruction, plan):
        plans.append(plan)
        return model_output(np.ones((10, 2)), 1.0, 0 if plan is None else plan.frozen_steps)

    worker, published, _ = make_worker(model, rtc=True)
    session = GoalSession("goal", "fold", started=time.monotonic(), max_chunks=3)
    worker.serve(session)
    assert session.ended.wait(5.0)
    worker.stop()
    assert plans[0] is None and all(p is not None for p in plans[1:3])
    assert plans[1].frozen_steps >= 1 and plans[1].previous_actions.shape[1] == 2


@pytest.mark.parametrize("field", [dict(action_step=0.0), dict(initial_latency=-1.0), dict(stale_timeout=0.0)])
def test_invalid_worker_config_is_refused(field):
    settings = dict(action_step=0.02, stale_timeout=0.5, real_time_chunking=False, initial_latency=0.1)
    settings.update(field)
    with pytest.raises(ValueError):
        WorkerConfig(**settings)


def test_a_waiting_worker_is_woken_by_a_new_camera_frame_not_by_polling():
    frames = []  # observations the "camera" has delivered

    def next_observation(now, newer_than):
        if frames and (newer_than is None or frames[-1].stamp > newer_than):
            return frames[-1], ""
        return None, "no new frame"

    published = []
    # A 30 s idle wait: without the wake-up the worker would not look again within this test.
    worker = InferenceWorker(
        WorkerConfig(
            action_step=0.02,
            stale_timeout=60.0,
            real_time_chunking=False,
            initial_latency=0.05,
            idle_wait=30.0,
        ),
        clock=time.monotonic,
        next_observation=next_observation,
        infer=constant_model(delay=0.0),
        publish=published.append,
    )
    worker.start()
    session = GoalSession("goal", "fold", started=time.monotonic())
    worker.serve(session)
    time.sleep(0.2)  # the worker looked, found nothing and waits
    assert not published
    frames.append(Obs(time.monotonic()))
    worker.notify_observation()
    wait_until(lambda: published, 10.0, "the new frame to wake the worker", poll=0.005)
    session.stop(EndReason.CANCELED, "done")
    worker.notify_observation()
    worker.stop()
