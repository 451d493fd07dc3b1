"""Tiny models of each supported architecture, and tiny LoRA/QLoRA runs, built once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astra_tune.export.verify import PASSAGES
from astra_tune.models.tiny import build_spm_tokenizer, build_tiny_model
from astra_tune.recipe import validate_recipe
from astra_tune.train.run import TrainResult, train_model

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


def tiny_run(tiny_model_dir: Path, out: Path, method: str) -> TrainResult:
    """A few LoRA/QLoRA steps on the tiny llama: enough for a real adapter directory."""
    recipe = validate_recipe(
        {
            "name": f"tiny-{method}",
            "base_model": str(tiny_model_dir),
            "seed": 0,
            "data": {"sources": ["builtin:orrery"], "split": {"val": 0.05, "test": 0.0}},
            "train": {
                "method": method,
                "output_dir": str(out),
                "max_steps": 4,
                "batch_size": 2,
                "max_seq_len": 192,
                "learning_rate": 5e-3,
                "eval_steps": None,
                "save_steps": 4,
                "warmup_ratio": 0.0,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            },
        }
    )
    return train_model(recipe)


@pytest.fixture(scope="session")
def tiny_lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> TrainResult:
    return tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "lora", "lora")


@pytest.fixture(scope="session")
def tiny_qlora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> TrainResult:
    return tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "qlora", "qlora")
