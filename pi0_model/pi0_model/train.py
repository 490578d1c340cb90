"""Fine-tune pi0 / pi0.5 on a LeRobot dataset: `python -m pi0_model.train DATASET OUTPUT --checkpoint CKPT`.

    python -m pi0_model.train ~/data/towels runs/towels --checkpoint ~/ckpt/pi0_base --cameras cam_high=base_0_rgb
    python -m pi0_model.train ~/data/towels runs/tiny --tiny pi05 --steps 200 --batch-size 8   # from scratch
    torchrun --nproc-per-node 4 -m pi0_model.train ...                                         # DDP, 4 GPUs

The recipe is openpi's (see train_config.py): AdamW, linear warmup then
cosine decay, gradient clipping, EMA, image augmentations; bf16 autocast on
GPU, optional gradient checkpointing, full fine-tuning or LoRA with chosen
parts frozen. Samples are prepared by the policy's own preprocessing
(train_data.py).

Output (`OUTPUT`):

    checkpoints/<step>/   model.safetensors, config.json, norm_stats.json, tokenizer.model: the layout
                          Pi0Policy.from_checkpoint and the policy node load (EMA weights when EMA is on,
                          LoRA merged), plus train_state.pt (trainable weights, optimizer, EMA, step) to resume
    train_log.jsonl       one JSON object per logged step (loss, learning rate, grad norm, throughput)
    loss.png              the loss curve
    summary.json          the final step, time and peak memory

Resuming (`--resume`) continues from the newest checkpoint. Every random draw
of a step derives from (seed, step, sample position) and the data order from
(seed, epoch), so there is no generator state to restore and a resumed run
computes what an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer

from .checkpoint import load_model, save_state_dict
from .config import Pi0Config
from .dataset import DatasetReader
from .errors import CheckpointError, ConfigError
from .flow_matching import flow_matching_loss, sample_time
from .lora import add_lora, lora_scalings, merged_state_dict, set_trainable
from .model import ModelInputs, Pi0Model, build_model, initialize_weights_, keeps_fp32
from .normalization import Normalization, compute_normalization, load_normalization
from .tokenizer import SENTENCEPIECE_FILE, find_tokenizer, load_tokenizer, tiny_sentencepiece_model
from .train_config import RESUMABLE_CHANGES, TrainConfig, parse_args
from .train_data import (
    NOISE_STREAM,
    RobotData,
    StepSampler,
    TrainingSamples,
    dataset_episodes,
    model_inputs,
    robot_io_for,
    step_generator,
)
from .trained_io import write_trained_io

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAIN_STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
LOSS_PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"


def learning_rate(config: TrainConfig, step: int) -> float:
    """openpi's CosineDecaySchedule (optax.warmup_cosine_decay_schedule) at optimizer step `step` (0-based)."""
    if step < config.warmup_steps:
        start = config.peak_lr / (config.warmup_steps + 1)
        return start + (config.peak_lr - start) * step / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / (config.decay_steps - config.warmup_steps))
    return config.decay_lr + (config.peak_lr - config.decay_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class FlowMatchingObjective(nn.Module):
    """The training loss as a module, so DDP sees the forward pass it synchronizes."""

    def __init__(self, model: Pi0Model):
        super().__init__()
        self.model = model

    def forward(self, inputs: ModelInputs, actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor) -> Any:
        # openpi averages the squared flow error over every (padded) action dimension.
        return flow_matching_loss(self.model, inputs, actions, noise=noise, time=time).mean()


class Ema:
    """Exponential moving average of the trainable weights, in fp32: ema = d * ema + (1 - d) * weights."""

    def __init__(self, parameters: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().to(torch.float32).clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self, parameters: dict[str, nn.Parameter]) -> None:
        for name, parameter in parameters.items():
            self.shadow[name].mul_(self.decay).add_(parameter.detach().to(torch.float32), alpha=1.0 - self.decay)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or one process."""
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    checkpoint: Path | None  # the last checkpoint written
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of every logged step, this run
    peak_memory_bytes: int = 0


# -- setup ----------------------------------------------------------------------


def _device(config: TrainConfig, env: Distributed) -> torch.device:
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    return torch.device("cuda", env.local_rank)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "bfloat16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _starting_model(config: TrainConfig) -> tuple[Pi0Model, Path | None]:
    """The model to fine-tune (fp32 master weights, CPU) and the checkpoint it came from."""
    if config.checkpoint is not None:
        path = Path(config.checkpoint)
        return load_model(path, "cpu", torch.float32), path
    assert config.tiny is not None
    model = build_model(Pi0Config.tiny(config.tiny), "cpu", torch.float32)
    initialize_weights_(model, torch.Generator().manual_seed(config.seed))
    return model, None


def _tokenizer_file(config: TrainConfig, start: Path | None, output: Path) -> Path:
    if config.tokenizer is not None:
        return Path(config.tokenizer)
    if start is not None:
        return find_tokenizer(start)
    path = output / SENTENCEPIECE_FILE  # the tiny model's in-memory tokenizer, written once
    if not path.is_file():
        path.write_bytes(tiny_sentencepiece_model())
    return path


def _normalization(config: TrainConfig, dataset: DatasetReader, model_config: Pi0Config) -> Normalization:
    if config.norm_stats is not None:
        return load_normalization(config.norm_stats)
    return compute_normalization(dataset_episodes(dataset), config.transforms, model_config.action_horizon)


def latest_checkpoint(output: Path) -> Path | None:
    """The newest checkpoints/<step> with a train state."""
    found = sorted(p for p in (output / CHECKPOINTS_DIR).glob("*") if (p / TRAIN_STATE_FILE).is_file())
    return found[-1] if found else None


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.to_dict()
    changed = sorted(
        key
        for key in current
        if key not in RESUMABLE_CHANGES and json.dumps(saved.get(key)) != json.dumps(current[key])
    )
    if changed:
        raise ConfigError(f"cannot resume from {path}: the run's settings changed ({', '.join(changed)})")


def _store_frozen_in(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Frozen weights in the autocast precision (norms and embeddings stay fp32): half the memory under LoRA."""
    if dtype is None:
        return
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad and not keeps_fp32(name.replace(".base_layer.", ".")):
            parameter.data = parameter.data.to(dtype)


# -- checkpoints -------------------------------------------------------------------


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP) tensor gathered whole, on the CPU; a plain one moved there. Collective when sharded."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def export_state(model: nn.Module, ema: Ema | None) -> dict[str, torch.Tensor]:
    """The plain Pi0Model weights to deploy: EMA weights where there are, LoRA merged, on the CPU, fp32.

    Under FSDP every process must call it (the weights are gathered).
    """
    state = {key: full_tensor(value) for key, value in model.state_dict().items()}
    if ema is not None:
        state.update({name: full_tensor(value) for name, value in ema.shadow.items()})
    merged = merged_state_dict(state, lora_scalings(model))
    return {key: value.to(torch.float32) for key, value in merged.items()}


