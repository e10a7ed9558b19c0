"""The listener store: enrolled listeners kept in SQLite (default) or PostgreSQL.

:mod:`.schema` maps the tables and defines the store's errors, :mod:`.migrations` versions the
schema, and :mod:`.repository` holds :class:`ListenerStore`, the only way the service touches it.
"""

from server.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from server.store.repository import (
    MAX_ENROLMENT_BYTES,
    ListenerRecord,
    ListenerStore,
    create_store_engine,
    utc_now,
)
from server.store.schema import (
    IdempotencyConflict,
    InvalidListener,
    ListenerNotFound,
    StoreError,
)

__all__ = [
    "LATEST_VERSION",
    "MAX_ENROLMENT_BYTES",
    "MIGRATIONS",
    "IdempotencyConflict",
    "InvalidListener",
    "ListenerNotFound",
    "ListenerRecord",
    "ListenerStore",
    "StoreError",
    "create_store_engine",
    "migrate",
    "utc_now",
]
