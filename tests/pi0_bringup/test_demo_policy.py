"""The demo policy's pipeline: scripted demonstrations recorded from the simulated robot with the suite's
recorder, converted with bag_to_dataset, trained with pi0_model.train, cached per stage."""

import shutil

import numpy as np
import pytest

from pi0_bringup.demo_policy import DemoTraining, demo_checkpoint, pipeline_dir
from pi0_bringup.demo_tasks import DEMO_INSTRUCTIONS, ScriptSettings, goal_pose
from pi0_bringup.robots import load_robot
from pi0_model.checkpoint import read_config
from pi0_model.dataset import DatasetReader
from pi0_model.dataset_format import image_key
from pi0_model.policy import Pi0Policy
from pi0_ros.bag import BagReader
from pi0_ros.policy.model_loader import robot_io

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SHORT_SCRIPT = ScriptSettings(episodes_per_instruction=1, demonstration_s=0.6, reset_s=0.3)
QUICK = DemoTraining(script=SHORT_SCRIPT, image_size=(32, 24), steps=4, batch_size=2, warmup_steps=1)


def test_the_pipeline_records_converts_and_trains_a_checkpoint_the_policy_loads(tmp_path):
    description = load_robot("mobile_aloha")
    reports = []
    checkpoint = demo_checkpoint(description, QUICK, report=reports.append, cache=tmp_path)
    stages = pipeline_dir(description, QUICK, tmp_path)
    assert checkpoint == stages / "training" / "checkpoints" / "00000004"
    assert [line[:3] for line in reports if line[:2] in ("1/", "2/", "3/")] == ["1/3", "2/3", "3/3"]

    with BagReader(stages / "demonstrations") as bag:
        topics = set(bag.info.topics)
    base = description.base
    assert {"/policy_status", "/cam_high/image_raw", "/joint_states", f"/{base.controller.topic}"} <= topics
    assert "/cam_low/image_raw" not in topics, "only what the policy sees is recorded"

    dataset = DatasetReader(stages / "dataset")
    assert [e.tasks for e in dataset.episodes] == [(i,) for i in DEMO_INSTRUCTIONS]
    assert dataset.info.video_keys == tuple(image_key(c.name) for c in description.policy_cameras)
    first_frame = next(iter(dataset.episode_frames(0)))
    assert first_frame.images[image_key("cam_high")].shape == (24, 32, 3)
    for episode in dataset.episodes:
        actions = dataset.columns["action"][episode.dataset_from_index : episode.dataset_to_index]
        goal = goal_pose(description, episode.tasks[0])
        first, last = np.abs(actions[0] - goal), np.abs(actions[-1] - goal)
        assert last.max() < first.max() or first.max() < 0.2, "each demonstration approaches its goal"

    assert read_config(checkpoint).model_type == "pi0"
    policy = Pi0Policy.from_checkpoint(checkpoint, robot_io(description))
    chunk = policy.infer(description.blank_images(), description.home_state, "reach forward").actions
    assert chunk.shape == (50, len(description.policy.actions)) and np.all(np.isfinite(chunk))

    again = demo_checkpoint(description, QUICK, report=lambda line: pytest.fail(f"rebuilt: {line}"), cache=tmp_path)
    assert again == checkpoint


def test_an_interrupted_pipeline_starts_from_the_stage_it_reached(tmp_path):
    description = load_robot("aloha")
    settings = DemoTraining(script=SHORT_SCRIPT, image_size=(32, 24), steps=4, batch_size=2, warmup_steps=1)
    first = demo_checkpoint(description, settings, report=lambda line: None, cache=tmp_path)
    # as if training had stopped after its first checkpoint (save_every = steps // 4)
    shutil.rmtree(first)
    reports = []
    again = demo_checkpoint(description, settings, report=reports.append, cache=tmp_path)
    assert again == first and (again / "model.safetensors").is_file()
    assert not any(line.startswith(("1/3", "2/3")) for line in reports), "recording and conversion are cached"
    assert any(line.startswith("3/3") and "resuming" in line for line in reports)


def test_a_pi05_demo_policy_goes_through_the_same_pipeline(tmp_path):
    description = load_robot("aloha")
    settings = DemoTraining(
        script=SHORT_SCRIPT, image_size=(32, 24), steps=2, batch_size=2, warmup_steps=1, model_type="pi05"
    )
    checkpoint = demo_checkpoint(description, settings, report=lambda line: None, cache=tmp_path)
    assert read_config(checkpoint).model_type == "pi05"
    assert pipeline_dir(description, settings, tmp_path).name.startswith("aloha-pi05-")
    assert pipeline_dir(description, settings, tmp_path) != pipeline_dir(description, QUICK, tmp_path)
