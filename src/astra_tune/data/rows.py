"""A raw row and where it came from, and the text-file reading every source shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_tune.errors import DataError
from astra_tune.source_paths import BUILTIN_PREFIX, DOCUMENT_SUFFIXES, TABLE_SUFFIXES

__all__ = ["BUILTIN_PREFIX", "DOCUMENT_SUFFIXES", "TABLE_SUFFIXES", "Row", "label", "read_text"]


@dataclass(frozen=True)
class Row:
    """One raw example and where it came from; `fixed_format` skips detection (documents)."""

    data: dict[str, Any]
    location: str
    fixed_format: str | None = None


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
