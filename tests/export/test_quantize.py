"""llama.cpp quantization through llama-cpp-python, and the type list."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from transformers import AutoTokenizer

from astra_tune.errors import ConfigError, ModelError
from astra_tune.export.convert import write_gguf
from astra_tune.export.quantize import quantize
from astra_tune.models.gguf_types import parse_types


def test_parse_types_normalizes_and_refuses() -> None:
    assert parse_types("F16, q4_K_M,q4-k-m,,q8_0") == ["f16", "q4_k_m", "q8_0"]
    with pytest.raises(ConfigError, match="unknown GGUF type 'q9_x'") as caught:
        parse_types("q9_x")
    assert "q5_k_m" in str(caught.value)
    with pytest.raises(ConfigError, match="importance matrix"):
        parse_types(["iq2_xxs"])
    with pytest.raises(ConfigError, match="no GGUF type"):
        parse_types(" , ")


def test_quantize_writes_llama_cpp_types_with_progress(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    f16 = write_gguf(
        tiny_model_dir,
        tmp_path / "f16.gguf",
        "f16",
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
        metadata={},
    ).path
    seen: list[float] = []
    out = quantize(f16, tmp_path / "q6_k.gguf", "q6_k", on_progress=seen.append)
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == 18  # LLAMA_FTYPE_MOSTLY_Q6_K
    kinds = {t.tensor_type.name for t in reader.tensors}
    # Rows of 64 are too short for 256-wide k-quant blocks: llama.cpp falls back per tensor.
    assert "F32" in kinds
    assert kinds - {"F32"}
    assert len(reader.tensors) == len(gguf.GGUFReader(f16).tensors)
    assert seen[-1] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16.gguf", "q6_k.gguf"]


def test_quantize_failure_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match=r"could not quantize bogus\.gguf to q4_k_m"):
        quantize(bogus, tmp_path / "out.gguf", "q4_k_m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.gguf"]
