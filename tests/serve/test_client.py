"""astra_tune.client against a real server: answers, streams, retries on 429."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from astra_tune.client import AsyncClient, Client, ClientError
from tests.serve.conftest import MODEL, Server, start_server, stop


def test_sync_client(server: Server) -> None:
    with Client(server.url) as client:
        assert client.health()["status"] == "ok"
        assert client.models() == [MODEL]
        messages = [{"role": "user", "content": "Hi"}]
        answer = client.chat(MODEL, messages, max_tokens=6, temperature=0)
        assert answer.completion_tokens == 6
        assert answer.finish_reason == "length"
        assert (
            "".join(client.stream_chat(MODEL, messages, max_tokens=6, temperature=0)) == answer.text
        )
        done = client.complete(MODEL, "abc", max_tokens=3, temperature=0)
        assert (
            "".join(client.stream_complete(MODEL, "abc", max_tokens=3, temperature=0)) == done.text
        )
        assert len(client.embed(MODEL, ["x"])[0]) == 64
        with pytest.raises(ClientError) as caught:
            client.chat("nope", messages)
        assert caught.value.status == 404
        assert caught.value.code == "model_not_found"


def test_async_client(server: Server) -> None:
    async def run() -> tuple[str, str]:
        async with AsyncClient(server.url) as client:
            messages = [{"role": "user", "content": "Hi"}]
            answer = await client.chat(MODEL, messages, max_tokens=5, temperature=0)
            pieces = [
                p async for p in client.stream_chat(MODEL, messages, max_tokens=5, temperature=0)
            ]
            return answer.text, "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert whole == streamed
    assert whole


def test_client_retries_a_full_queue(tiny_gguf_file: Path) -> None:
    server = start_server(tiny_gguf_file, "--parallel", "1", "--max-queue", "1")
    try:
        statuses: list[int] = []

        def occupy() -> None:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}],
                    "max_tokens": 400, "temperature": 1.0}  # fmt: skip
            statuses.append(httpx.post(f"{server.url}/v1/chat/completions", json=body,
                                       timeout=120).status_code)  # fmt: skip

        busy = [threading.Thread(target=occupy) for _ in range(2)]
        for thread in busy:
            thread.start()
        waiting = f"astra:num_requests_waiting{{model={MODEL},version=file}}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.metrics().get(waiting, 0) < 1:
            time.sleep(0.02)  # until one request runs and one waits: the queue is full
        with Client(server.url, max_retries=30, backoff=0.2) as client:
            answer = client.chat(MODEL, [{"role": "user", "content": "Hi"}], max_tokens=3)
        for thread in busy:
            thread.join()
        assert answer.completion_tokens == 3
        samples = server.metrics()
        # The queue was full at least once, and the client still got its answer.
        assert samples["astra:requests_total{route=/v1/chat/completions,status=429}"] >= 1
    finally:
        stop(server)
