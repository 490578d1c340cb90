"""The websocket side of pi0_serve: openpi's policy-server protocol on asyncio, inference on one worker thread.

Per connection, as openpi's WebsocketPolicyServer: the metadata frame, then
strictly request -> response. What it does beyond openpi's server:

- inference runs on a single worker thread (one model, used by one thread at a
  time), so the event loop keeps answering /healthz, handshakes, pings and the
  other clients while a chunk is computed; requests of several clients queue;
- requests over `max_request_bytes` are refused by websockets (close 1009);
- with an API key, a handshake without `Authorization: Api-Key <key>` (the
  header openpi's client sends) is answered 401; /healthz stays open;
- a request that is not msgpack-numpy, or not a valid observation, is answered
  with a text frame saying why and close 1007; a text frame with close 1003; a
  policy failure with the traceback and close 1011 (as openpi). Only that
  session ends; a client that vanishes mid-request costs only its own session.

The backend turns a decoded request into a response map; it never sees bytes.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import websockets.exceptions
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from pi0_client import msgpack_numpy
from pi0_client.errors import CodecError, InputError
from pi0_client.protocol import CLOSE_INTERNAL_ERROR, CLOSE_INVALID_REQUEST, CLOSE_UNSUPPORTED_DATA

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # three 224x224 cameras are ~0.5 MB; full-size 640x480 ones ~2.8 MB
HEALTH_PATH = "/healthz"


class Backend(Protocol):
    """What the server serves: a metadata map and request map -> response map (run on the worker thread)."""

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def infer(self, request: Mapping[str, Any], request_index: int) -> dict[str, Any]:
        """`request_index` counts this connection's requests from 0. Raises InputError for an invalid request."""
        ...


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000  # 0: any free port (the URL handed to `on_listening` names it)
    api_key: str | None = None  # None: no authentication
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within [0, 65535], got {self.port}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be at least 1024, got {self.max_request_bytes}")
        if self.api_key is not None and (not self.api_key or not self.api_key.isprintable() or " " in self.api_key):
            raise ValueError("the API key must be a non-empty printable string without spaces")


