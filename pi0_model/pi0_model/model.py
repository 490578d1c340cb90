"""The pi0 and pi0.5 networks: PaliGemma (SigLIP + Gemma 2B) and a Gemma action expert attending jointly.

Sequence layout (B = batch, N = camera slots given, T = tokens per image,
Lt = prompt tokens, H = action horizon):

    prefix = [image_0 (T) .. image_{N-1} (T), prompt (Lt)]   -> PaliGemma language model
    suffix = [state (1), action_0 .. action_{H-1}]           -> action expert (pi0)
    suffix = [action_0 .. action_{H-1}]                      -> action expert (pi0.5)

pi0 fuses the flow time into each action token with an MLP. pi0.5 has its
state (if any) in the prompt and conditions the expert on the time instead:
the time embedding goes through `time_mlp_in`/`time_mlp_out`, and every
expert norm is an `AdaptiveRMSNorm` whose dense layer turns that condition
into a scale, a shift and a residual gate.

In every layer both stacks project their own tokens to Q/K/V, the projections
are concatenated into one sequence for a single attention (shared RoPE,
block mask from `attention.py`), and each stack applies its own output
projection, norms and MLP to its own tokens. Because the prefix never attends
to the suffix, the prefix's keys/values can be computed once (`encode_prefix`)
and reused by every denoising step (`velocity`), which then runs only the
expert over the suffix tokens.

Module names mirror transformers' PaliGemma/Gemma nesting so that
`state_dict()` uses the LeRobot / openpi PyTorch checkpoint key layout
(see `checkpoint.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GemmaConfig as HFGemmaConfig
from transformers import PaliGemmaConfig, SiglipVisionConfig
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, GemmaRMSNorm
from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector
from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings, SiglipVisionModel

from pi0_client.options import DTYPE_NAMES

from . import attention
from .config import GemmaConfig, Pi0Config


@dataclass
class ModelInputs:
    """A batch in model space (already resized, scaled, tokenized, normalized and padded)."""

    images: torch.Tensor  # [B, N, 3, S, S] float32 in [-1, 1]; N <= 3 slots, in slot order
    image_masks: torch.Tensor  # [B, N] bool; False = slot has no real image
    tokens: torch.Tensor  # [B, Lt] int64
    token_mask: torch.Tensor  # [B, Lt] bool; False = padding
    state: torch.Tensor  # [B, state_dim] float32


@dataclass
class Prefix:
    """Embedded prefix tokens."""

    embeddings: torch.Tensor  # [B, Lp, llm.width], compute dtype
    valid: torch.Tensor  # [B, Lp] bool


@dataclass
class Suffix:
    """Embedded suffix tokens and the expert's time condition."""

    embeddings: torch.Tensor  # [B, Ls, expert.width], compute dtype; Ls = config.suffix_len
    condition: torch.Tensor | None  # [B, expert.width] fp32 adaRMS condition (pi0.5); None for pi0


@dataclass
class KVCache:
    """Per-layer keys/values of the prefix, computed once per observation."""

    keys: list[torch.Tensor]  # depth x [B, kv_heads, Lp, head_dim], RoPE applied
    values: list[torch.Tensor]  # depth x [B, kv_heads, Lp, head_dim]
    valid: torch.Tensor  # [B, Lp] bool


@dataclass
class SuffixContext:
    """Everything about the suffix that does not change between denoising steps."""

    cos: torch.Tensor  # [B, 1, Ls, head_dim]
    sin: torch.Tensor  # [B, 1, Ls, head_dim]
    bias: torch.Tensor  # [B, 1, Ls, Lp + Ls]


def hf_configs(config: Pi0Config) -> tuple[PaliGemmaConfig, HFGemmaConfig]:
    """transformers configs for the building blocks (PaliGemma backbone, Gemma expert)."""
    vision = SiglipVisionConfig(
        hidden_size=config.vision.width,
        intermediate_size=config.vision.mlp_dim,
        num_hidden_layers=config.vision.depth,
        num_attention_heads=config.vision.num_heads,
        patch_size=config.vision.patch_size,
        image_size=config.vision.image_size,
        layer_norm_eps=config.vision.layer_norm_eps,
        hidden_act="gelu_pytorch_tanh",
        vision_use_head=False,
    )
    vision._attn_implementation = "sdpa"
    backbone = PaliGemmaConfig(
        vision_config=vision.to_dict(),
        text_config=_hf_gemma_config(config.llm, config).to_dict(),
        projection_dim=config.llm.width,
    )
    cast(SiglipVisionConfig, backbone.vision_config)._attn_implementation = "sdpa"
    return backbone, _hf_gemma_config(config.expert, config)


