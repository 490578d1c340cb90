"""The client's own checks; its behaviour against a real server is in tests/pi0_ros/serve."""

import socket

import pytest

from pi0_client.errors import ConnectError
from pi0_client.websocket_client import WebsocketClient, connect_with_backoff


def closed_port() -> int:
    """A port nothing listens on: bound, then released (the OS does not hand it out again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("url", ["http://localhost:8000", "localhost:8000", "ws://", "ws:///path"])
def test_only_websocket_urls_are_accepted(url):
    with pytest.raises(ValueError, match="ws://host:port"):
        WebsocketClient.connect(url)


def test_an_unreachable_server_is_a_connect_error():
    with pytest.raises(ConnectError, match="cannot connect") as raised:
        WebsocketClient.connect(f"ws://127.0.0.1:{closed_port()}", open_timeout=5.0)
    assert raised.value.status is None


def test_backoff_gives_up_at_its_deadline():
    with pytest.raises(ConnectError, match="cannot connect"):
        connect_with_backoff(f"ws://127.0.0.1:{closed_port()}", deadline_s=0.5, initial_delay_s=0.1)
