"""The LeRobotDataset layouts this project writes and reads: v2.1 (openpi's training stack) and v3.0 (LeRobot >= 0.4).

Plain Python (numpy only): the writer (:mod:`pi0_model.dataset_writer`) and
the reader (:mod:`pi0_model.dataset`) share the paths, the feature and info
records and the statistics defined here. Layouts as LeRobot lays them out
(``lerobot/datasets/utils.py`` of v0.3.3 for v2.1 and v0.4.4 for v3.0):

v2.1::

    meta/info.json               codebase_version "v2.1", features, totals, total_chunks, total_videos
    meta/episodes.jsonl          {"episode_index", "tasks": [...], "length"} per line
    meta/episodes_stats.jsonl    {"episode_index", "stats": {feature: {min, max, mean, std, count, q..}}}
    meta/tasks.jsonl             {"task_index", "task"}
    data/chunk-000/episode_000000.parquet                  one file per episode
    videos/chunk-000/<video key>/episode_000000.mp4        one file per episode and camera

v3.0::

    meta/info.json               codebase_version "v3.0", file size limits, new path templates
    meta/stats.json              the dataset's stats per feature
    meta/tasks.parquet           index: the task text, column task_index (a pandas frame)
    meta/episodes/chunk-000/file-000.parquet               one row per episode: lengths, file
                                                           indices, video time ranges, stats/<feature>/<stat>
    data/chunk-000/file-000.parquet                        many episodes per file (up to 100 MB)
    videos/<video key>/chunk-000/file-000.mp4              many episodes per file (up to 200 MB)

Every frame row holds ``timestamp`` (frame_index / fps), ``frame_index``,
``episode_index``, ``index`` (over the dataset) and ``task_index``.

Statistics are exact (LeRobot estimates quantiles from histograms): vectors
per dimension, images per channel over every pixel of every frame, scaled to
[0, 1] and shaped (3, 1, 1) as LeRobot stores them; quantiles interpolate
linearly between order statistics (numpy's default method).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

V21 = "v2.1"
V30 = "v3.0"
VERSIONS = (V21, V30)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"  # v3.0 only: v2.1 aggregates meta/episodes_stats.jsonl on load
V21_EPISODES_PATH = "meta/episodes.jsonl"
V21_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
V21_TASKS_PATH = "meta/tasks.jsonl"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_TASKS_PATH = "meta/tasks.parquet"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

CHUNKS_SIZE = 1000  # files (v3.0) or episodes (v2.1) per chunk directory
DATA_FILE_SIZE_MB = 100  # v3.0: a data file takes episodes until it would reach this size
VIDEO_FILE_SIZE_MB = 200  # v3.0: likewise per video file

STATE = "observation.state"
ACTION = "action"
IMAGE_PREFIX = "observation.images."
# Per-frame bookkeeping columns, in LeRobot's order; each is a scalar (shape (1,)).
INDEX_FEATURES = (
    ("timestamp", "float32"),
    ("frame_index", "int64"),
    ("episode_index", "int64"),
    ("index", "int64"),
    ("task_index", "int64"),
)
IMAGE_NAMES = ("height", "width", "channels")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STAT_KEYS = ("min", "max", "mean", "std", "count", *(f"q{round(q * 100):02d}" for q in QUANTILES))


class DatasetFormatError(ValueError):
    """A dataset's files do not follow the layout; the message names the file and what is wrong."""


def image_key(camera: str) -> str:
    return f"{IMAGE_PREFIX}{camera}"


@dataclass(frozen=True)
class VideoInfo:
    """The ``info`` of a video feature: how its MP4 files are encoded (read back from the first file)."""

    height: int
    width: int
    codec: str  # FFmpeg's canonical name: "h264", "av1"
    pix_fmt: str
    fps: int

    def to_json(self) -> dict[str, Any]:
        return {
            "video.height": self.height,
            "video.width": self.width,
            "video.codec": self.codec,
            "video.pix_fmt": self.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": self.fps,
            "video.channels": 3,
            "has_audio": False,
        }


