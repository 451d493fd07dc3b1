"""The pairwise judge against a rule-following OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from astra_tune.evaluate.judge import judge_pairs, parse_verdict
from astra_tune.recipe import JudgeConfig


def judge_app(calls: list[str]) -> FastAPI:
    """Prefers the answer that says GOOD; always says A when the prompt is BIASED."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][0]["content"]
        calls.append(prompt)
        first = re.search(r"Answer A: (.*)", prompt)
        second = re.search(r"Answer B: (.*)", prompt)
        assert first is not None
        assert second is not None
        if "BIASED" in prompt:
            verdict = "A"
        elif "GIBBERISH" in prompt:
            verdict = "hmm, hard to say"
        elif "GOOD" in first.group(1):
            verdict = "A"
        elif "GOOD" in second.group(1):
            verdict = "B"
        else:
            verdict = "T"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": verdict}}]}  # fmt: skip

    return app


@pytest.fixture
def judge_url() -> Iterator[tuple[str, list[str]]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls: list[str] = []
    server = uvicorn.Server(uvicorn.Config(judge_app(calls), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", calls
    server.should_exit = True
    thread.join(timeout=10)


def test_parse_verdict() -> None:
    assert parse_verdict("A") == "A"
    assert parse_verdict(" b.") == "B"
    assert parse_verdict("T") == "T"
    assert parse_verdict("A or B") is None
    assert parse_verdict("I think so") is None


def test_both_orders_are_asked_and_must_agree(judge_url: tuple[str, list[str]]) -> None:
    url, calls = judge_url
    record = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "ref"}]
    records = [record] * 5
    ours = ["GOOD answer", "meh", "same", "GOOD but BIASED", "GIBBERISH"]
    theirs = ["meh", "GOOD answer", "same", "meh", "meh"]
    result = judge_pairs(records, ours, theirs, JudgeConfig(base_url=url, model="rules"))
    # win; loss; tie; position bias (A both times) -> split decision -> tie; no verdict.
    assert result.verdicts == [1, -1, 0, 0, None]
    assert len(calls) == 10
    assert "Answer A: GOOD answer" in calls[0]
    assert "Answer B: GOOD answer" in calls[1]  # the same pair, swapped
    assert result.consistent == pytest.approx(3 / 4)
    assert result.win_rate.value == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    summary = result.to_json()
    assert (summary["wins"], summary["ties"], summary["losses"], summary["invalid"]) == (1, 2, 1, 1)
