"""Settings of a fine-tuning run (`python -m pi0_model.train`): one frozen, validated dataclass and its CLI.

Defaults are openpi's recipe (`src/openpi/training/config.py` and `optimizer.py`):
AdamW (b1 0.9, b2 0.95, eps 1e-8, weight decay 1e-10), gradient norm clipped
to 1.0, learning rate warmed up linearly from peak / (warmup + 1) over 1000
steps to 2.5e-5 and cosine-decayed to 2.5e-6 at step 30 000, EMA of the
weights with decay 0.99, batch 32, 30 000 steps, seed 42, and image
augmentations in training. LoRA ranks are openpi's `gemma_2b_lora` (16) and
`gemma_300m_lora` (32) with alpha equal to the rank; openpi turns the EMA off
for its LoRA configs, which `--ema-decay 0` does here.

Every field is a flag: `--peak-lr 1e-4`, `--no-augment`, `--freeze vision projector`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pi0_client.options import MODEL_TYPES

from .config import CAMERA_SLOTS
from .errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bf16 autocast on CUDA, fp32 on CPU
DEVICES = ("auto", "cpu", "cuda")
LORA_TARGETS = ("none", "backbone", "expert", "both")  # which Gemma stacks get adapters
# Parts that `freeze` can name, as prefixes of Pi0Model parameter names.
FREEZABLE_PARTS: dict[str, tuple[str, ...]] = {
    "vision": ("paligemma_with_expert.paligemma.model.vision_tower.",),
    "projector": ("paligemma_with_expert.paligemma.model.multi_modal_projector.",),
    "backbone": ("paligemma_with_expert.paligemma.model.language_model.",),
    "expert": ("paligemma_with_expert.gemma_expert.",),
    "heads": (
        "state_proj.",
        "action_in_proj.",
        "action_out_proj.",
        "action_time_mlp_in.",
        "action_time_mlp_out.",
        "time_mlp_in.",
        "time_mlp_out.",
    ),
}
# Fields that may change when a run is resumed (they do not change what the steps compute).
RESUMABLE_CHANGES = ("steps", "resume", "save_every", "log_every", "num_workers", "progress")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str  # LeRobotDataset root (v2.1 or v3.0)
    output: str  # run directory: checkpoints/<step>/, train_log.jsonl, loss.png
    checkpoint: str | None = None  # starting checkpoint directory (policy layout); or from scratch with `tiny`
    tiny: str | None = None  # "pi0" or "pi05": start from a random Pi0Config.tiny(model type) instead
    tokenizer: str | None = None  # tokenizer file; default: the checkpoint's, or the tiny one with `tiny`
    norm_stats: str | None = None  # stats file; default: computed from the dataset (openpi's chunked stats)
    cameras: tuple[str, ...] = ()  # "camera=slot" pairs; default: the dataset's cameras in slot order
    transforms: tuple[str, ...] = ()  # robot adaptations as in RobotIO, e.g. ("aloha",)
    steps: int = 30_000  # train until this global step
    batch_size: int = 32  # global batch, split evenly over the processes
    warmup_steps: int = 1_000  # linear warmup of the learning rate from peak_lr / (warmup + 1)
    peak_lr: float = 2.5e-5  # learning rate at the end of the warmup
    decay_steps: int = 30_000  # cosine decay ends here (counted from step 0, warmup included)
    decay_lr: float = 2.5e-6  # learning rate at decay_steps and after
    adam_b1: float = 0.9  # AdamW beta1
    adam_b2: float = 0.95  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 1e-10  # AdamW (decoupled) weight decay
    clip_grad_norm: float = 1.0  # the gradients' global norm is clipped to this
    ema_decay: float = 0.99  # 0 = no EMA; with EMA the exported weights are the averaged ones
    augment: bool = True  # openpi's train-time image augmentations
    precision: str = "auto"  # PRECISIONS
    device: str = "auto"  # DEVICES
    gradient_checkpointing: bool = False  # recompute each layer in the backward pass: less memory, more time
    lora: str = "none"  # LORA_TARGETS
    lora_rank_backbone: int = 16  # LoRA rank of the Gemma 2B backbone (openpi's gemma_2b_lora)
    lora_rank_expert: int = 32  # LoRA rank of the action expert (openpi's gemma_300m_lora)
    freeze: tuple[str, ...] = ()  # FREEZABLE_PARTS frozen entirely (LoRA freezes its stacks' base weights itself)
    fsdp: bool = False  # under torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
    seed: int = 42  # model init (tiny), batch order, noise, augmentations
    save_every: int = 1_000  # steps between checkpoints (the last step is always saved)
    log_every: int = 10  # steps between log lines
    num_workers: int = 2  # data loader processes per training process
    resume: bool = False  # continue from the newest checkpoint in `output`
    progress: bool = True  # progress bar on stderr (rank 0)

    def __post_init__(self) -> None:
        for name in ("cameras", "transforms", "freeze"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"TrainConfig.{name} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if (self.checkpoint is None) == (self.tiny is None):
            raise ConfigError("TrainConfig needs exactly one of checkpoint (a directory) and tiny (a model type)")
        if self.tiny is not None and self.tiny not in MODEL_TYPES:
            raise ConfigError(f"TrainConfig.tiny must be one of {MODEL_TYPES}, got {self.tiny!r}")
        for name in ("steps", "batch_size", "decay_steps", "lora_rank_backbone", "lora_rank_expert"):
            _positive_int(self, name)
        for name in ("warmup_steps", "save_every", "log_every", "num_workers", "seed"):
            _positive_int(self, name, allow_zero=True)
        if self.warmup_steps >= self.decay_steps:
            raise ConfigError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be below decay_steps")
        for name in ("peak_lr", "adam_eps", "clip_grad_norm"):
            _finite(self, name, low=0.0, low_open=True)
        for name in ("decay_lr", "weight_decay"):
            _finite(self, name, low=0.0)
        for name in ("adam_b1", "adam_b2", "ema_decay"):
            _finite(self, name, low=0.0, high=1.0)
        for name, choices in (("precision", PRECISIONS), ("device", DEVICES), ("lora", LORA_TARGETS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"TrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        unknown = sorted(set(self.freeze) - set(FREEZABLE_PARTS))
        if unknown:
            raise ConfigError(f"TrainConfig.freeze: unknown parts {unknown}; known: {sorted(FREEZABLE_PARTS)}")
        if set(FREEZABLE_PARTS) <= set(self.freeze) and self.lora == "none":
            raise ConfigError("TrainConfig.freeze freezes every part and there is no LoRA: nothing would train")
        if self.fsdp and self.lora != "none":
            raise ConfigError("TrainConfig.fsdp is for full fine-tuning; LoRA runs are small enough for DDP")
        self.camera_map()  # validates the pairs

    def camera_map(self) -> dict[str, str]:
        """cameras as camera -> slot (empty: the dataset decides)."""
        mapping: dict[str, str] = {}
        for pair in self.cameras:
            camera, _, slot = pair.partition("=")
            if not camera or slot not in CAMERA_SLOTS or camera in mapping:
                raise ConfigError(
                    f"TrainConfig.cameras: {pair!r} must be 'camera=slot' with a slot in {CAMERA_SLOTS}, "
                    "each camera once"
                )
            mapping[camera] = slot
        return mapping

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _positive_int(config: TrainConfig, name: str, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"TrainConfig.{name} must be {kind} int, got {value!r}")


def _finite(config: TrainConfig, name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value < high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and < {high}")
        raise ConfigError(f"TrainConfig.{name} must be a finite number {bound}, got {value!r}")


# -- command line ---------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_comments() -> dict[str, str]:
    """Each TrainConfig field's trailing comment in the source, its one documentation; {} without the source."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for m in re.finditer(r"^    (\w+): [^\n#]*?  # (.*)$", source, re.MULTILINE)}


def argument_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field, typed from its annotation and explained by its comment; dataset and
    output are positional."""
    parser = argparse.ArgumentParser(
        prog="python -m pi0_model.train",
        description="Fine-tune pi0 / pi0.5 on a LeRobot dataset (openpi's recipe). Use torchrun for several GPUs.",
    )
    hints = typing.get_type_hints(TrainConfig)
    comments = field_comments()
    for field in dataclasses.fields(TrainConfig):
        hint = hints[field.name]
        text = comments.get(field.name, "").replace("%", "%%")
        if field.name in ("dataset", "output"):
            parser.add_argument(field.name, help=text)
            continue
        default = field.default
        text = f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        if hint is bool:
            parser.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, default=default, help=text)
        elif hint == tuple[str, ...]:
            parser.add_argument(_flag(field.name), nargs="*", default=default, metavar="VALUE", help=text)
        else:
            kind = next((t for t in (int, float, str) if hint is t or hint == t | None), str)
            parser.add_argument(_flag(field.name), type=kind, default=default, help=text)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    arguments = vars(argument_parser().parse_args(argv))
    arguments = {key: tuple(value) if isinstance(value, list) else value for key, value in arguments.items()}
    return TrainConfig(**arguments)
