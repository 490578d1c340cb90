"""Conversions between sensor_msgs images and uint8 RGB arrays (what cv_bridge does, in numpy/cv2).

The readers take any object with the message's fields (duck typing), so bag
readers and tests can pass their own message classes. They return a uint8
array of shape [H, W, 3] in RGB order (the observation synchronizer hands it on
read-only):

- rgb8 is returned as a view of the message buffer, honouring row padding
  (`step > width * 3`), so the common case costs no copy; the view keeps the
  message data alive and may be non-contiguous.
- bgr8, rgba8, bgra8 and mono8 are converted with one cv2 call (one copy).
- `is_bigendian` is ignored: it only matters for multi-byte channels, and every
  supported encoding has one byte per channel.

Failures raise :class:`ImageConversionError` (a ValueError) saying what is wrong.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from pi0_ros.core.rgb_image import rgb_image_problem

# Channels per pixel of the raw encodings we read and write.
ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

# cv2 conversion from each raw encoding to RGB; rgb8 needs none.
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}
_FROM_RGB = {
    "bgr8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGB2RGBA,
    "bgra8": cv2.COLOR_RGB2BGRA,
    "mono8": cv2.COLOR_RGB2GRAY,
}

# CompressedImage.format values we decode: "jpeg", "png", or image_transport's
# "<encoding>; jpeg compressed <encoding>". An empty format is tried as well.
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}  # what rgb_to_compressed_msg writes


class ImageConversionError(ValueError):
    """An image message cannot be converted; the message says why."""


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> uint8 [H, W, 3] RGB."""
    encoding = str(msg.encoding)
    channels = ENCODING_CHANNELS.get(encoding)
    if channels is None:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(ENCODING_CHANNELS)})"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height}")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    data = _byte_view(msg.data)
    if data.size != step * height:
        raise ImageConversionError(
            f"data holds {data.size} bytes, expected step {step} x height {height} = {step * height}"
        )
    # [H, step] -> drop row padding -> [H, W, C]; both steps are views.
    pixels = data.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    rgb = pixels if encoding == "rgb8" else cv2.cvtColor(pixels, _TO_RGB[encoding])
    return rgb


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> uint8 [H, W, 3] RGB."""
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"'{fmt}' is a compressed depth image, not a colour image")
    if fmt and not any(name in fmt.lower() for name in COMPRESSED_FORMATS):
        raise ImageConversionError(
            f"unsupported compressed format '{fmt}' (supported: {', '.join(COMPRESSED_FORMATS)})"
        )
    data = _byte_view(msg.data)
    if data.size == 0:
        raise ImageConversionError("compressed image holds no data")
    try:
        # IMREAD_COLOR always yields 3-channel BGR: grey images are expanded, alpha dropped.
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageConversionError(f"cannot decode compressed image: {exc}") from None
    if bgr is None:
        raise ImageConversionError(f"cannot decode compressed image ({data.size} bytes, format '{fmt}'): corrupt data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, encoding: str = "rgb8", stamp: Time | None = None, frame_id: str = "") -> Image:
    """uint8 [H, W, 3] RGB -> sensor_msgs/Image in `encoding`, rows unpadded."""
    _check_rgb(rgb)
    if encoding not in ENCODING_CHANNELS:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(ENCODING_CHANNELS)})"
        )
    pixels = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, _FROM_RGB[encoding])
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    _set_header(msg, stamp, frame_id)
    msg.height, msg.width = rgb.shape[0], rgb.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = rgb.shape[1] * ENCODING_CHANNELS[encoding]
    msg.data = pixels.tobytes()  # the generated setter takes bytes directly, ~10x faster than array("B")
    return msg


def rgb_to_compressed_msg(
    rgb: np.ndarray, fmt: str = "jpeg", stamp: Time | None = None, frame_id: str = "", jpeg_quality: int = 90
) -> CompressedImage:
    """uint8 [H, W, 3] RGB -> sensor_msgs/CompressedImage ("jpeg" or "png")."""
    _check_rgb(rgb)
    if fmt not in _EXTENSIONS:
        raise ImageConversionError(f"unsupported compressed format '{fmt}' (supported: {', '.join(_EXTENSIONS)})")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(_EXTENSIONS[fmt], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"cv2 could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {fmt}")
    msg = CompressedImage()
    _set_header(msg, stamp, frame_id)
    msg.format = fmt
    msg.data = encoded.tobytes()
    return msg


def _byte_view(data: Any) -> np.ndarray:
    """The message's byte buffer as a flat uint8 array, without copying when it supports the buffer protocol."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # Plain lists of ints (hand-built or bag-decoded messages) have no buffer.
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageConversionError(f"image data is not a byte sequence: {exc}") from None


def _check_rgb(rgb: Any) -> None:
    problem = rgb_image_problem(rgb)
    if problem:
        raise ImageConversionError(problem)


def _set_header(msg: Any, stamp: Time | None, frame_id: str) -> None:
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
