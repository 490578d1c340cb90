"""Model configuration: the real pi0 and pi0.5 sizes and tiny variants, as validating dataclasses.

Sizes follow the pi0 paper (arXiv 2410.24164) and openpi `models/gemma.py`:
PaliGemma 3B (SigLIP So400m/14 + Gemma 2B) plus the "gemma_300m" action expert.
pi0.5 (openpi `models/pi0_config.py` with `pi05=True`) has the same sizes; it
differs in how the state and the flow time enter the network (`model.py`), in
its prompt (200 tokens, the state written into it: `tokenizer.py`) and in its
normalization (quantiles instead of mean/std).
Every dataclass checks its values on construction and raises `ConfigError`
with the offending field, so a bad YAML or config.json fails at load time
instead of as a shape error deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pi0_client.options import DEFAULT_MODEL_TYPE, MODEL_TYPES

from .errors import ConfigError

# The three image slots pi0 was trained with, in prefix order.
CAMERA_SLOTS: tuple[str, ...] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_positive_floats(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
            f"{type(obj).__name__}.{name} must be a positive finite number, got {value!r}",
        )


def _require_positive_ints(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"{type(obj).__name__}.{name} must be a positive int, got {value!r}",
        )


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma decoder stack: the PaliGemma language model or the action expert."""

    width: int  # hidden size of the residual stream
    depth: int  # number of decoder layers
    mlp_dim: int  # hidden size of the gated GeLU MLP
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (1 = multi-query attention, as in Gemma 2B)
    head_dim: int  # size of one attention head

    def __post_init__(self) -> None:
        _require_positive_ints(self, ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim"))
        _require(
            self.num_heads % self.num_kv_heads == 0,
            f"GemmaConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})",
        )
        _require(self.head_dim % 2 == 0, f"GemmaConfig.head_dim must be even for RoPE, got {self.head_dim}")


@dataclass(frozen=True)
class VisionConfig:
    """The SigLIP vision tower (no pooling head)."""

    width: int = 1152  # hidden size
    depth: int = 27  # encoder layers
    mlp_dim: int = 4304  # MLP hidden size
    num_heads: int = 16  # attention heads
    patch_size: int = 14  # square patch side in pixels
    image_size: int = 224  # square input side in pixels; images are resized and padded to it
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon

    def __post_init__(self) -> None:
        _require_positive_ints(self, ("width", "depth", "mlp_dim", "num_heads", "patch_size", "image_size"))
        _require(
            self.width % self.num_heads == 0,
            f"VisionConfig.width ({self.width}) must divide by num_heads ({self.num_heads})",
        )
        _require(
            self.image_size % self.patch_size == 0,
            f"VisionConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})",
        )
        _require_positive_floats(self, ("layer_norm_eps",))

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)

# openpi / LeRobot name the stacks by variant; the LoRA variants have the same shapes.
GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": GEMMA_2B,
    "gemma_2b_lora": GEMMA_2B,
    "gemma_300m": GEMMA_300M,
    "gemma_300m_lora": GEMMA_300M,
}


# What pi0.5 changes in a pi0 config of the same size (openpi `Pi0Config.__post_init__` with pi05=True).
_PI05_CHANGES: dict[str, Any] = {"model_type": "pi05", "max_token_len": 200, "discrete_state_input": True}


def gemma_variant(name: str) -> GemmaConfig:
    """The stack sizes for an openpi/LeRobot variant name such as "gemma_2b"."""
    if name not in GEMMA_VARIANTS:
        raise ConfigError(f"unknown Gemma variant {name!r}; known: {sorted(GEMMA_VARIANTS)}")
    return GEMMA_VARIANTS[name]


