"""msgpack-numpy: openpi's wire form both ways, and refusal of what must not travel or does not decode."""

import msgpack
import numpy as np
import pytest

from pi0_client.errors import CodecError
from pi0_client.msgpack_numpy import packb, unpackb


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.linspace(-1, 1, 7),
        np.arange(6, dtype=">i2").reshape(2, 3),  # big-endian survives as such
        np.array([True, False, True]),
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([1, 2], dtype=np.int64),
        np.array([0.5], dtype=np.float16),
        np.array(3.25),  # 0-d
        np.zeros((0, 3), dtype=np.float64),  # empty
        np.zeros((2, 0, 5), dtype=np.uint8),
        np.arange(12.0).reshape(3, 4).T,  # not C-contiguous: sent in C order
    ],
)
def test_arrays_round_trip(array):
    decoded = unpackb(packb({"x": array}))["x"]
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable and decoded.flags.owndata


@pytest.mark.parametrize("scalar", [np.float32(2.5), np.int64(-3), np.uint8(255), np.bool_(True), np.float16(1.5)])
def test_numpy_scalars_round_trip(scalar):
    decoded = unpackb(packb([scalar]))[0]
    assert type(decoded) is type(scalar) and decoded == scalar


def test_nested_plain_values_round_trip():
    value = {"prompt": "fold", "images": {"cam": np.ones((2, 2, 3), np.uint8)}, "n": 3, "x": [1.5, None, b"raw"]}
    decoded = unpackb(packb(value))
    assert decoded["prompt"] == "fold" and decoded["n"] == 3 and decoded["x"] == [1.5, None, b"raw"]
    np.testing.assert_array_equal(decoded["images"]["cam"], value["images"]["cam"])


def test_wire_form_is_openpis():
    frame = msgpack.unpackb(packb(np.arange(3, dtype=np.int32)), raw=False)
    assert frame == {
        b"__ndarray__": True,
        b"data": np.arange(3, dtype=np.int32).tobytes(),
        b"dtype": "<i4",
        b"shape": [3],
    }
    assert msgpack.unpackb(packb(np.float32(1.0)), raw=False) == {b"__npgeneric__": True, b"data": 1.0, b"dtype": "<f4"}


def test_stock_openpi_codec_reads_ours_and_we_read_theirs():
    openpi = pytest.importorskip("openpi_client.msgpack_numpy", reason="openpi-client not installed (scripts/setup.sh)")
    value = {"a": np.arange(6.0).reshape(2, 3), "s": np.int16(7), "p": "x"}
    theirs = openpi.unpackb(packb(value))
    np.testing.assert_array_equal(theirs["a"], value["a"])
    assert theirs["s"] == 7 and theirs["p"] == "x"
    ours = unpackb(openpi.packb(value))
    np.testing.assert_array_equal(ours["a"], value["a"])
    assert ours["s"] == np.int16(7)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.array([object()], dtype=object), "unsupported dtype"),
        (np.array([1 + 2j]), "unsupported dtype"),
        (np.array(["text"]), "unsupported dtype"),
        (np.zeros(2, dtype=[("a", "<f4")]), "unsupported dtype"),
        (np.complex64(1j), "unsupported dtype"),
        ({"f": lambda: None}, "cannot encode"),
        (2**70, "cannot encode"),
    ],
)
def test_encoding_refuses_what_cannot_travel(value, message):
    with pytest.raises(CodecError, match=message):
        packb(value)


def _array_map(**overrides):
    fields = {b"__ndarray__": True, b"data": bytes(8), b"dtype": "<f4", b"shape": [2]}
    fields.update({k.encode(): v for k, v in overrides.items()})
    return msgpack.packb({"x": {k: v for k, v in fields.items() if v is not ...}}, use_bin_type=True)


@pytest.mark.parametrize(
    "frame, message",
    [
        (_array_map(dtype="|O"), "unsupported dtype"),  # never an object array, so never a pickle
        (_array_map(dtype="<c8"), "unsupported dtype"),
        (_array_map(dtype="[('a', '<f4')]"), "unknown dtype|unsupported dtype"),
        (_array_map(dtype="nonsense"), "unknown dtype"),
        (_array_map(dtype=4), "dtype must be a string"),
        (_array_map(shape=[3]), "do not match shape"),  # 8 bytes are not 3 float32
        (_array_map(shape=[1]), "do not match shape"),  # a larger buffer is not read partially either
        (_array_map(shape=[-2]), "non-negative ints"),
        (_array_map(shape="2"), "non-negative ints"),
        (_array_map(shape=[2.0]), "non-negative ints"),
        (_array_map(data="text"), "data must be bytes"),
        (_array_map(data=...), "malformed ndarray map"),
        (_array_map(extra=1), "malformed ndarray map"),
        (_array_map(__ndarray__=False), "malformed ndarray map"),
        (msgpack.packb({b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}), "overflows"),
        (msgpack.packb({b"__npgeneric__": True, b"data": 1.5, b"dtype": "<i4"}), "does not fit"),
        (msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "|b1"}), "does not fit"),
        (msgpack.packb({b"__npgeneric__": True, b"data": "x", b"dtype": "|O"}), "unsupported dtype"),
        (b"\xc1", "not a valid msgpack frame"),  # a reserved byte
        (msgpack.packb({"a": 1}) + b"\x00", "not a valid msgpack frame"),  # trailing data
        (msgpack.packb({"a": 1})[:-1], "not a valid msgpack frame"),  # truncated
        (b"\xa2\xff\xfe", "not a valid msgpack frame"),  # str that is not UTF-8
        (b"\x91" * 5000 + b"\xc0", "not a valid msgpack frame"),  # nested too deep
    ],
)
def test_decoding_refuses_malformed_frames(frame, message):
    with pytest.raises(CodecError, match=message):
        unpackb(frame)


def test_decoding_refuses_non_bytes():
    with pytest.raises(CodecError, match="must be bytes"):
        unpackb("text frame")
