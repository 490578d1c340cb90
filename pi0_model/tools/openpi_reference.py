"""openpi's side of the fidelity check (`openpi_fidelity.py`): openpi's PyTorch model on pi0_model's weights.

Runs in a separate venv with openpi's pinned transformers and its
`transformers_replace` patch, never with pi0_model (the patch changes the
transformers classes pi0_model builds on):

    <venv>/bin/python openpi_reference.py <openpi checkout> <work dir>

The work dir holds `spec.json` (sizes, model type, steps), `model.safetensors`
(written by pi0_model's `save_checkpoint`) and `inputs.safetensors`; the
sampled chunk is written to `openpi_actions.safetensors`.

openpi is used unmodified: `PI0Pytorch` is built as openpi builds it, the
weights are loaded with `safetensors.torch.load_model(strict=True)` as
openpi's policy loader does (so every key name and shape must match), and
actions come from `PI0Pytorch.sample_actions`. Two of openpi's imports need
JAX, which the PyTorch model does not use; they are replaced by stand-ins:
`openpi.models.gemma` (only its `get_config`, answering the check's small
sizes) and `openpi.shared.image_tools` (resizing, not reached with 224 px
inputs). SigLIP's sizes are fixed inside openpi's `PaliGemmaWithExpertModel`;
the check's small vision tower is set on the config as the model is built.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file

SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def install_stand_ins(spec: dict) -> None:
    """Register the JAX-free stand-ins for openpi's `gemma` config module and `image_tools`."""
    import openpi.models
    import openpi.shared

    def get_config(variant: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(**spec["stacks"][variant])

    gemma = types.ModuleType("openpi.models.gemma")
    gemma.get_config = get_config  # type: ignore[attr-defined]
    image_tools = types.ModuleType("openpi.shared.image_tools")
    sys.modules[gemma.__name__] = openpi.models.gemma = gemma  # type: ignore[attr-defined]
    sys.modules[image_tools.__name__] = openpi.shared.image_tools = image_tools  # type: ignore[attr-defined]


def shrink_vision_tower(spec: dict) -> None:
    """Make openpi build the check's small SigLIP: edit the config it hands to PaliGemma."""
    from openpi.models_pytorch import gemma_pytorch

    build = gemma_pytorch.PaliGemmaForConditionalGeneration

    def build_small(config):
        vision = spec["vision"]
        config.vision_config.hidden_size = vision["width"]
        config.vision_config.num_hidden_layers = vision["depth"]
        config.vision_config.intermediate_size = vision["mlp_dim"]
        config.vision_config.num_attention_heads = vision["num_heads"]
        config.vision_config.patch_size = vision["patch_size"]
        config.vision_config.image_size = vision["image_size"]
        config.vision_config.projection_dim = config.text_config.hidden_size
        return build(config=config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = build_small


def main(openpi_root: Path, work: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    sys.path.insert(0, str(openpi_root / "src"))
    install_stand_ins(spec)
    shrink_vision_tower(spec)
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch

    torch.manual_seed(0)  # openpi initializes weights randomly before they are overwritten
    config = types.SimpleNamespace(
        pi05=spec["model_type"] == "pi05",
        paligemma_variant="llm",
        action_expert_variant="expert",
        dtype=spec["dtype"],
        action_dim=spec["action_dim"],
        action_horizon=spec["action_horizon"],
        pytorch_compile_mode=None,
    )
    model = PI0Pytorch(config).eval()
    missing, unexpected = load_model(model, str(work / "model.safetensors"), strict=True)
    print(f"openpi loaded {work / 'model.safetensors'} strictly (missing {missing}, unexpected {unexpected})")

    inputs = load_file(str(work / "inputs.safetensors"))
    observation = types.SimpleNamespace(
        images={slot: inputs["images"][:, index] for index, slot in enumerate(SLOTS)},
        image_masks={slot: inputs["image_masks"][:, index] for index, slot in enumerate(SLOTS)},
        state=inputs["state"],
        tokenized_prompt=inputs["tokens"],
        tokenized_prompt_mask=inputs["token_mask"],
        token_ar_mask=None,
        token_loss_mask=None,
    )
    with torch.no_grad():
        actions = model.sample_actions("cpu", observation, noise=inputs["noise"], num_steps=spec["num_steps"])
    save_file({"actions": actions.to(torch.float32).contiguous()}, str(work / "openpi_actions.safetensors"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} <openpi checkout> <work dir>")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
