"""POST /v1/feedback: thumbs and pairwise votes on answers of either API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from astra_tune.experiments.feedback import FeedbackStore
from astra_tune.serve.openai_api import ERRORS
from astra_tune.serve.state import get_state
from astra_tune.serve.wire import FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/feedback", response_model=FeedbackResponse, status_code=201)
async def feedback(body: FeedbackRequest, request: Request) -> JSONResponse:
    """201 for a new rating or vote, 200 when a rating replaces an earlier one."""
    state = get_state(request)
    registry = state.require_registry()
    if state.recorder is not None:
        # The answer may have ended a moment ago; its record must be in before lookup.
        await run_in_threadpool(state.recorder.flush)
    store = FeedbackStore(registry.engine)
    if body.response_ids is not None:
        assert body.winner is not None
        vote = await run_in_threadpool(store.vote, *body.response_ids, body.winner)
        answer = FeedbackResponse(vote_id=vote, created=True)
        return JSONResponse(answer.model_dump(exclude_none=True), status_code=201)
    response_id, rating = body.response_id, body.rating
    assert response_id is not None
    assert rating is not None
    rated = await run_in_threadpool(
        lambda: store.rate(
            response_id, rating, reason=body.reason, comment=body.comment, tags=body.tags
        )
    )
    state.metrics.feedback.labels(rated.experiment or "", rated.arm or "", rated.version,
                                  "up" if rated.rating > 0 else "down").inc()  # fmt: skip
    answer = FeedbackResponse(
        response_id=rated.response_id, rating=rated.rating, experiment=rated.experiment,
        arm=rated.arm, version=rated.version, created=rated.created,
    )  # fmt: skip
    status = 201 if rated.created else 200
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=status)
