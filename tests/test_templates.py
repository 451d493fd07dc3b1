from __future__ import annotations

from typing import Any

import pytest

from astra_tune.errors import ModelError
from astra_tune.templates import render_chat, render_text

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def trained_text(tokenizer: Any, rendered: Any) -> str:
    return tokenizer.decode(
        [i for i, t in zip(rendered.input_ids, rendered.trained, strict=True) if t]
    )


def test_loss_covers_each_answer_and_its_end_of_turn(smollm2_tokenizer: Any) -> None:
    rendered = render_chat(smollm2_tokenizer, CONVERSATION)
    assert (
        trained_text(smollm2_tokenizer, rendered) == "Hello! How can I help?<|im_end|>4<|im_end|>"
    )
    assert rendered.text == render_text(smollm2_tokenizer, CONVERSATION)
    assert (
        rendered.input_ids
        == smollm2_tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
    )


def test_train_on_prompt_trains_everything(smollm2_tokenizer: Any) -> None:
    rendered = render_chat(smollm2_tokenizer, CONVERSATION, train_on_prompt=True)
    assert rendered.trained_count == len(rendered.input_ids)


def test_conversation_without_answer_trains_nothing(smollm2_tokenizer: Any) -> None:
    rendered = render_chat(smollm2_tokenizer, [{"role": "user", "content": "Hello?"}])
    assert rendered.trained_count == 0


def test_tokenizer_without_template_is_refused(smollm2_tokenizer: Any) -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(ModelError, match="no chat template"):
        render_chat(NoTemplate(), CONVERSATION)
