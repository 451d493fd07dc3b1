"""The official `ollama` client against a real server."""

from __future__ import annotations

import ollama
import pytest

from tests.serve.conftest import MODEL, Server


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_chat_streamed_and_not(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    options = {"temperature": 0, "num_predict": 10}
    whole = client.chat(model=MODEL, messages=messages, options=options)
    assert whole.done is True
    assert whole.done_reason == "length"
    assert whole.eval_count == 10
    assert whole.prompt_eval_count is not None
    assert whole.prompt_eval_count > 5
    assert whole.total_duration is not None
    assert whole.eval_duration is not None
    assert 0 < whole.eval_duration < whole.total_duration  # nanoseconds, consistent
    parts = list(client.chat(model=MODEL, messages=messages, options=options, stream=True))
    assert [p.done for p in parts][-1] is True
    assert all(p.done is False for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt="Why is the sky blue?",
                            options={"temperature": 0, "num_predict": 5})  # fmt: skip
    assert reply.done_reason == "length"
    assert reply.eval_count == 5
    assert reply.response
    raw = client.generate(model=MODEL, prompt="abc", raw=True, options={"num_predict": 3})
    assert raw.prompt_eval_count is not None
    assert raw.prompt_eval_count < (reply.prompt_eval_count or 0)  # no template around it


def test_tags_show_ps_version(client: ollama.Client, server: Server) -> None:
    client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
    (listed,) = client.list().models
    assert listed.model == MODEL
    assert listed.details is not None
    assert listed.details.format == "gguf"
    assert listed.details.family == "llama"
    assert listed.details.quantization_level == "F16"
    shown = client.show(MODEL)
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.block_count"] == 2
    assert shown.modelinfo["llama.embedding_length"] == 64
    assert "<|im_start|>" in (shown.template or "")
    assert 'PARAMETER stop "<|im_end|>"' in (shown.modelfile or "")
    assert [m.model for m in client.ps().models] == [MODEL]
    import httpx

    assert httpx.get(f"{server.url}/api/version", timeout=5).json()["version"]


def test_embed(client: ollama.Client) -> None:
    result = client.embed(model=MODEL, input=["one", "two"])
    assert len(result.embeddings) == 2
    assert len(result.embeddings[0]) == 64


def test_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    assert "not served here" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.generate(model=MODEL, prompt="x", options={"bogus": 1})
    assert bad.value.status_code == 400
    assert "unknown option 'bogus'" in bad.value.error
