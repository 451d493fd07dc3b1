"""Tiny random models (llama, mistral, qwen2) for fast tests of every stage.

They are deterministic by seed, a few MB on disk, and load in well under a second, so
tests can exercise training, export and serving on real model code without downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry

TinyArch = Literal["llama", "mistral", "qwen2"]
# Mistral-7B-v0.1's template, in substance: [INST] turns, BOS once, EOS after each answer.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% set system = namespace(text='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set system.text = message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' + system.text + message['content'] + ' [/INST]' }}{% set system.text = '' %}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)


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
    out_dir: Path,
    *,
    tokenizer: Any,
    seed: int = 0,
    config: TinyConfig | None = None,
    arch: TinyArch = "llama",
) -> Path:
    """Write a randomly initialised tiny model (fp32 safetensors) and `tokenizer` to `out_dir`.

    `arch` picks the transformers class: llama, mistral (same layout, its own config), or
    qwen2 (biases on q/k/v, no RoPE row permutation in GGUF).
    """
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }
    config_class, model_class = classes[arch]
    shape = config or TinyConfig()
    extra: dict[str, Any] = {"sliding_window": None} if arch == "mistral" else {}
    model_config = config_class(
        **extra,
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
        model = model_class(model_config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_spm_tokenizer(texts: list[str], *, vocab_size: int = 800) -> Any:
    """A small Llama-2/Mistral-style tokenizer (BPE with byte fallback, "▁" for spaces).

    Trained here on `texts` in a second, so tests cover SentencePiece-style vocabularies
    without downloading one. Ids 0-2 are <unk>, <s>, </s>; then the 256 byte tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    core = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    core.normalizer = normalizers.Sequence(  # type: ignore[assignment]
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    core.decoder = decoders.Sequence(  # type: ignore[assignment]
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    trainer = trainers.BpeTrainer(  # type: ignore[call-arg]
        vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False
    )
    core.train_from_iterator(texts, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(  # type: ignore[assignment]
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = MISTRAL_TEMPLATE
    return tokenizer
