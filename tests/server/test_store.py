"""The listener store on real SQLite files: CRUD, idempotency, validation, migrations, threads,
and that a write interrupted before commit leaves no half listener."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    create_engine,
    create_mock_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.orm import Session

from server.store import (
    LATEST_VERSION,
    IdempotencyConflict,
    InvalidListener,
    ListenerNotFound,
    ListenerStore,
    StoreError,
    create_store_engine,
    migrate,
)
from server.store import migrations as store_migrations
from server.store.schema import Listener

ROOT = Path(__file__).resolve().parents[2]
PLUS_TWO = timezone(timedelta(hours=2))
BLOB = bytes(range(256)) * 8
CLIP = {"seconds": 10.0, "frames": 250, "face_ratio": 0.96}


class StepClock:
    """A clock one second further on at every call, in a non-UTC zone."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=PLUS_TWO)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'not-yet' / 'listeners.db'}"


@pytest.fixture
def store(url: str) -> Iterator[ListenerStore]:
    with ListenerStore.open(url, clock=StepClock()) as opened:
        yield opened


def enrol(store: ListenerStore, **overrides: Any) -> tuple[Any, bool]:
    fields: dict[str, Any] = dict(
        name="Ada", consent=True, enrolment=BLOB, model_hash="gen-abc123", clip=CLIP
    )
    fields.update(overrides)
    return store.create(**fields)


def raw(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_round_trip_create_get_list_delete(store: ListenerStore, url: str) -> None:
    record, created = enrol(store, name="  Ada Lovelace \t")
    assert created and len(record.id) == 32 and int(record.id, 16) >= 0
    assert record.name == "Ada Lovelace" and record.consent is True
    assert record.created_at == datetime(2025, 3, 1, 10, 0, 1, tzinfo=UTC)
    assert record.created_at.utcoffset() == timedelta(0)
    assert (record.model_hash, record.clip, record.enrolment_bytes) == ("gen-abc123", CLIP, 2048)
    assert record.personality is None and record.idempotency_key is None
    assert store.get(record.id) == record
    assert store.get_enrolment(record.id) == BLOB
    assert store.list() == [record] and store.count() == 1
    assert Path(url.removeprefix("sqlite:///")).is_file()

    store.delete(record.id)
    assert store.count() == 0 and store.list() == []
    with pytest.raises(ListenerNotFound):
        store.get(record.id)
    with pytest.raises(ListenerNotFound):
        store.get_enrolment(record.id)
    with pytest.raises(ListenerNotFound):
        store.delete(record.id)


def test_sqlite_connections_get_their_pragmas(url: str) -> None:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            # Some SQLite builds default to it; the store asks for it everywhere.
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("bad_url", ["sqlite://", "sqlite:///:memory:", "not a url"])
def test_unusable_urls_are_refused(bad_url: str) -> None:
    with pytest.raises(StoreError) as caught:
        ListenerStore.open(bad_url)
    assert caught.value.code == "invalid_url"


def test_list_is_newest_first_and_pages(store: ListenerStore) -> None:
    ids = [enrol(store, name=f"listener {i}")[0].id for i in range(5)]
    newest_first = ids[::-1]
    assert [r.id for r in store.list()] == newest_first
    assert [r.id for r in store.list(limit=2)] == newest_first[:2]
    assert [r.id for r in store.list(limit=2, offset=2)] == newest_first[2:4]
    assert [r.id for r in store.list(limit=2, offset=4)] == newest_first[4:]
    assert store.list(offset=5) == []
    assert store.count() == 5


@pytest.mark.parametrize(
    ("limit", "offset", "field"),
    [(0, 0, "limit"), (-1, 0, "limit"), (1001, 0, "limit"), (True, 0, "limit"), ("5", 0, "limit")]
    + [(10, -1, "offset"), (10, 1.5, "offset")],
)
def test_list_bounds_are_checked(store: ListenerStore, limit: Any, offset: Any, field: str) -> None:
    with pytest.raises(InvalidListener) as caught:
        store.list(limit=limit, offset=offset)
    assert caught.value.field == field


def test_retried_upload_returns_the_first_listener(store: ListenerStore) -> None:
    first, created = enrol(store, idempotency_key="upload-1")
    again, created_again = enrol(
        store, name=" Ada ", enrolment=b"other", idempotency_key="upload-1"
    )
    assert created and not created_again
    assert again.id == first.id and again == first
    assert store.count() == 1 and store.get_enrolment(first.id) == BLOB
    assert store.find_by_idempotency_key("upload-1") == first
    assert store.find_by_idempotency_key("never-used") is None
    # A different key is a different listener.
    other, created_other = enrol(store, idempotency_key="upload-2")
    assert created_other and other.id != first.id and store.count() == 2


@pytest.mark.parametrize("change", [{"name": "Grace"}, {"consent": False}])
def test_reused_key_for_another_listener_conflicts(
    store: ListenerStore, change: dict[str, Any]
) -> None:
    enrol(store, idempotency_key="upload-1")
    with pytest.raises(IdempotencyConflict) as caught:
        enrol(store, idempotency_key="upload-1", **change)
    assert caught.value.code == "idempotency_conflict" and "upload-1" in str(caught.value)
    assert store.count() == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "Ada\nLovelace"}, "name"),
        ({"name": "Ada\x00"}, "name"),
        ({"name": 42}, "name"),
        ({"consent": 1}, "consent"),
        ({"consent": "yes"}, "consent"),
        ({"consent": None}, "consent"),
        ({"enrolment": b""}, "enrolment"),
        ({"enrolment": "not bytes"}, "enrolment"),
        ({"enrolment": bytes(65)}, "enrolment"),
        ({"model_hash": ""}, "model_hash"),
        ({"model_hash": None}, "model_hash"),
        ({"clip": [1, 2]}, "clip"),
        ({"clip": {"when": datetime.now(UTC)}}, "clip"),
        ({"clip": {"ratio": float("nan")}}, "clip"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
    ],
)
def test_invalid_input_names_the_field(url: str, override: dict[str, Any], field: str) -> None:
    with ListenerStore.open(url, max_enrolment_bytes=64) as small:
        with pytest.raises(InvalidListener) as caught:
            enrol(small, **{"enrolment": b"x" * 64, **override})
        assert caught.value.field == field and caught.value.code == "invalid_listener"
        assert str(caught.value).startswith(f"{field}:")
        assert small.count() == 0


