"""The pi0 protocol extensions: metadata, RTC guidance and responses, each encoded and decoded symmetrically."""

import numpy as np
import pytest

from pi0_client.errors import IncompatibleServer, InputError, ResponseError
from pi0_client.interface import Inference, InferenceTiming, RtcGuidance
from pi0_client.msgpack_numpy import packb, unpackb
from pi0_client.protocol import (
    PROTOCOL_VERSION,
    ServerMetadata,
    decode_response,
    decode_rtc,
    encode_response,
    encode_rtc,
    server_metadata,
)

TIMING = InferenceTiming(preprocess_ms=1.0, prefix_ms=2.0, denoise_ms=3.0, postprocess_ms=0.5, total_ms=6.5)


def wire(value):
    return unpackb(packb(value))


def test_metadata_round_trips_and_keeps_other_entries():
    raw = wire(server_metadata(50, 14, 14, "aloha", rtc=True, extra={"reset_pose": [0.0] * 14}))
    metadata = ServerMetadata.parse(raw)
    assert metadata.protocol_version == PROTOCOL_VERSION
    assert (metadata.action_horizon, metadata.action_dim, metadata.state_dim) == (50, 14, 14)
    assert metadata.observation_family == "aloha"
    assert metadata.supports_rtc and metadata.rtc_schedules == ("exp", "linear")
    assert metadata.raw["reset_pose"] == [0.0] * 14
    assert not ServerMetadata.parse(wire(server_metadata(50, 14, 14, "aloha", rtc=False, extra={}))).supports_rtc


def test_stock_openpi_metadata_has_no_pi0_fields():
    metadata = ServerMetadata.parse({"reset_pose": [1.0], "pi0/action_dim": "ignored without a version"})
    assert metadata.protocol_version is None and metadata.action_dim is None and not metadata.supports_rtc


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "must be a map"),
        ({"pi0/protocol_version": PROTOCOL_VERSION + 1}, "update pi0_client"),
        ({"pi0/protocol_version": "1"}, "positive int"),
        ({"pi0/protocol_version": 1, "pi0/action_horizon": 0}, "pi0/action_horizon must be a positive int"),
        ({"pi0/protocol_version": 1, "pi0/rtc": True}, "list of 'schedules'"),
        ({"pi0/protocol_version": 1, "pi0/observation_family": 3}, "must be a string"),
    ],
)
def test_malformed_metadata_is_refused(raw, message):
    with pytest.raises(IncompatibleServer, match=message):
        ServerMetadata.parse(raw)


def test_rtc_guidance_round_trips():
    guidance = RtcGuidance(np.arange(20.0).reshape(10, 2), frozen_steps=3, max_guidance_weight=2.5, schedule="linear")
    decoded = decode_rtc(wire(encode_rtc(guidance)))
    np.testing.assert_array_equal(decoded.previous_actions, guidance.previous_actions)
    assert (decoded.frozen_steps, decoded.max_guidance_weight, decoded.schedule) == (3, 2.5, "linear")


def rtc_map(**changes):
    raw = {"previous_actions": np.zeros((4, 2)), "frozen_steps": 1, "max_guidance_weight": 5.0, "schedule": "exp"}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not ...}


@pytest.mark.parametrize(
    "raw, message",
    [
        ("yes", "must be a map"),
        (rtc_map(schedule=...), "must be a map with exactly"),
        (rtc_map(extra=1), "must be a map with exactly"),
        (rtc_map(previous_actions=[[0.0]]), "2-D float array"),
        (rtc_map(previous_actions=np.zeros(4)), "2-D float array"),
        (rtc_map(previous_actions=np.zeros((4, 2), np.int32)), "2-D float array"),
        (rtc_map(max_guidance_weight=float("nan")), "finite number"),
        (rtc_map(frozen_steps=-1), "frozen_steps must be an int >= 0"),
        (rtc_map(frozen_steps=1.0), "frozen_steps must be an int >= 0"),
        (rtc_map(schedule="cosine"), "schedule must be one of"),
    ],
)
def test_malformed_rtc_guidance_is_refused(raw, message):
    with pytest.raises(InputError, match=message):
        decode_rtc(raw)


