"""Flow matching for pi0 and pi0.5: the training loss, the Euler sampler and real-time chunking.

Convention (openpi): t = 1 is pure noise and t = 0 is data,

    x_t = t * noise + (1 - t) * actions,      u = dx_t/dt = noise - actions,

the network predicts v ~ u, and sampling integrates from t = 1 down to 0 with
Euler steps x <- x - v / num_steps, the time accumulated in float32 as openpi
does (`time_grid`).

Real-time chunking (Black, Galliker, Levine 2025, arXiv 2506.07339): while a
chunk executes, the next one is inferred. Its first `frozen_steps` actions
will already have been executed from the previous chunk when it arrives, and
the rest of the overlap should continue the previous plan. The sampler treats
this as inpainting with pseudo-inverse guidance (PiGDM): at every step it
predicts the clean chunk x_hat = x_t - t * v, measures the weighted error to
the previous chunk, and corrects the velocity with the vector-Jacobian
product of that error through the network, with a clipped guidance weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pi0_client.interface import RTC_SCHEDULES

from .model import KVCache, ModelInputs, Pi0Model, Prefix, SuffixContext

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]

# Flow times for training follow openpi: t = 0.001 + 0.999 * Beta(1.5, 1).
# Beta(1.5, 1) puts more mass near t = 1 (noisy), where denoising is hardest;
# the affine map keeps t away from 0, where the target is trivially the data.
TIME_BETA_ALPHA = 1.5
TIME_SCALE = 0.999
TIME_OFFSET = 0.001


def sample_time(batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training flow times t ~ 0.001 + 0.999 * Beta(1.5, 1) -> [B] float32.

    Beta(a, 1) has CDF t^a, so t = U^(1/a) for uniform U; sampling by inverting
    the CDF keeps the draw on the caller's generator.
    """
    uniform = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float32)
    return uniform.pow(1.0 / TIME_BETA_ALPHA) * TIME_SCALE + TIME_OFFSET


def flow_matching_loss(
    model: Pi0Model,
    inputs: ModelInputs,
    actions: torch.Tensor,
    noise: torch.Tensor | None = None,
    time: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-element squared error between predicted and target flow -> [B, H, action_dim].

    actions: [B, H, action_dim] normalized and zero-padded. Reduce (and crop
    the padded dimensions, if wanted) at the call site.
    """
    if noise is None:
        noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=torch.float32)
    if time is None:
        time = sample_time(actions.shape[0], actions.device, generator)
    t = time[:, None, None]
    noisy = t * noise + (1 - t) * actions
    target = noise - actions
    predicted = model.velocity_joint(model.embed_prefix(inputs), inputs.state, noisy, time)
    return (predicted - target).pow(2)


@dataclass(frozen=True)
class PrefixGuidance:
    """Real-time chunking target in model space (normalized, padded, horizon-long)."""

    target: torch.Tensor  # [B, H, action_dim] previous chunk, time-aligned; rows past the overlap are ignored
    weights: torch.Tensor  # [B or 1, H, action_dim] soft mask from `rtc_weights`, 0 on padded dims
    frozen_steps: int  # rows [0, frozen_steps) are returned equal to `target`
    max_guidance_weight: float  # clip of the guidance weight (the paper's beta)


def rtc_weights(horizon: int, frozen_steps: int, overlap: int, schedule: str = "exp") -> torch.Tensor:
    """The paper's soft mask over chunk rows -> [horizon] float32.

    1 for the frozen rows, then decaying to 0 across the rest of the overlap
    with the previous chunk, 0 after it. "exp" is the paper's schedule
    c * (e^c - 1) / (e - 1) over the linear ramp c; "linear" is the ramp itself.
    """
    if schedule not in RTC_SCHEDULES:
        raise ValueError(f"unknown RTC schedule {schedule!r}; choose from {RTC_SCHEDULES}")
    if not 0 <= frozen_steps <= overlap <= horizon:
        raise ValueError(f"need 0 <= frozen_steps ({frozen_steps}) <= overlap ({overlap}) <= horizon ({horizon})")
    rows = torch.arange(horizon, dtype=torch.float32)
    ramp = ((overlap - rows) / (overlap - frozen_steps + 1)).clamp(0.0, 1.0)
    ramp[:frozen_steps] = 1.0
    if schedule == "exp":
        ramp = ramp * torch.expm1(ramp) / (math.e - 1)
    ramp[overlap:] = 0.0
    return ramp


def guidance_weight(time: float, max_weight: float) -> float:
    """PiGDM weight min(beta, (1 - tau) / (tau * r^2)) with r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).

    tau = 1 - t is the paper's time (0 = noise). The expression simplifies to
    (tau^2 + (1 - tau)^2) / (tau (1 - tau)) and diverges at both ends, where the clip applies.
    """
    tau = 1.0 - time
    if tau <= 0.0 or tau >= 1.0:
        return max_weight
    return min(max_weight, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))


def _guided_velocity(velocity: VelocityFn, x: torch.Tensor, time: float, guidance: PrefixGuidance) -> torch.Tensor:
    """v corrected toward the previous chunk: v - w * J^T (W * (target - x_hat)), x_hat = x - t * v.

    The sign follows from this package's time direction: the paper's update
    A += (v_paper + w g) / n with v_paper = -v equals x += dt * (v - w g) for dt = -1/n.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, time)
        predicted_clean = x - time * v
        error = (guidance.target - predicted_clean) * guidance.weights
        (correction,) = torch.autograd.grad(predicted_clean, x, grad_outputs=error)
    return v.detach() - guidance_weight(time, guidance.max_guidance_weight) * correction


