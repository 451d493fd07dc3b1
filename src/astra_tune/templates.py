"""Render conversations through the model's own chat template, with the loss mask.

The same rendering is used to train and to show users what training will see
(`astra data inspect`), so the two can never disagree. Loss covers each assistant turn's
content and its end-of-turn token (so the model learns to stop), nothing of the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from astra_tune.errors import ModelError

Message = dict[str, str]


@dataclass(frozen=True)
class RenderedChat:
    """A conversation as the model sees it: text, token ids, and which tokens carry loss."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    trained: list[bool]

    @property
    def trained_count(self) -> int:
        return sum(self.trained)


def render_chat(
    tokenizer: Any, messages: Sequence[Message], *, train_on_prompt: bool = False
) -> RenderedChat:
    """Apply the chat template and mark the tokens of every assistant turn (plus end-of-turn)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            "the tokenizer has no chat template, so chat records cannot be formatted",
            fix="use an instruct model, or name a template (chatml, llama3, ...) in the recipe",
        )
    full = _template(tokenizer, messages, generation_prompt=False)
    spans = [] if train_on_prompt else _assistant_spans(tokenizer, messages, full)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    if train_on_prompt:
        trained = [True] * len(offsets)
    else:
        trained = [any(a <= start < b for a, b in spans) for start, _ in offsets]
    return RenderedChat(full, list(encoded["input_ids"]), offsets, trained)  # type: ignore[arg-type]


def render_text(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The conversation as one string through the chat template (plain join without one)."""
    if getattr(tokenizer, "chat_template", None):
        return _template(tokenizer, messages, generation_prompt=False)
    return "\n".join(m["content"] for m in messages)


def _template(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def _assistant_spans(
    tokenizer: Any, messages: Sequence[Message], full: str
) -> list[tuple[int, int]]:
    """Character spans of each assistant answer, up to and including its end-of-turn token.

    Found by rendering the conversation prefix by prefix: the text an assistant turn adds
    after the generation prompt is exactly what the model must learn to produce.
    """
    eos = tokenizer.eos_token or ""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:index], generation_prompt=True) if index else ""
        upto = _template(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ModelError(
                "the chat template renders earlier turns differently as the conversation "
                "grows, so the assistant turns cannot be located for the loss mask",
                fix="set train_on_prompt: true, or use a template that is prefix-stable",
            )
        spans.append((len(before), len(before) + answer_length(upto[len(before) :], eos)))
    return spans


def answer_length(segment: str, eos: str) -> int:
    """How much of the text an assistant turn adds is its answer: up to and including the
    last end-of-turn token, else everything but trailing whitespace."""
    return segment.rfind(eos) + len(eos) if eos and eos in segment else len(segment.rstrip())
