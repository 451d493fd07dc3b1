"""Packing: examples share rows of at most max_seq_len without attending to each other.

TRL packs the same way (best-fit decreasing) but then insists on its padding-free
collator, which flattens the whole batch into one row: right for FlashAttention's varlen
kernels, but on CPU (SDPA with a mask) attention then costs the square of the *batch*
length. So we pack here and keep rows separate: position ids restart at every example,
which transformers turns into a block-diagonal causal mask, and the padding at a row's
end forms a segment of its own.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch


def pack_examples(features: list[dict[str, list[int]]], max_len: int) -> list[dict[str, Any]]:
    """Best-fit-decreasing packing of {input_ids, assistant_masks} into rows of <= max_len."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row index), kept sorted
    for index in order:
        length = len(features[index]["input_ids"])
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            remaining, row = free.pop(slot)
            rows[row].append(index)
        else:
            remaining, row = max_len, len(rows)
            rows.append([index])
        if remaining - length > 0:
            bisect.insort(free, (remaining - length, row))
    packed = []
    for members in rows:
        input_ids: list[int] = []
        labels: list[int] = []
        for index in members:
            ids, mask = features[index]["input_ids"], features[index]["assistant_masks"]
            input_ids.extend(ids)
            labels.extend(t if m else -100 for t, m in zip(ids, mask, strict=True))
        packed.append(
            {
                "input_ids": input_ids,
                "labels": labels,
                "seq_lengths": [len(features[i]["input_ids"]) for i in members],
            }
        )
    return packed


# Counted where the batch is trained on, not where it is collated: the data loader
# fetches one batch ahead, so a count taken here runs a batch early and stands still on
# the last step of every epoch.
TOKENS_KEY = "astra_num_tokens"


class PackedRowsCollator:
    """Stack packed rows (input_ids, labels, seq_lengths) into [batch, longest row]."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = example["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(example["labels"])
            start = 0
            for length in example.get("seq_lengths") or [len(ids)]:
                positions[row, start : start + length] = torch.arange(length)
                # The first token of an example must not be predicted from the previous one.
                labels[row, start] = -100
                start += length
            if start < width:
                positions[row, start:] = torch.arange(width - start)
        # use_cache=False matters: with a KV cache, transformers stops deriving the
        # block-diagonal mask from position ids and examples would attend to each other.
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": positions,
            "use_cache": False,
            # Real (non-padding) tokens of this batch; the trainer takes it out before the
            # forward pass and counts it when it trains on the batch (see train/run.py).
            TOKENS_KEY: torch.tensor(sum(len(e["input_ids"]) for e in examples)),
        }
