"""Pi0Policy: the API the ROS node uses (tiny random model, CPU)."""

import threading

import numpy as np
import pytest
import torch
from tiny_pi0 import ALOHA_CAMERAS, aloha_state, camera_frames

from pi0_client.errors import InputError
from pi0_client.interface import Inference, RtcGuidance
from pi0_model.checkpoint import save_checkpoint
from pi0_model.errors import CheckpointError, ConfigError, Pi0InputError
from pi0_model.normalization import Normalization, NormStats
from pi0_model.policy import Pi0Policy, RobotIO
from pi0_model.tokenizer import tiny_sentencepiece_model

INSTRUCTION = "fold the towel"


def test_infer_returns_an_unnormalized_chunk_with_timing(aloha_policy, rng):
    out = aloha_policy.infer(camera_frames(rng, ALOHA_CAMERAS), aloha_state(rng), INSTRUCTION)
    assert isinstance(out, Inference)
    assert aloha_policy.horizon == 50
    assert out.actions.shape == (50, 14) and out.actions.dtype == np.float64
    assert np.isfinite(out.actions).all()
    assert out.frozen_steps == 0 and not out.prompt_truncated
    timing = out.timing
    phases = [timing.preprocess_ms, timing.prefix_ms, timing.denoise_ms, timing.postprocess_ms]
    assert all(value >= 0 for value in phases)
    assert sum(phases) == pytest.approx(timing.total_ms, rel=1e-6)


def test_fixed_noise_is_reproducible_and_default_noise_is_seeded(aloha_io, aloha_policy, rng):
    frames, state = camera_frames(rng, ALOHA_CAMERAS), aloha_state(rng)
    noise = rng.normal(size=(50, 32))
    first = aloha_policy.infer(frames, state, INSTRUCTION, noise=noise).actions
    second = aloha_policy.infer(frames, state, INSTRUCTION, noise=noise).actions
    assert np.array_equal(first, second)
    a, b = Pi0Policy.tiny(aloha_io, seed=3), Pi0Policy.tiny(aloha_io, seed=3)
    run_a = [a.infer(frames, state, INSTRUCTION).actions for _ in range(2)]
    run_b = [b.infer(frames, state, INSTRUCTION).actions for _ in range(2)]
    assert np.array_equal(run_a[0], run_b[0]) and np.array_equal(run_a[1], run_b[1])
    assert not np.allclose(run_a[0], run_a[1]), "each call draws fresh noise"


def test_stats_are_applied_and_undone(rng):
    """With state == mean the model sees the same input as an identity-stats policy with zero state,
    so the chunks differ exactly by the unnormalization."""
    io = RobotIO(camera_slots={"top": "base_0_rgb"}, state_dim=6, action_dim=5)
    state_stats = NormStats(mean=rng.normal(size=6), std=rng.uniform(0.5, 2, size=6))
    action_stats = NormStats(mean=rng.normal(size=5), std=rng.uniform(0.5, 2, size=5))
    with_stats = Pi0Policy.tiny(io, Normalization(state_stats, action_stats), seed=1)
    identity = Pi0Policy.tiny(io, seed=1)
    frames, noise = camera_frames(rng, ["top"]), rng.normal(size=(50, 32))
    a = with_stats.infer(frames, state_stats.mean.copy(), INSTRUCTION, noise=noise).actions
    b = identity.infer(frames, np.zeros(6), INSTRUCTION, noise=noise).actions
    np.testing.assert_allclose(a, b * (action_stats.std + 1e-6) + action_stats.mean, atol=1e-5)


def test_missing_cameras_are_allowed(aloha_policy, rng):
    frames = camera_frames(rng, ["cam_high"], shape=(224, 224, 3))
    out = aloha_policy.infer(frames, aloha_state(rng), INSTRUCTION)
    assert out.actions.shape == (50, 14)


def test_mobile_aloha_sixteen_dims(rng):
    io = RobotIO(camera_slots=ALOHA_CAMERAS, state_dim=16, action_dim=16, transforms=("aloha", "delta:6,-1,6,-1"))
    policy = Pi0Policy.tiny(io)
    out = policy.infer(camera_frames(rng, ALOHA_CAMERAS), aloha_state(rng, 16), "drive to the table")
    assert out.actions.shape == (50, 16) and np.isfinite(out.actions).all()


