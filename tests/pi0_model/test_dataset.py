"""LeRobotDataset v2.1 and v3.0 written by pi0_model.dataset_writer and read back by pi0_model.dataset.

No ROS and no LeRobot: the layouts, the frames, the stats against a direct
numpy computation, the v3.0 file rollover, and openpi-style norm stats.
(tests/bags/test_to_dataset_lerobot.py opens the same kind of dataset with the
real LeRobot loaders.)
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import (
    ACTION,
    STATE,
    V21,
    V30,
    DatasetFormatError,
    ImageHistogram,
    image_key,
    vector_stats,
)
from pi0_model.dataset_writer import CameraSpec, DatasetSpec, DatasetWriter
from pi0_model.normalization import compute_normalization, load_normalization
from pi0_model.transforms import TransformPipeline
from pi0_model.video import VideoSettings

FPS = 10
CAMERAS = (CameraSpec("cam_high", 48, 64), CameraSpec("cam_wrist", 32, 32))
STATE_NAMES = ("a", "b", "g")
ACTION_NAMES = ("a", "b", "g")
EPISODES = ((7, "fold the towel"), (5, "stack the blocks"), (9, "fold the towel"))


def image(camera: int, episode: int, frame: int, shape: tuple[int, int]) -> np.ndarray:
    """Smooth gradients that change from frame to frame (what video codecs keep well)."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    base = 30 * camera + 20 * episode + 7 * frame  # below 160, so no channel wraps around
    return np.stack([x + base, 2 * y + base // 2, np.full_like(x, 200 - base)], -1).astype(np.uint8)


def vectors(episode: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(length, dtype=np.float64)[:, None]
    state = np.hstack([0.1 * t + episode, -0.05 * t, 0.5 + 0.01 * t * episode])
    return state.astype(np.float32), (state + 0.02).astype(np.float32)


def spec(version: str, **overrides) -> DatasetSpec:
    return DatasetSpec(
        version=version,
        fps=FPS,
        robot_type="testbot",
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        cameras=CAMERAS,
        **overrides,
    )


def write(root, version: str, **overrides):
    writer = DatasetWriter(root, spec(version, **overrides))
    for episode, (length, task) in enumerate(EPISODES):
        states, actions = vectors(episode, length)
        recorder = writer.begin_episode(task)
        for k in range(length):
            images = {c.name: image(i, episode, k, (c.height, c.width)) for i, c in enumerate(CAMERAS)}
            recorder.add(states[k], actions[k], images)
        recorder.commit()
    # a discarded episode leaves nothing behind
    recorder = writer.begin_episode("never kept")
    recorder.add(states[0], actions[0], {c.name: image(0, 0, 0, (c.height, c.width)) for c in CAMERAS})
    recorder.discard()
    return writer.finish()


@pytest.fixture(params=[V21, V30])
def version(request) -> str:
    return request.param


def test_layout_files_are_lerobots(tmp_path, version):
    root = tmp_path / "ds"
    write(root, version)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    if version == V21:
        assert files == sorted(
            [
                "meta/info.json",
                "meta/episodes.jsonl",
                "meta/episodes_stats.jsonl",
                "meta/tasks.jsonl",
                *(f"data/chunk-000/episode_{e:06d}.parquet" for e in range(3)),
                *(
                    f"videos/chunk-000/observation.images.{c.name}/episode_{e:06d}.mp4"
                    for e in range(3)
                    for c in CAMERAS
                ),
            ]
        )
        assert [json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines()] == [
            {"task_index": 0, "task": "fold the towel"},
            {"task_index": 1, "task": "stack the blocks"},
        ]
        assert json.loads((root / "meta/episodes.jsonl").read_text().splitlines()[1]) == {
            "episode_index": 1,
            "tasks": ["stack the blocks"],
            "length": 5,
        }
    else:
        assert files == sorted(
            [
                "meta/info.json",
                "meta/stats.json",
                "meta/tasks.parquet",
                "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet",
                *(f"videos/observation.images.{c.name}/chunk-000/file-000.mp4" for c in CAMERAS),
            ]
        )
        episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 7), (7, 12), (12, 21)]
        key = image_key("cam_high")
        assert [e[f"videos/{key}/from_timestamp"] for e in episodes] == [0.0, 0.7, 1.2]
        assert [e[f"videos/{key}/to_timestamp"] for e in episodes] == [0.7, 1.2, 2.1]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == version
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (3, 21, 2, FPS)
    assert info["features"][STATE] == {"dtype": "float32", "shape": [3], "names": list(STATE_NAMES)}
    video = info["features"][image_key("cam_high")]
    assert video["shape"] == [48, 64, 3] and video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == FPS
    assert info["features"]["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}


def test_reader_returns_the_written_frames(tmp_path, version):
    root = tmp_path / "ds"
    write(root, version)
    dataset = DatasetReader(root)
    assert len(dataset) == 21 and dataset.tasks == ("fold the towel", "stack the blocks")
    frames = [frame for e in range(3) for frame in dataset.episode_frames(e)]
    assert [f.index for f in frames] == list(range(21))
    for frame in frames:
        length, task = EPISODES[frame.episode_index]
        states, actions = vectors(frame.episode_index, length)
        assert frame.task == task
        assert frame.timestamp == pytest.approx(frame.frame_index / FPS, abs=1e-6)
        np.testing.assert_array_equal(frame.state, states[frame.frame_index])
        np.testing.assert_array_equal(frame.action, actions[frame.frame_index])
        for i, camera in enumerate(CAMERAS):
            expected = image(i, frame.episode_index, frame.frame_index, (camera.height, camera.width))
            decoded = frame.images[image_key(camera.name)]
            assert decoded.shape == expected.shape
            assert np.abs(decoded.astype(int) - expected).mean() < 2.0  # lossy, but these are the recorded frames
    # random access decodes the same pixels as the sequential pass
    for index in (0, 8, 20):
        single = dataset.frame(index)
        for key, pixels in single.images.items():
            np.testing.assert_array_equal(pixels, frames[index].images[key])


def test_stats_equal_a_direct_computation(tmp_path, version):
    root = tmp_path / "ds"
    summary = write(root, version)
    dataset = DatasetReader(root)
    states, actions = dataset.columns[STATE].astype(np.float64), dataset.columns[ACTION].astype(np.float64)
    for key, values in ((STATE, states), (ACTION, actions)):
        stats = summary.stats[key]
        np.testing.assert_allclose(stats.mean, values.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(stats.std, values.std(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(stats.min, values.min(axis=0))
        np.testing.assert_array_equal(stats.quantiles["q99"], np.quantile(values, 0.99, axis=0))
        assert stats.count == 21
    pixels = np.stack([f.images[image_key("cam_wrist")] for e in range(3) for f in dataset.episode_frames(e)])
    written = np.stack(
        [image(1, e, k, (32, 32)) for e, (length, _) in enumerate(EPISODES) for k in range(length)]
    ).astype(np.float64)
    image_stats = summary.stats[image_key("cam_wrist")]
    assert image_stats.mean.shape == (3, 1, 1)
    # the stats describe the recorded frames (LeRobot computes them before encoding too)
    for channel in range(3):
        values = written[..., channel].reshape(-1) / 255
        assert image_stats.mean[channel, 0, 0] == pytest.approx(values.mean(), abs=1e-12)
        assert image_stats.std[channel, 0, 0] == pytest.approx(values.std(), abs=1e-12)
        for key, q in (("q01", 0.01), ("q50", 0.5), ("q90", 0.9)):
            assert image_stats.quantiles[key][channel, 0, 0] == pytest.approx(np.quantile(values, q), abs=1e-12)
    assert pixels.shape[0] == 21
    # per-episode stats, as LeRobot's loaders read them back
    for episode in dataset.episodes:
        rows = slice(episode.dataset_from_index, episode.dataset_to_index)
        np.testing.assert_allclose(episode.stats[STATE].mean, states[rows].mean(axis=0), rtol=1e-12)
        assert episode.stats[STATE].count == episode.length
        assert episode.stats["index"].max[0] == episode.dataset_to_index - 1
    if version == V30:
        np.testing.assert_allclose(dataset.stats[STATE].std, states.std(axis=0), rtol=1e-12)


def test_image_histogram_quantiles_match_numpy():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    histogram = ImageHistogram()
    for frame in frames:
        histogram.add(frame)
    stats = histogram.stats()
    for channel in range(3):
        values = frames[..., channel].reshape(-1) / 255
        for key, q in (("q01", 0.01), ("q10", 0.1), ("q50", 0.5), ("q99", 0.99)):
            assert stats.quantiles[key][channel, 0, 0] == pytest.approx(np.quantile(values, q), abs=1e-12)
        assert stats.max[channel, 0, 0] == values.max() and stats.min[channel, 0, 0] == values.min()


def test_v30_files_roll_over_at_their_size_limit(tmp_path, version=V30):
    root = tmp_path / "ds"
    # 100-byte limits: every episode starts new data and video files; two files per chunk directory
    write(root, V30, video_file_size_mb=1e-4, data_file_size_mb=1e-4, chunks_size=2)
    key = image_key("cam_high")
    assert sorted(str(p.relative_to(root / "videos" / key)) for p in (root / "videos" / key).rglob("*.mp4")) == [
        "chunk-000/file-000.mp4",
        "chunk-000/file-001.mp4",
        "chunk-001/file-000.mp4",
    ]
    assert len(list((root / "data").rglob("*.parquet"))) == 3
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e[f"videos/{key}/from_timestamp"] for e in episodes] == [0.0, 0.0, 0.0]
    dataset = DatasetReader(root)
    assert len(dataset) == 21
    np.testing.assert_array_equal(next(dataset.episode_frames(2)).state, vectors(2, 9)[0][0])


def test_writer_refuses_bad_frames_and_specs(tmp_path):
    with pytest.raises(DatasetFormatError, match="must be even"):
        DatasetSpec(V30, FPS, "x", STATE_NAMES, ACTION_NAMES, (CameraSpec("odd", 31, 32),))
    with pytest.raises(DatasetFormatError, match="unique"):
        DatasetSpec(V30, FPS, "x", ("a", "a"), ACTION_NAMES, CAMERAS)
    writer = DatasetWriter(tmp_path / "ds", spec(V30))
    recorder = writer.begin_episode("task")
    with pytest.raises(DatasetFormatError, match="finite"):
        recorder.add(np.array([np.nan, 0, 0]), np.zeros(3), {})
    with pytest.raises(DatasetFormatError, match="images of"):
        recorder.add(np.zeros(3), np.zeros(3), {"cam_high": np.zeros((48, 64, 3), np.uint8)})
    with pytest.raises(DatasetFormatError, match="at least one frame"):
        recorder.commit()
    with pytest.raises(DatasetFormatError, match="no episode"):
        writer.finish()
    with pytest.raises(DatasetFormatError, match="already exists"):
        DatasetWriter(tmp_path / "ds", spec(V30))


def test_reader_names_what_is_broken(tmp_path):
    root = tmp_path / "ds"
    write(root, V30)
    info = json.loads((root / "meta/info.json").read_text())
    info["total_frames"] = 22
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match="22 frames"):
        DatasetReader(root)
    (root / "meta/info.json").unlink()
    with pytest.raises(DatasetFormatError, match="cannot read .*info.json"):
        DatasetReader(root)


def test_norm_stats_are_openpis_chunked_actions_after_the_adaptations(tmp_path):
    states, actions = vectors(1, 6)
    second = vectors(2, 4)
    horizon = 3
    normalization = compute_normalization([(states, actions), second], ("delta:2,-1",), horizon)
    # by hand: every frame's chunk of the next 3 actions (last one repeated), minus the frame's state on a and b
    chunks = []
    for episode_states, episode_actions in ((states, actions), second):
        n = len(episode_states)
        for i in range(n):
            for k in range(horizon):
                row = episode_actions[min(i + k, n - 1)].astype(np.float64)
                chunks.append(row - np.array([*episode_states[i][:2], 0.0]))
    chunks = np.array(chunks)
    np.testing.assert_allclose(normalization.actions.mean, chunks.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(normalization.actions.q99, np.quantile(chunks, 0.99, axis=0), rtol=1e-12)
    all_states = np.concatenate([states, second[0]]).astype(np.float64)
    np.testing.assert_allclose(normalization.state.std, all_states.std(axis=0), rtol=1e-12)
    normalization.save(tmp_path / "norm_stats.json")
    document = json.loads((tmp_path / "norm_stats.json").read_text())
    assert set(document["norm_stats"]) == {"state", "actions"}
    assert set(document["norm_stats"]["actions"]) == {"mean", "std", "q01", "q99"}
    np.testing.assert_allclose(load_normalization(tmp_path / "norm_stats.json").actions.std, chunks.std(axis=0))
    # the adaptation the policy applies is the one the stats describe
    adapted = TransformPipeline.parse(("delta:2,-1",)).adapt_state(states[0].astype(np.float64))[-1]
    np.testing.assert_array_equal(adapted, states[0])


def test_vector_stats_refuse_empty_input():
    with pytest.raises(DatasetFormatError):
        vector_stats(np.empty((0, 3)))


def test_video_settings_validate():
    with pytest.raises(DatasetFormatError, match="codec"):
        VideoSettings("mpeg2")
    with pytest.raises(DatasetFormatError, match="crf"):
        VideoSettings("h264", 99)
