"""The demo's instructions, their goal poses and the scripted demonstrations of them (pure numpy, no ROS).

Each instruction leads every joint to a goal pose. The scripted operator
demonstrates it from a start pose with a rate-limited exponential approach:
every control period the command moves a fixed fraction of the way to the
goal, no joint faster than its share of MAX_DEMO_SPEED. The next command
depends only on the current one and the goal, so what the policy has to learn
is a function of what it observes (pose and instruction), not of the time
since the episode began.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pi0_ros.core.robot_description import BASE_ACTION_NAMES, JointSpec, RobotDescription

# Goal offsets of an arm's joints, as a fraction of the joint's half range (capped by MAX_OFFSET),
# by joint index within the arm; grippers use GRIPPER_OPENING, the base BASE_SPEED.
ARM_PATTERNS = {
    "go home": (0.0,),
    "raise the arms": (0.0, -0.5, 0.3, 0.0, -0.4, 0.0, 0.0),
    "reach forward": (0.3, 0.4, -0.4, 0.0, 0.3, 0.5, 0.0),
}
GRIPPER_OPENING = {"go home": None, "raise the arms": 0.5, "reach forward": 1.0}  # fraction of range; None = home
BASE_SPEED = {"go home": 0.0, "raise the arms": 0.0, "reach forward": 0.1}  # m/s forward
DEMO_INSTRUCTIONS = tuple(ARM_PATTERNS)
MAX_OFFSET = 0.6  # rad
DEMO_IMAGE_SIZE = (128, 96)  # (width, height) the cameras render for the demonstrations and the demo alike
START_NOISE = 0.05  # rad (or gripper fraction): spread of the start poses around their blend of goal poses


@dataclass(frozen=True)
class Approach:
    """A rate-limited exponential approach: each period the command covers `1 - exp(-period / time_constant)`
    of the way to the goal, scaled down as a whole when a joint would move faster than `max_speed`."""

    time_constant: float  # s
    max_speed: float  # rad/s (gripper: fraction of its range per s)

    def step(self, command: np.ndarray, goal: np.ndarray, period: float) -> np.ndarray:
        move = (goal - command) * (1.0 - np.exp(-period / self.time_constant))
        largest = float(np.max(np.abs(move), initial=0.0))
        limit = self.max_speed * period
        return command + (move * (limit / largest) if largest > limit else move)


DEMONSTRATION = Approach(time_constant=0.3, max_speed=1.2)
RESET = Approach(time_constant=0.08, max_speed=2.5)  # to the next start pose, between episodes (not recorded)


@dataclass(frozen=True)
class ScriptSettings:
    episodes_per_instruction: int = 6  # the first three start at the goal poses, the rest between them
    demonstration_s: float = 2.0  # each episode: the approach and a moment of holding the goal
    reset_s: float = 0.6  # between episodes: to the next start pose
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes_per_instruction < 1 or min(self.demonstration_s, self.reset_s) <= 0:
            raise ValueError(f"invalid demonstration script: {self}")

    @property
    def episode_count(self) -> int:
        return self.episodes_per_instruction * len(DEMO_INSTRUCTIONS)

    @property
    def duration_s(self) -> float:
        return self.episode_count * (self.reset_s + self.demonstration_s)


@dataclass(frozen=True)
class Episode:
    instruction: str
    start: np.ndarray  # [action_dim] start pose in the description's action order (base dims: 0)
    goal: np.ndarray  # [action_dim]


@dataclass(frozen=True)
class ScriptTick:
    """What the operator commands at one control period of the script."""

    episode: int | None  # index of the episode being demonstrated; None while resetting to its start
    command: np.ndarray  # [action_dim]


def goal_pose(description: RobotDescription, instruction: str) -> np.ndarray:
    """The pose (and base velocity) an instruction leads to, in the description's action order."""
    pattern, opening, speed = ARM_PATTERNS[instruction], GRIPPER_OPENING[instruction], BASE_SPEED[instruction]
    goal = {}
    for group in description.joint_groups:
        for index, joint in enumerate(group.joints):
            if len(group.joints) == 1:
                fraction = opening
                goal[joint.name] = (
                    joint.home if fraction is None else joint.lower + fraction * (joint.upper - joint.lower)
                )
                continue
            half_range = 0.5 * (joint.upper - joint.lower)
            offset = np.clip(pattern[index % len(pattern)] * half_range, -MAX_OFFSET, MAX_OFFSET)
            goal[joint.name] = float(np.clip(joint.home + offset, joint.lower, joint.upper))
    goal.update({"base_linear_x": speed, "base_angular_z": 0.0})
    return np.array([goal[name] for name in description.policy.actions])


def episodes(description: RobotDescription, settings: ScriptSettings) -> tuple[Episode, ...]:
    """Every instruction from each goal pose (its own included: holding it) and from poses between two goals,
    with a little noise, interleaved so consecutive episodes start far apart."""
    rng = np.random.default_rng(settings.seed)
    goals = {i: goal_pose(description, i) for i in DEMO_INSTRUCTIONS}
    is_base = _base_mask(description)
    lower = _per_action(description, lambda joint: joint.lower, base=-np.inf)
    upper = _per_action(description, lambda joint: joint.upper, base=np.inf)
    schedule = []
    for number in range(settings.episodes_per_instruction):
        for instruction in DEMO_INSTRUCTIONS:
            if number < len(DEMO_INSTRUCTIONS):
                anchor = goals[DEMO_INSTRUCTIONS[number]]
            else:
                a, b = rng.choice(len(DEMO_INSTRUCTIONS), size=2, replace=False)
                blend = rng.uniform()
                anchor = (1 - blend) * goals[DEMO_INSTRUCTIONS[a]] + blend * goals[DEMO_INSTRUCTIONS[b]]
            start = np.clip(anchor + rng.normal(scale=START_NOISE, size=anchor.shape), lower, upper)
            start[is_base] = 0.0
            schedule.append(Episode(instruction, start, goals[instruction]))
    return tuple(schedule)


def script(
    description: RobotDescription, schedule: Sequence[Episode], settings: ScriptSettings
) -> Iterator[ScriptTick]:
    """The operator's command at every control period: reset to each episode's start, then demonstrate it."""
    period = description.control_period
    is_base = _base_mask(description)
    command = _per_action(description, lambda joint: joint.home, base=0.0)
    for number, episode in enumerate(schedule):
        for _ in range(round(settings.reset_s / period)):
            command = RESET.step(command, episode.start, period)
            yield ScriptTick(None, command)
        for _ in range(round(settings.demonstration_s / period)):
            command = DEMONSTRATION.step(command, episode.goal, period)
            command = np.where(is_base, episode.goal, command)  # the base drives at its goal speed from the start
            yield ScriptTick(number, command)
        command = np.where(is_base, 0.0, command)


def _base_mask(description: RobotDescription) -> np.ndarray:
    """[action_dim] bool: the base's velocity dimensions."""
    return np.array([n in BASE_ACTION_NAMES for n in description.policy.actions])


def _per_action(description: RobotDescription, of_joint: Callable[[JointSpec], float], base: float) -> np.ndarray:
    """[action_dim]: `of_joint` of each joint, `base` for the base's dimensions."""
    return np.array(
        [base if n in BASE_ACTION_NAMES else of_joint(description.joint(n)) for n in description.policy.actions]
    )
