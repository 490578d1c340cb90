"""pi0_policy: the lifecycle node that runs pi0 on language instructions.

- on_configure loads the robot description and the model (checkpoint or tiny),
  warms it up, subscribes to the cameras and joint states and opens the
  ExecuteInstruction action server;
- on_activate starts accepting goals; on_deactivate ends the running goal;
- on_cleanup releases everything, the model included.

One goal runs at a time: a new goal preempts the running one, cancel is
honoured at once (the status that stops the streamer is published from the
cancel callback), and an optional duration or chunk limit ends a goal. Goals
are refused at once only for what waiting cannot fix (node not active, bad
instruction or duration); an accepted goal waits up to goal_start_timeout_s
for a command streamer and a synchronized observation, and nothing is
published for it (no goal_active, no chunk) before it starts. The
model runs on the inference worker's thread on the newest synchronized
observation; every chunk is published as a pi0_msgs/ActionChunk stamped with
its observation time.

Everything else runs on one SingleThreadedExecutor thread: a goal's execute
callback is a coroutine that waits for its session to end (a guard condition
wakes it) and feedback comes from a timer, so no callback blocks. rclpy's
MultiThreadedExecutor is avoided on purpose: while a callback waits for a pool
thread it rebuilds its wait set in a loop, holding the GIL, and every torch op
of the inference thread then waits for the GIL (with several such executors in
one test process, inference ran 10-50x slower than standalone).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.task import Future

from pi0_client.interface import Inference, RtcGuidance
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk, PolicyStatus, StreamerStatus
from pi0_ros.core.heartbeat import STREAMER_TIMEOUT_S
from pi0_ros.core.rate_monitor import RateMonitor
from pi0_ros.core.robot_description import RobotDescription, load_robot_description
from pi0_ros.policy.goal_session import EndReason, GoalSession, instruction_problem, normalize_instruction
from pi0_ros.policy.inference_worker import ChunkRecord, InferenceWorker
from pi0_ros.policy.observation_source import ObservationSource
from pi0_ros.policy.observation_sync import SyncedObservation
from pi0_ros.policy.parameters import PolicyParameters
from pi0_ros.policy.policy_backend import PolicyBackend
from pi0_ros.policy.remote_backend import RemoteBackend
from pi0_ros.ros.chunk_messages import chunk_message
from pi0_ros.ros.conversions import (
    action_service_qos,
    duration_to_seconds,
    qos_profile,
    seconds_to_duration,
)
from pi0_ros.ros.node_main import request_stop, spin_node, wait_for_delivery
from pi0_ros.ros.parameters import DeclaredParameters

READY = (PolicyStatus.LEVEL_OK, "ready for instructions")  # health of an active node without a failure
START_POLL_S = 0.05  # how often a waiting goal checks whether it can start, and a running one its streamer
# The first latency estimate for real-time chunking when warm-up could not measure one (policy server not up):
# a conservative round trip to a GPU host; measured latencies replace it after a few chunks.
UNMEASURED_LATENCY_S = 0.3
# When the process ends, the inference thread gets this long to finish; the process then ends without it.
EXIT_WORKER_JOIN_S = 0.2


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_policy", **kwargs)
        self._declared = DeclaredParameters(self, PolicyParameters)
        self._params = PolicyParameters()  # as read by the last successful configure
        self._description: RobotDescription | None = None
        self._policy: PolicyBackend | None = None
        self._source: ObservationSource | None = None
        self._worker: InferenceWorker | None = None
        self._action_server: ActionServer | None = None
        self._chunk_publisher = None
        self._streamer_subscription = None
        self._session: GoalSession | None = None
        self._session_lock = threading.Lock()
        self._accepted: dict[str, GoalSession] = {}  # goal id -> session until its execute coroutine runs
        self._executing: dict[str, _ExecutingGoal] = {}  # goal id -> goal whose execute coroutine waits
        self._start_deadline = 0.0  # time.monotonic() when the waiting goal gives up: a bound for a person
        # Sessions end on any thread (inference worker, transitions); this wakes the executor to finish them.
        self._session_ended_guard = self.create_guard_condition(self._finish_ended_goals)
        self._feedback_timer = None
        self._active = False
        self._lifecycle_label = "unconfigured"
        self._health = (PolicyStatus.LEVEL_WARN, "not configured")
        self._last_rejection = ""
        self._streamer_heard: float | None = None  # node-clock time of the last streamer_status
        self._streamer_silent_checks = 0  # consecutive goal supervisions that found the streamer silent
        self._streamer_not_ready = ""  # why the streamer could not stream a goal yet, as it last said
        self._inference_times = RateMonitor(period=1.0, window=50)
        self._last_inference_ms = 0.0
        self._chunks_total = 0
        self._status_publisher = self.create_publisher(
            PolicyStatus, "policy_status", qos_profile("reliable", 1, transient_local=True)
        )
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_timer = None
        self.create_timer(1.0, self._publish_diagnostics)
        self._reset_status_timer(PolicyParameters.status_rate_hz)
        # Runs for the node's life (nothing to release) and returns at once unless a goal waits to start.
        self.create_timer(START_POLL_S, self._supervise_goal)
        self._autostart_timer = None
        if self._declared.read_one("autostart") is True:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _autostart(self) -> None:
        assert self._autostart_timer is not None
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle ---------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._params = params = self._declared.read()
            self._description = load_robot_description(params.robot_description)
            if params.policy_server:
                self._policy = self._remote_policy(params, self._description)
            else:
                self._policy = self._local_policy(params, self._description)
            warmup_latency = self._warm_up(params.warmup_iterations)
        except Exception as exc:  # noqa: BLE001 - any configure failure must be reported, not crash the node
            self._policy = None
            return self._fail(f"configure failed: {type(exc).__name__}: {exc}")
        self._create_runtime(params, warmup_latency)
        self._set_lifecycle("inactive", PolicyStatus.LEVEL_OK, "configured")
        self.get_logger().info(f"configured: {self._policy.describe()}, warm-up latency {warmup_latency * 1e3:.0f} ms")
        return TransitionCallbackReturn.SUCCESS

    def _remote_policy(self, params: PolicyParameters, description: RobotDescription) -> PolicyBackend:
        settings = params.remote_settings()
        remote = RemoteBackend(
            settings,
            description.observation_format(),
            len(description.policy.actions),
            log_info=self.get_logger().info,
            log_warning=self.get_logger().warning,
        )
        remote.start()
        # Configure does not fail on an unreachable server: goals are refused with the reason until it answers.
        if not remote.wait_connected(settings.open_timeout_s):
            self.get_logger().warning(f"{remote.unavailable_reason()}; goals are refused until it answers")
        return remote

    def _local_policy(self, params: PolicyParameters, description: RobotDescription) -> PolicyBackend:
        # Imported here: only a node that runs the model itself needs torch and pi0_model's network.
        from pi0_ros.policy.model_adaptations import check_model_adaptations
        from pi0_ros.policy.model_loader import LocalPolicy, load_policy

        check_model_adaptations(description)
        if params.torch_threads:
            import torch

            torch.set_num_threads(params.torch_threads)
        self.get_logger().info(
            f"loading {'checkpoint ' + params.checkpoint if params.checkpoint else 'the tiny demo model'}"
            f" for '{description.name}' on {params.device} ({params.dtype})"
        )
        return LocalPolicy(load_policy(description, params.model_settings()))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self._set_lifecycle("active", *READY)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._end_session(EndReason.NODE_INACTIVE, "the policy node was deactivated")
        self._set_lifecycle("inactive", PolicyStatus.LEVEL_OK, "deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._set_lifecycle("unconfigured", PolicyStatus.LEVEL_WARN, "not configured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._end_session(EndReason.NODE_INACTIVE, "the policy node is shutting down")
        self._release(worker_join_s=EXIT_WORKER_JOIN_S)
        self._set_lifecycle("finalized", PolicyStatus.LEVEL_WARN, "shut down")
        # Nothing leaves Finalized, so the process ends, as on Ctrl-C (once this transition has answered).
        request_stop()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        # Destroying a node skips the lifecycle transitions; the goal, worker thread and model must still go.
        # The process usually ends right after (Ctrl-C): the status that makes the streamer hold must reach
        # it first, and an inference in flight is not waited for (it publishes nothing for an ended goal).
        self._active = False
        self._end_session(EndReason.NODE_INACTIVE, "the policy node was destroyed")
        wait_for_delivery([self._status_publisher])
        self._release(worker_join_s=EXIT_WORKER_JOIN_S)
        super().destroy_node()

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self.get_logger().error(message)
        self._set_lifecycle("unconfigured", PolicyStatus.LEVEL_ERROR, message)
        return TransitionCallbackReturn.FAILURE

    def _warm_up(self, iterations: int) -> float:
        """Runs the model on blank inputs; returns the slowest latency seen (s), a first estimate for RTC.

        A local model that fails here fails configure. A policy server that is down or answers badly does
        not: it can come back or be fixed while this node runs, and goals say why meanwhile.
        """
        assert self._description is not None and self._policy is not None
        images, state = self._description.blank_images(), self._description.home_state
        slowest = 0.0
        for _ in range(iterations):
            start = time.perf_counter()
            try:
                self._policy.infer(images, state, "warm up", None)
            except Exception as exc:
                if not self._params.policy_server:
                    raise
                self.get_logger().warning(f"warm-up through the policy server failed: {type(exc).__name__}: {exc}")
                return UNMEASURED_LATENCY_S
            slowest = max(slowest, time.perf_counter() - start)
        return slowest

    def _create_runtime(self, params: PolicyParameters, warmup_latency: float) -> None:
        description = self._description
        assert description is not None and self._policy is not None
        sensors = MutuallyExclusiveCallbackGroup()
        self._source = ObservationSource(
            self, description, params.source_params(), callback_group=sensors, on_image=self._on_camera_frame
        )
        self._chunk_publisher = self.create_publisher(ActionChunk, "action_chunk", qos_profile("reliable", 10))
        self._streamer_subscription = self.create_subscription(
            StreamerStatus, "streamer_status", self._on_streamer_status, qos_profile("reliable", 10)
        )
        self._worker = InferenceWorker(
            params.worker_config(description.action_period, warmup_latency),
            clock=self._now,
            next_observation=self._next_observation,
            infer=self._infer,
            publish=self._publish_chunk,
        )
        self._worker.start()
        self._action_server = ActionServer(
            self,
            ExecuteInstruction,
            "execute_instruction",
            execute_callback=self._execute,
            goal_callback=self._on_goal_request,
            handle_accepted_callback=self._on_goal_accepted,
            cancel_callback=self._on_cancel_request,
            **action_service_qos(),
        )
        # Steady time: feedback reports progress to a person even while a replayed /clock is paused.
        self._feedback_timer = self.create_timer(
            1.0 / params.feedback_rate_hz, self._publish_feedback, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self._reset_status_timer(params.status_rate_hz)

    def _release(self, worker_join_s: float = 5.0) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=worker_join_s)
        if self._action_server is not None:
            self._action_server.destroy()
        if self._source is not None:
            self._source.destroy()
        if self._chunk_publisher is not None:
            self.destroy_publisher(self._chunk_publisher)
        if self._streamer_subscription is not None:
            self.destroy_subscription(self._streamer_subscription)
        if self._feedback_timer is not None:
            self.destroy_timer(self._feedback_timer)
        self._worker = self._action_server = self._source = self._feedback_timer = None
        self._chunk_publisher = self._streamer_subscription = None
        if self._policy is not None:
            self._policy.close()
        self._policy = None
        _free_accelerator_memory()

    # -- goals ---------------------------------------------------------------------

    def _on_goal_request(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        problem = self._goal_problem(goal)
        if problem:
            self._last_rejection = problem
            self.get_logger().warning(f"rejected instruction goal: {problem}")
            self._publish_status()
            return GoalResponse.REJECT
        self._last_rejection = ""
        return GoalResponse.ACCEPT

    def _goal_problem(self, goal: ExecuteInstruction.Goal) -> str:
        """Why `goal` is refused at once: only what waiting cannot fix. The streamer and the observations
        may come later (just after activation, or a camera driver restarting): an accepted goal waits for
        them (_supervise_goal)."""
        if not self._active:
            return f"the policy node is {self._lifecycle_label}, not active"
        assert self._policy is not None  # an active node is configured
        unavailable = self._policy.unavailable_reason()
        if unavailable:
            return unavailable
        problem = instruction_problem(goal.instruction, self._params.max_instruction_chars)
        if problem:
            return problem
        max_duration = duration_to_seconds(goal.max_duration)
        if not math.isfinite(max_duration) or max_duration < 0:
            return f"max_duration {max_duration} s is invalid"
        return ""

    def _start_problem(self) -> tuple[int, str] | None:
        """What keeps the current goal from starting, as (feedback phase, reason); None once it can start."""
        if self._params.require_streamer and not self._streamer_connected():
            return (
                ExecuteInstruction.Feedback.PHASE_WAITING_FOR_STREAMER,
                "no command streamer is connected (nothing on streamer_status for "
                f"{STREAMER_TIMEOUT_S:g} s): start "
                "pi0_command_streamer, or set require_streamer:=false to run without one",
            )
        if self._params.require_streamer and self._streamer_not_ready:
            # Hearing the streamer proves only one direction of DDS discovery: it must hear this node too,
            # and have a start pose, or the goal would run without moving the robot.
            return (
                ExecuteInstruction.Feedback.PHASE_WAITING_FOR_STREAMER,
                f"the command streamer is not ready: {self._streamer_not_ready}",
            )
        assert self._source is not None
        sync = self._source.latest()
        if not sync.ok:
            return (
                ExecuteInstruction.Feedback.PHASE_WAITING_FOR_OBSERVATION,
                f"no synchronized observation: {sync.reason}",
            )
        return None

    def _streamer_connected(self) -> bool:
        # The streamer publishes its status at status_rate_hz of its clock; hearing it also means DDS discovery
        # between the two nodes is done, so the streamer will see this goal's status and chunks. Node
        # clocks, not wall time: under bag replay both run on /clock, at whatever rate it plays.
        return self._streamer_heard is not None and abs(self._now() - self._streamer_heard) < STREAMER_TIMEOUT_S

    def _on_goal_accepted(self, goal_handle: ServerGoalHandle) -> None:
        goal = goal_handle.request
        max_duration = duration_to_seconds(goal.max_duration)
        session = GoalSession(
            _goal_id_hex(goal_handle),
            normalize_instruction(goal.instruction),
            started=None,
            max_duration=max_duration if max_duration > 0 else None,
            max_chunks=goal.max_chunks,
            on_end=self._session_ended_guard.trigger,
        )
        self._start_deadline = time.monotonic() + self._params.goal_start_timeout_s
        with self._session_lock:
            previous, self._session = self._session, session
        self._accepted[session.goal_id] = session
        if previous is not None:
            previous.stop(EndReason.PREEMPTED, f"preempted by goal {session.goal_id[:8]}: '{session.instruction}'")
        self.get_logger().info(f"goal {session.goal_id[:8]} accepted: '{session.instruction}'")
        self._health = READY
        if not self._start_if_ready():
            self._publish_status()  # the preempted goal is no longer active
            problem = self._start_problem()
            if session.waiting and problem is not None:
                self.get_logger().info(
                    f"goal {session.goal_id[:8]} waits up to "
                    f"{self._params.goal_start_timeout_s:g} s to start: {problem[1]}"
                )
        goal_handle.execute()

    def _supervise_goal(self) -> None:
        session = self._session
        if self._start_if_ready() and session is not None:
            self.get_logger().info(f"goal {session.goal_id[:8]} started after waiting")
        elif (
            session is not None and session.running and self._params.require_streamer and not self._streamer_connected()
        ):
            # Decided on the second silent check only: after a stall of this executor, rclpy runs the due
            # timers before it takes the streamer_status messages waiting meanwhile.
            self._streamer_silent_checks += 1
            if self._streamer_silent_checks >= 2:
                # Chunks nobody executes would make the goal look alive; a respawned streamer must not pick it up.
                session.stop(
                    EndReason.STREAMER_LOST,
                    f"the command streamer was lost (no streamer_status for {STREAMER_TIMEOUT_S:g} s): the robot holds",
                )
                self._publish_status()
        else:
            self._streamer_silent_checks = 0

    def _start_if_ready(self) -> bool:
        """Starts the waiting goal once nothing keeps it from starting (True, status published); aborts
        it when its wait ran out."""
        session = self._session
        if session is None or not session.waiting or self._worker is None:
            return False
        problem = self._start_problem()
        if problem is None:
            if not session.begin(self._now()):
                return False  # ended meanwhile (cancel, deactivation on another thread)
            self._worker.serve(session)
            self._publish_status()
            return True
        if time.monotonic() >= self._start_deadline:
            session.stop(
                EndReason.NOT_READY,
                f"not ready within goal_start_timeout_s ({self._params.goal_start_timeout_s:g} s): {problem[1]}",
            )
        return False

    def _on_cancel_request(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        session = self._session
        if session is not None and session.goal_id == _goal_id_hex(goal_handle):
            session.stop(EndReason.CANCELED, "canceled by the client")
            # Published here, not when the execute coroutine resumes, so the streamer holds within one period.
            self._publish_status()
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle: ServerGoalHandle) -> ExecuteInstruction.Result:
        goal_id = _goal_id_hex(goal_handle)
        # Its own session even when a newer goal preempted it before this ran (a burst of goals): the
        # result then carries the preemption's message like any other.
        session = self._accepted.pop(goal_id)
        executing = _ExecutingGoal(goal_handle, session, Future())
        self._executing[goal_id] = executing
        self._finish_ended_goals()
        await executing.ended
        return self._finish(goal_handle, session)

    def _finish_ended_goals(self) -> None:
        """Resumes the execute coroutines of the goals whose session ended (executor thread)."""
        for goal_id, executing in list(self._executing.items()):
            # pop: safe even when a user's multi-threaded executor runs this twice at once.
            if not executing.session.active and self._executing.pop(goal_id, None) is executing:
                executing.ended.set_result(None)

    def _publish_feedback(self) -> None:
        for executing in list(self._executing.values()):
            executing.session.check_duration(self._now())
            if executing.session.active:
                executing.handle.publish_feedback(self._feedback(executing.session))

    def _finish(self, goal_handle: ServerGoalHandle, session: GoalSession) -> ExecuteInstruction.Result:
        outcome = session.outcome
        assert outcome is not None
        with self._session_lock:
            if self._session is session:
                self._session = None
        self._report_goal_end(outcome.reason, outcome.message)
        if not self.context.ok():
            # Shutting down (Ctrl-C): neither the goal handle nor the status can reach anyone.
            return ExecuteInstruction.Result(end_reason=int(outcome.reason), message=outcome.message)
        self._publish_status()
        stats = session.stats(self._now())
        if outcome.reason is EndReason.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.reason.succeeded:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        summary = (
            f"goal {session.goal_id[:8]} ended ({outcome.reason.name.lower()}): {outcome.message}; "
            f"{stats.chunks} chunks, {stats.commands_sent} commands in {stats.elapsed:.1f} s"
        )
        # rclpy ties a severity to each logging call site, hence two calls.
        if outcome.reason.succeeded or outcome.reason is EndReason.CANCELED:
            self.get_logger().info(summary)
        else:
            self.get_logger().warning(summary)
        return ExecuteInstruction.Result(
            end_reason=int(outcome.reason),
            message=outcome.message,
            elapsed=seconds_to_duration(stats.elapsed),
            chunks_generated=stats.chunks,
            commands_sent=stats.commands_sent,
            inference_latency_mean_ms=stats.latency_mean_ms,
            inference_latency_p95_ms=stats.latency_p95_ms,
            inference_latency_max_ms=stats.latency_max_ms,
        )

    def _report_goal_end(self, reason: EndReason, message: str) -> None:
        """Keeps a failed goal's cause in the status and /diagnostics until the next goal starts."""
        if not self._active or reason in (EndReason.CANCELED, EndReason.PREEMPTED, EndReason.NODE_INACTIVE):
            return
        if reason.succeeded:
            self._health = READY
        else:
            self._health = (PolicyStatus.LEVEL_WARN, f"last goal ended ({reason.name.lower()}): {message}")

    def _feedback(self, session: GoalSession) -> ExecuteInstruction.Feedback:
        stats = session.stats(self._now())
        start_problem = self._start_problem() if session.waiting else None
        if start_problem is not None:
            phase = start_problem[0]
        elif stats.chunks:
            phase = ExecuteInstruction.Feedback.PHASE_RUNNING
        else:
            phase = ExecuteInstruction.Feedback.PHASE_WAITING_FOR_OBSERVATION
        return ExecuteInstruction.Feedback(
            phase=phase,
            elapsed=seconds_to_duration(stats.elapsed),
            chunks_generated=stats.chunks,
            last_inference_latency_ms=stats.last_inference_ms,
            commands_sent=stats.commands_sent,
            observation_age_ms=self._observation_age_ms(),
        )

    def _end_session(self, reason: EndReason, message: str) -> None:
        session = self._session
        if session is not None:
            session.stop(reason, message)
            self._publish_status()

    # -- inference -----------------------------------------------------------------

    def _on_camera_frame(self) -> None:
        if self._worker is not None:
            self._worker.notify_observation()

    def _next_observation(self, now: float, newer_than: float | None):
        assert self._source is not None
        result = self._source.latest(newer_than)
        return result.observation, result.reason

    def _infer(self, observation: SyncedObservation, instruction: str, guidance: RtcGuidance | None) -> Inference:
        assert self._policy is not None
        return self._policy.infer(observation.images, observation.state, instruction, guidance)

    def _publish_chunk(self, record: ChunkRecord) -> None:
        assert self._description is not None and self._chunk_publisher is not None
        self._chunk_publisher.publish(
            chunk_message(
                record.chunk,
                self._description.policy.actions,
                frame_id=self._description.name,
                inference_latency_ms=record.latency * 1e3,
            )
        )
        self._inference_times.record(time.monotonic())
        self._last_inference_ms = record.inference.timing.total_ms
        self._chunks_total += 1

    def _on_streamer_status(self, message: StreamerStatus) -> None:
        self._streamer_heard = self._now()
        self._streamer_not_ready = message.not_ready_reason
        session = self._session
        if session is not None and message.goal_id == session.goal_id:
            session.set_commands_sent(message.commands_sent)

    # -- status and diagnostics ------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _observation_age_ms(self) -> float:
        if self._source is None:
            return -1.0
        ages = [h.age_s for h in self._source.health() if h.age_s is not None]
        return max(ages) * 1e3 if ages else -1.0

    def _set_lifecycle(self, label: str, level: int, message: str) -> None:
        self._lifecycle_label = label
        self._health = (level, message)
        self._publish_status()

    def _reset_status_timer(self, rate_hz: float) -> None:
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
        self._status_timer = self.create_timer(1.0 / rate_hz, self._publish_status)

    def _publish_status(self) -> None:
        if not self.context.ok():
            return
        session = self._session
        active = session is not None and session.running
        level, message = self._health
        unavailable = self._policy.unavailable_reason() if self._active and self._policy is not None else ""
        if unavailable and level == PolicyStatus.LEVEL_OK:
            level, message = PolicyStatus.LEVEL_WARN, unavailable  # e.g. its policy server is down
        status = PolicyStatus(
            lifecycle_state=self._lifecycle_label,
            goal_active=active,
            goal_id=session.goal_id if active else "",
            instruction=session.instruction if active else "",
            level=level,
            message=message,
            last_goal_rejection=self._last_rejection,
            chunks_generated=self._chunks_total,
            last_inference_latency_ms=self._last_inference_ms,
            inference_rate_hz=self._inference_times.stats(time.monotonic()).rate_hz,
            observation_age_ms=self._observation_age_ms(),
        )
        status.header.stamp = self.get_clock().now().to_msg()
        self._status_publisher.publish(status)

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        level, message = self._health
        stats = self._inference_times.stats(time.monotonic())
        array.status.append(
            DiagnosticStatus(
                level=bytes([level]),
                name=f"{self.get_name()}: inference",
                hardware_id=self._description.name if self._description else "",
                message=message,
                values=[
                    KeyValue(key=k, value=v)
                    for k, v in {
                        "lifecycle_state": self._lifecycle_label,
                        "goal_active": str(self._session is not None and self._session.running),
                        "chunks_generated": str(self._chunks_total),
                        "inference_rate_hz": f"{stats.rate_hz:.2f}",
                        "last_inference_ms": f"{self._last_inference_ms:.1f}",
                        "last_goal_rejection": self._last_rejection,
                    }.items()
                ],
            )
        )
        if self._source is not None:
            array.status.extend(self._source.diagnostic_status())
        self._diagnostics_publisher.publish(array)


@dataclass(frozen=True)
class _ExecutingGoal:
    handle: ServerGoalHandle
    session: GoalSession
    ended: Future  # done once the session ended; the execute coroutine awaits it


def _goal_id_hex(goal_handle: ServerGoalHandle) -> str:
    return bytes(goal_handle.goal_id.uuid).hex()


def _free_accelerator_memory() -> None:
    # Only a process that ran the model (imported torch and used CUDA) has a cache to free; importing torch
    # here would load it into a node that uses a policy server, and is_available() would start the driver.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def main(args=None) -> NoReturn:
    spin_node(PolicyNode, args=args)


if __name__ == "__main__":
    main()
