"""LoRA adapters (peft) on pi0's Gemma stacks, freezing, and the merged weights a checkpoint stores.

As in openpi's `gemma_2b_lora` / `gemma_300m_lora` variants, adapters go on
every attention projection (q, k, v, o) and every MLP projection (gate, up,
down) of the chosen stacks, with alpha equal to the rank; the rest of a stack
that has adapters (embedding, norms, base weights) is frozen, the other parts
train unless `freeze` names them (openpi's LoRA freeze filter also leaves the
vision tower and the projections trainable). Unlike openpi, whose adapters
start from small random values in both factors, peft starts B at zero, so
training starts exactly at the loaded model.

peft is imported only when LoRA is asked for; checkpoints store merged weights
(W + alpha/r * B A) under the plain model's key names, so the policy node loads
them like any other checkpoint and never needs peft.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .model import Pi0Model
from .train_config import FREEZABLE_PARTS

ADAPTER = "default"
_PROJECTIONS = r"^layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"
_LORA_MARKERS = (".lora_A.", ".lora_B.")


def lora_stacks(target: str) -> tuple[str, ...]:
    return {"none": (), "backbone": ("backbone",), "expert": ("expert",), "both": ("backbone", "expert")}[target]


def add_lora(model: Pi0Model, target: str, rank_backbone: int, rank_expert: int) -> Pi0Model:
    """Inject adapters in place (every module keeps its class) and return the model.

    Each stack is adapted on its own: peft given the whole model would look for transformers'
    checkpoint-conversion metadata that only a transformers PreTrainedModel root has.
    """
    if not lora_stacks(target):
        return model
    from peft import LoraConfig, inject_adapter_in_model

    backbone, expert = model.paligemma_with_expert.stacks
    for stack in lora_stacks(target):
        rank = rank_backbone if stack == "backbone" else rank_expert
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=_PROJECTIONS, lora_dropout=0.0, bias="none")
        inject_adapter_in_model(config, backbone if stack == "backbone" else expert, adapter_name=ADAPTER)
    return model


def is_adapter(name: str) -> bool:
    return any(marker in name for marker in _LORA_MARKERS)


def set_trainable(model: nn.Module, target: str, freeze: tuple[str, ...]) -> list[str]:
    """requires_grad for every parameter -> the names of the trainable ones.

    Frozen: the non-adapter weights of the stacks with adapters, and the `freeze` parts (adapters excepted).
    """
    frozen_prefixes = [prefix for part in freeze for prefix in FREEZABLE_PARTS[part]]
    frozen_prefixes += [prefix for stack in lora_stacks(target) for prefix in FREEZABLE_PARTS[stack]]
    trainable = []
    for name, parameter in model.named_parameters():
        train = is_adapter(name) or not any(name.startswith(prefix) for prefix in frozen_prefixes)
        parameter.requires_grad_(train)
        if train:
            trainable.append(name)
    return trainable


def merged_state_dict(state: dict[str, torch.Tensor], scalings: dict[str, float]) -> dict[str, torch.Tensor]:
    """A state dict of an adapted model -> the plain model's, each adapted weight W + scaling * B @ A.

    `scalings`: module name -> alpha / r (from `lora_scalings`). Without adapters the dict is returned as is.
    """
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if is_adapter(key):
            continue
        match = re.fullmatch(r"(.*)\.base_layer\.(weight|bias)", key)
        if match is None:
            merged[key] = value
            continue
        module, kind = match.groups()
        if kind == "weight":
            a = state[f"{module}.lora_A.{ADAPTER}.weight"].to(torch.float32)
            b = state[f"{module}.lora_B.{ADAPTER}.weight"].to(torch.float32)
            value = (value.to(torch.float32) + scalings[module] * (b @ a)).to(value.dtype)
        merged[f"{module}.{kind}"] = value
    return merged


def lora_scalings(model: nn.Module) -> dict[str, float]:
    """Module name -> alpha / r of every adapted layer of `model`."""
    scalings = {}
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and ADAPTER in scaling:
            scalings[name] = float(scaling[ADAPTER])
    return scalings
