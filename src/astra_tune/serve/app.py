"""The FastAPI application: shared state, API keys, errors in each API's own envelope."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from astra_tune import __version__
from astra_tune.errors import AstraError, ConfigError, ModelError
from astra_tune.serve.catalog import Catalog, ServedModel
from astra_tune.serve.engine import (
    EnginePool,
    Finished,
    LlamaEngine,
    PromptTooLongError,
    QueueFullError,
    Sampling,
    submit_job,
)
from astra_tune.serve.metrics import ServerMetrics
from astra_tune.serve.settings import ServeSettings, hash_key

RETRY_AFTER_SECONDS = 1


class BadRequestError(AstraError):
    """The request body is not what the API expects."""


class ShuttingDownError(AstraError):
    """The server is draining and takes no new requests."""


@dataclass
class ServerState:
    """What every route needs."""

    settings: ServeSettings
    catalog: Catalog
    pool: EnginePool
    metrics: ServerMetrics
    registry: Any = None
    key_hashes: set[str] = field(default_factory=set)
    draining: bool = False
    inflight: int = 0
    upstreams: dict[str, Any] = field(default_factory=dict)

    async def engine(self, model: ServedModel) -> LlamaEngine:
        """The loaded engine for `model` (loading it, off the event loop, if needed)."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down", fix="retry on another replica")
        return await run_in_threadpool(self.pool.get, model)

    async def start_chat(
        self, model: ServedModel, messages: list[dict[str, Any]], sampling: Sampling
    ) -> AsyncIterator[tuple[str, Any]]:
        """Start a chat generation; errors (full queue, long prompt) are raised here, before
        any response is sent, so they reach the client as proper status codes."""
        if model.upstream is not None:
            return await self.upstream(model).start_chat(messages, sampling, self._counter(model))
        engine = await self.engine(model)
        prompt = engine.tokenize(engine.render_chat(messages), add_bos=True)
        return self._local(model, engine, prompt, sampling)

    async def start_text(
        self, model: ServedModel, text: str, sampling: Sampling
    ) -> AsyncIterator[tuple[str, Any]]:
        """Start a plain completion of `text` (no chat template)."""
        if model.upstream is not None:
            return await self.upstream(model).start_text(text, sampling, self._counter(model))
        engine = await self.engine(model)
        return self._local(model, engine, engine.tokenize(text, add_bos=True), sampling)

    def upstream(self, model: ServedModel) -> Any:
        from astra_tune.serve.upstream import Upstream

        assert model.upstream is not None
        if model.name not in self.upstreams:
            self.upstreams[model.name] = Upstream(model.upstream)
        return self.upstreams[model.name]

    def _counter(self, model: ServedModel) -> Any:
        def count(done: Finished) -> None:
            self.metrics.observe(model.name, model.version, done)

        return count

    def _local(
        self, model: ServedModel, engine: LlamaEngine, prompt: list[int], sampling: Sampling
    ) -> AsyncIterator[tuple[str, Any]]:
        job = submit_job(engine, prompt, sampling, self._counter(model))
        self.inflight += 1

        async def events() -> AsyncIterator[tuple[str, Any]]:
            try:
                while True:
                    kind, value = await job.events.get()
                    if kind == "error":
                        raise value
                    yield kind, value
                    if kind == "done":
                        return
            finally:
                # Reached on completion and also when the client goes away mid-stream: the
                # response closes this generator, and the worker stops at the next token.
                job.cancel.set()
                self.inflight -= 1

        return events()


