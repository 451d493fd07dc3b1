"""Read data sources into rows, each with the place it came from (file:line).

A row is a plain dict as the source holds it; `formats.py` decides what it means.
Documents (.md/.html/.txt directories) are the exception: `documents.py` turns them
straight into canonical records, because their shape comes from headings, not fields.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astra_tune.data.rows import Row, label, read_text
from astra_tune.errors import DataError
from astra_tune.recipe import SourceConfig
from astra_tune.source_paths import (
    BUILTIN_PREFIX,
    DOCUMENT_SUFFIXES,
    TABLE_SUFFIXES,
    looks_like_hub_id,
    looks_like_url,
    source_path,
)


@dataclass
class ReadStats:
    """What reading saw besides rows: lines skipped as malformed, with the first few;
    what each URL source's crawl fetched and skipped."""

    bad_lines: int = 0
    bad_examples: list[str] | None = None
    crawls: dict[str, Any] = field(default_factory=dict)  # URL -> crawl.CrawlStats

    def skip(self, location: str, message: str) -> None:
        self.bad_lines += 1
        if self.bad_examples is None:
            self.bad_examples = []
        if len(self.bad_examples) < 20:
            self.bad_examples.append(f"{location}: {message}")


def expand_sources(sources: list[SourceConfig]) -> list[SourceConfig]:
    """Replace `builtin:NAME` entries by the files of that bundled dataset."""
    expanded: list[SourceConfig] = []
    for source in sources:
        if not source.path.startswith(BUILTIN_PREFIX):
            expanded.append(source)
            continue
        from astra_tune.data.samples import builtin_sources

        expanded.extend(builtin_sources(source.path.removeprefix(BUILTIN_PREFIX), source))
    return expanded


