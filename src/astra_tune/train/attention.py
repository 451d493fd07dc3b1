"""Attention for packed rows without a mask: each example attends only to itself.

With packing, transformers builds a block-diagonal mask from the position ids, and SDPA
with an explicit mask falls back on CPU to its reference path, which materializes every
[row x row] score matrix: slow, and gigabytes for 1024-token rows. Here each example
runs SDPA with `is_causal=True` on its own slice instead (the fused kernel, and attention
cost grows with the examples' lengths, not the row's). This is the "varlen" attention
FlashAttention offers on GPUs, done per segment for CPUs and other backends.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

NAME = "astra_packed"
_registered = False


def register() -> str:
    """Register the implementation with transformers (once) and return its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, packed_attention)
        # No mask to build: segments come from the position ids at attention time.
        AttentionMaskInterface.register(NAME, _no_mask)
        _registered = True
    return NAME


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention per segment of each row; segments start where position ids reset."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    positions = kwargs.get("position_ids")
    if positions is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        # Padded batches, generation with a cache: ordinary SDPA is right there.
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    length = query.shape[2]
    p = dropout if module.training else 0.0
    out = torch.empty_like(query)
    for row in range(query.shape[0]):
        starts = (positions[row] == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        for start, end in zip(starts, [*starts[1:], length], strict=True):
            out[row : row + 1, :, start:end] = functional.scaled_dot_product_attention(
                query[row : row + 1, :, start:end],
                key[row : row + 1, :, start:end],
                value[row : row + 1, :, start:end],
                is_causal=True,
                dropout_p=p,
                scale=scaling,
            )
    return out.transpose(1, 2).contiguous(), None
