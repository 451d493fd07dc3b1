from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from astra_tune.models.tiny import TinyConfig, build_tiny_model


def test_tiny_model_has_the_requested_shape(tiny_model_dir: Path, smollm2_tokenizer: Any) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size) == (2, 64)
    assert config.vocab_size == len(smollm2_tokenizer) == 49152
    assert model.dtype == torch.float32
    ids = torch.tensor([[1, 2, 3, 4]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 4, 49152)
    # A random model is close to uniform: loss near ln(vocab) = 10.8.
    assert 10.0 < out.loss.item() < 12.0


def test_tiny_model_keeps_the_smollm2_chat_template(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_same_seed_same_weights_other_seed_other_weights(
    tmp_path: Path, smollm2_tokenizer: Any, tiny_model_dir: Path
) -> None:
    again = load_file(
        build_tiny_model(tmp_path / "a", tokenizer=smollm2_tokenizer) / "model.safetensors"
    )
    other = load_file(
        build_tiny_model(tmp_path / "b", tokenizer=smollm2_tokenizer, seed=1) / "model.safetensors"
    )
    first = load_file(tiny_model_dir / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(
        first["model.layers.0.self_attn.q_proj.weight"],
        other["model.layers.0.self_attn.q_proj.weight"],
    )


def test_building_does_not_disturb_the_callers_rng(tmp_path: Path, smollm2_tokenizer: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", tokenizer=smollm2_tokenizer, config=TinyConfig(num_layers=1))
    assert torch.equal(torch.rand(3), expected)
