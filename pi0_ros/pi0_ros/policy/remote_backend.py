"""A PolicyBackend served by a policy server over openpi's websocket protocol (pi0_serve, openpi's serve_policy).

Needs neither torch nor pi0_model: a robot PC runs the policy node with `policy_server:=ws://host:port`
and the GPU host does the inference. One thread keeps a session open: it connects, and after a lost
session reconnects, with doubling delays up to `reconnect_max_s`; the inference worker only ever finds
a session or the reason there is none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from pi0_client.errors import ConnectionLost, ProtocolError, RemoteError, RtcUnsupported, ServerError
from pi0_client.interface import Inference, RtcGuidance
from pi0_client.observation_formats import ObservationFormat
from pi0_client.remote_policy import RemotePolicy
from pi0_ros.policy.policy_backend import PolicyUnavailableError

RECONNECT_MIN_S = 0.25  # first retry delay after a failed connect; doubles up to RemoteSettings.reconnect_max_s


@dataclass(frozen=True)
class RemoteSettings:
    url: str  # ws://host:port of the policy server
    api_key: str | None = None  # sent as "Authorization: Api-Key <key>"
    open_timeout_s: float = 3.0  # for one connection attempt (TCP, handshake, metadata frame)
    response_timeout_s: float = 2.0  # a response later than this ends the goal and the session
    reconnect_max_s: float = 5.0  # longest wait between connection attempts

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"policy server must be a ws:// or wss:// URL, got '{self.url}'")
        if not (self.open_timeout_s > 0 and self.response_timeout_s > 0 and self.reconnect_max_s >= RECONNECT_MIN_S):
            raise ValueError(f"invalid policy server timeouts: {self}")


class RemoteBackend:
    """The policy node's PolicyBackend for a policy server; start() begins connecting in the background."""

    def __init__(
        self,
        settings: RemoteSettings,
        observation_format: ObservationFormat,
        action_dim: int,
        log_info: Callable[[str], None],
        log_warning: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._format = observation_format
        self._action_dim = action_dim
        self._log_info, self._log_warning = log_info, log_warning
        self._lock = threading.Lock()
        self._session: RemotePolicy | None = None
        self._problem = "not connected yet"  # why there is no session
        self._connected = threading.Event()
        self._session_lost = threading.Event()  # wakes the connection thread to connect again
        self._closing = threading.Event()
        self._rtc_warned = False
        self._thread = threading.Thread(target=self._keep_connected, name="pi0_policy_server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def infer(
        self, images: Mapping[str, np.ndarray], state: np.ndarray, instruction: str, rtc: RtcGuidance | None
    ) -> Inference:
        with self._lock:
            session = self._session
        if session is None:
            raise PolicyUnavailableError(self.unavailable_reason())
        if rtc is not None and rtc.schedule not in session.metadata.rtc_schedules:
            if not self._rtc_warned:
                self._rtc_warned = True
                self._log_warning(
                    f"policy server {self.settings.url} does not offer real-time chunking: chunk_handover 'rtc' "
                    "falls back to 'blend' (the streamer cross-fades chunks that come without guidance)"
                )
            rtc = None
        try:
            return session.infer(images, state, instruction, rtc)
        except RtcUnsupported:  # only if the metadata said otherwise; a stale session cannot be trusted
            self._drop(session, "it refused the real-time chunking it advertised")
            raise
        except (ServerError, ProtocolError) as exc:
            # The server answered, with an error or unusably (ResponseError: wrong shape, NaN): the goal fails
            # with that diagnostic, and the session, which the client closed, is opened again.
            self._drop(session, f"{type(exc).__name__}")
            raise
        except ConnectionLost as exc:
            self._drop(session, f"{type(exc).__name__}: {exc}")
            raise PolicyUnavailableError(f"policy server {self.settings.url} lost: {exc}") from None

    def unavailable_reason(self) -> str:
        with self._lock:
            if self._session is not None:
                return ""
            return f"policy server {self.settings.url} is unreachable: {self._problem}"

    def describe(self) -> str:
        return f"policy server {self.settings.url}"

    def close(self) -> None:
        self._closing.set()
        self._session_lost.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.settings.open_timeout_s + 1.0)
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def _drop(self, session: RemotePolicy, why: str) -> None:
        session.close()
        with self._lock:
            if self._session is session:
                self._session = None
                self._problem = f"the session ended ({why}); reconnecting"
                self._connected.clear()
        self._log_warning(f"policy server {self.settings.url}: session ended ({why}); reconnecting")
        self._session_lost.set()

    def _keep_connected(self) -> None:
        delay = RECONNECT_MIN_S
        last_logged = ""
        while not self._closing.is_set():
            try:
                session = RemotePolicy.connect(
                    self.settings.url,
                    self._format,
                    action_dim=self._action_dim,
                    api_key=self.settings.api_key,
                    open_timeout=self.settings.open_timeout_s,
                    response_timeout=self.settings.response_timeout_s,
                )
            except RemoteError as exc:  # unreachable, refused (401), incompatible: all retried
                problem = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._problem = problem
                if problem != last_logged:  # once per distinct reason, not every retry
                    last_logged = problem
                    self._log_warning(f"policy server {self.settings.url} not usable ({problem}); retrying")
                self._closing.wait(delay)
                delay = min(2 * delay, self.settings.reconnect_max_s)
                continue
            delay, last_logged = RECONNECT_MIN_S, ""
            self._session_lost.clear()
            with self._lock:
                self._session = session
            self._connected.set()
            metadata = session.metadata
            self._log_info(
                f"connected to policy server {self.settings.url}: horizon {metadata.action_horizon}, "
                f"real-time chunking {'yes' if metadata.supports_rtc else 'no'}"
            )
            self._session_lost.wait()