def _hf_gemma_config(stack: GemmaConfig, config: Pi0Config) -> HFGemmaConfig:
    return HFGemmaConfig(
        hidden_size=stack.width,
        intermediate_size=stack.mlp_dim,
        num_hidden_layers=stack.depth,
        num_attention_heads=stack.num_heads,
        num_key_value_heads=stack.num_kv_heads,
        head_dim=stack.head_dim,
        vocab_size=config.vocab_size,
        hidden_act="gelu_pytorch_tanh",
        rms_norm_eps=config.rms_norm_eps,
    )


class VisionTower(nn.Module):
    """SigLIP without pooling head. Holds transformers' model as `vision_model` (checkpoint key layout)."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.vision_model = SiglipVisionModel(config)
        self.gradient_checkpointing = False  # recompute each layer in the backward pass (training only)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, S, S] float32 in [-1, 1] -> [N, T, width]."""
        model = self.vision_model
        # Patch and position embeddings may stay fp32 while the encoder runs in bf16.
        hidden = model.embeddings(pixels)
        hidden = hidden.to(model.post_layernorm.weight.dtype)
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in model.encoder.layers:
            if recompute:
                hidden = checkpoint(layer, hidden, None, use_reentrant=False)
            else:
                hidden = layer(hidden, attention_mask=None)
        return model.post_layernorm(hidden)


class AdaptiveRMSNorm(nn.Module):
    """Gemma's RMSNorm modulated by a condition (pi0.5's flow time), plus a gate for the residual it feeds.

    A dense layer maps the condition to (scale, shift, gate); the output is
    norm(x) * (1 + scale) + shift, where Gemma's plain norm has a learned
    weight in place of the scale and no shift, and the residual becomes
    x + y * gate. It replaces every norm of pi0.5's action expert (`dense.*`
    in the checkpoint, no `weight`); the stack's final norm drops the gate.
    As in Gemma, the statistics and the modulation are computed in fp32.
    """

    def __init__(self, width: int, condition_width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(condition_width, 3 * width)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, W], condition [B, Wc] -> (normed [B, L, W], gate [B, 1, W]), both in x's dtype."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(condition)[:, None].float().chunk(3, dim=-1)  # each [B, 1, W]
        return (normed * (1.0 + scale) + shift).to(x.dtype), gate.to(x.dtype)


