"""An experiment's feedback out as files: Open WebUI's feedback shape, and preference pairs.

`feedback.jsonl` has one record per rating (and per pairwise vote, as Open WebUI's arena
records it) in Open WebUI's export shape, with the fields its own export drops kept under
`astra` (experiment, arm, version, response id). `preferences.jsonl` turns each decided
pairwise vote on the same conversation into `{prompt, chosen, rejected}`, the preference
format `astra data prepare` reads (for DPO and friends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from astra_tune.atomic import write_text
from astra_tune.experiments.store import Experiment
from astra_tune.experiments.tables import FeedbackRow, ResponseRow, VoteRow
from astra_tune.registry.index import session


@dataclass(frozen=True)
class Exported:
    feedback: Path
    preferences: Path
    ratings: int
    votes: int
    pairs: int
    skipped_pairs: int  # ties, both bad, or two different conversations


def export_feedback(engine: Any, experiment: Experiment, out_dir: Path) -> Exported:
    """Write `feedback.jsonl` and `preferences.jsonl` for `experiment` into `out_dir`."""
    with session(engine) as db:
        query = select(ResponseRow).where(ResponseRow.experiment == experiment.name)
        rows = {r.id: r for r in db.scalars(query)}
        ratings = [f for f in db.scalars(select(FeedbackRow).order_by(FeedbackRow.created_at))
                   if f.response_id in rows]  # fmt: skip
        votes = [v for v in db.scalars(select(VoteRow).order_by(VoteRow.id))
                 if v.first in rows and v.second in rows]  # fmt: skip
    records = [_rating_record(f, rows[f.response_id]) for f in ratings]
    records += [_vote_record(v, rows[v.first], rows[v.second]) for v in votes]
    pairs, skipped = [], 0
    for vote in votes:
        pair = _preference(vote, rows[vote.first], rows[vote.second])
        if pair is None:
            skipped += 1
        else:
            pairs.append(pair)
    out_dir.mkdir(parents=True, exist_ok=True)
    feedback_path, preferences_path = out_dir / "feedback.jsonl", out_dir / "preferences.jsonl"
    write_text(feedback_path, "".join(json.dumps(r) + "\n" for r in records))
    write_text(preferences_path, "".join(json.dumps(p) + "\n" for p in pairs))
    return Exported(feedback_path, preferences_path, len(ratings), len(votes), len(pairs),
                    skipped)  # fmt: skip


def _chat(row: ResponseRow) -> list[dict[str, Any]]:
    return [*(row.messages or []), {"role": "assistant", "content": row.answer or ""}]


def _astra(row: ResponseRow) -> dict[str, Any]:
    return {"experiment": row.experiment, "arm": row.arm, "version": row.version,
            "response_id": row.id, "served": row.served}  # fmt: skip


def _epoch(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp())


def _rating_record(feedback: FeedbackRow, row: ResponseRow) -> dict[str, Any]:
    return {
        "id": f"rating-{row.id}",
        "user_id": row.unit,
        "version": 0,
        "type": "rating",
        "data": {"rating": feedback.rating, "model_id": row.served, "sibling_model_ids": None,
                 "reason": feedback.reason or "", "comment": feedback.comment or ""},
        "meta": {"arena": False, "chat_id": row.id, "message_id": row.id,
                 "tags": list(feedback.tags or [])},
        "snapshot": {"chat": {"messages": _chat(row)}},
        "created_at": _epoch(feedback.created_at),
        "updated_at": _epoch(feedback.updated_at),
        "astra": _astra(row),
    }  # fmt: skip


def _vote_record(vote: VoteRow, first: ResponseRow, second: ResponseRow) -> dict[str, Any]:
    # As Open WebUI's arena: the rated model is the winner, its sibling the other; a tie
    # or "both bad" is rated 0 against the first.
    winner, other = (second, first) if vote.winner == "b" else (first, second)
    rating = 1 if vote.winner in ("a", "b") else 0
    return {
        "id": f"vote-{vote.id}",
        "user_id": first.unit,
        "version": 0,
        "type": "rating",
        "data": {"rating": rating, "model_id": winner.served,
                 "sibling_model_ids": [other.served], "reason": vote.winner, "comment": ""},
        "meta": {"arena": True, "chat_id": first.id, "message_id": winner.id, "tags": []},
        "snapshot": {"chat": {"messages": _chat(winner)}},
        "created_at": _epoch(vote.at),
        "updated_at": _epoch(vote.at),
        "astra": {"winner": _astra(winner), "other": _astra(other), "vote": vote.winner},
    }  # fmt: skip


def _preference(vote: VoteRow, first: ResponseRow, second: ResponseRow) -> dict[str, Any] | None:
    if vote.winner not in ("a", "b") or first.messages != second.messages:
        return None
    chosen, rejected = (first, second) if vote.winner == "a" else (second, first)
    return {"prompt": first.messages, "chosen": chosen.answer or "",
            "rejected": rejected.answer or ""}  # fmt: skip
