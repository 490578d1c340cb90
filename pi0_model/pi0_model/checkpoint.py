"""Checkpoint directories in the LeRobot / openpi PyTorch layout, pi0 or pi0.5.

    <dir>/model.safetensors   weights, keys as in `Pi0Model.state_dict()` except:
                              - the token embedding, tied to PaliGemma's LM head, is stored once
                                as `paligemma_with_expert.paligemma.lm_head.weight`;
                              - the action expert's LM head (never used) is stored as
                                `paligemma_with_expert.gemma_expert.lm_head.weight`;
                              LeRobot prefixes every key with "model."; both spellings load.
                              777 tensors for the real pi0. pi0.5 (812 tensors) has `time_mlp_in/out`
                              instead of `state_proj` and `action_time_mlp_in/out`, and each expert
                              norm (`...gemma_expert.model.layers.N.{input,post_attention}_layernorm`,
                              `...gemma_expert.model.norm`) is a `dense` layer ([3 x 1024, 1024] + bias)
                              instead of a `weight`.
    <dir>/config.json         openpi ("action_horizon", "paligemma_variant", ...) or LeRobot
                              ("type": "pi0" / "pi05", "chunk_size", ...) fields; files written here
                              also carry the exact `Pi0Config` under "pi0_model". openpi's converter
                              does not record the model type: a config that does not state it is
                              completed from the weights (`time_mlp_in` present = pi0.5).
    <dir>/norm_stats.json     see `normalization.py` (also assets/*/norm_stats.json, LeRobot's file)

Only safetensors are read: pickled checkpoints (.bin/.pt/.pth/.ckpt) can run
arbitrary code when loaded and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pi0_client.options import DEFAULT_MODEL_TYPE, MODEL_TYPES

from .config import GEMMA_VARIANTS, GemmaConfig, Pi0Config, VisionConfig, gemma_variant
from .errors import CheckpointError, ConfigError
from .model import Pi0Model, build_model
from .normalization import Normalization

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
NORM_STATS_FILE = "norm_stats.json"

EMBEDDING_KEY = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
TIED_EMBEDDING_KEY = "paligemma_with_expert.paligemma.lm_head.weight"
UNUSED_EXPERT_HEAD_KEY = "paligemma_with_expert.gemma_expert.lm_head.weight"
PI05_MARKER_KEY = "time_mlp_in.weight"  # only pi0.5 has it
LEROBOT_PREFIX = "model."
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_LISTED_KEYS = 12


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    return shown + (f", ... ({len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else "")


# -- config ------------------------------------------------------------------


def _variant_name(stack: GemmaConfig) -> str | None:
    return next((name for name, known in GEMMA_VARIANTS.items() if known == stack and "lora" not in name), None)


def config_to_json(config: Pi0Config) -> dict[str, Any]:
    """Our exact config plus the openpi/LeRobot fields other tools read."""
    return {
        "type": config.model_type,
        "pi05": config.is_pi05,
        "discrete_state_input": config.discrete_state_input,
        "paligemma_variant": _variant_name(config.llm),
        "action_expert_variant": _variant_name(config.expert),
        "action_horizon": config.action_horizon,
        "action_dim": config.action_dim,
        "chunk_size": config.action_horizon,
        "max_state_dim": config.state_dim,
        "max_action_dim": config.action_dim,
        "num_inference_steps": config.num_steps,
        "tokenizer_max_length": config.max_token_len,
        "pi0_model": config.to_dict(),
    }


def stated_model_type(data: dict[str, Any], source: str = "config.json") -> str | None:
    """The model type openpi / LeRobot fields state ("pi05": bool, "type"), or None where they are silent."""
    if data.get("pi05") is not None:
        return "pi05" if data["pi05"] else "pi0"
    kind = data.get("type")
    if kind is not None and kind not in MODEL_TYPES:
        raise CheckpointError(f"{source} describes a {kind!r} policy; supported: {', '.join(MODEL_TYPES)}")
    return kind


def config_from_json(data: dict[str, Any], source: str = "config.json", model_type: str | None = None) -> Pi0Config:
    """Read our config, or derive it from openpi / LeRobot fields on top of the published model's defaults.

    The model is the type the fields state, else `model_type`, else pi0.
    """
    try:
        if "pi0_model" in data:
            return Pi0Config.from_dict(data["pi0_model"])
        base = Pi0Config.published(stated_model_type(data, source) or model_type or DEFAULT_MODEL_TYPE)
        changes: dict[str, Any] = {}
        if "paligemma_variant" in data:
            changes["llm"] = gemma_variant(data["paligemma_variant"])
        if "action_expert_variant" in data:
            changes["expert"] = gemma_variant(data["action_expert_variant"])
        for field, keys in {
            "action_horizon": ("action_horizon", "chunk_size"),
            "action_dim": ("max_action_dim", "action_dim"),
            "state_dim": ("max_state_dim", "action_dim"),
            "num_steps": ("num_inference_steps",),
            "max_token_len": ("tokenizer_max_length", "max_token_len"),
            "discrete_state_input": ("discrete_state_input",),
        }.items():
            value = next((data[key] for key in keys if data.get(key) is not None), None)
            if value is not None:
                changes[field] = value
        resolution = data.get("image_resolution")
        if resolution is not None:
            if len(resolution) != 2 or resolution[0] != resolution[1]:
                raise CheckpointError(f"{source}: image_resolution must be square, got {resolution}")
            changes["vision"] = VisionConfig(image_size=int(resolution[0]))
        return base.replace(**changes)
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from error


def read_config(checkpoint: Path) -> Pi0Config:
    """config.json of a checkpoint (directory or weights file); what it does not say is the published model.

    Without a config.json, or with one that does not state the model type (openpi's converter),
    the type is read off the weights' key names.
    """
    path = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / CONFIG_FILE
    data: Any = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read {path}: {error}") from error
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} must hold a JSON object")
    silent = "pi0_model" not in data and stated_model_type(data, str(path)) is None
    return config_from_json(data, str(path), weights_model_type(checkpoint) if silent else None)


def weights_model_type(checkpoint: Path) -> str:
    """The model type of the weights: pi0.5 if they have its time MLP, else pi0 (reads only the headers)."""
    return "pi05" if PI05_MARKER_KEY in {_model_key(key) for key in weight_files(checkpoint)} else "pi0"


# -- weights -----------------------------------------------------------------


def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(
        f"{path} is a pickled checkpoint; pickles can execute code when loaded, so only safetensors are accepted. "
        "Convert it once in a trusted environment (safetensors.torch.save_file) and load the model.safetensors"
    )


def weight_files(checkpoint: Path) -> dict[str, Path]:
    """Checkpoint key -> safetensors file holding it (one file, or shards listed in an index)."""
    if checkpoint.is_file():
        if checkpoint.suffix in _PICKLE_SUFFIXES:
            _refuse_pickle(checkpoint)
        if checkpoint.suffix != ".safetensors":
            raise CheckpointError(f"{checkpoint} is not a .safetensors file or a checkpoint directory")
        return {key: checkpoint for key in _keys_of(checkpoint)}
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    if (checkpoint / WEIGHTS_FILE).is_file():
        single = checkpoint / WEIGHTS_FILE
        return {key: single for key in _keys_of(single)}
    if (checkpoint / WEIGHTS_INDEX_FILE).is_file():
        try:
            weight_map = json.loads((checkpoint / WEIGHTS_INDEX_FILE).read_text())["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"malformed {checkpoint / WEIGHTS_INDEX_FILE}: {error}") from error
        return _shards(checkpoint, weight_map)
    pickles = sorted(p for p in checkpoint.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(pickles[0])
    raise CheckpointError(f"no {WEIGHTS_FILE} in {checkpoint}")


def _shards(checkpoint: Path, weight_map: dict) -> dict[str, Path]:
    """The index's key -> shard map, every shard a safetensors file that exists."""
    files = {key: checkpoint / str(name) for key, name in weight_map.items()}
    for shard in sorted(set(files.values())):
        if shard.suffix in _PICKLE_SUFFIXES:
            _refuse_pickle(shard)
        if shard.suffix != ".safetensors":
            raise CheckpointError(f"{checkpoint / WEIGHTS_INDEX_FILE} lists {shard.name}, not a .safetensors file")
        if not shard.is_file():
            raise CheckpointError(f"{checkpoint / WEIGHTS_INDEX_FILE} lists {shard.name}, which does not exist")
    return files


def _keys_of(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return list(file.keys())
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); pickled checkpoints are refused"
        ) from error


