"""OpenAI-compatible routes: chat completions, completions, models, embeddings."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from astra_tune.errors import AstraError
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.engine import Finished
from astra_tune.serve.errors import documented_errors, status_of
from astra_tune.serve.sampling import Sampling, resolve_sampling
from astra_tune.serve.state import Events, collect, get_state
from astra_tune.serve.wire import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    OpenAIError,
    OpenAIErrorDetail,
    PromptTokensDetails,
    SamplingFields,
    Usage,
)

ERRORS, STREAMED = documented_errors(OpenAIError, "text/event-stream")
# OpenAI's renamed roles, as the chat templates know them.
_ROLES = {"developer": "system", "function": "tool"}
# OpenAI's documented default length for legacy completions; chat has no limit.
LEGACY_COMPLETION_TOKENS = 16

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/models")
async def models(request: Request) -> ModelList:
    state = get_state(request)
    cards = [ModelCard(id=m.name, created=_created(m)) for m in state.catalog.all()]
    return ModelList(data=cards)


@router.post("/chat/completions", response_model=ChatCompletion, responses=STREAMED)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state = get_state(request)
    model, trace = state.route(request, body.model, body.unit_id(), prefix="chatcmpl")
    assert trace is not None
    chat = [{"role": _ROLES.get(m.role, m.role), "content": m.text()} for m in body.messages]
    if model.system and not any(m["role"] == "system" for m in chat):
        chat.insert(0, {"role": "system", "content": model.system})
    json_mode = body.response_format is not None and body.response_format.type == "json_object"
    sampling = _sampling(body, model, body.max_completion_tokens or body.max_tokens, json_mode)
    ident = trace.id
    created = int(time.time())
    events = await state.start_chat(model, chat, sampling, trace)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_chat_chunks(events, ident, created, model.name, usage), events)
    text, done = await collect(events)
    choice = ChatChoice(
        index=0, message=AssistantMessage(content=text), finish_reason=_reason(done)
    )
    return ChatCompletion(
        id=ident, created=created, model=model.name, choices=[choice], usage=_usage(done)
    )


@router.post("/completions", response_model=Completion, responses=STREAMED)
async def completions(body: CompletionRequest, request: Request) -> Any:
    state = get_state(request)
    model, trace = state.route(request, body.model, body.unit_id(), prefix="cmpl")
    assert trace is not None
    sampling = _sampling(body, model, body.max_tokens, False, LEGACY_COMPLETION_TOKENS)
    ident = trace.id
    created = int(time.time())
    events = await state.start_text(model, body.text(), sampling, trace)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_completion_chunks(events, ident, created, model.name, usage), events)
    text, done = await collect(events)
    choice = CompletionChoice(index=0, text=text, finish_reason=_reason(done))
    return Completion(
        id=ident, created=created, model=model.name, choices=[choice], usage=_usage(done)
    )


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingList:
    state = get_state(request)
    model, _ = state.route(request, body.model, body.user)
    vectors, tokens = await state.embed(model, body.texts())
    encode = _base64 if body.encoding_format == "base64" else list
    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
        model=model.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


# -- helpers -----------------------------------------------------------------------------


def _sampling(
    body: SamplingFields,
    model: ServedModel,
    max_tokens: int | None,
    json_mode: bool,
    default_max: int | None = None,
) -> Sampling:
    asked = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "num_predict": max_tokens,
    }
    return resolve_sampling(
        asked,
        model.params,
        model.stop,
        stop=body.stops(),
        json_mode=json_mode,
        logit_bias=body.token_bias(),
        default_max_tokens=default_max,
    )


def _base64(vector: list[float]) -> str:
    # What OpenAI sends for encoding_format=base64: little-endian float32 bytes.
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _sse(lines: AsyncIterator[str], events: Events) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for line in lines:
                yield line
            yield "data: [DONE]\n\n"
        except AstraError as exc:
            # The status line is sent already: the error goes in the stream, as OpenAI's
            # own streams carry it, and the stream ends cleanly instead of being cut.
            status, code = status_of(exc)
            kind = "server_error" if status >= 500 else "invalid_request_error"
            error = OpenAIErrorDetail(message=exc.what, type=kind, code=code)
            yield f"data: {OpenAIError(error=error).model_dump_json()}\n\n"
        finally:
            # A client that goes away leaves these generators suspended, not closed;
            # closing the source now cancels the generation instead of at garbage collection.
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(body(), media_type="text/event-stream")


class _Template:
    """An SSE chunk encoded once with a hole for the token's text.

    Encoding the whole chunk per token cost as much CPU as a tenth of a llama.cpp decode
    step on a small model; only the text changes between tokens.
    """

    HOLE = "\u0000astra-hole\u0000"

    def __init__(self, chunk: BaseModel) -> None:
        encoded = chunk.model_dump_json()
        self.head, self.tail = f"data: {encoded}\n\n".split(json.dumps(self.HOLE))

    def fill(self, text: str) -> str:
        return self.head + json.dumps(text) + self.tail


def _line(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


async def _chat_chunks(
    events: Events, ident: str, created: int, model: str, usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: Delta, reason: Any = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=ident,
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=reason)],
        )

    token = _Template(chunk(Delta(content=_Template.HOLE)))
    yield _line(chunk(Delta(role="assistant", content="")))
    async for kind, value in events:
        if kind == "token":
            yield token.fill(value)
        else:
            yield _line(chunk(Delta(), _reason(value)))
            if usage:
                yield _line(
                    ChatCompletionChunk(
                        id=ident, created=created, model=model, choices=[], usage=_usage(value)
                    )
                )


async def _completion_chunks(
    events: Events, ident: str, created: int, model: str, usage: bool
) -> AsyncIterator[str]:
    def chunk(text: str, reason: Any = None) -> CompletionChunk:
        choice = CompletionChoice(index=0, text=text, finish_reason=reason)
        return CompletionChunk(id=ident, created=created, model=model, choices=[choice])

    token = _Template(chunk(_Template.HOLE))
    async for kind, value in events:
        if kind == "token":
            yield token.fill(value)
        else:
            yield _line(chunk("", _reason(value)))
            if usage:
                yield _line(
                    CompletionChunk(id=ident, created=created, model=model, choices=[],
                                    usage=_usage(value))
                )  # fmt: skip


def _reason(done: Finished) -> Any:
    return "length" if done.finish_reason == "length" else "stop"


def _usage(done: Finished) -> Usage:
    return Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=done.cached_tokens),
    )


def _created(model: ServedModel) -> int:
    return int(model.gguf.stat().st_mtime) if model.gguf is not None else 0
