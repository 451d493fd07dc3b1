"""Canary rollouts with guardrails: steps of traffic, checks between them, rollback.

A rollout shifts a served name from its stable version to a candidate in steps (10, 25,
50, 100%). After each interval the candidate is compared with the stable version on the
answers both gave in that step, from the response records every replica writes to the
shared database, so the check sees the whole fleet's traffic. Too few candidate answers
means "hold", never "pass" (Argo Rollouts and Flagger can pass or fail a canary on an empty
metric). A failed check counts; at the failure limit the candidate's weight goes to 0 and
the rollout ends rolled back. Passing the last step points the alias at the candidate.

A blue-green rollout starts "warming": every server that sees it loads the candidate
and asks it one greedy question, and the first to get a whole answer (end of turn
reached, not cut off by the token limit) switches all traffic and the alias at once.
A post-switch window with the same guardrails can switch back; the old version stays
loaded meanwhile and for the scale-down delay after the switch, so switching back
costs no load.

Every server ticks every rollout; each tick is one transaction that rereads the row, so
two replicas never both advance the same step.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select

from astra_tune.errors import ConfigError
from astra_tune.experiments.stats import quantile
from astra_tune.experiments.store import ExperimentError, ExperimentNotFoundError, served_name
from astra_tune.experiments.tables import ExperimentRow, ResponseRow, RolloutRow, create_tables
from astra_tune.registry.index import now, session
from astra_tune.registry.names import parse_reference
from astra_tune.registry.store import Registry

ACTIVE = ("warming", "running", "paused")
# Blue-green settings live in the JSON `guardrails` column beside the guardrails, so a
# database made before blue-green existed needs no migration.
SETTINGS = ("scale_down_delay_s", "smoke_prompt", "smoke_max_tokens")


class RolloutSpec(BaseModel):
    """What `astra rollout start` accepts."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Served name whose alias moves, e.g. orrery:production.")
    to: str = Field(..., description="The candidate version, e.g. orrery:1.1.0.")
    steps: list[float] = Field([10, 25, 50, 100], description="Candidate share per step, %.")
    interval_s: float = Field(60.0, gt=0, description="Seconds each step runs before its check.")
    failure_limit: int = Field(2, ge=1, description="Failed checks before rolling back.")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="Candidate error rate allowed.")
    max_p95_latency_ratio: float = Field(1.5, gt=0, description="Candidate/stable p95 latency.")
    max_ttft_ratio: float = Field(1.5, gt=0, description="Candidate/stable p95 time to 1st token.")
    min_requests: int = Field(20, ge=1, description="Candidate answers a check needs, else hold.")
    strategy: Literal["canary", "blue-green"] = Field(
        "canary", description="canary: steps of traffic; blue-green: smoke test, then switch."
    )
    scale_down_delay_s: float = Field(
        600.0, ge=0, description="Blue-green: seconds the old side stays loaded after the switch."
    )
    smoke_prompt: str = Field(
        "Say hello in one short sentence.", min_length=1,
        description="Blue-green: what the candidate must answer before the switch.",
    )  # fmt: skip
    smoke_max_tokens: int = Field(
        256, ge=1, le=8192, description="Blue-green: tokens the smoke answer may take."
    )

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s <= 100 for s in steps):
            raise ValueError("steps are percentages in (0, 100]")
        if any(b <= a for a, b in pairwise(steps)) or steps[-1] != 100:
            raise ValueError("steps must rise and end at 100, e.g. 10,25,50,100")
        return steps

    @model_validator(mode="after")
    def _one_step_for_blue_green(self) -> RolloutSpec:
        if self.strategy == "blue-green":
            if "steps" in self.model_fields_set and self.steps != [100]:
                raise ValueError("a blue-green rollout switches at once: leave out steps")
            self.steps = [100]
        return self