def test_limits_are_inclusive(url: str) -> None:
    with ListenerStore.open(url, max_enrolment_bytes=64) as small:
        record, _ = enrol(
            small, name=" " + "é" * 100 + " ", enrolment=bytearray(64), idempotency_key="k" * 200
        )
        assert record.name == "é" * 100 and record.enrolment_bytes == 64
        assert record.idempotency_key == "k" * 200


MALFORMED_IDS = ["", "abc", uuid.uuid4().hex.upper(), "0" * 33, "' OR 1=1 --" + "0" * 21, None, 7]


@pytest.mark.parametrize("listener_id", [*MALFORMED_IDS, uuid.uuid4().hex])
def test_unknown_and_malformed_ids_are_not_found(store: ListenerStore, listener_id: Any) -> None:
    enrol(store)
    statements: list[str] = []

    def count_sql(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count_sql)
    try:
        for call in (
            store.get,
            store.get_enrolment,
            store.delete,
            lambda i: store.set_personality(i, {"openness": 0.1}, "p1", datetime.now(UTC)),
        ):
            with pytest.raises(ListenerNotFound) as caught:
                call(listener_id)
            assert caught.value.code == "listener_not_found"
    finally:
        event.remove(Engine, "before_cursor_execute", count_sql)
    # Garbage ids are turned away before any SQL; a well-formed unknown id is looked up.
    assert bool(statements) == (listener_id not in MALFORMED_IDS)
    assert store.count() == 1


def test_personality_cache_round_trip(store: ListenerStore) -> None:
    record, _ = enrol(store)
    traits = {"openness": 0.7, "neuroticism": -0.2}
    at = datetime(2025, 3, 2, 9, 30, tzinfo=PLUS_TWO)
    updated = store.set_personality(record.id, traits, "personality-v3", at)
    assert updated.personality == traits and updated.personality_model == "personality-v3"
    assert updated.personality_at == at and updated.personality_at.tzinfo == UTC
    assert store.get(record.id) == updated and updated.created_at == record.created_at

    for args, field in [
        ((traits, "personality-v3", datetime(2025, 3, 2)), "at"),
        (([0.7], "personality-v3", at), "traits"),
        ((traits, "", at), "model_version"),
    ]:
        with pytest.raises(InvalidListener) as caught:
            store.set_personality(record.id, *args)
        assert caught.value.field == field
    assert store.get(record.id) == updated


