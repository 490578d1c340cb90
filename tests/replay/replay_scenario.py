"""The golden replay scenario, shared by the tests and the regeneration script.

1. Record a bag from the simulated ALOHA at rest (small images): its policy
   cameras and joint states, with the suite's recorder.
2. Replay the bag with /clock at a quarter of real time through the live
   policy node (tiny model, fixed seed, one warm-up inference) and the command
   streamer, both on sim time, and run one instruction goal from a real action
   client until three chunks and some commands came, then cancel it.
3. Collect the chunks and every controller command.

Why the outcome is reproducible: the robot never moves, and the simulator's
images are a pure function of its state, so every observation in the bag is
the same. The policy node draws the sampling noise of each inference from its
generator seeded with ``seed``, the warm-up inference first, so chunk n is the
same whichever frame it used and whenever it ran: the first three are the
golden values. When a chunk reaches the streamer and when the streamer ticks
depend on scheduling, so its commands are not stored; the test checks each
one against the chunks received, evaluated at the command's own stamp.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from trajectory_msgs.msg import JointTrajectory

from pi0_bringup.graph_client import GraphClient
from pi0_bringup.sim_recording import SimRecording, SimRecordingSettings
from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk
from pi0_ros.bag import BagReader, PlaybackConfig, PlaybackStats, Player
from pi0_ros.bag.play import PlayNode
from pi0_ros.core.robot_description import RobotDescription, load_robot_description
from pi0_ros.policy.node import PolicyNode
from pi0_ros.ros.conversions import duration_to_seconds, qos_profile, stamp_to_seconds
from pi0_ros.ros.image_conversion import image_msg_to_rgb
from pi0_ros.streamer.node import CommandStreamerNode
from support.robots import robot_yaml
from support.ros_graph import RosGraph

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "golden_replay.json"
REGENERATE = "scripts/with_env.sh python tests/replay/regenerate_golden.py"
FIXTURE_FORMAT = 1

ROBOT = "aloha"
SEED = 7
INSTRUCTION = "pick up the red block"
GOLDEN_CHUNKS = 3  # the first chunks of the goal, stored in the golden file
STREAMED_TICKS = 10  # commands to wait for after the last golden chunk, before the goal is canceled
# A quarter of real time: a busy machine may stall this one process (model, nodes and player together) for
# a second without the observations going stale or a chunk arriving too late on the replayed clock.
PLAYBACK_RATE = 0.25
# One warm-up inference at configure takes torch's first-call cost (seconds on a busy machine) out of the
# replay, where it would make the first chunk late; it also takes the generator's first noise draw.
WARMUP_ITERATIONS = 1
IMAGE_WIDTH, IMAGE_HEIGHT = 96, 72
CAMERA_RATE_HZ = 15.0
RECORD_SECONDS = 3.0  # the goal needs well under a second of bag time; the rest is margin for a busy machine
HOLD_OBSERVED_S = 1.0  # wall seconds the replay goes on after the goal ended (the streamer holds meanwhile)
# float32 inference on another CPU (SIMD width) or torch build moves actions by ~1e-6; anything the golden
# test is meant to catch (seed, observation, instruction, stats, adaptations, action order) moves them by
# 1e-3 or more (tests/replay/test_golden_replay.py checks that margin).
CHUNK_TOLERANCE = 1e-4


def description() -> RobotDescription:
    return load_robot_description(robot_yaml(ROBOT))


def policy_topics(robot: RobotDescription) -> tuple[str, ...]:
    return (*(c.topic for c in robot.policy_cameras), *robot.joint_state_topics)


# -- recording --------------------------------------------------------------------------------------------------


def record_sim_bag(path: Path, seconds: float = RECORD_SECONDS) -> None:
    """Records the simulated robot's policy cameras and joint states into a new bag at `path`."""
    settings = SimRecordingSettings(
        description(),
        path,
        policy_topics(description()),
        image_size=(IMAGE_WIDTH, IMAGE_HEIGHT),
        camera_rate_hz=CAMERA_RATE_HZ,
        ready_timeout_s=10.0,
    )
    with SimRecording(settings) as recording:
        started = time.monotonic()
        recording.spin_until(lambda: time.monotonic() - started >= seconds, seconds + 1.0, "the recording time")


@dataclass(frozen=True)
class Scene:
    """What the bag shows: the joint positions and a digest of each camera's image."""

    joint_positions: dict[str, float]
    image_sha256: dict[str, str]
    distinct_images: int  # over all frames of all cameras; one per camera when the scene is static
    distinct_joint_states: int
    image_stamps: tuple[float, ...]  # every recorded image's header stamp, s


