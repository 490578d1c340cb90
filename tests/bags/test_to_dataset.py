"""bag_to_dataset on testbot bags whose every signal is known in closed form (no ROS graph, no LeRobot).

Every frame's image, state and action is checked against what the runtime's
synchronizer must have seen at the frame's time (tests/bags/dataset_bags.py);
the stats and norm_stats.json against a direct computation over the written
frames; bad bags against the reason they are skipped for.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_bags import (
    GOALS,
    LEADER_TOPIC,
    ROBOT_YAML,
    TASK_TOPIC,
    Goal,
    Variant,
    commanded,
    expected_frame,
    frame_image,
    leader,
    write_testbot_bag,
)

from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import ACTION, STATE, V21, V30, image_key
from pi0_model.normalization import load_normalization
from pi0_ros.bag import to_dataset
from pi0_ros.bag.to_dataset import ActionSource, ConvertConfig, EpisodeSource, convert, summary_table
from pi0_ros.core.robot_description import load_robot_description

FPS = 50
GOAL_FRAMES = 50  # each goal lasts 1 s


@pytest.fixture
def robot_yaml(tmp_path):
    path = tmp_path / "testbot.yaml"
    path.write_text(ROBOT_YAML)
    return path


def config(robot_yaml, bags, output, **overrides) -> ConvertConfig:
    return ConvertConfig(
        bags=tuple(bags), description=load_robot_description(robot_yaml), output=output, action_horizon=4, **overrides
    )


def check_frames(dataset: DatasetReader, goals, signal) -> None:
    """Every frame is what the synchronizer held at its time, with the source's action then."""
    assert [e.length for e in dataset.episodes] == [GOAL_FRAMES] * len(goals)
    for episode, goal in zip(dataset.episodes, goals):
        assert episode.tasks == (goal.instruction,)
        for frame in dataset.episode_frames(episode.index):
            t = goal.start + frame.frame_index / FPS
            index, state, action = expected_frame(t, signal)
            np.testing.assert_allclose(frame.state, state, atol=1e-6)
            np.testing.assert_allclose(frame.action, action, atol=1e-6)
            assert frame.task == goal.instruction
            assert frame.timestamp == pytest.approx(frame.frame_index / FPS, abs=1e-6)
            for number, camera in enumerate(("front", "wrist")):
                decoded = frame.images[image_key(camera)].astype(int)
                errors = [np.abs(decoded - frame_image(number, i)).mean() for i in (index - 1, index, index + 1)]
                # the recorded frame, within what 4:2:0 video keeps of a 32x24 image, and not its neighbours
                assert errors[1] < 2.5 and errors[1] < min(errors[0], errors[2])


@pytest.mark.parametrize("version", [V21, V30])
@pytest.mark.parametrize("ros2_record", [False, True], ids=["suite-writer", "ros2-bag-record"])
def test_goal_episodes_hold_what_the_synchronizer_saw(tmp_path, robot_yaml, storage, version, ros2_record):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, storage, ros2_record=ros2_record)
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds", version=version))
    assert [(r.label, r.outcome, r.frames, r.reason) for r in conversion.reports] == [
        ("goal 0a0a0a0a", "succeeded", GOAL_FRAMES, ""),
        ("goal 0b0b0b0b", "canceled", GOAL_FRAMES, ""),
    ]
    dataset = DatasetReader(tmp_path / "ds")
    assert dataset.info.version == version and dataset.info.fps == FPS and dataset.info.robot_type == "testbot"
    assert dataset.info.feature(STATE).names == ("j1", "j2", "g")
    check_frames(dataset, GOALS, commanded)


def test_leader_actions_and_task_topic_episodes(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag)
    conversion = convert(
        config(
            robot_yaml,
            [bag],
            tmp_path / "ds",
            episodes=EpisodeSource.parse(f"task-topic:{TASK_TOPIC}", None),
            actions=ActionSource.parse(f"leader:{LEADER_TOPIC}"),
        )
    )
    assert [r.label for r in conversion.written] == ["task message 1", "task message 3"]
    check_frames(DatasetReader(tmp_path / "ds"), GOALS, leader)


def test_whole_bag_episode_and_several_bags(tmp_path, robot_yaml):
    bags = [tmp_path / "a", tmp_path / "b"]
    for bag in bags:
        write_testbot_bag(bag)
    conversion = convert(
        config(robot_yaml, bags, tmp_path / "ds", episodes=EpisodeSource.parse("bag", "tidy up"), version=V21)
    )
    assert [r.episode_index for r in conversion.reports] == [0, 1]
    dataset = DatasetReader(tmp_path / "ds")
    assert dataset.tasks == ("tidy up",)
    # the first frame waits for the first camera set; the last lies before the bag's end
    for episode in dataset.episodes:
        assert 140 <= episode.length <= 150


def test_stats_and_norm_stats_match_the_frames(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag)
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds", version=V30))
    dataset = DatasetReader(tmp_path / "ds")
    states = dataset.columns[STATE].astype(np.float64)
    actions = dataset.columns[ACTION].astype(np.float64)
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    np.testing.assert_allclose(stats[STATE]["mean"], states.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats[ACTION]["std"], actions.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats[ACTION]["q10"], np.quantile(actions, 0.1, axis=0), rtol=1e-12)
    assert stats[STATE]["count"] == [len(dataset)]
    assert np.array(stats[image_key("front")]["mean"]).shape == (3, 1, 1)
    # norm_stats.json: chunks of 4 actions per frame (testbot has no adaptations), states per frame
    chunks = []
    for episode in dataset.episodes:
        rows = actions[episode.dataset_from_index : episode.dataset_to_index]
        for i in range(episode.length):
            chunks.extend(rows[min(i + k, episode.length - 1)] for k in range(4))
    normalization = load_normalization(conversion.norm_stats)
    np.testing.assert_allclose(normalization.actions.mean, np.mean(chunks, axis=0), rtol=1e-9)
    np.testing.assert_allclose(normalization.actions.q01, np.quantile(chunks, 0.01, axis=0), rtol=1e-9)
    np.testing.assert_allclose(normalization.state.std, states.std(axis=0), rtol=1e-9)
    assert conversion.norm_stats == tmp_path / "ds" / "norm_stats.json"