def write_checkpoint(
    directory: Path,
    weights: dict[str, torch.Tensor],
    robot: RobotData,
    tokenizer_file: Path,
    train_state: dict[str, Any],
    dataset: str,
) -> Path:
    """A policy checkpoint (with the robot I/O it was trained with) plus the train state, written to a temporary
    directory and renamed into place."""
    staging = directory.with_name(directory.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    save_state_dict(weights, robot.config, staging, robot.normalization)
    write_trained_io(staging, robot.io, dataset)
    shutil.copyfile(tokenizer_file, staging / tokenizer_file.name)
    torch.save(train_state, staging / TRAIN_STATE_FILE)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


def shard(objective: FlowMatchingObjective) -> None:
    """FSDP2 units: each SigLIP layer, each Gemma MLP (most of the weights), the token embedding, then the rest.

    The joint attention calls each decoder layer's projections and norms itself, never the layer's
    forward, so a whole decoder layer cannot be a unit (its weights would not be gathered); its MLP can.
    The attention projections and norms stay in the root unit, gathered for the whole step.
    """
    from torch.distributed.fsdp import fully_shard

    backbone = objective.model.paligemma_with_expert.paligemma.model
    for layer in backbone.vision_tower.vision_model.encoder.layers:
        fully_shard(layer)
    for stack in objective.model.paligemma_with_expert.stacks:
        for decoder_layer in stack.layers:
            fully_shard(cast(GemmaDecoderLayer, decoder_layer).mlp)
    fully_shard(backbone.language_model.embed_tokens)
    fully_shard(objective)


# -- logging ---------------------------------------------------------------------


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def plot_losses(log_file: Path, output: Path) -> None:
    """loss.png from every record of train_log.jsonl (resumed runs included); none before the first record."""
    if not log_file.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if not records:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([r["step"] for r in records], [r["loss"] for r in records])
    axis.set_xlabel("step")
    axis.set_ylabel("flow matching loss")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)