def test_listeners_survive_reopening(url: str) -> None:
    with ListenerStore.open(url, clock=StepClock()) as first:
        made = [enrol(first, name=f"listener {i}", enrolment=bytes([i]) * 10)[0] for i in range(3)]
    assert first.version == LATEST_VERSION
    with pytest.raises(StoreError) as caught:
        first.count()
    assert caught.value.code == "store_closed"

    with ListenerStore.open(url) as second:
        assert second.count() == 3
        assert second.list() == made[::-1]
        assert [second.get_enrolment(r.id) for r in made] == [bytes([i]) * 10 for i in range(3)]


def listener_columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns("listeners")}
    finally:
        engine.dispose()


def test_version_1_database_is_migrated_keeping_its_rows(url: str) -> None:
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(url)
    assert migrate(engine, target=1) == 1
    engine.dispose()
    assert "personality" not in listener_columns(url)
    listener_id = uuid.uuid4().hex
    raw(
        url,
        "INSERT INTO listeners (id, name, consent, created_at, idempotency_key, enrolment,"
        " model_hash, clip) VALUES (:id, 'Old Timer', 1, '2024-05-06 07:08:09.000000', NULL,"
        " :blob, 'gen-old', '{\"seconds\": 10}')",
        id=listener_id,
        blob=b"\x01\x02\x03",
    )

    with ListenerStore.open(url) as store:
        assert store.version == LATEST_VERSION == 3
        old = store.get(listener_id)
        assert (old.name, old.consent, old.model_hash, old.clip) == (
            "Old Timer",
            True,
            "gen-old",
            {"seconds": 10},
        )
        assert old.created_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        assert old.enrolment_bytes == 3 and old.personality is None
        cached = store.set_personality(listener_id, {"openness": 0.5}, "p1", datetime.now(UTC))
        assert cached.personality == {"openness": 0.5}
    assert {"personality", "personality_model", "personality_at"} <= listener_columns(url)
    assert raw(url, "SELECT version FROM schema_version") == [(3,)]


def test_migrating_again_changes_nothing(url: str) -> None:
    with ListenerStore.open(url) as store:
        enrol(store)
    engine = create_engine(url)
    try:
        assert migrate(engine) == LATEST_VERSION
        assert migrate(engine) == LATEST_VERSION
    finally:
        engine.dispose()
    assert raw(url, "SELECT version FROM schema_version") == [(LATEST_VERSION,)]
    assert raw(url, "SELECT count(*) FROM listeners") == [(1,)]


