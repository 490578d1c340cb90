"""A tiny pi0 or pi0.5 taught a few motions, so the CPU demo moves with purpose.

A random-init model outputs noise. For the demo, the tiny configuration is
trained for a few hundred flow-matching steps on synthetic demonstrations of
the described robot: for each instruction, a smooth 1 s chunk from the
current pose toward that instruction's goal pose, with camera images rendered
by the simulator at that pose. The result is saved as an ordinary checkpoint
directory (weights, config, norm stats, tokenizer) that the policy node loads
like any pi0 or pi0.5 checkpoint, so the demo exercises the real loading path.

The model reads each demonstration as it would at run time: normalized in the
model's mode (pi0 mean/std, pi0.5 quantiles; the saved stats carry both) and
prompted through `model_prompt`, which for pi0.5 writes the discretized state
into the prompt, so its prompts differ per demonstration.

Training is deterministic for a given robot description, model type and seed,
and the checkpoint is cached (see `demo_checkpoint`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pi0_bringup.sim_render import SceneRenderer
from pi0_bringup.sim_robot import BaseState, SimState
from pi0_client.options import DEFAULT_MODEL_TYPE, MODEL_TYPES
from pi0_model.checkpoint import save_checkpoint
from pi0_model.config import Pi0Config
from pi0_model.flow_matching import flow_matching_loss
from pi0_model.images import images_by_slot, prepare_images
from pi0_model.model import ModelInputs, build_model, initialize_weights_
from pi0_model.normalization import Normalization, NormStats
from pi0_model.tokenizer import TokenizedPrompt, load_tokenizer, model_prompt, tiny_sentencepiece_model
from pi0_model.transforms import TransformPipeline, pad_to
from pi0_ros.core.robot_description import BASE_ACTION_NAMES, RobotDescription
from pi0_ros.policy.model_loader import robot_io

# Bump when the demonstrations or the training change, so cached checkpoints are rebuilt.
DEMO_VERSION = 2  # 2: the stats carry q01/q99

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
APPROACH_TIME = 0.4  # s, time constant of the approach toward the goal pose
MIN_SPREAD = 1e-2  # floor of a stat's spread (std, half the q01..q99 width): constant dims must not divide by ~0


@dataclass(frozen=True)
class DemoTraining:
    steps: int = 300
    batch_size: int = 12
    demonstrations: int = 384
    learning_rate: float = 3e-3
    image_size: tuple[int, int] = (128, 96)  # rendered (width, height); the model resizes to 224
    seed: int = 0
    model_type: str = DEFAULT_MODEL_TYPE  # pi0_client.options.MODEL_TYPES

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.demonstrations, *self.image_size) < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid demo training settings: {self}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got '{self.model_type}'")


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


def demonstration_chunk(
    description: RobotDescription, positions: np.ndarray, goal: np.ndarray, horizon: int
) -> np.ndarray:
    """[horizon, action_dim]: an exponential approach from `positions` (joint order) to `goal`."""
    times = np.arange(horizon) * description.action_period
    approach = 1.0 - np.exp(-times / APPROACH_TIME)  # [H]
    start = np.array(
        [
            0.0 if n in BASE_ACTION_NAMES else positions[description.joint_names.index(n)]
            for n in description.policy.actions
        ]
    )
    chunk = start[None, :] + approach[:, None] * (goal - start)[None, :]
    is_base = np.array([n in BASE_ACTION_NAMES for n in description.policy.actions])
    chunk[:, is_base] = goal[is_base]
    return chunk


@dataclass(frozen=True)
class Demonstrations:
    images: dict[str, np.ndarray]  # camera -> [N, H, W, 3] uint8
    states: np.ndarray  # [N, state_dim], robot units
    chunks: np.ndarray  # [N, horizon, action_dim], robot units
    instructions: tuple[str, ...]  # [N]


def make_demonstrations(
    description: RobotDescription, count: int, horizon: int, image_size: tuple[int, int], rng: np.random.Generator
) -> Demonstrations:
    """Poses between and around the goal poses, each with its instruction's chunk and rendered images."""
    goals = [goal_pose(description, i) for i in DEMO_INSTRUCTIONS]
    joint_index = [description.policy.actions.index(n) for n in description.joint_names]
    lower = np.array([j.lower for j in description.joints])
    upper = np.array([j.upper for j in description.joints])
    renderer = SceneRenderer(description, *image_size)
    cameras = [c.name for c in description.policy_cameras]
    images = {c: [] for c in cameras}
    states, chunks, instructions = [], [], []
    for _ in range(count):
        a, b = rng.integers(len(goals), size=2)
        blend = rng.uniform()
        positions = (1 - blend) * goals[a][joint_index] + blend * goals[b][joint_index]
        positions = np.clip(positions + rng.normal(scale=0.05, size=positions.shape), lower, upper)
        instruction = DEMO_INSTRUCTIONS[rng.integers(len(DEMO_INSTRUCTIONS))]
        snapshot = _snapshot(description, positions)
        for camera in cameras:
            images[camera].append(renderer.render(camera, snapshot))
        states.append([positions[description.joint_names.index(n)] for n in description.policy.state])
        chunks.append(demonstration_chunk(description, positions, goal_pose(description, instruction), horizon))
        instructions.append(instruction)
    return Demonstrations(
        {c: np.stack(v) for c, v in images.items()}, np.array(states), np.array(chunks), tuple(instructions)
    )


def _snapshot(description: RobotDescription, positions: np.ndarray) -> SimState:
    base = BaseState(0.0, 0.0, 0.0, 0.0, 0.0) if description.base is not None else None
    zeros = np.zeros_like(positions)
    return SimState(0.0, description.joint_names, positions, zeros, base)