# -- the loop ----------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a fine-tuning run; in a torchrun process group, this process's share of it."""
    env = Distributed.from_env()
    device = _device(config, env)
    if env.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    try:
        return _train(config, env, device)
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, env: Distributed, device: torch.device) -> TrainResult:
    if config.batch_size % env.world:
        raise ConfigError(f"batch_size {config.batch_size} does not split over {env.world} processes")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(output) if config.resume else None
    saved: dict[str, Any] | None = None
    if resume_from is not None:
        saved = torch.load(resume_from / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
        assert saved is not None
        _check_resumable(saved["train_config"], config, resume_from)

    dataset = DatasetReader(Path(config.dataset))
    model, start = _starting_model(config)
    model_config = model.config
    tokenizer_file = _tokenizer_file(config, start, output)
    tokenizer = load_tokenizer(tokenizer_file, max_len=model_config.max_token_len)
    normalization = _normalization(config, dataset, model_config)
    io = robot_io_for(dataset, config.camera_map(), config.transforms)
    robot = RobotData(io, model_config, normalization, tokenizer)
    samples = TrainingSamples(dataset, robot, augment_seed=config.seed if config.augment else None)

    add_lora(model, config.lora, config.lora_rank_backbone, config.lora_rank_expert)
    trainable_names = set(set_trainable(model, config.lora, config.freeze))
    autocast = _autocast_dtype(config, device)
    _store_frozen_in(model, autocast if device.type == "cuda" else None)
    if config.gradient_checkpointing:
        model.paligemma_with_expert.gradient_checkpointing = True
        model.paligemma_with_expert.paligemma.model.vision_tower.gradient_checkpointing = True
    model.to(device).train()
    step = 0
    if saved is not None:
        step = int(saved["step"])
        with torch.no_grad():
            named = dict(model.named_parameters())
            for name, value in saved["trainable"].items():
                named[name].copy_(value)
    objective: nn.Module = FlowMatchingObjective(model)
    sharded = config.fsdp and env.world > 1
    if sharded:
        shard(cast(FlowMatchingObjective, objective))
    parameters = {name: p for name, p in model.named_parameters() if name in trainable_names}
    optimizer = torch.optim.AdamW(
        list(parameters.values()),
        lr=learning_rate(config, 0),
        betas=(config.adam_b1, config.adam_b2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    full_options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if saved is not None:
        if sharded:
            # Not strict: the parameters that never get a gradient (the backbone's last output projection,
            # MLP and final norm, read only by prefix outputs the loss ignores) have no AdamW state.
            set_optimizer_state_dict(
                objective, optimizer, saved["optimizer"], options=StateDictOptions(full_state_dict=True, strict=False)
            )
        else:
            optimizer.load_state_dict(saved["optimizer"])
    ema = Ema(parameters, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None and saved is not None:
        ema.shadow = {name: _like(value.to(device), parameters[name]) for name, value in saved["ema"].items()}
    if env.world > 1 and not sharded:
        # The backbone's last MLP and final norm feed only prefix outputs the loss never reads, so they get no
        # gradient; a static graph lets DDP know that once instead of searching for unused parameters every step.
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device] if device.type == "cuda" else None, static_graph=True
        )
    local = config.batch_size // env.world
    sampler = StepSampler(len(samples), config.seed, config.batch_size, step, config.steps, env.rank, env.world)
    loader = torch.utils.data.DataLoader(
        samples, batch_size=local, sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda"
    )
    log_file = output / LOG_FILE
    if env.main:
        _truncate_log(log_file, step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = TrainResult(step=step, checkpoint=resume_from)
    bar = _progress_bar(config, env, step)
    if env.main:
        logger.info(
            "training %s: %d trainable of %d parameters, %d frames, steps %d..%d, global batch %d on %d process(es)",
            model_config.model_type,
            sum(p.numel() for p in parameters.values()),
            sum(p.numel() for p in model.parameters()),
            len(samples),
            step,
            config.steps,
            config.batch_size,
            env.world,
        )
    window_start, window_samples = time.perf_counter(), 0
    for batch in loader:
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, actions = model_inputs(batch, device)
        generator = step_generator(config.seed, step, NOISE_STREAM)
        noise = torch.randn((config.batch_size, *actions.shape[1:]), generator=generator)
        times = sample_time(config.batch_size, torch.device("cpu"), generator)
        rows = slice(env.rank * local, (env.rank + 1) * local)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = objective(inputs, actions, noise[rows].to(device), times[rows].to(device))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(list(parameters.values()), config.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(parameters)
        step += 1
        window_samples += config.batch_size
        if step % max(config.log_every, 1) == 0 or step == config.steps:
            mean_loss = loss.detach().float()
            if env.world > 1:
                dist.all_reduce(mean_loss)
                mean_loss /= env.world
            elapsed = time.perf_counter() - window_start
            record = {
                "step": step,
                "loss": float(mean_loss),
                "learning_rate": lr,
                "grad_norm": float(full_tensor(grad_norm)),
                "samples_per_s": window_samples / max(elapsed, 1e-9),
                "peak_memory_bytes": peak_memory_bytes(device),
            }
            window_start, window_samples = time.perf_counter(), 0
            result.losses.append((step, record["loss"]))
            if env.main:
                with log_file.open("a") as file:
                    file.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", sps=f"{record['samples_per_s']:.1f}")
        if bar is not None:
            bar.update(1)
        if (config.save_every and step % config.save_every == 0) or step == config.steps:
            # Gathering sharded weights and optimizer state is collective: every process takes part.
            weights = export_state(model, ema)
            state = {
                "step": step,
                "trainable": {name: full_tensor(p) for name, p in parameters.items()},
                "optimizer": (
                    get_optimizer_state_dict(objective, optimizer, options=full_options)
                    if sharded
                    else optimizer.state_dict()
                ),
                "ema": {} if ema is None else {name: full_tensor(v) for name, v in ema.shadow.items()},
                "train_config": config.to_dict(),
            }
            if env.main:
                directory = output / CHECKPOINTS_DIR / f"{step:08d}"
                result.checkpoint = write_checkpoint(directory, weights, robot, tokenizer_file, state, config.dataset)
                plot_losses(log_file, output / LOSS_PLOT_FILE)
            if env.world > 1:
                dist.barrier()
    if bar is not None:
        bar.close()
    result.step = step
    result.peak_memory_bytes = peak_memory_bytes(device)
    if env.main:
        summary = {"step": step, "checkpoint": str(result.checkpoint), "peak_memory_bytes": result.peak_memory_bytes}
        (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        logger.info("done at step %d; peak memory %.2f GiB", step, result.peak_memory_bytes / 2**30)
    return result


def _like(value: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A whole tensor sharded like `parameter` (FSDP) or as it is."""
    if isinstance(parameter, DTensor):
        return distribute_tensor(value, parameter.device_mesh, parameter.placements)
    return value


def _truncate_log(log_file: Path, step: int) -> None:
    """Keep the records up to `step`: a fresh run starts a fresh log, a resumed one drops what it will redo."""
    if not log_file.exists():
        return
    kept = [line for line in log_file.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    log_file.write_text("".join(line + "\n" for line in kept))


def _progress_bar(config: TrainConfig, env: Distributed, step: int) -> Any:
    if not (config.progress and env.main):
        return None
    from tqdm import tqdm

    return tqdm(total=config.steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = parse_args(argv)
        result = train(config)
    except (ConfigError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"checkpoint: {result.checkpoint}  (peak memory {result.peak_memory_bytes / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
