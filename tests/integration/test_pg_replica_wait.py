"""pg_replica_wait against a real streaming replica (``pg_basebackup -R`` from a throwaway primary).

The replica is a real standby of its own PostgreSQL cluster: what it has replayed is read
from it, and a lag is made by pausing its WAL replay (the WAL keeps streaming in).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._pg_replica import parse_lsn
from harness.ansible import run_module
from harness.pg import FIXTURE_MIGRATIONS, PgServer, PgStandby, apply_migrations_with_psql
from harness.ports import free_port


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[PgServer, PgStandby]]:
    """A primary of its own and one streaming replica of it, for the whole module."""
    with PgServer() as primary:
        standby = PgStandby(primary)
        try:
            standby.start()
            yield primary, standby
        finally:
            standby.cleanup()


@pytest.fixture
def replicated_db(replicated: tuple[PgServer, PgStandby]) -> Iterator[tuple[Any, PgStandby]]:
    primary, standby = replicated
    db = primary.create_database()
    try:
        apply_migrations_with_psql(db, FIXTURE_MIGRATIONS)
        db.execute(
            'INSERT INTO "Ring" ("id", "slug", "name", "updatedAt", "ownerDid") '
            "SELECT gen_random_uuid()::text, 'ring-' || g, 'Ring ' || g, now(), 'did:web:x' "
            "FROM generate_series(1, 50) g"
        )
        yield db, standby
    finally:
        standby.resume_replay()
        primary.drop_database(db.name)


def insert_lsn(server: PgServer) -> str:
    return server.query("SELECT pg_current_wal_insert_lsn()::text")[0][0]


def standby_count(standby: PgStandby, db: Any, table: str) -> int:
    return standby.query(f'SELECT count(*) FROM "{table}"', dbname=db.name)[0][0]


def test_the_wait_ends_once_the_replica_serves_the_reset_schema(replicated_db: tuple[Any, PgStandby]) -> None:
    db, standby = replicated_db
    standby.wait_replayed(insert_lsn(db.server))
    assert standby_count(standby, db, "Ring") == 50
    standby.pause_replay()  # the reset commits while the replica is behind; the wait has to see it catch up
    reset = run_module(
        "pg_schema_reset",
        {"database_url": db.url(params="schema=public"), "migrations_dir": str(FIXTURE_MIGRATIONS), "backup": False},
    )
    assert not reset.failed, reset.msg
    lsn = reset.result["commit_lsn"]
    assert parse_lsn(lsn) <= parse_lsn(insert_lsn(db.server))
    assert standby_count(standby, db, "Ring") == 50  # the old schema: replay is paused
    standby.resume_replay()

    res = run_module("pg_replica_wait", {"replicas": [standby.url(db.name)], "lsn": lsn, "timeout": 30})

    assert not res.failed, res.msg
    assert res.changed is False
    assert res.result["caught_up"] is True and res.result["lsn"] == lsn
    (replica,) = res.result["replicas"]
    assert replica["lag_bytes"] == 0 and replica["caught_up"] is True
    assert parse_lsn(replica["replay_lsn"]) >= parse_lsn(lsn)
    # Independent look: the replica itself serves the new, empty schema and its migration history.
    assert standby_count(standby, db, "Ring") == 0
    migrations = sorted(p.name for p in FIXTURE_MIGRATIONS.iterdir() if (p / "migration.sql").is_file())
    assert standby_count(standby, db, "_prisma_migrations") == len(migrations)
    assert standby.password not in res.output


def test_a_paused_replica_fails_with_its_lag_in_bytes(replicated_db: tuple[Any, PgStandby]) -> None:
    db, standby = replicated_db
    standby.wait_replayed(insert_lsn(db.server))
    standby.pause_replay()
    db.execute('UPDATE "Ring" SET "description" = repeat(\'x\', 2000)')
    target = insert_lsn(db.server)
    replayed = standby.replay_lsn()  # paused: it stays there
    expected_lag = parse_lsn(target) - parse_lsn(replayed)
    assert expected_lag > 0

    res = run_module(
        "pg_replica_wait",
        {"replicas": [standby.url(db.name)], "lsn": target, "timeout": 1, "interval": 0.1},
        verbosity=3,
    )

    assert res.failed
    assert f"is {expected_lag} bytes" in res.msg and "behind WAL position" in res.msg
    assert f"behind WAL position {target}" in res.msg and f"replayed up to {replayed}" in res.msg
    assert "WAL replay is paused" in res.msg and "pg_wal_replay_resume()" in res.msg
    assert list(res.result["lag_bytes"].values()) == [expected_lag]
    assert "nothing_changed" not in res.result
    assert standby.password not in res.output  # -vvv: the URL's password never shows
    assert ":********@" in res.msg

    checked = run_module("pg_replica_wait", {"replicas": [standby.url(db.name)], "lsn": target}, check=True)
    assert not checked.failed, checked.msg
    assert checked.result["caught_up"] is False
    assert checked.result["replicas"][0]["lag_bytes"] == expected_lag
    assert checked.result["replicas"][0]["replay_paused"] is True

    standby.resume_replay()
    done = run_module("pg_replica_wait", {"replicas": [standby.url(db.name)], "lsn": target, "timeout": 30})
    assert not done.failed, done.msg
    assert done.result["replicas"][0]["lag_bytes"] == 0


def test_without_an_lsn_the_primary_position_is_the_target(replicated_db: tuple[Any, PgStandby]) -> None:
    db, standby = replicated_db
    db.execute('DELETE FROM "Ring"')
    before = insert_lsn(db.server)
    res = run_module("pg_replica_wait", {"replicas": [standby.url(db.name)], "primary_url": db.url(), "timeout": 30})
    assert not res.failed, res.msg
    assert parse_lsn(res.result["lsn"]) >= parse_lsn(before)
    assert "primary's WAL insert position" in res.result["lsn_source"]
    assert standby_count(standby, db, "Ring") == 0

    probe = run_module("pg_replica_wait", {"replicas": [standby.url(db.name)]})
    assert not probe.failed, probe.msg
    assert probe.result["lsn"] is None and probe.result["caught_up"] is False
    assert probe.result["replicas"][0]["replay_lsn"]


def test_a_primary_listed_as_a_replica_and_an_unreachable_one_are_refused(
    replicated_db: tuple[Any, PgStandby],
) -> None:
    db, standby = replicated_db
    res = run_module("pg_replica_wait", {"replicas": [db.url()], "lsn": insert_lsn(db.server)})
    assert res.failed
    assert "is not a standby (pg_is_in_recovery() is false)" in res.msg
    assert db.server.password not in res.output

    port = free_port()
    gone = f"postgresql://postgres:{standby.password}@127.0.0.1:{port}/{db.name}"
    res = run_module("pg_replica_wait", {"replicas": [gone], "lsn": insert_lsn(db.server), "timeout": 0.5})
    assert res.failed
    assert f"127.0.0.1:{port}" in res.msg and "could not be read" in res.msg
    assert standby.password not in res.output

    checked = run_module("pg_replica_wait", {"replicas": [gone]}, check=True)
    assert checked.failed and checked.result["nothing_changed"] is True
    assert "cannot connect to PostgreSQL" in checked.msg
