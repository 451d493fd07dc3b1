"""Every answer the gateway gives, kept so feedback and scorecards can refer to it.

Rows are written by one background thread in batches: a request never waits on the
database, and SQLite sees one writer. `flush()` is for readers that need the latest rows
now (feedback on an answer given a moment ago).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from astra_tune.experiments.assignment import Unit
from astra_tune.experiments.tables import ResponseRow, create_tables
from astra_tune.registry.index import now, session

log = logging.getLogger(__name__)


@dataclass
class Trace:
    """One routed request, from routing to its last token."""

    id: str
    api: str
    requested: str
    served: str
    version: str
    unit: Unit
    experiment: str | None = None
    arm: str | None = None
    at: datetime = field(default_factory=now)
    started: float = field(default_factory=time.perf_counter)
    messages: list[dict[str, Any]] | None = None

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:24]}"

    def row(
        self, *, answer: str | None, done: Any = None, error: str | None = None
    ) -> dict[str, Any]:
        """The `responses` row for this request, given how it ended."""
        ended = time.perf_counter()
        first = getattr(done, "first_token", None)
        return {
            "id": self.id, "at": self.at, "api": self.api, "requested": self.requested,
            "served": self.served, "version": self.version, "experiment": self.experiment,
            "arm": self.arm, "unit": self.unit.hashed, "unit_kind": self.unit.kind,
            "latency_s": ended - self.started,
            "ttft_s": first - done.started if first is not None else None,
            "prompt_tokens": getattr(done, "prompt_tokens", None),
            "completion_tokens": getattr(done, "completion_tokens", None),
            "finish_reason": getattr(done, "finish_reason", None),
            "error": error[:500] if error else None,
            # Kept for experiment traffic only: export and preference pairs need the text.
            "messages": self.messages if self.experiment else None,
            "answer": answer if self.experiment else None,
        }  # fmt: skip


class Recorder:
    """Writes `responses` rows off the request path, in batches."""

    def __init__(self, engine: Engine, *, batch_seconds: float = 0.2) -> None:
        self.engine = engine
        self.batch_seconds = batch_seconds
        create_tables(engine)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="astra-recorder", daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        self._queue.put(row)

    def flush(self) -> None:
        """Return once every row submitted so far is in the database."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.batch_seconds
            while first is not None and time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
                if batch[-1] is None:
                    break
            rows = [r for r in batch if r is not None]
            try:
                if rows:
                    with session(self.engine) as db, db.begin():
                        db.add_all(ResponseRow(**r) for r in rows)
            except Exception as exc:
                # Logged, not raised: a database hiccup must not take answers down with
                # it; the answers were already sent, only their records are missing.
                log.warning("could not record %d responses: %s", len(rows), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return
