from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry
from astra_tune.models.gguf_import import MARKER, is_current, read_marker
from astra_tune.models.resolve import resolve_model

pytestmark = pytest.mark.slow

PROMPT = [
    {"role": "user", "content": "Explain why the sky is blue, then name three primary colours."}
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    entry = catalog_entry(DEFAULT_MODEL)
    assert entry is not None
    return bundled_gguf_path(entry)


@pytest.fixture(scope="module")
def prompt_ids(default_model_dir: Path) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    return tokenizer(text + "The sky appears blue because", add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def cached_logits(default_model_dir: Path, prompt_ids: list[int]) -> np.ndarray:
    model = AutoModelForCausalLM.from_pretrained(default_model_dir)
    with torch.no_grad():
        return model(torch.tensor([prompt_ids])).logits[0].numpy()


def test_cache_directory_is_complete(default_model_dir: Path, gguf_path: Path) -> None:
    names = {p.name for p in default_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= names
    marker = read_marker(default_model_dir)
    assert marker is not None
    assert marker["source"]["path"] == str(gguf_path)
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
    # No staging leftovers beside the finished directory.
    assert not [p for p in default_model_dir.parent.iterdir() if p.name.startswith(".")]


def test_logits_match_transformers_reading_the_gguf(
    gguf_path: Path, prompt_ids: list[int], cached_logits: np.ndarray
) -> None:
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    with torch.no_grad():
        reference = direct(torch.tensor([prompt_ids])).logits[0].numpy()
    np.testing.assert_allclose(cached_logits, reference, atol=1e-4, rtol=0)


def test_logits_agree_with_llama_cpp(
    gguf_path: Path, prompt_ids: list[int], cached_logits: np.ndarray
) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), logits_all=True, n_ctx=512, verbose=False)
    try:
        text = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).decode(
            prompt_ids
        )
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert tokens == prompt_ids  # same tokenizer on both sides
        llm.eval(tokens)
        reference = np.array(llm.scores[: len(tokens)])
    finally:
        llm.close()
    # llama.cpp multiplies with 8-bit activations, so logits differ slightly; the
    # distributions must still be the same shape and the top choice nearly always equal.
    agree = float((cached_logits.argmax(-1) == reference.argmax(-1)).mean())
    corr = float(
        np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(cached_logits, reference, strict=True)])
    )
    assert agree >= 0.9
    assert corr >= 0.99


def test_second_resolve_reuses_the_cache(default_model_dir: Path, gguf_path: Path) -> None:
    before = (default_model_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(DEFAULT_MODEL).path == default_model_dir
    assert (default_model_dir / "model.safetensors").stat().st_mtime_ns == before
    assert is_current(default_model_dir, gguf_path)


def test_changed_source_is_not_current(
    default_model_dir: Path, gguf_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    marker = read_marker(default_model_dir)
    assert marker is not None
    marker["source"]["mtime_ns"] += 1  # a reinstall: same bytes, new mtime → still current
    (copy / MARKER).write_text(json.dumps(marker))
    assert is_current(copy, gguf_path)
    marker["source"]["sha256"] = "0" * 64  # different bytes → stale
    (copy / MARKER).write_text(json.dumps(marker))
    assert not is_current(copy, gguf_path)
    os.remove(copy / MARKER)
    assert not is_current(copy, gguf_path)


def test_a_local_gguf_file_is_dequantized_once(gguf_path: Path) -> None:
    resolved = resolve_model(str(gguf_path))
    assert resolved.kind == "gguf"
    assert resolved.gguf_path == gguf_path
    assert resolved.path.parent.name == "gguf"
    assert resolved.path.name.startswith(gguf_path.stem)
    assert is_current(resolved.path, gguf_path)
    weights = resolved.path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert resolve_model(str(gguf_path)).path == resolved.path
    assert weights.stat().st_mtime_ns == before
