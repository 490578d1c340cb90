"""openpi's observation dicts, one family per robot type, as symmetric encode/decode pairs.

An openpi policy server reads a different dict per robot family (the keys its
input transforms in openpi's src/openpi/policies/*_policy.py read):

    aloha   {"state": [14], "images": {cam_high, cam_low?, cam_left_wrist?, cam_right_wrist?: uint8 [3, H, W]},
             "prompt": str}
    droid   {"observation/exterior_image_1_left": uint8 [H, W, 3], "observation/wrist_image_left": uint8 [H, W, 3],
             "observation/joint_position": [n], "observation/gripper_position": [1], "prompt": str}
    libero  {"observation/image": uint8 [H, W, 3], "observation/wrist_image": uint8 [H, W, 3],
             "observation/state": [n], "prompt": str}

A family names its cameras by these keys (for aloha the names inside
"images"). `ObservationFormat` adds the robot's side: which of its cameras
fills which family key. `encode` takes the robot's view (camera name -> uint8
[H, W, 3] RGB, state vector, prompt) and returns the wire dict; `decode` takes
a wire dict, validates it and returns the same view, so decode(encode(x)) == x.

Validation is the same in both directions: images uint8 RGB with three
channels, a finite 1-D state of the family's length, a non-empty str prompt,
every required camera present and no unknown one. Keys outside the family
(protocol extensions such as "pi0/rtc") are left to the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ObservationError

Images = dict[str, np.ndarray]  # camera name -> uint8 [H, W, 3] RGB


@dataclass(frozen=True)
class Observation:
    """One observation in the robot's terms."""

    images: Mapping[str, np.ndarray]  # robot camera name -> uint8 [H, W, 3] RGB
    state: np.ndarray  # float64 [state_dim]
    prompt: str


class Family(ABC):
    """The fixed facts of one openpi observation dict: its camera keys, state layout and wire form."""

    name: str
    camera_keys: tuple[str, ...]  # every camera key of the family
    required_cameras: tuple[str, ...]  # the keys openpi's input transform reads unconditionally
    state_dim: int | None = None  # a length the family fixes, None when any length >= min_state_dim fits
    min_state_dim: int = 1

    @abstractmethod
    def pack(self, images: Images, state: np.ndarray, prompt: str) -> dict[str, Any]:
        """Validated images (by camera key, HWC), state and prompt -> the wire dict."""

    @abstractmethod
    def unpack(self, obs: Mapping[str, Any]) -> tuple[Images, Any]:
        """The wire dict -> (images by camera key, HWC, unvalidated; the raw state)."""

    def check_state_dim(self, state_dim: int) -> None:
        if self.state_dim is not None and state_dim != self.state_dim:
            raise ObservationError(f"the {self.name} format carries a state of {self.state_dim}, got {state_dim}")
        if state_dim < self.min_state_dim:
            raise ObservationError(f"the {self.name} format needs a state of at least {self.min_state_dim} values")


class AlohaFamily(Family):
    """openpi's AlohaInputs: images CHW under "images", cam_high always present (aloha_policy.py)."""

    name = "aloha"
    camera_keys = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    required_cameras = ("cam_high",)
    state_dim = 14  # [left arm 6, left gripper, right arm 6, right gripper]: openpi's sign flips assume it

    def pack(self, images: Images, state: np.ndarray, prompt: str) -> dict[str, Any]:
        chw = {key: np.ascontiguousarray(image.transpose(2, 0, 1)) for key, image in images.items()}
        return {"state": state, "images": chw, "prompt": prompt}

    def unpack(self, obs: Mapping[str, Any]) -> tuple[Images, Any]:
        raw = _require(obs, "images")
        if not isinstance(raw, Mapping):
            raise ObservationError(f"'images' must be a map camera -> image, got {type(raw).__name__}")
        images: Images = {}
        for key, image in raw.items():
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[0] != 3:
                raise ObservationError(f"image {key!r}: aloha images are [3, H, W] arrays, got {_describe(image)}")
            images[key] = np.ascontiguousarray(image.transpose(1, 2, 0))
        return images, _require(obs, "state")


