"""The pi0 extensions to openpi's websocket policy protocol, each as a symmetric encode/decode pair.

openpi's protocol (src/openpi/serving/websocket_policy_server.py,
packages/openpi-client/.../websocket_client_policy.py): on connect the server
sends one binary msgpack frame with its metadata map; then, strictly in turn,
the client sends an observation map and the server answers with a map holding
"actions" ([horizon, action_dim]) and "server_timing" {"infer_ms", "prev_total_ms"}
(openpi's Policy adds "policy_timing" {"infer_ms"}); a failure is a text frame
with the traceback followed by close code 1011.

pi0 adds keys under the "pi0/" prefix, which openpi's input transforms never
read (they pick their own keys out of the observation), so a stock server
ignores them and a stock client never sees a difference:

    metadata   "pi0/protocol_version": PROTOCOL_VERSION
               "pi0/action_horizon", "pi0/action_dim", "pi0/state_dim": ints
               "pi0/observation_family": "aloha" | "droid" | "libero"
               "pi0/rtc": {"schedules": ["exp", "linear"]}     present only when RTC guidance is served
    request    "pi0/rtc": {"previous_actions": float [rows, action_dim], "frozen_steps": int,
                           "max_guidance_weight": float, "schedule": str}
    response   "policy_timing": {"infer_ms", "preprocess_ms", "prefix_ms", "denoise_ms", "postprocess_ms"}
               "server_timing": {"infer_ms", "queue_ms", "prev_total_ms"}   queue_ms: waiting for the model
               "pi0/frozen_steps": int        rows copied bit-exactly from previous_actions
               "pi0/prompt_truncated": bool

Because a stock server silently ignores "pi0/rtc", a client sends it only to a
server whose metadata advertises it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import IncompatibleServer, InputError, ResponseError
from .interface import RTC_SCHEDULES, Inference, InferenceTiming, RtcGuidance

PROTOCOL_VERSION = 1  # bumped on an incompatible change of the pi0/ keys

PROTOCOL_VERSION_KEY = "pi0/protocol_version"
ACTION_HORIZON_KEY = "pi0/action_horizon"
ACTION_DIM_KEY = "pi0/action_dim"
STATE_DIM_KEY = "pi0/state_dim"
FAMILY_KEY = "pi0/observation_family"
RTC_KEY = "pi0/rtc"  # in the metadata: RTC is served; in a request: the guidance
FROZEN_STEPS_KEY = "pi0/frozen_steps"
PROMPT_TRUNCATED_KEY = "pi0/prompt_truncated"

# Close codes (RFC 6455) pi0_serve ends a session with, after a text frame saying why.
CLOSE_UNSUPPORTED_DATA = 1003  # a text frame where a binary observation was expected
CLOSE_INVALID_REQUEST = 1007  # not msgpack-numpy, or not a valid observation / guidance
CLOSE_MESSAGE_TOO_BIG = 1009  # over the server's request size limit (websockets closes by itself)
CLOSE_INTERNAL_ERROR = 1011  # the policy failed: the text frame holds the traceback (as openpi)

PHASES = ("preprocess_ms", "prefix_ms", "denoise_ms", "postprocess_ms")


@dataclass(frozen=True)
class ServerMetadata:
    """What a server says about itself; the pi0 fields are None/empty for a stock openpi server."""

    raw: Mapping[str, Any] = field(repr=False)  # the whole metadata map (openpi's policy metadata included)
    protocol_version: int | None = None
    action_horizon: int | None = None
    action_dim: int | None = None
    state_dim: int | None = None
    observation_family: str | None = None
    rtc_schedules: tuple[str, ...] = ()  # schedules of the served RTC guidance; empty: no RTC

    @property
    def supports_rtc(self) -> bool:
        return bool(self.rtc_schedules)

    @classmethod
    def parse(cls, raw: Any) -> ServerMetadata:
        """Reads the pi0 keys; raises IncompatibleServer when they are malformed or of a newer protocol."""
        if not isinstance(raw, Mapping):
            raise IncompatibleServer(f"server metadata must be a map, got {type(raw).__name__}")
        version = raw.get(PROTOCOL_VERSION_KEY)
        if version is None:
            return cls(raw=raw)  # a stock openpi server: none of the pi0 keys mean anything there
        if type(version) is not int or version < 1:
            raise IncompatibleServer(f"{PROTOCOL_VERSION_KEY} must be a positive int, got {version!r}")
        if version > PROTOCOL_VERSION:
            raise IncompatibleServer(
                f"server speaks pi0 protocol {version}, this client {PROTOCOL_VERSION}: update pi0_client"
            )
        rtc = raw.get(RTC_KEY)
        schedules: tuple[str, ...] = ()
        if rtc is not None:
            listed = rtc.get("schedules") if isinstance(rtc, Mapping) else None
            if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
                raise IncompatibleServer(f"{RTC_KEY} must be a map with a list of 'schedules', got {rtc!r}")
            schedules = tuple(listed)
        family = raw.get(FAMILY_KEY)
        if family is not None and not isinstance(family, str):
            raise IncompatibleServer(f"{FAMILY_KEY} must be a string, got {family!r}")
        return cls(
            raw=raw,
            protocol_version=version,
            action_horizon=_optional_positive_int(raw, ACTION_HORIZON_KEY),
            action_dim=_optional_positive_int(raw, ACTION_DIM_KEY),
            state_dim=_optional_positive_int(raw, STATE_DIM_KEY),
            observation_family=family,
            rtc_schedules=schedules,
        )


def server_metadata(
    action_horizon: int, action_dim: int, state_dim: int, observation_family: str, rtc: bool, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata map a pi0 server sends; `extra` holds further (e.g. openpi policy) entries."""
    metadata = dict(extra)
    metadata.update(
        {
            PROTOCOL_VERSION_KEY: PROTOCOL_VERSION,
            ACTION_HORIZON_KEY: action_horizon,
            ACTION_DIM_KEY: action_dim,
            STATE_DIM_KEY: state_dim,
            FAMILY_KEY: observation_family,
        }
    )
    if rtc:
        metadata[RTC_KEY] = {"schedules": list(RTC_SCHEDULES)}
    return metadata


