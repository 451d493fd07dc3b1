"""Our fast GGUF metadata reader agrees with gguf-py's reader on every key."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from astra_tune.errors import ModelError
from astra_tune.export.convert import write_gguf
from astra_tune.models.gguf_meta import read_metadata


def test_metadata_matches_gguf_py(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    path = write_gguf(
        tiny_model_dir,
        tmp_path / "m.gguf",
        "q8_0",
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
        metadata={"name": "tiny", "license": "mit"},
    ).path
    ours = read_metadata(path)
    reader = gguf.GGUFReader(path)
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        if isinstance(expected, float):
            assert ours[key] == pytest.approx(expected), key
        else:
            assert ours[key] == expected, key
    assert ours["__tensor_count__"] == len(reader.tensors)
    assert ours["__parameters__"] == sum(int(t.n_elements) for t in reader.tensors)


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope" * 10)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_metadata(path)
