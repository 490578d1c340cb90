"""pi0.5 (tiny, CPU): adaRMS expert, state in the prompt, sampling, training, checkpoints and the policy."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_pi0 import ALOHA_CAMERAS, aloha_state, camera_frames, make_inputs, make_tiny_model, overfit_losses

from pi0_model import attention
from pi0_model.checkpoint import (
    UNUSED_EXPERT_HEAD_KEY,
    checkpoint_state_dict,
    config_from_json,
    load_model,
    read_config,
    save_checkpoint,
    weights_model_type,
)
from pi0_model.config import Pi0Config
from pi0_model.errors import CheckpointError, ConfigError
from pi0_model.flow_matching import sample_actions
from pi0_model.model import AdaptiveRMSNorm, PaliGemmaWithExpert, build_model, hf_configs, initialize_weights_
from pi0_model.normalization import Normalization, NormStats
from pi0_model.policy import Pi0Policy, RobotIO, RtcGuidance
from pi0_model.tokenizer import discretize_state, model_prompt, tiny_sentencepiece_model, tiny_tokenizer

INSTRUCTION = "fold the towel"
EXPERT = "paligemma_with_expert.gemma_expert.model."


@pytest.fixture(scope="module")
def config() -> Pi0Config:
    return Pi0Config.tiny("pi05")


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(seed=2, model_type="pi05")


def noise_like(config: Pi0Config, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.action_horizon, config.action_dim, generator=generator)


# -- config ---------------------------------------------------------------------


def test_pi05_config_follows_openpi():
    pi05, pi0 = Pi0Config.pi05(), Pi0Config.pi0()
    assert (pi05.model_type, pi05.max_token_len, pi05.discrete_state_input, pi05.norm_mode) == (
        "pi05",
        200,
        True,
        "quantile",
    )
    assert (pi0.model_type, pi0.max_token_len, pi0.discrete_state_input, pi0.norm_mode) == (
        "pi0",
        48,
        False,
        "mean_std",
    )
    assert (pi05.vision, pi05.llm, pi05.expert) == (pi0.vision, pi0.llm, pi0.expert)
    assert (pi05.suffix_len, pi0.suffix_len) == (50, 51)
    assert Pi0Config.tiny("pi05").replace(model_type="pi0", discrete_state_input=False, max_token_len=48) == (
        Pi0Config.tiny()
    )
    assert Pi0Config.from_dict(Pi0Config.tiny("pi05").to_dict()) == Pi0Config.tiny("pi05")
    assert Pi0Config.from_dict({"vocab_size": 512}).model_type == "pi0", "configs saved before pi0.5 are pi0"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Pi0Config(model_type="pi0fast"), "model_type must be one of"),
        (lambda: Pi0Config(discrete_state_input=True), "discrete_state_input is a pi0.5 option"),
        (lambda: Pi0Config(model_type="pi05", discrete_state_input=1), "discrete_state_input must be a bool"),
        (lambda: Pi0Config.tiny("pi1"), "model type must be one of"),
    ],
)
def test_bad_model_types_raise_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


# -- the network ----------------------------------------------------------------


def test_suffix_is_the_actions_alone_conditioned_on_time(model, config):
    noisy = noise_like(config, batch=2)
    suffix = model.embed_suffix(torch.zeros(2, config.state_dim), noisy, torch.tensor([0.3, 0.9]))
    assert suffix.embeddings.shape == (2, config.action_horizon, config.expert.width)
    assert suffix.condition is not None and suffix.condition.shape == (2, config.expert.width)
    assert not torch.allclose(suffix.condition[0], suffix.condition[1]), "the condition carries the time"
    blocks = model.suffix_blocks(2, torch.device("cpu"))
    assert blocks.shape == (2, config.action_horizon) and blocks.eq(attention.ACTION_BLOCK).all()
    names = {name for name, _ in model.named_parameters()}
    assert {"time_mlp_in.weight", "time_mlp_out.weight"} <= names
    assert not any(name.startswith(("state_proj", "action_time_mlp")) for name in names)


def test_state_is_not_a_model_input_and_positions_follow_the_valid_prefix(model, config):
    inputs = make_inputs(config, batch=2, slots=2)
    inputs.image_masks[1, 1] = False
    noisy, time = noise_like(config, batch=2), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        prefix = model.embed_prefix(inputs)
        reference = model.velocity_joint(prefix, inputs.state, noisy, time)
        moved_state = model.velocity_joint(prefix, inputs.state + 3.0, noisy, time)
        context = model.suffix_context(prefix.valid)
    assert torch.equal(reference, moved_state), "pi0.5 reads the state from the prompt only"
    offsets = prefix.valid.sum(dim=1)
    expected_cos, _ = model._rope(offsets[:, None] + torch.arange(config.action_horizon)[None])
    assert torch.equal(context.cos, expected_cos), "action positions start at the number of valid prefix tokens"


def test_adaptive_norm_conditions_every_layer_on_time(model, config):
    inputs = make_inputs(config, batch=1, slots=1)
    noisy = noise_like(config)
    with torch.no_grad():
        prefix = model.embed_prefix(inputs)
        suffix = model.embed_suffix(inputs.state, noisy, torch.tensor([0.2]))
        other = model.embed_suffix(inputs.state, noisy, torch.tensor([0.8]))
    assert torch.equal(suffix.embeddings, other.embeddings), "time enters only through the norms"
    for name, module in model.paligemma_with_expert.gemma_expert.named_modules():
        if name.endswith(("layernorm", "model.norm")):
            assert isinstance(module, AdaptiveRMSNorm), name
    with torch.no_grad():
        early = model.velocity_joint(prefix, inputs.state, noisy, torch.tensor([0.2]))
        late = model.velocity_joint(prefix, inputs.state, noisy, torch.tensor([0.8]))
    assert not torch.allclose(early, late, atol=1e-4)


def test_unit_modulation_reduces_the_expert_to_plain_gemma_layers(config):
    """dense -> (scale = w, shift = 0, gate = 1) for any condition: every layer is a Gemma layer with norm weight w."""
    backbone, expert = hf_configs(config)
    adaptive = PaliGemmaWithExpert(backbone, expert, adaptive_expert=True).eval()
    plain = PaliGemmaWithExpert(backbone, expert).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.normal_(0.0, 0.2, generator=generator)
        adaptive.load_state_dict(plain.state_dict(), strict=False)  # everything but the norms
        width = config.expert.width
        for name, norm in adaptive.gemma_expert.named_modules():
            if isinstance(norm, AdaptiveRMSNorm):
                w = plain.gemma_expert.get_submodule(name).weight
                norm.dense.weight.zero_()
                norm.dense.bias.copy_(torch.cat([w, torch.zeros(width), torch.ones(width)]))
        batch, prefix_len, suffix_len = 2, 7, 5
        prefix = torch.randn(batch, prefix_len, config.llm.width, generator=generator)
        suffix = torch.randn(batch, suffix_len, width, generator=generator)
        condition = torch.randn(batch, width, generator=generator)
        blocks = torch.cat([torch.zeros(batch, prefix_len), torch.full((batch, suffix_len), 2)], 1).long()
        valid = torch.ones_like(blocks, dtype=torch.bool)
        bias = attention.attention_bias(attention.block_attention_mask(blocks, valid, blocks, valid), torch.float32)
        cos, sin = attention.rope_tables(attention.positions_from_valid(valid), 16, 10_000.0, torch.float32)
        (_, ours), _ = adaptive((prefix, suffix), cos, sin, bias, condition=condition)
        (_, gemma), _ = plain((prefix, suffix), cos, sin, bias)
    assert torch.allclose(ours, gemma, atol=1e-5)


def test_cached_sampling_equals_full_sequence_sampling(model, config):
    inputs = make_inputs(config, batch=2, slots=2)
    inputs.token_mask[0, 30:] = False
    noise = noise_like(config, batch=2, seed=3)
    with torch.no_grad():
        cached = sample_actions(model, inputs, noise, num_steps=10, use_kv_cache=True)
        full = sample_actions(model, inputs, noise, num_steps=10, use_kv_cache=False)
    assert torch.allclose(cached, full, atol=1e-4)
    assert not torch.allclose(cached, noise)


def test_a_few_training_steps_overfit_a_tiny_batch():
    config = Pi0Config.tiny("pi05").replace(max_token_len=48)  # a short prompt keeps the 60 steps cheap
    model = build_model(config, "cpu", torch.float32)
    initialize_weights_(model, torch.Generator().manual_seed(1))
    losses = overfit_losses(model, config)
    assert losses[-1] < 0.25 * losses[0], losses
    assert model.time_mlp_in.weight.grad is not None and model.time_mlp_in.weight.grad.abs().sum() > 0


def test_bf16_keeps_the_adaptive_norms_fp32_and_stays_close(config):
    fp32 = make_tiny_model(seed=3, model_type="pi05")
    bf16 = make_tiny_model(seed=3, dtype=torch.bfloat16, model_type="pi05")
    assert bf16.state_dict()[EXPERT + "layers.0.input_layernorm.dense.weight"].dtype == torch.float32
    assert bf16.state_dict()[EXPERT + "layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    inputs, noise = make_inputs(config, batch=1, slots=1), noise_like(config)
    with torch.no_grad():
        outs = [sample_actions(m, inputs, noise, num_steps=3) for m in (fp32, bf16)]
    assert torch.isfinite(outs[1]).all()
    assert (outs[0] - outs[1]).norm() / outs[0].norm() < 0.05


# -- the prompt -----------------------------------------------------------------


def test_state_bins_follow_openpi():
    edges = np.linspace(-1, 1, 257)
    values = np.array([-1.5, -1.0, -1.0 + 1e-9, edges[1], 0.0, 0.999, 1.0, 3.0])
    assert discretize_state(values).tolist() == [-1, 0, 0, 1, 128, 255, 255, 255]


def test_pi05_prompt_carries_the_state():
    tokenizer = tiny_tokenizer(max_len=200)
    encode = tokenizer._encode
    state = np.array([-1.2, -0.5, 0.0, 0.9999])
    prompt = tokenizer.tokenize("  fold_the\ntowel ", state)
    expected = [tokenizer.bos_id, *encode("Task: fold the towel, State: -1 64 128 255;\nAction: ")]
    assert prompt.ids[: len(expected)].tolist() == expected and prompt.mask.sum() == len(expected)
    assert tokenizer.tokenize("fold the towel").ids.tolist() != prompt.ids.tolist()
    short = tiny_tokenizer(max_len=20).tokenize("fold the towel", state)
    assert short.truncated and short.ids.tolist() == expected[:20]
    assert model_prompt(tokenizer, Pi0Config.tiny("pi05"), "fold the towel", state).ids.tolist() == prompt.ids.tolist()
    pi0_prompt = tiny_tokenizer(max_len=48).tokenize("fold the towel")
    assert (
        model_prompt(tiny_tokenizer(), Pi0Config.tiny(), "fold the towel", state).ids.tolist()
        == pi0_prompt.ids.tolist()
    )


# -- checkpoints ----------------------------------------------------------------


def test_checkpoint_round_trip_with_the_pi05_names(tmp_path, model, config):
    save_checkpoint(model, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as file:
        keys = set(file.keys())
        dense = file.get_tensor(EXPERT + "layers.1.post_attention_layernorm.dense.weight")
    width = config.expert.width
    assert dense.shape == (3 * width, width)
    assert {
        EXPERT + "norm.dense.weight",
        EXPERT + "norm.dense.bias",
        "time_mlp_out.bias",
        UNUSED_EXPERT_HEAD_KEY,
    } <= keys
    assert not any(
        k.startswith(("state_proj", "action_time_mlp")) or (k.startswith(EXPERT) and k.endswith("layernorm.weight"))
        for k in keys
    )
    assert EXPERT + "norm.weight" not in keys
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["type"], saved["pi05"], saved["tokenizer_max_length"]) == ("pi05", True, 200)
    loaded = load_model(tmp_path)
    assert loaded.config == config
    inputs, noise = make_inputs(config, batch=1, slots=2), noise_like(config)
    with torch.no_grad():
        assert torch.equal(sample_actions(model, inputs, noise, 3), sample_actions(loaded, inputs, noise, 3))


def test_type_comes_from_the_config_or_else_from_the_weights(tmp_path, model):
    """openpi's converter writes no type (the weights tell); LeRobot writes "type"; pi0 stays pi0."""
    save_checkpoint(model, tmp_path / "pi05")
    save_checkpoint(make_tiny_model(seed=4), tmp_path / "pi0")
    assert load_model(tmp_path / "pi0").config.model_type == "pi0"
    openpi_fields = {"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b", "precision": "float32"}
    for name in ("pi05", "pi0"):
        assert weights_model_type(tmp_path / name) == name
        (tmp_path / name / "config.json").write_text(json.dumps(openpi_fields))
        assert read_config(tmp_path / name) == Pi0Config.published(name)
    (tmp_path / "pi05" / "config.json").unlink()
    assert read_config(tmp_path / "pi05") == Pi0Config.pi05()
    assert config_from_json({"type": "pi0"}) == config_from_json({}) == Pi0Config.pi0()
    lerobot = config_from_json({"type": "pi05", "chunk_size": 10, "tokenizer_max_length": 200})
    assert (lerobot.model_type, lerobot.action_horizon, lerobot.discrete_state_input) == ("pi05", 10, True)
    openpi = config_from_json({"action_horizon": 15, "paligemma_variant": "gemma_2b"}, model_type="pi05")
    assert openpi == Pi0Config.pi05().replace(action_horizon=15)
    libero = config_from_json({"pi05": True, "discrete_state_input": False})
    assert libero.is_pi05 and not libero.discrete_state_input


