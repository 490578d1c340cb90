"""Which pi0 the policy node runs in its own process, and how: settings without the ML stack."""

from __future__ import annotations

from dataclasses import dataclass

from pi0_client.options import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_MODEL_TYPE,
    MODEL_TYPES,
    check_device,
    check_dtype,
    compile_mode_or_none,
)


@dataclass(frozen=True)
class ModelSettings:
    checkpoint: str = ""  # checkpoint directory; "" builds the random-init tiny model
    model_type: str = DEFAULT_MODEL_TYPE  # the tiny model's type (MODEL_TYPES); a checkpoint decides its own
    device: str = DEFAULT_DEVICE  # "cpu", "cuda" or "cuda:N"
    dtype: str = DEFAULT_DTYPE  # one of pi0_client.options.DTYPE_NAMES
    num_steps: int | None = None  # denoising steps; None keeps the checkpoint's
    tokenizer_path: str | None = None  # None looks inside the checkpoint
    norm_stats_path: str | None = None  # None uses the description's, then the checkpoint's
    seed: int = 0  # tiny-model weights and sampling noise
    compile_mode: str | None = None  # one of pi0_client.options.COMPILE_MODES, None for eager

    def __post_init__(self) -> None:
        check_device(self.device)
        check_dtype(self.dtype)
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got '{self.model_type}'")
        if self.compile_mode is not None:
            compile_mode_or_none(self.compile_mode)