@dataclass(frozen=True)
class Pi0Config:
    """Everything that fixes the shapes and the numerics of a pi0 or pi0.5 model."""

    model_type: str = DEFAULT_MODEL_TYPE  # "pi0" or "pi05" (options.MODEL_TYPES)
    vision: VisionConfig = field(default_factory=VisionConfig)  # SigLIP tower
    llm: GemmaConfig = GEMMA_2B  # PaliGemma language model (the "prefix" expert)
    expert: GemmaConfig = GEMMA_300M  # action expert (the "suffix" expert)
    vocab_size: int = 257_152  # PaliGemma vocabulary (Gemma 256k + 1024 location + 128 segmentation tokens)
    max_token_len: int = 48  # prompt tokens, padded or truncated to this length
    state_dim: int = 32  # model state width; robot states are zero-padded to it
    action_dim: int = 32  # model action width; robot actions are zero-padded to it
    action_horizon: int = 50  # actions per chunk
    num_steps: int = 10  # default Euler steps at inference
    rope_theta: float = 10_000.0  # RoPE base
    rms_norm_eps: float = 1e-6  # Gemma RMSNorm epsilon
    time_min_period: float = 4e-3  # shortest period of the sinusoidal time embedding
    time_max_period: float = 4.0  # longest period of the sinusoidal time embedding
    # pi0.5 only: the normalized state is discretized into the prompt. Without it (openpi's pi05_libero)
    # the model never sees the state; pi0 always feeds it as a suffix token instead.
    discrete_state_input: bool = False

    def __post_init__(self) -> None:
        _require(
            self.model_type in MODEL_TYPES,
            f"Pi0Config.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}",
        )
        _require(
            isinstance(self.discrete_state_input, bool),
            f"Pi0Config.discrete_state_input must be a bool, got {self.discrete_state_input!r}",
        )
        _require(
            self.is_pi05 or not self.discrete_state_input,
            "Pi0Config.discrete_state_input is a pi0.5 option: pi0 feeds the state as a suffix token",
        )
        _require(isinstance(self.vision, VisionConfig), "Pi0Config.vision must be a VisionConfig")
        _require(isinstance(self.llm, GemmaConfig), "Pi0Config.llm must be a GemmaConfig")
        _require(isinstance(self.expert, GemmaConfig), "Pi0Config.expert must be a GemmaConfig")
        _require_positive_ints(
            self, ("vocab_size", "max_token_len", "state_dim", "action_dim", "action_horizon", "num_steps")
        )
        # The two stacks attend jointly, layer by layer, over one concatenated
        # sequence: they must agree on depth and on the attention geometry.
        for name in ("depth", "num_heads", "num_kv_heads", "head_dim"):
            _require(
                getattr(self.llm, name) == getattr(self.expert, name),
                f"Pi0Config: llm.{name} ({getattr(self.llm, name)}) must equal expert.{name} "
                f"({getattr(self.expert, name)}) for joint attention",
            )
        _require(self.expert.width % 2 == 0, "Pi0Config: expert.width must be even (sin/cos time embedding)")
        _require(
            self.max_token_len >= 2, f"Pi0Config.max_token_len must be >= 2 (BOS and text), got {self.max_token_len}"
        )
        _require_positive_floats(self, ("rope_theta", "rms_norm_eps", "time_min_period", "time_max_period"))
        _require(
            0 < self.time_min_period < self.time_max_period,
            "Pi0Config needs 0 < time_min_period < time_max_period, "
            f"got {self.time_min_period}, {self.time_max_period}",
        )

    @classmethod
    def published(cls, model_type: str = DEFAULT_MODEL_TYPE) -> Pi0Config:
        """The published pi0 or pi0.5: PaliGemma 3B + gemma_300m expert, about 3.3B parameters."""
        return cls()._of_type(model_type)

    @classmethod
    def pi0(cls) -> Pi0Config:
        return cls.published("pi0")

    @classmethod
    def pi05(cls) -> Pi0Config:
        return cls.published("pi05")

    @classmethod
    def tiny(cls, model_type: str = DEFAULT_MODEL_TYPE) -> Pi0Config:
        """A few-hundred-thousand-parameter model with the real interfaces (224 px, 48 or 200 tokens, 50x32 chunks).

        Used by the tests and the CPU demo: random weights, same code paths.
        """
        return cls(
            # 28 px patches: 64 tokens per 224 px image keep the CPU demo fast.
            vision=VisionConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=28, image_size=224),
            llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16),
            # Wider than the 32 padded action dims: at width 32 the noise had to share a 32-wide residual
            # stream with the context and a quarter of it leaked into trained chunks (docs/demo.md).
            expert=GemmaConfig(width=128, depth=2, mlp_dim=256, num_heads=2, num_kv_heads=1, head_dim=16),
            vocab_size=512,
        )._of_type(model_type)

    def _of_type(self, model_type: str) -> Pi0Config:
        """This pi0 config as `model_type`: pi0.5 takes its own defaults on top of the same sizes."""
        _require(model_type in MODEL_TYPES, f"model type must be one of {MODEL_TYPES}, got {model_type!r}")
        return self if model_type == "pi0" else self.replace(**_PI05_CHANGES)

    @property
    def is_pi05(self) -> bool:
        return self.model_type == "pi05"

    @property
    def norm_mode(self) -> str:
        """How the model's state and actions are normalized (openpi: quantiles for every model but pi0)."""
        return "quantile" if self.is_pi05 else "mean_std"

    @property
    def prefix_len(self) -> int:
        """Prefix tokens with every camera slot present."""
        return len(CAMERA_SLOTS) * self.vision.tokens_per_image + self.max_token_len

    @property
    def suffix_len(self) -> int:
        """One token per action, after pi0's state token (pi0.5 has the state in the prefix, if anywhere)."""
        return self.action_horizon + (0 if self.is_pi05 else 1)

    def replace(self, **changes: Any) -> Pi0Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pi0Config:
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass silently."""
        if not isinstance(data, dict):
            raise ConfigError(f"Pi0Config.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown Pi0Config fields: {unknown}")
        values = dict(data)
        try:
            if "vision" in values:
                values["vision"] = VisionConfig(**values["vision"])
            for name in ("llm", "expert"):
                if name in values:
                    values[name] = GemmaConfig(**values[name])
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"malformed Pi0Config: {error}") from error
