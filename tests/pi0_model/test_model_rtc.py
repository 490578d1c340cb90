"""Real-time chunking (arXiv 2506.07339): soft mask, guidance weight, and guided sampling."""

import math

import pytest
import torch
from tiny_pi0 import make_inputs

from pi0_model.flow_matching import PrefixGuidance, cached_velocity, euler_denoise, guidance_weight, rtc_weights


def test_linear_mask_matches_the_reference_example():
    # Example from the reference implementation: start=2, end=6, total=10.
    assert rtc_weights(10, 2, 6, "linear").tolist() == pytest.approx([1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0])


def test_exp_mask_decays_from_one_to_zero():
    linear = rtc_weights(50, 5, 30, "linear")
    exp = rtc_weights(50, 5, 30, "exp")
    assert torch.allclose(exp, linear * torch.expm1(linear) / (math.e - 1))
    assert exp[:5].tolist() == [1.0] * 5
    assert (exp[5:30] > 0).all() and (exp[5:30] < 1).all()
    assert (exp[5:30].diff() < 0).all()
    assert exp[30:].eq(0).all()


@pytest.mark.parametrize("args", [(10, 5, 4), (10, 0, 11), (10, -1, 3)])
def test_mask_rejects_inconsistent_arguments(args):
    with pytest.raises(ValueError):
        rtc_weights(*args)


def test_guidance_weight_is_clipped_and_symmetric():
    assert guidance_weight(1.0, 5.0) == 5.0  # first step: pure noise
    assert guidance_weight(0.0, 5.0) == 5.0
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert guidance_weight(0.3, 100.0) == pytest.approx(guidance_weight(0.7, 100.0))
    assert guidance_weight(0.9, 5.0) == 5.0  # 0.82 / 0.09 > 5


def test_guided_sampling_freezes_and_follows_the_previous_chunk(tiny_model, tiny_config):
    horizon, width = tiny_config.action_horizon, tiny_config.action_dim
    inputs = make_inputs(tiny_config, batch=1, slots=2, seed=4)
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(1, horizon, width, generator=generator)
    with torch.no_grad():
        cache = tiny_model.encode_prefix(tiny_model.embed_prefix(inputs))
        velocity = cached_velocity(tiny_model, cache, inputs.state)
        free = euler_denoise(velocity, noise, 10)
        # A plausible previous plan: another sample of the same policy.
        previous = euler_denoise(velocity, torch.randn(1, horizon, width, generator=generator), 10)
        frozen, overlap = 4, 30
        weights = rtc_weights(horizon, frozen, overlap)[None, :, None].expand(1, horizon, width)
        guidance = PrefixGuidance(previous, weights, frozen, max_guidance_weight=5.0)
        guided = euler_denoise(velocity, noise, 10, guidance)

    assert torch.equal(guided[:, :frozen], previous[:, :frozen])

    def distance(chunk: torch.Tensor, rows: slice) -> float:
        return float((chunk[:, rows] - previous[:, rows]).abs().mean())

    early_guided = slice(frozen, frozen + 10)  # where the soft mask is still close to 1
    assert distance(guided, early_guided) < 0.3 * distance(free, early_guided)
    assert distance(guided, slice(frozen, overlap)) < distance(free, slice(frozen, overlap))
    assert torch.isfinite(guided).all()