@dataclass(frozen=True)
class Feature:
    """One entry of info.json's ``features``."""

    key: str
    dtype: str  # "float32", "int64" or "video"
    shape: tuple[int, ...]
    names: tuple[str, ...] | None  # per dimension (vectors), IMAGE_NAMES (videos), None (index columns)
    video: VideoInfo | None = None

    @property
    def is_video(self) -> bool:
        return self.dtype == "video"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "names": None if self.names is None else list(self.names),
        }
        if self.video is not None:
            entry["info"] = self.video.to_json()
        return entry

    @classmethod
    def from_json(cls, key: str, entry: Any, where: str) -> Feature:
        if not isinstance(entry, Mapping) or not {"dtype", "shape"} <= set(entry):
            raise DatasetFormatError(f"{where}: feature {key!r} needs dtype and shape")
        shape = tuple(int(n) for n in entry["shape"])
        names = entry.get("names")
        if isinstance(names, Mapping):  # older LeRobot datasets nest names, e.g. {"motors": [...]}
            names = next(iter(names.values()), None)
        video = None
        info = entry.get("info")
        if entry["dtype"] == "video":
            if len(shape) != 3 or shape[2] != 3:
                raise DatasetFormatError(f"{where}: video feature {key!r} must be [height, width, 3], got {shape}")
            if isinstance(info, Mapping) and "video.codec" in info:
                video = VideoInfo(
                    int(info["video.height"]),
                    int(info["video.width"]),
                    str(info["video.codec"]),
                    str(info.get("video.pix_fmt", "")),
                    int(round(float(info["video.fps"]))),
                )
        return cls(key, str(entry["dtype"]), shape, None if names is None else tuple(map(str, names)), video)


def index_features() -> tuple[Feature, ...]:
    return tuple(Feature(key, dtype, (1,), None) for key, dtype in INDEX_FEATURES)


@dataclass(frozen=True)
class DatasetInfo:
    """meta/info.json."""

    version: str  # V21 or V30
    fps: int
    robot_type: str
    features: tuple[Feature, ...]  # in file order: state, action, images, then the index columns
    total_episodes: int
    total_frames: int
    total_tasks: int
    chunks_size: int = CHUNKS_SIZE
    data_files_size_in_mb: float = DATA_FILE_SIZE_MB  # v3.0
    video_files_size_in_mb: float = VIDEO_FILE_SIZE_MB  # v3.0

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise DatasetFormatError(f"codebase_version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        if self.fps < 1:
            raise DatasetFormatError(f"fps must be a positive integer, got {self.fps}")
        keys = [f.key for f in self.features]
        if len(set(keys)) != len(keys):
            raise DatasetFormatError(f"features list a key twice: {keys}")
        missing = [key for key, _ in INDEX_FEATURES if key not in keys]
        if missing:
            raise DatasetFormatError(f"features lack the index columns {', '.join(missing)}")

    def feature(self, key: str) -> Feature:
        for feature in self.features:
            if feature.key == key:
                return feature
        raise KeyError(key)

    @property
    def video_keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.features if f.is_video)

    @property
    def data_path(self) -> str:
        return V21_DATA_PATH if self.version == V21 else V30_DATA_PATH

    @property
    def video_path(self) -> str | None:
        if not self.video_keys:
            return None
        return V21_VIDEO_PATH if self.version == V21 else V30_VIDEO_PATH

    def to_json(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": self.total_episodes,
            "total_frames": self.total_frames,
            "total_tasks": self.total_tasks,
        }
        if self.version == V21:
            info["total_videos"] = self.total_episodes * len(self.video_keys)
            info["total_chunks"] = math.ceil(self.total_episodes / self.chunks_size)
            info["chunks_size"] = self.chunks_size
        else:
            info["chunks_size"] = self.chunks_size
            info["data_files_size_in_mb"] = self.data_files_size_in_mb
            info["video_files_size_in_mb"] = self.video_files_size_in_mb
        info.update(
            fps=self.fps,
            splits={"train": f"0:{self.total_episodes}"},
            data_path=self.data_path,
            video_path=self.video_path,
            features={f.key: f.to_json() for f in self.features},
        )
        return info

    @classmethod
    def from_json(cls, document: Any, where: str = INFO_PATH) -> DatasetInfo:
        if not isinstance(document, Mapping):
            raise DatasetFormatError(f"{where} is not a JSON object")
        required = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks")
        missing = [key for key in required if key not in document]
        if missing:
            raise DatasetFormatError(f"{where} lacks {', '.join(missing)}")
        features = document["features"]
        if not isinstance(features, Mapping):
            raise DatasetFormatError(f"{where}: features must be an object")
        fps = document["fps"]
        if float(fps) != int(fps):
            raise DatasetFormatError(f"{where}: fps must be an integer, got {fps}")
        return cls(
            version=str(document["codebase_version"]),
            fps=int(fps),
            robot_type=str(document.get("robot_type") or ""),
            features=tuple(Feature.from_json(key, entry, where) for key, entry in features.items()),
            total_episodes=int(document["total_episodes"]),
            total_frames=int(document["total_frames"]),
            total_tasks=int(document["total_tasks"]),
            chunks_size=int(document.get("chunks_size", CHUNKS_SIZE)),
            data_files_size_in_mb=float(document.get("data_files_size_in_mb", DATA_FILE_SIZE_MB)),
            video_files_size_in_mb=float(document.get("video_files_size_in_mb", VIDEO_FILE_SIZE_MB)),
        )


