"""Flow matching: time sampling, the loss, training, and the Euler sampler with and without KV cache."""

import pytest
import torch
from tiny_pi0 import make_inputs, make_tiny_model, overfit_losses

from pi0_model.flow_matching import euler_denoise, flow_matching_loss, sample_actions, sample_time


def test_time_follows_scaled_beta_1_5_1():
    t = sample_time(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() >= 0.001 and t.max() <= 1.0
    # Beta(1.5, 1): mean 0.6, P(t < 0.5) = 0.5 ** 1.5.
    assert float(t.mean()) == pytest.approx(0.001 + 0.999 * 0.6, abs=3e-3)
    assert float((t < 0.001 + 0.999 * 0.5).float().mean()) == pytest.approx(0.5**1.5, abs=3e-3)


def test_time_sampling_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = sample_time(8, torch.device("cpu"), torch.Generator().manual_seed(5))
    b = sample_time(8, torch.device("cpu"), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_loss_target_is_noise_minus_actions(tiny_model, tiny_config):
    """With t = 1 the model input is pure noise; the loss must compare against u = noise - actions."""
    inputs = make_inputs(tiny_config, batch=1, slots=1)
    actions = torch.randn(1, tiny_config.action_horizon, tiny_config.action_dim)
    noise = torch.randn_like(actions)
    time = torch.tensor([1.0])
    with torch.no_grad():
        loss = flow_matching_loss(tiny_model, inputs, actions, noise, time)
        predicted = tiny_model.velocity_joint(tiny_model.embed_prefix(inputs), inputs.state, noise, time)
    assert torch.allclose(loss, (predicted - (noise - actions)) ** 2, atol=1e-6)


def test_a_few_training_steps_overfit_a_tiny_batch(tiny_config):
    losses = overfit_losses(make_tiny_model(seed=1), tiny_config)
    assert losses[-1] < 0.25 * losses[0], losses


def test_kv_cache_sampling_equals_full_sequence_sampling(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, batch=2, slots=2)
    inputs.token_mask[0, 10:] = False
    noise = torch.randn(
        2, tiny_config.action_horizon, tiny_config.action_dim, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        cached = sample_actions(tiny_model, inputs, noise, num_steps=10, use_kv_cache=True)
        full = sample_actions(tiny_model, inputs, noise, num_steps=10, use_kv_cache=False)
    assert torch.allclose(cached, full, atol=1e-4)
    assert not torch.allclose(cached, noise)


def test_fixed_noise_gives_identical_chunks(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, batch=1, slots=3)
    noise = torch.randn(1, tiny_config.action_horizon, tiny_config.action_dim)
    with torch.no_grad():
        first = sample_actions(tiny_model, inputs, noise, num_steps=5)
        second = sample_actions(tiny_model, inputs, noise.clone(), num_steps=5)
        other = sample_actions(tiny_model, inputs, torch.randn_like(noise), num_steps=5)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_euler_integrates_a_known_flow():
    """For the exact flow of a single data point a, v(x, t) = (x - a) / t; Euler lands on a."""
    target = torch.randn(1, 4, 3)
    noise = torch.randn(1, 4, 3)

    def velocity(x: torch.Tensor, time: float) -> torch.Tensor:
        return (x - target) / time

    for steps in (1, 3, 10):
        assert torch.allclose(euler_denoise(velocity, noise, steps), target, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        euler_denoise(velocity, noise, 0)