class PolicyServer:
    def __init__(self, backend: Backend, config: ServerConfig) -> None:
        self._backend = backend
        self._config = config
        self._metadata_frame = msgpack_numpy.packb(dict(backend.metadata))
        self._expected_authorization = None if config.api_key is None else f"Api-Key {config.api_key}".encode()
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, stop: asyncio.Event, on_listening: Callable[[str], None] | None = None) -> None:
        """Serves until `stop` is set, then closes every session (1001) after its inference in flight."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pi0_inference")
        try:
            async with serve(
                self._session,
                self._config.host,
                self._config.port,
                compression=None,  # as openpi: images do not compress
                max_size=self._config.max_request_bytes,
                process_request=self._process_request,
            ) as server:
                host, port = next(iter(server.sockets)).getsockname()[:2]
                url = f"ws://{'[' + host + ']' if ':' in host else host}:{port}"
                logger.info("listening on %s (health check: GET %s)", url, HEALTH_PATH)
                if on_listening is not None:
                    on_listening(url)
                await stop.wait()
                logger.info("stopping: closing %d session(s)", len(server.connections))
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._expected_authorization is not None:
            given = request.headers.get("Authorization", "").encode()
            # compare_digest: the time taken does not tell how much of a guessed key was right.
            if not hmac.compare_digest(given, self._expected_authorization):
                logger.warning("refused %s: %s API key", connection.remote_address, "wrong" if given else "no")
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key (header 'Authorization: Api-Key <key>')\n"
                )
        return None

    async def _session(self, connection: ServerConnection) -> None:
        peer = connection.remote_address
        logger.info("session with %s opened", peer)
        try:
            await connection.send(self._metadata_frame)
            await self._serve_requests(connection)
        except websockets.exceptions.ConnectionClosed as closed:
            logger.info("session with %s ended: %s", peer, closed)
        else:
            logger.info("session with %s ended", peer)

    async def _serve_requests(self, connection: ServerConnection) -> None:
        """Request -> response until the client leaves or a request ends the session."""
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        previous_total_ms: float | None = None
        index = 0
        while True:
            frame = await connection.recv()
            received = time.monotonic()
            if isinstance(frame, str):
                await _refuse(connection, CLOSE_UNSUPPORTED_DATA, "expected a binary msgpack observation, got text")
                return
            try:
                request = msgpack_numpy.unpackb(frame)
                if not isinstance(request, dict):
                    raise CodecError(f"an observation must be a map, got {type(request).__name__}")
            except CodecError as error:
                await _refuse(connection, CLOSE_INVALID_REQUEST, f"invalid request: {error}")
                return
            try:
                response, infer_s = await loop.run_in_executor(self._executor, self._timed_infer, request, index)
                response["server_timing"] = {
                    "infer_ms": infer_s * 1e3,
                    "queue_ms": max(0.0, (time.monotonic() - received - infer_s) * 1e3),
                    **({} if previous_total_ms is None else {"prev_total_ms": previous_total_ms}),
                }
                payload = msgpack_numpy.packb(response)
            except InputError as error:
                await _refuse(connection, CLOSE_INVALID_REQUEST, f"invalid request: {error}")
                return
            except Exception:  # noqa: BLE001 - any policy failure ends this session only, with its traceback
                text = traceback.format_exc()
                logger.error("inference for %s failed:\n%s", connection.remote_address, text)
                await _refuse(connection, CLOSE_INTERNAL_ERROR, text)
                return
            await connection.send(payload)
            # As openpi: the total of a request is known only after its response went out.
            previous_total_ms = (time.monotonic() - received) * 1e3
            index += 1

    def _timed_infer(self, request: Mapping[str, Any], index: int) -> tuple[dict[str, Any], float]:
        start = time.monotonic()
        response = self._backend.infer(request, index)
        return response, time.monotonic() - start


async def _refuse(connection: ServerConnection, code: int, text: str) -> None:
    """The reason as a text frame (what openpi clients print), then the close code; the session ends."""
    if code != CLOSE_INTERNAL_ERROR:
        logger.warning("refused a request from %s: %s", connection.remote_address, text)
    reason = {
        CLOSE_UNSUPPORTED_DATA: "text frames are not requests",
        CLOSE_INVALID_REQUEST: "invalid request; reason in the previous frame",
        CLOSE_INTERNAL_ERROR: "Internal server error. Traceback included in previous frame.",
    }[code]
    try:
        await connection.send(text)
        await connection.close(code=code, reason=reason)
    except websockets.exceptions.ConnectionClosed:
        pass  # the client left first; nothing to tell it


class ServerThread:
    """A PolicyServer on an event loop thread of its own (benchmarks, tests, embedding in a program).

    Starts listening before the constructor returns; `url` names the bound port.
    """

    def __init__(self, backend: Backend, config: ServerConfig, start_timeout: float = 30.0) -> None:
        self._server = PolicyServer(backend, config)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._listening = threading.Event()
        self._failure: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="pi0_serve", daemon=True)
        self._thread.start()
        if not self._listening.wait(start_timeout):
            self.close()
            raise RuntimeError(f"the policy server did not start listening within {start_timeout} s")
        if self._failure is not None:
            raise RuntimeError(f"the policy server failed to start: {self._failure}") from self._failure

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._server.run(self._stop, self._on_listening))
        except BaseException as error:  # noqa: BLE001 - reported to the constructor (e.g. the port is taken)
            self._failure = error
            self._listening.set()

    def _on_listening(self, url: str) -> None:
        self.url = url
        self._listening.set()

    @property
    def health_url(self) -> str:
        return self.url.replace("ws://", "http://", 1) + HEALTH_PATH

    def close(self, timeout: float = 60.0) -> None:
        """Stops the server (sessions closed after their inference in flight) and joins its thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
