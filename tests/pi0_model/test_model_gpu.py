"""CUDA-only checks (skipped without a GPU): device placement, bf16 numerics, KV cache on GPU."""

import numpy as np
import pytest
import torch
from tiny_pi0 import ALOHA_CAMERAS, aloha_state, camera_frames, make_inputs, make_tiny_model

from pi0_client.interface import RtcGuidance
from pi0_model.flow_matching import sample_actions
from pi0_model.policy import Pi0Policy, RobotIO

pytestmark = pytest.mark.gpu


def test_tiny_policy_on_cuda_matches_cpu(rng):
    io = RobotIO(camera_slots=ALOHA_CAMERAS, state_dim=14, action_dim=14, transforms=("aloha",))
    cpu, gpu = Pi0Policy.tiny(io, seed=0), Pi0Policy.tiny(io, seed=0, device="cuda")
    gpu.model.load_state_dict(cpu.model.state_dict())
    frames, state, noise = camera_frames(rng, ALOHA_CAMERAS, (224, 224, 3)), aloha_state(rng), rng.normal(size=(50, 32))
    a = cpu.infer(frames, state, "fold the towel", noise=noise).actions
    b = gpu.infer(frames, state, "fold the towel", noise=noise).actions
    np.testing.assert_allclose(a, b, atol=1e-3)
    rtc = gpu.infer(frames, state, "fold the towel", rtc=RtcGuidance(b[5:], frozen_steps=3))
    assert np.array_equal(rtc.actions[:3], b[5:8])


def test_bf16_kv_cache_sampling_on_cuda(tiny_config):
    model = make_tiny_model(seed=2, dtype=torch.bfloat16).to("cuda")
    inputs = make_inputs(tiny_config, batch=2, slots=3)
    inputs = type(inputs)(
        *(t.to("cuda") for t in (inputs.images, inputs.image_masks, inputs.tokens, inputs.token_mask, inputs.state))
    )
    noise = torch.randn(2, tiny_config.action_horizon, tiny_config.action_dim, device="cuda")
    with torch.inference_mode():
        cached = sample_actions(model, inputs, noise, 10, use_kv_cache=True)
        full = sample_actions(model, inputs, noise, 10, use_kv_cache=False)
    assert torch.isfinite(cached).all()
    assert (cached - full).abs().max() < 0.1
