"""Exceptions raised by pi0_client.

`InputError` is the base of "the data handed in is unusable", shared with the
model: pi0_model's `Pi0InputError` derives from it, so a caller holding only
pi0_client can catch bad-input errors from either side.

`RemoteError` and its subclasses are what the remote path raises on purpose; a
caller (the policy node) tells them apart to decide what to do:

    ConnectError          no session: unreachable, handshake refused (401, ...), no metadata frame
    IncompatibleServer    connected, but the server's metadata contradicts what the caller needs
    ConnectionLost        an established session ended: closed, broken, or no response in time
      ResponseTimeout       ... because the response did not come within the timeout
    ServerError           the server answered with a text frame (openpi: a traceback), then closed
    ProtocolError         a frame that is not msgpack-numpy or not shaped like the protocol says
      ResponseError         a response that decodes but whose actions or timing are unusable
    RtcUnsupported        real-time chunking requested from a server that does not advertise it
"""

from __future__ import annotations


class InputError(ValueError):
    """An observation, prompt or argument is unusable (the caller's data, not the deployment)."""


class CodecError(ValueError):
    """A value that msgpack-numpy cannot encode, or bytes that are not a valid msgpack-numpy frame."""


class ObservationError(InputError):
    """An observation that does not fit its openpi observation format (either direction)."""


class RemoteError(Exception):
    """Base of every error the remote path raises on purpose."""


class ConnectError(RemoteError):
    """No session could be established."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # HTTP status of a refused handshake (401: API key), None otherwise


class IncompatibleServer(RemoteError):
    """The server's metadata says it cannot serve this caller (observation family, action dims, version)."""


class ConnectionLost(RemoteError):
    """An established session ended; the client is closed and a new one must be connected."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # the websocket close code, when a close frame was received


class ResponseTimeout(ConnectionLost):
    """No response within the timeout: the client closed the session (a late response would be misread)."""


class ServerError(RemoteError):
    """The server sent a text frame instead of a response: its traceback or the reason it refused the request."""

    def __init__(self, text: str, close_code: int | None = None) -> None:
        super().__init__(f"policy server error (close code {close_code}):\n{text}")
        self.text = text
        self.close_code = close_code  # 1011: server fault; pi0_serve: 1007 invalid request, 1003 text frame


class ProtocolError(RemoteError):
    """A frame that does not decode or does not have the structure the protocol agrees on."""


class ResponseError(ProtocolError):
    """A response whose actions or timing are unusable (wrong shape, NaN, missing frozen rows, ...)."""


class RtcUnsupported(RemoteError):
    """Real-time chunking was requested but the server does not advertise it (fall back to another handover)."""
