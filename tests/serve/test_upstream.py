"""A model name forwarded to another OpenAI-compatible server (here: a second astra serve)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from tests.serve.conftest import MODEL, Server, start_server, stop


@pytest.fixture(scope="module")
def gateway(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("gateway") / "serve.yaml"
    config.write_text(
        "upstreams:\n"
        f"  - {{name: remote, base_url: '{server.url}/v1', model: '{MODEL}'}}\n"
        f"  - {{name: broken, base_url: '{server.url}/v1', model: 'missing'}}\n"
    )
    running = start_server(Path("unused.gguf"), "--config", str(config), serve_file=False)
    yield running
    stop(running)


def test_forwarded_chat_matches_the_upstream(server: Server, gateway: Server) -> None:
    direct = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    via = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    assert sorted(m.id for m in via.models.list()) == ["broken:latest", "remote:latest"]
    messages = [{"role": "user", "content": "Hello"}]
    want = direct.chat.completions.create(model=MODEL, messages=messages, max_tokens=8,
                                          temperature=0)  # fmt: skip
    got = via.chat.completions.create(model="remote", messages=messages, max_tokens=8,
                                      temperature=0)  # fmt: skip
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage is not None
    assert got.usage.completion_tokens == 8
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in via.chat.completions.create(
            model="remote", messages=messages, max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == want.choices[0].message.content
    ollama_reply = ollama.Client(host=gateway.url).chat(
        model="remote", messages=messages, options={"num_predict": 8, "temperature": 0}
    )
    assert ollama_reply.eval_count == 8
    samples = gateway.metrics()
    assert samples["astra:generation_tokens_total{model=remote:latest,version=upstream}"] == 24
    assert (
        samples["astra:time_to_first_token_seconds_count{model=remote:latest,version=upstream}"]
        == 3
    )


def test_upstream_errors_keep_their_status(gateway: Server) -> None:
    via = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        via.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert "upstream" in caught.value.message
    assert "missing" in caught.value.message
