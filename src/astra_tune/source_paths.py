"""What a `data.sources` entry names: bundled data, a local file or directory, a hub
dataset or a URL to crawl, and where a relative one is. Shared by the recipe (which
resolves paths next to its file) and the data readers, so both read an entry the same
way."""

from __future__ import annotations

import re
from pathlib import Path

DOCUMENT_SUFFIXES = {".md", ".markdown", ".html", ".htm", ".txt"}
TABLE_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"}
BUILTIN_PREFIX = "builtin:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
URL = re.compile(r"^https?://[^/\s]+", re.IGNORECASE)


def source_path(spec: str, base_dir: Path | None) -> str:
    """Where a `data.sources` path points when its recipe lives in `base_dir`.

    A relative local path means "next to the recipe"; bundled data (`builtin:`) and hub
    ids (`org/name` that is not a local path there) stay as written.
    """
    if spec.startswith(BUILTIN_PREFIX) or looks_like_url(spec) or base_dir is None:
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    local = base_dir / path
    if local.exists() or not looks_like_hub_id(spec, base_dir):
        return str(local)
    return spec


def looks_like_url(text: str) -> bool:
    """An http(s) URL: docs to crawl."""
    return URL.match(text) is not None


def looks_like_hub_id(text: str, base_dir: Path | None = None) -> bool:
    """org/name, and not a local path that is missing: no file suffix we read, and no
    existing directory as its first part (`data/missing.jsonl` is a typo, not a dataset)."""
    if HUB_ID.match(text) is None:
        return False
    org, _, name = text.partition("/")
    suffix = Path(name).suffix.lower()
    return (
        suffix not in TABLE_SUFFIXES | DOCUMENT_SUFFIXES
        and not ((base_dir or Path()) / org).is_dir()
    )