def read_rows(source: SourceConfig, *, skip_bad_lines: bool, stats: ReadStats) -> Iterator[Row]:
    """Every row of one source, in order."""
    path = Path(source.path).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            yield from _saved_dataset(path)
            return
        from astra_tune.data.documents import read_documents

        yield from read_documents(path)
        return
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            yield from _jsonl(path, skip_bad_lines, stats)
        elif suffix == ".json":
            yield from _json(path)
        elif suffix in (".csv", ".tsv"):
            yield from _delimited(path, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            yield from _parquet(path)
        elif suffix in DOCUMENT_SUFFIXES:
            from astra_tune.data.documents import read_document

            yield from read_document(path)
        else:
            known = ", ".join(sorted(TABLE_SUFFIXES | DOCUMENT_SUFFIXES))
            raise DataError(
                f"cannot read {path.name}: unknown file type {suffix or '(none)'}",
                where=str(path),
                fix=f"use one of {known}, or a directory of documents",
            )
        return
    if looks_like_url(source.path):
        from astra_tune.data.crawl import CrawlStats, crawl_rows

        crawl = stats.crawls.setdefault(source.path, CrawlStats())
        yield from crawl_rows(source.path, source.crawl, stats=crawl)
        return
    if looks_like_hub_id(source.path):
        yield from _hub_dataset(source)
        return
    raise DataError(
        f"file not found: {source.path}",
        where=str(path.absolute()),
        fix="check the path; a hub dataset is written as org/name",
    )


def _jsonl(path: Path, skip_bad_lines: bool, stats: ReadStats) -> Iterator[Row]:
    name = label(path)
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        location = f"{name}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"malformed JSON: {exc.msg} (column {exc.colno})"
            if skip_bad_lines:
                stats.skip(location, message)
                continue
            raise DataError(
                message,
                where=location,
                fix="fix that line, or pass --skip-bad-lines to drop such lines (they are counted)",
            ) from exc
        if not isinstance(data, dict):
            message = f"each line must be a JSON object, not {type(data).__name__}"
            if skip_bad_lines:
                stats.skip(location, message)
                continue
            raise DataError(message, where=location, fix="write one {...} object per line")
        yield Row(data, location)


def _json(path: Path) -> Iterator[Row]:
    """A JSON array of objects, or an object whose one list-valued field holds them.

    The standard parser forgets positions, so the array is walked element by element
    with `raw_decode` to give every record its line number.
    """
    text = read_text(path)
    decoder = json.JSONDecoder()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON: {exc.msg}",
            where=f"{path}:{exc.lineno}",
            fix="fix the JSON syntax there",
        ) from exc
    if isinstance(whole, dict):
        lists = [key for key, value in whole.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(
                f"{path.name} holds an object, so it must have exactly one list of records; "
                f"found {len(lists)} list fields ({', '.join(lists) or 'none'})",
                where=str(path),
                fix="save the records as a top-level JSON array, or as JSON lines",
            )
        start = _find_array_of_key(text, lists[0], decoder)
    elif isinstance(whole, list):
        start = text.index("[")
    else:
        raise DataError(
            f"{path.name} must hold a JSON array of records",
            where=str(path),
            fix="wrap them in [...]",
        )
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    name = label(path)
    position = start + 1
    index = 0
    while True:
        position = _skip_separators(text, position)
        if position >= len(text) or text[position] == "]":
            return
        item, end = decoder.raw_decode(text, position)
        index += 1
        location = f"{name}:{bisect.bisect_right(newlines, position - 1) + 1}"
        if not isinstance(item, dict):
            raise DataError(
                f"record {index} is a {type(item).__name__}, not an object",
                where=location,
                fix="each record must be a {...} object",
            )
        yield Row(item, location)
        position = end


def _skip_separators(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n,":
        position += 1
    return position


def _find_array_of_key(text: str, key: str, decoder: json.JSONDecoder) -> int:
    """Offset of the '[' that opens `key`'s list at the top level of a JSON object."""
    position = _skip_separators(text, text.index("{") + 1)
    while position < len(text):
        name, position = decoder.raw_decode(text, position)
        position = text.index(":", position) + 1
        while text[position] in " \t\r\n":
            position += 1
        if name == key:
            return position
        _, position = decoder.raw_decode(text, position)
        position = _skip_separators(text, position)
    raise AssertionError(f"key {key!r} vanished while re-reading the JSON")  # parsed above


def _delimited(path: Path, delimiter: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path.name} has no header row", where=f"{path}:1", fix="add column names")
    start = 2
    name = label(path)
    for record in reader:
        # line_num is where the record ended; quoted fields may span lines.
        location = f"{name}:{start}"
        start = reader.line_num + 1
        if None in record:
            raise DataError(
                f"row has more fields than the header ({len(reader.fieldnames)})",
                where=location,
                fix="quote fields that contain the delimiter",
            )
        yield Row({k: v for k, v in record.items() if v not in (None, "")}, location)


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    name = label(path)
    for index, record in enumerate(table.to_pylist(), start=1):
        yield Row(record, f"{name}:{index}")


def _saved_dataset(path: Path) -> Iterator[Row]:
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(path))
    parts = {"": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    for split, dataset in parts.items():
        name = f"{path}[{split}]" if split else str(path)
        for index, record in enumerate(dataset, start=1):
            yield Row(dict(record), f"{name}:{index}")


def missing_sources(entries: Any, base_dir: Path | None = None) -> list[tuple[int, str]]:
    """(index, path) of raw `data.sources` entries naming a local path that is not there.

    Relative paths are looked up next to the recipe (`base_dir`), as loading it does.
    Bundled data (`builtin:`), hub ids and URLs are not checked: they need no local file.
    """
    missing = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        spec = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(spec, str) or spec.startswith(BUILTIN_PREFIX) or looks_like_url(spec):
            continue
        where = source_path(spec, base_dir)
        if not Path(where).expanduser().exists() and not looks_like_hub_id(spec, base_dir):
            missing.append((index, where))
    return missing


def _hub_dataset(source: SourceConfig) -> Iterator[Row]:
    from astra_tune.models.resolve import hub_offline

    offline = hub_offline(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    where = f"https://huggingface.co/datasets/{source.path}"
    if offline:
        raise DataError(
            f"{source.path} looks like a Hugging Face hub dataset, and the hub is switched off "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)",
            where=where,
            fix="unset HF_HUB_OFFLINE to download it, or pass a local file or directory",
        )
    from datasets import load_dataset

    try:
        dataset = load_dataset(
            source.path, name=source.subset, split=source.split, revision=source.revision
        )
    except (ConnectionError, OSError) as exc:
        raise DataError(
            f"cannot load hub dataset {source.path}: {exc}",
            where=where,
            fix="check the network and the dataset id (and subset/split/revision)",
        ) from exc
    except ValueError as exc:  # datasets raises ValueError for a wrong split or subset
        raise DataError(
            f"hub dataset {source.path}: {exc}",
            where=where,
            fix="check the subset, split and revision in the source",
        ) from exc
    for index, record in enumerate(dataset, start=1):
        yield Row(dict(record), f"{source.path}[{source.split}]:{index}")
