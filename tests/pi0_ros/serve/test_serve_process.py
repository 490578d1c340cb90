"""pi0_serve as a process with the tiny model, over real websockets on loopback.

One server (API key required, a small request limit) serves every test here;
each test that breaks a session checks that the server still serves afterwards.
Local references come from the same description, seed and per-request noise.
"""

from __future__ import annotations

import contextlib
import re
import socket
import warnings

import msgpack
import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client

from pi0_client.errors import ConnectError, ConnectionLost, ServerError
from pi0_client.interface import RtcGuidance
from pi0_client.msgpack_numpy import packb
from pi0_client.protocol import CLOSE_INVALID_REQUEST, CLOSE_MESSAGE_TOO_BIG, CLOSE_UNSUPPORTED_DATA
from pi0_client.remote_policy import RemotePolicy
from pi0_client.websocket_client import WebsocketClient
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.policy.model_loader import load_policy
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.serve.backend import request_noise
from support.robots import robot_yaml
from support.serve_process import ServeProcess, health_status

pytestmark = pytest.mark.slow

SEED = 3
API_KEY = "test-key-7f3a"
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # four 224x224 ALOHA cameras are ~0.6 MB
DESCRIPTION = load_robot_description(robot_yaml("aloha"))
FORMAT = DESCRIPTION.observation_format()
WAIT = 120.0  # s for one tiny-model response on a loaded machine


@pytest.fixture(scope="module")
def server():
    process = ServeProcess(
        [
            "--robot",
            str(robot_yaml("aloha")),
            "--seed",
            str(SEED),
            "--api-key",
            API_KEY,
            "--max-request-bytes",
            str(MAX_REQUEST_BYTES),
        ]
    )
    yield process
    code = process.stop()
    assert code == 0, f"pi0_serve exited with {code} on SIGTERM:\n{process.log}"
    assert "stopped" in process.log.splitlines()[-1]


@pytest.fixture(scope="module")
def local():
    """The server's policy, built here: same description, seed and model settings."""
    return load_policy(DESCRIPTION, ModelSettings(seed=SEED))


def robot_observation(index: int):
    rng = np.random.default_rng(100 + index)
    images = {c.name: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for c in DESCRIPTION.cameras}
    state = np.array([DESCRIPTION.joint(n).home for n in DESCRIPTION.policy.state]) + rng.normal(0, 0.01, 14)
    return images, state, "fold the towel"


def local_inference(local, index: int, request_index: int, rtc: RtcGuidance | None = None):
    images, state, prompt = robot_observation(index)
    policy_images = {c.name: images[c.name] for c in DESCRIPTION.policy_cameras}
    noise = request_noise(SEED, request_index, (local.horizon, local.config.action_dim))
    return local.infer(policy_images, state, prompt, noise=noise, rtc=rtc)


def connect(server) -> RemotePolicy:
    return RemotePolicy.connect(server.url, FORMAT, action_dim=14, api_key=API_KEY, response_timeout=WAIT)


def assert_serving(server) -> None:
    assert server.alive(), server.log
    assert health_status(server.health_url) == 200
    with connect(server) as policy:
        assert policy.infer(*robot_observation(0)).actions.shape == (50, 14)


# openpi-client 0.1.2 calls websockets' connect() the way websockets 17.1 deprecates.
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_stock_openpi_client_gets_the_local_actions(server, local):
    policy_module = pytest.importorskip(
        "openpi_client.websocket_client_policy", reason="openpi-client not installed (scripts/setup.sh installs it)"
    )
    client = policy_module.WebsocketClientPolicy(server.url, api_key=API_KEY)
    assert client.get_server_metadata()["pi0/action_horizon"] == 50
    for request_index, observation_index in enumerate((0, 1)):
        images, state, prompt = robot_observation(observation_index)
        # openpi's ALOHA observation, built by hand the way openpi's aloha_real example does: CHW images.
        obs = {
            "state": state,
            "images": {name: np.ascontiguousarray(image.transpose(2, 0, 1)) for name, image in images.items()},
            "prompt": prompt,
        }
        response = client.infer(obs)
        expected = local_inference(local, observation_index, request_index)
        np.testing.assert_array_equal(response["actions"], expected.actions)
        assert response["server_timing"]["infer_ms"] > 0 and response["policy_timing"]["infer_ms"] > 0
    client._ws.close()  # openpi's client has no close of its own


def test_remote_policy_matches_local_inference_with_rtc(server, local):
    with connect(server) as policy:
        assert policy.metadata.supports_rtc and policy.metadata.observation_family == "aloha"
        first = policy.infer(*robot_observation(0))
        np.testing.assert_array_equal(first.actions, local_inference(local, 0, 0).actions)
        assert first.frozen_steps == 0 and first.timing.total_ms >= first.timing.transport_ms >= 0
        assert first.timing.denoise_ms > 0
        rtc = RtcGuidance(first.actions[10:], frozen_steps=4, schedule="linear")
        guided = policy.infer(*robot_observation(1), rtc=rtc)
        assert guided.frozen_steps == 4
        np.testing.assert_array_equal(guided.actions[:4], first.actions[10:14])  # bit-exact frozen rows
        np.testing.assert_array_equal(guided.actions, local_inference(local, 1, 1, rtc).actions)


