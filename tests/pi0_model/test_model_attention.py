"""The pi0 attention pattern and the joint PaliGemma + expert transformer (tiny, CPU)."""

import math

import pytest
import torch
from tiny_pi0 import make_inputs

from pi0_model import attention
from pi0_model.model import ModelInputs, time_embedding


def full_sequence_mask(prefix_valid: torch.Tensor, horizon: int) -> torch.Tensor:
    """The model's mask over [prefix, state, actions], built the way velocity_joint builds it."""
    batch = prefix_valid.shape[0]
    suffix_blocks = attention.suffix_block_ids(batch, horizon, prefix_valid.device)
    blocks = torch.cat([torch.zeros_like(prefix_valid, dtype=torch.long), suffix_blocks], dim=1)
    valid = torch.cat([prefix_valid, torch.ones_like(suffix_blocks, dtype=torch.bool)], dim=1)
    return attention.block_attention_mask(blocks, valid, blocks, valid)


def test_block_mask_semantics():
    prefix_valid = torch.tensor([[True, True, False, True, False]])  # two images tokens, a pad, text, a pad
    horizon = 3
    mask = full_sequence_mask(prefix_valid, horizon)[0]
    prefix, state, actions = slice(0, 5), 5, slice(6, 9)
    valid_prefix = torch.tensor([0, 1, 3])

    assert not mask[prefix, 5:].any(), "the prefix must never see the suffix"
    assert mask[valid_prefix][:, valid_prefix].all(), "the prefix is bidirectional"
    assert not mask[:, 2].any() and not mask[:, 4].any(), "padding is visible to nobody"
    assert mask[state, valid_prefix].all() and mask[state, state]
    assert not mask[state, actions].any(), "the state does not see the actions"
    assert mask[actions, state].all(), "actions see the state"
    assert mask[actions][:, valid_prefix].all(), "actions see the prefix"
    assert mask[actions, actions].all(), "actions see each other (one block)"


def test_positions_skip_padding():
    valid = torch.tensor([[True, True, False, True, False, True]])
    assert attention.positions_from_valid(valid).tolist() == [[0, 1, 1, 2, 2, 3]]
    offset = torch.tensor([[10]])
    assert attention.positions_from_valid(torch.ones(1, 3, dtype=torch.bool), offset).tolist() == [[10, 11, 12]]


def test_attention_bias_never_produces_nan():
    mask = torch.tensor([[[True, False], [False, False]]])  # second query sees nothing
    bias = attention.attention_bias(mask, torch.float32)
    q = k = v = torch.randn(1, 1, 2, 4)
    out = attention.attend(q, k, v, bias)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 0], v[0, 0, 0], atol=1e-6), "a valid query only reads allowed keys"


