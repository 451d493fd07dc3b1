"""A small GGUF to push, and a fresh registry per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.export.convert import write_gguf
from astra_tune.registry.store import Registry


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    return write_gguf(
        tiny_model_dir,
        out,
        "f16",
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
        metadata={"name": "tiny", "license": "apache-2.0"},
    ).path


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def blob_files(registry: Registry) -> list[Path]:
    return sorted((registry.root / "blobs").glob("sha256-*"))


def other_gguf(source: Path, target: Path, marker: bytes) -> Path:
    """A copy of `source` with different bytes at the end (a different blob, same format)."""
    data = bytearray(source.read_bytes())
    data[-len(marker) :] = marker
    target.write_bytes(bytes(data))
    return target
