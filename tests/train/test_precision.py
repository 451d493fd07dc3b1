"""bf16 training keeps what is trained in fp32: LoRA weights and AdamW state."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import set_seed

from astra_tune.train.model import load_model
from astra_tune.train.run import train_model
from tests.train.test_train import recipe


def test_bf16_run_trains_fp32_adapters_that_a_tiny_step_still_moves(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = recipe(tiny_model_dir, tmp_path / "run", dtype="bfloat16", max_steps=2,
                 learning_rate=1e-6, save_steps=1, eval_steps=None, scheduler="constant",
                 lora={"dropout": 0.0})  # fmt: skip
    # The adapters as train_model creates them: same seed, same base, same dtype.
    set_seed(run.seed)
    initial = load_model(tiny_model_dir, run.train, "bfloat16")
    assert initial.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == (
        torch.bfloat16
    )
    before = {
        name.replace(".default", ""): p.detach().clone()
        for name, p in initial.named_parameters()
        if p.requires_grad
    }

    result = train_model(run)
    assert result.dtype == "bfloat16"
    after = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    a_names = [n for n in after if "lora_A" in n]
    assert a_names
    assert {after[n].dtype for n in after} == {torch.float32}
    moved = 0
    for name in a_names:
        old = before[name]
        delta = (after[name] - old).abs()
        # Every step is about lr (1e-6), far below bf16's spacing at these weights...
        spacing = old.abs().max().item() * 2**-8
        assert delta.max().item() < 1e-5 < spacing
        # ...and it is still there: an fp32 adapter keeps updates that bf16 would round off.
        moved += int((delta > 0).sum())
    assert moved > 0.9 * sum(after[n].numel() for n in a_names)

    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "optimizer.pt")
    moments = [t for s in state["state"].values() for k, t in s.items() if k != "step"]
    assert moments
    assert {t.dtype for t in moments} == {torch.float32}
