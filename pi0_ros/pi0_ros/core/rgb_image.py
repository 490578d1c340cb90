"""The one image shape the runtime passes between its parts: uint8 [H, W, 3] RGB, H and W >= 1."""

from __future__ import annotations

import numpy as np


def rgb_image_problem(image: object) -> str:
    """What makes `image` unusable as an RGB frame, or "" when it is one."""
    if not isinstance(image, np.ndarray):
        return f"image is a {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f"empty image: {image.shape[1]}x{image.shape[0]}"
    return ""
