"""The inference loop: newest synchronized observation in, action chunk out.

Runs on a thread of its own so that the action server, status and feedback
keep flowing while the model computes. It serves one goal session at a time;
a new session (preemption) takes over after the inference in flight, whose
chunk is then dropped rather than published under the wrong goal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pi0_client.interface import Inference, RtcGuidance
from pi0_ros.core.chunk import TimedChunk
from pi0_ros.policy.goal_session import EndReason, GoalSession
from pi0_ros.policy.policy_backend import PolicyUnavailableError
from pi0_ros.policy.rtc_planner import LatencyEstimate, plan_rtc


class Observation(Protocol):
    stamp: float  # s, the time the chunk will be stamped with


@dataclass(frozen=True)
class ChunkRecord:
    chunk: TimedChunk  # the model's actions on the observation's time base
    inference: Inference  # what the model returned: timing, frozen rows
    latency: float  # s from the observation to the moment the chunk was ready


@dataclass(frozen=True)
class WorkerConfig:
    action_step: float  # s between chunk rows
    stale_timeout: float  # end the goal when no new observation arrives for this long
    real_time_chunking: bool
    initial_latency: float  # s, latency estimate before the first chunk (from warm-up)
    # Longest sleep while no new observation comes: bounds how late a duration limit or a stale timeout is seen.
    idle_wait: float = 0.05

    def __post_init__(self) -> None:
        if not (self.action_step > 0 and self.stale_timeout > 0 and self.initial_latency >= 0):
            raise ValueError(f"invalid inference worker settings: {self}")


NextObservation = Callable[[float, float | None], "tuple[Observation | None, str]"]
Infer = Callable[[Observation, str, RtcGuidance | None], Inference]


class InferenceWorker:
    def __init__(
        self,
        config: WorkerConfig,
        clock: Callable[[], float],
        next_observation: NextObservation,
        infer: Infer,
        publish: Callable[[ChunkRecord], None],
    ) -> None:
        """next_observation(now, newer_than) returns (observation or None, reason when None)."""
        self.config = config
        self._clock = clock
        self._next_observation = next_observation
        self._infer = infer
        self._publish = publish
        self._session: GoalSession | None = None
        self._wake = threading.Event()
        self._observation_arrived = threading.Event()
        self._shutdown = threading.Event()
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="pi0_inference", daemon=True)

    @property
    def chunks_published(self) -> int:
        return self._sequence

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._shutdown.set()
        self._wake.set()
        self._observation_arrived.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def notify_observation(self) -> None:
        """A new camera frame arrived (any thread): wakes a worker waiting for a newer observation."""
        self._observation_arrived.set()

    def serve(self, session: GoalSession) -> None:
        """Makes `session` the goal to serve; the caller has already stopped the previous one."""
        self._session = session
        self._wake.set()
        self._observation_arrived.set()  # a worker waiting for the previous goal's observation looks up

    def _run(self) -> None:
        while not self._shutdown.is_set():
            session = self._session
            if session is None or not session.active:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            self._serve(session)

    def _serve(self, session: GoalSession) -> None:
        latency = LatencyEstimate(self.config.initial_latency)
        previous: TimedChunk | None = None
        last_stamp: float | None = None
        waiting_since = self._clock()
        while session.active and not self._shutdown.is_set() and self._session is session:
            now = self._clock()
            session.check_duration(now)
            # Cleared before looking, so a frame that arrives after the look still wakes the wait below.
            self._observation_arrived.clear()
            observation, reason = self._next_observation(now, last_stamp)
            if observation is None:
                if now - waiting_since > self.config.stale_timeout:
                    session.stop(
                        EndReason.OBSERVATION_STALE,
                        f"no new synchronized observation for {now - waiting_since:.2f} s: {reason}",
                    )
                self._observation_arrived.wait(self.config.idle_wait)
                continue
            last_stamp = observation.stamp
            record = self._chunk_for(session, observation, previous, latency.value)
            if record is None:
                return
            self._publish(record)
            previous = record.chunk
            latency.record(record.latency)
            session.record_chunk(record.inference.timing.total_ms)
            waiting_since = self._clock()

    def _chunk_for(
        self, session: GoalSession, observation: Observation, previous: TimedChunk | None, expected_latency: float
    ) -> ChunkRecord | None:
        """Runs the model; None when the goal ended meanwhile or the model failed (goal stopped)."""
        guidance = None
        if self.config.real_time_chunking:
            guidance = plan_rtc(previous, observation.stamp, self.config.action_step, expected_latency)
        try:
            output = self._infer(observation, session.instruction, guidance)
        except PolicyUnavailableError as exc:
            session.stop(EndReason.POLICY_SERVER_LOST, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - any model failure must end the goal, not the thread
            session.stop(EndReason.INFERENCE_FAILED, f"inference failed: {type(exc).__name__}: {exc}")
            return None
        if not np.all(np.isfinite(output.actions)):
            session.stop(EndReason.INFERENCE_FAILED, "the model produced NaN or infinite actions")
            return None
        if not session.active or self._session is not session:
            return None
        self._sequence += 1
        chunk = TimedChunk(
            session.goal_id,
            self._sequence,
            observation.stamp,
            self.config.action_step,
            output.actions,
            output.frozen_steps,
        )
        return ChunkRecord(chunk, output, self._clock() - observation.stamp)
