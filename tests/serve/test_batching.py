"""Continuous batching on the default model: the same greedy text alone or among others."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astra_tune.serve.catalog import from_gguf
from astra_tune.serve.engine import LlamaEngine
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.scheduler import Finished, Job, held_back
from tests.serve.conftest import MODEL, Server

PASSAGE = (
    "The lighthouse at the end of the pier was built in 1874 from granite brought by boat. "
    "Its lamp burned whale oil at first, then kerosene, and since 1921 it has been electric. "
    "Three keepers lived there in turns until the light was automated in 1968. "
) * 6
CASES = {
    "short": ("What is the capital of France?", Sampling(max_tokens=32, temperature=0)),
    "long": (PASSAGE + "\n\nWhen was the light automated?", Sampling(max_tokens=32, temperature=0)),
    "stop": (
        "Count from 1 to 10, one number per line.",
        Sampling(max_tokens=60, temperature=0, stop=["5"]),
    ),
    "json": (
        "Describe a cat as a JSON object with a name and an age.",
        Sampling(max_tokens=48, temperature=0, json_mode=True),
    ),
}


@dataclass
class Run:
    parts: list[str] = field(default_factory=list)
    done: Finished | None = None
    error: object = None
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def submit(engine: LlamaEngine, question: str, sampling: Sampling, cancel_after: int = 0) -> Run:
    run = Run()
    job: Job

    def emit(kind: str, value: object) -> None:
        if kind == "token":
            run.parts.append(str(value))
            if cancel_after and len(run.parts) >= cancel_after:
                job.cancel.set()
        else:
            if kind == "done":
                run.done = value  # type: ignore[assignment]
            else:
                run.error = value
            run.ended.set()

    prompt = engine.tokenize(engine.render_chat([{"role": "user", "content": question}]),
                             add_bos=True)  # fmt: skip
    job = Job(prompt=prompt, sampling=sampling, emit=emit)
    engine.submit(job)
    return run


def wait(*runs: Run) -> None:
    for run in runs:
        assert run.ended.wait(300), "the engine never finished a request"
        assert run.error is None, run.error


def top_two_gap(gguf: Path, prompt: list[int], tokens: list[int]) -> float:
    """The gap between the two highest logits after `prompt + tokens`, computed by plain
    llama-cpp-python in a context of its own (an independent engine)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=2048, logits_all=True, verbose=False)
    try:
        llm.eval(prompt + tokens)
        logits = np.array(llm.scores[len(prompt) + len(tokens) - 1])
        first, second = np.sort(logits)[-2:][::-1]
        return float(first - second)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def engines(default_gguf_file: Path):  # type: ignore[no-untyped-def]
    model = from_gguf(default_gguf_file)
    made = [
        LlamaEngine(model, n_ctx=1024, n_threads=None, max_queue=8, parallel=4) for _ in range(2)
    ]
    yield made
    for engine in made:
        engine.close()


def test_greedy_text_is_the_same_alone_and_among_three_others(
    engines: list[LlamaEngine], default_gguf_file: Path
) -> None:
    alone_engine, shared = engines
    alone: dict[str, Run] = {}
    for name, (question, sampling) in CASES.items():
        alone[name] = submit(alone_engine, question, sampling)
        wait(alone[name])
    # All at once on a fresh engine with 4 slots, behind a request cancelled mid-way:
    # its slot is freed and refilled while the others keep generating.
    cancelled = submit(shared, "Write a long story about a dragon.", Sampling(max_tokens=300),
                       cancel_after=4)  # fmt: skip
    together = {name: submit(shared, q, s) for name, (q, s) in CASES.items()}
    wait(cancelled, *together.values())

    assert cancelled.done is not None
    assert cancelled.done.finish_reason == "cancelled"
    assert 4 <= cancelled.done.completion_tokens < 300
    stop = together["stop"]
    assert stop.done is not None
    assert stop.done.finish_reason == "stop"
    assert "5" not in stop.text
    assert "4" in stop.text  # it counted, then stopped at the stop string
    json.loads(together["json"].text)  # JSON mode: a whole object
    for name, run in together.items():
        first, second = alone[name].done, run.done
        assert first is not None
        assert second is not None
        assert second.prompt_tokens == first.prompt_tokens
        if run.text == alone[name].text:
            continue
        # A different text is allowed only where the two best logits were a tie.
        at = next(i for i, (a, b) in enumerate(zip(first.tokens, second.tokens, strict=False))
                  if a != b)  # fmt: skip
        question = CASES[name][0]
        prompt = alone_engine.tokenize(
            alone_engine.render_chat([{"role": "user", "content": question}]), add_bos=True
        )
        gap = top_two_gap(default_gguf_file, prompt, first.tokens[:at])
        assert gap < 1e-2, f"{name}: texts differ at token {at}, where the logits differ by {gap}"


