"""Attention over grouped K/V heads (``sdpa``): the one kernel call the dense model
(``model.py``) and the paged KV cache (``kv_cache.py``) share, so neither imports the other
for it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2] if p.isdigit()) >= (2, 5)


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor:
    """``scaled_dot_product_attention`` on ``[B, heads, L, head_dim]`` with grouped K/V heads."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        if _SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


__all__ = ["sdpa"]
