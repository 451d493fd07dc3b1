"""/v1/experiments: create experiments and read their scorecards over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from astra_tune.experiments.scorecard import scorecard
from astra_tune.experiments.store import ExperimentStore, parse_spec
from astra_tune.serve.openai_api import ERRORS
from astra_tune.serve.state import get_state

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/experiments")
async def experiments(request: Request) -> dict[str, Any]:
    store = ExperimentStore(get_state(request).require_registry())
    found = await run_in_threadpool(store.list)
    return {"data": [_summary(e) for e in found]}


@router.post("/experiments", status_code=201)
async def create_experiment(request: Request) -> JSONResponse:
    """The body has the fields of `astra experiment create --config` (ExperimentSpec)."""
    state = get_state(request)
    spec = parse_spec(await _json(request), where="request body")
    created = await run_in_threadpool(ExperimentStore(state.require_registry()).create, spec)
    await run_in_threadpool(state.reload_experiments)  # this server routes it at once
    return JSONResponse(_summary(created), status_code=201)


@router.get("/experiments/{name}")
async def experiment_scorecard(name: str, request: Request) -> dict[str, Any]:
    state = get_state(request)
    store = ExperimentStore(state.require_registry())
    if state.recorder is not None:
        await run_in_threadpool(state.recorder.flush)  # answers given a moment ago count
    card = await run_in_threadpool(lambda: scorecard(store.engine, store.get(name)))
    return card.as_dict()


def _summary(experiment: Any) -> dict[str, Any]:
    return {
        "name": experiment.name, "model": experiment.model, "status": experiment.status,
        "control": experiment.control, "metric": experiment.metric,
        "arms": [{"name": a.name, "reference": a.reference, "weight": a.weight}
                 for a in experiment.arms],
        "created_at": experiment.created_at, "result": experiment.result,
    }  # fmt: skip


async def _json(request: Request) -> dict[str, Any]:
    import json

    from astra_tune.serve.errors import BadRequestError

    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"the request body is not JSON: {exc.msg}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body