def reasons(conversion) -> list[str]:
    return [r.reason for r in conversion.reports]


def test_a_camera_gap_skips_its_episode_only(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, variant=Variant(camera_gap=(0.5, 1.3)))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    first, second = conversion.reports
    assert first.episode_index is None and first.frames == 0
    assert first.reason.startswith("gap at 0.7") and "to the end: no observation (stale" in first.reason
    assert "front" in first.reason
    assert second.episode_index == 0 and second.frames == GOAL_FRAMES
    assert len(DatasetReader(tmp_path / "ds")) == GOAL_FRAMES
    # cameras back before the goal ends: a gap inside it, never bridged by holding the old frame
    bag = tmp_path / "inside"
    write_testbot_bag(bag, variant=Variant(camera_gap=(0.5, 1.1)))
    first, second = convert(config(robot_yaml, [bag], tmp_path / "ds", overwrite=True)).reports
    assert first.reason.startswith("gap at 0.76 s: no observation (stale: older than max_age 0.5 s: front")
    assert second.frames == GOAL_FRAMES


def test_unknown_joints_skip_every_episode_with_the_names(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, variant=Variant(joint_names=("joint_1", "joint_2", "g")))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    assert (
        reasons(conversion)
        == [
            "joint(s) j1, j2 of robot 'testbot' never appear on /joint_states "
            "(it names joint_1, joint_2, unknown to the description)"
        ]
        * 2
    )
    assert not conversion.written and not (tmp_path / "ds").exists()


def test_missing_topics_name_the_topic(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, variant=Variant(skip_topics=("/wrist/image_raw",)))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    assert len(conversion.reports) == 1 and "has no topic /wrist/image_raw" in conversion.reports[0].reason
    conversion = convert(
        config(
            robot_yaml,
            [tmp_path / "nothing"],
            tmp_path / "ds",
        )
    )
    assert "does not exist" in conversion.reports[0].reason


def test_missing_actions_and_goals_are_reasons(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, variant=Variant(skip_topics=("/gripper_controller/commands",)))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    assert reasons(conversion) == ["no action for g in the bag's commands"] * 2
    bag = tmp_path / "no_goals"
    write_testbot_bag(bag, variant=Variant(skip_topics=("/policy_status",)))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    assert "no instruction goal" in reasons(conversion)[0]


def test_empty_and_instructionless_goals_are_skipped(tmp_path, robot_yaml):
    bag = tmp_path / "bag"
    goals = (
        Goal(0.203, 0.203, "blink", "0c" * 16, 4),
        Goal(0.503, 1.003, "", "0d" * 16, 4),
        Goal(1.503, 2.503, "fold the towel", "0e" * 16, 4),
    )
    write_testbot_bag(bag, variant=Variant(goals=goals))
    conversion = convert(config(robot_yaml, [bag], tmp_path / "ds"))
    assert reasons(conversion) == ["empty: shorter than one frame", "the goal has no instruction", ""]
    lines = summary_table(conversion)
    assert "skipped: empty: shorter than one frame" in lines[1]
    assert lines[-1] == "1 episodes, 50 frames, 1 tasks written; 2 skipped"


def test_cli_writes_the_dataset_and_refuses_bad_arguments(tmp_path, robot_yaml, capsys):
    bag = tmp_path / "bag"
    write_testbot_bag(bag)
    output = tmp_path / "ds"
    args = [str(bag), "--robot", str(robot_yaml), "--output", str(output), "--format", "v2.1", "--action-horizon", "2"]
    assert to_dataset.main(args) == 0
    out = capsys.readouterr().out
    assert "goal 0a0a0a0a (succeeded)" in out and "episode 1" in out and "2 episodes, 100 frames" in out
    assert DatasetReader(output).info.version == V21
    for bad, message in (
        (args, "exists: give --overwrite"),
        ([*args, "--overwrite", "--episodes", "scenes"], "--episodes must be"),
        ([*args, "--overwrite", "--episodes", "bag"], "needs the episodes' task"),
        ([*args, "--overwrite", "--action-source", "leader:"], "--action-source must be"),
        ([*args, "--overwrite", "--fps", "0"], "whole number of frames"),
        ([str(bag), "--robot", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "x")], "cannot read robot"),
        ([str(bag), "--robot", str(robot_yaml)], "give --output or --repo-id"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            to_dataset.main(bad)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert to_dataset.main([*args, "--overwrite", "--format", "v3.0"]) == 0
    assert DatasetReader(output).info.version == V30
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        to_dataset.main([str(bag), "--robot", str(robot_yaml), "--output", str(tmp_path / "notes"), "--overwrite"])
    assert "refusing to replace it" in capsys.readouterr().err


def test_cli_exits_1_when_nothing_is_written(tmp_path, robot_yaml, capsys):
    bag = tmp_path / "bag"
    write_testbot_bag(bag, variant=Variant(skip_topics=("/front/image_raw",)))
    code = to_dataset.main([str(bag), "--robot", str(robot_yaml), "--output", str(tmp_path / "ds")])
    assert code == 1
    captured = capsys.readouterr()
    assert "has no topic /front/image_raw" in captured.out
    assert "no episode could be written" in captured.err
    assert not (tmp_path / "ds").exists()
