"""Training samples from a LeRobot dataset, prepared exactly as `Pi0Policy` prepares an observation.

One sample is one dataset frame: its images mapped to pi0's slots and
resized/padded (`images.prepare_images`), its state adapted, normalized and
written into the prompt for pi0.5 (`transforms`, `normalization`,
`tokenizer.model_prompt`), and as target the chunk of the next
`action_horizon` actions of its episode (the last action repeating past the
end, as openpi's loader pads), adapted with the frame's state and normalized.
These are the functions the policy runs at inference, so a model trained here
sees at inference what it saw in training.

Which frames make a batch, and every random draw of a step (flow noise and
time, augmentations), follow from (seed, step, position in the global batch)
alone: a resumed run draws what an uninterrupted one would have drawn, and N
processes together draw what one process draws for the same global batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import CAMERA_SLOTS, Pi0Config
from .dataset import DatasetReader
from .dataset_format import IMAGE_PREFIX
from .errors import ConfigError
from .images import images_by_slot, prepare_images
from .model import ModelInputs
from .normalization import Normalization
from .policy import RobotIO
from .tokenizer import PromptTokenizer, model_prompt
from .transforms import TransformPipeline, pad_to

NOISE_STREAM = 2**31  # SeedSequence word that tells the noise draw apart from the per-sample augmentation draws


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator for one step's draws, independent of everything that ran before."""
    words = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(size)