def encode_rtc(guidance: RtcGuidance) -> dict[str, Any]:
    return {
        "previous_actions": np.asarray(guidance.previous_actions, dtype=np.float64),
        "frozen_steps": int(guidance.frozen_steps),
        "max_guidance_weight": float(guidance.max_guidance_weight),
        "schedule": guidance.schedule,
    }


def decode_rtc(raw: Any) -> RtcGuidance:
    """The request's "pi0/rtc" map -> RtcGuidance; raises InputError (the policy checks the shapes)."""
    fields = {"previous_actions", "frozen_steps", "max_guidance_weight", "schedule"}
    if not isinstance(raw, Mapping) or set(raw) != fields:
        keys = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
        raise InputError(f"{RTC_KEY} must be a map with exactly {sorted(fields)}, got {keys}")
    previous = raw["previous_actions"]
    if not isinstance(previous, np.ndarray) or previous.dtype.kind != "f" or previous.ndim != 2:
        raise InputError(f"{RTC_KEY}.previous_actions must be a 2-D float array, got {_describe(previous)}")
    weight = raw["max_guidance_weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise InputError(f"{RTC_KEY}.max_guidance_weight must be a finite number, got {weight!r}")
    return RtcGuidance(
        previous_actions=previous.astype(np.float64),
        frozen_steps=raw["frozen_steps"],
        max_guidance_weight=float(weight),
        schedule=raw["schedule"],
    )


def encode_response(inference: Inference) -> dict[str, Any]:
    """An inference as the response map (the server adds "server_timing")."""
    timing = inference.timing
    return {
        "actions": np.asarray(inference.actions, dtype=np.float64),
        "policy_timing": {"infer_ms": timing.total_ms, **{phase: getattr(timing, phase) for phase in PHASES}},
        FROZEN_STEPS_KEY: inference.frozen_steps,
        PROMPT_TRUNCATED_KEY: inference.prompt_truncated,
    }


def decode_response(
    response: Any,
    round_trip_ms: float,
    action_horizon: int | None,
    action_dim: int | None,
    rtc: RtcGuidance | None,
) -> Inference:
    """Validates a response once and returns it as an Inference; raises ResponseError with a diagnostic.

    `timing.total_ms` is the client's round trip and `timing.transport_ms` that minus the server's
    "server_timing" infer_ms and queue_ms (the wait behind other clients' requests); the model phases
    are the server's "policy_timing" (0 where not reported).
    """
    if not isinstance(response, Mapping):
        raise ResponseError(f"a response must be a map, got {type(response).__name__}")
    if "actions" not in response:
        raise ResponseError(f"response lacks 'actions' (has {sorted(map(str, response))})")
    actions = response["actions"]
    if not isinstance(actions, np.ndarray) or actions.dtype.kind != "f" or actions.ndim != 2:
        raise ResponseError(f"'actions' must be a 2-D float array, got {_describe(actions)}")
    horizon, dims = actions.shape
    if horizon < 1 or (action_horizon is not None and horizon != action_horizon):
        raise ResponseError(f"'actions' has {horizon} rows, expected {action_horizon or 'at least 1'}")
    if action_dim is not None and dims != action_dim:
        raise ResponseError(f"'actions' has {dims} dims per row, expected {action_dim}")
    actions = actions.astype(np.float64)
    bad = ~np.isfinite(actions)
    if bad.any():
        rows = sorted(set(np.nonzero(bad)[0].tolist()))
        raise ResponseError(f"'actions' contains NaN or inf in row(s) {rows[:10]}")
    frozen = _response_frozen_steps(response, actions, rtc)
    truncated = response.get(PROMPT_TRUNCATED_KEY, False)
    if not isinstance(truncated, bool):
        raise ResponseError(f"{PROMPT_TRUNCATED_KEY} must be a bool, got {truncated!r}")
    policy_timing = _timing_map(response, "policy_timing")
    server_timing = _timing_map(response, "server_timing")
    server_ms = server_timing.get("infer_ms", 0.0) + server_timing.get("queue_ms", 0.0)
    timing = InferenceTiming(
        **{phase: policy_timing.get(phase, 0.0) for phase in PHASES},
        total_ms=round_trip_ms,
        transport_ms=max(0.0, round_trip_ms - server_ms),
    )
    return Inference(actions=actions, timing=timing, frozen_steps=frozen, prompt_truncated=truncated)


def _response_frozen_steps(response: Mapping[str, Any], actions: np.ndarray, rtc: RtcGuidance | None) -> int:
    if rtc is None:
        return 0
    frozen = response.get(FROZEN_STEPS_KEY)
    if frozen != rtc.frozen_steps or type(frozen) is not int:
        raise ResponseError(f"RTC asked {rtc.frozen_steps} frozen rows, the server reports {frozen!r}")
    previous = np.asarray(rtc.previous_actions, dtype=np.float64)[:frozen]
    if frozen > len(actions) or not np.array_equal(actions[:frozen], previous):
        raise ResponseError(f"the server did not return the {frozen} frozen rows of the previous chunk exactly")
    return frozen


def _timing_map(response: Mapping[str, Any], key: str) -> dict[str, float]:
    raw = response.get(key, {})
    if not isinstance(raw, Mapping):
        raise ResponseError(f"'{key}' must be a map, got {type(raw).__name__}")
    timing: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ResponseError(f"'{key}.{name}' must be a non-negative number of ms, got {value!r}")
        timing[str(name)] = float(value)
    return timing


def _optional_positive_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is not None and (type(value) is not int or value < 1):
        raise IncompatibleServer(f"{key} must be a positive int, got {value!r}")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__