@dataclass(frozen=True)
class Rollout:
    """A rollout as servers route it and the CLI shows it."""

    name: str
    model: str
    stable: str
    candidate: str
    steps: tuple[float, ...]
    step: int
    weight: float
    interval_s: float
    failure_limit: int
    failures: int
    guardrails: dict[str, Any]
    status: str
    salt: str
    step_started_at: str
    history: tuple[dict[str, Any], ...]
    strategy: str = "canary"
    scale_down_delay_s: float = 0.0
    smoke_prompt: str = ""
    smoke_max_tokens: int = 256

    @property
    def switched_at(self) -> datetime | None:
        """When a blue-green rollout switched its traffic, if it has."""
        at = next((e["at"] for e in self.history if e["event"] == "switched"), None)
        return datetime.fromisoformat(at) if at else None

    def keep_loaded_until(self) -> float:
        """Until when (epoch seconds) servers keep both sides loaded: while active, and a
        blue-green rollout's old side for the scale-down delay after its switch."""
        if self.status in ACTIVE:
            return math.inf
        switched = self.switched_at
        if self.strategy != "blue-green" or switched is None:
            return 0.0
        return switched.timestamp() + self.scale_down_delay_s

    def weights(self) -> dict[str, float]:
        return {"stable": 100 - self.weight, "candidate": self.weight}

    def reference(self, arm: str) -> str:
        return self.candidate if arm == "candidate" else self.stable


@dataclass(frozen=True)
class Check:
    """One guardrail check: pass, fail or hold, with the values it saw."""

    decision: str  # pass | fail | hold
    reason: str
    values: dict[str, Any]


