"""Camera images: resize-with-pad to 224, scaling to [-1, 1], slot mapping and validation."""

import numpy as np
import pytest
import torch

from pi0_model.errors import ConfigError, Pi0InputError
from pi0_model.images import images_by_slot, prepare_images, resize_with_pad, to_model_range, validate_camera_slots


def test_landscape_frame_is_scaled_to_width_and_padded_top_and_bottom():
    frame = torch.full((480, 640, 3), 200, dtype=torch.uint8)
    out = resize_with_pad(frame, 224)
    assert out.shape == (224, 224, 3) and out.dtype == torch.uint8
    # 640 -> 224 wide, 480 -> 168 high, 28 black rows above and below.
    assert (out[:28] == 0).all() and (out[-28:] == 0).all()
    assert (out[28:-28] == 200).all()


def test_portrait_frame_is_padded_left_and_right():
    frame = torch.full((300, 100, 3), 50, dtype=torch.uint8)
    out = resize_with_pad(frame, 224)
    content_width = int(100 / (300 / 224))
    left = (224 - content_width) // 2
    assert (out[:, :left] == 0).all()
    assert (out[:, left : left + content_width] == 50).all()
    assert (out[:, left + content_width :] == 0).all()


def test_matching_size_is_untouched_and_content_is_preserved():
    frame = torch.randint(0, 256, (224, 224, 3), dtype=torch.uint8)
    assert resize_with_pad(frame, 224) is frame
    gradient = torch.arange(448, dtype=torch.float32).div(448 / 255).round().to(torch.uint8)
    wide = gradient[None, :, None].expand(448, 448, 3).contiguous()
    small = resize_with_pad(wide, 224).to(torch.int32)
    assert (small[:, 1:, 0] - small[:, :-1, 0] >= 0).all(), "a horizontal ramp stays monotone"


def test_scaling_to_minus_one_one():
    image = torch.tensor([[[0, 255, 127]]], dtype=torch.uint8)
    scaled = to_model_range(image)
    assert scaled.shape == (3, 1, 1)
    assert scaled.flatten().tolist() == pytest.approx([-1.0, 1.0, 127 / 255 * 2 - 1])


def test_slots_are_sent_in_pi0_order_and_a_missing_camera_is_a_masked_black_frame(rng):
    slots = {"wrist": "right_wrist_0_rgb", "top": "base_0_rgb", "left": "left_wrist_0_rgb"}
    frames = {"wrist": np.full((10, 10, 3), 128, np.uint8), "top": np.full((10, 10, 3), 255, np.uint8)}
    pixels, masks = prepare_images(images_by_slot(frames, slots), slots.values(), 224, torch.device("cpu"))
    assert pixels.shape == (1, 3, 3, 224, 224) and masks.tolist() == [[True, False, True]]
    assert pixels[0, 0].max() == 1.0, "base_0_rgb comes first"
    assert pixels[0, 1].max() == pixels[0, 1].min() == -1.0, "left_wrist_0_rgb is missing: black"
    assert pixels[0, 2].max() > -1.0


def test_only_the_robots_slots_are_sent(rng):
    slots = {"top": "base_0_rgb", "wrist": "right_wrist_0_rgb"}
    pixels, masks = prepare_images(
        images_by_slot({"top": np.zeros((10, 10, 3), np.uint8)}, slots), slots.values(), 224, torch.device("cpu")
    )
    assert pixels.shape == (1, 2, 3, 224, 224) and masks.tolist() == [[True, False]]


@pytest.mark.parametrize(
    "images, message",
    [
        ({"top": np.zeros((10, 10), np.uint8)}, r"image 'top' must have shape \[H, W, 3\], got \[10, 10\]"),
        ({"top": np.zeros((10, 10, 4), np.uint8)}, r"got \[10, 10, 4\]"),
        ({"top": np.zeros((10, 10, 3), np.float32)}, "must be uint8 RGB, got dtype float32"),
        ({"top": [[[0, 0, 0]]]}, "must be a numpy array"),
        ({"side": np.zeros((10, 10, 3), np.uint8)}, r"unknown camera name\(s\) \['side'\]"),
        ({}, "no camera images"),
        ({name: np.zeros((4, 4, 3), np.uint8) for name in ("top", "a", "b")}, "got 3 images but the robot maps only 2"),
    ],
)
def test_bad_images_raise_input_errors(images, message):
    with pytest.raises(Pi0InputError, match=message):
        images_by_slot(images, {"top": "base_0_rgb", "wrist": "left_wrist_0_rgb"})


@pytest.mark.parametrize(
    "slots, message",
    [
        ({}, "camera_slots is empty"),
        ({"a": "base_0_rgb", "b": "base_0_rgb"}, "same slot"),
        ({"a": "front_rgb"}, "unknown slot 'front_rgb'"),
        ({name: "base_0_rgb" for name in "abcd"}, "3 camera slots, got 4 cameras"),
    ],
)
def test_bad_camera_maps_raise_config_errors(slots, message):
    with pytest.raises(ConfigError, match=message):
        validate_camera_slots(slots)
