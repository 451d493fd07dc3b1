"""The registry index: versions, their layers, aliases and alias history, in SQL.

SQLite by default (a file under the registry); any SQLAlchemy URL through
ASTRA_REGISTRY_URL, so several machines can share one PostgreSQL index.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

URL_VAR = "ASTRA_REGISTRY_URL"


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class VersionRow(Base):
    """One immutable model version: `name:X.Y.Z` and the manifest that lists its layers."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(129), index=True)
    version: Mapped[str] = mapped_column(String(64))
    major: Mapped[int] = mapped_column(Integer)
    minor: Mapped[int] = mapped_column(Integer)
    patch: Mapped[int] = mapped_column(Integer)
    manifest_digest: Mapped[str] = mapped_column(String(71))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    layers: Mapped[list[LayerRow]] = relationship(
        back_populates="version", cascade="all, delete-orphan", order_by="LayerRow.position"
    )


class LayerRow(Base):
    """A blob a version uses (its manifest included), for reference counting and lookup."""

    __tablename__ = "layers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(71), index=True)
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[VersionRow] = relationship(back_populates="layers")


class TagRow(Base):
    """An alias (latest, production, champion, ...) pointing at one version of a name."""

    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(String(129), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TagEventRow(Base):
    """One move of an alias: from which version to which, when and why (for rollback)."""

    __tablename__ = "tag_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(129), index=True)
    tag: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500))


def registry_url(root: Path) -> str:
    """ASTRA_REGISTRY_URL, or an SQLite file beside the blobs."""
    return os.environ.get(URL_VAR) or f"sqlite:///{root / 'index.db'}"


def open_engine(url: str) -> Engine:
    """An engine with its tables created; SQLite waits for locks instead of failing."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            # WAL: readers never block the one writer; foreign keys for ON DELETE CASCADE.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _immediate(connection: Any) -> None:
            # Take the write lock at BEGIN: two pushes then serialize instead of both
            # reading the same "next version" and one failing at commit.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        # pysqlite's own transaction handling would BEGIN before us; turn it off.
        @event.listens_for(engine, "connect", insert=True)
        def _no_autobegin(connection: Any, _record: Any) -> None:
            connection.isolation_level = None

    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


def now() -> datetime:
    return datetime.now(UTC)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