def test_response_round_trips_with_round_trip_timing():
    inference = Inference(np.arange(30.0).reshape(10, 3), TIMING, frozen_steps=0, prompt_truncated=True)
    response = wire({**encode_response(inference), "server_timing": {"infer_ms": 7.0}})
    decoded = decode_response(response, round_trip_ms=9.0, action_horizon=10, action_dim=3, rtc=None)
    np.testing.assert_array_equal(decoded.actions, inference.actions)
    assert decoded.prompt_truncated and decoded.frozen_steps == 0
    assert (decoded.timing.preprocess_ms, decoded.timing.denoise_ms) == (1.0, 3.0)
    assert decoded.timing.total_ms == 9.0 and decoded.timing.transport_ms == pytest.approx(2.0)


def test_stock_openpi_response_decodes():
    """openpi's Policy returns float32 actions and only infer_ms timings."""
    response = {"actions": np.ones((5, 14), np.float32), "policy_timing": {"infer_ms": 3.0}, "server_timing": {}}
    decoded = decode_response(response, round_trip_ms=4.0, action_horizon=None, action_dim=14, rtc=None)
    assert decoded.actions.dtype == np.float64 and decoded.timing.denoise_ms == 0.0
    assert decoded.timing.transport_ms == 4.0


def test_rtc_response_must_return_the_frozen_rows_exactly():
    previous = np.random.default_rng(0).normal(size=(6, 3))
    rtc = RtcGuidance(previous, frozen_steps=2)
    actions = np.zeros((10, 3))
    actions[:2] = previous[:2]
    good = {"actions": actions, "pi0/frozen_steps": 2}
    assert decode_response(good, 1.0, 10, 3, rtc).frozen_steps == 2
    with pytest.raises(ResponseError, match="frozen rows"):
        decode_response({"actions": actions, "pi0/frozen_steps": 1}, 1.0, 10, 3, rtc)
    with pytest.raises(ResponseError, match="frozen rows"):
        decode_response({"actions": actions}, 1.0, 10, 3, rtc)  # a server that ignored the guidance
    nudged = actions.copy()
    nudged[1, 0] = np.nextafter(nudged[1, 0], 1.0)
    with pytest.raises(ResponseError, match="exactly"):
        decode_response({"actions": nudged, "pi0/frozen_steps": 2}, 1.0, 10, 3, rtc)


@pytest.mark.parametrize(
    "response, message",
    [
        ([1], "must be a map"),
        ({"action": np.zeros((10, 3))}, "lacks 'actions'"),
        ({"actions": [[0.0] * 3] * 10}, "2-D float array"),
        ({"actions": np.zeros((10, 3), np.int64)}, "2-D float array"),
        ({"actions": np.zeros(30)}, "2-D float array"),
        ({"actions": np.zeros((9, 3))}, "9 rows, expected 10"),
        ({"actions": np.zeros((10, 4))}, "4 dims per row, expected 3"),
        ({"actions": np.full((10, 3), np.nan)}, r"NaN or inf in row\(s\) \[0, 1"),
        ({"actions": np.zeros((10, 3)), "policy_timing": {"infer_ms": -1.0}}, "non-negative number"),
        ({"actions": np.zeros((10, 3)), "server_timing": {"infer_ms": "1"}}, "non-negative number"),
        ({"actions": np.zeros((10, 3)), "server_timing": 3}, "must be a map"),
        ({"actions": np.zeros((10, 3)), "pi0/prompt_truncated": 1}, "must be a bool"),
    ],
)
def test_unusable_responses_are_refused(response, message):
    with pytest.raises(ResponseError, match=message):
        decode_response(response, 1.0, action_horizon=10, action_dim=3, rtc=None)
