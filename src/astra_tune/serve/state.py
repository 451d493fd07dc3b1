"""What every route shares: the server state, starting generations, collecting answers.

Routers import this module, never `serve/app.py`, so the app (which includes the
routers) and the routers do not import each other.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from astra_tune.errors import AstraError
from astra_tune.experiments.assignment import assign, request_unit
from astra_tune.experiments.records import Recorder, Trace
from astra_tune.experiments.rollout import ACTIVE, Rollout, RolloutStore
from astra_tune.experiments.store import Experiment, ExperimentStore, served_name
from astra_tune.registry.store import Registry
from astra_tune.serve.catalog import Catalog, ServedModel, from_registry
from astra_tune.serve.engine import EnginePool, Finished, LlamaEngine, submit_job
from astra_tune.serve.errors import BadRequestError, ShuttingDownError
from astra_tune.serve.metrics import ServerMetrics
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.settings import ServeSettings
from astra_tune.serve.upstream import Upstream

Events = AsyncIterator[tuple[str, Any]]
log = logging.getLogger(__name__)
# The version that answered, on every generation and embedding response of both APIs.
VERSION_HEADER = "x-astra-model-version"
EXPERIMENT_HEADER = "x-astra-experiment"
ARM_HEADER = "x-astra-arm"
RESPONSE_HEADER = "x-astra-response-id"
USER_HEADER = "x-astra-user"


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
    # Running experiments by the served name they take over (`name:tag`).
    experiments: dict[str, Experiment] = field(default_factory=dict)
    recorder: Recorder | None = None  # keeps every answer's record (with a registry)
    # Rollouts in progress (warming, running or paused), by the served name they shift.
    rollouts: dict[str, Rollout] = field(default_factory=dict)

    async def engine(self, model: ServedModel) -> LlamaEngine:
        """The loaded engine for `model` (loading it, off the event loop, if needed)."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down", fix="retry on another replica")
        return await run_in_threadpool(self.pool.get, model)

    async def start_chat(
        self,
        model: ServedModel,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        trace: Trace | None = None,
    ) -> Events:
        """Start a chat generation; errors (full queue, long prompt) are raised here, before
        any response is sent, so they reach the client as proper status codes."""
        if trace is not None:
            trace.messages = messages
        try:
            if model.upstream is not None:
                events = await self.upstream(model).start_chat(
                    messages, sampling, self._counter(model)
                )
            else:
                engine = await self.engine(model)
                prompt = engine.tokenize(engine.render_chat(messages), add_bos=True)
                events = self._local(model, engine, prompt, sampling)
        except AstraError as exc:
            self._record(trace, answer=None, error=exc.what)
            raise
        return self._traced(events, trace)

    async def start_text(
        self, model: ServedModel, text: str, sampling: Sampling, trace: Trace | None = None
    ) -> Events:
        """Start a plain completion of `text` (no chat template)."""
        if trace is not None:
            trace.messages = [{"role": "prompt", "content": text}]
        try:
            if model.upstream is not None:
                events = await self.upstream(model).start_text(text, sampling,
                                                               self._counter(model))  # fmt: skip
            else:
                engine = await self.engine(model)
                events = self._local(model, engine, engine.tokenize(text, add_bos=True), sampling)
        except AstraError as exc:
            self._record(trace, answer=None, error=exc.what)
            raise
        return self._traced(events, trace)

    def _traced(self, events: Events, trace: Trace | None) -> Events:
        """`events`, recording the answer when it ends (finished, failed or abandoned)."""
        if trace is None:
            return events

        async def recorded() -> Events:
            parts: list[str] = []
            done = error = None
            try:
                async for kind, value in events:
                    if kind == "token":
                        parts.append(value)
                    elif kind == "done":
                        done = value
                    yield kind, value
            except AstraError as exc:
                error = exc.what
                raise
            finally:
                if done is None and error is None:
                    error = "the client went away before the answer ended"
                await events.aclose()  # type: ignore[attr-defined]
                self._record(trace, answer="".join(parts), done=done, error=error)

        return recorded()

    def _record(
        self, trace: Trace | None, *, answer: str | None, done: Any = None, error: str | None = None
    ) -> None:
        if trace is not None and self.recorder is not None:
            self.recorder.submit(trace.row(answer=answer, done=done, error=error))

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

    def route(
        self, request: Request, name: str, user: str | None = None, *, api: str = "openai",
        prefix: str | None = None,
    ) -> tuple[ServedModel, Trace | None]:  # fmt: skip
        """The model that answers a request for `name`, resolved once per request, and
        its trace (`prefix` names the response id, e.g. chatcmpl; None: not recorded).

        A name an experiment has taken over goes to the arm the request's unit hashes
        to (`user` from the body, else the X-Astra-User header, else the API key). The
        request keeps the model to its end, so a stream in flight finishes on the
        version it started with even if the alias moves meanwhile. What answered is put
        where `KeysAndCounts` adds it to the response headers.
        """
        shared = request.scope.setdefault("state", {})
        given = request.headers.get("authorization", "")
        unit = request_unit(
            user=user,
            header=request.headers.get(USER_HEADER),
            api_key=given[7:].strip() if given.lower().startswith("bearer ") else None,
        )
        key = _served(name)
        experiment, rollout = self.experiments.get(key), self.rollouts.get(key)
        split = None  # (experiment or rollout name, arm, reference)
        if experiment is not None:
            arm = experiment.arm(assign(experiment.salt, unit.id, experiment.weights(),
                                        experiment.control))  # fmt: skip
            split = (experiment.name, arm.name, arm.reference)
        elif rollout is not None:
            side = assign(rollout.salt, unit.id, rollout.weights(), "stable")
            split = (rollout.name, side, rollout.reference(side))
        if split is None:
            model = self.catalog.get(name)
        else:
            model = self.catalog.get(split[2])
            shared.update(astra_experiment=split[0], astra_arm=split[1])
            self.metrics.assignments.labels(split[0], split[1], model.version, unit.kind).inc()
        shared["astra_version"] = model.version
        if prefix is None:
            return model, None
        trace = Trace(
            id=Trace.new_id(prefix), api=api, requested=name, served=model.name,
            version=model.version, unit=unit,
            experiment=split[0] if split else None, arm=split[1] if split else None,
        )  # fmt: skip
        shared["astra_response_id"] = trace.id
        return model, trace

    def reload_experiments(self) -> list[str]:
        """Read the running experiments and rollouts again; the names of those that changed."""
        registry = self.require_registry()
        running: dict[str, Experiment] = {}
        for experiment in ExperimentStore(registry).list(running_only=True):
            problem = self._unroutable(registry, experiment)
            if problem:
                log.warning("not routing experiment %s: %s", experiment.name, problem)
                continue
            running[experiment.model] = experiment
        changed = {e.name for k, e in running.items() if self.experiments.get(k) != e}
        changed |= {e.name for k, e in self.experiments.items() if k not in running}
        self.experiments = running
        rollouts: dict[str, Rollout] = {}
        pins: dict[str, float] = {}
        for rollout in RolloutStore(registry).list():
            until = rollout.keep_loaded_until()
            if until > time.time():
                # Rollout references are name:X.Y.Z, which is what engines are kept under.
                for side in (rollout.stable, rollout.candidate):
                    pins[side] = max(pins.get(side, 0.0), until)
            if rollout.status not in ACTIVE:
                continue
            problem = self._unroutable_rollout(registry, rollout)
            if problem:
                log.warning("not routing rollout %s: %s", rollout.name, problem)
                continue
            rollouts[rollout.model] = rollout
        changed |= {r.name for k, r in rollouts.items() if self.rollouts.get(k) != r}
        changed |= {r.name for k, r in self.rollouts.items() if k not in rollouts}
        self.rollouts = rollouts
        for experiment in running.values():
            for arm in experiment.arms:
                pins[self.catalog.get(arm.reference).engine_key] = math.inf
        self.pool.pins = pins
        return sorted(changed)

    def _unroutable_rollout(self, registry: Registry, rollout: Rollout) -> str | None:
        if self.settings.max_loaded < 2:
            return "both versions must stay loaded, but --max-loaded is 1 (raise it to 2)"
        return self._serve_all(registry, [rollout.stable, rollout.candidate])

    def _unroutable(self, registry: Registry, experiment: Experiment) -> str | None:
        """Why this server cannot route `experiment`, after serving every arm's version."""
        if len(experiment.arms) > self.settings.max_loaded:
            return (f"{len(experiment.arms)} arms, but {self.settings.max_loaded} models kept "
                    "loaded (raise --max-loaded)")  # fmt: skip
        return self._serve_all(registry, [arm.reference for arm in experiment.arms])

    def _serve_all(self, registry: Registry, references: list[str]) -> str | None:
        """Put every reference in the catalog (a server given explicit names still serves
        each arm's version); what stops one, if anything does."""
        served = {m.name for m in self.catalog.all()}
        for reference in references:
            if served_name(reference) in served:
                continue
            try:
                self.catalog.add(from_registry(registry, reference))
            except AstraError as exc:
                return f"{reference}: {exc.what}"
        return None

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
        # What every name:version and name:alias points at now, in one query: names whose
        # version did not change keep their entry without their files being read again.
        current = {
            f"{v['name']}:{tag}": v["version"]
            for v in registry.list_versions()
            for tag in [v["version"], *v["aliases"]]
        }
        whole = not self.settings.models and not self.settings.upstreams
        wanted = set(current) if whole else set(served)
        changed = []
        for name in sorted(wanted | set(served)):
            if name in served and current.get(name) == served[name].version:
                continue
            model = None
            if name in current and name in wanted:
                try:
                    model = from_registry(registry, name)
                except AstraError as exc:
                    # A version whose files are missing or broken stops being served;
                    # the other names still reload.
                    log.warning("not serving %s: %s", name, exc.what)
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


def _served(name: str) -> str:
    try:
        return served_name(name)
    except AstraError:
        return name  # not a registry-style name (a file's stem): no experiment has it


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
