"""Prepared records -> token ids and loss masks, with the pre-flight check.

Rendering goes through `templates.render_chat`, the same code `astra data inspect` shows,
so what users inspected is what is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astra_tune.data.formats import Record, training_messages
from astra_tune.data.inspect import read_records
from astra_tune.errors import DataError
from astra_tune.templates import RenderedChat, render_chat


@dataclass
class TokenizedSplit:
    """Features for the trainer plus what the pre-flight check found."""

    features: list[dict[str, list[int]]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    no_trained_tokens: list[tuple[str, RenderedChat]] = field(default_factory=list)
    truncated: list[tuple[str, RenderedChat]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(f["input_ids"]) for f in self.features)


def render_for_training(tokenizer: Any, record: Record, *, train_on_prompt: bool) -> RenderedChat:
    """A record as trained: chat/preference through the template, text plus end-of-text."""
    messages = training_messages(record)
    if messages is not None:
        return render_chat(tokenizer, messages, train_on_prompt=train_on_prompt)
    text = record["text"] + (tokenizer.eos_token or "")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    return RenderedChat(text, ids, offsets, [True] * len(ids))  # type: ignore[arg-type]


def tokenize_split(
    records: list[Record], tokenizer: Any, *, max_seq_len: int, train_on_prompt: bool
) -> TokenizedSplit:
    """Render, truncate to max_seq_len and record every example that would train badly."""
    split = TokenizedSplit()
    for record in records:
        rendered = render_for_training(tokenizer, record, train_on_prompt=train_on_prompt)
        source = str(record.get("source", "?"))
        if not any(rendered.trained):
            split.no_trained_tokens.append((source, rendered))
            continue
        ids, mask = rendered.input_ids, [int(t) for t in rendered.trained]
        if len(ids) > max_seq_len:
            if any(mask[max_seq_len:]):
                split.truncated.append((source, rendered))
            ids, mask = ids[:max_seq_len], mask[:max_seq_len]
            if not any(mask):
                continue  # nothing left to learn from after the cut
        split.features.append({"input_ids": ids, "assistant_masks": mask})
        split.sources.append(source)
    return split


def load_and_tokenize(
    path: Path, tokenizer: Any, *, max_seq_len: int, train_on_prompt: bool
) -> TokenizedSplit:
    """Read one prepared split file and tokenize it."""
    return tokenize_split(
        read_records(path), tokenizer, max_seq_len=max_seq_len, train_on_prompt=train_on_prompt
    )


def preflight(split: TokenizedSplit, *, max_seq_len: int, truncate_ok: bool, name: str) -> None:
    """Fail before the first step if examples would teach nothing or lose their answers."""
    if split.no_trained_tokens:
        source, rendered = split.no_trained_tokens[0]
        raise DataError(
            f"{len(split.no_trained_tokens)} {name} example(s) have no trained tokens (no "
            f"assistant answer reaches the loss). First one, as rendered:\n{rendered.text}",
            where=source,
            fix="give every example an assistant turn, or set train.train_on_prompt: true",
        )
    if split.truncated and not truncate_ok:
        source, rendered = split.truncated[0]
        raise DataError(
            f"{len(split.truncated)} {name} example(s) are longer than max_seq_len={max_seq_len} "
            f"and the cut falls inside an answer (first: {len(rendered.input_ids)} tokens)",
            where=source,
            fix="raise train.max_seq_len, drop long examples (data.filters.max_response_tokens), "
            "or pass --truncate-ok to train on the cut examples",
        )
    if not split.features:
        raise DataError(
            f"the {name} split has no examples to train on", fix="check the prepared data"
        )
