"""Reads a LeRobotDataset written by :mod:`pi0_model.dataset_writer` (v2.1 or v3.0), without torch or LeRobot.

    dataset = DatasetReader(Path("~/data/towels").expanduser())
    dataset.info.fps, dataset.tasks, dataset.episodes[0].length
    frame = dataset.frame(120)                 # one frame, its images decoded at its timestamp
    for frame in dataset.episode_frames(3):    # a whole episode, each video decoded once in order
        frame.state, frame.action, frame.images["observation.images.cam_high"], frame.task

Frames are what LeRobot's ``LeRobotDataset[i]`` returns, in numpy: state and
action float32 vectors in the feature's name order, images uint8 [H, W, 3]
RGB (LeRobot returns them float [3, H, W] in [0, 1]), the task text. The
parquet columns are loaded at open (they are small); videos are decoded on
demand with PyAV, frame k of an episode being the video frame at
``from_timestamp + k / fps`` (v3.0) or ``k / fps`` (v2.1).

Opening checks what a loader relies on and raises :class:`DatasetFormatError`
naming the file: info.json's features and totals, every episode's rows
contiguous with frame_index 0..length-1, timestamps equal to frame_index / fps
(within LeRobot's 1e-4 s), valid task indices and existing video files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .dataset_format import (
    ACTION,
    INFO_PATH,
    STATE,
    STATS_PATH,
    V21,
    V21_EPISODES_PATH,
    V21_EPISODES_STATS_PATH,
    V21_TASKS_PATH,
    V30_TASKS_PATH,
    DatasetFormatError,
    DatasetInfo,
    FeatureStats,
    FileSlot,
    data_file,
    stats_from_json,
    unflatten_stats_columns,
    video_file,
)
from .video import decode_frames

TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobot's default tolerance_s


@dataclass(frozen=True)
class EpisodeVideo:
    path: Path
    first_frame: int  # the episode's first frame in the file (from_timestamp * fps)


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    length: int
    tasks: tuple[str, ...]
    dataset_from_index: int  # its first row over the dataset
    videos: Mapping[str, EpisodeVideo]  # video key -> where its frames are
    stats: Mapping[str, FeatureStats]

    @property
    def dataset_to_index(self) -> int:
        return self.dataset_from_index + self.length


@dataclass(frozen=True, eq=False)
class Frame:
    index: int  # over the dataset
    episode_index: int
    frame_index: int  # within the episode
    timestamp: float  # frame_index / fps
    task_index: int
    task: str
    state: np.ndarray  # float32 [state dims]
    action: np.ndarray  # float32 [action dims]
    images: Mapping[str, np.ndarray]  # video key -> uint8 RGB [H, W, 3]


class DatasetReader:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = DatasetInfo.from_json(_read_json(self.root / INFO_PATH), str(self.root / INFO_PATH))
        for key in (STATE, ACTION):
            try:
                self.info.feature(key)
            except KeyError:
                raise DatasetFormatError(f"{self.root / INFO_PATH} has no {key} feature") from None
        if self.info.version == V21:
            self.tasks = self._v21_tasks()
            self.episodes = self._v21_episodes()
            self.stats: Mapping[str, FeatureStats] | None = None  # v2.1 keeps per-episode stats only
            tables = [
                _read_table(self.root / data_file(V21, self.info.chunks_size, e.index, FileSlot()))
                for e in self.episodes
            ]
        else:
            self.tasks = self._v30_tasks()
            self.episodes, slots = self._v30_episodes()
            self.stats = stats_from_json(_read_json(self.root / STATS_PATH), str(self.root / STATS_PATH))
            tables = [_read_table(self.root / data_file(self.info.version, 0, 0, slot)) for slot in slots]
        self.columns = self._load_columns(tables)
        self._check()

    def __len__(self) -> int:
        return len(self.columns["index"])

    def frame(self, index: int) -> Frame:
        """Row `index` of the dataset, its images decoded at its timestamp."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the dataset's {len(self)} frames")
        episode = self.episodes[int(self.columns["episode_index"][index])]
        offset = index - episode.dataset_from_index
        images = {}
        for key, video in episode.videos.items():
            wanted = video.first_frame + offset
            decoded = list(decode_frames(video.path, self.info.fps, wanted, wanted + 1))
            if not decoded:
                raise DatasetFormatError(f"{video.path} has no frame {wanted}")
            images[key] = decoded[0][1]
        return self._frame(index, images)

    def episode_frames(self, episode_index: int) -> Iterator[Frame]:
        """Every frame of an episode in order, each video decoded once."""
        episode = self.episodes[episode_index]
        streams = {
            key: decode_frames(video.path, self.info.fps, video.first_frame, video.first_frame + episode.length)
            for key, video in episode.videos.items()
        }
        for offset in range(episode.length):
            images = {}
            for key, stream in streams.items():
                decoded = next(stream, None)
                if decoded is None:
                    raise DatasetFormatError(f"{episode.videos[key].path} ends before frame {offset} of its episode")
                images[key] = decoded[1]
            yield self._frame(episode.dataset_from_index + offset, images)

    def _frame(self, index: int, images: Mapping[str, np.ndarray]) -> Frame:
        columns = self.columns
        task_index = int(columns["task_index"][index])
        return Frame(
            index=index,
            episode_index=int(columns["episode_index"][index]),
            frame_index=int(columns["frame_index"][index]),
            timestamp=float(columns["timestamp"][index]),
            task_index=task_index,
            task=self.tasks[task_index],
            state=columns[STATE][index],
            action=columns[ACTION][index],
            images=images,
        )

    # -- metadata --------------------------------------------------------------------------------------------

    def _v21_tasks(self) -> tuple[str, ...]:
        rows = _read_jsonl(self.root / V21_TASKS_PATH)
        return _ordered_tasks({int(r["task_index"]): str(r["task"]) for r in rows}, self.root / V21_TASKS_PATH)

    def _v30_tasks(self) -> tuple[str, ...]:
        path = self.root / V30_TASKS_PATH
        table = _read_table(path)
        metadata = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        index_columns = metadata.get("index_columns") or []
        text_column = index_columns[0] if index_columns and isinstance(index_columns[0], str) else "task"
        if text_column not in table.column_names or "task_index" not in table.column_names:
            raise DatasetFormatError(f"{path} needs task_index and the task text (the pandas index)")
        texts = table.column(text_column).to_pylist()
        indices = table.column("task_index").to_pylist()
        return _ordered_tasks({int(i): str(t) for i, t in zip(indices, texts)}, path)

    def _v21_episodes(self) -> tuple[EpisodeInfo, ...]:
        rows = sorted(_read_jsonl(self.root / V21_EPISODES_PATH), key=lambda r: int(r["episode_index"]))
        stats_rows = {int(r["episode_index"]): r["stats"] for r in _read_jsonl(self.root / V21_EPISODES_STATS_PATH)}
        episodes = []
        start = 0
        for row in rows:
            index, length = int(row["episode_index"]), int(row["length"])
            videos = {
                key: EpisodeVideo(self.root / video_file(V21, self.info.chunks_size, key, index, FileSlot()), 0)
                for key in self.info.video_keys
            }
            where = f"{self.root / V21_EPISODES_STATS_PATH} episode {index}"
            stats = stats_from_json(stats_rows.get(index, {}), where)
            episodes.append(EpisodeInfo(index, length, tuple(row["tasks"]), start, videos, stats))
            start += length
        return self._checked_episodes(episodes)

    def _v30_episodes(self) -> tuple[tuple[EpisodeInfo, ...], list[FileSlot]]:
        directory = self.root / "meta" / "episodes"
        paths = sorted(directory.glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DatasetFormatError(f"{directory} holds no episodes parquet file")
        rows = sorted(
            (row for path in paths for row in _read_table(path).to_pylist()), key=lambda r: int(r["episode_index"])
        )
        episodes, slots = [], []
        for row in rows:
            index = int(row["episode_index"])
            videos = {}
            for key in self.info.video_keys:
                slot = FileSlot(int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"]))
                first = float(row[f"videos/{key}/from_timestamp"]) * self.info.fps
                videos[key] = EpisodeVideo(
                    self.root / video_file(self.info.version, 0, key, index, slot), int(round(first))
                )
            slot = FileSlot(int(row["data/chunk_index"]), int(row["data/file_index"]))
            if slot not in slots:
                slots.append(slot)
            stats = unflatten_stats_columns(row, f"{directory} episode {index}")
            episodes.append(
                EpisodeInfo(
                    index, int(row["length"]), tuple(row["tasks"]), int(row["dataset_from_index"]), videos, stats
                )
            )
        return self._checked_episodes(episodes), slots

    def _checked_episodes(self, episodes: list[EpisodeInfo]) -> tuple[EpisodeInfo, ...]:
        start = 0
        for position, episode in enumerate(episodes):
            if episode.index != position or episode.dataset_from_index != start or episode.length < 1:
                raise DatasetFormatError(
                    f"{self.root}: episode {episode.index} is not the {position}-th with rows from {start} "
                    f"(its first row is {episode.dataset_from_index}, its length {episode.length})"
                )
            missing = [str(v.path) for v in episode.videos.values() if not v.path.is_file()]
            if missing:
                raise DatasetFormatError(f"{self.root}: episode {episode.index} lacks {', '.join(missing)}")
            start += episode.length
        if len(episodes) != self.info.total_episodes or start != self.info.total_frames:
            raise DatasetFormatError(
                f"{self.root / INFO_PATH} lists {self.info.total_episodes} episodes and {self.info.total_frames} "
                f"frames, the episodes hold {len(episodes)} and {start}"
            )
        return tuple(episodes)

    # -- frame rows ------------------------------------------------------------------------------------------

    def _load_columns(self, tables: list[pa.Table]) -> dict[str, np.ndarray]:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        columns = {}
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index", STATE, ACTION):
            if key not in table.column_names:
                raise DatasetFormatError(f"{self.root}/data lacks the column {key}")
            column = table.column(key).combine_chunks()
            if key in (STATE, ACTION):
                width = self.info.feature(key).shape[0]
                values = np.asarray(column.flatten(), dtype=np.float32)
                if values.size != len(column) * width:
                    raise DatasetFormatError(f"{self.root}/data: {key} rows do not all hold {width} values")
                columns[key] = values.reshape(len(column), width)
            else:
                columns[key] = column.to_numpy()
        order = np.argsort(columns["index"], kind="stable")
        return {key: values[order] for key, values in columns.items()}

    def _check(self) -> None:
        columns, info = self.columns, self.info
        if len(self) != info.total_frames or not np.array_equal(columns["index"], np.arange(len(self))):
            raise DatasetFormatError(f"{self.root}/data: the index column is not 0..{info.total_frames - 1}")
        for episode in self.episodes:
            rows = slice(episode.dataset_from_index, episode.dataset_to_index)
            if not (
                np.all(columns["episode_index"][rows] == episode.index)
                and np.array_equal(columns["frame_index"][rows], np.arange(episode.length))
            ):
                raise DatasetFormatError(f"{self.root}/data: episode {episode.index}'s rows are not contiguous")
        expected = columns["frame_index"] / info.fps
        if np.any(np.abs(columns["timestamp"] - expected) > TIMESTAMP_TOLERANCE_S):
            raise DatasetFormatError(f"{self.root}/data: timestamps differ from frame_index / {info.fps}")
        if np.any(columns["task_index"] < 0) or np.any(columns["task_index"] >= len(self.tasks)):
            raise DatasetFormatError(f"{self.root}/data: a task_index is outside the {len(self.tasks)} tasks")


def _ordered_tasks(by_index: Mapping[int, str], path: Path) -> tuple[str, ...]:
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetFormatError(f"{path}: task indices are not 0..{len(by_index) - 1}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise DatasetFormatError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DatasetFormatError(f"{path} is not valid JSON: {exc}") from None


def _read_jsonl(path: Path) -> list[Any]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DatasetFormatError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DatasetFormatError(f"{path} is not valid JSON lines: {exc}") from None


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetFormatError(f"cannot read {path}: {exc}") from None
