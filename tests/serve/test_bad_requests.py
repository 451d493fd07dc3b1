"""Malformed requests get a 400 in their API's own envelope, never a 422, a 500 or a reset.

Each row was a 500 (or a silently accepted value) before the wire types: the table is
the list of what a user tried. Every case goes through one keep-alive connection, and a
valid request follows each one on it, so a dropped connection would show as an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.serve.conftest import MODEL, Server


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def _raw(text: str) -> bytes:
    return text.encode("utf-8")


NESTED = b"[" * 100_000 + b"]" * 100_000
SURROGATE = _raw(f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "\\ud800"}}]}}')
NAN = _raw(f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "x"}}], '
           '"temperature": NaN}')  # fmt: skip

# (route, body, the field the error must name or a phrase it must contain)
OPENAI_CASES: list[tuple[str, Any, str]] = [
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": 123}]},
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    ("/v1/chat/completions", _chat(max_tokens="ten"), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens="ten", stream=True), "max_tokens"),
    ("/v1/chat/completions", SURROGATE, "surrogate"),
    ("/v1/chat/completions", NESTED, "nested too deeply"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, "prompt is empty"),
    ("/v1/embeddings", {"model": MODEL, "input": ""}, "input"),
    ("/v1/chat/completions", _chat(temperature=-0.1), "temperature"),
    ("/v1/chat/completions", _chat(temperature=2.5), "temperature"),
    ("/v1/chat/completions", NAN, "finite"),
    ("/v1/chat/completions", _chat(top_p=0), "top_p"),
    ("/v1/chat/completions", _chat(top_p=1.5), "top_p"),
    ("/v1/chat/completions", _chat(max_tokens=0), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens=-3), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens=2.5), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens=True), "max_tokens"),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        "messages[0].role",
    ),
    ("/v1/chat/completions", _chat(stream="yes"), "stream"),
    ("/v1/chat/completions", _chat(n=2), "n=1"),
    ("/v1/chat/completions", _chat(logit_bias={"hello": 1}), "token ids"),
    ("/v1/chat/completions", _chat(logit_bias={"\u00b2": 1}), "token ids"),
    ("/v1/chat/completions", _chat(logit_bias={"99999999": 1}), "logit_bias names token"),
    (
        "/v1/chat/completions",
        _chat(logit_bias={"99999999": 1}, stream=True),
        "logit_bias names token",
    ),
    (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ],
        },
        "'image_url' are not supported",
    ),
    ("/v1/chat/completions", b"\xc3\x28{", "request body"),
    ("/v1/chat/completions", b"", "request body is required"),
    ("/v1/chat/completions", [1, 2], "JSON object"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "echo": True}, "echo"),
]
OLLAMA_CASES: list[tuple[str, Any, str]] = [
    ("/api/chat", {"model": MODEL, "messages": ["hi"]}, "messages[0]"),
    (
        "/api/chat",
        {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
    ),
    (
        "/api/chat",
        {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
        "messages[0].role",
    ),
    ("/api/generate", {"model": MODEL, "prompt": 42}, "prompt"),
    (
        "/api/generate",
        {"model": MODEL, "prompt": "x", "options": {"temperature": "hot"}},
        "temperature",
    ),
    (
        "/api/generate",
        {"model": MODEL, "prompt": "x", "options": {"temprature": 1}},
        "unknown option",
    ),
    ("/api/generate", {"model": MODEL, "prompt": "x", "stream": "yes"}, "stream"),
    ("/api/generate", {"model": MODEL, "prompt": "x", "format": {"type": "object"}}, "JSON schema"),
    ("/api/embed", {"model": MODEL, "input": ""}, "input"),
    ("/api/show", {}, "'model' is required"),
    ("/api/chat", b"{not json", "not JSON"),
    ("/api/create", {"model": "x", "files": {"a.gguf": "sha256:../../etc/passwd"}}, "files"),
    ("/api/create", {"model": "x", "from": MODEL, "template": "{{ .Prompt"}, "template"),
]


def _send(client: httpx.Client, route: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(route, content=body, headers={"content-type": "application/json"})
    return client.post(route, json=body)


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize(("route", "body", "names"), OPENAI_CASES)
def test_openai_refusals_are_400_in_openai_envelope(
    http: httpx.Client, route: str, body: Any, names: str
) -> None:
    response = _send(http, route, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert names in error["message"] or names == error["param"], error
    # The same connection still serves a valid request.
    after = http.post("/v1/chat/completions", json=_chat(max_tokens=2, temperature=0))
    assert after.status_code == 200
    assert after.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(("route", "body", "names"), OLLAMA_CASES)
def test_ollama_refusals_are_400_in_ollama_envelope(
    http: httpx.Client, route: str, body: Any, names: str
) -> None:
    response = _send(http, route, body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert names in response.json()["error"]
    after = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "hi", "stream": False,
              "options": {"num_predict": 2, "temperature": 0}},
    )  # fmt: skip
    assert after.status_code == 200
    assert after.json()["done_reason"] == "length"


def test_field_paths_reach_the_official_clients(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       temperature=7)  # fmt: skip
    assert bad.value.param == "temperature"
    assert "less than or equal to 2" in bad.value.message
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).chat(
            model=MODEL, messages=[{"role": "user", "content": "x"}], options={"top_k": "many"}
        )
    assert refused.value.status_code == 400
    assert "top_k" in refused.value.error


def test_unknown_fields_are_ignored_and_curl_bodies_are_json(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json=_chat(max_tokens=3, vendor_field={"a": 1}))
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 3
    # curl -d sends application/x-www-form-urlencoded; Ollama reads the body as JSON anyway.
    form = http.post(
        "/api/generate",
        content=b'{"model": "%s", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}'
        % MODEL.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200
    assert form.json()["eval_count"] == 2


def test_renamed_roles_and_null_content_are_read_as_before(http: httpx.Client) -> None:
    # Ollama's Go decoder leaves a null content empty; OpenAI's older "function" role is a
    # tool result and "developer" its newer name for system.
    ollama_null = http.post(
        "/api/chat",
        json={"model": MODEL, "stream": False, "options": {"num_predict": 2},
              "messages": [{"role": "assistant", "content": None},
                           {"role": "user", "content": "hi"}]},
    )  # fmt: skip
    assert ollama_null.status_code == 200, ollama_null.text
    renamed = http.post(
        "/v1/chat/completions",
        json=_chat(max_tokens=2, messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]),
    )  # fmt: skip
    assert renamed.status_code == 200, renamed.text


def test_create_refuses_an_adapter_that_does_not_fit(server: Server, tiny_gguf_file: Path) -> None:
    client = ollama.Client(host=server.url)
    digest = client.create_blob(tiny_gguf_file)
    with pytest.raises(ollama.ResponseError) as refused:  # the model itself, as an adapter
        client.create(model="bad-adapter", from_=MODEL, adapters={"lora.gguf": digest})
    assert refused.value.status_code == 400
    assert "not a LoRA adapter" in refused.value.error
    assert "bad-adapter:latest" not in [m.model for m in client.list().models]


def test_unknown_routes_use_the_envelopes(http: httpx.Client) -> None:
    missing = http.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = http.get("/api/chat")
    assert wrong.status_code == 405
    assert set(wrong.json()) == {"error"}


def test_openapi_describes_the_real_bodies(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ChatCompletionRequest")
    fields = schemas["ChatCompletionRequest"]["properties"]
    assert {"model", "messages", "max_tokens", "temperature", "stream"} <= set(fields)
    assert set(schemas["ChatCompletionRequest"]["required"]) == {"model", "messages"}
    assert "422" not in chat["responses"]
    assert "HTTPValidationError" not in str(spec)
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OpenAIError"
    )
    generate = spec["paths"]["/api/generate"]["post"]
    assert generate["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/GenerateRequest"
    )
    assert generate["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OllamaError"
    )


def test_create_refuses_requantizing_with_the_reason(
    server: Server, tiny_gguf_file: Path, tmp_path: Path
) -> None:
    from astra_tune.export.quantize import quantize

    q4_1 = quantize(tiny_gguf_file, tmp_path / "tiny-q4_1.gguf", "q4_1")
    client = ollama.Client(host=server.url)
    digest = client.create_blob(q4_1)
    with pytest.raises(ollama.ResponseError) as refused:
        client.create(model="requant", files={"tiny-q4_1.gguf": digest}, quantize="q4_K_M")
    assert refused.value.status_code == 400
    assert "tiny-q4_1.gguf is already quantized (q4_1)" in refused.value.error