def test_a_continued_chat_reuses_its_cached_prefix(engines: list[LlamaEngine]) -> None:
    engine = engines[0]
    system = "You are a terse assistant. " * 20
    first = submit_chat(engine, [
        {"role": "system", "content": system},
        {"role": "user", "content": "Name a colour."},
    ])  # fmt: skip
    wait(first)
    assert first.done is not None
    second = submit_chat(engine, [
        {"role": "system", "content": system},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Name another."},
    ])  # fmt: skip
    wait(second)
    assert second.done is not None
    # The whole first conversation (system prompt, question, answer) was in the cache.
    assert second.done.cached_tokens >= first.done.prompt_tokens
    assert second.done.cached_tokens < second.done.prompt_tokens


def submit_chat(engine: LlamaEngine, messages: list[dict[str, str]]) -> Run:
    run = Run()

    def emit(kind: str, value: object) -> None:
        if kind == "token":
            run.parts.append(str(value))
        else:
            run.done = value if kind == "done" else None  # type: ignore[assignment]
            run.error = None if kind == "done" else value
            run.ended.set()

    prompt = engine.tokenize(engine.render_chat(messages), add_bos=True)
    engine.submit(Job(prompt=prompt, sampling=Sampling(max_tokens=8, temperature=0), emit=emit))
    return run


@pytest.mark.parametrize(
    ("text", "stops", "kept"),
    [
        ("Hello <", ["<|im_end|>"], 1),  # may start the stop string
        ("Hello <|im", ["<|im_end|>"], 4),
        ("Hello", ["<|im_end|>"], 0),
        ("abc", ["bcd", "cx"], 2),  # the longest possible start wins
    ],
)
def test_text_that_may_start_a_stop_string_is_held_back(
    text: str, stops: list[str], kept: int
) -> None:
    assert held_back(text, stops) == kept


def test_auto_parallel_sizes_the_kv_cache_from_the_model(
    tiny_gguf_file: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    from astra_tune.serve.engine import AUTO_MEMORY_SHARE, auto_parallel, kv_bytes_per_token

    config = json.loads((tiny_model_dir / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    per_token = config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 2 * 2
    assert kv_bytes_per_token(tiny_gguf_file) == per_token

    class Memory:
        available = int(3 * per_token * 1000 / AUTO_MEMORY_SHARE)  # room for 3 x 1000 tokens

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    assert auto_parallel(tiny_gguf_file, 1000) == 3
    assert auto_parallel(tiny_gguf_file, 100_000) == 1  # never below one sequence
    assert auto_parallel(tiny_gguf_file, 10) == 16  # never above the cap


def test_both_apis_report_the_prompt_tokens_reused_from_the_cache(server: Server) -> None:
    import ollama
    import openai

    messages = [{"role": "system", "content": "You answer in one word. " * 30},
                {"role": "user", "content": "Say hi."}]  # fmt: skip
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert first.usage is not None
    assert again.usage is not None
    assert again.usage.prompt_tokens == first.usage.prompt_tokens > 60
    assert again.usage.prompt_tokens_details is not None
    # All but the last prompt token, which is evaluated again for its logits.
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    via_ollama = ollama.Client(host=server.url).chat(
        model=MODEL, messages=messages, options={"num_predict": 4}
    )
    assert via_ollama["prompt_eval_count"] == 1  # what was evaluated, as Ollama counts it
    samples = server.metrics()
    cached = samples[f"astra:prompt_tokens_cached_total{{model={MODEL},version=file}}"]
    assert cached >= 2 * (again.usage.prompt_tokens - 1)