def good_inputs(rng):
    return dict(
        images=camera_frames(rng, ALOHA_CAMERAS, shape=(64, 80, 3)), state=aloha_state(rng), instruction=INSTRUCTION
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda kw: kw["images"].update(cam_high=np.zeros((64, 80), np.uint8)), "image 'cam_high' must have shape"),
        (lambda kw: kw["images"].update(cam_high=np.zeros((64, 80, 3), np.float64)), "must be uint8"),
        (
            lambda kw: kw["images"].update(cam_low=np.zeros((64, 80, 3), np.uint8)),
            "got 4 images but the robot maps only 3",
        ),
        (
            lambda kw: kw.update(images={"cam_low": np.zeros((8, 8, 3), np.uint8)}),
            r"unknown camera name\(s\) \['cam_low'\]",
        ),
        (lambda kw: kw.update(images={}), "no camera images"),
        (lambda kw: kw["state"].__setitem__(3, np.nan), r"state contains NaN or inf at index \[3\]"),
        (lambda kw: kw.update(state=np.zeros(13)), r"state must have shape \[14\], got \[13\]"),
        (lambda kw: kw.update(state="joint angles"), "state must be a numeric vector"),
        (lambda kw: kw.update(instruction="   "), "instruction is empty"),
        (lambda kw: kw.update(noise=np.zeros((50, 14))), r"noise must be a numeric array of shape \[50, 32\]"),
        (lambda kw: kw.update(noise=np.full((50, 32), np.inf)), "noise contains NaN or inf"),
        (
            lambda kw: kw.update(rtc=RtcGuidance(np.zeros((10, 7)), 2)),
            r"previous_actions must have shape \[1..50, 14\]",
        ),
        (lambda kw: kw.update(rtc=RtcGuidance(np.zeros((60, 14)), 2)), "previous_actions must have shape"),
        (lambda kw: kw.update(rtc=RtcGuidance(np.zeros((5, 14)), 6)), "frozen_steps .6. exceeds"),
        (lambda kw: kw.update(rtc=RtcGuidance(np.full((5, 14), np.nan), 1)), "previous_actions contains NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(aloha_policy, rng, change, message):
    kwargs = good_inputs(rng)
    change(kwargs)
    with pytest.raises(Pi0InputError, match=message):
        aloha_policy.infer(**kwargs)


def test_input_error_is_a_value_error(aloha_policy, rng):
    kwargs = good_inputs(rng)
    kwargs["state"] = np.zeros(2)
    with pytest.raises(ValueError):
        aloha_policy.infer(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(frozen_steps=-1), InputError, "frozen_steps must be an int >= 0"),
        (dict(frozen_steps=2, max_guidance_weight=0.0), InputError, "max_guidance_weight must be > 0"),
        (dict(frozen_steps=2, schedule="cosine"), InputError, "schedule must be one of"),
    ],
)
def test_bad_rtc_requests(kwargs, error, message):
    with pytest.raises(error, match=message):
        RtcGuidance(previous_actions=np.zeros((10, 14)), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(camera_slots={"a": "base_0_rgb", "b": "nowhere"}), "unknown slot 'nowhere'"),
        (dict(camera_slots={f"c{i}": "base_0_rgb" for i in range(4)}), "3 camera slots, got 4 cameras"),
        (dict(state_dim=0), "state_dim must be a positive int"),
        (dict(transforms=("aloha",), state_dim=7, action_dim=7), "reads 14 dims"),
        (dict(transforms=("unknown",)), "unknown transform 'unknown'"),
        (dict(transforms="aloha"), "sequence of names"),
        (dict(norm_mode="minmax"), "norm_mode must be None or one of"),
    ],
)
def test_bad_robot_io_raises_config_errors(kwargs, message):
    base = dict(camera_slots={"top": "base_0_rgb"}, state_dim=14, action_dim=14)
    with pytest.raises(ConfigError, match=message):
        RobotIO(**{**base, **kwargs})


def test_robot_dims_must_fit_the_model():
    with pytest.raises(ConfigError, match="exceed the model"):
        Pi0Policy.tiny(RobotIO(camera_slots={"top": "base_0_rgb"}, state_dim=40, action_dim=14))


def test_real_time_chunking_keeps_frozen_actions_and_follows_the_previous_chunk(aloha_policy, rng):
    frames, state = camera_frames(rng, ALOHA_CAMERAS, shape=(96, 128, 3)), aloha_state(rng)
    previous_chunk = aloha_policy.infer(frames, state, INSTRUCTION).actions
    executed = 8  # the robot moved on 8 steps since the previous observation
    previous = previous_chunk[executed:]  # time-aligned to the new observation
    noise = rng.normal(size=(50, 32))
    free = aloha_policy.infer(frames, state, INSTRUCTION, noise=noise)
    guided = aloha_policy.infer(frames, state, INSTRUCTION, noise=noise, rtc=RtcGuidance(previous, frozen_steps=5))
    assert guided.frozen_steps == 5
    assert np.array_equal(guided.actions[:5], previous[:5])

    def gap(actions, rows):
        return np.abs(actions[rows] - previous[rows]).mean()

    assert gap(guided.actions, slice(5, 15)) < 0.3 * gap(free.actions, slice(5, 15))
    assert np.isfinite(guided.actions).all()


