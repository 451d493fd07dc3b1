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
# PyTorch's CPU flash-attention kernel in bf16 is 2.5-3x slower than in fp32 for segments
# under ~256 tokens and faster above (fwd+bwd, 9 heads of 64, 2026-12-04 on an AMX Xeon):
# short examples are the common case in instruction data, so they run in fp32.
_UPCAST_BELOW = 256
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
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    positions = kwargs.get("position_ids")
    if positions is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        # Padded batches, generation with a cache: ordinary SDPA is right there.
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    length = query.shape[2]
    p = dropout if module.training else 0.0
    rows = []
    for row in range(query.shape[0]):
        starts = (positions[row] == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        lengths = [end - start for start, end in zip(starts, [*starts[1:], length], strict=True)]
        # split + cat, not slicing and slice assignment: the backward of each slice (and
        # of each in-place write) is a zero-filled full-row gradient added into the
        # whole, so per-segment slicing cost grew with segments x row length and was
        # two fifths of a bf16 step; split's backward is one cat.
        q, k, v = (t[row : row + 1].split(lengths, dim=2) for t in (query, key, value))
        outs = [_segment_attention(*s, p, scaling) for s in zip(q, k, v, strict=True)]
        rows.append(torch.cat(outs, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _segment_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, scaling: float | None
) -> torch.Tensor:
    dtype = q.dtype
    # Grouped-query heads share their key/value heads inside the kernel: no repeated copies.
    grouped = q.shape[1] != k.shape[1]
    if q.shape[2] >= _UPCAST_BELOW or dtype == torch.float32 or q.device.type != "cpu":
        return functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped
        )
    # Autocast lists SDPA as a low-precision op and would cast the fp32 copies back.
    with torch.autocast("cpu", enabled=False):
        out = functional.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), is_causal=True, dropout_p=dropout, scale=scaling,
            enable_gqa=grouped,
        )  # fmt: skip
    return out.to(dtype)