def test_mismatched_types_and_shapes_are_named(tmp_path, model, config):
    save_checkpoint(model, tmp_path / "a")
    pi0_config = json.loads((tmp_path / "a/config.json").read_text())
    pi0_config["pi0_model"] = Pi0Config.tiny().to_dict()
    (tmp_path / "a/config.json").write_text(json.dumps(pi0_config))
    with pytest.raises(CheckpointError, match="weights are pi05's but the config describes pi0.*state_proj"):
        load_model(tmp_path / "a")

    tensors = dict(checkpoint_state_dict(model))
    tensors[EXPERT + "layers.0.input_layernorm.dense.weight"] = torch.zeros(config.expert.width, config.expert.width)
    (tmp_path / "b").mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "b/model.safetensors"))
    (tmp_path / "b/config.json").write_text(json.dumps({"pi0_model": config.to_dict()}))
    width = config.expert.width
    with pytest.raises(CheckpointError, match=rf"wrong shape: .*input_layernorm.dense.weight \[{width}, {width}\] vs"):
        load_model(tmp_path / "b")


# -- the policy -----------------------------------------------------------------


def quantile_stats(rng, dim: int) -> NormStats:
    """Quantiles around the tiny test states, so that they normalize inside [-1, 1] where the bins are."""
    low = -rng.uniform(1.5, 2.5, size=dim)
    return NormStats(mean=np.zeros(dim), std=np.ones(dim), q01=low, q99=rng.uniform(1.5, 2.5, size=dim))


