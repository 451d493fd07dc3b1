"""API keys, backpressure, cancellation, metrics and draining on real servers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL, Server, start_server, stop

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story"}]}


def test_api_keys(tiny_gguf_file: Path) -> None:
    server = start_server(tiny_gguf_file, "--api-key", "s3cret")
    try:
        anonymous = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            anonymous.models.list()
        assert caught.value.code == "invalid_api_key"
        assert httpx.get(f"{server.url}/v1/models", timeout=5).status_code == 401
        assert httpx.post(f"{server.url}/api/chat", json=CHAT, timeout=5).status_code == 401
        keyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list()] == [MODEL]
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert server.metrics()["astra:auth_failures_total{}"] == 3.0
    finally:
        stop(server)


def test_full_queue_answers_429_with_retry_after(tiny_gguf_file: Path) -> None:
    server = start_server(tiny_gguf_file, "--parallel", "1", "--max-queue", "1")
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def ask() -> None:
        body = {**CHAT, "max_tokens": 300, "temperature": 1.0}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("retry-after"))
        if response.status_code == 429:
            assert response.json()["error"]["type"] == "rate_limit_error"

    try:
        threads = [threading.Thread(target=ask) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) >= 2  # one running, one waiting, both served
        assert 429 in statuses
        assert all(r == "1" for s, r in zip(statuses, retry_after, strict=True) if s == 429)
        samples = server.metrics()
        assert samples["astra:requests_total{route=/v1/chat/completions,status=429}"] >= 1
    finally:
        stop(server)


def test_slots_and_queue_together_bound_what_is_accepted(tiny_gguf_file: Path) -> None:
    """With 3 slots and 1 queue place, 4 requests are taken at once and the rest refused."""
    server = start_server(tiny_gguf_file, "--parallel", "3", "--max-queue", "1")
    statuses: list[int] = []
    start = threading.Barrier(8)

    def ask() -> None:
        body = {**CHAT, "max_tokens": 2000, "temperature": 1.0, "stop": []}
        start.wait()
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)
        statuses.append(response.status_code)

    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) >= 4  # 3 generating together and 1 waiting
        assert 429 in statuses
        samples = server.metrics()
        assert samples[f"astra:slots_total{{model={MODEL},version=file}}"] == 3
        # At least one step decoded more than one sequence at once.
        batched = samples["astra:batch_generating_sequences_count{}"]
        single = samples["astra:batch_generating_sequences_bucket{le=1.0}"]
        assert batched > single
    finally:
        stop(server)


def test_disconnect_cancels_generation(server: Server) -> None:
    body = {**CHAT, "max_tokens": 3000, "temperature": 1.0, "stream": True}
    before = server.metrics()
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response,
    ):
        for n, _line in enumerate(response.iter_lines()):
            if n >= 5:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 30
    key = f"astra:request_success_total{{finished_reason=cancelled,model={MODEL},version=file}}"
    while time.monotonic() < deadline and server.metrics().get(key, 0) < 1:
        time.sleep(0.1)
    after = server.metrics()
    assert after[key] == before.get(key, 0) + 1
    generated = f"astra:generation_tokens_total{{model={MODEL},version=file}}"
    assert after[generated] - before.get(generated, 0) < 3000  # it stopped early


def test_metrics_count_tokens_and_latency(server: Server) -> None:
    before = server.metrics()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=7, temperature=0
    )
    after = server.metrics()
    labels = f"model={MODEL},version=file"
    assert reply.usage is not None

    def grew(name: str) -> float:
        return after[f"{name}{{{labels}}}"] - before.get(f"{name}{{{labels}}}", 0)

    assert grew("astra:prompt_tokens_total") == reply.usage.prompt_tokens
    assert grew("astra:generation_tokens_total") == 7
    assert grew("astra:time_to_first_token_seconds_count") == 1
    assert grew("astra:e2e_request_latency_seconds_count") == 1
    assert grew("astra:time_per_output_token_seconds_count") == 1
    assert after["astra:loaded_models{}"] == 1
    assert f"astra:num_requests_running{{{labels}}}" in after
    assert after["astra:requests_total{route=/v1/chat/completions,status=200}"] >= 1


def test_shutdown_drains_in_flight_requests(tiny_gguf_file: Path) -> None:
    server = start_server(tiny_gguf_file)
    body = {**CHAT, "max_tokens": 150, "temperature": 1.0, "stream": True}
    lines: list[str] = []
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            lines.append(line)
            if len(lines) == 3:
                server.proc.send_signal(signal.SIGTERM)
    events = [line for line in lines if line]
    assert events[-1] == "data: [DONE]"  # the request finished despite the shutdown
    assert len(events) > 100  # all of it (150 tokens, minus any early stop), not a cut-off
    # uvicorn re-raises SIGTERM once it has shut down cleanly, so the exit is by that signal.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
