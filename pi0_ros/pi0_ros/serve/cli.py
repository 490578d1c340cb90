"""pi0_serve: serve a pi0 checkpoint (or the tiny demo model) for one robot over openpi's websocket protocol.

    pi0_serve --robot pi0_bringup/config/robots/aloha.yaml --checkpoint /ckpt/pi0_aloha --device cuda \\
        --dtype bfloat16 --port 8000
    python -m pi0_ros.serve --robot pi0_bringup/config/robots/aloha.yaml      # tiny model, CPU

The API key comes from --api-key or the PI0_SERVE_API_KEY environment variable
(which keeps it out of the process list). SIGINT or SIGTERM stop the server
cleanly: sessions are closed after their inference in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pi0_client.options import DEFAULT_DEVICE, DEFAULT_DTYPE, DEVICE_FORMS, DTYPE_NAMES, device_problem
from pi0_model.errors import Pi0Error
from pi0_model.policy import Pi0Policy
from pi0_ros.core.robot_description import DescriptionError, RobotDescription, load_robot_description
from pi0_ros.policy.model_adaptations import check_model_adaptations
from pi0_ros.policy.model_loader import load_policy
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.serve.backend import Pi0Backend
from pi0_ros.serve.server import DEFAULT_MAX_REQUEST_BYTES, PolicyServer, ServerConfig

logger = logging.getLogger("pi0_serve")

API_KEY_ENV = "PI0_SERVE_API_KEY"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pi0_serve", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--robot", required=True, type=Path, help="robot description YAML (with an 'openpi' section)")
    parser.add_argument("--checkpoint", default="", help="pi0 checkpoint directory; omitted: the tiny random model")
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default: all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, type=_device, help=f"{DEVICE_FORMS} (default: cpu)")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, choices=DTYPE_NAMES, help="weights dtype")
    parser.add_argument("--num-steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require 'Authorization: Api-Key <key>' (default: ${API_KEY_ENV}; unset: no key)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request accepted (default: {DEFAULT_MAX_REQUEST_BYTES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="tiny-model weights and per-request sampling noise")
    parser.add_argument("--warmup", type=int, default=1, help="inferences before listening (default: 1)")
    parser.add_argument(
        "--added-latency-ms",
        type=float,
        default=0.0,
        help="delay every response by this much (fault injection: a slow network or GPU; default: 0)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    if args.seed < 0 or args.warmup < 0:
        parser.error("--seed and --warmup must be >= 0")
    return args


def _device(value: str) -> str:
    problem = device_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def warm_up(policy: Pi0Policy, description: RobotDescription, count: int) -> None:
    """Black frames at each camera's native size and the home pose: first-call allocations happen now."""
    images, state = description.blank_images(), description.home_state
    for _ in range(count):
        policy.infer(images, state, "warm up")


async def serve(server: PolicyServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # websockets logs every HTTP response and close at INFO; the server logs sessions itself.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        config = ServerConfig(args.host, args.port, args.api_key, args.max_request_bytes)
        description = check_model_adaptations(load_robot_description(args.robot))
        observation_format = description.observation_format()
        settings = ModelSettings(
            checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, num_steps=args.num_steps, seed=args.seed
        )
        policy = load_policy(description, settings)
        warm_up(policy, description, args.warmup)
        backend = Pi0Backend(
            policy, description, args.seed, args.checkpoint or "tiny", added_latency_s=args.added_latency_ms / 1e3
        )
    except (DescriptionError, Pi0Error, ValueError, OSError) as error:
        print(f"pi0_serve: {error}", file=sys.stderr)
        return 2
    logger.info(
        "serving robot %s (%s observations, %s) with %s on %s/%s: %d actions x %d dims per chunk, seed %d",
        description.name,
        observation_format.family,
        ", ".join(f"{name}->{key}" for name, key in observation_format.cameras.items()),
        args.checkpoint or "the tiny random model",
        args.device,
        args.dtype if args.checkpoint else "float32",
        policy.horizon,
        policy.io.action_dim,
        args.seed,
    )
    logger.info(
        "API key %s; requests up to %d bytes",
        "required" if config.api_key else "not required (anyone who can reach the port may use the robot's policy)",
        config.max_request_bytes,
    )
    try:
        asyncio.run(serve(PolicyServer(backend, config)))
    except OSError as error:  # the port is taken, the host is not ours
        print(f"pi0_serve: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    logger.info("stopped")
    return 0
