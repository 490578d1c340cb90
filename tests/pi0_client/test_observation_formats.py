"""openpi observation families: encode/decode are inverse, keys and layouts are openpi's, bad data is refused."""

import numpy as np
import pytest

from pi0_client.errors import InputError, ObservationError
from pi0_client.msgpack_numpy import packb, unpackb
from pi0_client.observation_formats import FAMILIES, ObservationFormat, identity_format

RNG = np.random.default_rng(7)


def image(height=6, width=8):
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


ALOHA = ObservationFormat(
    "aloha", {"top": "cam_high", "left": "cam_left_wrist", "right": "cam_right_wrist", "low": "cam_low"}, 14
)
DROID = ObservationFormat(
    "droid", {"scene": "observation/exterior_image_1_left", "wrist": "observation/wrist_image_left"}, 8
)
LIBERO = ObservationFormat("libero", {"scene": "observation/image", "wrist": "observation/wrist_image"}, 7)


def robot_view(fmt):
    return {name: image() for name in fmt.cameras}, RNG.normal(size=fmt.state_dim), "pick up the cup"


@pytest.mark.parametrize("fmt", [ALOHA, DROID, LIBERO], ids=lambda f: f.family)
def test_decode_inverts_encode_through_the_wire(fmt):
    images, state, prompt = robot_view(fmt)
    decoded = fmt.decode(unpackb(packb(fmt.encode(images, state, prompt))))
    assert decoded.prompt == prompt
    assert decoded.state.dtype == np.float64
    np.testing.assert_array_equal(decoded.state, state)
    assert set(decoded.images) == set(images)
    for name, frame in images.items():
        np.testing.assert_array_equal(decoded.images[name], frame)


