"""The listener store: enrolled listeners in SQLite (default) or PostgreSQL.

:class:`ListenerStore` is synchronous and thread-safe: one engine, a fresh session per call, so
the API layer calls it from an executor thread. Every write is one transaction: a failure before
commit leaves nothing behind. Inputs are validated here, at the edge, and a bad one raises
:class:`~server.store.schema.InvalidListener` naming the field.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, create_engine, delete, event, func, make_url, select, update
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server.store.migrations import migrate
from server.store.schema import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    LABEL_MAX_CHARS,
    NAME_MAX_CHARS,
    IdempotencyConflict,
    InvalidListener,
    Listener,
    ListenerNotFound,
    StoreError,
)

log = logging.getLogger(__name__)

MAX_ENROLMENT_BYTES = 4 * 1024 * 1024
"""Default cap on one enrolment blob (bytes)."""
MAX_JSON_CHARS = 64 * 1024
"""Cap on the serialised clip metadata and personality traits (characters)."""
MAX_PAGE = 1000
"""Largest ``limit`` that :meth:`ListenerStore.list` accepts."""
SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite writer waits for another writer's lock before failing."""

_LISTENER_ID = re.compile(r"[0-9a-f]{32}")
_FORBIDDEN_CATEGORIES = ("Cc", "Cs")  # control characters, lone surrogates

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ListenerRecord:
    """One listener as the store returns it: every column but the blob, plus the blob's size."""

    id: str
    name: str
    consent: bool
    created_at: datetime
    idempotency_key: str | None
    model_hash: str
    clip: dict[str, Any]
    enrolment_bytes: int
    personality: dict[str, Any] | None = None
    personality_model: str | None = None
    personality_at: datetime | None = None


def _text(field: str, value: object, max_chars: int, *, strip: bool = False) -> str:
    """A non-empty string of at most ``max_chars`` with no control characters."""
    if not isinstance(value, str):
        raise InvalidListener(field, f"must be a string, got {type(value).__name__}")
    if strip:
        value = value.strip()
    if not value:
        raise InvalidListener(field, "must not be empty")
    if len(value) > max_chars:
        raise InvalidListener(field, f"must be at most {max_chars} characters, got {len(value)}")
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidListener(field, f"must not contain control characters (found {char!r})")
    return value