class RolloutStore:
    """Start, read, pause, resume, abort and advance rollouts (in the registry database)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        create_tables(self.engine)

    def start(self, spec: RolloutSpec) -> Rollout:
        """Begin a canary from the alias's current version to `spec.to`."""
        model = served_name(spec.model)
        target = parse_reference(model)
        if target.is_version:
            raise ConfigError(f"{model} is a version, not an alias", where="model",
                              fix="roll out behind an alias: orrery:production")  # fmt: skip
        stable = self.registry.resolve(model, verify=False)
        candidate = self.registry.resolve(spec.to, verify=False)
        if candidate.name != stable.name:
            raise ConfigError(f"{spec.to} is not a version of {stable.name}", where="--to")
        if candidate.version == stable.version:
            raise ConfigError(f"{model} already points at {candidate.version}", where="--to")
        with session(self.engine) as db, db.begin():
            busy = db.scalars(select(RolloutRow).where(
                RolloutRow.model == model, RolloutRow.status.in_(ACTIVE))).first()  # fmt: skip
            if busy is not None:
                raise ExperimentError(
                    f"{model} is already in rollout {busy.name}", where="model",
                    fix=f"end it first: astra rollout abort {busy.name}",
                )  # fmt: skip
            running = select(ExperimentRow).where(ExperimentRow.model == model,
                                                  ExperimentRow.status == "running")  # fmt: skip
            experiment = db.scalars(running).first()
            if experiment is not None:
                raise ExperimentError(
                    f"{model} is in experiment {experiment.name}", where="model",
                    fix=f"stop it first: astra experiment stop {experiment.name}",
                )  # fmt: skip
            count = db.scalar(select(func.count(RolloutRow.id))) or 0
            moment = now()
            blue_green = spec.strategy == "blue-green"
            weight = 0.0 if blue_green else spec.steps[0]  # blue-green: none until the smoke test
            row = RolloutRow(
                name=f"rollout-{re.sub(r'[^a-z0-9]+', '-', model)}-{count + 1}", model=model,
                stable=f"{stable.name}:{stable.version}",
                candidate=f"{candidate.name}:{candidate.version}", strategy=spec.strategy,
                steps=list(spec.steps), step=0, weight=weight, interval_s=spec.interval_s,
                failure_limit=spec.failure_limit, failures=0,
                status="warming" if blue_green else "running",
                guardrails={"max_error_rate": spec.max_error_rate,
                            "max_p95_latency_ratio": spec.max_p95_latency_ratio,
                            "max_ttft_ratio": spec.max_ttft_ratio,
                            "min_requests": spec.min_requests,
                            **{key: getattr(spec, key) for key in SETTINGS}},
                salt=secrets.token_hex(8), started_at=moment, step_started_at=moment,
                history=[{"at": _iso(moment), "event": "start", "weight": weight}],
                revision=1,
            )  # fmt: skip
            db.add(row)
            db.flush()
            return _rollout(row)

    def get(self, name: str) -> Rollout:
        with session(self.engine) as db:
            return _rollout(self._row(db, name))

    def list(self, *, active_only: bool = False) -> list[Rollout]:
        with session(self.engine) as db:
            query = select(RolloutRow).order_by(RolloutRow.id)
            if active_only:
                query = query.where(RolloutRow.status.in_(ACTIVE))
            return [_rollout(r) for r in db.scalars(query)]

    def pause(self, name: str) -> Rollout:
        return self._set_status(name, "paused", from_=("running",))

    def resume(self, name: str) -> Rollout:
        return self._set_status(name, "running", from_=("paused",), restart_step=True)

    def abort(self, name: str, reason: str = "") -> Rollout:
        """End the rollout with every request on the stable version (a blue-green
        rollout that already switched also points its alias back)."""
        ended = self._set_status(name, "aborted", from_=ACTIVE, weight=0.0, reason=reason)
        if ended.switched_at is not None:
            self._point_alias(ended, ended.stable, f"{name} aborted: {reason or 'by hand'}")
        return ended

    def switch(self, name: str, values: dict[str, Any]) -> bool:
        """Give a warming blue-green rollout all traffic and its alias, after the smoke
        test `values` describe; False when another server got there first."""
        with session(self.engine) as db, db.begin():
            row = self._locked(db, name)
            if row.status != "warming":
                return False
            moment = now()
            row.status, row.weight, row.step_started_at = "running", 100.0, moment
            event = {"at": _iso(moment), "event": "switched", "weight": 100.0,
                     "reason": "smoke test passed", "values": values}  # fmt: skip
            row.history = [*row.history, event]
            row.revision += 1
            switched = _rollout(row)
        self._point_alias(switched, switched.candidate, f"{name}: blue-green switch")
        return True

    def fail_smoke(self, name: str, reason: str, values: dict[str, Any]) -> bool:
        """End a warming blue-green rollout whose candidate failed its smoke test (it never
        got traffic); False when it was no longer warming."""
        with session(self.engine) as db, db.begin():
            row = self._locked(db, name)
            if row.status != "warming":
                return False
            row.status, row.weight = "failed", 0.0
            event = {"at": _iso(now()), "event": "smoke test failed", "weight": 0.0,
                     "reason": reason, "values": values}  # fmt: skip
            row.history = [*row.history, event]
            row.revision += 1
        return True

    def tick(self, at: datetime | None = None) -> list[str]:
        """Check every running rollout whose step interval is over; names that changed."""
        moment = at or now()
        changed = []
        for rollout in self.list(active_only=True):
            if rollout.status == "running" and self._advance(rollout.name, moment):
                changed.append(rollout.name)
        return changed

    def check(self, rollout: Rollout, since: datetime, until: datetime) -> Check:
        """The guardrails on the answers the rollout routed between `since` and `until`."""
        with session(self.engine) as db:
            rows = list(db.scalars(select(ResponseRow).where(
                ResponseRow.experiment == rollout.name, ResponseRow.at >= since,
                ResponseRow.at <= until)))  # fmt: skip
        return evaluate(rollout, [r for r in rows if r.arm == "candidate"],
                        [r for r in rows if r.arm == "stable"])  # fmt: skip

    def change_marker(self) -> tuple[int, int]:
        with session(self.engine) as db:
            count, revisions = db.execute(
                select(func.count(RolloutRow.id), func.sum(RolloutRow.revision))
            ).one()
        return int(count), int(revisions or 0)

    def _advance(self, name: str, moment: datetime) -> bool:
        seen = self.get(name)
        started = datetime.fromisoformat(seen.step_started_at)
        if moment < started + timedelta(seconds=seen.interval_s):
            return False
        result = self.check(seen, started, moment)  # read-only, outside the write lock
        alias_to = None  # (version, reason) the alias moves to once the row is committed
        with session(self.engine) as db, db.begin():
            row = self._locked(db, name)
            if row.status != "running" or _utc(row.step_started_at) != started:
                return False
            event: dict[str, Any] = {"at": _iso(moment), "event": result.decision,
                                     "weight": row.weight, "reason": result.reason,
                                     "values": result.values}  # fmt: skip
            if result.decision == "pass" and row.step + 1 < len(row.steps):
                row.step += 1
                row.weight = row.steps[row.step]
                row.failures = 0
            elif result.decision == "pass":
                row.status = "done"
                event["event"] = "promoted"
                # A blue-green alias moved at the switch; setting it again is a no-op.
                alias_to = (row.candidate, f"{row.name}: every step passed")
            elif result.decision == "fail":
                row.failures += 1
                if row.failures >= row.failure_limit:
                    row.weight = 0.0
                    row.status = "rolled_back"
                    event["event"] = "rolled back"
                    if row.strategy == "blue-green":  # its alias had moved: move it back
                        alias_to = (row.stable, f"{row.name}: rolled back ({result.reason})")
            row.step_started_at = moment
            row.history = [*row.history, event]
            row.revision += 1
            ended = _rollout(row)
        if alias_to is not None:
            self._point_alias(ended, *alias_to)
        return True

    def _point_alias(self, rollout: Rollout, reference: str, reason: str) -> None:
        """Point the rollout's alias at `reference` unless it already does (after the
        rollout's own commit: the registry takes its own write lock)."""
        alias = parse_reference(rollout.model).tag
        if self.registry.resolve(rollout.model, verify=False).reference != reference:
            self.registry.tag(reference, alias, reason=reason)

    def _locked(self, db: Any, name: str) -> RolloutRow:
        # Reread under the write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE):
        # a replica that moved this rollout a moment earlier is seen, not repeated.
        return db.scalars(  # type: ignore[no-any-return]
            select(RolloutRow).where(RolloutRow.name == name).with_for_update()
        ).one()

    def _set_status(
        self, name: str, status: str, *, from_: tuple[str, ...], weight: float | None = None,
        reason: str = "", restart_step: bool = False,
    ) -> Rollout:  # fmt: skip
        with session(self.engine) as db, db.begin():
            row = self._row(db, name)
            if row.status not in from_:
                raise ExperimentError(f"rollout {name} is {row.status}, not {' or '.join(from_)}",
                                      where=name)  # fmt: skip
            row.status = status
            if weight is not None:
                row.weight = weight
            if restart_step:
                row.step_started_at = now()  # a paused step's window starts again
            row.history = [*row.history, {"at": _iso(now()), "event": status, "reason": reason}]
            row.revision += 1
            db.flush()
            return _rollout(row)

    def _row(self, db: Any, name: str) -> RolloutRow:
        row = db.scalars(select(RolloutRow).where(RolloutRow.name == name)).first()
        if row is None:
            known = ", ".join(db.scalars(select(RolloutRow.name))) or "(none)"
            raise ExperimentNotFoundError(f"no rollout named {name!r}", where=name,
                                          fix=f"known: {known}")  # fmt: skip
        return row  # type: ignore[no-any-return]