def modulated_norm(
    norm: nn.Module, x: torch.Tensor, condition: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a plain Gemma norm or an `AdaptiveRMSNorm` -> (normed x, residual gate or None)."""
    if isinstance(norm, AdaptiveRMSNorm):
        if condition is None:
            raise ValueError("an adaptive (pi0.5) norm needs the time condition")
        return norm(x, condition)
    return norm(x), None


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


class GemmaStack(nn.Module):
    """Decoder layers + final norm (+ token embedding for the language model).

    With `condition_width`, every norm is an `AdaptiveRMSNorm` (pi0.5's action expert).
    """

    def __init__(self, config: HFGemmaConfig, with_embedding: bool, condition_width: int | None = None):
        super().__init__()
        if with_embedding:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GemmaDecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm: nn.Module = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if condition_width is not None:
            width, eps = config.hidden_size, config.rms_norm_eps
            for layer in self.layers:
                layer.input_layernorm = AdaptiveRMSNorm(width, condition_width, eps)
                layer.post_attention_layernorm = AdaptiveRMSNorm(width, condition_width, eps)
            self.norm = AdaptiveRMSNorm(width, condition_width, eps)


class PaliGemmaBody(nn.Module):
    def __init__(self, config: PaliGemmaConfig):
        super().__init__()
        # PaliGemmaConfig builds these sub-configs from the dicts it was given (typed loosely upstream).
        self.vision_tower = VisionTower(cast(SiglipVisionConfig, config.vision_config))
        self.multi_modal_projector = PaliGemmaMultiModalProjector(config)
        self.language_model = GemmaStack(cast(HFGemmaConfig, config.text_config), with_embedding=True)


class PaliGemma(nn.Module):
    """Only a namespace level: transformers nests the backbone as `paligemma.model`."""

    def __init__(self, config: PaliGemmaConfig):
        super().__init__()
        self.model = PaliGemmaBody(config)


class GemmaExpert(nn.Module):
    """Only a namespace level: transformers nests a causal LM's stack as `model`."""

    def __init__(self, config: HFGemmaConfig, condition_width: int | None):
        super().__init__()
        self.model = GemmaStack(config, with_embedding=False, condition_width=condition_width)


class PaliGemmaWithExpert(nn.Module):
    """The two Gemma stacks and their layer-by-layer joint attention.

    `adaptive_expert` makes the expert's norms adaptive (pi0.5), conditioned on a vector of the expert's width.
    """

    def __init__(self, backbone: PaliGemmaConfig, expert: HFGemmaConfig, adaptive_expert: bool = False):
        super().__init__()
        self.paligemma = PaliGemma(backbone)
        self.gemma_expert = GemmaExpert(expert, expert.hidden_size if adaptive_expert else None)
        self.gradient_checkpointing = False  # recompute each layer in the backward pass (training only)

    @property
    def stacks(self) -> tuple[GemmaStack, GemmaStack]:
        return self.paligemma.model.language_model, self.gemma_expert.model

    def forward(
        self,
        hidden: tuple[torch.Tensor | None, torch.Tensor | None],
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor,
        cache: KVCache | None = None,
        build_cache: bool = False,
        condition: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor | None], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run both stacks over (prefix, suffix) hidden states; either may be None.

        hidden: ([B, Lp, Wp] | None, [B, Ls, We] | None) in compute dtype.
        cos/sin: [B, 1, L, head_dim] for the L = Lp + Ls tokens given here.
        bias: [B, 1, L, Lc + L] where Lc is the cached prefix length (0 without cache).
        condition: [B, We] fp32 for an adaptive expert (pi0.5), else None.
        Returns the final-normed outputs in the same layout, and, when
        `build_cache` is set, each layer's (keys, values) of the tokens given.
        """
        active = [
            (index, stack) for index, (stack, h) in enumerate(zip(self.stacks, hidden, strict=True)) if h is not None
        ]
        streams = [h for h in hidden if h is not None]
        lengths = [h.shape[1] for h in streams]
        conditions = [condition if index == 1 else None for index, _ in active]  # only the expert is conditioned
        new_cache: list[tuple[torch.Tensor, torch.Tensor]] = []
        recompute = self.gradient_checkpointing and torch.is_grad_enabled() and cache is None and not build_cache
        for depth in range(len(self.stacks[0].layers)):
            layers = [cast(GemmaDecoderLayer, stack.layers[depth]) for _, stack in active]

            def layer_step(
                *inputs: torch.Tensor, layers: list[GemmaDecoderLayer] = layers, depth: int = depth
            ) -> list[torch.Tensor]:
                q, k, v, gates = _joint_qkv(layers, list(inputs), conditions)
                q, k = attention.apply_rope(q, cos, sin), attention.apply_rope(k, cos, sin)
                if build_cache:
                    new_cache.append((k, v))
                if cache is not None:
                    k = torch.cat([cache.keys[depth], k], dim=2)
                    v = torch.cat([cache.values[depth], v], dim=2)
                mixed = attention.attend(q, k, v, bias)  # [B, L, heads * head_dim]
                return [
                    _finish_layer(layer, h, part, gate, cond)
                    for layer, h, part, gate, cond in zip(
                        layers, inputs, mixed.split(lengths, dim=1), gates, conditions, strict=True
                    )
                ]

            if recompute:  # training with gradient checkpointing: keep only each layer's inputs
                streams = checkpoint(layer_step, *streams, use_reentrant=False)
            else:
                streams = layer_step(*streams)
        outputs: list[torch.Tensor | None] = [None, None]
        for (index, stack), h, cond in zip(active, streams, conditions, strict=True):
            outputs[index], _ = modulated_norm(stack.norm, h, cond)  # the final norm's gate has no residual
        return outputs, new_cache


def _joint_qkv(
    layers: list[GemmaDecoderLayer], streams: list[torch.Tensor], conditions: list[torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """Each stack projects its own tokens; the results are concatenated along the sequence.

    -> q [B, heads, L, D], k and v [B, kv_heads, L, D] with L = sum of stream lengths,
    and each stream's attention-residual gate (None for plain norms).
    """
    queries, keys, values, gates = [], [], [], []
    for layer, h, condition in zip(layers, streams, conditions, strict=True):
        attn = layer.self_attn
        x, gate = modulated_norm(layer.input_layernorm, h, condition)
        batch, length, _ = x.shape
        queries.append(attn.q_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2))
        keys.append(attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2))
        values.append(attn.v_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2))
        gates.append(gate)
    return torch.cat(queries, dim=2), torch.cat(keys, dim=2), torch.cat(values, dim=2), gates


def _finish_layer(
    layer: GemmaDecoderLayer,
    h: torch.Tensor,
    attended: torch.Tensor,
    attention_gate: torch.Tensor | None,
    condition: torch.Tensor | None,
) -> torch.Tensor:
    """Output projection + (gated) residual, then the stack's own MLP + (gated) residual."""
    h = gated_residual(h, layer.self_attn.o_proj(attended), attention_gate)
    x, mlp_gate = modulated_norm(layer.post_attention_layernorm, h, condition)
    return gated_residual(h, layer.mlp(x), mlp_gate)


def time_embedding(time: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sin/cos embedding of flow time t in [0, 1]: [B] -> [B, width] float32.

    Periods are geometric from min_period to max_period, so t is resolved
    finely. Computed in float64 because 2*pi/min_period ~ 1571 rad per unit t.
    """
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = time.to(torch.float64)[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(torch.float32)


class Pi0Model(nn.Module):
    """pi0 or pi0.5 (`config.model_type`): prefix encoder, action expert, and the state/action/time projections."""

    def __init__(self, config: Pi0Config):
        super().__init__()
        self.config = config
        backbone, expert = hf_configs(config)
        self.paligemma_with_expert = PaliGemmaWithExpert(backbone, expert, adaptive_expert=config.is_pi05)
        width = config.expert.width
        # Registration order is initialization order: pi0's stays as it was, so a seed gives the same tiny model.
        if not config.is_pi05:
            self.state_proj = nn.Linear(config.state_dim, width)
        self.action_in_proj = nn.Linear(config.action_dim, width)
        self.action_out_proj = nn.Linear(width, config.action_dim)
        if config.is_pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the transformer matmuls (the norms and projections may stay fp32)."""
        layer = cast(GemmaDecoderLayer, self.paligemma_with_expert.stacks[0].layers[0])
        return layer.self_attn.q_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.action_in_proj.weight.device

    # -- prefix ---------------------------------------------------------------

    def embed_prefix(self, inputs: ModelInputs) -> Prefix:
        """Images -> SigLIP -> projector; prompt -> scaled token embeddings."""
        backbone = self.paligemma_with_expert.paligemma.model
        batch = inputs.images.shape[0]
        pixels = inputs.images.flatten(0, 1).to(torch.float32)  # [B * N, 3, S, S]
        image_tokens = backbone.multi_modal_projector(backbone.vision_tower(pixels))  # [B * N, T, W]
        image_tokens = image_tokens.reshape(batch, -1, image_tokens.shape[-1])  # [B, N * T, W]
        image_valid = inputs.image_masks.to(torch.bool).repeat_interleave(
            self.config.vision.tokens_per_image, dim=1
        )  # [B, N * T]

        embed = backbone.language_model.embed_tokens
        # Gemma scales token embeddings by sqrt(width); image tokens are not scaled.
        text = embed(inputs.tokens) * math.sqrt(embed.embedding_dim)  # [B, Lt, W]
        dtype = self.compute_dtype
        embeddings = torch.cat([image_tokens.to(dtype), text.to(dtype)], dim=1)
        valid = torch.cat([image_valid, inputs.token_mask.to(torch.bool)], dim=1)
        return Prefix(embeddings, valid)

    def encode_prefix(self, prefix: Prefix) -> KVCache:
        """Run the language model over the prefix once and keep its keys/values."""
        blocks = torch.full_like(prefix.valid, attention.PREFIX_BLOCK, dtype=torch.long)
        mask = attention.block_attention_mask(blocks, prefix.valid, blocks, prefix.valid)
        bias = attention.attention_bias(mask, self.compute_dtype)
        cos, sin = self._rope(attention.positions_from_valid(prefix.valid))
        _, layers = self.paligemma_with_expert((prefix.embeddings, None), cos, sin, bias, build_cache=True)
        return KVCache(keys=[k for k, _ in layers], values=[v for _, v in layers], valid=prefix.valid)

    # -- suffix ---------------------------------------------------------------

    def embed_suffix(self, state: torch.Tensor, noisy_actions: torch.Tensor, time: torch.Tensor) -> Suffix:
        """state [B, Ds], noisy actions x_t [B, H, Da], time [B] -> suffix tokens [B, Ls, We] and time condition.

        pi0: [state token, MLP(action, time) per action]. pi0.5: the projected
        actions alone (`state` is unused: it is in the prompt, if anywhere) and
        the condition silu(time_mlp_out(silu(time_mlp_in(time embedding)))).
        """
        actions = self.action_in_proj(noisy_actions.to(self.action_in_proj.weight.dtype))  # [B, H, We]
        width = self.config.expert.width
        times = time_embedding(time, width, self.config.time_min_period, self.config.time_max_period)  # [B, We]
        if self.config.is_pi05:
            hidden = F.silu(self.time_mlp_in(times.to(self.time_mlp_in.weight.dtype)))
            condition = F.silu(self.time_mlp_out(hidden)).to(torch.float32)  # [B, We]
            return Suffix(actions.to(self.compute_dtype), condition)
        state_token = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]  # [B, 1, We]
        times = times.to(actions.dtype)[:, None].expand_as(actions)  # [B, H, We]
        fused = self.action_time_mlp_in(torch.cat([actions, times], dim=-1))
        action_tokens = self.action_time_mlp_out(F.silu(fused))  # [B, H, We]
        return Suffix(torch.cat([state_token, action_tokens], dim=1).to(self.compute_dtype), None)

    def suffix_blocks(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Block ids of this model's suffix -> [B, Ls] (see `attention.suffix_block_ids`)."""
        return attention.suffix_block_ids(
            batch_size, self.config.action_horizon, device, state_token=not self.config.is_pi05
        )

    def suffix_context(self, prefix_valid: torch.Tensor) -> SuffixContext:
        """Masks and RoPE tables for the suffix, attending to a cached prefix.

        Suffix positions continue after the valid prefix tokens (openpi: the prefix's valid count).
        """
        batch = prefix_valid.shape[0]
        suffix_blocks = self.suffix_blocks(batch, prefix_valid.device)
        suffix_valid = torch.ones_like(suffix_blocks, dtype=torch.bool)
        key_blocks = torch.cat(
            [torch.full_like(prefix_valid, attention.PREFIX_BLOCK, dtype=torch.long), suffix_blocks], 1
        )
        key_valid = torch.cat([prefix_valid, suffix_valid], dim=1)
        mask = attention.block_attention_mask(suffix_blocks, suffix_valid, key_blocks, key_valid)
        offset = prefix_valid.sum(dim=1, keepdim=True)
        cos, sin = self._rope(attention.positions_from_valid(suffix_valid, offset))
        return SuffixContext(cos, sin, attention.attention_bias(mask, self.compute_dtype))

    def velocity(
        self,
        cache: KVCache,
        context: SuffixContext,
        state: torch.Tensor,
        noisy_actions: torch.Tensor,
        time: torch.Tensor,
    ) -> torch.Tensor:
        """Predicted flow v = d x_t / d t for one denoising step, reusing the prefix cache -> [B, H, Da] fp32."""
        suffix = self.embed_suffix(state, noisy_actions, time)
        (_, out), _ = self.paligemma_with_expert(
            (None, suffix.embeddings), context.cos, context.sin, context.bias, cache=cache, condition=suffix.condition
        )
        return self._project_actions(out)

    def velocity_joint(
        self, prefix: Prefix, state: torch.Tensor, noisy_actions: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """Same as `velocity` but runs prefix and suffix together, with no cache (training path)."""
        suffix = self.embed_suffix(state, noisy_actions, time)
        suffix_blocks = self.suffix_blocks(suffix.embeddings.shape[0], suffix.embeddings.device)
        blocks = torch.cat([torch.full_like(prefix.valid, attention.PREFIX_BLOCK, dtype=torch.long), suffix_blocks], 1)
        valid = torch.cat([prefix.valid, torch.ones_like(suffix_blocks, dtype=torch.bool)], dim=1)
        mask = attention.block_attention_mask(blocks, valid, blocks, valid)
        cos, sin = self._rope(attention.positions_from_valid(valid))
        bias = attention.attention_bias(mask, self.compute_dtype)
        (_, out), _ = self.paligemma_with_expert(
            (prefix.embeddings, suffix.embeddings), cos, sin, bias, condition=suffix.condition
        )
        return self._project_actions(out)

    def _project_actions(self, suffix_out: torch.Tensor) -> torch.Tensor:
        actions = suffix_out[:, -self.config.action_horizon :]  # the action tokens (pi0: after the state token)
        return self.action_out_proj(actions.to(self.action_out_proj.weight.dtype)).to(torch.float32)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attention.rope_tables(positions, self.config.llm.head_dim, self.config.rope_theta, self.compute_dtype)


# -- construction, precision and initialization ---------------------------------

# Parameters that stay fp32 in a bf16 model, as in openpi's PyTorch port:
# norms (their statistics are computed in fp32 anyway; pi0.5's adaptive norms
# with their dense layers, which openpi selects by the same names) and the
# SigLIP patch and position embeddings; everything outside the two
# transformers (state/action projections, time MLPs) stays fp32 too.
_FP32_MARKERS = (
    "vision_tower.vision_model.embeddings.",
    "input_layernorm",
    "post_attention_layernorm",
    ".norm.",
)


def keeps_fp32(parameter_name: str) -> bool:
    """Whether a parameter stays fp32 when the model runs in bf16."""
    if not parameter_name.startswith("paligemma_with_expert."):
        return True
    return any(marker in parameter_name for marker in _FP32_MARKERS)


def set_precision(model: Pi0Model, dtype: torch.dtype) -> Pi0Model:
    """Cast to fp32 or bf16, keeping the `keeps_fp32` parameters in fp32."""
    if dtype not in tuple(getattr(torch, name) for name in DTYPE_NAMES):
        raise ValueError(f"supported dtypes are {' and '.join(DTYPE_NAMES)}, got {dtype}")
    model.to(dtype)
    for name, parameter in model.named_parameters():
        if keeps_fp32(name):
            parameter.data = parameter.data.to(torch.float32)
    return model


def build_model(config: Pi0Config, device: torch.device | str, dtype: torch.dtype) -> Pi0Model:
    """An uninitialized model on `device`: built on the meta device, then materialized.

    Skips the random init of ~3.3B parameters that a checkpoint load would
    overwrite anyway. Callers must load or `initialize_weights_` next.
    """
    with torch.device("meta"):
        model = Pi0Model(config)
    set_precision(model, dtype)
    model.to_empty(device=device)
    reset_buffers_(model)
    return model


def reset_buffers_(model: Pi0Model) -> None:
    """Refill non-persistent buffers, which `to_empty` leaves uninitialized."""
    for module in model.modules():
        if isinstance(module, SiglipVisionEmbeddings):
            positions = torch.arange(module.num_positions, device=module.position_ids.device)
            module.position_ids.copy_(positions.expand(1, -1))


@torch.no_grad()
def initialize_weights_(model: Pi0Model, generator: torch.Generator) -> None:
    """Random init from an explicit generator (no global RNG): fan-in scaled normal weights.

    Gemma's RMSNorm multiplies by (1 + w), so its weights start at 0; SigLIP's
    LayerNorms multiply by w, so theirs start at 1; biases start at 0.
    """
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2:
            fan_in = parameter[0].numel()
            parameter.normal_(0.0, fan_in**-0.5, generator=generator)
        elif ("layer_norm" in name or "layernorm" in name) and "vision_tower" in name and name.endswith("weight"):
            parameter.fill_(1.0)
        else:
            parameter.zero_()