def test_failed_step_leaves_schema_and_version_as_they_were(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_step(conn: Any) -> None:
        conn.execute(text("ALTER TABLE listeners ADD COLUMN half_done TEXT"))
        raise RuntimeError("step failed half-way")

    first = store_migrations.MIGRATIONS[0]
    monkeypatch.setattr(store_migrations, "MIGRATIONS", (first, broken_step))
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(url)
    try:
        with pytest.raises(RuntimeError, match="half-way"):
            migrate(engine)
        assert store_migrations.current_version(engine) == 1
    finally:
        engine.dispose()
    assert "half_done" not in listener_columns(url)

    monkeypatch.undo()
    with ListenerStore.open(url) as store:
        assert store.version == LATEST_VERSION


def test_database_from_newer_code_refuses_to_open(url: str) -> None:
    with ListenerStore.open(url) as store:
        record, _ = enrol(store)
    raw(url, "UPDATE schema_version SET version = :v", v=LATEST_VERSION + 5)
    with pytest.raises(StoreError) as caught:
        ListenerStore.open(url)
    assert caught.value.code == "schema_too_new"
    assert str(LATEST_VERSION + 5) in str(caught.value)
    assert raw(url, "SELECT id FROM listeners") == [(record.id,)]


def test_mapping_agrees_with_the_migrated_schema(url: str) -> None:
    ListenerStore.open(url).close()
    engine = create_engine(url)
    try:
        found = inspect(engine)
        reflected = {c["name"]: c for c in found.get_columns("listeners")}
        uniques = {u["name"] for u in found.get_unique_constraints("listeners")}
        indexes = {i["name"] for i in found.get_indexes("listeners")}
        dialect = engine.dialect
    finally:
        engine.dispose()
    table = Listener.__table__
    assert set(reflected) == set(table.columns.keys())
    for column in table.columns:
        assert reflected[column.name]["nullable"] == column.nullable, column.name
        mapped_type = column.type.compile(dialect=dialect)
        assert reflected[column.name]["type"].compile(dialect=dialect) == mapped_type
    assert uniques == {c.name for c in table.constraints if c.name and c.name.startswith("uq_")}
    assert indexes == {i.name for i in table.indexes}


def test_migrations_compile_for_postgresql() -> None:
    statements: list[str] = []

    def record(sql: Any, *_args: Any, **_kwargs: Any) -> None:
        statements.append(str(sql.compile(dialect=mock.dialect)))

    mock = create_mock_engine("postgresql://", record)
    for step in store_migrations.MIGRATIONS:
        step(mock)  # type: ignore[arg-type]
    ddl = "\n".join(statements)
    assert "enrolment BYTEA NOT NULL" in ddl
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in ddl
    assert "ALTER TABLE listeners ADD COLUMN personality_at TIMESTAMP WITH TIME ZONE" in ddl
    assert "ALTER TABLE listeners ADD COLUMN personality TEXT" in ddl


def test_creates_from_eight_threads_all_land(store: ListenerStore) -> None:
    start = threading.Barrier(8)

    def worker(thread: int) -> list[str]:
        start.wait()
        return [enrol(store, name=f"t{thread} n{i}")[0].id for i in range(4)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [i for batch in pool.map(worker, range(8)) for i in batch]
    assert len(set(ids)) == 32 and store.count() == 32
    assert {store.get(i).name for i in ids} == {f"t{t} n{i}" for t in range(8) for i in range(4)}


def test_concurrent_retries_make_one_listener(store: ListenerStore) -> None:
    start = threading.Barrier(8)

    def worker(_: int) -> tuple[str, bool]:
        start.wait()
        record, created = enrol(store, idempotency_key="same-upload")
        return record.id, created

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    assert len({listener_id for listener_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert store.count() == 1


def test_failure_between_insert_and_commit_leaves_nothing(store: ListenerStore, url: str) -> None:
    seen_inside: list[int] = []

    def fail_after_insert(session: Session, _context: Any) -> None:
        # The INSERT has run inside the transaction; now the "crash" before commit.
        count = session.connection().exec_driver_sql("SELECT count(*) FROM listeners")
        seen_inside.append(count.scalar_one())
        raise RuntimeError("power cut")

    event.listen(Session, "after_flush", fail_after_insert)
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            enrol(store, idempotency_key="upload-1")
    finally:
        event.remove(Session, "after_flush", fail_after_insert)
    assert seen_inside == [1]
    assert store.count() == 0 and store.list() == []
    assert raw(url, "SELECT count(*) FROM listeners") == [(0,)]
    # The key was never taken: the retry creates the listener.
    assert enrol(store, idempotency_key="upload-1")[1] is True


CRASHING_WRITER = """
import os, sys
from sqlalchemy import event
from sqlalchemy.orm import Session
from server.store import ListenerStore
store = ListenerStore.open(sys.argv[1])
event.listen(Session, "after_flush", lambda *_: os._exit(3))
store.create(name="Ada", consent=True, enrolment=b"blob", model_hash="m", clip={})
"""


def test_process_killed_mid_write_leaves_nothing(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, url], cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 3, done.stderr.decode()
    with ListenerStore.open(url) as store:
        assert store.count() == 0


def test_deleted_enrolment_is_overwritten_on_disk(url: str) -> None:
    marker = b"BIOMETRIC-MARKER-" * 300
    db_file = Path(url.removeprefix("sqlite:///"))
    with ListenerStore.open(url) as store:
        record, _ = enrol(store, enrolment=marker)
        keep, _ = enrol(store, name="Keep", enrolment=b"\x00" * 10)
    assert b"BIOMETRIC-MARKER-" in db_file.read_bytes()  # checkpointed into the file on close
    with ListenerStore.open(url) as store:
        store.delete(record.id)
        assert store.get(keep.id).name == "Keep"
    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"BIOMETRIC-MARKER-" not in db_file.read_bytes()
