"""What every route shares: the server state, starting generations, collecting answers.

Routers import this module, never `serve/app.py`, so the app (which includes the
routers) and the routers do not import each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from astra_tune.registry.store import Registry, RegistryError
from astra_tune.serve.catalog import Catalog, ServedModel, from_registry, registry_references
from astra_tune.serve.engine import EnginePool, Finished, LlamaEngine, submit_job
from astra_tune.serve.errors import BadRequestError, ShuttingDownError
from astra_tune.serve.metrics import ServerMetrics
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.settings import ServeSettings
from astra_tune.serve.upstream import Upstream

Events = AsyncIterator[tuple[str, Any]]
# The version that answered, on every generation and embedding response of both APIs.
VERSION_HEADER = "x-astra-model-version"


@dataclass
class ServerState:
    """What every route needs."""

    settings: ServeSettings
    catalog: Catalog
    pool: EnginePool
    metrics: ServerMetrics
    registry: Registry | None = None
    key_hashes: set[str] = field(default_factory=set)
    draining: bool = False
    inflight: int = 0
    upstreams: dict[str, Upstream] = field(default_factory=dict)

    async def engine(self, model: ServedModel) -> LlamaEngine:
        """The loaded engine for `model` (loading it, off the event loop, if needed)."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down", fix="retry on another replica")
        return await run_in_threadpool(self.pool.get, model)

    async def start_chat(
        self, model: ServedModel, messages: list[dict[str, Any]], sampling: Sampling
    ) -> Events:
        """Start a chat generation; errors (full queue, long prompt) are raised here, before
        any response is sent, so they reach the client as proper status codes."""
        if model.upstream is not None:
            return await self.upstream(model).start_chat(messages, sampling, self._counter(model))
        engine = await self.engine(model)
        prompt = engine.tokenize(engine.render_chat(messages), add_bos=True)
        return self._local(model, engine, prompt, sampling)

    async def start_text(self, model: ServedModel, text: str, sampling: Sampling) -> Events:
        """Start a plain completion of `text` (no chat template)."""
        if model.upstream is not None:
            return await self.upstream(model).start_text(text, sampling, self._counter(model))
        engine = await self.engine(model)
        return self._local(model, engine, engine.tokenize(text, add_bos=True), sampling)

    async def embed(self, model: ServedModel, texts: list[str]) -> tuple[list[list[float]], int]:
        """Embeddings of `texts` and the tokens they cost, locally or upstream."""
        if model.upstream is not None:
            return await self.upstream(model).embed(texts)
        engine = await self.engine(model)
        return await run_in_threadpool(engine.embed, texts)

    def upstream(self, model: ServedModel) -> Upstream:
        assert model.upstream is not None
        if model.name not in self.upstreams:
            self.upstreams[model.name] = Upstream(model.upstream)
        return self.upstreams[model.name]

    def require_registry(self) -> Registry:
        if self.registry is None:
            raise BadRequestError("this server has no registry, so it cannot store models")
        return self.registry

    def route(self, request: Request, name: str) -> ServedModel:
        """The model that answers a request for `name`, resolved once per request.

        The request keeps this object to its end, so a stream in flight finishes on the
        version it started with even if the alias moves meanwhile. The version is also
        put where `KeysAndCounts` adds it to the response headers.
        """
        model = self.catalog.get(name)
        request.scope.setdefault("state", {})["astra_version"] = model.version
        return model

    def refresh(self, name: str) -> None:
        """Re-read `name`'s versions and aliases from the registry into the catalog."""
        registry = self.require_registry()
        for served in self.catalog.from_registry():
            if served.base_name == name:
                self.catalog.remove(served.name)
        for version in registry.list_versions(name):
            for tag in [version["version"], *version["aliases"]]:
                self.catalog.add(from_registry(registry, f"{name}:{tag}"))

    def reload_registry(self) -> list[str]:
        """Re-resolve the registry's names after a change elsewhere; the names that changed.

        A server given no models serves the whole registry, so new versions and aliases
        appear and removed ones go; otherwise the names it serves are re-resolved (an alias
        that moved now points at its new version) and ones that no longer resolve go.
        """
        registry = self.require_registry()
        served = {m.name: m for m in self.catalog.from_registry()}
        whole = not self.settings.models and not self.settings.upstreams
        wanted = set(registry_references(registry)) if whole else set(served)
        changed = []
        for name in sorted(wanted | set(served)):
            try:
                model = from_registry(registry, name) if name in wanted else None
            except RegistryError:
                model = None  # removed elsewhere: stop answering to it
            if model == served.get(name):
                continue
            changed.append(name)
            if model is None:
                self.catalog.remove(name)
            else:
                self.catalog.add(model)
        return changed

    def _counter(self, model: ServedModel) -> Any:
        def count(done: Finished) -> None:
            self.metrics.observe(model.name, model.version, done)

        return count

    def _local(
        self, model: ServedModel, engine: LlamaEngine, prompt: list[int], sampling: Sampling
    ) -> Events:
        ticket = submit_job(engine, prompt, sampling, self._counter(model))
        self.inflight += 1

        async def events() -> Events:
            try:
                while True:
                    kind, value = await ticket.events.get()
                    if kind == "error":
                        raise value
                    yield kind, value
                    if kind == "done":
                        return
            finally:
                # Reached on completion and also when the client goes away mid-stream: the
                # response closes this generator, and the worker stops at the next token.
                ticket.job.cancel.set()
                self.inflight -= 1

        return events()


def get_state(request: Request) -> ServerState:
    return request.app.state.astra  # type: ignore[no-any-return]


async def collect(events: Events) -> tuple[str, Finished]:
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
