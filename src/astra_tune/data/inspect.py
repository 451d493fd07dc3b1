"""`astra data inspect`: what prepared data holds, and exactly what training will see."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astra_tune.data.filters import LanguageDetector, count_tokens
from astra_tune.data.formats import Record, record_kind, response_text, training_messages
from astra_tune.errors import DataError
from astra_tune.templates import RenderedChat, render_chat, render_text

SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")


@dataclass
class SplitSummary:
    """Counts and token-length percentiles of one file."""

    name: str
    records: int
    kinds: dict[str, int]
    token_percentiles: dict[str, int] = field(default_factory=dict)


@dataclass
class Inspection:
    """Everything `astra data inspect` prints."""

    base_model: str
    splits: list[SplitSummary]
    languages: dict[str, int]
    drops: dict[str, int]
    examples: list[tuple[Record, RenderedChat]]


def read_records(path: Path) -> list[Record]:
    """Canonical records from a prepared JSONL file (errors name file:line)."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"malformed JSON: {exc.msg}",
                where=f"{path}:{number}",
                fix="inspect reads prepared files; run `astra data prepare` on raw data first",
            ) from exc
        if not isinstance(record, dict) or not ({"messages", "chosen", "text"} & record.keys()):
            raise DataError(
                "not a canonical record (needs messages, prompt/chosen/rejected, or text)",
                where=f"{path}:{number}",
                fix="run `astra data prepare` on this file first",
            )
        records.append(record)
    return records


def inspect_data(target: Path, *, tokenizer: Any, base_model: str, examples: int = 3) -> Inspection:
    """Summarize a prepared directory (or one JSONL file) and render its first examples."""
    if target.is_dir():
        files = [target / name for name in SPLIT_FILES if (target / name).is_file()]
        if not files:
            raise DataError(
                f"{target} holds no train/val/test.jsonl",
                where=str(target),
                fix="point at the output directory of `astra data prepare`",
            )
        report_path = target / "report.json"
        drops = json.loads(report_path.read_text())["drops"] if report_path.is_file() else {}
    elif target.is_file():
        files, drops = [target], {}
    else:
        raise DataError(f"not found: {target}", fix="pass a prepared directory or a .jsonl file")

    detector = LanguageDetector()
    languages: Counter[str] = Counter()
    splits: list[SplitSummary] = []
    shown: list[Record] = []
    for path in files:
        records = read_records(path)
        summary = SplitSummary(
            name=path.stem, records=len(records), kinds=dict(Counter(map(record_kind, records)))
        )
        if records:
            lengths = np.array(
                count_tokens(tokenizer, [rendered_text(tokenizer, r) for r in records])
            )
            summary.token_percentiles = {
                f"p{q}": int(np.percentile(lengths, q)) for q in (5, 50, 95)
            } | {"max": int(lengths.max())}
        for record in records:
            answer = response_text(record)
            languages[detector.detect(answer)[0] if len(answer) >= 40 else "(short)"] += 1
        splits.append(summary)
        if len(shown) < examples:
            shown.extend(records[: examples - len(shown)])
    rendered = [(record, render_record(tokenizer, record)) for record in shown]
    return Inspection(base_model, splits, dict(languages.most_common()), drops, rendered)


def render_record(tokenizer: Any, record: Record) -> RenderedChat:
    """A record rendered as training sees it (preference pairs show prompt + chosen)."""
    messages = training_messages(record)
    if messages is not None:
        return render_chat(tokenizer, messages)
    encoded = tokenizer(record["text"], add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    ids = list(encoded["input_ids"])
    return RenderedChat(record["text"], ids, offsets, [True] * len(ids))  # type: ignore[arg-type]


def rendered_text(tokenizer: Any, record: Record) -> str:
    """The record as one string through the chat template (text records as they are)."""
    messages = training_messages(record)
    return record["text"] if messages is None else render_text(tokenizer, messages)
