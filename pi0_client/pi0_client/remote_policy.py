"""RemotePolicy: a policy server used like a local Pi0Policy (images, state, prompt in; Inference out).

    policy = RemotePolicy.connect("ws://gpu-host:8000", fmt, action_dim=14)
    policy.metadata.supports_rtc
    result = policy.infer(images, state, "fold the towel", rtc=guidance)   # -> Inference

`fmt` is the robot's ObservationFormat (its openpi family and camera mapping).
The server's metadata is checked against it once at connect; every response
is validated once here (protocol.decode_response), so what comes back is as
trustworthy as a local Inference. Errors are typed (errors.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from .errors import IncompatibleServer, ResponseError, RtcUnsupported
from .interface import Inference, RtcGuidance
from .observation_formats import ObservationFormat
from .protocol import RTC_KEY, ServerMetadata, decode_response, encode_rtc
from .websocket_client import DEFAULT_MAX_FRAME_BYTES, DEFAULT_OPEN_TIMEOUT, WebsocketClient, connect_with_backoff


class RemotePolicy:
    """One session with a policy server for one robot; not for concurrent callers (one inference worker)."""

    def __init__(
        self,
        client: WebsocketClient,
        observation_format: ObservationFormat,
        action_dim: int | None = None,
        response_timeout: float | None = None,
    ) -> None:
        """Wraps a connected client; raises IncompatibleServer when its metadata contradicts this robot."""
        self._client = client
        self._format = observation_format
        self._response_timeout = response_timeout
        try:
            self.metadata = ServerMetadata.parse(client.metadata)
            self._action_dim = _agreed_action_dim(self.metadata, observation_format, action_dim)
        except IncompatibleServer:
            client.close()
            raise

    @classmethod
    def connect(
        cls,
        url: str,
        observation_format: ObservationFormat,
        *,
        action_dim: int | None = None,
        api_key: str | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        response_timeout: float | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        retry_for_s: float = 0.0,
    ) -> RemotePolicy:
        """Connects (retrying an unreachable server for up to `retry_for_s`) and checks the metadata.

        action_dim: the robot's action length, checked against the server's and every response.
        response_timeout: s to wait for one response (None: no limit); on expiry ResponseTimeout.
        Raises ConnectError, ProtocolError or IncompatibleServer.
        """
        client = connect_with_backoff(
            url,
            deadline_s=retry_for_s,
            api_key=api_key,
            open_timeout=open_timeout,
            max_frame_bytes=max_frame_bytes,
        )
        return cls(client, observation_format, action_dim, response_timeout)

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def closed(self) -> bool:
        return self._client.closed

    def infer(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray,
        prompt: str,
        rtc: RtcGuidance | None = None,
    ) -> Inference:
        """One action chunk from the server.

        images: robot camera name -> uint8 [H, W, 3] RGB; state: the robot's state vector.
        Raises ObservationError (an InputError; nothing sent) for bad inputs, RtcUnsupported (nothing sent)
        when `rtc` is given but the server does not serve it (or not that schedule), and the client's
        RemoteErrors (ResponseError for unusable actions) after which the session is closed.
        """
        observation = self._format.encode(images, state, prompt)
        if rtc is not None:
            if rtc.schedule not in self.metadata.rtc_schedules:
                served = list(self.metadata.rtc_schedules) or "no RTC"
                raise RtcUnsupported(f"{self.url} does not serve RTC schedule {rtc.schedule!r} (serves {served})")
            observation[RTC_KEY] = encode_rtc(rtc)
        start = time.perf_counter()
        response = self._client.infer(observation, timeout=self._response_timeout)
        round_trip_ms = (time.perf_counter() - start) * 1e3
        try:
            return decode_response(response, round_trip_ms, self.metadata.action_horizon, self._action_dim, rtc)
        except ResponseError:
            # A server that sends unusable actions is not trusted with the next request either.
            self._client.close()
            raise

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _agreed_action_dim(
    metadata: ServerMetadata, observation_format: ObservationFormat, action_dim: int | None
) -> int | None:
    """The action length both sides agree on; IncompatibleServer when the server's metadata says otherwise."""
    family = metadata.observation_family
    if family is not None and family != observation_format.family:
        raise IncompatibleServer(
            f"the server reads {family} observations, this robot sends {observation_format.family}"
        )
    if metadata.state_dim is not None and metadata.state_dim != observation_format.state_dim:
        raise IncompatibleServer(
            f"the server's robot has a state of {metadata.state_dim}, this one {observation_format.state_dim}"
        )
    if action_dim is not None and metadata.action_dim is not None and action_dim != metadata.action_dim:
        raise IncompatibleServer(f"the server returns {metadata.action_dim} action dims, this robot has {action_dim}")
    return action_dim if action_dim is not None else metadata.action_dim
