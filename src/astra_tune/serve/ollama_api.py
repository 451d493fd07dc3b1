"""Ollama-compatible routes: chat, generate, tags, show, ps, version, embed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from astra_tune import __version__
from astra_tune.errors import AstraError
from astra_tune.models.gguf_meta import gguf_facts
from astra_tune.ollama.create import ollama_template
from astra_tune.ollama.modelfile import Modelfile
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.engine import Finished
from astra_tune.serve.errors import BadRequestError, documented_errors
from astra_tune.serve.ollama_manage import router as models_router
from astra_tune.serve.sampling import Sampling, resolve_sampling
from astra_tune.serve.state import Events, ServerState, collect, get_state
from astra_tune.serve.wire import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    Format,
    GenerateRequest,
    GenerateResponse,
    ListModel,
    ListResponse,
    LoadResponse,
    Message,
    ModelDetails,
    OllamaError,
    ProcessResponse,
    RunningModel,
    ShowRequest,
    ShowResponse,
    VersionResponse,
)

ERRORS, STREAMED = documented_errors(OllamaError, "application/x-ndjson")

router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/version")
async def version() -> VersionResponse:
    return VersionResponse(version=__version__)


@router.get("/tags")
async def tags(request: Request) -> ListResponse:
    state = get_state(request)
    return ListResponse(models=[describe(m) for m in state.catalog.all()])


@router.get("/ps")
async def ps(request: Request) -> ProcessResponse:
    state = get_state(request)
    running = []
    for name, engine in list(state.pool.engines.items()):
        expires = state.pool.expires.get(name, time.time())
        running.append(
            RunningModel(
                **describe(engine.model).model_dump(),
                expires_at=datetime.fromtimestamp(expires, UTC).isoformat(),
            )
        )
    return ProcessResponse(models=running)


@router.post("/show")
async def show(body: ShowRequest, request: Request) -> ShowResponse:
    state = get_state(request)
    model = state.catalog.get(body.target)
    if model.gguf is None:
        assert model.upstream is not None
        return ShowResponse(
            modelfile=f"# forwarded to {model.upstream.base_url} as {model.upstream.model}\n",
            parameters="",
            template="",
            details=details(model),
            model_info={"general.architecture": "upstream"},
        )
    facts = await run_in_threadpool(gguf_facts, model.gguf)
    arch = facts["architecture"]
    info = {
        "general.architecture": arch,
        "general.name": facts["name"],
        "general.parameter_count": facts["parameters"],
        "general.size_label": facts["size_label"],
        f"{arch}.context_length": facts["context_length"],
        f"{arch}.embedding_length": facts["embedding_length"],
        f"{arch}.block_count": facts["block_count"],
    }
    template = model.go_template or _translated(model)
    params = {"stop": model.stop, **model.params} if model.stop else dict(model.params)
    modelfile = Modelfile(
        from_=str(model.gguf),
        adapters=[str(model.adapter)] if model.adapter else [],
        template=template,
        system=model.system,
        parameters=params,
        license=[model.license] if model.license else [],
    )
    parameters = "\n".join(
        f"{name:<30} {json.dumps(item) if isinstance(item, str) else item}"
        for name, value in params.items()
        for item in (value if isinstance(value, list) else [value])
    )
    return ShowResponse(
        modelfile=modelfile.text(f"Modelfile of {model.name}, from astra serve"),
        parameters=parameters,
        template=template or model.chat_template or "",
        system=model.system or "",
        license=model.license or "",
        details=details(model),
        model_info=info,
        modified_at=model.modified_at or _mtime(model),
    )


def _translated(model: ServedModel) -> str | None:
    """The model's Jinja chat template as an Ollama TEMPLATE, when it translates."""
    return ollama_template(model.chat_template, model.bos_token, model.eos_token).template


@router.post(
    "/chat", response_model=ChatResponse, responses=STREAMED, response_model_exclude_none=True
)
async def chat(body: ChatRequest, request: Request) -> Any:
    state = get_state(request)
    model, trace = state.route(request, body.model, api="ollama", prefix="resp")
    if not body.messages:  # Ollama loads the model and answers at once
        return await _load(state, model)
    messages = [{"role": m.role, "content": m.content or ""} for m in body.messages]
    if model.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": model.system})
    events = await state.start_chat(model, messages, _sampling(body.options, body.format, model),
                                    trace)  # fmt: skip
    if body.stream is not False:  # Ollama streams unless told not to
        return _ndjson(_chat_lines(events, model), events)
    text, done = await collect(events)
    return ChatResponse(**_head(model), message=Message(content=text), **_tail(done))


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses=STREAMED,
    response_model_exclude_none=True,
)
async def generate(body: GenerateRequest, request: Request) -> Any:
    state = get_state(request)
    model, trace = state.route(request, body.model, api="ollama", prefix="resp")
    if not body.prompt:
        return await _load(state, model)
    sampling = _sampling(body.options, body.format, model)
    if body.raw:
        events = await state.start_text(model, body.prompt, sampling, trace)
    else:
        system = body.system or model.system
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": body.prompt}
        ]
        events = await state.start_chat(model, turns, sampling, trace)
    if body.stream is not False:
        return _ndjson(_generate_lines(events, model), events)
    answer, done = await collect(events)
    return GenerateResponse(**_head(model), response=answer, **_tail(done))


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
    state = get_state(request)
    model, _ = state.route(request, body.model, api="ollama")
    started = time.perf_counter()
    vectors, tokens = await state.embed(model, body.texts())
    loaded = state.pool.engines.get(model.engine_key)
    return EmbedResponse(
        model=model.name,
        embeddings=vectors,
        total_duration=_ns(time.perf_counter() - started),
        load_duration=_ns(loaded.load_seconds if loaded is not None else 0.0),
        prompt_eval_count=tokens,
    )