def _model_key(file_key: str) -> str:
    """A file key without LeRobot's "model." prefix."""
    return file_key[len(LEROBOT_PREFIX) :] if file_key.startswith(LEROBOT_PREFIX) else file_key


def _select_keys(file_keys: list[str]) -> dict[str, str]:
    """Model key -> file key, resolving the LeRobot prefix, the tied embedding and the unused expert head."""
    chosen: dict[str, str] = {}
    for file_key in file_keys:
        key = _model_key(file_key)
        if key == UNUSED_EXPERT_HEAD_KEY:
            continue
        if key == TIED_EMBEDDING_KEY:
            # Some files store the tied tensor under both names; the embedding's own name wins.
            chosen.setdefault(EMBEDDING_KEY, file_key)
            continue
        chosen[key] = file_key
    return chosen


@torch.no_grad()
def load_weights(model: Pi0Model, checkpoint: Path) -> None:
    """Copy checkpoint tensors into `model`, casting to each parameter's dtype and device.

    Every model tensor must be present with the right shape; otherwise the
    error names the missing, unexpected and mismatched keys.
    """
    files = weight_files(checkpoint)
    chosen = _select_keys(list(files))
    targets = model.state_dict()
    missing = sorted(set(targets) - set(chosen))
    unexpected = sorted(chosen[key] for key in set(chosen) - set(targets))
    problems = []
    weights_type = "pi05" if PI05_MARKER_KEY in chosen else "pi0"
    if weights_type != model.config.model_type:
        problems.append(
            f"the weights are {weights_type}'s but the config describes {model.config.model_type} "
            "(correct the type in config.json)"
        )
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}")
    if problems:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit the model: " + "; ".join(problems))

    by_file: dict[Path, list[str]] = {}
    for model_key, file_key in chosen.items():
        by_file.setdefault(files[file_key], []).append(model_key)
    mismatched = []
    for path, model_keys in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                for model_key in model_keys:
                    shape = tuple(file.get_slice(chosen[model_key]).get_shape())
                    if shape != tuple(targets[model_key].shape):
                        mismatched.append(
                            f"{chosen[model_key]} {list(shape)} vs model {list(targets[model_key].shape)}"
                        )
                        continue
                    targets[model_key].copy_(file.get_tensor(chosen[model_key]))
        except Exception as error:  # safetensors raises its own error types for truncated or corrupt data
            raise CheckpointError(f"{path} could not be read ({error})") from error
    if mismatched:
        raise CheckpointError(
            f"checkpoint {checkpoint} has {len(mismatched)} tensor(s) of the wrong shape: {_listing(mismatched)}"
        )


