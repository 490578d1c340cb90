"""pi0_serve's backend: a request map through the robot's observation format into Pi0Policy.infer and back.

Sampling noise is a function of the server seed and the request's index on its
connection (`request_noise`), not of a generator shared by every client: the
n-th chunk a client gets depends only on its own requests, and anyone can
reproduce it locally with `Pi0Policy.infer(..., noise=request_noise(seed, n, shape))`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from pi0_client.protocol import RTC_KEY, decode_rtc, encode_response, server_metadata
from pi0_model.policy import Pi0Policy
from pi0_ros.core.robot_description import RobotDescription


def request_noise(seed: int, request_index: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of a connection's request `request_index` (0-based) on a server with `seed`."""
    return np.random.default_rng([seed, request_index]).standard_normal(shape, dtype=np.float32)


class Pi0Backend:
    def __init__(
        self, policy: Pi0Policy, description: RobotDescription, seed: int, model: str, added_latency_s: float = 0.0
    ) -> None:
        """`model` names what is served in the metadata (a checkpoint path, "tiny"); `added_latency_s` delays
        every response (fault injection: rehearses a slow network or GPU against the robot's hand-over)."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not 0 <= added_latency_s <= 10:
            raise ValueError(f"added latency must be within [0, 10] s, got {added_latency_s}")
        self._added_latency_s = added_latency_s
        self._policy = policy
        self._format = description.observation_format()
        self._seed = seed
        self._noise_shape = (policy.horizon, policy.config.action_dim)
        # The family may carry cameras the policy does not use (ALOHA's cam_low): validated, then not passed on.
        self._policy_cameras = frozenset(c.name for c in description.policy_cameras)
        self._metadata = server_metadata(
            action_horizon=policy.horizon,
            action_dim=policy.io.action_dim,
            state_dim=policy.io.state_dim,
            observation_family=self._format.family,
            rtc=True,
            extra={"pi0/robot": description.name, "pi0/model": model, "pi0/actions": list(description.policy.actions)},
        )

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def infer(self, request: Mapping[str, Any], request_index: int) -> dict[str, Any]:
        """Raises InputError (ObservationError, Pi0InputError) for requests the policy cannot use."""
        observation = self._format.decode(request)
        rtc = decode_rtc(request[RTC_KEY]) if RTC_KEY in request else None
        images = {name: image for name, image in observation.images.items() if name in self._policy_cameras}
        result = self._policy.infer(
            images,
            observation.state,
            observation.prompt,
            noise=request_noise(self._seed, request_index, self._noise_shape),
            rtc=rtc,
        )
        if self._added_latency_s:
            time.sleep(self._added_latency_s)  # on the inference thread: the event loop stays responsive
        return encode_response(result)
