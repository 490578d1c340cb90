"""Reference environments with LeRobot's real dataset loaders, built once and kept in a cache directory.

LeRobot pins what this project cannot share (torch < 2.11 against our 2.13;
lerobot 0.3.x needs ``datasets`` 3.x), so each release gets a virtual
environment of its own, outside the repository:

    $PI0_LEROBOT_ENVS (default ~/.cache/pi0_ros/lerobot-envs)/<name>

built with this interpreter's ``venv`` and ``pip`` from PyPI, and reused while
its pins are unchanged (``pins.txt`` in it). A build goes to ``<name>.partial``
first and is renamed when complete, so an interrupted one is never used. Both
pin torch 2.7.1 (allowed by both releases; PyPI's Linux wheel brings the CUDA
libraries, about 3 GB), so pip's wheel cache downloads it once. Each
environment takes about 6.5 GB and 5 to 7 minutes to build on a 2-core
machine; a test that cannot build one (no network) is skipped with pip's
message.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

LOADER_SCRIPT = Path(__file__).resolve().parent / "lerobot_load.py"
_TORCH = ("torch==2.7.1", "torchvision==0.22.1", "torchcodec>=0.4,<0.6")


@dataclass(frozen=True)
class ReferenceEnv:
    name: str
    pins: tuple[str, ...]


# LeRobotDataset v3.0: the release line LeRobot >= 0.4 reads.
LEROBOT_V30 = ReferenceEnv("lerobot-0.4.4", ("lerobot==0.4.4", *_TORCH))
# LeRobotDataset v2.1 as openpi's training stack reads it: lerobot 0.3.x with datasets 3.x.
LEROBOT_V21 = ReferenceEnv("lerobot-0.3.3", ("lerobot==0.3.3", "datasets>=3,<4", *_TORCH))

BUILD_TIMEOUT_S = 1800
# Opt-in (`make test-lerobot`): the first run downloads and installs about 13 GB, which a CI run on a
# fresh machine should not pay on every commit.
RUN_VARIABLE = "PI0_LEROBOT_CHECK"


def envs_dir() -> Path:
    return Path(os.environ.get("PI0_LEROBOT_ENVS", Path.home() / ".cache" / "pi0_ros" / "lerobot-envs"))


def python_of(env: ReferenceEnv) -> Path:
    """The environment's interpreter, built first when missing or stale; skips the test when it cannot be."""
    if os.environ.get(RUN_VARIABLE) != "1":
        pytest.skip(f"LeRobot's own loaders run with {RUN_VARIABLE}=1 (make test-lerobot; builds ~13 GB once)")
    directory = envs_dir() / env.name
    python = directory / "bin" / "python"
    pins = "\n".join(env.pins) + "\n"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, other runs wait for it
        if python.is_file() and (directory / "pins.txt").is_file() and (directory / "pins.txt").read_text() == pins:
            return python
        partial = directory.with_name(f"{env.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True, text=True)
            subprocess.run(
                [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", *env.pins],
                check=True,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            output = (getattr(exc, "stderr", "") or "").strip().splitlines()
            why = output[-1] if output else str(exc)
            pytest.skip(f"cannot build the {env.name} environment ({' '.join(env.pins)}): {why}")
        (partial / "pins.txt").write_text(pins)
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    return python


def load_with_lerobot(env: ReferenceEnv, dataset: Path, out: Path) -> None:
    """Runs LeRobot's loader over every item of `dataset` in the environment; its dump goes to `out` (.npz)."""
    python = python_of(env)
    done = subprocess.run(
        [str(python), str(LOADER_SCRIPT), str(dataset), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
    )
    assert done.returncode == 0, f"LeRobot ({env.name}) could not load {dataset}:\n{done.stderr[-4000:]}"
