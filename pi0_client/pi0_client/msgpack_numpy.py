"""numpy arrays in msgpack, in the wire form of openpi's policy servers and clients.

openpi (packages/openpi-client/src/openpi_client/msgpack_numpy.py) sends

    ndarray        {b"__ndarray__": True, b"data": <C-order bytes>, b"dtype": dtype.str, b"shape": [..]}
    numpy scalar   {b"__npgeneric__": True, b"data": <Python value>, b"dtype": dtype.str}

as msgpack maps with *byte-string* keys; everything else is plain msgpack
(str keys, lists, ints, floats, bools, str, bytes, None).

This module writes exactly that, so a stock openpi client or server reads it,
and reads it back more strictly than openpi does, because the bytes come from
the network: only bool, integer and float dtypes travel (no object arrays, so
nothing is ever unpickled; no structured, complex or string dtypes), and a
shape whose element count does not match the byte count is refused instead of
being read out of a larger buffer. Decoded arrays are writable copies that do
not keep the frame alive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from .errors import CodecError

ARRAY_KEY = b"__ndarray__"
SCALAR_KEY = b"__npgeneric__"
_ARRAY_FIELDS = frozenset({ARRAY_KEY, b"data", b"dtype", b"shape"})
_SCALAR_FIELDS = frozenset({SCALAR_KEY, b"data", b"dtype"})
ALLOWED_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def packb(obj: Any) -> bytes:
    """One msgpack frame; numpy arrays and scalars in openpi's form. Raises CodecError for what cannot travel."""
    try:
        return msgpack.packb(obj, default=_encode_numpy, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise CodecError(f"cannot encode as msgpack: {error}") from error


def unpackb(data: bytes) -> Any:
    """The value of one msgpack frame, numpy maps turned back into arrays. Raises CodecError for malformed frames."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a msgpack frame must be bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode_numpy, raw=False)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        # ExtraData, FormatError, StackError (too deep) and invalid UTF-8 in str are ValueErrors.
        raise CodecError(f"not a valid msgpack frame: {type(error).__name__}: {error}") from error


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise CodecError(f"{what} has unsupported dtype {dtype.str!r}: only bool, integer and float dtypes travel")


def _encode_numpy(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "array")
        return {ARRAY_KEY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, "numpy scalar")
        return {SCALAR_KEY: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__} objects")


def _decode_numpy(obj: dict[Any, Any]) -> Any:
    if ARRAY_KEY in obj:
        return _decode_array(obj)
    if SCALAR_KEY in obj:
        return _decode_scalar(obj)
    return obj


def _parse_dtype(obj: Mapping[Any, Any], what: str) -> np.dtype:
    text = obj[b"dtype"]
    if not isinstance(text, str):
        raise CodecError(f"{what}: dtype must be a string, got {type(text).__name__}")
    try:
        dtype = np.dtype(text)
    except TypeError as error:
        raise CodecError(f"{what}: unknown dtype {text!r}") from error
    _check_dtype(dtype, what)
    return dtype


def _decode_array(obj: Mapping[Any, Any]) -> np.ndarray:
    if set(obj) != _ARRAY_FIELDS or obj[ARRAY_KEY] is not True:
        fields = sorted(map(repr, _ARRAY_FIELDS))
        raise CodecError(f"malformed ndarray map: keys {sorted(map(repr, obj))}, expected {fields}")
    dtype = _parse_dtype(obj, "ndarray")
    shape = obj[b"shape"]
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise CodecError(f"ndarray: shape must be a list of non-negative ints, got {shape!r}")
    data = obj[b"data"]
    if not isinstance(data, bytes):
        raise CodecError(f"ndarray: data must be bytes, got {type(data).__name__}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise CodecError(
            f"ndarray: {len(data)} data bytes do not match shape {shape} of {dtype.str} ({expected} bytes)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _decode_scalar(obj: Mapping[Any, Any]) -> np.generic:
    if set(obj) != _SCALAR_FIELDS or obj[SCALAR_KEY] is not True:
        raise CodecError(f"malformed numpy scalar map: keys {sorted(map(repr, obj))}")
    dtype = _parse_dtype(obj, "numpy scalar")
    value = obj[b"data"]
    # bool is an int subclass: a bool payload only for a bool dtype, and no bool for a numeric one.
    if dtype.kind == "b":
        valid = isinstance(value, bool)
    else:
        valid = isinstance(value, int if dtype.kind in "iu" else (int, float)) and not isinstance(value, bool)
    if not valid:
        raise CodecError(f"numpy scalar: value {value!r} does not fit dtype {dtype.str!r}")
    try:
        scalar = dtype.type(value)
    except OverflowError as error:
        raise CodecError(f"numpy scalar: value {value!r} overflows dtype {dtype.str!r}") from error
    return scalar
