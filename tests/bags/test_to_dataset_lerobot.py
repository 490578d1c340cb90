"""bag_to_dataset's datasets opened by LeRobot's real loaders: v3.0 with lerobot 0.4.4, v2.1 with lerobot 0.3.3
(datasets 3.x, the stack openpi trains with), each in a reference environment of its own
(tests/support/lerobot_env.py: built once, about 6.5 GB each; skipped when it cannot be built).

LeRobot's items must equal pi0_model.dataset's frames exactly: state, action,
timestamp (= frame_index / fps), indices, task, and every decoded pixel; its
stats must be the ones computed directly over the frames.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_bags import ROBOT_YAML, write_testbot_bag

from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import ACTION, STATE, V21, V30
from pi0_ros.bag.to_dataset import ConvertConfig, convert
from pi0_ros.core.robot_description import load_robot_description
from support.lerobot_env import LEROBOT_V21, LEROBOT_V30, load_with_lerobot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.mark.parametrize(("version", "env"), [(V30, LEROBOT_V30), (V21, LEROBOT_V21)], ids=["v3.0", "v2.1"])
def test_lerobot_reads_the_frames_our_reader_reads(tmp_path, version, env):
    (tmp_path / "testbot.yaml").write_text(ROBOT_YAML)
    write_testbot_bag(tmp_path / "bag", "sqlite3", ros2_record=True)
    conversion = convert(
        ConvertConfig(
            bags=(tmp_path / "bag",),
            description=load_robot_description(tmp_path / "testbot.yaml"),
            output=tmp_path / "ds",
            version=version,
        )
    )
    assert len(conversion.written) == 2
    load_with_lerobot(env, tmp_path / "ds", tmp_path / "lerobot.npz")
    theirs = np.load(tmp_path / "lerobot.npz")
    meta = json.loads(str(theirs["meta"]))
    ours = DatasetReader(tmp_path / "ds")
    frames = [frame for episode in ours.episodes for frame in ours.episode_frames(episode.index)]

    assert meta["codebase_version"] == version and meta["fps"] == ours.info.fps and meta["num_episodes"] == 2
    np.testing.assert_array_equal(theirs[STATE], np.stack([f.state for f in frames]))
    np.testing.assert_array_equal(theirs[ACTION], np.stack([f.action for f in frames]))
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        np.testing.assert_array_equal(theirs[key].reshape(-1), ours.columns[key])
    np.testing.assert_allclose(theirs["timestamp"], ours.columns["frame_index"] / ours.info.fps, atol=1e-6)
    assert meta["tasks"] == [f.task for f in frames]
    assert sorted(meta["video_keys"]) == sorted(ours.info.video_keys)
    for key in ours.info.video_keys:
        np.testing.assert_array_equal(theirs[key], np.stack([f.images[key] for f in frames]))

    # the stats LeRobot loads (v3.0: stats.json; v2.1: its aggregate of episodes_stats.jsonl) are the data's
    for key, values in ((STATE, ours.columns[STATE]), (ACTION, ours.columns[ACTION])):
        data = values.astype(np.float64)
        stats = meta["stats"][key]
        np.testing.assert_allclose(stats["mean"], data.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(stats["std"], data.std(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats["min"], data.min(axis=0), rtol=0)
        np.testing.assert_allclose(stats["max"], data.max(axis=0), rtol=0)
        assert np.asarray(stats["count"]).reshape(-1)[0] == len(ours)
        if version == V30:
            np.testing.assert_allclose(stats["q50"], np.quantile(data, 0.5, axis=0), rtol=1e-12)