def test_rope_is_a_relative_rotation():
    head_dim, theta = 16, 10000.0
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)

    def score(pos_q: int, pos_k: int) -> float:
        cq, sq = attention.rope_tables(torch.tensor([[pos_q]]), head_dim, theta, torch.float32)
        ck, sk = attention.rope_tables(torch.tensor([[pos_k]]), head_dim, theta, torch.float32)
        return float((attention.apply_rope(q, cq, sq) * attention.apply_rope(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-4)
    rotated = attention.apply_rope(q, *attention.rope_tables(torch.tensor([[42]]), head_dim, theta, torch.float32))
    assert float(rotated.norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def test_time_embedding_matches_the_openpi_formula():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = time_embedding(t, 8, 4e-3, 4.0)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    periods = [4e-3 * (4.0 / 4e-3) ** (i / 3) for i in range(4)]
    expected = [math.sin(2 * math.pi * 0.25 / p) for p in periods] + [math.cos(2 * math.pi * 0.25 / p) for p in periods]
    assert emb[1].tolist() == pytest.approx(expected, abs=1e-6)
    assert emb[0].tolist() == [0.0] * 4 + [1.0] * 4


def test_prefix_outputs_do_not_depend_on_the_suffix(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, batch=1, slots=1)
    model = tiny_model
    with torch.no_grad():
        prefix = model.embed_prefix(inputs)
        outputs = []
        for seed in (0, 1):
            noisy = torch.randn(
                1, tiny_config.action_horizon, tiny_config.action_dim, generator=torch.Generator().manual_seed(seed)
            )
            suffix = model.embed_suffix(inputs.state, noisy, torch.tensor([0.5]))
            mask = full_sequence_mask(prefix.valid, tiny_config.action_horizon)
            valid = torch.cat([prefix.valid, torch.ones(1, suffix.embeddings.shape[1], dtype=torch.bool)], dim=1)
            cos, sin = model._rope(attention.positions_from_valid(valid))
            bias = attention.attention_bias(mask, torch.float32)
            (prefix_out, suffix_out), _ = model.paligemma_with_expert(
                (prefix.embeddings, suffix.embeddings), cos, sin, bias
            )
            outputs.append((prefix_out, suffix_out))
    valid = prefix.valid[0]
    assert torch.equal(outputs[0][0][0, valid], outputs[1][0][0, valid]), "prefix hidden states changed with the suffix"
    assert not torch.allclose(outputs[0][1], outputs[1][1]), "the suffix must depend on its own inputs"


def test_cached_velocity_equals_joint_velocity(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, batch=2, slots=3)
    inputs.image_masks[1, 2] = False
    noisy = torch.randn(2, tiny_config.action_horizon, tiny_config.action_dim)
    time = torch.tensor([0.9, 0.3])
    with torch.no_grad():
        prefix = tiny_model.embed_prefix(inputs)
        cache = tiny_model.encode_prefix(prefix)
        cached = tiny_model.velocity(cache, tiny_model.suffix_context(cache.valid), inputs.state, noisy, time)
        joint = tiny_model.velocity_joint(prefix, inputs.state, noisy, time)
    assert cached.shape == (2, tiny_config.action_horizon, tiny_config.action_dim)
    assert torch.allclose(cached, joint, atol=1e-5)


def test_actions_depend_on_state_images_and_prompt(tiny_model, tiny_config):
    base = make_inputs(tiny_config, batch=1, slots=2)
    noisy = torch.randn(1, tiny_config.action_horizon, tiny_config.action_dim)

    def velocity(inputs: ModelInputs) -> torch.Tensor:
        with torch.no_grad():
            return tiny_model.velocity_joint(tiny_model.embed_prefix(inputs), inputs.state, noisy, torch.tensor([0.5]))

    reference = velocity(base)
    changes = {
        "state": ModelInputs(base.images, base.image_masks, base.tokens, base.token_mask, base.state + 1.0),
        "image": ModelInputs(-base.images, base.image_masks, base.tokens, base.token_mask, base.state),
        "prompt": ModelInputs(
            base.images, base.image_masks, (base.tokens + 7) % tiny_config.vocab_size, base.token_mask, base.state
        ),
    }
    for name, changed in changes.items():
        assert not torch.allclose(velocity(changed), reference, atol=1e-4), f"actions ignore the {name}"


def test_masked_camera_slot_is_invisible_and_can_be_dropped(tiny_model, tiny_config):
    """A slot with mask False gives the same actions whatever its pixels, and the same as leaving it out."""
    full = make_inputs(tiny_config, batch=1, slots=3)
    full.image_masks[0, 1] = False
    noisy = torch.randn(1, tiny_config.action_horizon, tiny_config.action_dim)

    def velocity(inputs: ModelInputs) -> torch.Tensor:
        with torch.no_grad():
            return tiny_model.velocity_joint(tiny_model.embed_prefix(inputs), inputs.state, noisy, torch.tensor([0.7]))

    reference = velocity(full)
    other_pixels = full.images.clone()
    other_pixels[0, 1] = -1.0
    dropped = ModelInputs(full.images[:, [0, 2]], full.image_masks[:, [0, 2]], full.tokens, full.token_mask, full.state)
    assert torch.allclose(
        velocity(ModelInputs(other_pixels, full.image_masks, full.tokens, full.token_mask, full.state)),
        reference,
        atol=1e-5,
    )
    assert torch.allclose(velocity(dropped), reference, atol=1e-5)


def test_bf16_forward_is_finite_and_close_to_fp32(tiny_config):
    from tiny_pi0 import make_tiny_model

    fp32, bf16 = make_tiny_model(seed=3), make_tiny_model(seed=3, dtype=torch.bfloat16)
    inputs = make_inputs(tiny_config, batch=1, slots=1)
    noisy = torch.randn(1, tiny_config.action_horizon, tiny_config.action_dim)
    with torch.no_grad():
        outs = [
            m.velocity_joint(m.embed_prefix(inputs), inputs.state, noisy, torch.tensor([0.5])) for m in (fp32, bf16)
        ]
    assert outs[1].dtype == torch.float32 and torch.isfinite(outs[1]).all()
    relative = (outs[0] - outs[1]).norm() / outs[0].norm()
    assert relative < 0.05
