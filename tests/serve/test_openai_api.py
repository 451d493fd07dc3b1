"""The official `openai` client against a real server."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL, Server


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_are_listed(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, seed=1,
        temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("length", "stop")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5  # the chat template's tokens are counted
    assert 1 <= reply.usage.completion_tokens <= 12
    again = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, seed=1,
        temperature=0,
    )  # fmt: skip
    assert again.choices[0].message.content == choice.message.content  # greedy is repeatable


def test_chat_completion_streams_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["length"]
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 8
    plain = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count"}], max_tokens=8, temperature=0
    )
    assert text == plain.choices[0].message.content


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                      temperature=0)  # fmt: skip
    assert reply.object == "text_completion"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == reply.choices[0].text


def test_json_mode_returns_json(client: openai.OpenAI) -> None:
    import json

    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object"}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    content = reply.choices[0].message.content or ""
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still a JSON prefix, which starts an object
        assert content.lstrip().startswith("{")


def test_embeddings_are_normalized(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=["red apple", "green apple", "a car"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3
    assert all(len(v) == 64 for v in vectors)  # the tiny model's hidden size
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vectors)
    assert vectors[0] != vectors[2]
    assert result.usage.prompt_tokens > 3


def test_errors_use_openai_envelopes(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    assert "tiny-f16:latest" in missing.value.message  # says what is served
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert "messages" in bad.value.message
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 5000}]
        )
    assert long.value.code == "context_length_exceeded"
    assert "4096" in long.value.message
    with pytest.raises(openai.BadRequestError) as streamed:  # refused before streaming starts
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 5000}], stream=True
        )
    assert streamed.value.code == "context_length_exceeded"
    raw = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert raw.status_code == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"
