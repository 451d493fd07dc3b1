"""LoRA linear layers that add the adapter inside the matmuls, for training speed.

PEFT computes `base(x) + B(A(x)) * scaling`. The scaling and the add each make a pass
over the layer's whole output in the forward. The backward makes two more: the gradient
times scaling, and the sum of the base's and the adapter's gradients for x. On a bf16 CPU
the matmuls are fast, so these passes cost about a tenth of a LoRA step
(bench/train_bench.py). Here one autograd function does the same math with fused calls:
addmm adds the adapter into the base output (scaling as its alpha), and another addmm adds
the adapter's input gradient into the base's. Only the rank-r intermediates get scaled.

The layer keeps PEFT's class (a subclass), its parameter names and its state dict, so
saving, merging and export are unchanged. Anything beyond plain single-adapter LoRA takes
PEFT's own forward: dropout, DoRA and other variants, merged or disabled adapters, and
mixed-adapter batches.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn
from torch.nn import functional


class _LoraMatmul(torch.autograd.Function):
    """out = x W^T + b + scaling * (x A^T) B^T, with the backward written out the same way."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        xa = x @ lora_a.t()
        out = functional.linear(x, weight, bias)
        out.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, xa)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, lora_a, lora_b, xa = ctx.saved_tensors
        scaling = ctx.scaling
        grad_xa = (grad @ lora_b).mul_(scaling)
        grad_b = (grad.t() @ xa).mul_(scaling)
        grad_a = grad_xa.t() @ x
        grad_x = None
        if ctx.needs_input_grad[0]:  # the first layer's input needs none under LoRA
            grad_x = (grad @ weight).addmm_(grad_xa, lora_a)
        return grad_x, None, None, grad_a, grad_b, None


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's LoRA Linear with plain single-adapter LoRA done by `_LoraMatmul`."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else self._plain_adapter()
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        device = x.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else base.weight.dtype
        if not autocast and x.dtype != dtype:
            return super().forward(x, *args, **kwargs)  # let PEFT say what mismatches
        bias = None if base.bias is None else base.bias.to(dtype)
        # The adapter casts stay outside the function: autograd brings their gradients
        # back to the fp32 adapter weights.
        lora_a = self.lora_A[adapter].weight.to(dtype)
        lora_b = self.lora_B[adapter].weight.to(dtype)
        flat = x.to(dtype).reshape(-1, x.shape[-1])
        with torch.autocast(device, enabled=False):
            out = _LoraMatmul.apply(
                flat, base.weight.to(dtype), bias, lora_a, lora_b, self.scaling[adapter]
            )
        return out.view(*x.shape[:-1], out.shape[-1])

    def _plain_adapter(self) -> str | None:
        """The one active adapter when it is plain LoRA, else None (PEFT's path)."""
        if self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        active = self.active_adapters
        if len(active) != 1 or not isinstance(self.base_layer, nn.Linear):
            return None
        name = active[0]
        if name not in self.lora_A or name in self.lora_variant:
            return None
        if not isinstance(self.lora_dropout[name], nn.Identity):
            return None
        return name


def fuse_lora_layers(model: nn.Module) -> int:
    """Switch every plain PEFT LoRA Linear in `model` to `FusedLoraLinear`; returns how many."""
    count = 0
    for module in model.modules():
        # The exact class: 4-bit, 8-bit and other PEFT Linear subclasses keep their own.
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear
            count += 1
    return count
