"""A raw row and where it came from, and the text-file reading every source shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_tune.errors import DataError

DOCUMENT_SUFFIXES = {".md", ".markdown", ".html", ".htm", ".txt"}
BUILTIN_PREFIX = "builtin:"
TABLE_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Row:
    """One raw example and where it came from; `fixed_format` skips detection (documents)."""

    data: dict[str, Any]
    location: str
    fixed_format: str | None = None


def source_path(spec: str, base_dir: Path | None) -> str:
    """Where a `data.sources` path points when its recipe lives in `base_dir`.

    A relative local path means "next to the recipe"; bundled data (`builtin:`) and hub
    ids (`org/name` that is not a local path there) stay as written.
    """
    if spec.startswith(BUILTIN_PREFIX) or base_dir is None:
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    local = base_dir / path
    if local.exists() or not looks_like_hub_id(spec, base_dir):
        return str(local)
    return spec


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


def label(path: Path) -> str:
    """How records name their file: builtin:NAME/file for bundled data, else a path
    relative to the working directory when it is inside it (stable across machines)."""
    from astra_tune.data.samples import SAMPLES_DIR

    resolved = path.resolve()
    if resolved.is_relative_to(SAMPLES_DIR):
        return f"{BUILTIN_PREFIX}{resolved.relative_to(SAMPLES_DIR)}"
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_text(path: Path) -> str:
    """Decode a text file: UTF-8 with or without BOM, or UTF-16 (with BOM, or LE without)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # UTF-16 without a BOM: every other byte of ASCII text is zero.
        if raw[1:200:2].count(0) > len(raw[1:200:2]) // 2:
            return raw.decode("utf-16-le")
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path.name} is not UTF-8 or UTF-16 text (invalid byte 0x{raw[exc.start]:02x})",
            where=f"{path}:{line}",
            fix="re-save the file as UTF-8",
        ) from exc
