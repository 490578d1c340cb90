"""Checkpoint directories: round trip, LeRobot/openpi key spellings, clear errors, pickles refused."""

import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_pi0 import make_inputs, make_tiny_model

from pi0_model.checkpoint import (
    EMBEDDING_KEY,
    TIED_EMBEDDING_KEY,
    UNUSED_EXPERT_HEAD_KEY,
    checkpoint_state_dict,
    config_from_json,
    load_model,
    save_checkpoint,
)
from pi0_model.config import GEMMA_2B, GEMMA_300M, Pi0Config
from pi0_model.errors import CheckpointError
from pi0_model.flow_matching import sample_actions


def sample(model, config, seed: int = 0) -> torch.Tensor:
    inputs = make_inputs(config, batch=1, slots=2, seed=seed)
    noise = torch.randn(1, config.action_horizon, config.action_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return sample_actions(model, inputs, noise, num_steps=3)


def write_weights(directory, tensors: dict[str, torch.Tensor], config: Pi0Config | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    if config is not None:
        (directory / "config.json").write_text(json.dumps({"pi0_model": config.to_dict()}))


def test_save_load_round_trip(tmp_path, tiny_config):
    model = make_tiny_model(seed=11)
    save_checkpoint(model, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as file:
        keys = set(file.keys())
        assert TIED_EMBEDDING_KEY in keys and EMBEDDING_KEY not in keys
        assert file.get_tensor(UNUSED_EXPERT_HEAD_KEY).abs().sum() == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["type"] == "pi0" and config["chunk_size"] == 50
    loaded = load_model(tmp_path)
    assert loaded.config == tiny_config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert torch.equal(sample(model, tiny_config), sample(loaded, tiny_config))


def test_lerobot_key_spelling_loads(tmp_path, tiny_config):
    """LeRobot saves the policy with a "model." prefix, the tied embedding as lm_head and the expert head."""
    model = make_tiny_model(seed=12)
    tensors = {"model." + key: value for key, value in checkpoint_state_dict(model).items()}
    assert "model." + TIED_EMBEDDING_KEY in tensors and "model." + UNUSED_EXPERT_HEAD_KEY in tensors
    write_weights(tmp_path, tensors, tiny_config)
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.state_dict()[EMBEDDING_KEY], model.state_dict()[EMBEDDING_KEY])
    assert torch.equal(sample(model, tiny_config), sample(loaded, tiny_config))


def test_embedding_stored_under_both_names_or_without_the_expert_head(tmp_path, tiny_config):
    model = make_tiny_model(seed=13)
    tensors = dict(model.state_dict())
    tensors[TIED_EMBEDDING_KEY] = tensors[EMBEDDING_KEY].clone()
    write_weights(tmp_path, tensors, tiny_config)  # no expert head at all
    assert torch.equal(load_model(tmp_path).state_dict()[EMBEDDING_KEY], tensors[EMBEDDING_KEY])


def test_bfloat16_file_into_float32_model_and_back(tmp_path, tiny_config):
    model = make_tiny_model(seed=14)
    write_weights(tmp_path, {k: v.to(torch.bfloat16) for k, v in checkpoint_state_dict(model).items()}, tiny_config)
    fp32 = load_model(tmp_path, dtype=torch.float32)
    bf16 = load_model(tmp_path, dtype=torch.bfloat16)
    assert fp32.compute_dtype == torch.float32 and bf16.compute_dtype == torch.bfloat16
    norm = "paligemma_with_expert.gemma_expert.model.norm.weight"
    assert bf16.state_dict()[norm].dtype == torch.float32
    assert torch.isfinite(sample(bf16, tiny_config)).all()


def test_missing_unexpected_and_mismatched_tensors_are_named(tmp_path, tiny_config):
    tensors = dict(checkpoint_state_dict(make_tiny_model()))
    missing_key = "paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight"
    del tensors[missing_key]
    tensors["time_mlp_in.weight"] = torch.zeros(2, 2)
    write_weights(tmp_path / "a", tensors, tiny_config)
    with pytest.raises(
        CheckpointError,
        match=rf"weights are pi05's but the config describes pi0.*missing 1 tensor\(s\): {missing_key}.*"
        r"unexpected 1 tensor\(s\): time_mlp_in.weight",
    ):
        load_model(tmp_path / "a")

    tensors = dict(checkpoint_state_dict(make_tiny_model()))
    tensors["state_proj.weight"] = torch.zeros(32, 14)
    write_weights(tmp_path / "b", tensors, tiny_config)
    width = tiny_config.expert.width
    with pytest.raises(CheckpointError, match=rf"wrong shape: state_proj.weight \[32, 14\] vs model \[{width}, 32\]"):
        load_model(tmp_path / "b")


def test_pickled_checkpoints_are_refused(tmp_path):
    torch.save({"state_proj.weight": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled checkpoint.*only safetensors"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="pickled checkpoint"):
        load_model(tmp_path / "pytorch_model.bin")
    disguised = tmp_path / "disguised"
    disguised.mkdir()
    (disguised / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file.*pickled checkpoints are refused"):
        load_model(disguised)


def shard_checkpoint(directory, model, second_shard: str):
    """A checkpoint whose weights are split over model-00001.safetensors and `second_shard` via an index."""
    save_checkpoint(model, directory)
    weights = directory / "model.safetensors"
    with safe_open(str(weights), "pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safetensors' handle is no dict
    weights.unlink()
    keys = sorted(tensors)
    first, second = keys[: len(keys) // 2], keys[len(keys) // 2 :]
    save_file({k: tensors[k] for k in first}, str(directory / "model-00001.safetensors"))
    weight_map = {**{k: "model-00001.safetensors" for k in first}, **{k: second_shard for k in second}}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return {k: tensors[k] for k in second}


def test_sharded_checkpoints_load_and_bad_shards_are_named(tmp_path, tiny_config):
    model = make_tiny_model(seed=5)
    second = shard_checkpoint(tmp_path / "good", model, "model-00002.safetensors")
    save_file(second, str(tmp_path / "good" / "model-00002.safetensors"))
    assert torch.equal(sample(load_model(tmp_path / "good"), tiny_config), sample(model, tiny_config))

    second = shard_checkpoint(tmp_path / "pickled", model, "model-00002.bin")
    torch.save(second, tmp_path / "pickled" / "model-00002.bin")
    with pytest.raises(CheckpointError, match="model-00002.bin is a pickled checkpoint"):
        load_model(tmp_path / "pickled")

    shard_checkpoint(tmp_path / "missing", model, "model-00002.safetensors")
    with pytest.raises(CheckpointError, match="lists model-00002.safetensors, which does not exist"):
        load_model(tmp_path / "missing")

    shard_checkpoint(tmp_path / "truncated", model, "model-00002.safetensors")
    good_bytes = (tmp_path / "good" / "model-00002.safetensors").read_bytes()
    (tmp_path / "truncated" / "model-00002.safetensors").write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(CheckpointError, match="model-00002.safetensors"):
        load_model(tmp_path / "truncated")


def test_missing_directory_or_weights(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path)


def test_openpi_and_lerobot_config_json():
    openpi = config_from_json(
        {
            "action_dim": 32,
            "action_horizon": 50,
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
            "precision": "bfloat16",
        }
    )
    assert openpi == Pi0Config.pi0()
    lerobot = config_from_json(
        {"type": "pi0", "chunk_size": 10, "max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 5,
         "tokenizer_max_length": 48, "paligemma_variant": "gemma_2b_lora", "action_expert_variant": "gemma_300m",
         "image_resolution": [224, 224]}
    )  # fmt: skip
    assert (lerobot.action_horizon, lerobot.num_steps, lerobot.llm, lerobot.expert) == (10, 5, GEMMA_2B, GEMMA_300M)
    with pytest.raises(CheckpointError, match="describes a 'pi0fast' policy; supported: pi0, pi05"):
        config_from_json({"type": "pi0fast"})
    with pytest.raises(CheckpointError, match="unknown Gemma variant"):
        config_from_json({"paligemma_variant": "gemma_9b"})
