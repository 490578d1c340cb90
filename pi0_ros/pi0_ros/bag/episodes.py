"""Where a bag's episodes start and end, and their tasks: per instruction goal, per bag, or per task message.

Plain Python over what :func:`pi0_ros.bag.recording.read_recording` decoded:

- **goals**: an episode per instruction goal. ``policy_status`` names the
  running goal (goal_id, goal_active, instruction) and is published whenever a
  goal starts or ends: a goal starts at the first status showing it active and
  ends at the first showing another goal or none. The action's status topic
  (``execute_instruction/_action/status``), when recorded, gives its outcome
  (succeeded, canceled, aborted) and ends it earlier if it reports that first.
  A goal still running when the bag ends ends there ("open at the bag's end").
- **bag**: the whole bag is one episode with a given task.
- **task topic**: every non-empty ``std_msgs/String`` on the topic starts an
  episode with its text as the task; the next message (an empty one only ends
  the current episode) or the bag's end ends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pi0_ros.bag.recording import GoalState, StatusSample, TaskMessage

# action_msgs/GoalStatus terminal states
_OUTCOMES = {4: "succeeded", 5: "canceled", 6: "aborted"}
OPEN_AT_END = "open at the bag's end"


@dataclass(frozen=True)
class EpisodeSpan:
    start: float  # s
    end: float  # s, >= start
    task: str  # "" when the bag names none (the episode is then skipped)
    label: str  # what it is, for the summary: "goal 1a2b3c4d", "bag", "task message 3"
    outcome: str = ""  # goals: succeeded, canceled, aborted, OPEN_AT_END, or "" when unknown


def goal_episodes(
    statuses: Sequence[StatusSample], goal_states: Sequence[GoalState], bag_end: float
) -> tuple[EpisodeSpan, ...]:
    """One episode per goal that policy_status shows active, in time order."""
    terminal: dict[str, GoalState] = {}
    for state in goal_states:
        if state.status in _OUTCOMES and state.goal_id not in terminal:
            terminal[state.goal_id] = state
    spans: list[EpisodeSpan] = []
    current: StatusSample | None = None

    def close(at: float | None) -> None:
        assert current is not None
        end, outcome = (bag_end, OPEN_AT_END) if at is None else (at, "")
        final = terminal.get(current.goal_id)
        if final is not None and final.time >= current.time:
            outcome = _OUTCOMES[final.status]
            end = min(end, final.time)
        spans.append(
            EpisodeSpan(current.time, max(end, current.time), current.instruction, _goal_label(current), outcome)
        )

    for status in statuses:
        running = status.goal_active and bool(status.goal_id)
        if current is not None and (not running or status.goal_id != current.goal_id):
            close(status.time)
            current = None
        if running and current is None:
            current = status
    if current is not None:
        close(None)
    return tuple(spans)


def _goal_label(status: StatusSample) -> str:
    return f"goal {status.goal_id[:8]}"


def task_topic_episodes(messages: Sequence[TaskMessage], bag_end: float) -> tuple[EpisodeSpan, ...]:
    spans = []
    for number, message in enumerate(messages):
        if not message.text:
            continue
        end = messages[number + 1].time if number + 1 < len(messages) else bag_end
        spans.append(EpisodeSpan(message.time, max(end, message.time), message.text, f"task message {number + 1}"))
    return tuple(spans)


def bag_episode(start: float, end: float, task: str) -> tuple[EpisodeSpan, ...]:
    return (EpisodeSpan(start, max(end, start), task, "bag"),)