def test_infer_from_a_worker_thread(aloha_policy, rng):
    kwargs = good_inputs(rng)
    results = []
    worker = threading.Thread(target=lambda: results.append(aloha_policy.infer(**kwargs)))
    worker.start()
    worker.join(timeout=60)
    assert results and results[0].actions.shape == (50, 14)


def test_long_instructions_are_flagged(aloha_policy, rng):
    kwargs = good_inputs(rng)
    kwargs["instruction"] = "pick up the red cube and place it in the bowl " * 10
    assert aloha_policy.infer(**kwargs).prompt_truncated


def make_checkpoint(directory, policy: Pi0Policy, with_tokenizer: bool = True, with_stats: bool = True):
    save_checkpoint(policy.model, directory, policy.normalization if with_stats else None)
    if with_tokenizer:
        (directory / "tokenizer.model").write_bytes(tiny_sentencepiece_model())
    return directory


def test_from_checkpoint_reproduces_the_saved_policy(tmp_path, aloha_io, rng):
    stats = Normalization(
        NormStats(rng.normal(size=14), rng.uniform(0.5, 2, 14)), NormStats(rng.normal(size=14), rng.uniform(0.5, 2, 14))
    )
    original = Pi0Policy.tiny(aloha_io, stats, seed=5)
    make_checkpoint(tmp_path, original)
    loaded = Pi0Policy.from_checkpoint(tmp_path, aloha_io, device="cpu", dtype="float32", num_steps=4)
    assert loaded.num_steps == 4 and loaded.horizon == 50
    kwargs = good_inputs(rng)
    noise = rng.normal(size=(50, 32))
    original.num_steps = 4
    assert np.allclose(
        loaded.infer(**kwargs, noise=noise).actions, original.infer(**kwargs, noise=noise).actions, atol=1e-6
    )


def test_from_checkpoint_with_explicit_stats_and_tokenizer_paths(tmp_path, aloha_io, aloha_policy, rng):
    checkpoint = make_checkpoint(tmp_path / "ckpt", aloha_policy, with_tokenizer=False, with_stats=False)
    with pytest.raises(CheckpointError, match="no normalization stats"):
        Pi0Policy.from_checkpoint(checkpoint, aloha_io)
    aloha_policy.normalization.save(tmp_path / "stats.json")
    io = RobotIO(ALOHA_CAMERAS, 14, 14, transforms=("aloha",), norm_stats_path=str(tmp_path / "stats.json"))
    with pytest.raises(CheckpointError, match="no tokenizer in .*LeRobot checkpoints do not bundle it"):
        Pi0Policy.from_checkpoint(checkpoint, io)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.model").write_bytes(tiny_sentencepiece_model())
    policy = Pi0Policy.from_checkpoint(checkpoint, io, tokenizer_path=tmp_path / "tok")
    assert policy.infer(**good_inputs(rng)).actions.shape == (50, 14)


def test_unsupported_devices_and_dtypes(tmp_path, aloha_io):
    with pytest.raises(ConfigError, match="supported dtypes"):
        Pi0Policy.random_init(aloha_io, Pi0Policy.tiny(aloha_io).config, dtype="float16")
    with pytest.raises(ConfigError, match="supported devices"):
        Pi0Policy.random_init(aloha_io, Pi0Policy.tiny(aloha_io).config, device="meta")


@pytest.mark.slow
def test_torch_compiled_policy_matches_eager(aloha_io, rng):
    """The --compile path (inductor on CPU here; CUDA graphs on GPU) gives the eager actions, RTC included."""
    eager = Pi0Policy.tiny(aloha_io, seed=4, num_steps=3)
    compiled = Pi0Policy(eager.model, eager.tokenizer, aloha_io, eager.normalization, 3, compile_mode="default")
    kwargs, noise = good_inputs(rng), rng.normal(size=(50, 32))
    reference = eager.infer(**kwargs, noise=noise).actions
    for _ in range(2):  # the second call reuses the compiled graphs
        np.testing.assert_allclose(compiled.infer(**kwargs, noise=noise).actions, reference, atol=1e-4)
    rtc = RtcGuidance(reference[4:], frozen_steps=2)
    np.testing.assert_allclose(
        compiled.infer(**kwargs, noise=noise, rtc=rtc).actions,
        eager.infer(**kwargs, noise=noise, rtc=rtc).actions,
        atol=1e-4,
    )
    # A camera dropping a frame keeps every shape: no recompilation stalls the control loop.
    one_camera = dict(kwargs, images={name: kwargs["images"][name] for name in list(kwargs["images"])[:1]})
    with torch._dynamo.config.patch(error_on_recompile=True):
        np.testing.assert_allclose(
            compiled.infer(**one_camera, noise=noise).actions,
            eager.infer(**one_camera, noise=noise).actions,
            atol=1e-4,
        )
