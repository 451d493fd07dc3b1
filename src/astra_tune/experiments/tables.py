"""The experiment tables, in the registry's database beside its own.

The registry database is the one place every server and CLI sharing a registry already
reads (SQLite here, PostgreSQL through ASTRA_REGISTRY_URL), so an experiment created on
one machine is routed by every replica, and feedback survives restarts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Experiment tables, created beside the registry's own in its database."""


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(200), index=True)  # served name, name:tag
    control: Mapped[str] = mapped_column(String(32))
    salt: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(16))
    min_samples: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # running | stopped
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the weights last changed: the sample-ratio test counts units from then on.
    weights_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Bumped on every change, so servers see a change by polling one sum.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    arms: Mapped[list[ArmRow]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan", order_by="ArmRow.position"
    )


class ArmRow(Base):
    __tablename__ = "experiment_arms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200))
    weight: Mapped[float] = mapped_column(Float)
    experiment: Mapped[ExperimentRow] = relationship(back_populates="arms")


class ResponseRow(Base):
    """One answer the gateway gave: what answered, for whom, how it went."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    api: Mapped[str] = mapped_column(String(16))  # openai | ollama
    requested: Mapped[str] = mapped_column(String(200))
    served: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    experiment: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    arm: Mapped[str | None] = mapped_column(String(32), nullable=True)
    unit: Mapped[str] = mapped_column(String(16))  # hashed unit id
    unit_kind: Mapped[str] = mapped_column(String(16))
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The conversation and the answer, kept for experiment traffic only (feedback export
    # and preference pairs need them; other traffic is not stored).
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)


class FeedbackRow(Base):
    """A rating of one response; a second rating of the same response replaces it."""

    __tablename__ = "feedback"

    response_id: Mapped[str] = mapped_column(
        ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[int] = mapped_column(Integer)  # 1 | -1
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VoteRow(Base):
    """A pairwise vote between two responses to the same prompt."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    second: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    winner: Mapped[str] = mapped_column(String(16))  # a | b | tie | both_bad
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def create_tables(engine: Engine) -> None:
    """Create whichever experiment tables the database lacks (idempotent)."""
    Base.metadata.create_all(engine)


class RolloutRow(Base):
    """A canary or blue-green rollout of a candidate version behind a served name."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # rollout-<model>-<n>
    model: Mapped[str] = mapped_column(String(200), index=True)  # served name, name:tag
    stable: Mapped[str] = mapped_column(String(200))  # name:X.Y.Z the alias held at start
    candidate: Mapped[str] = mapped_column(String(200))  # name:X.Y.Z
    strategy: Mapped[str] = mapped_column(String(16))  # canary | blue-green
    steps: Mapped[list[float]] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Integer, default=0)  # index into steps
    weight: Mapped[float] = mapped_column(Float)  # candidate's share now, percent
    interval_s: Mapped[float] = mapped_column(Float)
    failure_limit: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    guardrails: Mapped[dict[str, Any]] = mapped_column(JSON)  # and blue-green settings
    # warming | running | paused | done | rolled_back | aborted | failed (smoke test)
    status: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    step_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    revision: Mapped[int] = mapped_column(Integer, default=1)