def load_model(
    checkpoint_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Pi0Model:
    """Build the model described by a checkpoint directory and load its weights."""
    checkpoint_dir = Path(checkpoint_dir)
    weight_files(checkpoint_dir)  # refuse pickles / missing weights before reading anything else
    config = read_config(checkpoint_dir)
    model = build_model(config, device, dtype)
    load_weights(model, checkpoint_dir)
    return model.eval()


def checkpoint_state_dict(model: Pi0Model) -> dict[str, torch.Tensor]:
    """The model's tensors under the checkpoint key names (777 keys for the real pi0, 812 for pi0.5).

    The unused expert LM head is written as zeros so strict loaders
    (LeRobot, openpi) accept the file.
    """
    tensors = {
        (TIED_EMBEDDING_KEY if key == EMBEDDING_KEY else key): value for key, value in model.state_dict().items()
    }
    config = model.config
    tensors[UNUSED_EXPERT_HEAD_KEY] = torch.zeros(
        (config.vocab_size, config.expert.width), dtype=model.compute_dtype, device=model.device
    )
    return tensors


def save_checkpoint(model: Pi0Model, directory: str | Path, normalization: Normalization | None = None) -> Path:
    """Write model.safetensors, config.json and (optionally) norm_stats.json into `directory`."""
    return save_state_dict(model.state_dict(), model.config, directory, normalization)


def save_state_dict(
    state: dict[str, torch.Tensor],
    config: Pi0Config,
    directory: str | Path,
    normalization: Normalization | None = None,
) -> Path:
    """`save_checkpoint` for a `Pi0Model.state_dict()`-keyed dict (e.g. averaged or merged training weights)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {(TIED_EMBEDDING_KEY if key == EMBEDDING_KEY else key): value for key, value in state.items()}
    dtype = state[EMBEDDING_KEY].dtype if EMBEDDING_KEY in state else torch.float32
    tensors[UNUSED_EXPERT_HEAD_KEY] = torch.zeros((config.vocab_size, config.expert.width), dtype=dtype)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_json(config), indent=2))
    if normalization is not None:
        normalization.save(directory / NORM_STATS_FILE)
    return directory
