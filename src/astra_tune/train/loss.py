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


# Architectures whose logits are exactly lm_head(final hidden state): no soft-capping,
# scaling or bias, so the head and the loss can be fused (see _HeadCrossEntropy).
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3"})
# Logits held at once by the fused loss: chunk x vocabulary fp32 values (64 MB).
CHUNK_VALUES = 2**24


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
    flatten = can_flatten(inputs)
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    input_ids = inputs.pop("input_ids")
    if flatten:
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
    chosen = targets[:, keep]
    parts = _plain_head(model)
    outputs: dict[str, Any]
    if parts is not None:
        body, head = parts
        hidden = body(input_ids=input_ids, **inputs).last_hidden_state[:, keep]
        loss = _HeadCrossEntropy.apply(hidden.flatten(0, 1), head.weight, chosen.flatten())
        outputs = {}
    else:
        outputs = model(input_ids=input_ids, logits_to_keep=keep, **inputs)
        loss = functional.cross_entropy(
            outputs["logits"].float().flatten(0, 1), chosen.flatten(), ignore_index=IGNORE,
            reduction="sum",
        )  # fmt: skip
        outputs = {"logits": outputs["logits"]}
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    else:
        loss = loss / (chosen != IGNORE).sum().clamp(min=1)
    return loss, {"loss": loss, "positions": chosen.numel(), **outputs}


def _plain_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder body, output layer) when the logits are a plain linear map of its output."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    # A LoRA-wrapped or biased head is not a bare weight: leave it to the model's forward.
    if body is None or type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return body, head


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T`, a chunk of positions at a time.

    The vocabulary-wide logits, their softmax and their gradient are the largest tensors
    of a small model's step (2,000 positions x 49k words = 400 MB each in fp32), and on a
    CPU building them is memory traffic, not arithmetic. Here each chunk's gradient with
    respect to the hidden states (and the weight, when it trains) is worked out as soon
    as its logits exist, so only one chunk of logits is ever held; backward only scales
    what forward kept. Liger-Kernel's fused linear cross-entropy does this on GPUs in
    Triton; nothing does it for CPU tensors, hence our own. The matmuls run in the
    autocast dtype when autocast is on (as the model's own head would), the softmax in fp32.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:  # fmt: skip
        device = hidden.device.type
        dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                 else weight.dtype)  # fmt: skip
        with torch.autocast(device, enabled=False):
            w = weight.detach().to(dtype)
            h_all = hidden.detach().to(dtype)
            grad_hidden = torch.empty_like(h_all)
            trains_weight = ctx.needs_input_grad[1]
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if trains_weight else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            chunk = min(max(1, CHUNK_VALUES // weight.shape[0]), max(1, h_all.shape[0]))
            # One buffer per dtype, reused by every chunk: a fresh 64 MB tensor per chunk
            # is mmap'd and page-faulted in by the kernel each time, which cost more than
            # the softmax arithmetic itself.
            shape = (chunk, weight.shape[0])
            low_buffer = torch.empty(shape, dtype=dtype, device=hidden.device)
            widen = dtype != torch.float32  # matmuls in bf16/fp16, the softmax in fp32
            buffer = (torch.empty(shape, dtype=torch.float32, device=hidden.device) if widen
                      else low_buffer)  # fmt: skip
            for start in range(0, h_all.shape[0], chunk):
                h = h_all[start : start + chunk]
                t = targets[start : start + chunk]
                size = len(t)
                valid = (t != IGNORE)[:, None]
                picked = t.clamp(min=0)[:, None]
                low, logits = low_buffer[:size], buffer[:size]
                torch.mm(h, w.T, out=low)
                if widen:
                    logits.copy_(low)
                target_logit = logits.gather(1, picked)
                # logsumexp and softmax in place: max, shift, exp, sum, normalize.
                peak = logits.amax(dim=-1, keepdim=True)
                sums = logits.sub_(peak).exp_().sum(dim=-1, keepdim=True)
                total += ((peak + sums.log() - target_logit) * valid).sum()
                # d(sum of losses)/d(logits) = softmax - one-hot, zero where unlabelled.
                grad = logits.div_(sums)
                grad.scatter_add_(1, picked, torch.full_like(target_logit, -1.0))
                grad.mul_(valid)
                if widen:
                    low.copy_(grad)
                torch.mm(low, w, out=grad_hidden[start : start + size])
                if grad_weight is not None:
                    grad_weight += (low.T @ h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden.to(hidden.dtype), grad_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_total,
            grad_weight * grad_total if grad_weight is not None else None,
            None,
        )
