"""Writes a LeRobotDataset, v2.1 or v3.0 (layouts in :mod:`pi0_model.dataset_format`), episode by episode.

    writer = DatasetWriter(root, DatasetSpec(version=V30, fps=50, ...))
    episode = writer.begin_episode("fold the towel")
    for ...:
        episode.add(state, action, {"cam_high": rgb, ...})
    episode.commit()            # or episode.discard(): nothing of it stays
    summary = writer.finish()   # metadata and stats

Camera frames are encoded while they come (an episode is never held in
memory); each episode goes to its own MP4 first, which v2.1 keeps and v3.0
appends to the camera's current file. State and action rows are kept until
the episode is committed. The parquet files carry the plain Arrow schema
(fixed-size float32 lists, int64 and float32 scalars) and no ``datasets``
feature metadata, which differs between datasets 3.x (openpi's stack) and
4.x (LeRobot 0.4): both infer the same features from the schema.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .dataset_format import (
    ACTION,
    CHUNKS_SIZE,
    DATA_FILE_SIZE_MB,
    IMAGE_NAMES,
    INFO_PATH,
    STATE,
    STATS_PATH,
    V21,
    V21_EPISODES_PATH,
    V21_EPISODES_STATS_PATH,
    V21_TASKS_PATH,
    V30,
    V30_EPISODES_PATH,
    V30_TASKS_PATH,
    VERSIONS,
    VIDEO_FILE_SIZE_MB,
    DatasetFormatError,
    DatasetInfo,
    Feature,
    FeatureStats,
    FileSlot,
    ImageHistogram,
    check_names,
    data_file,
    flat_stats_columns,
    image_key,
    index_features,
    stats_to_json,
    vector_stats,
    video_file,
)
from .video import EpisodeVideoWriter, VideoAppender, VideoSettings, video_info

_MB = 1024 * 1024


@dataclass(frozen=True)
class CameraSpec:
    name: str  # the feature is observation.images.<name>
    height: int
    width: int


@dataclass(frozen=True)
class DatasetSpec:
    """What every frame holds and how it is stored."""

    version: str  # V21 or V30
    fps: int
    robot_type: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraSpec, ...]
    video: VideoSettings = VideoSettings()
    chunks_size: int = CHUNKS_SIZE
    data_file_size_mb: float = DATA_FILE_SIZE_MB  # LeRobot's limits; smaller ones are for tests
    video_file_size_mb: float = VIDEO_FILE_SIZE_MB

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise DatasetFormatError(f"dataset version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        if not isinstance(self.fps, int) or self.fps < 1:
            raise DatasetFormatError(f"fps must be a positive integer, got {self.fps!r}")
        check_names("state names", self.state_names)
        check_names("action names", self.action_names)
        check_names("camera names", [c.name for c in self.cameras])
        for camera in self.cameras:
            if "/" in camera.name:
                raise DatasetFormatError(f"camera name {camera.name!r} must not contain '/' (a LeRobot feature key)")
            problem = self.video.size_problem(camera.width, camera.height)
            if problem:
                raise DatasetFormatError(f"camera {camera.name}: {problem}")
        if self.chunks_size < 1:
            raise DatasetFormatError(f"chunks_size must be at least 1, got {self.chunks_size}")
        if not (self.data_file_size_mb > 0 and self.video_file_size_mb > 0):
            raise DatasetFormatError("file size limits must be positive")

    def features(self, videos: Mapping[str, Any] | None = None) -> tuple[Feature, ...]:
        """The features, with each video's info when `videos` (video key -> VideoInfo) has it."""
        images = tuple(
            Feature(
                image_key(c.name),
                "video",
                (c.height, c.width, 3),
                IMAGE_NAMES,
                None if videos is None else videos.get(image_key(c.name)),
            )
            for c in self.cameras
        )
        return (
            Feature(STATE, "float32", (len(self.state_names),), self.state_names),
            Feature(ACTION, "float32", (len(self.action_names),), self.action_names),
            *images,
            *index_features(),
        )


@dataclass(frozen=True)
class VideoSpan:
    """Where an episode's frames of one camera are."""

    slot: FileSlot  # v3.0 file; v2.1 files are per episode
    from_timestamp: float  # s into the file
    to_timestamp: float


@dataclass(frozen=True)
class WrittenEpisode:
    index: int
    task: str
    length: int
    dataset_from_index: int
    data_slot: FileSlot
    videos: Mapping[str, VideoSpan]  # video key -> span
    stats: Mapping[str, FeatureStats]