def read_scene(bag: Path) -> Scene:
    robot = description()
    cameras = {f"/{c.topic}": c.name for c in robot.policy_cameras}
    digests: dict[str, set[str]] = {name: set() for name in cameras.values()}
    states: set[tuple[tuple[str, float], ...]] = set()
    stamps = []
    with BagReader(bag) as reader:
        for message in reader.read():
            if message.topic in cameras:
                digests[cameras[message.topic]].add(
                    hashlib.sha256(image_msg_to_rgb(message.message).tobytes()).hexdigest()
                )
                stamps.append(stamp_to_seconds(message.message.header.stamp))
            else:
                states.add(tuple(zip(message.message.name, message.message.position)))
    return Scene(
        joint_positions=dict(next(iter(states))),
        image_sha256={name: sorted(found)[0] for name, found in digests.items()},
        distinct_images=sum(len(found) for found in digests.values()),
        distinct_joint_states=len(states),
        image_stamps=tuple(sorted(set(stamps))),
    )


# -- replay -----------------------------------------------------------------------------------------------------


@dataclass
class ReplayOutcome:
    goal_result: ExecuteInstruction.Result
    chunks: list[ActionChunk]  # in arrival order
    commands: dict[str, list]  # controller name -> messages in arrival order
    played: int  # messages the player published


class _Collector:
    """The observer: a graph client (as the demo, the benchmark and the graph tests use) that keeps every
    controller command, plus the chunks, in arrival order."""

    def __init__(self, graph: RosGraph, robot: RobotDescription) -> None:
        self.client = GraphClient(
            robot,
            context=graph.context,
            name="replay_observer",
            command_qos=qos_profile("reliable", 1000),
            keep_messages=True,
        )
        self.lock = threading.Lock()
        self.chunks: list[ActionChunk] = []
        self.client.node.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos_profile("reliable", 50))
        self._first = robot.controllers[0].name

    def publishers_found(self) -> bool:
        """Every controller topic has a publisher (the streamer's)."""
        return all(
            self.client.node.count_publishers(self.client.node.resolve_topic_name(c.topic)) > 0
            for c in self.client.controllers
        )

    def counts(self) -> tuple[int, int]:
        """(chunks, commands of the first controller) received so far."""
        with self.lock:
            chunks = len(self.chunks)
        return chunks, len(self.client.commands.all(self._first))

    def commands(self) -> dict[str, list]:
        """Controller name -> messages in arrival order."""
        return {c.name: [r.message for r in self.client.commands.all(c.name)] for c in self.client.controllers}

    def _on_chunk(self, message: ActionChunk) -> None:
        with self.lock:
            self.chunks.append(message)


def start_nodes(graph: RosGraph, seed: int) -> None:
    """The policy node (configured and active) and the streamer, both on sim time."""
    sim_time = Parameter("use_sim_time", value=True)
    description_path = Parameter("robot_description", value=str(robot_yaml(ROBOT)))
    policy = graph.add(
        PolicyNode(
            context=graph.context,
            parameter_overrides=[
                description_path,
                sim_time,
                Parameter("seed", value=seed),
                Parameter("warmup_iterations", value=WARMUP_ITERATIONS),
                Parameter("torch_threads", value=1),
                # After a stall of this busy process, /clock (one light callback) catches up before the queued
                # images are decoded: bag time can jump past the default 0.5 s freshness limits for a moment.
                Parameter("max_observation_age_s", value=2.0),
                Parameter("stale_observation_timeout_s", value=5.0),
                # A goal sent as the replay starts waits for the first observation; this busy process may take a while.
                Parameter("goal_start_timeout_s", value=20.0),
            ],
        )
    )
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS, policy._health
    assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
    # A deeper command queue than the default 1, so the observer never misses a command.
    graph.add(
        CommandStreamerNode(
            context=graph.context,
            parameter_overrides=[description_path, sim_time, Parameter("command_qos_depth", value=10)],
        )
    )


