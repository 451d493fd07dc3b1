"""lineage.json: what went into a trained model, so it can be traced and reproduced."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from astra_tune.digests import file_sha256
from astra_tune.recipe import Recipe

LIBRARIES = (
    "astra-tune",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
)


def build_lineage(
    recipe: Recipe, data_dir: Path, *, dtype: str, trainable: int, total: int
) -> dict[str, Any]:
    """Base model and data content hashes, hyperparameters, library versions, git commit."""
    from astra_tune.models.resolve import resolve_model

    base = resolve_model(recipe.base_model).path
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "name": recipe.name,
        "base_model": {
            "spec": recipe.base_model,
            "path": str(base),
            "sha256": {p.name: file_sha256(p) for p in sorted(base.glob("*.safetensors"))},
        },
        "data": {
            "dir": str(data_dir),
            "sha256": {p.name: file_sha256(p) for p in sorted(data_dir.glob("*.jsonl"))},
        },
        "method": recipe.train.method,
        "dtype": dtype,
        "parameters": {"trainable": trainable, "total": total},
        "hyperparameters": recipe.train.model_dump(mode="json"),
        "seed": recipe.seed,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git on this machine: lineage simply has no commit
    return result.stdout.strip() or None if result.returncode == 0 else None
