"""What goes into and comes out of one pi0 inference besides the observation, local (`Pi0Policy.infer`) or
remote (`RemotePolicy.infer`): torch-free, so a runtime that only plans real-time chunking or handles results
(the ROS inference worker, a robot PC talking to a policy server) needs no ML stack."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

RTC_SCHEDULES = ("exp", "linear")  # soft-mask decay over the guided overlap


@dataclass(frozen=True)
class RtcGuidance:
    """Real-time chunking request (arXiv 2506.07339), in robot units and order.

    Row k of `previous_actions` is the previous chunk's action for the new
    observation time + k * dt. Rows [0, frozen_steps) execute while this
    inference runs and are returned exactly; the rest of the overlap is guided
    toward the previous chunk with the paper's decaying soft mask; rows past
    len(previous_actions) are free.
    """

    previous_actions: np.ndarray  # [rows <= horizon, action_dim], unnormalized
    frozen_steps: int  # actions that will execute during inference
    max_guidance_weight: float = 5.0  # the paper's clip beta on the guidance weight
    schedule: str = "exp"  # soft-mask decay over the overlap: "exp" (paper) or "linear"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.frozen_steps, (int, np.integer))
            or isinstance(self.frozen_steps, bool)
            or self.frozen_steps < 0
        ):
            raise InputError(f"RtcGuidance.frozen_steps must be an int >= 0, got {self.frozen_steps!r}")
        if not self.max_guidance_weight > 0:
            raise InputError(f"RtcGuidance.max_guidance_weight must be > 0, got {self.max_guidance_weight!r}")
        if self.schedule not in RTC_SCHEDULES:
            raise InputError(f"RtcGuidance.schedule must be one of {RTC_SCHEDULES}, got {self.schedule!r}")


@dataclass(frozen=True)
class InferenceTiming:
    """Wall-clock milliseconds of the phases of one `infer` call (device-synchronized on CUDA).

    For a remote call the phases are the server's, `total_ms` is the round trip the caller waited, and
    `transport_ms` what of it the server did not spend inferring (encoding, network, decoding).
    """

    preprocess_ms: float
    prefix_ms: float
    denoise_ms: float
    postprocess_ms: float
    total_ms: float
    transport_ms: float = 0.0  # 0 for a local call


@dataclass(frozen=True)
class Inference:
    actions: np.ndarray  # [horizon, action_dim] float64, unnormalized, robot action order
    timing: InferenceTiming
    frozen_steps: int = 0  # leading rows copied from RtcGuidance.previous_actions
    prompt_truncated: bool = False  # the instruction exceeded the token budget and was cut
