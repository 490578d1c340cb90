"""Attention masks, positions, RoPE and the attention kernel shared by both experts.

pi0 uses the big_vision "block" mask: each token carries a block id, and a
token attends to every *valid* token whose block id is not larger than its
own. The prefix (images + prompt) is block 0, so it is bidirectional and can
never see the suffix; the state token is block 1 and the action tokens are
block 2, so actions see each other, the state and the prefix, while the state
does not see the actions. pi0.5 has no state token: its suffix is block 2 alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PREFIX_BLOCK = 0
STATE_BLOCK = 1
ACTION_BLOCK = 2


def suffix_block_ids(
    batch_size: int, action_horizon: int, device: torch.device, state_token: bool = True
) -> torch.Tensor:
    """Block ids of the suffix [state, action_0 .. action_{H-1}] -> [B, 1 + H] int64 (no state token: [B, H]).

    Built with on-device ops (no host list), so it neither syncs nor breaks CUDA graph capture.
    """
    length = action_horizon + int(state_token)
    ids = torch.full((batch_size, length), ACTION_BLOCK, dtype=torch.long, device=device)
    if state_token:
        ids[:, 0] = STATE_BLOCK
    return ids


def block_attention_mask(
    query_blocks: torch.Tensor,
    query_valid: torch.Tensor,
    key_blocks: torch.Tensor,
    key_valid: torch.Tensor,
) -> torch.Tensor:
    """Who may attend to whom -> bool [B, Lq, Lk] (True = may attend).

    query_blocks/query_valid: [B, Lq]; key_blocks/key_valid: [B, Lk].
    Padding queries (camera slots without an image, prompt padding) see no key
    at all; `attention_bias` gives them a harmless fallback.
    """
    allowed = key_blocks[:, None, :] <= query_blocks[:, :, None]
    return allowed & key_valid[:, None, :] & query_valid[:, :, None]


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, Lq, Lk] -> additive bias [B, 1, Lq, Lk] for scaled_dot_product_attention.

    A fully masked row (a padding query) would make softmax produce NaN, and
    that NaN would reach valid tokens through the next layer's values. Such rows
    get a zero bias instead: their outputs are garbage but finite, and no valid
    token ever reads them because padding keys are masked for everyone.
    """
    dead_rows = ~mask.any(dim=-1, keepdim=True)
    usable = mask | dead_rows
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~usable, torch.finfo(dtype).min)
    return bias[:, None]


def positions_from_valid(valid: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """RoPE positions: valid tokens are numbered 0, 1, 2, ... skipping padding -> [B, L] int64.

    `offset` ([B, 1]) continues the numbering after a cached prefix.
    """
    positions = torch.cumsum(valid.long(), dim=1) - 1
    return positions if offset is None else positions + offset


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary embeddings -> two [B, 1, L, head_dim] tensors.

    Computed in fp32 (positions up to ~900 lose precision in bf16) and cast
    once, so every layer reuses them.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    inv_freq = 1.0 / (theta**exponents)  # [head_dim / 2]
    angles = positions.to(torch.float32)[..., None] * inv_freq  # [B, L, head_dim / 2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, head_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head (Gemma / HF convention). x: [B, heads, L, head_dim]."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return x * cos + rotated * sin


def repeat_kv(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Share key/value heads across query heads: [B, kv_heads, L, D] -> [B, num_heads, L, D]."""
    kv_heads = x.shape[1]
    if kv_heads == num_heads:
        return x
    if kv_heads == 1:
        return x.expand(-1, num_heads, -1, -1)  # a view: multi-query attention costs no copy
    return x.repeat_interleave(num_heads // kv_heads, dim=1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention.

    q: [B, H, Lq, D]; k, v: [B, KV, Lk, D]; bias: [B, 1, Lq, Lk] -> [B, Lq, H * D].
    """
    num_heads = q.shape[1]
    out = F.scaled_dot_product_attention(q, repeat_kv(k, num_heads), repeat_kv(v, num_heads), attn_mask=bias)
    batch, _, length, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, length, num_heads * head_dim)
