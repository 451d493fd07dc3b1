"""User feedback on gateway answers: thumbs with reasons, and pairwise votes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.engine import Engine

from astra_tune.experiments.store import ExperimentError
from astra_tune.experiments.tables import FeedbackRow, ResponseRow, VoteRow, create_tables
from astra_tune.registry.index import now, session

Winner = Literal["a", "b", "tie", "both_bad"]


class ResponseNotFoundError(ExperimentError):
    """Feedback names a response id the gateway never gave (or no longer holds)."""


@dataclass(frozen=True)
class Rated:
    """What a rating did: created (first rating of that response) or replaced."""

    response_id: str
    rating: int
    created: bool
    experiment: str | None
    arm: str | None
    version: str


class FeedbackStore:
    """Ratings and votes, in the registry database beside the responses they rate."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def rate(
        self,
        response_id: str,
        rating: int,
        *,
        reason: str | None = None,
        comment: str | None = None,
        tags: list[str] | None = None,
    ) -> Rated:
        """Rate a response (1 or -1); rating it again replaces the earlier rating."""
        with session(self.engine) as db, db.begin():
            response = self._response(db, response_id, "response_id")
            row = db.get(FeedbackRow, response_id)
            created = row is None
            if row is None:
                row = FeedbackRow(response_id=response_id, created_at=now())
                db.add(row)
            row.rating = rating
            row.reason = reason
            row.comment = comment
            row.tags = list(tags or [])
            row.updated_at = now()
            return Rated(response_id, rating, created, response.experiment, response.arm,
                         response.version)  # fmt: skip

    def vote(self, first: str, second: str, winner: Winner) -> int:
        """A pairwise vote between two responses; returns the vote's id."""
        if first == second:
            raise ExperimentError(
                "a pairwise vote needs two different responses", where="response_ids"
            )
        with session(self.engine) as db, db.begin():
            self._response(db, first, "response_ids.0")
            self._response(db, second, "response_ids.1")
            vote = VoteRow(first=first, second=second, winner=winner, at=now())
            db.add(vote)
            db.flush()
            return vote.id

    @staticmethod
    def _response(db: object, response_id: str, where: str) -> ResponseRow:
        row = db.get(ResponseRow, response_id)  # type: ignore[attr-defined]
        if row is None:
            raise ResponseNotFoundError(
                f"no response with id {response_id!r}",
                where=where,
                fix="use the id of an answer from this gateway (the body's id on /v1, "
                "X-Astra-Response-Id on /api)",
            )
        return row  # type: ignore[no-any-return]


def responses_for(engine: Engine, experiment: str) -> list[ResponseRow]:
    """Every recorded response an experiment routed, oldest first."""
    with session(engine) as db:
        query = select(ResponseRow).where(ResponseRow.experiment == experiment)
        return list(db.scalars(query.order_by(ResponseRow.at)))
