"""Fine-tuning (`python -m pi0_model.train`) on a tiny LeRobot dataset, CPU only, tiny models.

The config and its CLI, the schedule, samples equal to the policy's own
preprocessing, overfitting, the checkpoint loading in Pi0Policy, resuming
equal to an uninterrupted run, LoRA training only the adapters, gradient
checkpointing, and two-process gloo DDP equal to one process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from pi0_model.checkpoint import NORM_STATS_FILE, save_checkpoint
from pi0_model.config import Pi0Config
from pi0_model.dataset import DatasetReader
from pi0_model.dataset_writer import CameraSpec, DatasetSpec, DatasetWriter
from pi0_model.errors import CheckpointError, ConfigError
from pi0_model.flow_matching import flow_matching_loss
from pi0_model.lora import is_adapter
from pi0_model.model import build_model, initialize_weights_
from pi0_model.normalization import compute_normalization
from pi0_model.policy import Pi0Policy, RobotIO
from pi0_model.tokenizer import tiny_sentencepiece_model, tiny_tokenizer
from pi0_model.train import LOG_FILE, LOSS_PLOT_FILE, TRAIN_STATE_FILE, learning_rate, train
from pi0_model.train_config import TrainConfig, argument_parser, parse_args
from pi0_model.train_data import (
    RobotData,
    TrainingSamples,
    augment_batch,
    augment_image,
    dataset_episodes,
    global_batch_indices,
    model_inputs,
    robot_io_for,
)
from pi0_model.trained_io import TRAINED_IO_FILE

torch.set_num_threads(1)

CAMERAS = (CameraSpec("cam_high", 32, 48), CameraSpec("cam_wrist", 24, 24))
EPISODES = ((6, "pick up the cube"), (5, "open the drawer"))


def _frame_image(camera: int, episode: int, frame: int, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    base = 40 * camera + 30 * episode + 5 * frame
    return np.stack([x + base, 2 * y + base // 2, np.full_like(x, 200 - base)], -1).astype(np.uint8)


def write_dataset(root: Path, version: str = "v3.0") -> Path:
    spec = DatasetSpec(
        version=version,
        fps=10,
        robot_type="testbot",
        state_names=("a", "b", "g"),
        action_names=("a", "b", "g"),
        cameras=CAMERAS,
    )
    writer = DatasetWriter(root, spec)
    for episode, (length, task) in enumerate(EPISODES):
        t = np.arange(length, dtype=np.float64)[:, None]
        states = np.hstack([0.3 * t + episode, -0.2 * t, np.full_like(t, 0.5 * episode)]).astype(np.float32)
        recorder = writer.begin_episode(task)
        for k in range(length):
            images = {c.name: _frame_image(i, episode, k, (c.height, c.width)) for i, c in enumerate(CAMERAS)}
            recorder.add(states[k], states[k] + 0.1, images)
        recorder.commit()
    writer.finish()
    return root


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("train") / "dataset")


def tiny_run(dataset: Path, output: Path, **changes) -> TrainConfig:
    settings = dict(
        dataset=str(dataset),
        output=str(output),
        tiny="pi0",
        steps=4,
        batch_size=4,
        warmup_steps=1,
        peak_lr=1e-3,
        decay_steps=100,
        decay_lr=1e-4,
        ema_decay=0.0,
        augment=False,
        num_workers=0,
        progress=False,
        save_every=0,
        log_every=1,
        seed=3,
    )
    settings.update(changes)
    return TrainConfig(**settings)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


# -- config and schedule ---------------------------------------------------------


def test_cli_flags_come_from_the_config(tmp_path):
    config = parse_args(
        ["data", "out", "--tiny", "pi05", "--peak-lr", "1e-4", "--no-augment", "--freeze", "vision", "projector"]
    )
    assert config.tiny == "pi05" and config.peak_lr == 1e-4 and not config.augment
    assert config.freeze == ("vision", "projector") and config.batch_size == 32 and config.ema_decay == 0.99
    # every flag is explained by its field's comment in TrainConfig
    flags = {a.dest: a.help for a in argument_parser()._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(text and not text.startswith("(default") for text in flags.values()), flags
    assert flags["peak_lr"] == "learning rate at the end of the warmup (default: %(default)s)"
    for bad in (
        dict(tiny="pi1"),
        dict(tiny=None),  # neither a checkpoint nor a tiny model
        dict(checkpoint="c"),  # both
        dict(batch_size=0),
        dict(warmup_steps=10, decay_steps=10),
        dict(ema_decay=1.0),
        dict(freeze=("wheels",)),
        dict(lora="all"),
        dict(cameras=("cam_high=top",)),
    ):
        with pytest.raises(ConfigError):
            TrainConfig(**{**dict(dataset="d", output="o", tiny="pi0"), **bad})


def test_learning_rate_is_openpis_warmup_cosine():
    config = TrainConfig(
        dataset="d", output="o", tiny="pi0", warmup_steps=10, peak_lr=1.0, decay_steps=110, decay_lr=0.1
    )
    assert learning_rate(config, 0) == pytest.approx(1 / 11)
    assert learning_rate(config, 5) == pytest.approx(1 / 11 + (1 - 1 / 11) / 2)
    assert learning_rate(config, 10) == pytest.approx(1.0)
    assert learning_rate(config, 60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(config, 110) == pytest.approx(0.1)
    assert learning_rate(config, 500) == pytest.approx(0.1)


def test_batches_cover_each_epoch_once():
    rows = np.concatenate([global_batch_indices(0, step, 4, 11) for step in range(11)])  # 44 = 4 epochs
    for epoch in range(4):
        assert sorted(rows[epoch * 11 : (epoch + 1) * 11]) == list(range(11))
    assert not np.array_equal(rows[:11], rows[11:22])  # reshuffled each epoch


# -- samples ------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["pi0", "pi05"])
def test_samples_are_the_policys_preprocessing(dataset_root, model_type):
    dataset = DatasetReader(dataset_root)
    config = Pi0Config.tiny(model_type)
    tokenizer = tiny_tokenizer(config.max_token_len)
    stats = compute_normalization(dataset_episodes(dataset), (), config.action_horizon)
    io = robot_io_for(dataset, {"cam_high": "base_0_rgb", "cam_wrist": "left_wrist_0_rgb"}, ())
    samples = TrainingSamples(dataset, RobotData(io, config, stats, tokenizer))
    model = build_model(config, "cpu", torch.float32)
    policy = Pi0Policy(model, tokenizer, io, stats.with_mode(config.norm_mode))
    frame = dataset.frame(7)
    cameras = {key.removeprefix("observation.images."): value for key, value in frame.images.items()}
    expected = policy._model_inputs(policy._prepare(cameras, frame.state.astype(np.float64), frame.task, None))
    inputs, actions = model_inputs({k: v[None] for k, v in samples[7].items()}, torch.device("cpu"))
    for name in ("images", "image_masks", "tokens", "token_mask", "state"):
        torch.testing.assert_close(getattr(inputs, name), getattr(expected, name), rtol=0, atol=0)
    # the target is the next horizon of actions (the last one repeating), normalized like the policy's output
    episode = dataset.episodes[frame.episode_index]
    rows = np.minimum(7 + np.arange(config.action_horizon), episode.dataset_to_index - 1)
    raw = dataset.columns["action"][rows].astype(np.float64)
    unnormalized = policy.normalization.unnormalize_actions(actions[0, :, :3].double().numpy())
    np.testing.assert_allclose(unnormalized, raw, atol=1e-5)
    assert torch.all(actions[0, :, 3:] == 0)


def test_augmentations_are_openpis_and_deterministic():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, 56, 56, generator=generator) * 2 - 1
    masks = torch.tensor([[True, True], [True, False]])
    slots = ["base_0_rgb", "left_wrist_0_rgb"]
    first = augment_batch(images, masks, slots, seed=1, step=5, first_position=0)
    assert torch.equal(first, augment_batch(images, masks, slots, seed=1, step=5, first_position=0))
    assert not torch.equal(first, augment_batch(images, masks, slots, seed=1, step=6, first_position=0))
    # a process holding only the second row of the global batch draws what one process draws for it
    assert torch.equal(first[1:], augment_batch(images[1:], masks[1:], slots, seed=1, step=5, first_position=1))
    assert first.shape == images.shape and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first[1, 1], images[1, 1])  # a missing camera stays as it is
    # wrist cameras get only the colour jitter: a per-channel affine map of the pixels, no geometry
    flat = torch.linspace(-1, 1, 56)[None, None].expand(3, 56, 56)
    wrist = augment_image(flat, wrist=True, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(wrist[:, 0], wrist[:, 30])  # rows stay equal
    base = augment_image(flat, wrist=False, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(base[:, 0], base[:, 30])  # rotated


# -- training -----------------------------------------------------------------------


@pytest.mark.slow
def test_training_overfits_and_the_checkpoint_loads_in_the_policy(dataset_root, tmp_path):
    output = tmp_path / "run"
    config = tiny_run(
        dataset_root, output, steps=250, batch_size=8, peak_lr=3e-3, decay_steps=250, decay_lr=3e-4, warmup_steps=10
    )
    result = train(config)
    losses = [loss for _, loss in result.losses]
    assert result.step == 250 and len(losses) == 250
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    checkpoint = result.checkpoint
    assert checkpoint == output / "checkpoints" / "00000250"
    for name in ("model.safetensors", "config.json", NORM_STATS_FILE, "tokenizer.model", TRAIN_STATE_FILE):
        assert (checkpoint / name).is_file(), name
    records = [json.loads(line) for line in (output / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 251))
    assert {"loss", "learning_rate", "grad_norm", "samples_per_s", "peak_memory_bytes"} <= set(records[0])
    assert (output / LOSS_PLOT_FILE).stat().st_size > 0

    dataset = DatasetReader(dataset_root)
    io = robot_io_for(dataset, {}, ())
    policy = Pi0Policy.from_checkpoint(checkpoint, io)
    untrained = Pi0Policy.tiny(io, normalization=policy.normalization, seed=config.seed)
    errors, baseline = [], []
    for index in (0, 4, 8):
        frame = dataset.frame(index)
        cameras = {key.removeprefix("observation.images."): value for key, value in frame.images.items()}
        noise = np.random.default_rng(index).normal(size=(policy.horizon, policy.config.action_dim))
        episode = dataset.episodes[frame.episode_index]
        target = dataset.columns["action"][np.minimum(index + np.arange(policy.horizon), episode.dataset_to_index - 1)]
        for model, out in ((policy, errors), (untrained, baseline)):
            out.append(np.abs(model.infer(cameras, frame.state, frame.task, noise=noise).actions - target).mean())
    # the trained policy reproduces the recorded chunks (next 50 actions, the last repeating) far better
    assert np.mean(errors) < 0.5 * np.mean(baseline), (errors, baseline)


def test_resumed_run_equals_an_uninterrupted_one(dataset_root, tmp_path):
    changes = dict(augment=True, ema_decay=0.9, steps=4, save_every=2)
    whole = train(tiny_run(dataset_root, tmp_path / "whole", **changes))
    train(tiny_run(dataset_root, tmp_path / "split", **{**changes, "steps": 2}))
    resumed = train(tiny_run(dataset_root, tmp_path / "split", **changes, resume=True))
    assert resumed.step == 4 and [s for s, _ in resumed.losses] == [3, 4]
    assert [loss for _, loss in resumed.losses] == [loss for _, loss in whole.losses[2:]]
    assert whole.checkpoint is not None and resumed.checkpoint is not None
    first, second = tensors(whole.checkpoint), tensors(resumed.checkpoint)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # the log holds each step once, in order, across the interruption
    records = [json.loads(line) for line in (tmp_path / "split" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="peak_lr"):
        train(tiny_run(dataset_root, tmp_path / "split", **{**changes, "steps": 6, "peak_lr": 1.0}, resume=True))


def test_a_checkpoint_before_the_first_log_record_is_written(dataset_root, tmp_path):
    result = train(tiny_run(dataset_root, tmp_path / "run", steps=2, save_every=1, log_every=10))
    assert (tmp_path / "run" / "checkpoints" / "00000001" / "model.safetensors").is_file()
    assert [step for step, _ in result.losses] == [2], "the last step is always logged"
    assert (tmp_path / "run" / LOSS_PLOT_FILE).is_file()


def test_the_checkpoint_refuses_a_robot_that_reads_the_cameras_or_joints_otherwise(dataset_root, tmp_path):
    result = train(tiny_run(dataset_root, tmp_path / "run", steps=1, cameras=("cam_high=base_0_rgb",)))
    checkpoint = result.checkpoint
    trained = json.loads((checkpoint / TRAINED_IO_FILE).read_text())
    assert trained["camera_slots"] == {"cam_high": "base_0_rgb"} and trained["transforms"] == []
    assert trained["state_names"] == ["a", "b", "g"] and trained["dataset"] == str(dataset_root)
    io = RobotIO({"cam_high": "base_0_rgb"}, 3, 3, state_names=("a", "b", "g"), action_names=("a", "b", "g"))
    Pi0Policy.from_checkpoint(checkpoint, io)  # as trained
    Pi0Policy.from_checkpoint(checkpoint, dataclasses.replace(io, state_names=(), action_names=()))  # no names

    wrong = [
        (dataclasses.replace(io, camera_slots={"cam_wrist": "base_0_rgb"}), "cameras -> slots trained"),
        (dataclasses.replace(io, camera_slots={"cam_high": "left_wrist_0_rgb"}), "cameras -> slots trained"),
        (dataclasses.replace(io, transforms=("delta:2,-1",)), "transforms trained [], here"),
        (dataclasses.replace(io, state_names=("b", "a", "g")), "state names trained ['a', 'b', 'g']"),
        (RobotIO({"cam_high": "base_0_rgb"}, 3, 4), "action size trained 3, here 4"),
    ]
    for other, reason in wrong:
        with pytest.raises(CheckpointError, match=re.escape(reason)) as refused:
            Pi0Policy.from_checkpoint(checkpoint, other)
        assert f"deleting {TRAINED_IO_FILE} skips this check" in str(refused.value)
    (checkpoint / TRAINED_IO_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="robot_io.json is malformed"):
        Pi0Policy.from_checkpoint(checkpoint, io)
    (checkpoint / TRAINED_IO_FILE).unlink()
    Pi0Policy.from_checkpoint(checkpoint, wrong[0][0])  # openpi's and LeRobot's checkpoints carry no record


def test_fine_tuning_starts_from_a_checkpoint(dataset_root, tmp_path):
    start = build_model(Pi0Config.tiny("pi05"), "cpu", torch.float32)
    initialize_weights_(start, torch.Generator().manual_seed(9))
    dataset = DatasetReader(dataset_root)
    stats = compute_normalization(dataset_episodes(dataset), (), start.config.action_horizon)
    save_checkpoint(start, tmp_path / "start", stats)
    (tmp_path / "start" / "tokenizer.model").write_bytes(tiny_sentencepiece_model())
    config = tiny_run(
        dataset_root, tmp_path / "run", tiny=None, checkpoint=str(tmp_path / "start"), steps=1, peak_lr=1e-9
    )
    result = train(config)
    assert result.checkpoint is not None
    assert (result.checkpoint / "tokenizer.model").read_bytes() == tiny_sentencepiece_model()
    exported, reference = tensors(result.checkpoint), tensors(tmp_path / "start")
    assert exported.keys() == reference.keys()
    assert json.loads((result.checkpoint / "config.json").read_text())["type"] == "pi05"
    for key, value in reference.items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=1e-6)  # one step at lr 1e-9


def _start_weights(seed: int) -> dict[str, torch.Tensor]:
    model = build_model(Pi0Config.tiny("pi0"), "cpu", torch.float32)
    initialize_weights_(model, torch.Generator().manual_seed(seed))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_trains_only_the_adapters(dataset_root, tmp_path):
    config = tiny_run(
        dataset_root,
        tmp_path / "lora",
        steps=2,
        lora="both",
        lora_rank_backbone=4,
        lora_rank_expert=8,
        freeze=("vision", "projector", "heads"),
    )
    result = train(config)
    assert result.checkpoint is not None
    state = torch.load(result.checkpoint / TRAIN_STATE_FILE, weights_only=True)
    trainable = state["trainable"]
    assert trainable and all(is_adapter(name) for name in trainable)
    assert (
        trainable[
            "paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"
        ].shape[0]
        == 4
    )
    assert (
        trainable["paligemma_with_expert.gemma_expert.model.layers.1.mlp.down_proj.lora_B.default.weight"].shape[1] == 8
    )
    # the exported weights are the plain model's, the adapters merged into the projections of the two stacks
    start, exported = _start_weights(config.seed), tensors(result.checkpoint)
    changed = {key for key, value in start.items() if not torch.equal(exported.get(key, value), value)}
    exported_key = "paligemma_with_expert.paligemma.lm_head.weight"  # the embedding, stored as the tied head
    assert torch.equal(
        exported[exported_key], start["paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"]
    )
    assert changed and all("_proj.weight" in key and ".layers." in key for key in changed), changed
    assert all("vision_tower" not in key for key in changed)


def test_gradient_checkpointing_gives_the_same_gradients(dataset_root):
    dataset = DatasetReader(dataset_root)
    config = Pi0Config.tiny("pi05")
    stats = compute_normalization(dataset_episodes(dataset), (), config.action_horizon)
    robot = RobotData(robot_io_for(dataset, {}, ()), config, stats, tiny_tokenizer(config.max_token_len))
    samples = TrainingSamples(dataset, robot)
    batch = torch.utils.data.default_collate([samples[0], samples[5]])
    inputs, actions = model_inputs(batch, torch.device("cpu"))
    model = build_model(config, "cpu", torch.float32)
    initialize_weights_(model, torch.Generator().manual_seed(0))
    noise = torch.randn(actions.shape, generator=torch.Generator().manual_seed(1))
    time = torch.tensor([0.3, 0.8])
    gradients = []
    for recompute in (False, True):
        model.paligemma_with_expert.gradient_checkpointing = recompute
        model.paligemma_with_expert.paligemma.model.vision_tower.gradient_checkpointing = recompute
        model.zero_grad()
        flow_matching_loss(model, inputs, actions, noise=noise, time=time).mean().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-5, atol=1e-7)


# -- distributed --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, config: TrainConfig) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    train(config)


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_process_gloo_run_equals_one_process(dataset_root, tmp_path, fsdp):
    changes = dict(steps=3, augment=True, ema_decay=0.5)
    single = train(tiny_run(dataset_root, tmp_path / "one", **changes))
    config = tiny_run(dataset_root, tmp_path / "two", **changes, fsdp=fsdp)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), config), nprocs=2, join=True, start_method="spawn")
    assert single.checkpoint is not None
    one, two = tensors(single.checkpoint), tensors(tmp_path / "two" / "checkpoints" / "00000003")
    for key in one:
        if key.endswith("k_proj.bias"):
            # A key bias shifts every logit of a query's row alike: its true gradient is 0, and Adam scales the
            # rounding noise that stands in for it up to a full step, differently for differently summed batches.
            continue
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    saved = torch.load(tmp_path / "two" / "checkpoints" / "00000003" / TRAIN_STATE_FILE, weights_only=True)
    # a sharded run saves its optimizer state gathered, keyed by parameter name (torch.distributed.checkpoint)
    assert all(isinstance(key, str) == fsdp for key in saved["optimizer"]["state"])
    logged = [json.loads(line)["loss"] for line in (tmp_path / "two" / LOG_FILE).read_text().splitlines()]
    assert logged == pytest.approx([loss for _, loss in single.losses], rel=1e-4)
    assert math.isfinite(logged[-1])


def _spawn(config: TrainConfig) -> None:
    mp.start_processes(_ddp_worker, args=(2, _free_port(), config), nprocs=2, join=True, start_method="spawn")


@pytest.mark.slow
def test_a_resumed_fsdp_run_equals_an_uninterrupted_one(dataset_root, tmp_path):
    changes = dict(steps=3, ema_decay=0.5, fsdp=True)
    _spawn(tiny_run(dataset_root, tmp_path / "whole", **changes))
    _spawn(tiny_run(dataset_root, tmp_path / "split", **{**changes, "steps": 2}))
    _spawn(tiny_run(dataset_root, tmp_path / "split", **changes, resume=True))
    whole = tensors(tmp_path / "whole" / "checkpoints" / "00000003")
    resumed = tensors(tmp_path / "split" / "checkpoints" / "00000003")
    for key in whole:
        assert torch.equal(resumed[key], whole[key]), key


@pytest.mark.gpu
@pytest.mark.parametrize("lora", ["none", "both"])
def test_bf16_autocast_lora_and_checkpointing_on_cuda(dataset_root, tmp_path, lora):
    config = tiny_run(
        dataset_root, tmp_path / lora, device="cuda", steps=3, lora=lora, gradient_checkpointing=True, augment=True
    )
    result = train(config)
    assert result.checkpoint is not None and result.peak_memory_bytes > 0
    assert all(math.isfinite(loss) for _, loss in result.losses)
    io = robot_io_for(DatasetReader(dataset_root), {}, ())
    policy = Pi0Policy.from_checkpoint(result.checkpoint, io, device="cuda", dtype="bfloat16")
    frame = DatasetReader(dataset_root).frame(0)
    cameras = {key.removeprefix("observation.images."): value for key, value in frame.images.items()}
    assert np.all(np.isfinite(policy.infer(cameras, frame.state, frame.task).actions))
