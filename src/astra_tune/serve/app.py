"""The FastAPI application: routers, API keys, request counts, error envelopes, drain."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from astra_tune import __version__
from astra_tune.errors import ConfigError
from astra_tune.experiments.records import Recorder
from astra_tune.experiments.rollout import RolloutStore
from astra_tune.experiments.store import ExperimentStore
from astra_tune.registry.store import Registry
from astra_tune.serve.catalog import build_catalog
from astra_tune.serve.engine import EnginePool
from astra_tune.serve.errors import error_response, install_handlers
from astra_tune.serve.experiments_api import router as experiments_router
from astra_tune.serve.feedback_api import router as feedback_router
from astra_tune.serve.metrics import ServerMetrics
from astra_tune.serve.ollama_api import router as ollama_router
from astra_tune.serve.openai_api import router as openai_router
from astra_tune.serve.settings import ServeSettings, hash_key
from astra_tune.serve.smoke import warm_and_switch
from astra_tune.serve.state import (
    ARM_HEADER,
    EXPERIMENT_HEADER,
    RESPONSE_HEADER,
    VERSION_HEADER,
    ServerState,
)

log = logging.getLogger(__name__)
# What answered a request (set by ServerState.route), as response headers.
_ROUTED_HEADERS = (
    (VERSION_HEADER, "astra_version"),
    (EXPERIMENT_HEADER, "astra_experiment"),
    (ARM_HEADER, "astra_arm"),
    (RESPONSE_HEADER, "astra_response_id"),
)


class Health(BaseModel):
    status: str
    models: int
    loaded: int


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken now, before loading anything (uvicorn would only say
    `[Errno 98]` after the server has announced itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # uvicorn binds with SO_REUSEADDR too: a port in TIME_WAIT is not "taken".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                where="--port",
                fix="stop whatever holds that port, or pass another --port",
            ) from exc


def build_server(settings: ServeSettings, registry: Registry | None = None) -> ServerState:
    """Everything `astra serve` runs, from its settings: catalog, engine pool, metrics."""
    registry = registry if registry is not None else Registry()
    metrics = ServerMetrics()
    pool = EnginePool(
        max_loaded=settings.max_loaded,
        keep_alive=settings.keep_alive,
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        max_queue=settings.max_queue,
        parallel=settings.parallel,
        batch_tokens=settings.batch_tokens,
        on_step=metrics.observe_step,
    )
    state = ServerState(
        settings=settings,
        catalog=build_catalog(settings.models, registry, settings.upstreams),
        pool=pool,
        metrics=metrics,
        registry=registry,
        key_hashes=settings.key_hashes(),
    )
    state.recorder = Recorder(registry.engine)
    state.reload_experiments()
    return state


def create_app(state: ServerState) -> FastAPI:
    """The server: OpenAI routes under /v1, Ollama routes under /api, /health, /metrics."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap(state))
        watcher = None
        if state.registry is not None and state.settings.registry_poll > 0:
            watcher = asyncio.create_task(_watch_registry(state))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            state.draining = True
            deadline = time.monotonic() + state.settings.drain_seconds
            while (state.inflight or state.pool.busy()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reaper.cancel()
            for upstream in state.upstreams.values():
                await upstream.http.aclose()
            await run_in_threadpool(state.pool.close)
            if state.recorder is not None:
                await run_in_threadpool(state.recorder.close)

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
    install_handlers(app, lambda kind: state.metrics.errors.labels(kind).inc())

    @app.get("/health")
    async def health() -> Health:
        return Health(
            status="draining" if state.draining else "ok",
            models=len(state.catalog.all()),
            loaded=len(state.pool.engines),
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(state.pool), media_type=CONTENT_TYPE_LATEST)

    app.include_router(openai_router)
    app.include_router(feedback_router)
    app.include_router(experiments_router)
    app.include_router(ollama_router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 answers: invalid bodies get 400 here (errors.py)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


class KeysAndCounts:
    """API-key check, per-route request counts and JSON bodies, as plain ASGI.

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
                message = "invalid or missing API key"
                response = error_response(path, 401, message, "invalid_api_key")
                await response(scope, receive, send)
                return
        # Routes record what answered in the request's state (ServerState.route); the
        # dict is shared by every copy of the scope made below.
        shared = scope.setdefault("state", {})
        if scope["method"] in ("POST", "DELETE") and not path.startswith("/api/blobs/"):
            scope = _as_json(scope)

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.metrics.requests.labels(_route(path), str(message["status"])).inc()
                added = [
                    (header.encode(), str(shared[key]).encode())
                    for header, key in _ROUTED_HEADERS
                    if shared.get(key) is not None
                ]
                if added:
                    message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, counted)


def _as_json(scope: Scope) -> Scope:
    """Bodies are JSON whatever Content-Type says, as in Ollama and OpenAI.

    `curl -d '{...}'` (Ollama's own examples) sends application/x-www-form-urlencoded;
    FastAPI would then not parse the body as JSON at all.
    """
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    given = Headers(scope=scope).get("content-type", "")
    if given.split(";")[0].strip().lower() == "application/json":
        return scope
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _route(path: str) -> str:
    # Label by route, not raw path, so /api/blobs/<digest> does not explode the series.
    return path if not path.startswith("/api/blobs/") else "/api/blobs"


async def _watch_registry(state: ServerState) -> None:
    """Pick up alias moves, new or removed versions and experiment changes made by any
    process or machine sharing the registry."""
    assert state.registry is not None
    registry = state.registry
    experiments, rollouts = ExperimentStore(registry), RolloutStore(registry)

    def marker() -> tuple[Any, ...]:
        # Advancing rollouts first: a step it moves shows in the marker at once.
        rollouts.tick()
        return registry.change_marker(), experiments.change_marker(), rollouts.change_marker()

    def reload() -> list[str]:
        return state.reload_registry() + state.reload_experiments()

    seen = await run_in_threadpool(marker)
    smoking: dict[str, asyncio.Task[None]] = {}
    try:
        await _watch(state, smoking, marker, reload, seen)
    finally:
        for task in smoking.values():  # stopping: a switch already begun ends in its thread
            task.cancel()


async def _watch(
    state: ServerState, smoking: dict[str, asyncio.Task[None]], marker: Any, reload: Any,
    seen: tuple[Any, ...],
) -> None:  # fmt: skip
    while True:
        _smoke_warming(state, smoking)
        await asyncio.sleep(state.settings.registry_poll)
        try:
            now = await run_in_threadpool(marker)
            if now == seen:
                continue
            changed = await run_in_threadpool(reload)
            seen = now
        except Exception as exc:
            # Not fatal: a registry briefly out of reach (a PostgreSQL restart, a locked
            # SQLite file) must not stop serving what is already loaded.
            state.metrics.registry_reloads.labels("error").inc()
            log.warning("registry check failed (will retry): %s", exc)
            continue
        if changed:
            state.metrics.registry_reloads.labels("changed").inc()
            log.info("registry or experiments changed: %s", ", ".join(changed))


def _smoke_warming(state: ServerState, smoking: dict[str, asyncio.Task[None]]) -> None:
    """Start the smoke test of every warming blue-green rollout not already being tested
    here; a test that crashed (not one that failed the candidate) is retried."""
    for name, task in list(smoking.items()):
        if task.done():
            del smoking[name]
            if not task.cancelled() and task.exception() is not None:
                log.warning("smoke test of %s crashed (will retry): %r", name, task.exception())
    for rollout in state.rollouts.values():
        if rollout.status == "warming" and rollout.name not in smoking:
            smoking[rollout.name] = asyncio.create_task(warm_and_switch(state, rollout))


async def _reap(state: ServerState) -> None:
    while True:
        await asyncio.sleep(1.0)
        await run_in_threadpool(state.pool.reap)
