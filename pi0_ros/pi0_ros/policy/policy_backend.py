"""Where the policy node's chunks come from: pi0 in this process (model_loader.LocalPolicy) or a
policy server on another host. The node chooses one at configure and uses it through this protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from pi0_client.interface import Inference, RtcGuidance


class PolicyUnavailableError(RuntimeError):
    """The policy cannot answer now (its server is unreachable or was lost); the message says why."""


class PolicyBackend(Protocol):
    def infer(
        self, images: Mapping[str, np.ndarray], state: np.ndarray, instruction: str, rtc: RtcGuidance | None
    ) -> Inference:
        """One chunk for an observation (images: camera -> uint8 [H, W, 3]; state in the description's order).

        Raises PolicyUnavailableError when the policy cannot be reached; any other error is a failed inference.
        """
        ...

    def unavailable_reason(self) -> str:
        """Why goals cannot run now; "" when they can."""
        ...

    def describe(self) -> str:
        """What runs the policy, for logs."""
        ...

    def close(self) -> None: ...