@dataclass(frozen=True)
class FileSlot:
    """Where a v3.0 file sits: chunk-{chunk_index}/file-{file_index}; a chunk holds `chunks_size` files."""

    chunk_index: int = 0
    file_index: int = 0

    def next(self, chunks_size: int) -> FileSlot:
        if self.file_index + 1 >= chunks_size:
            return FileSlot(self.chunk_index + 1, 0)
        return FileSlot(self.chunk_index, self.file_index + 1)


def data_file(version: str, chunks_size: int, episode: int, slot: FileSlot) -> str:
    """The data file of an episode: its own in v2.1, the one at `slot` in v3.0."""
    if version == V21:
        return V21_DATA_PATH.format(episode_chunk=episode // chunks_size, episode_index=episode)
    return V30_DATA_PATH.format(chunk_index=slot.chunk_index, file_index=slot.file_index)


def video_file(version: str, chunks_size: int, key: str, episode: int, slot: FileSlot) -> str:
    """The video file of an episode's camera `key`: its own in v2.1, the one at `slot` in v3.0."""
    if version == V21:
        return V21_VIDEO_PATH.format(episode_chunk=episode // chunks_size, video_key=key, episode_index=episode)
    return V30_VIDEO_PATH.format(video_key=key, chunk_index=slot.chunk_index, file_index=slot.file_index)


# -- statistics --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """min, max, mean, std (population), count and quantiles of one feature, as LeRobot stores them."""

    min: np.ndarray  # [D], or [3, 1, 1] for images (values scaled to [0, 1])
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: int  # frames
    quantiles: Mapping[str, np.ndarray] = field(default_factory=dict)  # "q01", "q10", "q50", "q90", "q99"

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "count": [self.count],
        }
        document.update({key: value.tolist() for key, value in self.quantiles.items()})
        return document

    @classmethod
    def from_json(cls, document: Any, where: str) -> FeatureStats:
        if not isinstance(document, Mapping) or not {"min", "max", "mean", "std", "count"} <= set(document):
            raise DatasetFormatError(f"{where}: stats need min, max, mean, std and count")
        quantiles = {key: np.asarray(value, dtype=np.float64) for key, value in document.items() if _is_quantile(key)}
        count = np.asarray(document["count"]).reshape(-1)
        return cls(
            min=np.asarray(document["min"], dtype=np.float64),
            max=np.asarray(document["max"], dtype=np.float64),
            mean=np.asarray(document["mean"], dtype=np.float64),
            std=np.asarray(document["std"], dtype=np.float64),
            count=int(count[0]),
            quantiles=quantiles,
        )


def _is_quantile(key: str) -> bool:
    return key.startswith("q") and key[1:].isdigit()


def vector_stats(values: np.ndarray) -> FeatureStats:
    """Per-dimension stats of [frames, D] values, computed in float64."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise DatasetFormatError(f"stats need [frames, dims] values, got shape {data.shape}")
    return FeatureStats(
        min=data.min(axis=0),
        max=data.max(axis=0),
        mean=data.mean(axis=0),
        std=data.std(axis=0),
        count=data.shape[0],
        quantiles={key: np.quantile(data, q, axis=0) for key, q in zip(STAT_KEYS[5:], QUANTILES)},
    )


class ImageHistogram:
    """Per-channel counts of the 256 values of uint8 RGB frames: exact image stats without keeping the frames."""

    def __init__(self) -> None:
        self.counts = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        for channel in range(3):
            self.counts[channel] += np.bincount(rgb[..., channel].reshape(-1), minlength=256)
        self.frames += 1

    def merged(self, other: ImageHistogram) -> ImageHistogram:
        result = ImageHistogram()
        result.counts = self.counts + other.counts
        result.frames = self.frames + other.frames
        return result

    def stats(self) -> FeatureStats:
        """Stats of the pixel values / 255 per channel, shaped (3, 1, 1)."""
        if self.frames == 0:
            raise DatasetFormatError("image stats need at least one frame")
        values = np.arange(256, dtype=np.float64) / 255.0
        per_channel: dict[str, list[float]] = {key: [] for key in ("min", "max", "mean", "std", *STAT_KEYS[5:])}
        for counts in self.counts:
            total = counts.sum()
            present = np.flatnonzero(counts)
            mean = float((counts * values).sum() / total)
            per_channel["min"].append(values[present[0]])
            per_channel["max"].append(values[present[-1]])
            per_channel["mean"].append(mean)
            per_channel["std"].append(float(np.sqrt((counts * (values - mean) ** 2).sum() / total)))
            for key, q in zip(STAT_KEYS[5:], QUANTILES):
                per_channel[key].append(_histogram_quantile(counts, values, q))

        def shaped(key: str) -> np.ndarray:
            return np.asarray(per_channel[key], dtype=np.float64).reshape(3, 1, 1)

        return FeatureStats(
            min=shaped("min"),
            max=shaped("max"),
            mean=shaped("mean"),
            std=shaped("std"),
            count=self.frames,
            quantiles={key: shaped(key) for key in STAT_KEYS[5:]},
        )


def _histogram_quantile(counts: np.ndarray, values: np.ndarray, q: float) -> float:
    """np.quantile's linear method on the sorted values the histogram stands for."""
    cumulative = np.cumsum(counts)
    position = (cumulative[-1] - 1) * q
    below = math.floor(position)

    def order_statistic(rank: int) -> float:  # the rank-th smallest value, from 0
        return float(values[int(np.searchsorted(cumulative, rank, side="right"))])

    low = order_statistic(below)
    high = order_statistic(min(below + 1, int(cumulative[-1]) - 1))
    return low + (position - below) * (high - low)


def stats_to_json(stats: Mapping[str, FeatureStats]) -> dict[str, Any]:
    return {key: value.to_json() for key, value in stats.items()}


def stats_from_json(document: Any, where: str) -> dict[str, FeatureStats]:
    if not isinstance(document, Mapping):
        raise DatasetFormatError(f"{where}: stats must be an object")
    return {key: FeatureStats.from_json(value, f"{where} {key}") for key, value in document.items()}


def flat_stats_columns(stats: Mapping[str, FeatureStats]) -> dict[str, Any]:
    """v3.0's episode row form: ``stats/<feature>/<stat>`` -> nested lists (count as [n])."""
    return {f"stats/{key}/{name}": value for key, feature in stats.items() for name, value in feature.to_json().items()}


def unflatten_stats_columns(row: Mapping[str, Any], where: str) -> dict[str, FeatureStats]:
    """The inverse of :func:`flat_stats_columns` (feature keys hold no '/', as LeRobot requires)."""
    nested: dict[str, dict[str, Any]] = {}
    for column, value in row.items():
        parts = column.split("/")
        if len(parts) == 3 and parts[0] == "stats" and value is not None:
            nested.setdefault(parts[1], {})[parts[2]] = value
    return stats_from_json(nested, where)


def check_names(label: str, names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise DatasetFormatError(f"{label} must be unique non-empty names, got {names}")
    return names