def _json_text(field: str, value: object) -> str:
    """``value``, a JSON-serialisable dict, as compact JSON text."""
    if not isinstance(value, dict):
        raise InvalidListener(field, f"must be a dict, got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidListener(field, f"must be JSON-serialisable ({exc})") from None
    if len(encoded) > MAX_JSON_CHARS:
        raise InvalidListener(field, f"must serialise to at most {MAX_JSON_CHARS} characters")
    return encoded


def _aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidListener(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidListener(field, "must be timezone-aware")
    return value.astimezone(UTC)


def _blob(field: str, value: object, max_bytes: int) -> bytes:
    """Non-empty bytes of at most ``max_bytes``."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidListener(field, f"must be bytes, got {type(value).__name__}")
    blob = bytes(value)
    if not blob:
        raise InvalidListener(field, "must not be empty")
    if len(blob) > max_bytes:
        raise InvalidListener(field, f"is {len(blob)} bytes; at most {max_bytes} allowed")
    return blob


def _checked_key(key: object) -> str:
    return _text("idempotency_key", key, IDEMPOTENCY_KEY_MAX_CHARS)


def _checked_id(listener_id: object) -> str:
    """The id if it can be a listener id at all; anything else is simply not found."""
    if isinstance(listener_id, str) and _LISTENER_ID.fullmatch(listener_id):
        return listener_id
    raise ListenerNotFound(listener_id)


def _checked_page(limit: object, offset: object) -> tuple[int, int]:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidListener("limit", f"must be an integer in 1..{MAX_PAGE}, got {limit!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidListener("offset", f"must be a non-negative integer, got {offset!r}")
    return limit, offset


def _records() -> Select[Listener, int]:
    """SELECT of listeners with their blob sizes, never the blobs themselves."""
    return select(Listener, func.length(Listener.enrolment))


def _to_record(row: Listener, enrolment_bytes: int) -> ListenerRecord:
    return ListenerRecord(
        id=row.id,
        name=row.name,
        consent=row.consent,
        created_at=row.created_at,
        idempotency_key=row.idempotency_key,
        model_hash=row.model_hash,
        clip=json.loads(row.clip),
        enrolment_bytes=enrolment_bytes,
        personality=None if row.personality is None else json.loads(row.personality),
        personality_model=row.personality_model,
        personality_at=row.personality_at,
    )


def _load(session: Session, listener_id: str) -> ListenerRecord:
    found = session.execute(_records().where(Listener.id == listener_id)).one_or_none()
    if found is None:
        raise ListenerNotFound(listener_id)
    return _to_record(found[0], found[1])


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: foreign keys, lock waits, WAL, zeroed deletions."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # An erased listener's biometric blob is overwritten, not just unlinked.
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; for an SQLite file, its folder is created and its pragmas set."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError("invalid_url", f"not a database URL: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        raise StoreError(
            "invalid_url",
            "an in-memory SQLite database is private to one connection; give a file path",
        )
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class ListenerStore:
    """Enrolled listeners: create, read, list, erase, and cache their personality estimate.

    Owns its engine (and disposes it on :meth:`close`); runs the schema migrations on start.
    Safe to share between threads.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_enrolment_bytes: int = MAX_ENROLMENT_BYTES,
        clock: Clock = utc_now,
    ) -> None:
        if max_enrolment_bytes < 1:
            raise ValueError(f"max_enrolment_bytes must be positive, got {max_enrolment_bytes}")
        self.version = migrate(engine)
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._max_enrolment_bytes = max_enrolment_bytes
        self._clock = clock
        self._closed = False

    @classmethod
    def open(
        cls, url: str, *, max_enrolment_bytes: int = MAX_ENROLMENT_BYTES, clock: Clock = utc_now
    ) -> ListenerStore:
        """Connect to ``url`` (an SQLAlchemy URL), migrate it to the latest schema, and wrap it."""
        engine = create_store_engine(url)
        try:
            store = cls(engine, max_enrolment_bytes=max_enrolment_bytes, clock=clock)
        except BaseException:
            engine.dispose()
            raise
        log.info("listener store open at schema version %d", store.version)
        return store

    def close(self) -> None:
        """Release every connection; the store cannot be used afterwards."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> ListenerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ListenerStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def _session(self) -> Session:
        self._check_open()
        return self._sessions()

    def _begin(self) -> AbstractContextManager[Session]:
        """A new session in a transaction, committed on a clean exit, rolled back otherwise."""
        self._check_open()
        return self._sessions.begin()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"the store's clock returned a naive datetime {now!r}")
        return now.astimezone(UTC)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store_closed", "the listener store has been closed")

    def create(
        self,
        *,
        name: str,
        consent: bool,
        enrolment: bytes,
        model_hash: str,
        clip: dict[str, Any],
        idempotency_key: str | None = None,
        behaviour: bytes | None = None,
    ) -> tuple[ListenerRecord, bool]:
        """Store a new listener; returns the record and True, or the earlier record and False.

        A retried request (same ``idempotency_key``, same name and consent) returns the listener
        the first attempt made; the same key with a different name or consent raises
        :class:`IdempotencyConflict`. ``behaviour``: the clip's face coefficients that the
        personality estimate is computed from (kept only with consent).
        """
        if not isinstance(consent, bool):
            raise InvalidListener("consent", f"must be a bool, got {type(consent).__name__}")
        key = idempotency_key
        row = Listener(
            id=uuid.uuid4().hex,
            name=_text("name", name, NAME_MAX_CHARS, strip=True),
            consent=consent,
            created_at=self._now(),
            idempotency_key=None if key is None else _checked_key(key),
            enrolment=_blob("enrolment", enrolment, self._max_enrolment_bytes),
            model_hash=_text("model_hash", model_hash, LABEL_MAX_CHARS),
            clip=_json_text("clip", clip),
            behaviour=None if behaviour is None or not consent
            else _blob("behaviour", behaviour, self._max_enrolment_bytes),
        )
        earlier = None if key is None else self.find_by_idempotency_key(key)
        if earlier is None:
            try:
                with self._begin() as session:
                    session.add(row)
                    session.flush()
            except IntegrityError:
                # Lost a race with a concurrent retry of the same request: the key is now taken.
                earlier = None if key is None else self.find_by_idempotency_key(key)
                if earlier is None:
                    raise
        if earlier is not None:
            return self._replayed(earlier, row), False
        log.info("listener %s created (%d-byte enrolment)", row.id, len(row.enrolment))
        return _to_record(row, len(row.enrolment)), True

    def find_by_idempotency_key(self, key: str) -> ListenerRecord | None:
        """The listener an earlier request with this idempotency key created, if any."""
        key = _checked_key(key)
        with self._session() as session:
            found = session.execute(_records().where(Listener.idempotency_key == key)).one_or_none()
        return None if found is None else _to_record(found[0], found[1])

    @staticmethod
    def _replayed(earlier: ListenerRecord, attempt: Listener) -> ListenerRecord:
        if (earlier.name, earlier.consent) != (attempt.name, attempt.consent):
            raise IdempotencyConflict(earlier.idempotency_key or "")
        log.info("listener %s returned for a retried request", earlier.id)
        return earlier

    def get(self, listener_id: str) -> ListenerRecord:
        """The listener with this id; :class:`ListenerNotFound` if there is none."""
        checked = _checked_id(listener_id)
        with self._session() as session:
            return _load(session, checked)

    def get_enrolment(self, listener_id: str) -> bytes:
        """The listener's enrolment blob, exactly as it was given."""
        checked = _checked_id(listener_id)
        with self._session() as session:
            blob = session.execute(
                select(Listener.enrolment).where(Listener.id == checked)
            ).scalar_one_or_none()
        if blob is None:
            raise ListenerNotFound(checked)
        return bytes(blob)

    def get_behaviour(self, listener_id: str) -> bytes | None:
        """The face coefficients kept for the listener's personality estimate, if any."""
        checked = _checked_id(listener_id)
        with self._session() as session:
            row = session.execute(
                select(Listener.id, Listener.behaviour).where(Listener.id == checked)
            ).one_or_none()
        if row is None:
            raise ListenerNotFound(checked)
        return None if row[1] is None else bytes(row[1])

    def list(self, limit: int = 100, offset: int = 0) -> list[ListenerRecord]:
        """Up to ``limit`` listeners, newest first, skipping the first ``offset``."""
        limit, offset = _checked_page(limit, offset)
        query = (
            _records()
            .order_by(Listener.created_at.desc(), Listener.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._session() as session:
            return [_to_record(row, size) for row, size in session.execute(query)]

    def count(self) -> int:
        """How many listeners are stored."""
        with self._session() as session:
            return session.execute(select(func.count()).select_from(Listener)).scalar_one()

    def delete(self, listener_id: str) -> None:
        """Erase the listener, blob and all; :class:`ListenerNotFound` if there is none."""
        checked = _checked_id(listener_id)
        with self._begin() as session:
            result = session.execute(delete(Listener).where(Listener.id == checked))
            if result.rowcount == 0:
                raise ListenerNotFound(checked)
        log.info("listener %s deleted", checked)

    def set_personality(
        self, listener_id: str, traits: dict[str, Any], model_version: str, at: datetime
    ) -> ListenerRecord:
        """Cache a personality estimate (traits, its model, when); returns the record."""
        checked = _checked_id(listener_id)
        values = {
            "personality": _json_text("traits", traits),
            "personality_model": _text("model_version", model_version, LABEL_MAX_CHARS),
            "personality_at": _aware("at", at),
        }
        with self._begin() as session:
            result = session.execute(
                update(Listener).where(Listener.id == checked).values(**values)
            )
            if result.rowcount == 0:
                raise ListenerNotFound(checked)
            return _load(session, checked)