def test_policy_end_to_end_from_a_checkpoint(tmp_path, model, rng):
    """Raw observation in, unnormalized chunk out; quantile stats from norm_stats.json; RTC rows exact."""
    io = RobotIO(camera_slots=ALOHA_CAMERAS, state_dim=14, action_dim=14, transforms=("aloha",))
    stats = Normalization(quantile_stats(rng, 32), quantile_stats(rng, 32))
    save_checkpoint(model, tmp_path, stats)
    (tmp_path / "tokenizer.model").write_bytes(tiny_sentencepiece_model())
    policy = Pi0Policy.from_checkpoint(tmp_path, io)
    assert policy.config.is_pi05 and policy.normalization.use_quantiles

    frames, state, noise = camera_frames(rng, ALOHA_CAMERAS), aloha_state(rng), rng.normal(size=(50, 32))
    out = policy.infer(frames, state, INSTRUCTION, noise=noise)
    assert out.actions.shape == (50, 14) and np.isfinite(out.actions).all() and not out.prompt_truncated
    request = policy._prepare(frames, state, INSTRUCTION, None)
    normalized = policy.normalization.normalize_state(request.stages[-1])
    assert request.prompt.ids.tolist() == policy.tokenizer.tokenize(INSTRUCTION, normalized).ids.tolist()
    moved = state.copy()
    moved[0] += 0.5  # a few bins away: another prompt, another chunk
    assert not np.allclose(policy.infer(frames, moved, INSTRUCTION, noise=noise).actions, out.actions)

    previous = out.actions + rng.normal(scale=0.01, size=out.actions.shape)
    rtc = RtcGuidance(previous_actions=previous[5:35], frozen_steps=4)
    guided = policy.infer(frames, state, INSTRUCTION, noise=noise, rtc=rtc)
    assert np.array_equal(guided.actions[:4], previous[5:9]) and guided.frozen_steps == 4
    assert np.isfinite(guided.actions).all()