@dataclass(frozen=True)
class DatasetSummary:
    root: Path
    info: DatasetInfo
    episodes: tuple[WrittenEpisode, ...]
    tasks: tuple[str, ...]
    stats: Mapping[str, FeatureStats]  # over every frame


class DatasetWriter:
    """Creates the dataset directory `root` (it must not exist yet) and writes episodes into it."""

    def __init__(self, root: Path, spec: DatasetSpec) -> None:
        if root.exists():
            raise DatasetFormatError(f"{root} already exists")
        root.mkdir(parents=True)
        self.root = root
        self.spec = spec
        self._scratch = Path(tempfile.mkdtemp(prefix=".episode-", dir=root))
        self._episodes: list[WrittenEpisode] = []
        self._tasks: dict[str, int] = {}
        self._states: list[np.ndarray] = []  # per committed episode, for the dataset stats
        self._actions: list[np.ndarray] = []
        self._histograms = {image_key(c.name): ImageHistogram() for c in spec.cameras}
        self._frames = 0
        self._data = _DataFiles(root, spec) if spec.version == V30 else None
        self._videos = (
            {image_key(c.name): _VideoFiles(root, image_key(c.name), spec) for c in spec.cameras}
            if spec.version == V30
            else {}
        )
        self._open: EpisodeRecorder | None = None

    @property
    def frames(self) -> int:
        return self._frames

    def begin_episode(self, task: str) -> EpisodeRecorder:
        if self._open is not None:
            raise DatasetFormatError("the previous episode is neither committed nor discarded")
        if not task.strip():
            raise DatasetFormatError("an episode's task must not be empty")
        self._open = EpisodeRecorder(self, task.strip())
        return self._open

    def finish(self) -> DatasetSummary:
        """Writes the metadata and stats; the dataset is complete afterwards."""
        if self._open is not None:
            raise DatasetFormatError("an episode is still open")
        if not self._episodes:
            raise DatasetFormatError("no episode was written")
        if self._data is not None:
            self._data.close()
        for files in self._videos.values():
            files.close()
        shutil.rmtree(self._scratch)
        videos = {key: video_info(self._first_video(key), self.spec.fps) for key in self._histograms}
        tasks = tuple(self._tasks)
        info = DatasetInfo(
            version=self.spec.version,
            fps=self.spec.fps,
            robot_type=self.spec.robot_type,
            features=self.spec.features(videos),
            total_episodes=len(self._episodes),
            total_frames=self._frames,
            total_tasks=len(tasks),
            chunks_size=self.spec.chunks_size,
            data_files_size_in_mb=self.spec.data_file_size_mb,
            video_files_size_in_mb=self.spec.video_file_size_mb,
        )
        stats = self._dataset_stats()
        _write_json(self.root / INFO_PATH, info.to_json())
        if self.spec.version == V21:
            _write_jsonl(self.root / V21_TASKS_PATH, [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
            _write_jsonl(
                self.root / V21_EPISODES_PATH,
                [{"episode_index": e.index, "tasks": [e.task], "length": e.length} for e in self._episodes],
            )
            _write_jsonl(
                self.root / V21_EPISODES_STATS_PATH,
                [{"episode_index": e.index, "stats": stats_to_json(e.stats)} for e in self._episodes],
            )
        else:
            _write_tasks_parquet(self.root / V30_TASKS_PATH, tasks)
            self._write_v30_episodes()
            _write_json(self.root / STATS_PATH, stats_to_json(stats))
        return DatasetSummary(self.root, info, tuple(self._episodes), tasks, stats)

    def _first_video(self, key: str) -> Path:
        first = self._episodes[0]
        return self.root / _video_path(self.spec, key, first.index, first.videos[key].slot)

    def _dataset_stats(self) -> dict[str, FeatureStats]:
        states, actions = np.concatenate(self._states), np.concatenate(self._actions)
        stats = {STATE: vector_stats(states), ACTION: vector_stats(actions)}
        stats.update({key: histogram.stats() for key, histogram in self._histograms.items()})
        stats.update(_index_stats(self._index_columns()))
        return stats

    def _index_columns(self) -> dict[str, np.ndarray]:
        columns = [_episode_index_columns(self.spec.fps, e, self._tasks[e.task]) for e in self._episodes]
        return {key: np.concatenate([c[key] for c in columns]) for key in columns[0]}

    def _write_v30_episodes(self) -> None:
        rows = []
        for episode in self._episodes:
            row: dict[str, Any] = {
                "episode_index": episode.index,
                "tasks": [episode.task],
                "length": episode.length,
                "data/chunk_index": episode.data_slot.chunk_index,
                "data/file_index": episode.data_slot.file_index,
                "dataset_from_index": episode.dataset_from_index,
                "dataset_to_index": episode.dataset_from_index + episode.length,
            }
            for key, span in episode.videos.items():
                row[f"videos/{key}/chunk_index"] = span.slot.chunk_index
                row[f"videos/{key}/file_index"] = span.slot.file_index
                row[f"videos/{key}/from_timestamp"] = span.from_timestamp
                row[f"videos/{key}/to_timestamp"] = span.to_timestamp
            row.update(flat_stats_columns(episode.stats))
            # All episode rows fit one file: a few kB each, far below the data file limit.
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
        path = self.root / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)

    def _commit(self, recorder: EpisodeRecorder) -> WrittenEpisode:
        index = len(self._episodes)
        task_index = self._tasks.setdefault(recorder.task, len(self._tasks))
        states, actions = np.stack(recorder.states), np.stack(recorder.actions)
        length = len(states)
        data_slot = FileSlot()
        if self._data is None:
            table = _frame_table(self.spec, states, actions, index, self._frames, task_index)
            path = self.root / _data_path(self.spec, index, data_slot)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
        else:
            data_slot = self._data.append(_frame_table(self.spec, states, actions, index, self._frames, task_index))
        videos = {}
        for key, writer in recorder.videos.items():
            writer.close()
            if key in self._videos:
                videos[key] = self._videos[key].append(writer.path)
            else:
                target = self.root / _video_path(self.spec, key, index, FileSlot())
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(writer.path, target)
                videos[key] = VideoSpan(FileSlot(), 0.0, length / self.spec.fps)
            if writer.frames != length:
                raise DatasetFormatError(f"episode {index}: {writer.frames} frames of {key} for {length} rows")
        episode_stats = {STATE: vector_stats(states), ACTION: vector_stats(actions)}
        episode_stats.update({key: histogram.stats() for key, histogram in recorder.histograms.items()})
        episode = WrittenEpisode(index, recorder.task, length, self._frames, data_slot, videos, episode_stats)
        episode_stats.update(_index_stats(_episode_index_columns(self.spec.fps, episode, task_index)))
        for key, histogram in recorder.histograms.items():
            self._histograms[key] = self._histograms[key].merged(histogram)
        self._states.append(states)
        self._actions.append(actions)
        self._episodes.append(episode)
        self._frames += length
        self._open = None
        return episode

    def _discard(self, recorder: EpisodeRecorder) -> None:
        for writer in recorder.videos.values():
            writer.close()
            writer.path.unlink(missing_ok=True)
        self._open = None


class EpisodeRecorder:
    """The frames of one episode until it is committed or discarded."""

    def __init__(self, writer: DatasetWriter, task: str) -> None:
        self._writer = writer
        self.task = task
        spec = writer.spec
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.histograms = {image_key(c.name): ImageHistogram() for c in spec.cameras}
        self.videos = {
            image_key(c.name): EpisodeVideoWriter(
                Path(tempfile.mkstemp(suffix=".mp4", dir=writer._scratch)[1]), spec.fps, c.width, c.height, spec.video
            )
            for c in spec.cameras
        }
        self._closed = False

    def __len__(self) -> int:
        return len(self.states)

    def add(self, state: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
        """One frame: state and action in the spec's name order, a uint8 RGB image per camera name."""
        spec = self._writer.spec
        state = np.asarray(state, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        if state.shape != (len(spec.state_names),) or action.shape != (len(spec.action_names),):
            raise DatasetFormatError(
                f"a frame needs state {len(spec.state_names)} and action {len(spec.action_names)} values, "
                f"got {state.shape} and {action.shape}"
            )
        if not (np.all(np.isfinite(state)) and np.all(np.isfinite(action))):
            raise DatasetFormatError("state and action must be finite")
        if set(images) != {c.name for c in spec.cameras}:
            raise DatasetFormatError(f"a frame needs images of {[c.name for c in spec.cameras]}, got {sorted(images)}")
        for name, rgb in images.items():
            self.videos[image_key(name)].write(rgb)
            self.histograms[image_key(name)].add(rgb)
        self.states.append(state)
        self.actions.append(action)

    def commit(self) -> WrittenEpisode:
        self._close()
        if not self.states:
            self._writer._discard(self)
            raise DatasetFormatError("an episode needs at least one frame")
        return self._writer._commit(self)

    def discard(self) -> None:
        self._close()
        self._writer._discard(self)

    def _close(self) -> None:
        if self._closed:
            raise DatasetFormatError("the episode was already committed or discarded")
        self._closed = True


class _DataFiles:
    """v3.0 data files: episodes' rows appended to the current file until it would pass the size limit."""

    def __init__(self, root: Path, spec: DatasetSpec) -> None:
        self._root = root
        self._spec = spec
        self._slot = FileSlot()
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None

    def append(self, table: pa.Table) -> FileSlot:
        full = self._path is not None and self._path.stat().st_size + table.nbytes >= self._spec.data_file_size_mb * _MB
        if self._writer is not None and full:
            self._writer.close()
            self._writer = None
            self._slot = self._slot.next(self._spec.chunks_size)
        if self._writer is None:
            self._path = self._root / _data_path(self._spec, 0, self._slot)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._path, table.schema)
        self._writer.write_table(table)
        return self._slot

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _VideoFiles:
    """v3.0 video files of one camera: episodes appended to the current file until it would pass the size limit."""

    def __init__(self, root: Path, key: str, spec: DatasetSpec) -> None:
        self._root = root
        self._key = key
        self._spec = spec
        self._slot = FileSlot()
        self._appender: VideoAppender | None = None
        self._bytes = 0

    def append(self, episode: Path) -> VideoSpan:
        size = episode.stat().st_size
        if self._appender is not None and self._bytes + size >= self._spec.video_file_size_mb * _MB:
            self._appender.close()
            self._appender = None
            self._slot = self._slot.next(self._spec.chunks_size)
        if self._appender is None:
            path = self._root / _video_path(self._spec, self._key, 0, self._slot)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._appender = VideoAppender(path, self._spec.fps)
            self._bytes = 0
        start, stop = self._appender.append(episode)
        self._bytes += size
        episode.unlink()
        return VideoSpan(self._slot, start, stop)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None


def _data_path(spec: DatasetSpec, episode: int, slot: FileSlot) -> str:
    return data_file(spec.version, spec.chunks_size, episode, slot)


def _video_path(spec: DatasetSpec, key: str, episode: int, slot: FileSlot) -> str:
    return video_file(spec.version, spec.chunks_size, key, episode, slot)


def _frame_table(
    spec: DatasetSpec, states: np.ndarray, actions: np.ndarray, episode: int, first_index: int, task_index: int
) -> pa.Table:
    length = len(states)
    frame_index = np.arange(length, dtype=np.int64)
    columns = {
        STATE: pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1), pa.float32()), states.shape[1]),
        ACTION: pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1), pa.float32()), actions.shape[1]),
        "timestamp": pa.array((frame_index / spec.fps).astype(np.float32)),
        "frame_index": pa.array(frame_index),
        "episode_index": pa.array(np.full(length, episode, dtype=np.int64)),
        "index": pa.array(first_index + frame_index),
        "task_index": pa.array(np.full(length, task_index, dtype=np.int64)),
    }
    return pa.table(columns)


