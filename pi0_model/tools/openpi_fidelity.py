"""Fidelity check: pi0_model against openpi's PyTorch model (`PI0Pytorch`), pi0 and pi0.5.

    scripts/with_env.sh python pi0_model/tools/openpi_fidelity.py --openpi /path/to/openpi --venv /tmp/openpi-venv

Both models get identical random weights, inputs and noise, on a small
configuration with the real checkpoint names (openpi's 8 attention heads
and 257152-token vocabulary, narrow and shallow stacks, a 2-layer SigLIP);
the script prints the max |action difference| of the sampled chunks and
fails above `--tolerance` (1e-4 by default, fp32).

pi0_model writes the weights with its `save_checkpoint`; openpi loads them
strictly and samples with its own `sample_actions` (`openpi_reference.py`,
run in `--venv`). That venv needs openpi's pinned transformers with openpi's
`transformers_replace` patch copied over it, which pi0_model must not see;
when `--venv` has no Python yet, it is created: pip installs
transformers==4.53.2, numpy<2, safetensors and `--torch` from PyPI (needs
the network), then the patch from the openpi checkout is copied in, as
openpi's README instructs. Nothing is downloaded from a model hub.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pi0_client.options import DTYPE_NAMES, MODEL_TYPES
from pi0_model.checkpoint import save_checkpoint
from pi0_model.config import GemmaConfig, Pi0Config, VisionConfig
from pi0_model.flow_matching import sample_actions
from pi0_model.model import ModelInputs, Pi0Model, build_model

OPENPI_TRANSFORMERS = "transformers==4.53.2"  # openpi's pyproject.toml pin
REFERENCE_SCRIPT = Path(__file__).with_name("openpi_reference.py")
BATCH = 2
# The venv's processes must not see this project's path (pi0_model, its transformers): drop PYTHONPATH.
VENV_ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def small_config(model_type: str) -> Pi0Config:
    """Real names and openpi's fixed sizes (8 heads, 1 KV head, full vocabulary, 224 px); small elsewhere.

    The two stacks have different widths so that a mixed-up projection cannot go unnoticed.
    """
    return Pi0Config.tiny(model_type).replace(
        vision=VisionConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=28, image_size=224),
        llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=2, mlp_dim=96, num_heads=8, num_kv_heads=1, head_dim=16),
        vocab_size=257_152,
    )


@torch.no_grad()
def randomize_(model: Pi0Model, generator: torch.Generator) -> None:
    """Every parameter random, norms and biases included, so that none of them can be skipped unnoticed."""
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2:
            parameter.normal_(0.0, parameter[0].numel() ** -0.5, generator=generator)
        elif "vision_tower" in name and ("layer_norm" in name or "layernorm" in name) and name.endswith("weight"):
            parameter.normal_(1.0, 0.1, generator=generator)  # LayerNorm multiplies by w
        else:
            parameter.normal_(0.0, 0.1, generator=generator)  # biases; Gemma norms multiply by 1 + w


def random_inputs(config: Pi0Config, generator: torch.Generator) -> tuple[ModelInputs, torch.Tensor]:
    """Three camera slots (one masked in the second sample), prompts of different lengths, noise."""
    size, length = config.vision.image_size, config.max_token_len
    image_masks = torch.ones(BATCH, 3, dtype=torch.bool)
    image_masks[1, 2] = False
    lengths = torch.tensor([length // 3, length - 5])
    inputs = ModelInputs(
        images=torch.rand(BATCH, 3, 3, size, size, generator=generator) * 2 - 1,
        image_masks=image_masks,
        tokens=torch.randint(1, config.vocab_size, (BATCH, length), generator=generator),
        token_mask=torch.arange(length)[None] < lengths[:, None],
        state=torch.randn(BATCH, config.state_dim, generator=generator),
    )
    noise = torch.randn(BATCH, config.action_horizon, config.action_dim, generator=generator)
    return inputs, noise


def ensure_venv(venv: Path, openpi: Path, torch_requirement: str) -> Path:
    """The venv's Python, creating the venv with openpi's transformers and patch if it has none."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} ({torch_requirement}, {OPENPI_TRANSFORMERS}, openpi's transformers_replace)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=VENV_ENVIRONMENT)
    requirements = [torch_requirement, OPENPI_TRANSFORMERS, "numpy<2", "safetensors"]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, env=VENV_ENVIRONMENT)
    site = subprocess.run(
        [str(python), "-c", "import transformers, os; print(os.path.dirname(transformers.__file__))"],
        check=True,
        capture_output=True,
        text=True,
        env=VENV_ENVIRONMENT,
    ).stdout.strip()
    shutil.copytree(openpi / "src/openpi/models_pytorch/transformers_replace", site, dirs_exist_ok=True)
    return python


def compare(model_type: str, dtype: str, python: Path, openpi: Path, num_steps: int, seed: int) -> float:
    """Max |pi0_model - openpi| over a sampled batch of chunks."""
    config = small_config(model_type)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(config, "cpu", getattr(torch, dtype))
    randomize_(model, generator)
    inputs, noise = random_inputs(config, generator)
    with tempfile.TemporaryDirectory(prefix=f"fidelity-{model_type}-") as directory:
        work = Path(directory)
        save_checkpoint(model.eval(), work)
        spec = {
            "model_type": model_type,
            "dtype": dtype,
            "num_steps": num_steps,
            "action_dim": config.action_dim,
            "action_horizon": config.action_horizon,
            "vision": dataclasses.asdict(config.vision),
            "stacks": {"llm": dataclasses.asdict(config.llm), "expert": dataclasses.asdict(config.expert)},
        }
        (work / "spec.json").write_text(json.dumps(spec))
        save_file({**vars(inputs), "noise": noise}, str(work / "inputs.safetensors"))
        subprocess.run([str(python), str(REFERENCE_SCRIPT), str(openpi), str(work)], check=True, env=VENV_ENVIRONMENT)
        reference = load_file(str(work / "openpi_actions.safetensors"))["actions"]
    with torch.no_grad():
        ours = sample_actions(model, inputs, noise, num_steps)
    difference = (ours - reference).abs().max().item()
    print(
        f"{model_type} {dtype}: max |action difference| {difference:.3g} "
        f"(actions up to {reference.abs().max().item():.3g}, {num_steps} steps, batch {BATCH})"
    )
    return difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openpi", type=Path, required=True, help="openpi source checkout")
    parser.add_argument("--venv", type=Path, required=True, help="venv for openpi (created if it has no Python)")
    parser.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(MODEL_TYPES))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, default=["float32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="fp32 bound on max |action difference|")
    parser.add_argument(
        "--torch",
        default="torch==2.13.0",
        help="torch requirement for a new venv (openpi pins 2.7.1; 2.13.0 is this project's)",
    )
    args = parser.parse_args()
    if not (args.openpi / "src/openpi/models_pytorch/pi0_pytorch.py").is_file():
        parser.error(f"{args.openpi} is not an openpi checkout (no src/openpi/models_pytorch/pi0_pytorch.py)")
    python = ensure_venv(args.venv, args.openpi, args.torch)
    failures = []
    for model_type in args.models:
        for dtype in args.dtypes:
            difference = compare(model_type, dtype, python, args.openpi, args.steps, args.seed)
            if dtype == "float32" and not difference <= args.tolerance:
                failures.append(f"{model_type}: {difference:.3g} > {args.tolerance:g}")
    if failures:
        sys.exit("fidelity check failed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