class DroidFamily(Family):
    """openpi's DroidInputs: HWC images, the state as joint positions plus one gripper position (droid_policy.py)."""

    name = "droid"
    camera_keys = ("observation/exterior_image_1_left", "observation/wrist_image_left")
    required_cameras = camera_keys
    min_state_dim = 2  # at least one joint and the gripper, which is the state's last value

    def pack(self, images: Images, state: np.ndarray, prompt: str) -> dict[str, Any]:
        return {
            **images,
            "observation/joint_position": state[:-1].copy(),
            "observation/gripper_position": state[-1:].copy(),
            "prompt": prompt,
        }

    def unpack(self, obs: Mapping[str, Any]) -> tuple[Images, Any]:
        joints = _vector(_require(obs, "observation/joint_position"), "observation/joint_position")
        # openpi accepts a 0-d gripper position and makes it [1].
        gripper = _vector(_require(obs, "observation/gripper_position"), "observation/gripper_position", scalar=True)
        if gripper.shape != (1,):
            raise ObservationError(f"observation/gripper_position must hold one value, got shape {gripper.shape}")
        return _hwc_images(obs, self.camera_keys), np.concatenate([joints, gripper])


class LiberoFamily(Family):
    """openpi's LiberoInputs: HWC images and the state as is (libero_policy.py)."""

    name = "libero"
    camera_keys = ("observation/image", "observation/wrist_image")
    required_cameras = camera_keys

    def pack(self, images: Images, state: np.ndarray, prompt: str) -> dict[str, Any]:
        return {**images, "observation/state": state, "prompt": prompt}

    def unpack(self, obs: Mapping[str, Any]) -> tuple[Images, Any]:
        return _hwc_images(obs, self.camera_keys), _require(obs, "observation/state")


FAMILIES: dict[str, Family] = {family.name: family for family in (AlohaFamily(), DroidFamily(), LiberoFamily())}


@dataclass(frozen=True)
class ObservationFormat:
    """A family plus the robot's camera mapping: encode and decode observations in the robot's terms."""

    family: str  # one of FAMILIES
    cameras: Mapping[str, str]  # robot camera name -> family camera key
    state_dim: int  # the robot's state length

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ObservationError(f"unknown openpi observation family {self.family!r}; known: {sorted(FAMILIES)}")
        spec = FAMILIES[self.family]
        if not isinstance(self.cameras, Mapping):
            raise ObservationError(f"cameras must map robot camera names to {self.family} camera keys")
        object.__setattr__(self, "cameras", dict(self.cameras))
        unknown = sorted(set(self.cameras.values()) - set(spec.camera_keys))
        if unknown:
            raise ObservationError(f"{self.family} has no camera key(s) {unknown}; its keys: {list(spec.camera_keys)}")
        if len(set(self.cameras.values())) != len(self.cameras):
            raise ObservationError(f"two robot cameras map to the same {self.family} camera key")
        missing = sorted(set(spec.required_cameras) - set(self.cameras.values()))
        if missing:
            raise ObservationError(f"the {self.family} format needs camera key(s) {missing}: map a robot camera to it")
        if type(self.state_dim) is not int:
            raise ObservationError(f"state_dim must be an int, got {self.state_dim!r}")
        spec.check_state_dim(self.state_dim)

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    def encode(self, images: Mapping[str, np.ndarray], state: np.ndarray, prompt: str) -> dict[str, Any]:
        """Robot camera name -> uint8 [H, W, 3] RGB, state, prompt -> the openpi observation dict."""
        if not isinstance(images, Mapping):
            raise ObservationError(f"images must be a mapping camera name -> image, got {type(images).__name__}")
        unknown = sorted(set(images) - set(self.cameras))
        if unknown:
            raise ObservationError(f"camera(s) {unknown} have no {self.family} key; mapped: {sorted(self.cameras)}")
        by_key = {self.cameras[name]: _check_image(image, name) for name, image in images.items()}
        self._check_required(by_key, "robot camera")
        return self.spec.pack(by_key, self._check_state(state), _check_prompt(prompt))

    def decode(self, obs: Any) -> Observation:
        """An openpi observation dict -> the robot's view; raises ObservationError naming the offending entry."""
        if not isinstance(obs, Mapping):
            raise ObservationError(f"an observation must be a map, got {type(obs).__name__}")
        by_key, state = self.spec.unpack(obs)
        unknown = sorted(set(by_key) - set(self.spec.camera_keys))
        if unknown:
            raise ObservationError(f"unknown {self.family} camera(s) {unknown}; expected {list(self.spec.camera_keys)}")
        self._check_required(by_key, "camera")
        names = {key: name for name, key in self.cameras.items()}
        # A family camera the robot does not map (e.g. aloha's cam_low on Mobile ALOHA) is validated, then dropped.
        images = {names[key]: _check_image(image, key) for key, image in by_key.items() if key in names}
        return Observation(images=images, state=self._check_state(state), prompt=_check_prompt(_require(obs, "prompt")))

    def _check_required(self, by_key: Mapping[str, np.ndarray], label: str) -> None:
        missing = [key for key in self.spec.required_cameras if key not in by_key]
        if missing:
            raise ObservationError(f"the {self.family} format needs image(s) for {missing} ({label} missing)")

    def _check_state(self, state: Any) -> np.ndarray:
        vector = _vector(state, "state")
        if vector.shape != (self.state_dim,):
            raise ObservationError(f"state must have {self.state_dim} values, got shape {vector.shape}")
        return vector