def time_grid(num_steps: int) -> list[float]:
    """Flow time of each Euler step: 1, 1 + dt, ... accumulated in float32 (openpi's `time += dt`).

    Summing float32 steps drifts from the exact grid 1 - k / num_steps by up to
    ~1e-7; the sampler follows openpi's drift rather than the exact values.
    """
    dt = np.float32(-1.0 / num_steps)
    times = [np.float32(1.0)]
    for _ in range(num_steps - 1):
        times.append(np.float32(times[-1] + dt))
    return [float(time) for time in times]


def euler_denoise(
    velocity: VelocityFn, noise: torch.Tensor, num_steps: int, guidance: PrefixGuidance | None = None
) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 in `num_steps` Euler steps -> [B, H, action_dim].

    With guidance, every step uses the guided velocity and the frozen rows are
    set to the target at the end, so they are exact (the robot executes them
    from the previous chunk anyway).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = -1.0 / num_steps  # applied as float32, like openpi's float32 dt
    x = noise
    for time in time_grid(num_steps):
        v = velocity(x, time) if guidance is None else _guided_velocity(velocity, x, time, guidance)
        x = x + dt * v
    if guidance is not None and guidance.frozen_steps > 0:
        x = x.clone()
        x[:, : guidance.frozen_steps] = guidance.target[:, : guidance.frozen_steps]
    return x


def cached_velocity(
    model: Pi0Model,
    cache: KVCache,
    state: torch.Tensor,
    step: Callable[[KVCache, SuffixContext, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> VelocityFn:
    """Velocity function that reuses the prefix KV cache: each call runs only the expert.

    `step` replaces `model.velocity`, e.g. by a torch.compile'd version of it.
    """
    context = model.suffix_context(cache.valid)
    step = step or model.velocity

    def velocity(x: torch.Tensor, time: float) -> torch.Tensor:
        t = torch.full((x.shape[0],), time, dtype=torch.float32, device=x.device)
        return step(cache, context, state, x, t)

    return velocity


def joint_velocity(model: Pi0Model, prefix: Prefix, state: torch.Tensor) -> VelocityFn:
    """Velocity function that reruns prefix and suffix together on every call (no cache)."""

    def velocity(x: torch.Tensor, time: float) -> torch.Tensor:
        t = torch.full((x.shape[0],), time, dtype=torch.float32, device=x.device)
        return model.velocity_joint(prefix, state, x, t)

    return velocity


def sample_actions(
    model: Pi0Model,
    inputs: ModelInputs,
    noise: torch.Tensor,
    num_steps: int,
    guidance: PrefixGuidance | None = None,
    use_kv_cache: bool = True,
) -> torch.Tensor:
    """Sample a normalized, padded action chunk [B, H, action_dim] for a batch of observations.

    With the KV cache (default) the prefix runs once and each step runs only
    the expert; without it every step reruns the whole sequence (reference path).
    """
    prefix = model.embed_prefix(inputs)
    if use_kv_cache:
        velocity = cached_velocity(model, model.encode_prefix(prefix), inputs.state)
    else:
        velocity = joint_velocity(model, prefix, inputs.state)
    return euler_denoise(velocity, noise, num_steps, guidance)
