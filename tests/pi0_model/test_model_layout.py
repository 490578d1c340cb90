"""The full-size models, built on the meta device: parameter count, checkpoint key layout, dtypes.

The expected keys and sizes are written out here from the published
architecture (REFERENCE.md sections 1 and 6, LeRobot `modeling_pi0.py` and
`modeling_pi05.py`, openpi's `convert_jax_model_to_pytorch.py`), independently
of the model code.
"""

import pytest
import torch

from pi0_model.checkpoint import checkpoint_state_dict
from pi0_model.config import Pi0Config
from pi0_model.model import Pi0Model, keeps_fp32, set_precision


def lerobot_pi0_keys() -> set[str]:
    vision = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    keys = [
        vision + "embeddings.patch_embedding.weight",
        vision + "embeddings.patch_embedding.bias",
        vision + "embeddings.position_embedding.weight",
        vision + "post_layernorm.weight",
        vision + "post_layernorm.bias",
    ]
    vision_parts = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
    vision_parts += ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")
    for layer in range(27):
        for part in vision_parts:
            keys += [f"{vision}encoder.layers.{layer}.{part}.weight", f"{vision}encoder.layers.{layer}.{part}.bias"]
    keys += [
        "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight",
        "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.bias",
    ]
    gemma_parts = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    gemma_parts += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")
    for stack in ("paligemma.model.language_model", "gemma_expert.model"):
        for layer in range(18):
            keys += [f"paligemma_with_expert.{stack}.layers.{layer}.{part}.weight" for part in gemma_parts]
        keys.append(f"paligemma_with_expert.{stack}.norm.weight")
    keys += ["paligemma_with_expert.paligemma.lm_head.weight", "paligemma_with_expert.gemma_expert.lm_head.weight"]
    for head in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"):
        keys += [f"{head}.weight", f"{head}.bias"]
    assert len(keys) == 777 == len(set(keys))
    return set(keys)


def lerobot_pi05_keys() -> set[str]:
    """pi0.5: time MLP instead of state_proj and action_time_mlp_*; every expert norm is a dense layer."""
    expert = "paligemma_with_expert.gemma_expert.model."
    norms = [
        f"{expert}layers.{layer}.{name}"
        for layer in range(18)
        for name in ("input_layernorm", "post_attention_layernorm")
    ]
    norms.append(expert + "norm")
    removed = {f"{norm}.weight" for norm in norms}
    removed |= {
        f"{head}.{part}"
        for head in ("state_proj", "action_time_mlp_in", "action_time_mlp_out")
        for part in ("weight", "bias")
    }
    added = {f"{norm}.dense.{part}" for norm in norms for part in ("weight", "bias")}
    added |= {f"{head}.{part}" for head in ("time_mlp_in", "time_mlp_out") for part in ("weight", "bias")}
    keys = (lerobot_pi0_keys() - removed) | added
    assert len(keys) == 812
    return keys


def expected_parameter_count() -> int:
    def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
        return fan_in * fan_out + (fan_out if bias else 0)

    siglip_layer = 4 * linear(1152, 1152) + 2 * 2 * 1152 + linear(1152, 4304) + linear(4304, 1152)
    siglip = 1152 * 3 * 14 * 14 + 1152 + 256 * 1152 + 27 * siglip_layer + 2 * 1152
    projector = linear(1152, 2048)

    def gemma(width: int, mlp: int) -> int:
        attention = linear(width, 8 * 256, False) + 2 * linear(width, 256, False) + linear(8 * 256, width, False)
        layer = attention + 3 * width * mlp + 2 * width
        return 18 * layer + width

    heads = 2 * linear(32, 1024) + linear(1024, 32) + linear(2048, 1024) + linear(1024, 1024)
    return siglip + projector + 257152 * 2048 + gemma(2048, 16384) + gemma(1024, 4096) + heads


@pytest.fixture(scope="module")
def meta_pi0() -> Pi0Model:
    with torch.device("meta"):
        return Pi0Model(Pi0Config.pi0())


def test_parameter_count_is_pi0s_3_3_billion(meta_pi0):
    count = sum(p.numel() for p in meta_pi0.parameters())
    assert count == expected_parameter_count()
    assert 3.2e9 < count < 3.3e9  # "3.3B" in the paper, rounded up; the unused expert LM head is not allocated


