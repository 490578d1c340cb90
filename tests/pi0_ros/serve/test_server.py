"""The websocket server with stand-in backends (no model): concurrency, failures and clients' error types."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pi0_client.errors import (
    ConnectError,
    ConnectionLost,
    IncompatibleServer,
    ResponseError,
    RtcUnsupported,
    ServerError,
)
from pi0_client.interface import RtcGuidance
from pi0_client.observation_formats import identity_format
from pi0_client.protocol import CLOSE_INTERNAL_ERROR, server_metadata
from pi0_client.remote_policy import RemotePolicy
from pi0_client.websocket_client import WebsocketClient
from pi0_ros.serve.server import ServerConfig, ServerThread
from support.serve_process import health_status

FORMAT = identity_format("libero", 7)
WAIT = 60.0  # s; generous: nothing here waits for it unless something is broken


def observation():
    images = {key: np.zeros((4, 4, 3), np.uint8) for key in FORMAT.cameras}
    return images, np.zeros(7), "stack the cups"


class FixedBackend:
    """Answers every request with the same actions; optionally blocks until released."""

    def __init__(self, actions: np.ndarray, metadata: dict | None = None, block: bool = False) -> None:
        self.actions = actions
        self.metadata = metadata if metadata is not None else server_metadata(10, 7, 7, "libero", False, {})
        self.started = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.requests: list[int] = []

    def infer(self, request, request_index):
        FORMAT.decode(request)
        self.requests.append(request_index)
        self.started.set()
        assert self.release.wait(WAIT)
        return {"actions": self.actions}


class FailingBackend(FixedBackend):
    def infer(self, request, request_index):
        raise RuntimeError("the GPU caught fire")


@pytest.fixture
def serve():
    servers = []

    def start(backend, **config):
        servers.append(ServerThread(backend, ServerConfig(host="127.0.0.1", port=0, **config)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_health_and_other_clients_are_answered_while_an_inference_runs(serve):
    backend = FixedBackend(np.zeros((10, 7)), block=True)
    server = serve(backend)
    first = RemotePolicy.connect(server.url, FORMAT, action_dim=7)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(inference=first.infer(*observation())))
    worker.start()
    assert backend.started.wait(WAIT)  # the backend now holds the worker thread
    assert health_status(server.health_url) == 200
    second = RemotePolicy.connect(server.url, FORMAT, action_dim=7, open_timeout=WAIT)
    assert second.metadata.action_horizon == 10
    backend.release.set()
    worker.join(WAIT)
    assert result["inference"].actions.shape == (10, 7)
    assert second.infer(*observation()).actions.shape == (10, 7)
    assert backend.requests == [0, 0]  # request indices count per connection
    first.close()
    second.close()


def test_a_failing_policy_sends_its_traceback_and_the_server_serves_on(serve):
    server = serve(FailingBackend(np.zeros((10, 7))))
    policy = RemotePolicy.connect(server.url, FORMAT)
    with pytest.raises(ServerError) as raised:
        policy.infer(*observation())
    assert "Traceback" in raised.value.text and "RuntimeError: the GPU caught fire" in raised.value.text
    assert raised.value.close_code == CLOSE_INTERNAL_ERROR
    assert policy.closed
    with pytest.raises(ConnectionLost, match="closed"):
        policy.infer(*observation())
    assert health_status(server.health_url) == 200
    RemotePolicy.connect(server.url, FORMAT).close()


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.full((10, 7), np.nan), "NaN or inf"),
        (np.zeros((10, 6)), "6 dims per row, expected 7"),
        (np.zeros((9, 7)), "9 rows, expected 10"),
        (np.zeros((10, 7), np.int32), "2-D float array"),
    ],
)
def test_unusable_responses_are_refused_with_a_diagnostic(serve, actions, message):
    policy = RemotePolicy.connect(serve(FixedBackend(actions)).url, FORMAT, action_dim=7)
    with pytest.raises(ResponseError, match=message):
        policy.infer(*observation())
    assert policy.closed


def test_rtc_is_not_sent_to_a_server_that_does_not_advertise_it(serve):
    stock = serve(FixedBackend(np.zeros((10, 7)), metadata={}))  # a stock openpi server's metadata
    policy = RemotePolicy.connect(stock.url, FORMAT, action_dim=7)
    assert policy.metadata.protocol_version is None and not policy.metadata.supports_rtc
    with pytest.raises(RtcUnsupported, match="no RTC"):
        policy.infer(*observation(), rtc=RtcGuidance(np.zeros((5, 7)), frozen_steps=1))
    assert policy.infer(*observation()).actions.shape == (10, 7)  # nothing was sent; the session is intact


def test_api_key_is_checked_and_health_stays_open(serve):
    server = serve(FixedBackend(np.zeros((10, 7))), api_key="s3cret")
    for key in (None, "guess"):
        with pytest.raises(ConnectError, match="HTTP 401") as raised:
            WebsocketClient.connect(server.url, api_key=key)
        assert raised.value.status == 401
    assert health_status(server.health_url) == 200
    with RemotePolicy.connect(server.url, FORMAT, api_key="s3cret") as policy:
        assert policy.infer(*observation()).actions.shape == (10, 7)


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(port=70000), "port"),
        (dict(max_request_bytes=10), "max_request_bytes"),
        (dict(api_key=""), "API key"),
        (dict(api_key="two words"), "API key"),
    ],
)
def test_server_config_is_validated(config, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**config)


@pytest.mark.parametrize(
    "metadata, action_dim, message",
    [
        (server_metadata(10, 8, 8, "droid", False, {}), None, "reads droid observations"),
        (server_metadata(10, 7, 9, "libero", False, {}), None, "state of 9"),
        (server_metadata(10, 6, 7, "libero", False, {}), 7, "returns 6 action dims"),
        ({"pi0/protocol_version": 99}, None, "update pi0_client"),
    ],
)
def test_a_server_that_cannot_serve_this_robot_is_refused_at_connect(serve, metadata, action_dim, message):
    server = serve(FixedBackend(np.zeros((10, 7)), metadata=metadata))
    with pytest.raises(IncompatibleServer, match=message):
        RemotePolicy.connect(server.url, FORMAT, action_dim=action_dim)
