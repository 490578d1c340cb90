"""Normalization stats: exact inversion, file formats, cropping and lookup in checkpoints."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pi0_model.errors import CheckpointError
from pi0_model.normalization import Normalization, NormStats, find_normalization, load_normalization


def random_stats(rng, dim: int) -> NormStats:
    low = rng.normal(size=dim)
    return NormStats(
        mean=rng.normal(size=dim), std=rng.uniform(0.1, 2.0, size=dim), q01=low, q99=low + rng.uniform(0.5, 3, size=dim)
    )


@pytest.mark.parametrize("quantiles", [False, True])
def test_normalize_then_unnormalize_is_exact(rng, quantiles):
    norm = Normalization(random_stats(rng, 14), random_stats(rng, 14), use_quantiles=quantiles)
    actions = rng.normal(size=(50, 14)) * 3
    back = norm.unnormalize_actions(norm.normalize_actions(actions))
    np.testing.assert_allclose(back, actions, rtol=0, atol=1e-12)


def test_mean_std_and_quantile_formulas(rng):
    stats = NormStats(mean=[1.0, -2.0], std=[2.0, 0.5], q01=[0.0, -1.0], q99=[4.0, 1.0])
    x = np.array([3.0, 0.0])
    assert Normalization(stats, stats).normalize_state(x) == pytest.approx(
        [(3 - 1) / (2 + 1e-6), (0 + 2) / (0.5 + 1e-6)]
    )
    quantile = Normalization(stats, stats, use_quantiles=True)
    assert quantile.normalize_state(x) == pytest.approx([3 / 4 * 2 - 1, 0.0], abs=1e-5)


def test_stats_are_cropped_to_the_robot_and_shorter_stats_fail(rng):
    norm = Normalization(random_stats(rng, 32), random_stats(rng, 32))
    cropped = norm.for_robot(14, 16)
    assert len(cropped.state) == 14 and len(cropped.actions) == 16
    assert np.array_equal(cropped.state.mean, norm.state.mean[:14])
    with pytest.raises(CheckpointError, match="'actions' have 8 dims, the robot needs 14"):
        Normalization(random_stats(rng, 14), random_stats(rng, 8)).for_robot(14, 14)


def test_quantile_mode_needs_quantiles():
    stats = NormStats(mean=[0.0], std=[1.0])
    with pytest.raises(CheckpointError, match="q01 and q99"):
        Normalization(stats, stats, use_quantiles=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mean=[0.0, 1.0], std=[1.0]), "mismatched lengths"),
        (dict(mean=[0.0], std=[-1.0]), "std must be >= 0"),
        (dict(mean=[np.nan], std=[1.0]), "NaN or inf"),
        (dict(mean=[0.0], std=[1.0], q01=[0.0]), "both q01 and q99"),
    ],
)
def test_bad_stats_are_rejected(kwargs, message):
    with pytest.raises(CheckpointError, match=message):
        NormStats(**kwargs)


def test_openpi_json_round_trip(tmp_path, rng):
    norm = Normalization(random_stats(rng, 32), random_stats(rng, 32))
    norm.save(tmp_path / "norm_stats.json")
    data = json.loads((tmp_path / "norm_stats.json").read_text())
    assert set(data["norm_stats"]) == {"state", "actions"}
    loaded = load_normalization(tmp_path / "norm_stats.json")
    assert np.array_equal(loaded.actions.q99, norm.actions.q99)
    assert np.array_equal(loaded.state.mean, norm.state.mean)


def test_lerobot_normalizer_file(tmp_path, rng):
    flat = {
        "observation.state.mean": torch.tensor([0.5, 1.5]),
        "observation.state.std": torch.tensor([2.0, 3.0]),
        "action.mean": torch.tensor([0.1, 0.2]),
        "action.std": torch.tensor([1.0, 4.0]),
        "observation.images.cam_high.mean": torch.zeros(3, 1, 1),
    }
    path = tmp_path / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    save_file(flat, str(path))
    loaded = load_normalization(path)
    assert loaded.state.mean.tolist() == [0.5, 1.5]
    assert loaded.actions.std.tolist() == [1.0, 4.0]
    assert find_normalization(tmp_path) == path


def test_lookup_in_checkpoint_directories(tmp_path, rng):
    norm = Normalization(random_stats(rng, 4), random_stats(rng, 4))
    with pytest.raises(CheckpointError, match="no normalization stats in .*norm_stats.json"):
        find_normalization(tmp_path)
    (tmp_path / "assets" / "trossen").mkdir(parents=True)
    norm.save(tmp_path / "assets" / "trossen" / "norm_stats.json")
    assert find_normalization(tmp_path) == tmp_path / "assets" / "trossen" / "norm_stats.json"
    (tmp_path / "assets" / "other").mkdir()
    norm.save(tmp_path / "assets" / "other" / "norm_stats.json")
    with pytest.raises(CheckpointError, match="several normalization stats files"):
        find_normalization(tmp_path)
    norm.save(tmp_path / "norm_stats.json")
    assert find_normalization(tmp_path) == tmp_path / "norm_stats.json"


def test_malformed_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_normalization(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"norm_stats": {"state": {"mean": [0]}}}))
    with pytest.raises(CheckpointError, match="norm_stats.state and norm_stats.actions"):
        load_normalization(tmp_path / "wrong.json")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_normalization(tmp_path / "missing.json")