def test_missing_or_wrong_api_key_is_refused(server):
    for key in (None, "wrong-key"):
        with pytest.raises(ConnectError, match="HTTP 401") as raised:
            WebsocketClient.connect(server.url, api_key=key)
        assert raised.value.status == 401
    policy_module = pytest.importorskip("openpi_client.websocket_client_policy", reason="openpi-client not installed")
    with warnings.catch_warnings():  # as above: openpi-client's use of connect()
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(websockets.exceptions.InvalidStatus, match="401"):
            policy_module.WebsocketClientPolicy(server.url)
    assert_serving(server)


def test_oversized_request_is_refused_and_the_server_serves_on(server):
    images, state, prompt = robot_observation(0)
    images = {name: np.zeros((1024, 1024, 3), np.uint8) for name in images}  # 12 MB
    with connect(server) as policy, pytest.raises(ConnectionLost) as raised:
        policy.infer(images, state, prompt)
    assert raised.value.code == CLOSE_MESSAGE_TOO_BIG
    assert_serving(server)


@contextlib.contextmanager
def raw_session(server):
    """A bare websockets session past the metadata frame, for frames no client of ours would send."""
    headers = {"Authorization": f"Api-Key {API_KEY}"}
    with websockets.sync.client.connect(server.url, additional_headers=headers, max_size=None, proxy=None) as session:
        session.recv(timeout=WAIT)  # metadata
        yield session


def valid_request():
    return FORMAT.encode(*robot_observation(0))


def packed(change):
    request = valid_request()
    change(request)
    return packb(request)


@pytest.mark.parametrize(
    "frame, code, message",
    [
        (b"\xc1\x00\x01", CLOSE_INVALID_REQUEST, "not a valid msgpack frame"),
        (msgpack.packb([1, 2, 3]), CLOSE_INVALID_REQUEST, "must be a map"),
        (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [1]}}), 1007, "dtype"),
        ("hello", CLOSE_UNSUPPORTED_DATA, "got text"),
        (packed(lambda r: r.pop("images")), CLOSE_INVALID_REQUEST, "lacks 'images'"),
        (packed(lambda r: r.update(state=np.zeros(13))), CLOSE_INVALID_REQUEST, "state must have 14 values"),
        (packed(lambda r: r["state"].__setitem__(3, np.nan)), CLOSE_INVALID_REQUEST, r"NaN or inf at index \[3\]"),
        (
            packed(lambda r: r["images"].update(cam_high=np.zeros((3, 8), np.uint8))),
            CLOSE_INVALID_REQUEST,
            r"\[3, H, W\]",
        ),
        (
            packed(lambda r: r.update({"pi0/rtc": {"frozen_steps": 1}})),
            CLOSE_INVALID_REQUEST,
            "pi0/rtc must be a map with exactly",
        ),
        (
            packed(
                lambda r: r.update(
                    {
                        "pi0/rtc": {
                            "previous_actions": np.zeros((5, 9)),
                            "frozen_steps": 1,
                            "max_guidance_weight": 5.0,
                            "schedule": "exp",
                        }
                    }
                )
            ),
            CLOSE_INVALID_REQUEST,
            r"previous_actions must have shape \[1..50, 14\]",  # Pi0Policy's check, as an invalid request
        ),
    ],
)
def test_malformed_requests_end_only_their_session(server, frame, code, message):
    with raw_session(server) as connection:
        connection.send(frame)
        reply = connection.recv(timeout=WAIT)
        assert isinstance(reply, str) and re.search(message, reply), reply
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            connection.recv(timeout=WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    assert_serving(server)


def test_our_client_reports_a_refused_request_as_server_error(server):
    images, state, prompt = robot_observation(0)
    with connect(server) as policy:
        client = policy._client  # past RemotePolicy's own validation: what another client might send
        with pytest.raises(ServerError) as raised:
            client.infer({**FORMAT.encode(images, state, prompt), "prompt": 7})
    assert raised.value.close_code == CLOSE_INVALID_REQUEST and "prompt must be a non-empty string" in raised.value.text


def test_abrupt_disconnects_mid_request_leave_the_server_serving(server):
    for _ in range(3):
        with raw_session(server) as connection:
            connection.send(packb(valid_request()))
            # No close handshake: the TCP connection just goes away while the server computes the response.
            connection.socket.shutdown(socket.SHUT_RDWR)
            connection.socket.close()
    assert_serving(server)
