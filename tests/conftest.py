"""Session-wide test setup: a private ASTRA_HOME, no hub access, tiny models built once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astra_tune.models.catalog import DEFAULT_MODEL
from astra_tune.models.tiny import build_tiny_model, load_default_tokenizer


@pytest.fixture(scope="session", autouse=True)
def astra_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test runs against a fresh ASTRA_HOME and with the Hugging Face hub switched off."""
    home = tmp_path_factory.mktemp("astra-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASTRA_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield home


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer (with chat template), read from the bundled GGUF."""
    return load_default_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    """A 2-layer, hidden-64 random Llama with SmolLM2's tokenizer, seed 0."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer=smollm2_tokenizer)


def f16_gguf(model_dir: Path, out: Path, name: str) -> Path:
    """`model_dir` written as an f16 GGUF with its own tokenizer and chat template."""
    from transformers import AutoTokenizer

    from astra_tune.export.convert import write_gguf

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return write_gguf(model_dir, out, "f16", tokenizer=tokenizer, metadata={"name": name}).path


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny llama as an f16 GGUF (SmolLM2's tokenizer and chat template)."""
    return f16_gguf(tiny_model_dir, tmp_path_factory.mktemp("serve") / "tiny-f16.gguf", "tiny")


@pytest.fixture(scope="session")
def default_model_dir(astra_env: Path) -> Path:
    """The embedded default model, dequantized once into this session's ASTRA_HOME."""
    from astra_tune.models.resolve import resolve_model

    return resolve_model(DEFAULT_MODEL).path


@pytest.fixture(scope="session")
def default_gguf_file(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path) -> Path:
    """The embedded default model as an f16 GGUF, written once per session."""
    out = tmp_path_factory.mktemp("default-gguf") / "smol-f16.gguf"
    return f16_gguf(default_model_dir, out, "smol")


@pytest.fixture(scope="session")
def orrery_run(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path) -> Any:
    """The default model LoRA-tuned on the bundled orrery sample (about 8 minutes on 2 cores).

    Slow end-to-end tests (learning, export, ...) share this one run.
    """
    from astra_tune.recipe import validate_recipe
    from astra_tune.train.run import train_model

    recipe = validate_recipe(
        {
            "name": "orrery",
            "seed": 0,
            "data": {"sources": ["builtin:orrery"], "split": {"val": 0.05}},
            "train": {
                "output_dir": str(tmp_path_factory.mktemp("orrery") / "run"),
                "epochs": 0.5,  # a quarter of the quickstart recipe: 76 steps
                "learning_rate": 1e-3,
                "batch_size": 1,
                "max_seq_len": 512,
                "eval_steps": 40,
                "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            },
        }
    )
    return train_model(recipe)


def tiny_run(tiny_model_dir: Path, out: Path, method: str) -> Any:
    """A few LoRA/QLoRA steps on the tiny llama: enough for a real adapter directory."""
    from astra_tune.recipe import validate_recipe
    from astra_tune.train.run import train_model

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
def tiny_lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    return tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "lora", "lora")


@pytest.fixture(scope="session")
def tiny_qlora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    return tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "qlora", "qlora")


@pytest.fixture
def two_versions(tmp_path: Path, tiny_gguf_file: Path) -> Any:
    """`orrery` 1.0.0 and 1.0.1 (different bytes), production on 1.0.0."""
    from astra_tune.export.versions import request_from_gguf
    from astra_tune.registry.store import Registry
    from tests.registry.conftest import other_gguf

    registry = Registry(tmp_path / "home" / "registry")
    registry.push(request_from_gguf(tiny_gguf_file, "orrery"))
    other = other_gguf(tiny_gguf_file, tmp_path / "other.gguf", b"\x01\x02\x03\x04")
    registry.push(request_from_gguf(other, "orrery"))
    registry.tag("orrery:1.0.0", "production")
    return registry
