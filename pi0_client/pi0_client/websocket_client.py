"""A synchronous client of openpi's websocket policy-server protocol (see protocol.py for the protocol).

Like openpi's WebsocketClientPolicy, but every failure is a typed error (errors.py)
so a caller can tell an unreachable server from a lost session, a server-side
failure and a malformed frame, and nothing retries behind the caller's back:
`infer` sends one request and returns its response or raises; after a raise
other than InputError/CodecError from encoding, the session is closed and a
new client must be connected (`connect_with_backoff` helps with that).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import websockets.exceptions
import websockets.sync.client
from websockets.sync.client import ClientConnection

from . import msgpack_numpy
from .errors import CodecError, ConnectError, ConnectionLost, ProtocolError, ResponseTimeout, ServerError

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024  # responses and metadata are small; this bounds a misbehaving server
DEFAULT_OPEN_TIMEOUT = 10.0  # s for the TCP connect, the handshake and the metadata frame
CLOSE_CODE_WAIT = 1.0  # s to wait, after a server's text frame, for the close frame that carries its code
CLOSE_TIMEOUT = 2.0  # s a close handshake may take before the socket is dropped (a hung server)


class WebsocketClient:
    """One session with a policy server; use `WebsocketClient.connect`. Not for concurrent callers."""

    def __init__(self, connection: ClientConnection, metadata: dict[str, Any], url: str) -> None:
        self._connection = connection
        self._metadata = metadata
        self._url = url
        self._lock = threading.Lock()  # strictly one request in flight: responses are matched by order
        self._closed = False

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> WebsocketClient:
        """Opens a session and reads the server's metadata frame; raises ConnectError or ProtocolError."""
        check_url(url)
        if not open_timeout > 0 or max_frame_bytes < 1:
            raise ValueError(f"need open_timeout > 0 and max_frame_bytes >= 1, got {open_timeout}, {max_frame_bytes}")
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        # Entered as a context manager (websockets >= 17.1 deprecates anything else) that closes the connection
        # on every failure below; pop_all() hands it over to the session once the metadata is read.
        with contextlib.ExitStack() as on_failure:
            try:
                connection = on_failure.enter_context(
                    websockets.sync.client.connect(
                        url,
                        open_timeout=open_timeout,
                        max_size=max_frame_bytes,
                        compression=None,  # images do not compress; openpi disables it too
                        close_timeout=CLOSE_TIMEOUT,
                        additional_headers=headers,
                        # Robot-to-server traffic stays on the LAN: an HTTP(S)_PROXY set for downloads must not
                        # capture it.
                        proxy=None,
                    )
                )
            except websockets.exceptions.InvalidStatus as error:
                status = error.response.status_code
                hint = " (API key missing or wrong)" if status == 401 else ""
                raise ConnectError(f"{url} refused the websocket handshake: HTTP {status}{hint}", status) from error
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as error:
                raise ConnectError(f"cannot connect to {url}: {type(error).__name__}: {error}") from error
            try:
                frame = connection.recv(timeout=open_timeout)
            except TimeoutError as error:
                raise ConnectError(f"{url} sent no metadata frame within {open_timeout} s") from error
            except websockets.exceptions.ConnectionClosed as error:
                raise ConnectError(f"{url} closed before sending its metadata: {_close_text(error)}") from error
            if isinstance(frame, str):
                raise ConnectError(f"{url} sent an error instead of its metadata:\n{frame}")
            try:
                metadata = msgpack_numpy.unpackb(frame)
            except CodecError as error:
                raise ProtocolError(f"{url}: malformed metadata frame: {error}") from error
            if not isinstance(metadata, dict):
                raise ProtocolError(f"{url}: metadata must be a map, got {type(metadata).__name__}")
            on_failure.pop_all()
        return cls(connection, metadata, url)

    @property
    def metadata(self) -> dict[str, Any]:
        """The server's metadata map, as sent."""
        return self._metadata

    @property
    def url(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    def infer(self, observation: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Sends one observation map and returns the response map.

        Raises CodecError (nothing sent; the session stays usable) when the observation cannot be encoded;
        ServerError, ConnectionLost (ResponseTimeout after `timeout` s) or ProtocolError otherwise, after
        which the session is closed.
        """
        payload = msgpack_numpy.packb(dict(observation))
        with self._lock:
            if self._closed:
                raise ConnectionLost(f"the session with {self._url} is closed; connect again")
            try:
                return self._exchange(payload, timeout)
            except BaseException:
                self.close()
                raise

    def _exchange(self, payload: bytes, timeout: float | None) -> dict[str, Any]:
        try:
            self._connection.send(payload)
            frame = self._connection.recv(timeout=timeout)
        except TimeoutError as error:
            raise ResponseTimeout(f"no response from {self._url} within {timeout} s; session closed") from error
        except websockets.exceptions.ConnectionClosed as error:
            code = error.rcvd.code if error.rcvd is not None else None
            raise ConnectionLost(f"connection to {self._url} lost: {_close_text(error)}", code=code) from error
        if isinstance(frame, str):
            raise ServerError(frame, close_code=self._close_code())
        try:
            response = msgpack_numpy.unpackb(frame)
        except CodecError as error:
            raise ProtocolError(f"{self._url}: malformed response frame: {error}") from error
        if not isinstance(response, dict):
            raise ProtocolError(f"{self._url}: a response must be a map, got {type(response).__name__}")
        return response

    def _close_code(self) -> int | None:
        """After a text frame the server closes (openpi: 1011); the code says whether it failed or refused."""
        try:
            self._connection.recv(timeout=CLOSE_CODE_WAIT)
        except websockets.exceptions.ConnectionClosed as error:
            return error.rcvd.code if error.rcvd is not None else None
        except TimeoutError:
            return None
        return None  # a further frame breaks the protocol; the session is closed either way

    def close(self) -> None:
        """Closes the session (a clean close handshake, bounded by websockets' close timeout); idempotent."""
        self._closed = True
        self._connection.close()

    def __enter__(self) -> WebsocketClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect_with_backoff(
    url: str,
    *,
    deadline_s: float,
    initial_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    api_key: str | None = None,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> WebsocketClient:
    """Connects, retrying unreachable servers with doubling delays until `deadline_s` has passed.

    A refused handshake (HTTP status: a wrong API key, a wrong path) and a malformed metadata frame are
    not retried: waiting does not fix them. The last ConnectError is raised when the deadline passes.
    """
    if not (deadline_s >= 0 and 0 < initial_delay_s <= max_delay_s):
        raise ValueError(f"invalid backoff: deadline {deadline_s}, delays {initial_delay_s}..{max_delay_s}")
    give_up = time.monotonic() + deadline_s
    delay = initial_delay_s
    while True:
        try:
            return WebsocketClient.connect(
                url, api_key=api_key, open_timeout=open_timeout, max_frame_bytes=max_frame_bytes
            )
        except ConnectError as error:
            remaining = give_up - time.monotonic()
            if error.status is not None or remaining <= 0:
                raise
            logger.info("policy server %s not reachable (%s); retrying in %.1f s", url, error, min(delay, remaining))
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, max_delay_s)


def check_url(url: str) -> None:
    """Raises ValueError unless `url` is a ws:// or wss:// URL with a host."""
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ValueError(f"a policy server URL looks like ws://host:port, got {url!r}")


def _close_text(error: websockets.exceptions.ConnectionClosed) -> str:
    if error.rcvd is None:
        return "no close frame (the connection dropped)"
    reason = f": {error.rcvd.reason}" if error.rcvd.reason else ""
    return f"closed with code {error.rcvd.code}{reason}"