def create_app(state: ServerState) -> FastAPI:
    """The server: OpenAI routes under /v1, Ollama routes under /api, /health, /metrics."""
    from astra_tune.serve.ollama_api import router as ollama_router
    from astra_tune.serve.openai_api import router as openai_router

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap(state))
        try:
            yield
        finally:
            state.draining = True
            deadline = time.monotonic() + state.settings.drain_seconds
            while (state.inflight or state.pool.busy()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reaper.cancel()
            for upstream in state.upstreams.values():
                await upstream.http.aclose()
            await run_in_threadpool(state.pool.close)

    app = FastAPI(title="Astra Tune", version=__version__, lifespan=lifespan)
    app.state.astra = state
    if state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    app.add_middleware(KeysAndCounts, state=state)

    @app.exception_handler(AstraError)
    async def astra_error(request: Request, exc: AstraError) -> JSONResponse:
        status, code = _status_of(exc)
        state.metrics.errors.labels(type(exc).__name__).inc()
        message = exc.what + (f" ({exc.fix})" if exc.fix else "")
        response = _error(request.url.path, status, message, code)
        if status == 429:
            upstream_says = getattr(exc, "retry_after", None)
            response.headers["Retry-After"] = upstream_says or str(RETRY_AFTER_SECONDS)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "draining" if state.draining else "ok",
            "models": len(state.catalog.all()),
            "loaded": len(state.pool.engines),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(state.pool), media_type=CONTENT_TYPE_LATEST)

    app.include_router(openai_router)
    app.include_router(ollama_router)
    return app


class KeysAndCounts:
    """API-key check and per-route request counts, as plain ASGI.

    Not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware re-sends every chunk of a
    streamed body through its own memory channel and task, a cost paid once per token.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        path = scope["path"]
        open_paths = {"/health"} | ({"/metrics"} if state.settings.metrics_public else set())
        if state.key_hashes and path not in open_paths and scope["method"] != "OPTIONS":
            given = Headers(scope=scope).get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not token or not any(
                hmac.compare_digest(hash_key(token), h) for h in state.key_hashes
            ):
                state.metrics.auth_failures.inc()
                state.metrics.requests.labels(_route(path), "401").inc()
                response = _error(path, 401, "invalid or missing API key", "invalid_api_key")
                await response(scope, receive, send)
                return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.metrics.requests.labels(_route(path), str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


def get_state(request: Request) -> ServerState:
    return request.app.state.astra  # type: ignore[no-any-return]


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


async def collect(events: AsyncIterator[tuple[str, Any]]) -> tuple[str, Finished]:
    """A whole (non-streamed) answer: its text and how it finished."""
    parts: list[str] = []
    done: Finished | None = None
    async for kind, value in events:
        if kind == "token":
            parts.append(value)
        else:
            done = value
    assert done is not None
    return "".join(parts), done


def _status_of(exc: AstraError) -> tuple[int, str]:
    if isinstance(exc, QueueFullError):
        return 429, "rate_limit_exceeded"
    if isinstance(exc, ShuttingDownError):
        return 503, "server_shutting_down"
    if isinstance(exc, PromptTooLongError):
        return 400, "context_length_exceeded"
    if isinstance(exc, ModelError) and "is not served here" in exc.what:
        return 404, "model_not_found"
    from astra_tune.registry.blobs import BlobError
    from astra_tune.registry.store import RegistryError
    from astra_tune.serve.upstream import UpstreamError

    if isinstance(exc, UpstreamError):
        if exc.status == 429:
            return 429, "rate_limit_exceeded"
        return (
            (exc.status, "upstream_error") if 400 <= exc.status < 500 else (502, "upstream_error")
        )

    if isinstance(exc, BlobError):
        return 400, "blob_not_found"
    if isinstance(exc, RegistryError) and "does not exist" in exc.what:
        return 404, "model_not_found"
    if isinstance(exc, BadRequestError | ConfigError | RegistryError):
        return 400, "invalid_request_error"
    return 500, "internal_error"


def _error(path: str, status: int, message: str, code: str) -> JSONResponse:
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)  # Ollama's envelope
    kind = {
        502: "server_error",
        401: "authentication_error",
        404: "invalid_request_error",
        429: "rate_limit_error",
        503: "server_error",
        500: "server_error",
    }.get(status, "invalid_request_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )


def _route(path: str) -> str:
    # Label by route, not raw path, so /api/blobs/<digest> does not explode the series.
    return path if not path.startswith("/api/blobs/") else "/api/blobs"


async def _reap(state: ServerState) -> None:
    while True:
        await asyncio.sleep(1.0)
        await run_in_threadpool(state.pool.reap)