def _episode_index_columns(fps: int, episode: WrittenEpisode, task_index: int) -> dict[str, np.ndarray]:
    frame_index = np.arange(episode.length, dtype=np.int64)
    return {
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(episode.length, episode.index, dtype=np.int64),
        "index": episode.dataset_from_index + frame_index,
        "task_index": np.full(episode.length, task_index, dtype=np.int64),
    }


def _index_stats(columns: Mapping[str, np.ndarray]) -> dict[str, FeatureStats]:
    return {key: vector_stats(values.reshape(-1, 1)) for key, values in columns.items()}


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=4, ensure_ascii=False) + "\n")


def _write_jsonl(path: Path, rows: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# What pandas writes for DataFrame({"task_index": ...}, index=tasks).to_parquet(): LeRobot reads tasks.parquet
# with pandas and takes the task text from the frame's index, which only this metadata makes an index.
_TASKS_PANDAS_METADATA = {
    "index_columns": ["__index_level_0__"],
    "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
    ],
    "columns": [
        {
            "name": "task_index",
            "field_name": "task_index",
            "pandas_type": "int64",
            "numpy_type": "int64",
            "metadata": None,
        },
        {
            "name": None,
            "field_name": "__index_level_0__",
            "pandas_type": "unicode",
            "numpy_type": "object",
            "metadata": None,
        },
    ],
    "creator": {"library": "pyarrow", "version": pa.__version__},
    "pandas_version": "2.2.3",
}


def _write_tasks_parquet(path: Path, tasks: Sequence[str]) -> None:
    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks, pa.string())}
    )
    table = table.replace_schema_metadata({b"pandas": json.dumps(_TASKS_PANDAS_METADATA).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
