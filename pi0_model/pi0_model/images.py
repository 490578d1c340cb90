"""Camera images: validation, slot mapping, resize-with-pad to the model size, scaling to [-1, 1].

pi0 sees up to three image slots (`config.CAMERA_SLOTS`). A robot names its
cameras freely and maps them to slots; a slot with no camera is a black
(-1) image whose tokens are masked out: masked tokens are invisible to every
other token and do not advance the positions. Every slot the robot maps a
camera to is always sent, with a frame this time or not, so the input shapes
never change (a dropped frame must not recompile a torch.compile'd model);
slots the robot has no camera for are not sent at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .config import CAMERA_SLOTS
from .errors import ConfigError, Pi0InputError


def validate_camera_slots(camera_slots: Mapping[str, str]) -> None:
    """A robot's camera -> slot map must use known slots, each at most once."""
    if not camera_slots:
        raise ConfigError("camera_slots is empty: map at least one camera to a pi0 slot")
    if len(camera_slots) > len(CAMERA_SLOTS):
        raise ConfigError(
            f"pi0 has {len(CAMERA_SLOTS)} camera slots, got {len(camera_slots)} cameras: {list(camera_slots)}"
        )
    for camera, slot in camera_slots.items():
        if not isinstance(camera, str) or not camera:
            raise ConfigError(f"camera names must be non-empty strings, got {camera!r}")
        if slot not in CAMERA_SLOTS:
            raise ConfigError(f"camera {camera!r} maps to unknown slot {slot!r}; slots are {list(CAMERA_SLOTS)}")
    slots = list(camera_slots.values())
    duplicates = sorted({slot for slot in slots if slots.count(slot) > 1})
    if duplicates:
        raise ConfigError(f"several cameras map to the same slot(s) {duplicates}")


def check_image(camera: str, image: object) -> np.ndarray:
    """An image must be uint8 [H, W, 3] (RGB, H and W >= 1)."""
    if not isinstance(image, np.ndarray):
        raise Pi0InputError(f"image {camera!r} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise Pi0InputError(f"image {camera!r} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise Pi0InputError(f"image {camera!r} must have shape [H, W, 3], got {list(image.shape)}")
    return image


def images_by_slot(images: Mapping[str, np.ndarray], camera_slots: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Validate the robot's images and key them by pi0 slot (slots without an image are absent)."""
    if not isinstance(images, Mapping):
        raise Pi0InputError(f"images must be a mapping camera name -> image, got {type(images).__name__}")
    if len(images) > len(camera_slots):
        raise Pi0InputError(
            f"got {len(images)} images but the robot maps only {len(camera_slots)} cameras: {sorted(camera_slots)}"
        )
    unknown = sorted(str(name) for name in images if name not in camera_slots)
    if unknown:
        raise Pi0InputError(f"unknown camera name(s) {unknown}; configured cameras are {sorted(camera_slots)}")
    if not images:
        raise Pi0InputError(f"no camera images given; expected some of {sorted(camera_slots)}")
    return {camera_slots[name]: check_image(name, image) for name, image in images.items()}


def resize_with_pad(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize keeping the aspect ratio so the longer side is `size`, then center-pad with black.

    image: uint8 [H, W, 3] on any device -> uint8 [size, size, 3].
    Matches openpi's `resize_with_pad` (bilinear with antialiasing, rounded
    back to uint8, padding 0 which becomes -1 after scaling).
    """
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    ratio = max(width / size, height / size)
    new_height, new_width = max(1, int(height / ratio)), max(1, int(width / ratio))
    chw = image.permute(2, 0, 1)[None]  # [1, 3, H, W] uint8, channels-last in memory
    target = (new_height, new_width)
    if chw.device.type == "cpu":
        # PyTorch's uint8 antialiased kernel (CPU only) is ~6x faster than the
        # float one and rounds the same way up to one intensity level.
        resized = F.interpolate(chw, size=target, mode="bilinear", align_corners=False, antialias=True)
    else:
        resized = F.interpolate(
            chw.to(torch.float32), size=target, mode="bilinear", align_corners=False, antialias=True
        )
        resized = resized.round().clamp(0, 255).to(torch.uint8)
    resized = resized[0].permute(1, 2, 0)  # [h, w, 3]
    top, left = (size - new_height) // 2, (size - new_width) // 2
    padded = torch.zeros((size, size, 3), dtype=torch.uint8, device=image.device)
    padded[top : top + new_height, left : left + new_width] = resized
    return padded


def to_model_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1] (SigLIP's input range)."""
    return image.permute(2, 0, 1).to(torch.float32) / 255.0 * 2.0 - 1.0


def prepare_images(
    images: Mapping[str, np.ndarray], slots: Iterable[str], size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot-keyed uint8 images -> model tensors for every configured slot, in pi0 slot order.

    Returns images [1, N, 3, size, size] float32 in [-1, 1] and masks [1, N] bool, N = len(slots).
    A configured slot without an image gets a black frame and mask False, as openpi does: the
    shapes stay the same from call to call (a compiled model is not recompiled when a camera
    drops a frame), and the masked tokens are invisible to the rest of the sequence.
    The resize runs on `device`, so only the raw uint8 frames cross to a GPU.
    """
    configured = set(slots)
    tensors, masks = [], []
    for slot in CAMERA_SLOTS:
        if slot not in configured:
            continue
        if slot in images:
            # Synchronizers hand out read-only views of message buffers; torch needs a writable array.
            frame = torch.from_numpy(np.require(images[slot], requirements=["C", "W"])).to(device)
            tensors.append(to_model_range(resize_with_pad(frame, size)))
        else:
            tensors.append(torch.full((3, size, size), -1.0, device=device))
        masks.append(slot in images)
    return torch.stack(tensors)[None], torch.tensor([masks], dtype=torch.bool, device=device)
