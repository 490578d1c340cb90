"""State/action normalization statistics: loading, cropping to the robot, and the transforms.

pi0 normalizes state and actions with mean/std (z-score); quantile scaling
to [-1, 1] with q01/q99 is available as an option (pi0.5 uses it). Formulas
follow openpi `transforms.py`, including its epsilon, so normalize and
unnormalize are exact inverses:

    mean/std:  (x - mean) / (std + 1e-6)           x * (std + 1e-6) + mean
    quantile:  (x - q01) / (q99 - q01 + 1e-6) * 2 - 1

Stats files read: openpi `norm_stats.json` ({"norm_stats": {"state": {...},
"actions": {...}}}) and LeRobot's normalizer processor state
(`policy_preprocessor_step_*_normalizer_processor.safetensors`, keys
"observation.state.mean", "action.std", ...). Stats are usually stored padded
to the model width (32); they are cropped to the robot's dimensions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .transforms import TransformPipeline

EPSILON = 1e-6
OPENPI_STATS_FILE = "norm_stats.json"
LEROBOT_STATS_GLOB = "policy_preprocessor_step_*_normalizer_processor.safetensors"
NORM_MODES = ("mean_std", "quantile")


def _vector(name: str, values: object) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a private copy: it is frozen below
    if array.ndim != 1 or array.size == 0:
        raise CheckpointError(f"normalization stat {name} must be a non-empty 1-D list, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise CheckpointError(f"normalization stat {name} contains NaN or inf")
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of one key (state or actions)."""

    mean: np.ndarray  # [D]
    std: np.ndarray  # [D], >= 0
    q01: np.ndarray | None = None  # [D] 1st percentile, for quantile normalization
    q99: np.ndarray | None = None  # [D] 99th percentile

    def __post_init__(self) -> None:
        for name in ("mean", "std", "q01", "q99"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _vector(name, value))
        lengths = {len(getattr(self, n)) for n in ("mean", "std", "q01", "q99") if getattr(self, n) is not None}
        if len(lengths) != 1:
            raise CheckpointError(f"normalization stats have mismatched lengths {sorted(lengths)}")
        if np.any(self.std < 0):
            raise CheckpointError("normalization std must be >= 0")
        if (self.q01 is None) != (self.q99 is None):
            raise CheckpointError("normalization stats need both q01 and q99, or neither")

    def __len__(self) -> int:
        return len(self.mean)

    @property
    def has_quantiles(self) -> bool:
        return self.q01 is not None

    @classmethod
    def identity(cls, dim: int) -> NormStats:
        """Stats under which normalization is (up to the 1e-6 epsilon) the identity."""
        return cls(mean=np.zeros(dim), std=np.ones(dim), q01=-np.ones(dim), q99=np.ones(dim))

    @classmethod
    def from_dict(cls, data: dict, name: str) -> NormStats:
        if not isinstance(data, dict) or "mean" not in data or "std" not in data:
            raise CheckpointError(f"normalization stats for {name!r} need 'mean' and 'std'")
        return cls(data["mean"], data["std"], data.get("q01"), data.get("q99"))

    def to_dict(self) -> dict[str, list[float]]:
        out = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.q01 is not None and self.q99 is not None:
            out.update(q01=self.q01.tolist(), q99=self.q99.tolist())
        return out

    def crop(self, dim: int, name: str) -> NormStats:
        """The first `dim` entries; stats shorter than the robot's vector are an error."""
        if len(self) < dim:
            raise CheckpointError(f"normalization stats for {name!r} have {len(self)} dims, the robot needs {dim}")

        def head(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[:dim]

        return NormStats(self.mean[:dim], self.std[:dim], head(self.q01), head(self.q99))


@dataclass(frozen=True)
class Normalization:
    """Normalization of the robot state and actions (in the adapted robot space, before padding)."""

    state: NormStats
    actions: NormStats
    use_quantiles: bool = False  # q01/q99 scaling to [-1, 1] instead of mean/std

    def __post_init__(self) -> None:
        if self.use_quantiles and not (self.state.has_quantiles and self.actions.has_quantiles):
            raise CheckpointError("quantile normalization needs q01 and q99 for both state and actions")

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalization:
        return cls(NormStats.identity(state_dim), NormStats.identity(action_dim))

    def for_robot(self, state_dim: int, action_dim: int) -> Normalization:
        return Normalization(
            self.state.crop(state_dim, "state"), self.actions.crop(action_dim, "actions"), self.use_quantiles
        )

    def with_mode(self, mode: str) -> Normalization:
        if mode not in NORM_MODES:
            raise CheckpointError(f"unknown normalization mode {mode!r}; choose from {NORM_MODES}")
        return Normalization(self.state, self.actions, use_quantiles=mode == "quantile")

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self._normalize(state, self.state)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self._normalize(actions, self.actions)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        stats = self.actions
        if self.use_quantiles:
            assert stats.q01 is not None and stats.q99 is not None
            return (actions + 1.0) / 2.0 * (stats.q99 - stats.q01 + EPSILON) + stats.q01
        return actions * (stats.std + EPSILON) + stats.mean

    def _normalize(self, x: np.ndarray, stats: NormStats) -> np.ndarray:
        if self.use_quantiles:
            assert stats.q01 is not None and stats.q99 is not None
            return (x - stats.q01) / (stats.q99 - stats.q01 + EPSILON) * 2.0 - 1.0
        return (x - stats.mean) / (stats.std + EPSILON)

    def save(self, path: str | Path) -> None:
        """Write openpi's norm_stats.json format."""
        data = {"norm_stats": {"state": self.state.to_dict(), "actions": self.actions.to_dict()}}
        Path(path).write_text(json.dumps(data, indent=2))


def load_normalization(path: str | Path) -> Normalization:
    """Load an openpi norm_stats.json or a LeRobot normalizer .safetensors file (mean/std mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"normalization stats file {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_lerobot(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read normalization stats {path}: {error}") from error
    stats = data.get("norm_stats", data) if isinstance(data, dict) else None
    if not isinstance(stats, dict) or "state" not in stats or "actions" not in stats:
        raise CheckpointError(
            f"{path} is not an openpi norm_stats.json: expected norm_stats.state and norm_stats.actions"
        )
    return Normalization(NormStats.from_dict(stats["state"], "state"), NormStats.from_dict(stats["actions"], "actions"))


def _load_lerobot(path: Path) -> Normalization:
    from safetensors.numpy import load_file

    try:
        flat = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise CheckpointError(f"cannot read LeRobot normalizer {path}: {error}") from error

    def stats(key: str) -> NormStats:
        mean, std = flat.get(f"{key}.mean"), flat.get(f"{key}.std")
        if mean is None or std is None:
            raise CheckpointError(f"{path} has no {key}.mean / {key}.std (keys: {sorted(flat)[:8]} ...)")
        q01, q99 = flat.get(f"{key}.q01"), flat.get(f"{key}.q99")
        return NormStats(
            mean.reshape(-1),
            std.reshape(-1),
            None if q01 is None else q01.reshape(-1),
            None if q99 is None else q99.reshape(-1),
        )

    return Normalization(stats("observation.state"), stats("action"))


def find_normalization(checkpoint_dir: str | Path) -> Path:
    """Locate stats in a checkpoint: norm_stats.json, assets/*/norm_stats.json, or LeRobot's normalizer file."""
    checkpoint_dir = Path(checkpoint_dir)
    candidates = [checkpoint_dir / OPENPI_STATS_FILE]
    candidates += sorted(checkpoint_dir.glob(f"assets/*/{OPENPI_STATS_FILE}"))
    candidates += sorted(checkpoint_dir.glob(LEROBOT_STATS_GLOB))
    found = [path for path in candidates if path.is_file()]
    if len(found) > 1 and found[0] != checkpoint_dir / OPENPI_STATS_FILE:
        raise CheckpointError(
            f"several normalization stats files in {checkpoint_dir}: {[str(p) for p in found]}; "
            "choose one with norm_stats_path"
        )
    if not found:
        raise CheckpointError(
            f"no normalization stats in {checkpoint_dir} (looked for {OPENPI_STATS_FILE}, "
            f"assets/*/{OPENPI_STATS_FILE}, {LEROBOT_STATS_GLOB}); pass norm_stats_path. "
            "Running without the checkpoint's stats gives wrong actions"
        )
    return found[0]


def compute_normalization(
    episodes: Sequence[tuple[np.ndarray, np.ndarray]], transforms: Sequence[str], action_horizon: int
) -> Normalization:
    """Stats the way openpi's compute_norm_stats computes them from a LeRobot dataset, but exact.

    `episodes` holds each episode's (states [n, S], actions [n, A]) in robot
    units. States are taken per frame after the robot adaptations; actions as
    the model is trained on them: for every frame, the chunk of the next
    `action_horizon` actions (the episode's last action repeating past its end,
    as openpi's loader pads with LeRobot's delta timestamps), adapted with that
    frame's state. openpi estimates q01/q99 from 5000-bin histograms; here they
    are exact (numpy's linear quantiles), as are mean and std (population).
    Every chunk value is held at once: frames x horizon x action dims floats.
    """
    if action_horizon < 1:
        raise CheckpointError(f"action_horizon must be at least 1, got {action_horizon}")
    if not episodes:
        raise CheckpointError("normalization stats need at least one episode")
    pipeline = TransformPipeline.parse(transforms)
    states, chunks = [], []
    for episode_states, episode_actions in episodes:
        length = len(episode_states)
        rows = np.minimum(np.arange(length)[:, None] + np.arange(action_horizon)[None, :], length - 1)
        for frame in range(length):
            stages = pipeline.adapt_state(np.asarray(episode_states[frame], dtype=np.float64))
            states.append(stages[-1])
            chunks.append(pipeline.actions_in(np.asarray(episode_actions[rows[frame]], dtype=np.float64), stages))
    return Normalization(_exact_stats(np.stack(states)), _exact_stats(np.concatenate(chunks)))


def _exact_stats(values: np.ndarray) -> NormStats:
    return NormStats(
        mean=values.mean(axis=0),
        std=values.std(axis=0),
        q01=np.quantile(values, 0.01, axis=0),
        q99=np.quantile(values, 0.99, axis=0),
    )