def test_tiny_policy_of_either_type(rng):
    io = RobotIO(camera_slots={"top": "base_0_rgb"}, state_dim=6, action_dim=5)
    pi05 = Pi0Policy.tiny(io, seed=1, model_type="pi05")
    assert pi05.config == Pi0Config.tiny("pi05") and pi05.normalization.use_quantiles
    assert not Pi0Policy.tiny(io, seed=1).normalization.use_quantiles
    out = pi05.infer(camera_frames(rng, ["top"]), rng.normal(size=6), INSTRUCTION)
    assert out.actions.shape == (50, 5)
    mean_std = Normalization(NormStats(np.zeros(6), np.ones(6)), NormStats(np.zeros(5), np.ones(5)))
    with pytest.raises(CheckpointError, match="quantile normalization needs q01 and q99"):
        Pi0Policy.tiny(io, mean_std, model_type="pi05")
    explicit = RobotIO(camera_slots={"top": "base_0_rgb"}, state_dim=6, action_dim=5, norm_mode="mean_std")
    assert not Pi0Policy.tiny(explicit, mean_std, model_type="pi05").normalization.use_quantiles


def test_libero_style_pi05_without_state_uses_the_pi0_prompt(rng):
    io = RobotIO(camera_slots={"top": "base_0_rgb"}, state_dim=6, action_dim=5)
    config = Pi0Config.tiny("pi05").replace(discrete_state_input=False)
    policy = Pi0Policy.random_init(io, config, seed=1)
    frames, noise = camera_frames(rng, ["top"]), rng.normal(size=(50, 32))
    request = policy._prepare(frames, rng.normal(size=6), INSTRUCTION, None)
    assert request.prompt.ids.tolist() == policy.tokenizer.tokenize(INSTRUCTION).ids.tolist()
    a = policy.infer(frames, rng.normal(size=6), INSTRUCTION, noise=noise).actions
    b = policy.infer(frames, rng.normal(size=6), INSTRUCTION, noise=noise).actions
    assert np.array_equal(a, b), "this pi0.5 never sees the state"
