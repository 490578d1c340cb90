"""Image message <-> uint8 RGB conversions: every encoding, padded rows, compression, and the error cases."""

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time

from pi0_ros.ros.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)


@pytest.fixture
def rgb() -> np.ndarray:
    """A 5x7 image where every channel of every pixel differs, so channel mix-ups show."""
    values = np.arange(5 * 7 * 3, dtype=np.uint16).reshape(5, 7, 3) * 2 + 1
    return values.astype(np.uint8)


def smooth_image(height=48, width=64) -> np.ndarray:
    """Gradients compress well with JPEG, so the round trip error stays small."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1).astype(np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, padding: int = 0, **fields) -> SimpleNamespace:
    """A duck-typed Image whose rows carry `padding` junk bytes, as some drivers send."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    junk = np.full((height, padding), 0xEE, dtype=np.uint8)
    data = np.concatenate([row, junk], axis=1).tobytes()
    msg = dict(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=row.shape[1] + padding,
        data=array.array("B", data),
    )
    msg.update(fields)
    return SimpleNamespace(**msg)


# --- raw images --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip_exactly(rgb, encoding):
    msg = rgb_to_image_msg(rgb, encoding)
    assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, 5, 7, 7 * len(encoding[:-1]))
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    "encoding, layout",
    [
        ("rgb8", lambda p: p),
        ("bgr8", lambda p: p[..., ::-1]),
        ("rgba8", lambda p: np.dstack([p, np.full(p.shape[:2], 255, np.uint8)])),
        ("bgra8", lambda p: np.dstack([p[..., ::-1], np.full(p.shape[:2], 255, np.uint8)])),
    ],
)
def test_messages_carry_the_bytes_in_the_encoding_channel_order(rgb, encoding, layout):
    msg = rgb_to_image_msg(rgb, encoding)
    assert bytes(msg.data) == np.ascontiguousarray(layout(rgb)).tobytes()
    # Reading a hand-made message of that layout gives the RGB image back.
    np.testing.assert_array_equal(image_msg_to_rgb(raw_msg(layout(rgb), encoding)), rgb)


def test_mono8_becomes_three_equal_channels(rgb):
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    out = image_msg_to_rgb(raw_msg(grey, "mono8"))
    assert out.shape == (5, 7, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)
    msg = rgb_to_image_msg(rgb, "mono8")
    assert msg.step == 7
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_row_padding_is_skipped(rgb, encoding):
    pixels = image_msg_to_rgb(rgb_to_image_msg(rgb, encoding))  # mono8 loses colour; compare like with like
    source = np.frombuffer(rgb_to_image_msg(rgb, encoding).data, np.uint8).reshape(5, 7, -1)
    np.testing.assert_array_equal(image_msg_to_rgb(raw_msg(source, encoding, padding=5)), pixels)


def test_rgb8_is_a_view_of_the_message_without_a_copy(rgb):
    msg = raw_msg(rgb, "rgb8", padding=3)
    out = image_msg_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_big_endian_flag_is_irrelevant_for_8_bit_channels(rgb):
    np.testing.assert_array_equal(image_msg_to_rgb(raw_msg(rgb, "rgb8", is_bigendian=1)), rgb)


def test_plain_byte_lists_are_accepted(rgb):
    msg = raw_msg(rgb, "rgb8")
    msg.data = list(msg.data)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_header_fields_are_set():
    msg = rgb_to_image_msg(np.zeros((2, 2, 3), np.uint8), stamp=Time(sec=12, nanosec=34), frame_id="cam_high")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 34, "cam_high")
    assert msg.is_bigendian == 0


