"""Tiny random Llama models with the real SmolLM2 tokenizer, for fast tests of every stage.

They are deterministic by seed, a few MB on disk, and load in well under a second, so
tests can exercise training, export and serving on real model code without downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry


@dataclass(frozen=True)
class TinyConfig:
    """Shape of a tiny Llama; defaults give about 3.4M parameters (mostly embeddings)."""

    num_layers: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    # Wider than transformers' 0.02 so that outputs depend visibly on the input: at 0.02 a
    # 64-wide model answers every prompt with the same token, which makes tests blind.
    initializer_range: float = 0.1


def load_default_tokenizer() -> Any:
    """The SmolLM2 tokenizer (with its chat template), read from the bundled GGUF."""
    from transformers import AutoTokenizer

    entry = catalog_entry(DEFAULT_MODEL)
    assert entry is not None
    gguf = bundled_gguf_path(entry)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def build_tiny_model(
    out_dir: Path, *, tokenizer: Any, seed: int = 0, config: TinyConfig | None = None
) -> Path:
    """Write a randomly initialised tiny Llama (fp32 safetensors) and `tokenizer` to `out_dir`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = config or TinyConfig()
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.hidden_size // shape.num_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        initializer_range=shape.initializer_range,
    )
    # Seed a private generator state so building a model never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(model_config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