router.include_router(models_router)


# -- helpers -----------------------------------------------------------------------------


def _sampling(options: dict[str, Any] | None, fmt: Format | None, model: ServedModel) -> Sampling:
    # Options arrive checked by name and type (wire.Options). num_ctx is fixed per loaded
    # model, and runner options (num_gpu, num_thread...) are the server's to choose.
    if isinstance(fmt, dict):
        raise BadRequestError(
            "format with a JSON schema (structured outputs) is not supported yet",
            where="format",
            fix='send format: "json" for JSON output',
        )
    asked = dict(options or {})
    stops = asked.pop("stop", None) or []
    return resolve_sampling(asked, model.params, model.stop, stop=stops, json_mode=fmt == "json")


def _ndjson(lines: AsyncIterator[BaseModel], events: Events | None = None) -> StreamingResponse:
    async def encoded() -> AsyncIterator[str]:
        try:
            async for line in lines:
                yield line.model_dump_json(exclude_none=True) + "\n"
        except AstraError as exc:
            # Ollama reports an error after the stream has begun as a last {"error"} line.
            yield OllamaError(error=exc.what).model_dump_json() + "\n"
        finally:
            if events is not None:  # cancel the generation when the client goes away
                await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(encoded(), media_type="application/x-ndjson")


async def _chat_lines(events: Events, model: ServedModel) -> AsyncIterator[ChatResponse]:
    async for kind, value in events:
        if kind == "token":
            yield ChatResponse(**_head(model), message=Message(content=value), done=False)
        else:
            yield ChatResponse(**_head(model), message=Message(content=""), **_tail(value))


async def _generate_lines(events: Events, model: ServedModel) -> AsyncIterator[GenerateResponse]:
    async for kind, value in events:
        if kind == "token":
            yield GenerateResponse(**_head(model), response=value, done=False)
        else:
            yield GenerateResponse(**_head(model), response="", **_tail(value))


def _head(model: ServedModel) -> dict[str, Any]:
    return {"model": model.name, "created_at": datetime.now(UTC).isoformat()}


def _tail(done: Finished) -> dict[str, Any]:
    first = done.first_token or done.ended
    return {
        "done": True,
        "done_reason": "length" if done.finish_reason == "length" else "stop",
        "total_duration": _ns(done.ended - done.started),
        "load_duration": 0,
        # As in Ollama: the prompt tokens evaluated, not those reused from the cache.
        "prompt_eval_count": done.prompt_tokens - done.cached_tokens,
        "prompt_eval_duration": _ns(first - done.started),
        "eval_count": done.completion_tokens,
        "eval_duration": _ns(done.ended - first),
    }


async def _load(state: ServerState, model: ServedModel) -> LoadResponse:
    """Ollama's empty request: load the model (kept alive) and answer at once."""
    load = 0.0 if model.upstream is not None else (await state.engine(model)).load_seconds
    return LoadResponse(
        **_head(model),
        message=Message(content=""),
        done=True,
        done_reason="load",
        load_duration=_ns(load),
    )


def describe(model: ServedModel) -> ListModel:
    """A served model as /api/tags lists it."""
    size = (model.gguf.stat().st_size if model.gguf else 0) + (
        model.adapter.stat().st_size if model.adapter else 0
    )
    return ListModel(
        name=model.name,
        model=model.name,
        modified_at=model.modified_at or _mtime(model),
        size=size,
        digest=(model.digest or "").removeprefix("sha256:") or _file_id(model),
        details=details(model),
    )


def details(model: ServedModel) -> ModelDetails:
    return ModelDetails(
        format="gguf" if model.gguf is not None else "upstream",
        family=model.family or "",
        families=[model.family] if model.family else [],
        parameter_size=model.parameter_size or "",
        quantization_level=model.quantization or "",
    )


def _mtime(model: ServedModel) -> str:
    if model.gguf is None:
        return datetime.fromtimestamp(0, UTC).isoformat()
    return datetime.fromtimestamp(model.gguf.stat().st_mtime, UTC).isoformat()


def _file_id(model: ServedModel) -> str:
    if model.gguf is None:
        return ""
    stat = model.gguf.stat()
    return f"{stat.st_size:x}{stat.st_mtime_ns:x}"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
