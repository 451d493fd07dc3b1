"""The fused LoRA layer computes what PEFT computes: outputs, input and adapter gradients."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from astra_tune.recipe import TrainConfig
from astra_tune.train.lora import FusedLoraLinear, fuse_lora_layers
from astra_tune.train.model import load_model


def _pair(model_dir: Path, dtype: torch.dtype, **lora: Any) -> tuple[Any, Any]:
    """(PEFT's model, the same weights with fused layers); B is random so LoRA matters."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    config = LoraConfig(r=8, lora_alpha=24, target_modules="all-linear", lora_dropout=0.0,
                        **lora)  # fmt: skip
    reference = get_peft_model(base, config)
    for name, p in reference.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    fused = copy.deepcopy(reference)
    return reference, fused


def _step(model: Any, ids: torch.Tensor, autocast: bool = False) -> tuple[Any, dict[str, Any]]:
    model.zero_grad()
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(inputs_embeds=embeds).logits
    (logits.float() ** 2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach().float(), {"input": embeds.grad, **grads}


def _graph_nodes(output: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_fused_layers_match_peft_in_fp32(tiny_model_dir: Path) -> None:
    reference, fused = _pair(tiny_model_dir, torch.float32, use_rslora=True)
    assert fuse_lora_layers(fused) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    ids = torch.randint(0, 49152, (2, 24), generator=torch.Generator().manual_seed(1))
    expected_logits, expected = _step(reference, ids)
    logits, got = _step(fused, ids)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    assert got.keys() == expected.keys()
    # The fused function really ran (not PEFT's forward through the same weights).
    fused_graph = _graph_nodes(fused(input_ids=ids).logits)
    assert "_LoraMatmulBackward" in fused_graph
    assert "_LoraMatmulBackward" not in _graph_nodes(reference(input_ids=ids).logits)
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name  # every gradient carries signal
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    # Same parameters, same names: the saved adapter cannot tell the difference.
    assert fused.state_dict().keys() == reference.state_dict().keys()


def test_fused_layers_under_bf16_autocast_keep_fp32_adapters(tiny_model_dir: Path) -> None:
    reference, fused = _pair(tiny_model_dir, torch.bfloat16)
    exact = copy.deepcopy(reference).float()  # the same weights, every op in fp32
    fuse_lora_layers(fused)
    ids = torch.randint(0, 49152, (2, 24), generator=torch.Generator().manual_seed(2))
    _, want = _step(exact, ids)
    _, peft = _step(reference, ids, autocast=True)
    _, got = _step(fused, ids, autocast=True)
    fused_errors, peft_errors = [], []
    for name, grad in want.items():
        if name != "input":
            assert got[name].dtype == torch.float32, name
        scale = grad.abs().max()
        fused_errors.append(((got[name].float() - grad).abs().max() / scale).item())
        peft_errors.append(((peft[name].float() - grad).abs().max() / scale).item())
    # Both round the matmuls to bf16 (a few percent here); the fused layer no worse.
    assert max(fused_errors) < 0.15
    assert sum(fused_errors) < 1.25 * sum(peft_errors)


def test_other_lora_forms_take_peft_path_and_still_match(tiny_model_dir: Path) -> None:
    reference, fused = _pair(tiny_model_dir, torch.float32)
    fuse_lora_layers(fused)
    ids = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        adapted = fused(input_ids=ids).logits
        with fused.disable_adapter():
            base_only = fused(input_ids=ids).logits
        with reference.disable_adapter():
            reference_base = reference(input_ids=ids).logits
    torch.testing.assert_close(base_only, reference_base)
    assert (adapted - base_only).abs().max() > 1e-3  # the adapter was really off
    # Merging goes through PEFT's own code and gives the adapted model's outputs.
    merged = fused.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("method", "fused_layers"), [("lora", 14), ("full", 0)])
def test_load_model_fuses_plain_lora(tiny_model_dir: Path, method: str, fused_layers: int) -> None:
    model = load_model(tiny_model_dir, TrainConfig(method=method), "float32")
    assert sum(isinstance(m, FusedLoraLinear) for m in model.modules()) == fused_layers
