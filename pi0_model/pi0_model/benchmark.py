"""Latency benchmark of one pi0 / pi0.5 action chunk: prefix encode, denoising, total (p50/p95) and peak memory.

    python -m pi0_model.benchmark --config tiny --device cpu --dtype float32 --cameras 3 --steps 10 --iterations 20
    python -m pi0_model.benchmark --config pi0 --device cuda --dtype bfloat16 --cameras 3 --compile-mode reduce-overhead
    python -m pi0_model.benchmark --checkpoint /path/to/ckpt --device cuda --dtype bfloat16

`--config pi0` or `--config pi05` uses random weights of the real size
(latency does not depend on the values); `--model pi05` makes the tiny model
a pi0.5. Each iteration is one full `Pi0Policy.infer` on random camera frames
(default 480x640, so the resize is included); CUDA timings are synchronized
around each phase. Peak memory is CUDA `max_memory_allocated` on GPU and the
process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence

import numpy as np
import torch

from pi0_client.interface import InferenceTiming, RtcGuidance
from pi0_client.options import (
    COMPILE_MODES,
    DEFAULT_DTYPE,
    DEFAULT_MODEL_TYPE,
    DTYPE_NAMES,
    MODEL_TYPES,
    NO_COMPILE,
    compile_mode_or_none,
)

from .checkpoint import load_model
from .config import CAMERA_SLOTS, Pi0Config
from .errors import Pi0Error
from .normalization import Normalization
from .policy import DTYPES, Pi0Policy, RobotIO
from .tokenizer import find_tokenizer, load_tokenizer, tiny_tokenizer

PHASES = ("preprocess_ms", "prefix_ms", "denoise_ms", "postprocess_ms", "total_ms")
ROBOT_DIM = 14
DEFAULT_COMPILE_MODE = "max-autotune"  # what a bare --compile uses


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pi0-benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        choices=("tiny", *MODEL_TYPES),
        default="tiny",
        help="random-init model: tiny (pi0, or pi0.5 with --model pi05) or a real size",
    )
    parser.add_argument("--model", choices=MODEL_TYPES, default=DEFAULT_MODEL_TYPE, help="model type of --config tiny")
    source.add_argument("--checkpoint", help="checkpoint directory to load instead of random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=DEFAULT_DTYPE)
    parser.add_argument("--cameras", type=int, choices=(1, 2, 3), default=3)
    parser.add_argument("--steps", type=int, default=10, help="Euler denoising steps")
    parser.add_argument("--iterations", type=int, default=20, help="timed chunks")
    parser.add_argument("--warmup", type=int, default=3, help="untimed chunks first (compilation happens here)")
    parser.add_argument("--image-size", default="480x640", help="HxW of the synthetic camera frames")
    parser.add_argument(
        "--compile",
        action="store_true",
        help=f"torch.compile the prefix encoder and the denoising step ({DEFAULT_COMPILE_MODE} unless --compile-mode)",
    )
    parser.add_argument(
        "--compile-mode",
        choices=(NO_COMPILE, *COMPILE_MODES),
        help="torch.compile mode (implies --compile; 'none' runs eager); "
        "'reduce-overhead' and 'max-autotune' capture CUDA graphs on GPU",
    )
    parser.add_argument("--rtc", type=int, metavar="FROZEN", help="real-time chunking with this many frozen steps")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error(f"--image-size must look like 480x640, got {args.image_size!r}")
    args.frame_shape = (height, width, 3)
    # One setting: a compile mode alone compiles, --compile alone uses the default mode.
    setting = args.compile_mode or (DEFAULT_COMPILE_MODE if args.compile else NO_COMPILE)
    args.compile_mode = compile_mode_or_none(setting)
    args.compile = args.compile_mode is not None
    return args


def build_policy(args: argparse.Namespace, io: RobotIO) -> tuple[Pi0Policy, str]:
    compile_mode = args.compile_mode
    if args.checkpoint is None:
        config = Pi0Config.tiny(args.model) if args.config == "tiny" else Pi0Config.published(args.config)
        policy = Pi0Policy.random_init(
            io,
            config,
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            num_steps=args.steps,
            compile_mode=compile_mode,
        )
        name = f"tiny {args.model}" if args.config == "tiny" else args.config
        return policy, f"{name} (random weights)"
    model = load_model(args.checkpoint, args.device, DTYPES[args.dtype])
    try:
        tokenizer = load_tokenizer(find_tokenizer(args.checkpoint), model.config.max_token_len)
    except Pi0Error:
        # Token ids do not change the cost; the benchmark runs without the real tokenizer.
        tokenizer = tiny_tokenizer(model.config.max_token_len, min(512, model.config.vocab_size))
    normalization = Normalization.identity(io.state_dim, io.action_dim)
    policy = Pi0Policy(model, tokenizer, io, normalization, args.steps, args.seed, compile_mode)
    return policy, f"checkpoint {args.checkpoint}"


def percentile_table(timings: list[InferenceTiming]) -> str:
    lines = [f"{'phase':<12} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}"]
    for phase in PHASES:
        values = np.array([getattr(t, phase) for t in timings])
        lines.append(
            f"{phase[:-3]:<12} {np.percentile(values, 50):9.2f} {np.percentile(values, 95):9.2f} {values.mean():9.2f}"
        )
    return "\n".join(lines)


def peak_memory_line(device: torch.device) -> str:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return f"peak memory: {peak:.1f} MB (torch.cuda.max_memory_allocated, weights included)"
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return f"peak memory: {peak_rss_mb:.1f} MB (process peak RSS)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    slots = CAMERA_SLOTS[: args.cameras]
    io = RobotIO(camera_slots={slot: slot for slot in slots}, state_dim=ROBOT_DIM, action_dim=ROBOT_DIM)
    policy, source = build_policy(args, io)
    rng = np.random.default_rng(args.seed)
    frames = {slot: rng.integers(0, 256, args.frame_shape, dtype=np.uint8) for slot in slots}
    state = rng.normal(size=ROBOT_DIM) * 0.1
    instruction = "pick up the red cube and put it in the bowl"

    previous = None
    timings: list[InferenceTiming] = []
    for iteration in range(args.warmup + args.iterations):
        if iteration == args.warmup and policy.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(policy.device)
        rtc = None
        if args.rtc is not None and previous is not None:
            rtc = RtcGuidance(
                previous_actions=previous[args.rtc :], frozen_steps=min(args.rtc, policy.horizon - args.rtc)
            )
        out = policy.infer(frames, state, instruction, rtc=rtc)
        previous = out.actions
        if iteration >= args.warmup:
            timings.append(out.timing)

    parameters = sum(p.numel() for p in policy.model.parameters())
    print(
        f"pi0_model benchmark: {source}, {parameters / 1e6:.1f}M parameters, "
        f"device={policy.device}, dtype={args.dtype}, "
        f"cameras={args.cameras}, frames={args.image_size}, steps={policy.num_steps}, horizon={policy.horizon}, "
        f"compile={args.compile_mode or 'off'}, rtc={args.rtc if args.rtc is not None else 'off'}, "
        f"threads={torch.get_num_threads()}, iterations={args.iterations} (+{args.warmup} warmup)"
    )
    print(percentile_table(timings))
    print(peak_memory_line(policy.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
