"""Config dataclasses: the published pi0 sizes, the tiny variant, and validation errors."""

import pytest

from pi0_model.config import CAMERA_SLOTS, GEMMA_2B, GEMMA_300M, GemmaConfig, Pi0Config, VisionConfig, gemma_variant
from pi0_model.errors import ConfigError


def test_pi0_matches_the_paper_and_openpi():
    config = Pi0Config.pi0()
    assert (config.vision.width, config.vision.depth, config.vision.mlp_dim, config.vision.num_heads) == (
        1152,
        27,
        4304,
        16,
    )
    assert (config.vision.patch_size, config.vision.image_size, config.vision.tokens_per_image) == (14, 224, 256)
    assert config.llm == GemmaConfig(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256)
    assert config.expert == GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
    assert (config.vocab_size, config.max_token_len) == (257152, 48)
    assert (config.state_dim, config.action_dim, config.action_horizon, config.num_steps) == (32, 32, 50, 10)
    assert (config.time_min_period, config.time_max_period) == (4e-3, 4.0)
    assert config.prefix_len == 3 * 256 + 48
    assert config.suffix_len == 51
    assert CAMERA_SLOTS == ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def test_tiny_keeps_the_real_interfaces():
    tiny = Pi0Config.tiny()
    real = Pi0Config.pi0()
    for name in ("max_token_len", "state_dim", "action_dim", "action_horizon", "num_steps"):
        assert getattr(tiny, name) == getattr(real, name)
    assert tiny.vision.image_size == 224
    assert tiny.llm.width < 100 and tiny.expert.width <= 128, "tiny"
    assert tiny.expert.width >= 4 * tiny.action_dim, "room for the noise next to the context (docs/demo.md)"


def test_variants_by_name():
    assert gemma_variant("gemma_2b") == GEMMA_2B
    assert gemma_variant("gemma_300m_lora") == GEMMA_300M
    with pytest.raises(ConfigError, match="unknown Gemma variant 'gemma_7b'"):
        gemma_variant("gemma_7b")


def test_dict_round_trip():
    config = Pi0Config.tiny().replace(action_horizon=20, num_steps=4)
    assert Pi0Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Pi0Config(action_horizon=0), "action_horizon must be a positive int"),
        (lambda: Pi0Config(num_steps=2.5), "num_steps must be a positive int"),
        (lambda: Pi0Config(max_token_len=True), "max_token_len must be a positive int"),
        (lambda: Pi0Config(rope_theta=-1.0), "rope_theta must be a positive finite number"),
        (lambda: Pi0Config(rope_theta="x"), "rope_theta must be a positive finite number, got 'x'"),
        (lambda: Pi0Config(time_min_period=None), "time_min_period must be a positive finite number"),
        (lambda: Pi0Config(time_max_period=float("inf")), "time_max_period must be a positive finite number"),
        (lambda: VisionConfig(layer_norm_eps="a"), "layer_norm_eps must be a positive finite number"),
        (lambda: Pi0Config(max_token_len=1), "max_token_len must be >= 2"),
        (lambda: Pi0Config(time_min_period=5.0), "time_min_period < time_max_period"),
        (lambda: Pi0Config(expert=GemmaConfig(1024, 12, 4096, 8, 1, 256)), "llm.depth .* must equal expert.depth"),
        (
            lambda: Pi0Config(expert=GemmaConfig(1024, 18, 4096, 8, 1, 128)),
            "llm.head_dim .* must equal expert.head_dim",
        ),
        (lambda: GemmaConfig(64, 2, 128, 3, 2, 16), "multiple of num_kv_heads"),
        (lambda: GemmaConfig(64, 2, 128, 2, 1, 15), "head_dim must be even"),
        (lambda: VisionConfig(image_size=225), "multiple of patch_size"),
        (lambda: VisionConfig(width=100, num_heads=16), "must divide by num_heads"),
        (lambda: Pi0Config.from_dict({"horizon": 5}), r"unknown Pi0Config fields: \['horizon'\]"),
        (lambda: Pi0Config.from_dict({"vision": {"widht": 3}}), "malformed Pi0Config"),
    ],
)
def test_bad_values_raise_clear_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Pi0Config(action_dim=-3)
