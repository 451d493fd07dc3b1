"""Experiments as data: definitions and arms in the registry's database.

The registry database is the one place every server and CLI sharing a registry already
reads (SQLite here, PostgreSQL through ASTRA_REGISTRY_URL), so an experiment created on
one machine is routed by every replica, and a restarted server finds it again.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from astra_tune.errors import AstraError, ConfigError, Problem
from astra_tune.experiments.tables import ArmRow, ExperimentRow, RolloutRow, create_tables
from astra_tune.registry.index import now, session
from astra_tune.registry.names import parse_reference
from astra_tune.registry.store import Registry, RegistryError

ARM = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
Metric = Literal["thumbs", "pairwise"]


class ExperimentError(AstraError):
    """An experiment cannot be created, changed or read as asked."""


class ExperimentNotFoundError(ExperimentError):
    """No experiment (or arm) has that name."""


class ExperimentSpec(BaseModel):
    """What `astra experiment create` (flags or `--config` YAML) and the HTTP API accept."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Experiment name: lowercase letters, digits, - and _.")
    model: str = Field(..., description="The served name it takes over, e.g. orrery.")
    arms: dict[str, str] = Field(
        ..., description="Arm name -> registry reference; the first is the control."
    )
    split: list[float] = Field(..., description="Traffic percentages per arm, summing to 100.")
    metric: Metric = Field("thumbs", description="Primary metric: thumbs or pairwise votes.")
    min_samples: int = Field(
        100, ge=1, description="Feedback per arm below which the decision is keep collecting."
    )


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the registry reference it serves, its traffic percentage."""

    name: str
    reference: str
    weight: float


@dataclass(frozen=True)
class Experiment:
    """An experiment as servers route it and the CLI shows it."""

    name: str
    model: str
    arms: tuple[Arm, ...]
    control: str
    salt: str
    metric: str
    min_samples: int
    status: str
    created_at: str
    stopped_at: str | None
    result: dict[str, Any]
    weights_since: str = ""

    def weights(self) -> dict[str, float]:
        return {arm.name: arm.weight for arm in self.arms}

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise ExperimentNotFoundError(
            f"experiment {self.name!r} has no arm {name!r}",
            where=f"{self.name}.{name}",
            fix=f"choose one of: {', '.join(a.name for a in self.arms)}",
        )


def served_name(reference: str) -> str:
    """`name` -> `name:latest`, as requests are matched (Ollama's default tag)."""
    return str(parse_reference(reference))


class ExperimentStore:
    """Create, read, reweight and stop experiments; every write is one transaction."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine: Engine = registry.engine
        create_tables(self.engine)

    def create(self, spec: ExperimentSpec) -> Experiment:
        """Validate `spec` against the registry and store it; nothing is kept on an error."""
        problems = _spec_problems(spec)
        for arm, reference in spec.arms.items():
            try:
                self.registry.resolve(reference, verify=False)
            except (RegistryError, ConfigError) as exc:
                problems.append(Problem(path=f"arms.{arm}", message=exc.what))
        if problems:
            raise ConfigError(
                f"experiment {spec.name!r} cannot be created",
                problems=problems,
                fix="see `astra experiment create --help`",
            )
        model = served_name(spec.model)
        with session(self.engine) as db, db.begin():
            if db.scalars(select(ExperimentRow).where(ExperimentRow.name == spec.name)).first():
                raise ExperimentError(
                    f"an experiment named {spec.name!r} exists already",
                    where="name",
                    fix="choose another name (stopped experiments keep theirs)",
                )
            busy = db.scalars(
                select(ExperimentRow).where(
                    ExperimentRow.model == model, ExperimentRow.status == "running"
                )
            ).first()
            active = RolloutRow.status.in_(("running", "paused"))
            rolling = db.scalars(
                select(RolloutRow).where(RolloutRow.model == model, active)
            ).first()
            if rolling is not None:
                raise ExperimentError(
                    f"{model} is in rollout {rolling.name}",
                    where="model",
                    fix=f"let it finish or abort it: astra rollout abort {rolling.name}",
                )
            if busy is not None:
                raise ExperimentError(
                    f"{model} is already in experiment {busy.name!r}",
                    where="model",
                    fix=f"stop it first: astra experiment stop {busy.name}",
                )
            row = ExperimentRow(
                name=spec.name,
                model=model,
                control=next(iter(spec.arms)),
                salt=secrets.token_hex(8),
                metric=spec.metric,
                min_samples=spec.min_samples,
                status="running",
                created_at=now(),
                weights_since=now(),
                result={},
                revision=1,
            )
            for position, ((arm, reference), weight) in enumerate(
                zip(spec.arms.items(), spec.split, strict=True)
            ):
                row.arms.append(
                    ArmRow(position=position, name=arm, reference=reference, weight=weight)
                )
            db.add(row)
            db.flush()
            return _experiment(row)

    def get(self, name: str) -> Experiment:
        with session(self.engine) as db:
            return _experiment(self._row(db, name))

    def list(self, *, running_only: bool = False) -> list[Experiment]:
        with session(self.engine) as db:
            query = select(ExperimentRow).order_by(ExperimentRow.id)
            if running_only:
                query = query.where(ExperimentRow.status == "running")
            return [_experiment(row) for row in db.scalars(query)]

    def set_weights(self, name: str, weights: dict[str, float]) -> Experiment:
        """New traffic percentages for the named arms (the others keep theirs)."""
        with session(self.engine) as db, db.begin():
            row = self._row(db, name)
            current = {arm.name: arm for arm in row.arms}
            unknown = sorted(set(weights) - set(current))
            if unknown:
                raise ExperimentNotFoundError(
                    f"experiment {name!r} has no arm {unknown[0]!r}",
                    where=f"{name}.{unknown[0]}",
                    fix=f"choose one of: {', '.join(current)}",
                )
            split = [weights.get(arm.name, arm.weight) for arm in row.arms]
            problems = _split_problems(split, len(split))
            if problems:
                raise ConfigError(f"weights for {name!r} are invalid", problems=problems)
            for arm, weight in zip(row.arms, split, strict=True):
                arm.weight = weight
            row.weights_since = now()
            row.revision += 1
            db.flush()
            return _experiment(row)

    def stop(self, name: str, *, promote: str | None = None, reason: str = "") -> Experiment:
        """End the experiment; with `promote`, point the model's alias at that arm's version."""
        experiment = self.get(name)
        if experiment.status != "running":
            raise ExperimentError(f"experiment {name!r} is stopped already", where=name)
        result: dict[str, Any] = {"reason": reason}
        if promote is not None:
            arm = experiment.arm(promote)
            target = parse_reference(experiment.model)
            version = self.registry.resolve(arm.reference, verify=False)
            if version.name != target.name or target.is_version:
                raise ExperimentError(
                    f"arm {promote!r} serves {arm.reference}, which cannot become "
                    f"{experiment.model}",
                    where=f"{name}.{promote}",
                    fix="promote an arm of the same model name, or tag by hand",
                )
            why = f"experiment {name}: {promote} promoted" + (f" ({reason})" if reason else "")
            previous, _ = self.registry.tag(arm.reference, target.tag, reason=why)
            result.update(promoted=promote, version=version.version, previous=previous)
        with session(self.engine) as db, db.begin():
            row = self._row(db, name)
            row.status = "stopped"
            row.stopped_at = now()
            row.result = result
            row.revision += 1
            db.flush()
            return _experiment(row)

    def change_marker(self) -> tuple[int, int]:
        """Changes whenever any experiment is created, reweighted or stopped."""
        with session(self.engine) as db:
            count, revisions = db.execute(
                select(func.count(ExperimentRow.id), func.sum(ExperimentRow.revision))
            ).one()
        return int(count), int(revisions or 0)

    def _row(self, db: Any, name: str) -> ExperimentRow:
        row = db.scalars(select(ExperimentRow).where(ExperimentRow.name == name)).first()
        if row is None:
            known = ", ".join(db.scalars(select(ExperimentRow.name))) or "(none)"
            raise ExperimentNotFoundError(
                f"no experiment named {name!r}", where=name, fix=f"known: {known}"
            )
        return row  # type: ignore[no-any-return]


def parse_spec(values: dict[str, Any], where: str | None = None) -> ExperimentSpec:
    """`values` as a spec; every field error named (YAML file, flags or HTTP body)."""
    try:
        return ExperimentSpec.model_validate(values)
    except ValidationError as exc:
        problems = [
            Problem(path=".".join(str(p) for p in err["loc"]), message=err["msg"], location=where)
            for err in exc.errors()
        ]
        raise ConfigError("invalid experiment", problems=problems) from exc


def _spec_problems(spec: ExperimentSpec) -> list[Problem]:
    problems = []
    if not ARM.match(spec.name):
        problems.append(Problem(path="name", message="use lowercase letters, digits, - and _"))
    try:
        served_name(spec.model)
    except ConfigError as exc:
        problems.append(Problem(path="model", message=exc.what))
    if len(spec.arms) < 2:
        problems.append(Problem(path="arms", message="an experiment needs at least two arms"))
    for arm in spec.arms:
        if not ARM.match(arm):
            problems.append(
                Problem(path=f"arms.{arm}", message="arm names: lowercase letters, digits, - _")
            )
    return problems + _split_problems(spec.split, len(spec.arms))


def _split_problems(split: list[float], arms: int) -> list[Problem]:
    if len(split) != arms:
        return [Problem(path="split", message=f"{len(split)} weights for {arms} arms")]
    if any(w < 0 for w in split):
        return [Problem(path="split", message="weights cannot be negative")]
    if abs(sum(split) - 100) > 1e-6:
        total = f"{sum(split):g}"
        return [Problem(path="split", message=f"weights sum to {total}, not 100")]
    return []


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        name=row.name,
        model=row.model,
        arms=tuple(Arm(a.name, a.reference, a.weight) for a in row.arms),
        control=row.control,
        salt=row.salt,
        metric=row.metric,
        min_samples=row.min_samples,
        status=row.status,
        created_at=_iso(row.created_at),
        stopped_at=_iso(row.stopped_at) if row.stopped_at else None,
        result=dict(row.result or {}),
        weights_since=_iso(row.weights_since),
    )


def _iso(moment: datetime) -> str:
    # SQLite gives back naive datetimes; what was stored was UTC.
    return moment.replace(tzinfo=moment.tzinfo or UTC).isoformat(timespec="seconds")
