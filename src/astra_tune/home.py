"""ASTRA_HOME: where Astra Tune keeps its model cache, runs and registry."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ASTRA_HOME"


def astra_home() -> Path:
    """The home directory: `$ASTRA_HOME`, or `~/.astra` when unset. Not created here."""
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser().resolve() if value else Path.home() / ".astra"


def models_dir() -> Path:
    """Cache of prepared base models (dequantized GGUFs, hub snapshots)."""
    return astra_home() / "models"


def runs_dir() -> Path:
    """Default parent of run directories."""
    return astra_home() / "runs"


def registry_dir() -> Path:
    """Content-addressed model registry."""
    return astra_home() / "registry"
