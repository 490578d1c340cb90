"""The inference API used by the ROS runtime: raw observation in, unnormalized action chunk out.

    io = RobotIO(camera_slots={"cam_high": "base_0_rgb", ...}, state_dim=14, action_dim=14, transforms=("aloha",))
    policy = Pi0Policy.from_checkpoint("/ckpt", io, device="cuda", dtype="bfloat16")
    out = policy.infer(images={"cam_high": rgb}, state=joints, instruction="fold the towel")
    out.actions  # [horizon, action_dim] float64, robot units and order

Pipeline of one `infer` call (see transforms.py for the order of the robot
adaptations):

    preprocess   validate, map cameras to slots, tokenize, adapt + normalize + pad the state,
                 resize/pad/scale images on the model device
    prefix       SigLIP + PaliGemma over images and prompt, once, into a KV cache
    denoise      `num_steps` Euler steps of the action expert (optionally RTC-guided)
    postprocess  crop to the robot's action dims, unnormalize, undo the adaptations

`infer` is meant to be called from one worker thread; it sets no global torch
state and runs under `torch.inference_mode` (RTC needs gradients through the
expert, so RTC calls run under `no_grad` with a local `enable_grad`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pi0_client.interface import Inference, InferenceTiming, RtcGuidance
from pi0_client.options import COMPILE_MODES, DEFAULT_MODEL_TYPE, DTYPE_NAMES

from .checkpoint import load_model, read_config
from .config import Pi0Config
from .errors import CheckpointError, ConfigError, Pi0Error, Pi0InputError
from .flow_matching import PrefixGuidance, cached_velocity, euler_denoise, rtc_weights
from .images import images_by_slot, prepare_images, validate_camera_slots
from .model import KVCache, ModelInputs, Pi0Model, build_model, initialize_weights_
from .normalization import NORM_MODES, Normalization, find_normalization, load_normalization
from .tokenizer import (
    PromptTokenizer,
    TokenizedPrompt,
    find_tokenizer,
    load_tokenizer,
    model_prompt,
    tiny_tokenizer,
)
from .trained_io import check_trained_io
from .transforms import RobotTransform, TransformPipeline, pad_to

logger = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # DTYPE_NAMES as torch dtypes


@dataclass(frozen=True)
class RobotIO:
    """How a robot talks to pi0: its cameras, vector sizes, adaptations and stats."""

    camera_slots: Mapping[
        str, str
    ]  # robot camera name -> pi0 slot ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    state_dim: int  # length of the robot state vector
    action_dim: int  # length of one robot action
    transforms: Sequence[
        str | RobotTransform
    ] = ()  # adaptations in order, e.g. ("aloha",) or ("aloha", "delta:6,-1,6,-1")
    norm_stats_path: str | None = None  # stats file; None = look inside the checkpoint
    norm_mode: str | None = None  # "mean_std" or "quantile"; None = the model's (pi0: mean_std, pi0.5: quantile)
    state_names: Sequence[str] = ()  # one per state dimension, in order; () = not known
    action_names: Sequence[str] = ()  # one per action dimension, in order; () = not known

    def __post_init__(self) -> None:
        if not isinstance(self.camera_slots, Mapping):
            raise ConfigError(f"camera_slots must be a mapping, got {type(self.camera_slots).__name__}")
        object.__setattr__(self, "camera_slots", dict(self.camera_slots))
        validate_camera_slots(self.camera_slots)
        for name in ("state_dim", "action_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RobotIO.{name} must be a positive int, got {value!r}")
        if isinstance(self.transforms, str):
            raise ConfigError(f"RobotIO.transforms must be a sequence of names, got the string {self.transforms!r}")
        object.__setattr__(self, "transforms", tuple(self.transforms))
        TransformPipeline.parse(self.transforms).check_dims(self.state_dim, self.action_dim)
        if self.norm_mode is not None and self.norm_mode not in NORM_MODES:
            raise ConfigError(f"RobotIO.norm_mode must be None or one of {NORM_MODES}, got {self.norm_mode!r}")
        for label, dim in (("state", self.state_dim), ("action", self.action_dim)):
            names = getattr(self, f"{label}_names")
            if isinstance(names, str) or (names and len(names) != dim):
                raise ConfigError(f"RobotIO.{label}_names must be () or {dim} names, got {names!r}")
            object.__setattr__(self, f"{label}_names", tuple(names))


@dataclass(frozen=True)
class _Request:
    """One observation after host-side preprocessing."""

    slot_images: dict[str, np.ndarray]  # pi0 slot -> uint8 [H, W, 3]
    prompt: TokenizedPrompt
    stages: list[np.ndarray]  # the state entering each robot transform, then the model-space state
    model_state: np.ndarray  # [config.state_dim] normalized and padded
    guidance: PrefixGuidance | None


def _torch_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"supported devices are cpu and cuda, got {device}")
    return device


def _in_mode(normalization: Normalization, io: RobotIO, config: Pi0Config) -> Normalization:
    """The stats in the robot's normalization mode if it sets one, else in the model's (openpi's choice)."""
    return normalization.with_mode(io.norm_mode or config.norm_mode)


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"supported dtypes are {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


class Pi0Policy:
    """A pi0 or pi0.5 model with its tokenizer, normalization and robot adaptations."""

    def __init__(
        self,
        model: Pi0Model,
        tokenizer: PromptTokenizer,
        io: RobotIO,
        normalization: Normalization,
        num_steps: int | None = None,
        seed: int = 0,
        compile_mode: str | None = None,
    ):
        config = model.config
        if io.state_dim > config.state_dim or io.action_dim > config.action_dim:
            raise ConfigError(
                f"robot state/action dims ({io.state_dim}, {io.action_dim}) exceed the model's "
                f"({config.state_dim}, {config.action_dim})"
            )
        if tokenizer.vocab_size > config.vocab_size or tokenizer.max_len != config.max_token_len:
            raise ConfigError(
                f"{tokenizer} does not fit the model (vocab {config.vocab_size}, {config.max_token_len} prompt tokens)"
            )
        self.num_steps = config.num_steps if num_steps is None else num_steps
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"num_steps must be a positive int, got {self.num_steps!r}")
        self.io = io
        self.tokenizer = tokenizer
        self.normalization = normalization.for_robot(io.state_dim, io.action_dim)
        self._pipeline = TransformPipeline.parse(io.transforms)
        self.model = model.eval().requires_grad_(False)
        self._generator = torch.Generator(device=model.device).manual_seed(seed)
        self._warned_prompts: set[str] = set()
        self._encode: Callable[[ModelInputs], KVCache] = self._encode_prefix
        self._velocity = model.velocity
        self._compile_mode = compile_mode
        if compile_mode is not None:
            if compile_mode not in COMPILE_MODES:
                raise ConfigError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
            self._encode = torch.compile(self._encode_prefix, mode=compile_mode, dynamic=False)
            self._velocity = torch.compile(model.velocity, mode=compile_mode, dynamic=False)

    # -- construction -----------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        io: RobotIO,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        num_steps: int | None = None,
        tokenizer_path: str | Path | None = None,
        compile_mode: str | None = None,
        seed: int = 0,
    ) -> Pi0Policy:
        """Load a LeRobot / openpi PyTorch checkpoint directory (see checkpoint.py); pi0 or pi0.5, as it says.

        Stats come from `io.norm_stats_path` or the checkpoint, applied in
        `io.norm_mode` or else the model's mode; the tokenizer from
        `tokenizer_path` or `<path>/tokenizer*`. Both are checked before the
        weights are read, so a missing file fails fast.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist")
        device, torch_dtype = _torch_device(device), _torch_dtype(dtype)
        config = read_config(path)
        directory = path if path.is_dir() else path.parent  # a weights file names its directory
        check_trained_io(directory, io)
        stats_path = io.norm_stats_path or find_normalization(directory)
        normalization = _in_mode(load_normalization(stats_path), io, config).for_robot(io.state_dim, io.action_dim)
        tokenizer_file = tokenizer_path or find_tokenizer(directory)
        tokenizer = load_tokenizer(tokenizer_file, max_len=config.max_token_len)
        model = load_model(path, device, torch_dtype)
        return cls(model, tokenizer, io, normalization, num_steps, seed, compile_mode)

    @classmethod
    def random_init(
        cls,
        io: RobotIO,
        config: Pi0Config,
        normalization: Normalization | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        num_steps: int | None = None,
        compile_mode: str | None = None,
    ) -> Pi0Policy:
        """A randomly initialized model of any size with the in-memory tiny tokenizer (demos, benchmarks).

        Stats: `normalization` (identity if None), in `io.norm_mode` or else the model's mode.
        """
        device, torch_dtype = _torch_device(device), _torch_dtype(dtype)
        model = build_model(config, device, torch_dtype)
        initialize_weights_(model, torch.Generator(device=device).manual_seed(seed))
        tokenizer = tiny_tokenizer(max_len=config.max_token_len, vocab_size=min(512, config.vocab_size))
        normalization = _in_mode(normalization or Normalization.identity(io.state_dim, io.action_dim), io, config)
        return cls(model.eval(), tokenizer, io, normalization, num_steps, seed, compile_mode)

    @classmethod
    def tiny(
        cls,
        io: RobotIO,
        normalization: Normalization | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        num_steps: int | None = None,
        model_type: str = DEFAULT_MODEL_TYPE,
    ) -> Pi0Policy:
        """Random-init tiny pi0 or pi0.5 (`Pi0Config.tiny(model_type)`), fp32; identity stats unless given."""
        return cls.random_init(io, Pi0Config.tiny(model_type), normalization, seed, device, "float32", num_steps)

    # -- properties ---------------------------------------------------------------

    @property
    def config(self) -> Pi0Config:
        return self.model.config

    @property
    def horizon(self) -> int:
        return self.config.action_horizon

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.compute_dtype

    # -- inference --------------------------------------------------------------

    def infer(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        noise: np.ndarray | None = None,
        rtc: RtcGuidance | None = None,
    ) -> Inference:
        """One action chunk for one observation. Bad inputs raise `Pi0InputError`."""
        start = time.perf_counter()
        request = self._prepare(images, state, instruction, rtc)
        with torch.inference_mode() if request.guidance is None else torch.no_grad():
            inputs = self._model_inputs(request)
            noise_tensor = self._noise(noise)
            if self._compile_mode is not None:
                # The previous call's CUDA-graph outputs (KV cache, velocities) are dead now.
                torch.compiler.cudagraph_mark_step_begin()
            preprocessed = self._sync()
            cache = self._encode(inputs)
            encoded = self._sync()
            velocity = cached_velocity(self.model, cache, inputs.state, self._velocity)
            chunk = euler_denoise(velocity, noise_tensor, self.num_steps, request.guidance)
            denoised = self._sync()
            model_actions = chunk[0, :, : self.io.action_dim].to(torch.float64).cpu().numpy()
        actions = self._robot_actions(model_actions, request.stages, rtc)
        end = time.perf_counter()
        timing = InferenceTiming(
            preprocess_ms=(preprocessed - start) * 1e3,
            prefix_ms=(encoded - preprocessed) * 1e3,
            denoise_ms=(denoised - encoded) * 1e3,
            postprocess_ms=(end - denoised) * 1e3,
            total_ms=(end - start) * 1e3,
        )
        frozen = 0 if rtc is None else int(rtc.frozen_steps)
        return Inference(actions=actions, timing=timing, frozen_steps=frozen, prompt_truncated=request.prompt.truncated)

    def _prepare(
        self, images: Mapping[str, np.ndarray], state: np.ndarray, instruction: str, rtc: RtcGuidance | None
    ) -> _Request:
        """Host-side preprocessing: validate, map cameras, tokenize, adapt and normalize the state."""
        slot_images = images_by_slot(images, self.io.camera_slots)
        stages = self._pipeline.adapt_state(self._check_state(state))
        normalized_state = self.normalization.normalize_state(stages[-1])
        prompt = model_prompt(self.tokenizer, self.config, instruction, normalized_state)
        if prompt.truncated and instruction not in self._warned_prompts:
            self._warned_prompts.add(instruction)
            logger.warning("prompt longer than %d tokens was truncated: %r", self.config.max_token_len, instruction)
        model_state = pad_to(normalized_state, self.config.state_dim)
        guidance = None if rtc is None else self._guidance(rtc, stages)
        return _Request(slot_images, prompt, stages, model_state, guidance)

    def _model_inputs(self, request: _Request) -> ModelInputs:
        """Device-side preprocessing: resize and scale the images, move everything to the model."""
        pixels, image_masks = prepare_images(
            request.slot_images, self.io.camera_slots.values(), self.config.vision.image_size, self.device
        )
        return ModelInputs(
            images=pixels,
            image_masks=image_masks,
            tokens=torch.from_numpy(request.prompt.ids)[None].to(self.device),
            token_mask=torch.from_numpy(request.prompt.mask)[None].to(self.device),
            state=torch.from_numpy(request.model_state).to(self.device, torch.float32)[None],
        )

    def _robot_actions(
        self, model_actions: np.ndarray, stages: list[np.ndarray], rtc: RtcGuidance | None
    ) -> np.ndarray:
        """Unnormalize and undo the robot adaptations; frozen RTC rows are copied bit-exactly."""
        actions = self._pipeline.actions_out(self.normalization.unnormalize_actions(model_actions), stages)
        if rtc is not None:
            actions[: rtc.frozen_steps] = np.asarray(rtc.previous_actions, dtype=np.float64)[: rtc.frozen_steps]
        if not np.all(np.isfinite(actions)):
            raise Pi0Error("the model produced non-finite actions (corrupt weights or stats?)")
        return actions

    def _encode_prefix(self, inputs: ModelInputs) -> KVCache:
        return self.model.encode_prefix(self.model.embed_prefix(inputs))

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _check_state(self, state: np.ndarray) -> np.ndarray:
        try:
            vector = np.asarray(state, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise Pi0InputError(f"state must be a numeric vector: {error}") from error
        if vector.shape != (self.io.state_dim,):
            raise Pi0InputError(f"state must have shape [{self.io.state_dim}], got {list(vector.shape)}")
        if not np.all(np.isfinite(vector)):
            raise Pi0InputError(f"state contains NaN or inf at index {np.flatnonzero(~np.isfinite(vector)).tolist()}")
        return vector.copy()

    def _noise(self, noise: np.ndarray | None) -> torch.Tensor:
        shape = (self.horizon, self.config.action_dim)
        if noise is None:
            return torch.randn((1, *shape), generator=self._generator, device=self.device, dtype=torch.float32)
        array = np.asarray(noise)
        if array.shape != shape or not np.issubdtype(array.dtype, np.number):
            raise Pi0InputError(
                f"noise must be a numeric array of shape {list(shape)}, got {array.dtype} {list(array.shape)}"
            )
        if not np.all(np.isfinite(array)):
            raise Pi0InputError("noise contains NaN or inf")
        return torch.from_numpy(array.astype(np.float32))[None].to(self.device)

    def _guidance(self, rtc: RtcGuidance, stages: list[np.ndarray]) -> PrefixGuidance:
        """Move the previous chunk into model space and build the soft mask."""
        try:
            previous = np.asarray(rtc.previous_actions, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise Pi0InputError(f"RtcGuidance.previous_actions must be numeric: {error}") from error
        if previous.ndim != 2 or previous.shape[1] != self.io.action_dim or not 1 <= previous.shape[0] <= self.horizon:
            raise Pi0InputError(
                f"RtcGuidance.previous_actions must have shape [1..{self.horizon}, {self.io.action_dim}], "
                f"got {list(previous.shape)}"
            )
        if not np.all(np.isfinite(previous)):
            raise Pi0InputError("RtcGuidance.previous_actions contains NaN or inf")
        overlap = previous.shape[0]
        if rtc.frozen_steps > overlap:
            raise Pi0InputError(
                f"RtcGuidance.frozen_steps ({rtc.frozen_steps}) exceeds the previous chunk's {overlap} rows"
            )
        model_space = self.normalization.normalize_actions(self._pipeline.actions_in(previous, stages))
        target = np.zeros((self.horizon, self.config.action_dim))
        target[:overlap] = pad_to(model_space, self.config.action_dim)
        rows = rtc_weights(self.horizon, int(rtc.frozen_steps), overlap, rtc.schedule)
        real_dims = (torch.arange(self.config.action_dim) < self.io.action_dim).to(torch.float32)
        weights = rows[:, None] * real_dims[None, :]  # padded dims are never guided
        return PrefixGuidance(
            target=torch.from_numpy(target).to(self.device, torch.float32)[None],
            weights=weights.to(self.device)[None],
            frozen_steps=int(rtc.frozen_steps),
            max_guidance_weight=float(rtc.max_guidance_weight),
        )
