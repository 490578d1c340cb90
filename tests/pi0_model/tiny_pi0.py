"""Tiny random pi0 and pi0.5 models and observations for the pi0_model tests (CPU, no downloads)."""

from __future__ import annotations

import numpy as np
import torch

from pi0_model.config import Pi0Config
from pi0_model.flow_matching import flow_matching_loss, sample_time
from pi0_model.model import ModelInputs, Pi0Model, build_model, initialize_weights_

ALOHA_CAMERAS = {"cam_high": "base_0_rgb", "cam_left_wrist": "left_wrist_0_rgb", "cam_right_wrist": "right_wrist_0_rgb"}


def make_tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, model_type: str = "pi0") -> Pi0Model:
    model = build_model(Pi0Config.tiny(model_type), "cpu", dtype)
    initialize_weights_(model, torch.Generator().manual_seed(seed))
    return model.eval()


def make_inputs(config: Pi0Config, batch: int = 2, slots: int = 3, seed: int = 0) -> ModelInputs:
    generator = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    lengths = torch.randint(3, config.max_token_len, (batch,), generator=generator)
    return ModelInputs(
        images=torch.rand(batch, slots, 3, size, size, generator=generator) * 2 - 1,
        image_masks=torch.ones(batch, slots, dtype=torch.bool),
        tokens=torch.randint(1, config.vocab_size, (batch, config.max_token_len), generator=generator),
        token_mask=torch.arange(config.max_token_len)[None] < lengths[:, None],
        state=torch.randn(batch, config.state_dim, generator=generator),
    )


def aloha_state(rng: np.random.Generator, dim: int = 14) -> np.ndarray:
    """A plausible ALOHA state: small joint angles, grippers inside ALOHA's normalized range."""
    state = rng.normal(scale=0.3, size=dim)
    state[[6, 13]] = rng.uniform(0.2, 0.8, size=2)
    return state


def camera_frames(rng: np.random.Generator, names, shape=(480, 640, 3)) -> dict[str, np.ndarray]:
    return {name: rng.integers(0, 256, shape, dtype=np.uint8) for name in names}


def overfit_losses(model: Pi0Model, config: Pi0Config, steps: int = 60) -> list[float]:
    """Flow-matching losses of `steps` Adam steps on one fixed tiny batch (fixed actions, noise and times)."""
    model.train().requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    inputs = make_inputs(config, batch=2, slots=1, seed=1)
    actions = torch.randn(2, config.action_horizon, config.action_dim, generator=generator) * 0.5
    noise = torch.randn(actions.shape, generator=generator)
    time = sample_time(2, torch.device("cpu"), generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = flow_matching_loss(model, inputs, actions, noise, time).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