def test_checkpoint_keys_match_the_lerobot_layout_exactly(meta_pi0):
    tensors = checkpoint_state_dict(meta_pi0)
    assert set(tensors) == lerobot_pi0_keys()
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    llm = "paligemma_with_expert.paligemma.model.language_model.layers.0."
    expert = "paligemma_with_expert.gemma_expert.model.layers.0."
    assert shapes["paligemma_with_expert.paligemma.lm_head.weight"] == (257152, 2048)
    assert shapes["paligemma_with_expert.gemma_expert.lm_head.weight"] == (257152, 1024)
    assert shapes[llm + "self_attn.q_proj.weight"] == (2048, 2048)
    assert shapes[llm + "self_attn.k_proj.weight"] == (256, 2048)
    assert shapes[expert + "self_attn.q_proj.weight"] == (2048, 1024)
    assert shapes[expert + "self_attn.o_proj.weight"] == (1024, 2048)
    assert shapes[expert + "mlp.down_proj.weight"] == (1024, 4096)
    assert shapes["paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"] == (2048, 1152)
    assert shapes["state_proj.weight"] == (1024, 32)
    assert shapes["action_time_mlp_in.weight"] == (1024, 2048)
    assert shapes["action_out_proj.weight"] == (32, 1024)


def test_pi05_checkpoint_keys_match_the_lerobot_layout_exactly():
    with torch.device("meta"):
        model = Pi0Model(Pi0Config.pi05())
    shapes = {key: tuple(value.shape) for key, value in checkpoint_state_dict(model).items()}
    assert set(shapes) == lerobot_pi05_keys()
    expert = "paligemma_with_expert.gemma_expert.model."
    assert shapes[expert + "layers.3.input_layernorm.dense.weight"] == (3 * 1024, 1024)
    assert shapes[expert + "layers.3.post_attention_layernorm.dense.bias"] == (3 * 1024,)
    assert shapes[expert + "norm.dense.weight"] == (3 * 1024, 1024)
    assert shapes["time_mlp_in.weight"] == shapes["time_mlp_out.weight"] == (1024, 1024)
    pi0_count = expected_parameter_count()
    adaptive_norms = 37 * (3 * 1024 * 1024 + 3 * 1024 - 1024)  # dense layers replace the norm weights
    heads = 2 * (1024 * 1024 + 1024) - (1024 * 32 + 1024) - (2048 * 1024 + 1024) - (1024 * 1024 + 1024)
    assert sum(p.numel() for p in model.parameters()) == pi0_count + adaptive_norms + heads


def test_state_dict_is_the_layout_minus_the_two_stored_heads(meta_pi0):
    keys = set(meta_pi0.state_dict())
    expected = lerobot_pi0_keys() - {
        "paligemma_with_expert.paligemma.lm_head.weight",
        "paligemma_with_expert.gemma_expert.lm_head.weight",
    }
    assert keys == expected | {"paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"}


def test_bf16_keeps_norms_vision_embeddings_and_projections_fp32():
    with torch.device("meta"):
        model = set_precision(Pi0Model(Pi0Config.tiny()), torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    fp32 = {name for name, dtype in dtypes.items() if dtype == torch.float32}
    assert fp32 == {name for name in dtypes if keeps_fp32(name)}
    vision = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    assert dtypes[vision + "embeddings.patch_embedding.weight"] == torch.float32
    assert dtypes[vision + "embeddings.position_embedding.weight"] == torch.float32
    assert dtypes[vision + "encoder.layers.0.self_attn.q_proj.weight"] == torch.bfloat16
    assert dtypes["paligemma_with_expert.gemma_expert.model.layers.1.input_layernorm.weight"] == torch.float32
    assert dtypes["paligemma_with_expert.gemma_expert.model.norm.weight"] == torch.float32
    assert dtypes["paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight"] == torch.bfloat16
    assert dtypes["paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"] == torch.bfloat16
    assert dtypes["action_in_proj.weight"] == torch.float32
    assert model.compute_dtype == torch.bfloat16
