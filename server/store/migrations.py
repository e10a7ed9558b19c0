"""A small versioned migration runner for the listener store.

The database holds its schema version in ``schema_version`` (one row, one integer; 0 before any
step). :data:`MIGRATIONS` is the ordered list of steps; step ``n`` (1-based) takes the database
from version ``n - 1`` to ``n``. Each step runs in its own transaction together with the version
stamp, so a failed step leaves both the schema and the version as they were.

Steps are frozen history: once released, a step never changes (its sizes are literals, not the
mapping's constants); a schema change is a new step appended to the list. Steps use SQLAlchemy
Core and per-dialect compiled DDL only, so they run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateColumn

from server.store.schema import StoreError

log = logging.getLogger(__name__)

Migration = Callable[[Connection], None]
"""One schema step; runs inside the caller's transaction."""

_version_metadata = MetaData()
schema_version = Table(
    "schema_version",
    _version_metadata,
    Column("version", Integer, nullable=False),
)


def _create_listeners(conn: Connection) -> None:
    """Version 1: the ``listeners`` table."""
    metadata = MetaData()
    Table(
        "listeners",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("consent", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("idempotency_key", String(200), nullable=True),
        Column("enrolment", LargeBinary, nullable=False),
        Column("model_hash", String(128), nullable=False),
        Column("clip", Text, nullable=False),
        UniqueConstraint("idempotency_key", name="uq_listeners_idempotency_key"),
        Index("ix_listeners_created_at", "created_at"),
    )
    metadata.create_all(conn)


def _add_personality_cache(conn: Connection) -> None:
    """Version 2: the cached personality estimate, all columns nullable."""
    added = Table(
        "listeners",
        MetaData(),
        Column("personality", Text, nullable=True),
        Column("personality_model", String(128), nullable=True),
        Column("personality_at", DateTime(timezone=True), nullable=True),
    )
    for column in added.columns:
        spec = CreateColumn(column).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE listeners ADD COLUMN {spec}"))


def _add_behaviour(conn: Connection) -> None:
    """Version 3: the enrolment clip's face coefficients, kept for consented listeners so that
    their personality estimate can be recomputed when its model changes (nullable)."""
    column = Column("behaviour", LargeBinary, nullable=True)
    Table("listeners", MetaData(), column)
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE listeners ADD COLUMN {spec}"))


MIGRATIONS: tuple[Migration, ...] = (_create_listeners, _add_personality_cache, _add_behaviour)
"""Every step, oldest first; append only."""
LATEST_VERSION = len(MIGRATIONS)


def current_version(engine: Engine) -> int:
    """The stored schema version, creating the version table (at 0) on a new database."""
    _version_metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        rows = conn.execute(select(schema_version.c.version)).scalars().all()
        if not rows:
            conn.execute(insert(schema_version).values(version=0))
            return 0
    if len(rows) > 1:
        raise StoreError(
            "schema_corrupt", f"schema_version holds {len(rows)} rows; expected exactly one"
        )
    return rows[0]


def _apply(engine: Engine, version: int) -> bool:
    """Run step ``version`` and stamp it, in one transaction; False if another process did."""
    with engine.begin() as conn:
        # Stamp first: this takes the write lock (SQLite) or row lock (PostgreSQL) before any DDL,
        # so two processes migrating at once cannot both run the same step.
        claimed = conn.execute(
            update(schema_version)
            .where(schema_version.c.version == version - 1)
            .values(version=version)
        ).rowcount
        if claimed != 1:
            return False
        MIGRATIONS[version - 1](conn)
    return True


def migrate(engine: Engine, *, target: int | None = None) -> int:
    """Bring the database up to ``target`` (default: the latest) and return the version reached.

    Never downgrades: a database already at or past ``target`` is left alone. Raises
    :class:`StoreError` (``schema_too_new``) for a database written by newer code.
    """
    latest = len(MIGRATIONS)
    target = latest if target is None else target
    if not 0 <= target <= latest:
        raise ValueError(f"target must be in 0..{latest}, got {target}")
    while True:
        version = current_version(engine)
        if version > latest:
            raise StoreError(
                "schema_too_new",
                f"the database is at schema version {version} but this code knows only up to "
                f"{latest}; upgrade the service before opening it",
            )
        if version >= target:
            return version
        if _apply(engine, version + 1):
            log.info("listener store migrated to schema version %d", version + 1)
