"""The listener store on a real PostgreSQL server, and two service instances sharing it.

A throwaway cluster is created in a temporary directory (Debian's ``postgresql`` package, which
``make system`` installs) and listens on a loopback port; it is stopped at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from server.store import (
    IdempotencyConflict,
    ListenerNotFound,
    ListenerStore,
    create_store_engine,
    migrate,
)
from tests.server.test_service_e2e import KEY, ServerProcess, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url():
    if not (PG_BIN / "initdb").is_file():
        pytest.skip("PostgreSQL server binaries missing: `make system` installs postgresql")
    # not under pytest's tmp (private to root): the postgres user must reach it
    root = Path(tempfile.mkdtemp(prefix="rapport-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "rapport", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l",
                                 str(root / "log"), "-o", f"-p {port} -k {sock} -c "
                                 "listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://rapport@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(pg_url):
    engine = create_store_engine(pg_url)
    with engine.begin() as conn:  # a clean database for each test
        conn.exec_driver_sql("DROP TABLE IF EXISTS listeners, schema_version")
    engine.dispose()
    s = ListenerStore.open(pg_url)
    yield s
    s.close()


def test_the_store_contract_holds_on_postgresql(store) -> None:
    blob = bytes(range(256)) * 10
    rec, created = store.create(name="  Ada ", consent=True, enrolment=blob, model_hash="m1",
                                clip={"seconds": 10.5}, idempotency_key="k1")  # fmt: skip
    assert created and rec.name == "Ada" and rec.created_at.tzinfo is not None
    assert store.get_enrolment(rec.id) == blob  # binary survives the round trip (BYTEA)
    again, created = store.create(name="Ada", consent=True, enrolment=b"x", model_hash="m1",
                                  clip={}, idempotency_key="k1")  # fmt: skip
    assert not created and again.id == rec.id
    with pytest.raises(IdempotencyConflict):
        store.create(name="Bob", consent=True, enrolment=b"x", model_hash="m1", clip={},
                     idempotency_key="k1")  # fmt: skip
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    updated = store.set_personality(rec.id, {"openness": 0.5}, "p1", at)
    assert updated.personality == {"openness": 0.5} and updated.personality_at == at
    assert [r.id for r in store.list()] == [rec.id] and store.count() == 1
    store.delete(rec.id)
    with pytest.raises(ListenerNotFound):
        store.get(rec.id)


def test_concurrent_writers_on_postgresql_all_land(store) -> None:
    def work(i: int) -> None:
        for j in range(4):
            store.create(name=f"p{i}-{j}", consent=True, enrolment=b"e", model_hash="m",
                         clip={})  # fmt: skip

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 24


def test_migrating_twice_from_two_processes_is_safe(pg_url, store) -> None:
    engine = create_store_engine(pg_url)
    try:
        assert migrate(engine) == store.version  # already at the latest: a no-op
    finally:
        engine.dispose()


def test_two_service_instances_share_listeners_through_postgresql(pg_url, store, tmp_path) -> None:
    rec, _ = store.create(name="Shared", consent=True, enrolment=b"blob", model_hash="m",
                          clip={"seconds": 10.0})  # fmt: skip
    servers = [ServerProcess(tmp_path / f"i{i}", tmp_path / f"i{i}.log", RAPPORT_STORE_URL=pg_url)
               for i in range(2)]  # fmt: skip
    try:
        h = {"X-API-Key": KEY}
        seen = [httpx.get(f"{s.base}/v1/listeners/{rec.id}", headers=h) for s in servers]
        assert [r.status_code for r in seen] == [200, 200]
        assert (
            httpx.delete(f"{servers[0].base}/v1/listeners/{rec.id}", headers=h).status_code == 204
        )
        assert httpx.get(f"{servers[1].base}/v1/listeners/{rec.id}", headers=h).status_code == 404
    finally:
        for s in servers:
            s.stop()
