"""OpenAI-compatible routes: chat completions, completions, models, embeddings."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from astra_tune.serve.app import BadRequestError, collect, get_state, read_json
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.engine import Finished, Sampling

router = APIRouter(prefix="/v1")


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    state = get_state(request)
    return {
        "object": "list",
        "data": [
            {"id": m.name, "object": "model", "created": _created(m), "owned_by": "astra-tune"}
            for m in state.catalog.all()
        ],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Any:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(_required(body, "model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' must be a non-empty list", where="messages")
    chat = [_message(m, i) for i, m in enumerate(messages)]
    if model.system and not any(m["role"] == "system" for m in chat):
        chat.insert(0, {"role": "system", "content": model.system})
    sampling = _sampling(body, model)
    stream = bool(body.get("stream"))
    usage_in_stream = bool((body.get("stream_options") or {}).get("include_usage"))
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    events = await state.start_chat(model, chat, sampling)
    if stream:
        return _sse(_chat_chunks(events, ident, created, model.name, usage_in_stream), events)
    text, done = await collect(events)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": _reason(done),
            }
        ],
        "usage": _usage(done),
    }


@router.post("/completions", response_model=None)
async def completions(request: Request) -> Any:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(_required(body, "model"))
    prompt_text = body.get("prompt")
    if isinstance(prompt_text, list) and len(prompt_text) == 1:
        prompt_text = prompt_text[0]
    if not isinstance(prompt_text, str):
        raise BadRequestError("'prompt' must be a string", where="prompt")
    sampling = _sampling(body, model, default_max=16)
    ident = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    events = await state.start_text(model, prompt_text, sampling)
    if body.get("stream"):
        usage_in_stream = bool((body.get("stream_options") or {}).get("include_usage"))
        return _sse(_completion_chunks(events, ident, created, model.name, usage_in_stream), events)
    text, done = await collect(events)
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model.name,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": _reason(done)}],
        "usage": _usage(done),
    }


@router.post("/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(_required(body, "model"))
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequestError("'input' must be a string or a list of strings", where="input")
    if model.upstream is not None:
        vectors, tokens = await state.upstream(model).embed(texts)
    else:
        engine = await state.engine(model)
        vectors, tokens = await run_in_threadpool(engine.embed, texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- helpers -----------------------------------------------------------------------------


def _required(body: dict[str, Any], key: str) -> Any:
    if key not in body or body[key] in (None, ""):
        raise BadRequestError(f"'{key}' is required", where=key)
    return body[key]


def _message(message: Any, index: int) -> dict[str, Any]:
    if not isinstance(message, dict) or "role" not in message:
        raise BadRequestError(f"messages[{index}] needs a 'role'", where=f"messages[{index}]")
    content = message.get("content")
    if isinstance(content, list):  # the parts form: keep the text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": message["role"], "content": content or ""}


def _sampling(body: dict[str, Any], model: ServedModel, default_max: int | None = None) -> Sampling:
    defaults = model.params
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if body.get("n", 1) != 1:
        raise BadRequestError("only n=1 is supported", where="n")
    fmt = body.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in (None, "text", "json_object"):
        raise BadRequestError(
            f"response_format {kind!r} is not supported; use json_object", where="response_format"
        )
    try:
        # A model's own defaults (Modelfile PARAMETERs) apply where the request is silent.
        predict = defaults.get("num_predict")
        return Sampling(
            max_tokens=body.get("max_completion_tokens")
            or body.get("max_tokens")
            or (int(predict) if predict and int(predict) > 0 else default_max),
            temperature=float(body.get("temperature", defaults.get("temperature", 0.8))),
            top_p=float(body.get("top_p", defaults.get("top_p", 0.95))),
            top_k=int(defaults.get("top_k", 40)),
            min_p=float(defaults.get("min_p", 0.05)),
            repeat_penalty=float(defaults.get("repeat_penalty", 1.0)),
            seed=body.get("seed", defaults.get("seed")),
            stop=list(dict.fromkeys([*model.stop, *stops])),
            json_mode=kind == "json_object",
            logit_bias={int(k): float(v) for k, v in (body.get("logit_bias") or {}).items()},
        )
    except (TypeError, ValueError) as exc:
        raise BadRequestError(f"invalid sampling parameter: {exc}") from exc


def _sse(lines: AsyncIterator[str], events: Any) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for line in lines:
                yield line
            yield "data: [DONE]\n\n"
        finally:
            # A client that goes away leaves these generators suspended, not closed;
            # closing the source now cancels the generation instead of at garbage collection.
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream")


class _Template:
    """An SSE chunk encoded once with a hole for the token's text.

    Encoding the whole chunk per token cost as much CPU as a tenth of a llama.cpp decode
    step on a small model; only the text changes between tokens.
    """

    HOLE = "\u0000astra-hole\u0000"

    def __init__(self, chunk: dict[str, Any]) -> None:
        self.head, self.tail = f"data: {json.dumps(chunk)}\n\n".split(json.dumps(self.HOLE))

    def fill(self, text: str) -> str:
        return self.head + json.dumps(text) + self.tail


def _line(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


async def _chat_chunks(
    events: AsyncIterator[tuple[str, Any]], ident: str, created: int, model: str, usage: bool
) -> AsyncIterator[str]:
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    token = _Template({**base, "choices": [{"index": 0, "delta": {"content": _Template.HOLE},
                                            "finish_reason": None}]})  # fmt: skip
    yield _line({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]})  # fmt: skip
    async for kind, value in events:
        if kind == "token":
            yield token.fill(value)
        else:
            yield _line(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": _reason(value)}]}
            )
            if usage:
                yield _line({**base, "choices": [], "usage": _usage(value)})


async def _completion_chunks(
    events: AsyncIterator[tuple[str, Any]], ident: str, created: int, model: str, usage: bool
) -> AsyncIterator[str]:
    base = {"id": ident, "object": "text_completion", "created": created, "model": model}
    token = _Template({**base, "choices": [{"index": 0, "text": _Template.HOLE, "logprobs": None,
                                            "finish_reason": None}]})  # fmt: skip
    async for kind, value in events:
        if kind == "token":
            yield token.fill(value)
        else:
            yield _line({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                              "finish_reason": _reason(value)}]})  # fmt: skip
            if usage:
                yield _line({**base, "choices": [], "usage": _usage(value)})


def _reason(done: Finished) -> str:
    return "length" if done.finish_reason == "length" else "stop"


def _usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _created(model: ServedModel) -> int:
    return int(model.gguf.stat().st_mtime) if model.gguf is not None else 0