@pytest.mark.parametrize(
    "fields, error",
    [
        (dict(encoding="16UC1"), "unsupported image encoding '16UC1' (supported: rgb8, bgr8, rgba8, bgra8, mono8)"),
        (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),
        (dict(width=0, step=0, data=array.array("B")), "empty image: 0x5"),
        (dict(height=0, data=array.array("B")), "empty image: 7x0"),
        (dict(step=20), "step 20 is shorter than a row of 7 rgb8 pixels (21 bytes)"),
        (dict(data=array.array("B", bytes(104))), "data holds 104 bytes, expected step 21 x height 5 = 105"),
        (dict(data=array.array("B", bytes(106))), "data holds 106 bytes, expected step 21 x height 5 = 105"),
        (dict(data="not bytes"), "image data is not a byte sequence"),
        (dict(data=[0, 1, 300]), "image data is not a byte sequence"),
    ],
)
def test_malformed_images_raise_a_clear_error(rgb, fields, error):
    msg = raw_msg(rgb, "rgb8")
    vars(msg).update(fields)
    with pytest.raises(ImageConversionError) as caught:
        image_msg_to_rgb(msg)
    assert error in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "array_in, error",
    [
        (np.zeros((4, 4, 3), np.float32), "image must be uint8 [H, W, 3] RGB, got float32"),
        (np.zeros((4, 4), np.uint8), "image must be uint8 [H, W, 3] RGB, got uint8 [4, 4]"),
        (np.zeros((0, 4, 3), np.uint8), "empty image: 4x0"),
    ],
)
def test_writers_reject_anything_but_rgb_arrays(array_in, error):
    with pytest.raises(ImageConversionError, match=error.replace("[", r"\[").replace("]", r"\]")):
        rgb_to_image_msg(array_in)
    with pytest.raises(ImageConversionError):
        rgb_to_compressed_msg(array_in)


def test_writers_reject_unknown_formats(rgb):
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'bgr16'"):
        rgb_to_image_msg(rgb, "bgr16")
    with pytest.raises(ImageConversionError, match="unsupported compressed format 'tiff'"):
        rgb_to_compressed_msg(rgb, "tiff")


# --- compressed images -------------------------------------------------------------------------------------------


def test_png_round_trips_exactly(rgb):
    msg = rgb_to_compressed_msg(rgb, "png", stamp=Time(sec=3), frame_id="wrist")
    assert (msg.format, msg.header.stamp.sec, msg.header.frame_id) == ("png", 3, "wrist")
    assert bytes(msg.data[:4]) == b"\x89PNG"
    out = compressed_msg_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trips_within_compression_error():
    image = smooth_image()
    msg = rgb_to_compressed_msg(image, "jpeg", jpeg_quality=95)
    assert msg.format == "jpeg" and bytes(msg.data[:2]) == b"\xff\xd8"
    out = compressed_msg_to_rgb(msg)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 2.0


def test_jpeg_colours_are_not_swapped():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = compressed_msg_to_rgb(rgb_to_compressed_msg(red, "jpeg"))
    assert out[..., 0].min() > 240 and out[..., 2].max() < 15


def test_image_transport_format_strings_and_grey_pngs_are_decoded():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    ok, png = cv2.imencode(".png", grey)
    assert ok
    msg = SimpleNamespace(format="mono8; png compressed ", data=array.array("B", png.tobytes()))
    out = compressed_msg_to_rgb(msg)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[..., 1], grey)
    jpeg = rgb_to_compressed_msg(smooth_image(), "jpeg")
    jpeg.format = "rgb8; jpeg compressed bgr8"
    assert compressed_msg_to_rgb(jpeg).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "fmt, data, error",
    [
        ("jpeg", b"", "compressed image holds no data"),
        ("jpeg", b"definitely not a jpeg", "cannot decode compressed image (21 bytes, format 'jpeg'): corrupt data"),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(40), "cannot decode compressed image"),
        ("16UC1; compressedDepth png", b"\x00" * 16, "is a compressed depth image, not a colour image"),
        ("tiff", b"II*\x00", "unsupported compressed format 'tiff' (supported: jpeg, jpg, png)"),
    ],
)
def test_bad_compressed_images_raise_a_clear_error(fmt, data, error):
    with pytest.raises(ImageConversionError) as caught:
        compressed_msg_to_rgb(SimpleNamespace(format=fmt, data=array.array("B", data)))
    assert error in str(caught.value)


def test_truncated_jpeg_is_rejected():
    msg = rgb_to_compressed_msg(smooth_image(), "jpeg")
    msg.data = msg.data[: len(msg.data) // 3]
    with pytest.raises(ImageConversionError, match="cannot decode compressed image"):
        compressed_msg_to_rgb(msg)