def evaluate(rollout: Rollout, candidate: list[ResponseRow], stable: list[ResponseRow]) -> Check:
    """Pass, fail or hold for one step, from the two arms' answers in it."""
    g = rollout.guardrails
    values: dict[str, Any] = {"candidate_requests": len(candidate), "stable_requests": len(stable)}
    if len(candidate) < g["min_requests"]:
        return Check("hold", f"{len(candidate)} candidate answers, {g['min_requests']} needed",
                     values)  # fmt: skip
    errors = sum(1 for r in candidate if r.error) / len(candidate)
    values["candidate_error_rate"] = errors
    if errors > g["max_error_rate"]:
        return Check("fail", f"candidate error rate {errors:.1%} > {g['max_error_rate']:.1%}",
                     values)  # fmt: skip
    problems = []
    if len(stable) >= g["min_requests"]:  # ratios need the stable side too (not at 100%)
        for key, field, limit in (("p95_latency_ratio", "latency_s", "max_p95_latency_ratio"),
                                  ("ttft_ratio", "ttft_s", "max_ttft_ratio")):  # fmt: skip
            ours = quantile([getattr(r, field) for r in candidate
                             if getattr(r, field) is not None and not r.error], 0.95)  # fmt: skip
            theirs = quantile([getattr(r, field) for r in stable
                               if getattr(r, field) is not None and not r.error], 0.95)  # fmt: skip
            if ours is None or not theirs:
                continue
            values[key] = ours / theirs
            if ours / theirs > g[limit]:
                problems.append(f"{key} {ours / theirs:.2f} > {g[limit]}")
    if problems:
        return Check("fail", "; ".join(problems), values)
    return Check("pass", "every guardrail held", values)


def _rollout(row: RolloutRow) -> Rollout:
    guardrails = {k: v for k, v in row.guardrails.items() if k not in SETTINGS}
    settings = {k: row.guardrails[k] for k in SETTINGS if k in row.guardrails}
    return Rollout(
        name=row.name, model=row.model, stable=row.stable, candidate=row.candidate,
        steps=tuple(row.steps), step=row.step, weight=row.weight, interval_s=row.interval_s,
        failure_limit=row.failure_limit, failures=row.failures, guardrails=guardrails,
        status=row.status, salt=row.salt, strategy=row.strategy, **settings,
        # Full precision: `_advance` compares it with the row to see a step already taken.
        step_started_at=_utc(row.step_started_at).isoformat(),
        history=tuple(row.history or []),
    )  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=moment.tzinfo or UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds")