def test_aloha_wire_layout_is_openpis():
    images, state, prompt = robot_view(ALOHA)
    wire = ALOHA.encode(images, state, prompt)
    assert set(wire) == {"state", "images", "prompt"}
    assert set(wire["images"]) == {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"}
    assert wire["images"]["cam_high"].shape == (3, 6, 8) and wire["images"]["cam_high"].dtype == np.uint8
    np.testing.assert_array_equal(wire["images"]["cam_high"], images["top"].transpose(2, 0, 1))
    assert wire["state"].shape == (14,)


def test_droid_wire_layout_is_openpis():
    images, state, prompt = robot_view(DROID)
    wire = DROID.encode(images, state, prompt)
    assert set(wire) == {
        "observation/exterior_image_1_left",
        "observation/wrist_image_left",
        "observation/joint_position",
        "observation/gripper_position",
        "prompt",
    }
    assert wire["observation/wrist_image_left"].shape == (6, 8, 3)
    np.testing.assert_array_equal(wire["observation/joint_position"], state[:7])
    np.testing.assert_array_equal(wire["observation/gripper_position"], state[7:])


def test_libero_wire_layout_is_openpis():
    images, state, prompt = robot_view(LIBERO)
    wire = LIBERO.encode(images, state, prompt)
    assert set(wire) == {"observation/image", "observation/wrist_image", "observation/state", "prompt"}
    np.testing.assert_array_equal(wire["observation/image"], images["scene"])


def test_openpi_example_observations_decode():
    """The examples of openpi's policies (make_aloha_example etc.): float64 state, a 0-d gripper, bytes prompt."""
    aloha = identity_format("aloha", 14).decode(
        {"state": np.ones(14), "images": {"cam_high": np.zeros((3, 4, 5), np.uint8)}, "prompt": "do something"}
    )
    assert aloha.images["cam_high"].shape == (4, 5, 3)
    droid = identity_format("droid", 8).decode(
        {
            "observation/exterior_image_1_left": image(),
            "observation/wrist_image_left": image(),
            "observation/joint_position": np.arange(7.0),
            "observation/gripper_position": np.float64(0.5),
            "prompt": b"do something",
        }
    )
    assert droid.state.tolist() == [0, 1, 2, 3, 4, 5, 6, 0.5] and droid.prompt == "do something"


def test_optional_aloha_cameras_may_be_absent_and_unmapped_ones_are_dropped():
    mobile = ObservationFormat("aloha", {"cam_high": "cam_high", "cam_left_wrist": "cam_left_wrist"}, 14)
    wire = mobile.encode({"cam_high": image()}, np.zeros(14), "go")
    assert set(wire["images"]) == {"cam_high"}
    wire["images"]["cam_low"] = np.zeros((3, 6, 8), np.uint8)  # a stock ALOHA client sends all four
    assert set(mobile.decode(wire).images) == {"cam_high"}


def aloha_wire():
    images, state, prompt = robot_view(ALOHA)
    return ALOHA.encode(images, state, prompt)


def broken(change):
    wire = aloha_wire()
    change(wire)
    return wire


@pytest.mark.parametrize(
    "wire, message",
    [
        ([1, 2], "must be a map"),
        (broken(lambda w: w.pop("images")), "lacks 'images'"),
        (broken(lambda w: w.pop("state")), "lacks 'state'"),
        (broken(lambda w: w.pop("prompt")), "lacks 'prompt'"),
        (broken(lambda w: w.update(images=[1])), "'images' must be a map"),
        (broken(lambda w: w["images"].pop("cam_high")), r"needs image\(s\) for \['cam_high'\]"),
        (broken(lambda w: w["images"].update(cam_side=np.zeros((3, 2, 2), np.uint8))), "unknown aloha camera"),
        (broken(lambda w: w["images"].update(cam_high=np.zeros((2, 2, 3), np.uint8))), r"\[3, H, W\]"),
        (broken(lambda w: w["images"].update(cam_high=np.zeros((3, 2, 2), np.float32))), "uint8"),
        (broken(lambda w: w["images"].update(cam_high=np.zeros((3, 0, 2), np.uint8))), "empty"),
        (broken(lambda w: w.update(state=np.zeros(13))), "14 values"),
        (broken(lambda w: w.update(state=np.zeros((14, 1)))), "1-D"),
        (broken(lambda w: w.update(state=np.full(14, np.nan))), "NaN or inf"),
        (broken(lambda w: w.update(state=np.zeros(14, bool))), "numeric"),
        (broken(lambda w: w.update(state="0,0")), "numeric array"),
        (broken(lambda w: w.update(prompt="  ")), "non-empty string"),
        (broken(lambda w: w.update(prompt=3)), "non-empty string"),
        (broken(lambda w: w.update(prompt=b"\xff")), "UTF-8"),
    ],
)
def test_decode_refuses_malformed_observations(wire, message):
    with pytest.raises(ObservationError, match=message):
        ALOHA.decode(wire)


def test_droid_gripper_must_be_one_value():
    wire = DROID.encode(*robot_view(DROID))
    wire["observation/gripper_position"] = np.zeros(2)
    with pytest.raises(ObservationError, match="one value"):
        DROID.decode(wire)


@pytest.mark.parametrize(
    "images, state, prompt, message",
    [
        ({"top": image(), "side": image()}, np.zeros(14), "x", "have no aloha key"),
        ({"left": image()}, np.zeros(14), "x", "cam_high"),
        ({"top": image().transpose(2, 0, 1)}, np.zeros(14), "x", r"\[H, W, 3\]"),
        ({"top": image().astype(np.float32)}, np.zeros(14), "x", "uint8"),
        ({"top": image()}, np.zeros(12), "x", "14 values"),
        ({"top": image()}, np.array([np.inf] * 14), "x", "NaN or inf"),
        ({"top": image()}, np.zeros(14), "", "non-empty"),
        ([image()], np.zeros(14), "x", "mapping"),
    ],
)
def test_encode_refuses_bad_robot_data(images, state, prompt, message):
    with pytest.raises(InputError, match=message):
        ALOHA.encode(images, state, prompt)


@pytest.mark.parametrize(
    "family, cameras, state_dim, message",
    [
        ("openvla", {}, 7, "unknown openpi observation family"),
        ("aloha", {"a": "cam_top"}, 14, "no camera key"),
        ("aloha", {"a": "cam_high", "b": "cam_high"}, 14, "same aloha camera key"),
        ("aloha", {"a": "cam_left_wrist"}, 14, "cam_high"),
        ("aloha", {"a": "cam_high"}, 16, "state of 14"),
        ("droid", {"a": "observation/exterior_image_1_left"}, 8, "wrist_image_left"),
        ("droid", dict(zip(("a", "b"), FAMILIES["droid"].camera_keys)), 1, "at least 2"),
        ("libero", dict(zip(("a", "b"), FAMILIES["libero"].camera_keys)), 7.0, "must be an int"),
    ],
)
def test_formats_are_validated_when_built(family, cameras, state_dim, message):
    with pytest.raises(ObservationError, match=message):
        ObservationFormat(family, cameras, state_dim)
