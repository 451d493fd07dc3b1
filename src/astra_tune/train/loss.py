"""Cross-entropy computed only where there is something to learn.

A causal LM's output layer turns every position into vocabulary logits, but with
assistant-only training most positions carry no label: on chat data the system prompt,
the question and the template are 60-80% of the tokens. For a small model the output
layer is a large share of the work (SmolLM2-135M: 576 x 49152, a fifth of its FLOPs), so
projecting only the labelled positions saves that share of the step on every
prompt token, forward and backward. transformers' `logits_to_keep` accepts position
indices, but one set for the whole batch; packed rows are therefore laid end to end as
one row first, which changes nothing for the model: position ids already restart at every
example, the packed attention keeps examples apart, and labels at every example's start
are masked (see collator.py). Padded rows cannot be joined (their attention masks differ),
so they keep the positions labelled in any row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

IGNORE = -100


def can_flatten(inputs: dict[str, Any]) -> bool:
    """Packed batches (position ids, no attention mask) can be laid out as one row."""
    return (
        inputs.get("labels") is not None
        and inputs.get("position_ids") is not None
        and inputs.get("attention_mask") is None
    )


def labelled_positions_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Loss over the labelled tokens of a batch, with logits for those positions only.

    Packed batches are laid end to end, so exactly the labelled positions are projected.
    Padded batches keep their rows (each has its own attention mask) and project the
    positions labelled in any row; the others' targets there are ignored as usual.
    Sums and divides by `num_items_in_batch` when given (the Trainer's count across
    gradient accumulation, as transformers' own loss does), else averages.
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    input_ids = inputs.pop("input_ids")
    if can_flatten({**inputs, "labels": labels}):
        labels = labels.reshape(1, -1)
        input_ids = input_ids.reshape(1, -1)
        inputs["position_ids"] = inputs["position_ids"].reshape(1, -1)
    # Position t predicts token t+1: keep the positions whose next token is labelled.
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
    if keep.numel() == 0:
        # Nothing to learn in this batch (every answer was cut): a zero that still has a
        # graph, so backward and gradient accumulation behave as on any other batch.
        keep = torch.zeros(1, dtype=torch.long, device=labels.device)
    outputs = model(input_ids=input_ids, logits_to_keep=keep, **inputs)
    logits = outputs["logits"].float()
    chosen = targets[:, keep]
    loss = functional.cross_entropy(
        logits.flatten(0, 1), chosen.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    else:
        loss = loss / (chosen != IGNORE).sum().clamp(min=1)
    return loss, {"loss": loss, "logits": outputs["logits"]}