def model_space(description: RobotDescription, demos: Demonstrations) -> tuple[np.ndarray, np.ndarray, Normalization]:
    """States [N, S] and chunks [N, H, A] after the robot adaptations, and stats computed from them (both modes)."""
    pipeline = TransformPipeline.parse(description.policy.transforms)
    states, chunks = [], []
    for state, chunk in zip(demos.states, demos.chunks):
        stages = pipeline.adapt_state(state)
        states.append(stages[-1])
        chunks.append(pipeline.actions_in(chunk, stages))
    states, chunks = np.array(states), np.array(chunks)
    normalization = Normalization(state=_stats(states), actions=_stats(chunks.reshape(-1, chunks.shape[-1])))
    return states, chunks, normalization


def _stats(values: np.ndarray) -> NormStats:
    """Mean/std and the 1st/99th percentiles (as openpi computes them for every model) of [N, D] values."""
    q01, q99 = np.quantile(values, [0.01, 0.99], axis=0)
    middle, half_width = (q01 + q99) / 2, np.maximum((q99 - q01) / 2, MIN_SPREAD)
    return NormStats(
        mean=values.mean(0),
        std=np.maximum(values.std(0), MIN_SPREAD),
        q01=middle - half_width,
        q99=middle + half_width,
    )


def train_demo_policy(
    description: RobotDescription,
    output: Path,
    settings: DemoTraining = DemoTraining(),
    report: Callable[[str], None] = print,
) -> Path:
    """Trains the tiny pi0 or pi0.5 on the robot's demonstrations and saves it as a checkpoint in `output`."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    config = Pi0Config.tiny(settings.model_type)
    started = time.monotonic()
    demos = make_demonstrations(
        description,
        settings.demonstrations,
        config.action_horizon,
        settings.image_size,
        np.random.default_rng(settings.seed),
    )
    states, chunks, stats = model_space(description, demos)
    normalization = stats.with_mode(config.norm_mode)  # as Pi0Policy applies the saved stats to this model
    tokenizer_model = tiny_sentencepiece_model()
    output.mkdir(parents=True, exist_ok=True)
    (output / "tokenizer.model").write_bytes(tokenizer_model)
    tokenizer = load_tokenizer(output / "tokenizer.model", max_len=config.max_token_len)
    prompts = [
        model_prompt(tokenizer, config, instruction, normalization.normalize_state(state))
        for state, instruction in zip(states, demos.instructions)
    ]
    model = build_model(config, torch.device("cpu"), torch.float32)
    initialize_weights_(model, generator)
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    camera_slots = robot_io(description).camera_slots
    report(
        f"training the demo {settings.model_type} policy for {description.name}: {settings.steps} steps on "
        f"{settings.demonstrations} synthetic demonstrations"
    )
    for step in range(1, settings.steps + 1):
        batch = torch.randint(len(states), (settings.batch_size,), generator=generator).numpy()
        inputs = _batch_inputs(config, demos, states, [prompts[i] for i in batch], camera_slots, normalization, batch)
        actions = torch.from_numpy(pad_to(normalization.normalize_actions(chunks[batch]), config.action_dim)).float()
        loss = flow_matching_loss(model, inputs, actions, generator=generator)[..., : chunks.shape[-1]].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % 50 == 0 or step == settings.steps:
            report(f"  step {step:4d}/{settings.steps}  loss {loss.item():.4f}  ({time.monotonic() - started:.0f} s)")
    model.eval().requires_grad_(False)
    save_checkpoint(model, output, stats)
    return output


def _batch_inputs(
    config: Pi0Config,
    demos: Demonstrations,
    states: np.ndarray,
    prompt: list[TokenizedPrompt],  # the batch's, in order
    camera_slots: dict[str, str],
    normalization: Normalization,
    batch: np.ndarray,
) -> ModelInputs:
    prepared = [
        prepare_images(
            images_by_slot({c: demos.images[c][i] for c in demos.images}, camera_slots),
            camera_slots.values(),
            config.vision.image_size,
            torch.device("cpu"),
        )
        for i in batch
    ]
    return ModelInputs(
        images=torch.cat([pixels for pixels, _ in prepared]),  # [B, N, 3, S, S]
        image_masks=torch.cat([masks for _, masks in prepared]),  # [B, N]
        tokens=torch.from_numpy(np.stack([p.ids for p in prompt])),
        token_mask=torch.from_numpy(np.stack([p.mask for p in prompt])),
        state=torch.from_numpy(pad_to(normalization.normalize_state(states[batch]), config.state_dim)).float(),
    )


def cache_dir() -> Path:
    return Path(os.environ.get("PI0_CACHE_DIR", Path.home() / ".cache" / "pi0_ros"))


def demo_checkpoint(
    description: RobotDescription,
    settings: DemoTraining = DemoTraining(),
    report: Callable[[str], None] = print,
    cache: Path | None = None,
) -> Path:
    """The cached demo checkpoint of a robot and model type, trained on first use (minutes on 2 CPU cores)."""
    assert description.source is not None
    key = hashlib.sha256(description.source.read_bytes() + repr((DEMO_VERSION, asdict(settings))).encode())
    directory = (
        (cache or cache_dir()) / "demo_checkpoints" / f"{description.name}-{settings.model_type}-{key.hexdigest()[:12]}"
    )
    if (directory / "model.safetensors").is_file():
        return directory
    staging = directory.with_name(directory.name + ".partial")
    train_demo_policy(description, staging, settings, report)
    staging.rename(directory)
    return directory
