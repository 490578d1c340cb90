"""The demo policy: a tiny pi0 or pi0.5 fine-tuned on the simulated robot through the suite's own pipeline.

1. record: the scripted operator (pi0_bringup.demo_recording) demonstrates
   every demo instruction on the simulated robot; the suite's recorder writes
   the bag;
2. convert: bag_to_dataset turns it into a LeRobotDataset (v3.0), one episode
   per demonstration;
3. train: pi0_model.train fine-tunes the tiny model on it from scratch.

What the user would do with their own robot, on a small scale. Each stage is
cached under the demo cache directory (PI0_CACHE_DIR, default
~/.cache/pi0_ros) and a stage interrupted half-way starts again (training
resumes from its last checkpoint), so a second `make demo` starts at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pi0_bringup.demo_recording import record_demonstrations
from pi0_bringup.demo_tasks import DEMO_IMAGE_SIZE, ScriptSettings
from pi0_client.options import DEFAULT_MODEL_TYPE, MODEL_TYPES
from pi0_model.train import latest_checkpoint, train
from pi0_model.train_config import TrainConfig
from pi0_ros.bag.to_dataset import ConvertConfig, convert, summary_table
from pi0_ros.core.robot_description import RobotDescription

# Bump when the pipeline's code changes what it produces, so cached stages are rebuilt.
DEMO_VERSION = 3  # 3: recorded, converted and trained by the suite's tools


@dataclass(frozen=True)
class DemoTraining:
    script: ScriptSettings = field(default_factory=ScriptSettings)
    image_size: tuple[int, int] = DEMO_IMAGE_SIZE  # (width, height) the cameras render
    camera_rate_hz: float = 15.0
    model_type: str = DEFAULT_MODEL_TYPE  # pi0_client.options.MODEL_TYPES
    steps: int = 600
    batch_size: int = 12
    peak_lr: float = 2e-3  # a tiny model from scratch learns at rates far above fine-tuning's 2.5e-5
    warmup_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, *self.image_size) < 1 or not self.camera_rate_hz > 0:
            raise ValueError(f"invalid demo training settings: {self}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got '{self.model_type}'")

    def train_config(self, dataset: Path, output: Path, description: RobotDescription) -> TrainConfig:
        """Cameras to the slots and adaptations of the description, as the policy node will read them."""
        return TrainConfig(
            dataset=str(dataset),
            output=str(output),
            tiny=self.model_type,
            cameras=tuple(f"{camera}={slot}" for camera, slot in description.camera_slots.items()),
            transforms=tuple(description.policy.transforms),
            steps=self.steps,
            batch_size=self.batch_size,
            warmup_steps=self.warmup_steps,
            peak_lr=self.peak_lr,
            decay_steps=self.steps,
            decay_lr=self.peak_lr / 10,
            # The simulator renders every view the same way (no lighting or camera changes to be robust to):
            # openpi's augmentations would cost a fifth of the demo's CPU time and protect against nothing.
            augment=False,
            seed=self.seed,
            save_every=max(1, self.steps // 4),  # an interrupted first run resumes from here
            log_every=25,
            num_workers=1,
        )


def cache_dir() -> Path:
    return Path(os.environ.get("PI0_CACHE_DIR", Path.home() / ".cache" / "pi0_ros"))


def pipeline_dir(description: RobotDescription, settings: DemoTraining, cache: Path | None = None) -> Path:
    """Where the stages of a robot's demo policy live; the name changes with anything that changes them."""
    assert description.source is not None
    key = hashlib.sha256(description.source.read_bytes() + repr((DEMO_VERSION, asdict(settings))).encode())
    name = f"{description.name}-{settings.model_type}-{key.hexdigest()[:12]}"
    return (cache or cache_dir()) / "demo_pipeline" / name


def demo_checkpoint(
    description: RobotDescription,
    settings: DemoTraining = DemoTraining(),
    report: Callable[[str], None] = print,
    cache: Path | None = None,
) -> Path:
    """The demo policy's checkpoint, built on first use (a few minutes on 2 CPU cores)."""
    directory = pipeline_dir(description, settings, cache)
    directory.mkdir(parents=True, exist_ok=True)
    bag, dataset, run = directory / "demonstrations", directory / "dataset", directory / "training"
    final = run / "checkpoints" / f"{settings.steps:08d}"
    if (final / "model.safetensors").is_file():
        return final
    report(f"building the demo {settings.model_type} policy for {description.name} in {directory}")
    if not bag.is_dir():
        _record(description, settings, bag, report)
    if not dataset.is_dir():
        _convert(description, bag, dataset, report)
    resume = latest_checkpoint(run) is not None
    report(
        f"3/3 training the tiny {settings.model_type} with pi0_model.train: {settings.steps} steps, batch "
        f"{settings.batch_size}" + (" (resuming)" if resume else "")
    )
    started = time.monotonic()
    config = settings.train_config(dataset, run, description)
    result = train(config.replace(resume=resume) if resume else config)
    losses = [loss for _, loss in result.losses]
    report(
        f"    trained in {time.monotonic() - started:.0f} s; final loss {losses[-1]:.4f}" if losses else "    trained"
    )
    assert result.checkpoint == final, (result.checkpoint, final)
    return final


def _record(description: RobotDescription, settings: DemoTraining, bag: Path, report: Callable[[str], None]) -> None:
    script = settings.script
    report(
        f"1/3 recording {script.episode_count} scripted demonstrations on the simulated robot "
        f"({script.duration_s:.0f} s, the suite's recorder)"
    )
    staging = bag.with_name(bag.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    record_demonstrations(
        description,
        staging,
        script,
        settings.image_size,
        settings.camera_rate_hz,
        report=lambda fraction: report(f"    {fraction:4.0%} recorded"),
    )
    staging.rename(bag)
    report(f"    recorded in {time.monotonic() - started:.0f} s: {bag}")


def _convert(description: RobotDescription, bag: Path, dataset: Path, report: Callable[[str], None]) -> None:
    report("2/3 converting the bag with bag_to_dataset (LeRobotDataset v3.0)")
    staging = dataset.with_name(dataset.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    conversion = convert(ConvertConfig((bag,), description, staging), progress_stream=sys.stderr)
    for line in summary_table(conversion)[-1:]:
        report(f"    {line}")
    skipped = [r for r in conversion.reports if not r.written]
    if skipped:
        reasons = "; ".join(f"{r.label}: {r.reason}" for r in skipped)
        raise RuntimeError(f"bag_to_dataset skipped demonstrations of the scripted operator: {reasons}")
    staging.rename(dataset)