def replay_through_policy(
    bag: Path, seed: int = SEED, instruction: str = INSTRUCTION, timeout: float = 60.0
) -> ReplayOutcome:
    """Replays `bag` with /clock into the live policy node and streamer and runs one goal.

    The goal is canceled once GOLDEN_CHUNKS chunks and STREAMED_TICKS further commands arrived, so the
    run does not depend on how fast the model is; the replay goes on for HOLD_OBSERVED_S after that.
    """
    graph = RosGraph()
    stop = threading.Event()
    player_thread: threading.Thread | None = None
    collector: _Collector | None = None
    try:
        start_nodes(graph, seed)
        collector = _Collector(graph, description())
        graph.wait_for(collector.publishers_found, what="the streamer's command publishers")
        graph.wait_for(collector.client.action.server_is_ready, what="the policy's action server")
        with BagReader(bag) as reader:
            player = Player(reader, PlaybackConfig(rate=PLAYBACK_RATE, clock_hz=100.0, clock_per_message=True))
            play_node = graph.add(PlayNode(player.topics, context=graph.context))
            play_node.wait_for_subscribers(10.0, stop)
            stats: list[PlaybackStats] = []
            player_thread = threading.Thread(target=lambda: stats.append(player.run(play_node, stop)), daemon=True)
            player_thread.start()
            result = _run_goal(graph, collector, instruction, player_thread, timeout)
            time.sleep(HOLD_OBSERVED_S)
            stop.set()
            player_thread.join(timeout=10.0)
        with collector.lock:
            chunks = list(collector.chunks)
        return ReplayOutcome(result, chunks, collector.commands(), stats[0].published_count if stats else 0)
    finally:
        stop.set()
        if player_thread is not None:
            player_thread.join(timeout=10.0)
        if collector is not None:
            collector.client.close()
        graph.shutdown()


def _run_goal(
    graph: RosGraph, collector: _Collector, instruction: str, player_thread: threading.Thread, timeout: float
) -> ExecuteInstruction.Result:
    # One goal: the policy node accepts it at once and starts it when the streamer and an observation
    # are ready (within goal_start_timeout_s, see start_nodes).
    handle = collector.client.send_goal(instruction)

    def playing(condition: Callable[[], bool], what: str) -> None:
        # Without /clock the nodes' time stands still: stop waiting when the bag ends.
        graph.wait_for(lambda: condition() or not player_thread.is_alive(), timeout=timeout, what=what)
        assert condition(), f"the bag ended before {what} ({collector.counts()} chunks, commands so far)"

    playing(lambda: collector.counts()[0] >= GOLDEN_CHUNKS, f"{GOLDEN_CHUNKS} chunks")
    commands = collector.counts()[1]
    playing(lambda: collector.counts()[1] >= commands + STREAMED_TICKS, f"{STREAMED_TICKS} more commands")
    cancel = handle.cancel_goal_async()
    graph.wait_for(lambda: cancel.done(), what="the cancel response")
    result = handle.get_result_async()
    return graph.wait_for(lambda: result.done() and result.result(), what="the goal's result").result


# -- golden values ----------------------------------------------------------------------------------------------


def chunk_actions(chunk: ActionChunk) -> np.ndarray:
    return np.asarray(chunk.actions, dtype=np.float64).reshape(chunk.horizon, len(chunk.names))


def command_positions(message) -> list[float]:
    """Point 0 of a trajectory, or the values of a position command."""
    if isinstance(message, JointTrajectory):
        return list(message.points[0].positions)
    return list(message.data)


def golden_document(outcome: ReplayOutcome, scene: Scene) -> dict:
    """The fixture's content from one replay."""
    chunks = sorted(outcome.chunks, key=lambda c: c.sequence)[:GOLDEN_CHUNKS]
    return {
        "about": "Golden values of tests/replay/test_golden_replay.py (see replay_scenario.py). "
        f"Regenerate with: {REGENERATE}",
        "format": FIXTURE_FORMAT,
        "scenario": {
            "robot": ROBOT,
            "seed": SEED,
            "instruction": INSTRUCTION,
            "chunks": GOLDEN_CHUNKS,
            "image_width": IMAGE_WIDTH,
            "image_height": IMAGE_HEIGHT,
            "camera_rate_hz": CAMERA_RATE_HZ,
            "warmup_iterations": WARMUP_ITERATIONS,
        },
        "tolerances": {"chunk_actions": CHUNK_TOLERANCE},
        "scene": {"joint_positions": scene.joint_positions, "image_sha256": scene.image_sha256},
        "chunks": [
            {
                "sequence": c.sequence,
                "names": list(c.names),
                "step_period_s": duration_to_seconds(c.step_period),
                # 1e-8 rounding is far inside the tolerance.
                "actions": np.round(chunk_actions(c), 8).tolist(),
            }
            for c in chunks
        ],
    }


def load_golden() -> dict:
    return json.loads(FIXTURE.read_text())


def write_golden(document: dict) -> None:
    text = json.dumps(document, indent=1)
    # Innermost lists (a chunk row, the names) on one line each: reviewable diffs at a third of the size.
    text = re.sub(r"\[\n\s+([^\[\]]*?)\n\s+\]", lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(text + "\n")
