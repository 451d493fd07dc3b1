"""Tiny models of each supported architecture, built once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astra_tune.export.verify import PASSAGES
from astra_tune.models.tiny import build_spm_tokenizer, build_tiny_model

SAMPLES = Path(__file__).parents[2] / "src/astra_tune/data/samples/orrery/train.jsonl"


@pytest.fixture(scope="session")
def spm_tokenizer() -> Any:
    """A Mistral-style (byte-fallback BPE, "▁") tokenizer trained on the sample answers."""
    texts = [json.loads(line)["messages"][-1]["content"] for line in SAMPLES.open()]
    return build_spm_tokenizer(texts + list(PASSAGES))


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory: pytest.TempPathFactory, spm_tokenizer: Any) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-mistral") / "model", tokenizer=spm_tokenizer, arch="mistral"
    )


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-qwen2") / "model", tokenizer=smollm2_tokenizer, arch="qwen2"
    )
