"""The listener store's ORM mapping and its domain errors.

The tables themselves are created by :mod:`server.store.migrations`, one versioned step at a time;
this mapping describes the latest version and a test checks that the two agree. Datetimes are
timezone-aware UTC on the Python side whatever the database: SQLite keeps naive UTC text,
PostgreSQL a ``timestamptz``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAME_MAX_CHARS = 100
"""Longest listener name, after stripping surrounding whitespace."""
LABEL_MAX_CHARS = 128
"""Longest model hash or personality model version."""
IDEMPOTENCY_KEY_MAX_CHARS = 200
"""Longest idempotency key (a client-chosen header value)."""


class StoreError(Exception):
    """A store failure with a stable machine-readable ``code`` and a human ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class ListenerNotFound(StoreError):
    """No listener has this id (or the id is not a listener id at all)."""

    def __init__(self, listener_id: object) -> None:
        shown = repr(listener_id)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__("listener_not_found", f"no listener with id {shown}")
        self.listener_id = listener_id


class InvalidListener(StoreError):
    """An argument failed validation; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__("invalid_listener", f"{field}: {reason}")
        self.field = field


class IdempotencyConflict(StoreError):
    """An idempotency key was reused for a different listener."""

    def __init__(self, key: str) -> None:
        super().__init__(
            "idempotency_conflict",
            f"idempotency key {key!r} was already used to enrol a different listener",
        )
        self.key = key


class UtcDateTime(TypeDecorator[datetime]):
    """A datetime column that accepts only aware datetimes and always returns UTC ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware one")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class Listener(Base):
    """An enrolled listener: who, with what consent, and the opaque enrolment blob."""

    __tablename__ = "listeners"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_listeners_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    consent: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_MAX_CHARS))
    # Deferred: listing listeners never drags the blobs out of the database.
    enrolment: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    model_hash: Mapped[str] = mapped_column(String(LABEL_MAX_CHARS))
    clip: Mapped[str] = mapped_column(Text)
    """JSON text: metadata about the enrolment clip."""
    # Added by migration 2: the cached personality estimate.
    personality: Mapped[str | None] = mapped_column(Text)
    """JSON text: trait name -> score."""
    personality_model: Mapped[str | None] = mapped_column(String(LABEL_MAX_CHARS))
    personality_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Added by migration 3 (deferred, like the enrolment): the face coefficients the personality
    # estimate is computed from, for consented listeners only; erased with the listener.
    behaviour: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