def identity_format(family: str, state_dim: int) -> ObservationFormat:
    """The family's own camera keys as the robot's camera names (a client with no robot description)."""
    if family not in FAMILIES:
        raise ObservationError(f"unknown openpi observation family {family!r}; known: {sorted(FAMILIES)}")
    return ObservationFormat(family, {key: key for key in FAMILIES[family].camera_keys}, state_dim)


def _require(obs: Mapping[str, Any], key: str) -> Any:
    if key not in obs:
        raise ObservationError(f"observation lacks {key!r} (has {sorted(map(str, obs))})")
    return obs[key]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


def _check_image(image: Any, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ObservationError(f"image {name!r} must be a uint8 [H, W, 3] RGB array, got {_describe(image)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ObservationError(f"image {name!r} is empty: shape {list(image.shape)}")
    return image


def _hwc_images(obs: Mapping[str, Any], keys: tuple[str, ...]) -> Images:
    return {key: obs[key] for key in keys if key in obs}


def _vector(value: Any, name: str, scalar: bool = False) -> np.ndarray:
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
    elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        array = np.asarray(value, dtype=np.float64)
    else:
        raise ObservationError(f"{name} must be a numeric array, got {type(value).__name__}")
    if array.dtype.kind not in "iuf":
        raise ObservationError(f"{name} must be numeric, got dtype {array.dtype}")
    if scalar and array.ndim == 0:
        array = array[None]
    if array.ndim != 1:
        raise ObservationError(f"{name} must be a 1-D vector, got shape {list(array.shape)}")
    vector = array.astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise ObservationError(f"{name} contains NaN or inf at index {np.flatnonzero(~np.isfinite(vector)).tolist()}")
    return vector


def _check_prompt(prompt: Any) -> str:
    if isinstance(prompt, bytes):  # openpi's DROID transform accepts UTF-8 bytes too
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ObservationError(f"prompt is not valid UTF-8: {error}") from error
    if not isinstance(prompt, str) or not prompt.strip():
        raise ObservationError(f"prompt must be a non-empty string, got {prompt!r:.80}")
    return prompt
