"""Bundled sample datasets, addressed as `builtin:NAME` in data sources."""

from __future__ import annotations

from pathlib import Path

from astra_tune.errors import DataError
from astra_tune.recipe import SourceConfig

SAMPLES_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if (p / "train.jsonl").is_file())


def builtin_sources(name: str, template: SourceConfig) -> list[SourceConfig]:
    """The files of bundled dataset `name`: every .jsonl to split, but test.jsonl pinned to test."""
    directory = SAMPLES_DIR / name
    if not (directory / "train.jsonl").is_file():
        raise DataError(
            f"no bundled dataset called {name!r}",
            fix=f"bundled datasets: {', '.join(f'builtin:{n}' for n in available())}",
        )
    sources = [template.model_copy(update={"path": str(directory / "train.jsonl")})]
    extra = sorted(directory.glob("*.jsonl"))
    sources += [
        template.model_copy(update={"path": str(path)})
        for path in extra
        if path.name not in ("train.jsonl", "test.jsonl")
    ]
    if (directory / "test.jsonl").is_file():
        sources.append(
            template.model_copy(update={"path": str(directory / "test.jsonl"), "assign_to": "test"})
        )
    return sources