def global_batch_indices(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
    """Dataset rows of the global batch of `step`: consecutive slices of per-epoch shuffles."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    rows = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(positions // size):
        chosen = positions // size == epoch
        rows[chosen] = epoch_order(seed, int(epoch), size)[positions[chosen] % size]
    return rows


class StepSampler(torch.utils.data.Sampler[tuple[int, int, int]]):
    """This process's samples for steps start..stop-1: (dataset row, step, position in the global batch)."""

    def __init__(self, size: int, seed: int, batch_size: int, start: int, stop: int, rank: int, world: int):
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.local = batch_size // world

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for step in range(self.start, self.stop):
            rows = global_batch_indices(self.seed, step, self.batch_size, self.size)
            for position in range(self.rank * self.local, (self.rank + 1) * self.local):
                yield int(rows[position]), step, position

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local


@dataclass(frozen=True)
class RobotData:
    """What the samples need to know about the robot and the model."""

    io: RobotIO
    config: Pi0Config
    normalization: Normalization  # raw stats, as saved with the checkpoint
    tokenizer: PromptTokenizer


def robot_io_for(dataset: DatasetReader, cameras: Mapping[str, str], transforms: tuple[str, ...]) -> RobotIO:
    """The RobotIO of a dataset: its cameras (to `cameras`' slots, or to the slots in order) and vector sizes."""
    names = [key[len(IMAGE_PREFIX) :] for key in dataset.info.video_keys]
    if cameras:
        missing = sorted(set(cameras) - set(names))
        if missing:
            raise ConfigError(f"cameras {missing} are not in the dataset, which has {names}")
        slots = dict(cameras)
    else:
        if len(names) > len(CAMERA_SLOTS):
            raise ConfigError(f"the dataset has {len(names)} cameras {names}: map at most 3 with --cameras")
        slots = dict(zip(names, CAMERA_SLOTS, strict=False))
    state_dim = int(dataset.columns["observation.state"].shape[1])
    action_dim = int(dataset.columns["action"].shape[1])
    dimension_names = {f.key: f.names or () for f in dataset.info.features}
    state_names, action_names = dimension_names["observation.state"], dimension_names["action"]
    return RobotIO(
        camera_slots=slots,
        state_dim=state_dim,
        action_dim=action_dim,
        transforms=transforms,
        state_names=state_names if len(state_names) == state_dim else (),
        action_names=action_names if len(action_names) == action_dim else (),
    )


def dataset_episodes(dataset: DatasetReader) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each episode's (states, actions), the input of `normalization.compute_normalization`."""
    states, actions = dataset.columns["observation.state"], dataset.columns["action"]
    return [
        (states[e.dataset_from_index : e.dataset_to_index], actions[e.dataset_from_index : e.dataset_to_index])
        for e in dataset.episodes
    ]


class TrainingSamples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Dataset frame -> model-space tensors (images resized on the CPU, no batch axis).

    Indexed by a row, or by a `StepSampler` item (row, step, position); with `augment_seed` set, the
    latter's images are augmented with the draws of that step and position (in the loader's workers).
    """

    def __init__(self, dataset: DatasetReader, robot: RobotData, augment_seed: int | None = None):
        self.dataset = dataset
        self.robot = robot
        self.augment_seed = augment_seed
        self.slots = [slot for slot in CAMERA_SLOTS if slot in robot.io.camera_slots.values()]
        self.pipeline = TransformPipeline.parse(robot.io.transforms)
        # The mode and crop Pi0Policy applies to the saved stats (policy._in_mode, for_robot).
        self.normalization = robot.normalization.with_mode(robot.io.norm_mode or robot.config.norm_mode).for_robot(
            robot.io.state_dim, robot.io.action_dim
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index, step, position = (key, -1, -1) if isinstance(key, int) else key
        frame = self.dataset.frame(index)
        config, io = self.robot.config, self.robot.io
        images = {key[len(IMAGE_PREFIX) :]: pixels for key, pixels in frame.images.items()}
        images = {name: pixels for name, pixels in images.items() if name in io.camera_slots}
        pixels, masks = prepare_images(
            images_by_slot(images, io.camera_slots),
            io.camera_slots.values(),
            config.vision.image_size,
            torch.device("cpu"),
        )
        stages = self.pipeline.adapt_state(np.asarray(frame.state, dtype=np.float64))
        state = self.normalization.normalize_state(stages[-1])
        prompt = model_prompt(self.robot.tokenizer, config, frame.task, state)
        episode = self.dataset.episodes[frame.episode_index]
        rows = np.minimum(frame.index + np.arange(config.action_horizon), episode.dataset_to_index - 1)
        chunk = np.asarray(self.dataset.columns["action"][rows], dtype=np.float64)
        actions = self.normalization.normalize_actions(self.pipeline.actions_in(chunk, stages))
        if self.augment_seed is not None and step >= 0:
            pixels = augment_batch(pixels, masks, self.slots, self.augment_seed, step, position)
        return {
            "images": pixels[0],
            "image_masks": masks[0],
            "tokens": torch.from_numpy(prompt.ids),
            "token_mask": torch.from_numpy(prompt.mask),
            "state": torch.from_numpy(pad_to(state, config.state_dim)).to(torch.float32),
            "actions": torch.from_numpy(pad_to(actions, config.action_dim)).to(torch.float32),
        }


def model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> tuple[ModelInputs, torch.Tensor]:
    inputs = ModelInputs(
        images=batch["images"].to(device),
        image_masks=batch["image_masks"].to(device),
        tokens=batch["tokens"].to(device),
        token_mask=batch["token_mask"].to(device),
        state=batch["state"].to(device),
    )
    return inputs, batch["actions"].to(device)


# -- augmentations ------------------------------------------------------------------

# openpi (models/model.py preprocess_observation, train=True): every camera but the wrist ones gets a random
# 95% crop resized back and a rotation within +-5 degrees; every camera gets a colour jitter
# (brightness 0.3, contrast 0.4, saturation 0.5). openpi draws them with augmax; these are torch versions
# of the same operations with the same ranges, not bit-identical to augmax.
CROP_SCALE = 0.95
MAX_ROTATION_DEG = 5.0
BRIGHTNESS, CONTRAST, SATURATION = 0.3, 0.4, 0.5


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def augment_image(image: torch.Tensor, wrist: bool, generator: torch.Generator) -> torch.Tensor:
    """One image [3, S, S] in [-1, 1] -> augmented, same shape and range."""
    x = image / 2.0 + 0.5
    size = x.shape[-1]
    if not wrist:
        crop = int(size * CROP_SCALE)
        top = int(torch.randint(size - crop + 1, (), generator=generator))
        left = int(torch.randint(size - crop + 1, (), generator=generator))
        x = F.interpolate(x[None, :, top : top + crop, left : left + crop], size=(size, size), mode="bilinear")[0]
        angle = math.radians(_uniform(generator, -MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
        grid = F.affine_grid(rotation[None].to(x), [1, *x.shape], align_corners=False)
        x = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    x = x * _uniform(generator, 1 - BRIGHTNESS, 1 + BRIGHTNESS)
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = gray.mean() + (x - gray.mean()) * _uniform(generator, 1 - CONTRAST, 1 + CONTRAST)
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = gray + (x - gray) * _uniform(generator, 1 - SATURATION, 1 + SATURATION)
    return x.clamp(0.0, 1.0) * 2.0 - 1.0


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, slots: list[str], seed: int, step: int, first_position: int
) -> torch.Tensor:
    """Augment a process's slice of a global batch [B, N, 3, S, S]; row b is global position first_position + b.

    Each sample's draws come from (seed, step, its global position), so the result does not depend on how
    the global batch is split over processes. Slots without an image stay black.
    """
    out = images.clone()
    for row in range(images.shape[0]):
        generator = step_generator(seed, step, first_position + row)
        for column, slot in enumerate(slots):
            if bool(masks[row, column]):
                out[row, column] = augment_image(images[row, column], "wrist" in slot, generator)
    return out
