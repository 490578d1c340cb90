"""Transport overhead of remote inference: local Pi0Policy.infer vs the same through pi0_serve on loopback.

    python -m pi0_ros.serve.benchmark --robot pi0_bringup/config/robots/aloha.yaml [--chunks 30]

One process, one model: the server runs on a thread of this process (as in
pi0_serve, inference on its worker thread), the client is RemotePolicy. Local and
remote calls alternate, on the same observations (224x224 images for every
policy camera: three for ALOHA) and the same per-request noise, so both do the
same model work; the difference of their medians is what the network path costs
per chunk (target: under 5 ms). "transport" is measured per response as well:
the round trip minus the server's own time (server_timing).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi0_client.msgpack_numpy import packb
from pi0_client.options import DEFAULT_DEVICE, DEVICE_FORMS, device_problem
from pi0_client.remote_policy import RemotePolicy
from pi0_model.errors import Pi0Error
from pi0_ros.core.robot_description import DescriptionError, load_robot_description
from pi0_ros.policy.model_adaptations import check_model_adaptations
from pi0_ros.policy.model_loader import load_policy
from pi0_ros.policy.model_settings import ModelSettings
from pi0_ros.serve.backend import Pi0Backend, request_noise
from pi0_ros.serve.server import ServerConfig, ServerThread

IMAGE_SIZE = 224
TARGET_OVERHEAD_MS = 5.0


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(float(np.percentile(values, 50)), float(np.percentile(values, 95)))


@dataclass(frozen=True)
class BenchmarkResult:
    cameras: int
    request_bytes: int
    local_ms: Percentiles
    remote_ms: Percentiles
    server_ms: Percentiles  # per response: the server's time (decoding, queue, inference)
    transport_ms: Percentiles  # per response: round trip minus the server's time

    @property
    def overhead_ms(self) -> float:
        return self.remote_ms.p50 - self.local_ms.p50


def run_benchmark(robot: Path, chunks: int, warmup: int, device: str, checkpoint: str, seed: int) -> BenchmarkResult:
    description = check_model_adaptations(load_robot_description(robot))
    observation_format = description.observation_format()
    policy = load_policy(description, ModelSettings(checkpoint=checkpoint, device=device, seed=seed))
    rng = np.random.default_rng(seed)
    images = {
        c.name: rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for c in description.policy_cameras
    }
    state = description.home_state
    prompt = "fold the towel"
    noise_shape = (policy.horizon, policy.config.action_dim)
    backend = Pi0Backend(policy, description, seed, checkpoint or "tiny")
    local, remote, server_side, transport = [], [], [], []
    with (
        ServerThread(backend, ServerConfig(host="127.0.0.1", port=0)) as server,
        RemotePolicy.connect(server.url, observation_format, action_dim=len(description.policy.actions)) as client,
    ):
        for index in range(warmup + chunks):
            start = time.perf_counter()
            policy.infer(images, state, prompt, noise=request_noise(seed, index, noise_shape))
            local_ms = (time.perf_counter() - start) * 1e3
            result = client.infer(images, state, prompt)  # the server draws the same noise for request `index`
            if index >= warmup:
                local.append(local_ms)
                remote.append(result.timing.total_ms)
                server_side.append(result.timing.total_ms - result.timing.transport_ms)
                transport.append(result.timing.transport_ms)
    return BenchmarkResult(
        cameras=len(images),
        request_bytes=len(packb(observation_format.encode(images, state, prompt))),
        local_ms=Percentiles.of(local),
        remote_ms=Percentiles.of(remote),
        server_ms=Percentiles.of(server_side),
        transport_ms=Percentiles.of(transport),
    )


def report(result: BenchmarkResult, robot: str, chunks: int, device: str) -> str:
    verdict = "within" if result.overhead_ms < TARGET_OVERHEAD_MS else "OVER"
    return "\n".join(
        [
            f"remote inference on loopback: {robot}, {result.cameras} cameras {IMAGE_SIZE}x{IMAGE_SIZE}, "
            f"{chunks} chunks each, {device}, request {result.request_bytes / 1e6:.2f} MB",
            f"{'':28}{'p50 ms':>9}{'p95 ms':>9}",
            f"{'local Pi0Policy.infer':28}{result.local_ms.p50:9.2f}{result.local_ms.p95:9.2f}",
            f"{'through pi0_serve':28}{result.remote_ms.p50:9.2f}{result.remote_ms.p95:9.2f}",
            f"{'  of which in the server':28}{result.server_ms.p50:9.2f}{result.server_ms.p95:9.2f}",
            f"{'  of which transport':28}{result.transport_ms.p50:9.2f}{result.transport_ms.p95:9.2f}"
            "   (encode, loopback, decode)",
            f"{'overhead (remote - local)':28}{result.overhead_ms:9.2f}"
            f"{'':9}   {verdict} the {TARGET_OVERHEAD_MS:.0f} ms target",
        ]
    )


def _device(value: str) -> str:
    problem = device_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pi0_ros.serve.benchmark", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--robot", required=True, type=Path, help="robot description YAML (with an 'openpi' section)")
    parser.add_argument("--chunks", type=int, default=30, help="measured chunks of each kind (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured chunks first (default: 3)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, type=_device, help=DEVICE_FORMS)
    parser.add_argument("--checkpoint", default="", help="pi0 checkpoint directory; omitted: the tiny random model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.warmup < 0 or args.seed < 0:
        parser.error("--chunks must be >= 1, --warmup and --seed >= 0")
    try:
        result = run_benchmark(args.robot, args.chunks, args.warmup, args.device, args.checkpoint, args.seed)
    except (DescriptionError, Pi0Error, OSError) as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    print(report(result, args.robot.stem, args.chunks, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
