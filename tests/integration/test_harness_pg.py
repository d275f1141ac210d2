"""The PostgreSQL harness itself: a real server starts, stores data, and is removed."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg2
import pytest

from harness.datagen import seed_hub_data
from harness.pg import PgServer, apply_migrations_with_psql, schema_dump


def test_server_writes_and_reads_back(pg_db) -> None:
    pg_db.execute("CREATE TABLE t (id int primary key, v text)")
    pg_db.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    assert pg_db.query("SELECT id, v FROM t ORDER BY id") == [(1, "one"), (2, "two")]


def test_server_is_private_loopback_and_not_default_port(pg_server) -> None:
    assert pg_server.port != 5432
    assert pg_server.query("SHOW listen_addresses")[0][0] == "127.0.0.1"
    assert pg_server.query("SHOW fsync")[0][0] == "off"
    assert Path(pg_server.query("SHOW unix_socket_directories")[0][0]) == pg_server.socket_dir


def test_server_runs_unprivileged(pg_server) -> None:
    owner = Path(pg_server.data_dir).stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0
    assert pg_server.query("SELECT current_setting('data_directory')")[0][0] == str(pg_server.data_dir)


def test_wrong_password_is_rejected(pg_server) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg_server.connect("postgres", password="wrong")


def test_unix_socket_connection(pg_server) -> None:
    conn = psycopg2.connect(host=str(pg_server.socket_dir), port=pg_server.port, dbname="postgres", user="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT inet_server_addr()")
            assert cur.fetchone()[0] is None  # a socket connection has no server address
    finally:
        conn.close()


def test_extra_cluster_is_removed_after_cleanup() -> None:
    server = PgServer().start()
    base = server.base_dir
    assert server.query("SELECT 1")[0][0] == 1
    server.cleanup()
    assert not base.exists()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(server.dsn(), connect_timeout=2)


def test_fixture_schema_applies_and_takes_realistic_data(pg_db, fixture_migrations) -> None:
    applied = apply_migrations_with_psql(pg_db, fixture_migrations)
    assert len(applied) == 3
    counts = seed_hub_data(pg_db, rings=5, members_per_ring=4)
    assert counts["Ring"] == 5
    assert {t: n for t, n in pg_db.row_counts().items() if n} == counts
    # Every membership's badge points back to it, updatedAt is set by the client.
    assert pg_db.query('SELECT count(*) FROM "Badge" b JOIN "Membership" m ON m.id = b."membershipId"')[0][0] == 20
    assert pg_db.query('SELECT count(*) FROM "Ring" WHERE "updatedAt" IS NULL')[0][0] == 0


@pytest.mark.reference
def test_reference_migrations_take_the_same_data(pg_db, reference_migrations) -> None:
    applied = apply_migrations_with_psql(pg_db, reference_migrations)
    assert applied == sorted(applied) and len(applied) >= 8
    counts = seed_hub_data(pg_db, rings=3, members_per_ring=2)
    assert pg_db.row_counts()["Membership"] == counts["Membership"] == 6
    assert 'CREATE TABLE public."Ring"' in schema_dump(pg_db)
