"""pg_schema_reset run as Ansible runs it, against real PostgreSQL.

Every fault test checks the real state afterwards: every old row is still in
place (row counts before == after) and the schema is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import (
    _OTHER_SESSIONS_SQL,
    LOCK_CLASSID,
    LOCK_OBJID,
    RESET_LOCK_KEY,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import PRISMA_MIGRATIONS_DDL
from harness.ansible import run_module, run_playbook
from harness.datagen import seed_hub_data
from harness.pg import apply_migrations_with_psql, schema_dump

APP = "threadring.ringhub.pg_schema_reset"
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def seeded(db, migrations: Path, rings: int = 4) -> dict[str, int]:
    apply_migrations_with_psql(db, migrations)
    seed_hub_data(db, rings=rings, members_per_ring=3)
    return db.row_counts()


def args_for(db, migrations: Path, backup_dir: Path | None = None, **extra) -> dict:
    args = {"database_url": db.url(params="schema=public&connection_limit=5"), "migrations_dir": str(migrations)}
    if backup_dir is None:
        args["backup"] = False
    else:
        args["backup_dir"] = str(backup_dir)
    args.update(extra)
    return args


def copy_migrations(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def last_migration(migrations: Path) -> Path:
    return sorted(migrations.glob("*/migration.sql"))[-1]


def assert_no_secret(res, secret: str) -> None:
    assert secret not in res.output
    assert secret not in json.dumps(res.result)


def snapshot(db, schema: str = "public") -> dict:
    """What "the old database is untouched" compares: row counts, the schema dump, the database comment."""
    comment = db.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db.name,))
    return {"rows": db.row_counts(schema), "schema": schema_dump(db, schema), "comment": comment[0][0]}


def assert_untouched(db, before: dict, schema: str = "public") -> None:
    after = snapshot(db, schema)
    assert after["rows"] == before["rows"]
    assert after["schema"] == before["schema"]
    assert after["comment"] == before["comment"]
    assert sum(before["rows"].values()) > 0


def marker(db) -> str | None:
    """The marker line of the database comment, read straight from the catalog."""
    comment = db.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db.name,))
    found = re.findall(r"(?m)^ringhub\.environment=(.*)$", comment[0][0] or "")
    return found[-1] if found else None


def test_reset_rebuilds_schema_records_history_and_keeps_a_restorable_backup(
    pg_server, pg_db, any_migrations, tmp_path
) -> None:
    before = seeded(pg_db, any_migrations)
    assert before["Ring"] == 4
    old_schema = schema_dump(pg_db)
    res = run_module("pg_schema_reset", args_for(pg_db, any_migrations, tmp_path), verbosity=3)
    assert not res.failed, res.msg
    assert res.changed
    result = res.result

    # The old rows are gone; the result recorded them table by table.
    assert all(n == 0 for t, n in pg_db.row_counts().items() if t != "_prisma_migrations")
    assert {t["name"]: t["rows"] for t in result["dropped"]["tables"]} == before
    assert result["dropped"]["schemas"] == ["public"]
    assert result["dropped"]["total_rows"] == sum(before.values())

    # The schema equals one built with psql from the same files plus Prisma's own history table.
    reference = pg_server.create_database()
    try:
        apply_migrations_with_psql(reference, any_migrations)
        reference.psql(sql=PRISMA_MIGRATIONS_DDL)
        assert schema_dump(pg_db) == schema_dump(reference)
    finally:
        pg_server.drop_database(reference.name)
    assert pg_db.query("SELECT obj_description('public'::regnamespace, 'pg_namespace')")[0][0] == (
        "standard public schema"
    )
    assert pg_db.query("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'")[0][0] == (
        "pg_database_owner"
    )

    # _prisma_migrations: one row per migration, as Prisma Migrate writes it.
    files = sorted(any_migrations.glob("*/migration.sql"))
    rows = pg_db.query(
        "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count "
        "FROM _prisma_migrations ORDER BY started_at"
    )
    assert [r[3] for r in rows] == [f.parent.name for f in files]
    assert [r[1] for r in rows] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    for id_, _checksum, finished, _name, logs, rolled_back, started, steps in rows:
        assert UUID4_RE.match(id_)
        assert finished is not None and started <= finished
        assert logs is None and rolled_back is None and steps == 1
    assert [(a["name"], a["checksum"]) for a in result["applied"]] == [(r[3], r[1]) for r in rows]
    assert pg_db.query(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position"
    ) == [
        ("id", "character varying", 36, "NO", None),
        ("checksum", "character varying", 64, "NO", None),
        ("finished_at", "timestamp with time zone", None, "YES", None),
        ("migration_name", "character varying", 255, "NO", None),
        ("logs", "text", None, "YES", None),
        ("rolled_back_at", "timestamp with time zone", None, "YES", None),
        ("started_at", "timestamp with time zone", None, "NO", "now()"),
        ("applied_steps_count", "integer", None, "NO", "0"),
    ]
    assert pg_db.query(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = '_prisma_migrations'::regclass AND i.indisprimary"
    ) == [("id",)]

    # The backup: private file, size and sha256 as returned, and it restores the old rows.
    backup = result["backup"]
    path = Path(backup["path"])
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert backup["size"] == path.stat().st_size
    assert backup["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert backup["toc_entries"] > len(before)
    assert backup["rows"] == before and backup["rows_written_after_backup"] == {}
    restored = pg_server.create_database()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSWORD": pg_server.password}
        subprocess.run(
            [pg_server.tool("pg_restore"), "--exit-on-error", "-h", pg_server.host, "-p", str(pg_server.port),
             "-U", pg_server.superuser, "-d", restored.name, str(path)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        assert restored.row_counts() == before
        assert schema_dump(restored) == old_schema
    finally:
        pg_server.drop_database(restored.name)

    assert set(result["seconds"]) >= {"validate", "connect", "lock", "preflight", "backup", "reset", "total"}
    assert result["summary"].startswith(f"schema public of database {pg_db.name}: dropped {len(before)} tables")
    assert backup["sha256"] in result["summary"]
    assert result["connection"]["url"].count("********") == 1
    assert_no_secret(res, pg_server.password)


def test_check_mode_is_the_preflight_and_changes_nothing(pg_server, pg_db, fixture_migrations, tmp_path) -> None:
    before = seeded(pg_db, fixture_migrations)
    dump = schema_dump(pg_db)
    args = args_for(pg_db, fixture_migrations, tmp_path, expected_environment="production")
    res = run_module("pg_schema_reset", args, check=True, verbosity=3)
    assert not res.failed, res.msg
    assert res.changed
    result = res.result
    assert {t["name"]: t["rows"] for t in result["dropped"]["tables"]} == before
    assert result["dropped"]["schemas"] == ["public"]
    assert result["dropped"]["objects"]["tables"] == len(before)
    assert [m["name"] for m in result["migrations"]] == sorted(
        p.name for p in fixture_migrations.iterdir() if p.is_dir()
    )
    assert result["applied"] == []
    assert result["backup"]["skipped"] is True and result["backup"]["pg_dump_version"].startswith("15")
    assert result["environment"]["would_mark"] is True and result["environment"]["found"] is None
    assert result["summary"].startswith(
        f"schema public of database {pg_db.name}: would drop {len(before)} tables ({sum(before.values())} rows), "
        "would apply 3 migrations, no backup (check mode), environment production (would be marked)"
    )
    # Nothing changed: rows, schema, no backup file, no marker, no history table.
    assert pg_db.row_counts() == before
    assert schema_dump(pg_db) == dump
    assert list(tmp_path.iterdir()) == []
    assert marker(pg_db) is None
    assert_no_secret(res, pg_server.password)


def test_broken_last_migration_rolls_back_everything(pg_server, pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    broken = last_migration(migrations)
    broken.write_text(broken.read_text() + '\nALTER TABLE "Ring" ADD COLUMN "oops" NO_SUCH_TYPE;\n')
    line = broken.read_text().splitlines().index('ALTER TABLE "Ring" ADD COLUMN "oops" NO_SUCH_TYPE;') + 1
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, expected_environment="test"), verbosity=3)
    assert res.failed
    assert broken.parent.name in res.msg and str(broken) in res.msg
    assert 'type "no_such_type" does not exist' in res.msg and f"line {line}" in res.msg
    assert res.result["sqlstate"] == "42704"
    assert_untouched(pg_db, before)
    assert marker(pg_db) is None
    # The reset lock went with the module's session.
    assert pg_db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0
    assert_no_secret(res, pg_server.password)


def test_connection_terminated_during_a_migration_leaves_the_old_database(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    slow = last_migration(migrations)
    slow.write_text(slow.read_text() + "\nSELECT pg_sleep(60);\n")
    box: dict = {}
    runner = threading.Thread(
        target=lambda: box.setdefault("res", run_module("pg_schema_reset", args_for(pg_db, migrations)))
    )
    runner.start()
    killed = False
    deadline = time.monotonic() + 90
    while not killed and runner.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(psycopg2.Error):
            killed = bool(
                pg_db.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = %s AND query LIKE '%%pg_sleep%%'",
                    (pg_db.name, APP),
                )
            )
        time.sleep(0.1)
    runner.join(120)
    assert killed
    res = box["res"]
    assert res.failed
    assert slow.parent.name in res.msg and str(slow) in res.msg and "nothing was changed" in res.msg
    assert "connection was lost" in res.msg
    assert_untouched(pg_db, before)


def test_second_reset_fails_fast_and_leaves_the_lock_holder_alone(pg_db, fixture_migrations, tmp_path) -> None:
    seeded(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    holder = pg_db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SET application_name = 'first reset'")
            cur.execute("SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (RESET_LOCK_KEY,))
            locked, pid = cur.fetchone()
        assert locked
        res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, tmp_path))
        assert res.failed
        assert "another schema reset is running" in res.msg and f"pid {pid}" in res.msg and "first reset" in res.msg
        assert res.result["lock_holder_pid"] == pid and f"SELECT pg_terminate_backend({pid})" in res.msg
        # The holder was not terminated, no backup was taken, nothing changed.
        with holder.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert list(tmp_path.iterdir()) == []
        assert_untouched(pg_db, before)
    finally:
        holder.close()


def test_other_sessions_are_terminated_or_the_lock_timeout_fails_cleanly(pg_db, fixture_migrations) -> None:
    seeded(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    blocker = pg_db.connect(autocommit=False)
    try:
        with blocker.cursor() as cur:
            cur.execute('SELECT count(*) FROM "Ring"')  # holds an AccessShare lock, idle in transaction
            blocker_pid = blocker.get_backend_pid()
        res = run_module(
            "pg_schema_reset", args_for(pg_db, fixture_migrations, terminate_sessions=False, lock_timeout="1s")
        )
        assert res.failed
        assert "lock timeout" in res.msg and "nothing was changed" in res.msg
        assert "set terminate_sessions: true" in res.msg and res.result["step"] == "DROP SCHEMA public CASCADE"
        assert_untouched(pg_db, before)

        res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations))
        assert not res.failed, res.msg
        assert [s["pid"] for s in res.result["terminated_sessions"] if s["terminated"]] == [blocker_pid]
        assert pg_db.query('SELECT count(*) FROM "Ring"')[0][0] == 0
        with pytest.raises(psycopg2.Error), blocker.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        blocker.close()


def test_wrong_password_names_the_server_and_hides_the_password(pg_server, pg_db, fixture_migrations) -> None:
    seeded(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    wrong = "Wr0ng-" + secrets.token_hex(8)
    args = args_for(pg_db, fixture_migrations)
    args["database_url"] = pg_db.url(password=wrong, user="postgres", params="schema=public")
    res = run_module("pg_schema_reset", args, verbosity=3)
    assert res.failed
    assert "cannot connect to PostgreSQL at host 127.0.0.1" in res.msg
    assert f"port {pg_server.port}" in res.msg and pg_db.name in res.msg
    assert "password authentication failed" in res.msg and "nothing was changed" in res.msg
    assert_no_secret(res, wrong)
    assert_untouched(pg_db, before)


def test_environment_marker_is_written_checked_and_survives_the_drop(pg_db, fixture_migrations) -> None:
    before = seeded(pg_db, fixture_migrations)
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, expected_environment="production"))
    assert not res.failed, res.msg
    env = res.result["environment"]
    assert env["found"] is None and env["marked"] is True and env["value"] == "production"
    assert any("now marked as 'production'" in w for w in res.result.get("warnings", []))
    assert marker(pg_db) == "production"

    seed_hub_data(pg_db, rings=2, members_per_ring=1)
    after_seed = snapshot(pg_db)
    for expected, text in (("staging", "marked as environment 'production'"), (None, "expected_environment")):
        extra = {"expected_environment": expected} if expected else {}
        res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, **extra))
        assert res.failed and text in res.msg and "nothing was changed" in res.msg
        assert_untouched(pg_db, after_seed)
    assert sum(before.values()) > 0

    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, expected_environment="production"))
    assert not res.failed, res.msg
    assert res.result["environment"]["marked"] is False and res.result["environment"]["found"] == "production"
    assert pg_db.query('SELECT count(*) FROM "Ring"')[0][0] == 0


@pytest.fixture
def tiny_mount(tmp_path):
    """Small tmpfs mounts (needs root); a factory taking mount options."""
    mounts: list[Path] = []

    def make(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, check=False
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounts.append(point)
        return point

    yield make
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("case", ["missing", "a_file", "read_only", "full"])
def test_backup_dir_faults_fail_before_the_drop(case, pg_db, fixture_migrations, tmp_path, tiny_mount) -> None:
    seeded(pg_db, fixture_migrations, rings=12)
    before = snapshot(pg_db)
    if case == "missing":
        backup_dir, text = tmp_path / "nope", "does not exist"
    elif case == "a_file":
        backup_dir, text = tmp_path / "file", "is not a directory"
        backup_dir.write_text("x")
    elif case == "read_only" and os.geteuid() != 0:
        backup_dir, text = tmp_path / "ro", "is not writable"
        backup_dir.mkdir(mode=0o500)
    elif case == "read_only":  # root writes through file modes: a read-only mount
        backup_dir, text = tiny_mount("size=32k,ro"), "is not writable"
    else:
        backup_dir, text = tiny_mount("size=8k,mode=0700"), "No space left on device"
    if case == "full":  # the preflight sees the directory works but warns that it is small
        check = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, backup_dir), check=True)
        assert not check.failed, check.msg
        assert any("bytes free" in w and "full disk" in w for w in check.result["warnings"])
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, backup_dir))
    assert res.failed
    assert text in res.msg and "nothing was changed" in res.msg, res.msg
    assert_untouched(pg_db, before)
    if case == "full":
        assert "pg_dump" in res.msg and list(backup_dir.iterdir()) == []


@pytest.mark.parametrize("case", ["not_on_path", "bad_option", "too_old", "unreadable_backup"])
def test_client_tool_faults_fail_before_the_drop(case, pg_server, pg_db, fixture_migrations, tmp_path) -> None:
    seeded(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    args = args_for(pg_db, fixture_migrations, backup_dir)
    task_env = None
    if case == "not_on_path":
        empty = tmp_path / "bin"
        empty.mkdir()
        task_env = {"PATH": str(empty)}
        text = "pg_dump not found on PATH"
    elif case == "bad_option":
        args["pg_dump_path"] = str(tmp_path / "no" / "pg_dump")
        text = "no executable pg_dump"
    elif case == "unreadable_backup":  # the read-back is a real check: a pg_restore that cannot list fails
        broken = tmp_path / "broken" / "pg_restore"
        broken.parent.mkdir()
        real = pg_server.tool("pg_restore")
        broken.write_text(
            f'#!/bin/sh\n[ "$1" = "--version" ] && exec {real} --version\n'
            "echo 'pg_restore: error: input file does not appear to be a valid archive' >&2\nexit 1\n"
        )
        broken.chmod(0o755)
        args["pg_restore_path"] = str(broken)
        text = "pg_restore --list cannot read the backup"
    else:
        old = tmp_path / "old" / "pg_dump"
        old.parent.mkdir()
        old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.9'\n")
        old.chmod(0o755)
        args["pg_dump_path"] = str(old)
        text = "older than the server"
    res = run_module("pg_schema_reset", args, task_env=task_env)
    assert res.failed
    assert text in res.msg and "nothing was changed" in res.msg, res.msg
    assert_untouched(pg_db, before)
    assert list(backup_dir.iterdir()) == []


def test_unsafe_migration_is_refused_before_connecting(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    last = last_migration(migrations)
    last.write_text(
        last.read_text() + "\n-- CREATE INDEX CONCURRENTLY in a comment is fine\n"
        'CREATE INDEX CONCURRENTLY "Ring_name_idx" ON "Ring"("name");\n'
    )
    line = len(last.read_text().splitlines())
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, tmp_path / "unused"))
    assert res.failed
    assert f"{last} line {line}: CREATE INDEX CONCURRENTLY" in res.msg
    assert_untouched(pg_db, before)
    assert pg_db.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'Ring_name_idx'")[0][0] == 0


def test_prisma_url_with_a_non_public_schema(pg_db, fixture_migrations) -> None:
    pg_db.execute("CREATE TABLE public.keep_me (id int)")
    pg_db.execute("INSERT INTO public.keep_me VALUES (1), (2)")
    url = pg_db.url(params="schema=hub&connection_limit=5&pool_timeout=10")
    args = {"database_url": url, "migrations_dir": str(fixture_migrations), "backup": False}
    first = run_module("pg_schema_reset", args)
    assert not first.failed, first.msg
    assert first.result["dropped"]["schemas"] == [] and first.result["schema"] == "hub"
    assert "Ring" in pg_db.row_counts("hub") and "_prisma_migrations" in pg_db.row_counts("hub")
    assert pg_db.query("SELECT count(*) FROM hub._prisma_migrations")[0][0] == 3
    seed_hub_data(pg_db, rings=2, members_per_ring=1, schema="hub")
    # A view in public over hub."Ring" would go with the cascade: refused unless allowed.
    pg_db.execute('CREATE VIEW public.ring_names AS SELECT name FROM hub."Ring"')
    hub_before = snapshot(pg_db, "hub")
    refused = run_module("pg_schema_reset", args)
    assert refused.failed and "would also drop objects in other schemas: view public.ring_names" in refused.msg
    assert_untouched(pg_db, hub_before, "hub")
    assert pg_db.query('SELECT count(*) FROM hub."Ring"')[0][0] == 2
    second = run_module("pg_schema_reset", dict(args, allow_outside_drops=True))
    assert not second.failed, second.msg
    assert second.result["dropped"]["schemas"] == ["hub"]
    assert {t["name"]: t["rows"] for t in second.result["dropped"]["tables"]}["Ring"] == 2
    assert pg_db.query('SELECT count(*) FROM hub."Ring"')[0][0] == 0
    assert pg_db.query("SELECT count(*) FROM public.keep_me")[0][0] == 2
    assert "Ring" not in pg_db.row_counts("public")
    assert second.result["dropped"]["outside_schema"] == ["view public.ring_names"]
    assert pg_db.query("SELECT to_regclass('public.ring_names')") == [(None,)]


def test_sql_files_apply_in_the_given_order(pg_db, tmp_path) -> None:
    first, empty, second = tmp_path / "one.sql", tmp_path / "two" / "migration.sql", tmp_path / "three.sql"
    empty.parent.mkdir()
    first.write_text("CREATE TABLE t (id int);\n")
    empty.write_text("")
    second.write_text("-- adds a column\nALTER TABLE t ADD COLUMN note text;\n")
    args = {"database_url": pg_db.url(), "sql_files": [str(first), str(empty), str(second)], "backup": False}
    res = run_module("pg_schema_reset", args)
    assert not res.failed, res.msg
    assert [a["name"] for a in res.result["applied"]] == ["one", "two", "three"]
    assert pg_db.query("SELECT migration_name FROM _prisma_migrations ORDER BY started_at") == [
        ("one",),
        ("two",),
        ("three",),
    ]
    assert pg_db.query("SELECT column_name FROM information_schema.columns WHERE table_name = 't' ORDER BY 1") == [
        ("id",),
        ("note",),
    ]


@pytest.fixture
def owned_db(pg_server):
    """A database owned by a non-superuser role, plus a reader role and a role with no rights."""
    tag = secrets.token_hex(4)
    owner, reader, outsider = f"hubowner_{tag}", f"reader_{tag}", f"outsider_{tag}"
    passwords = {name: "pw-" + secrets.token_hex(10) for name in (owner, outsider)}
    pg_server.create_role(owner, passwords[owner])
    pg_server.create_role(reader)
    pg_server.create_role(outsider, passwords[outsider])
    db = pg_server.create_database(owner=owner)
    try:
        yield db, owner, reader, outsider, passwords
    finally:
        pg_server.drop_database(db.name)
        for role in (owner, reader, outsider):
            pg_server.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_non_superuser_owner_keeps_owner_and_privileges_and_outsider_is_refused(owned_db, fixture_migrations) -> None:
    db, owner, reader, outsider, passwords = owned_db
    apply_migrations_with_psql(db, fixture_migrations)
    db.execute(f'ALTER TABLE public."Ring" OWNER TO "{owner}"')
    db.execute(f'GRANT USAGE ON SCHEMA public TO "{reader}"')
    db.execute(f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public GRANT SELECT ON TABLES TO "{reader}"')
    db.execute(f"COMMENT ON DATABASE \"{db.name}\" IS 'Ring Hub staging'")
    seed_hub_data(db, rings=2, members_per_ring=1)
    untouched = snapshot(db)
    acl_sql = "SELECT nspacl::text, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
    acl_before = db.query(acl_sql)

    refused = run_module(
        "pg_schema_reset",
        {"database_url": db.url(user=outsider, password=passwords[outsider]),
         "migrations_dir": str(fixture_migrations), "backup": False},
    )  # fmt: skip
    assert refused.failed
    assert "may not drop schema 'public'" in refused.msg and "may not create schemas" in refused.msg
    assert_untouched(db, untouched)

    res = run_module(
        "pg_schema_reset",
        {"database_url": db.url(user=owner, password=passwords[owner], params="schema=public"),
         "migrations_dir": str(fixture_migrations), "backup": False, "expected_environment": "staging"},
        verbosity=3,
    )  # fmt: skip
    assert not res.failed, res.msg
    assert res.result["role"] == owner
    # Tables created by another role (here the superuser) cannot be counted by the owner role.
    rows = {t["name"]: t["rows"] for t in res.result["dropped"]["tables"]}
    assert rows["Ring"] == 2 and rows["Actor"] is None
    assert any("row counts are unknown" in w for w in res.result["warnings"])
    assert_no_secret(res, passwords[owner])
    assert db.query(acl_sql) == acl_before
    # The marker line joins the existing comment, which is kept.
    assert db.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db.name,)) == [
        ("Ring Hub staging\nringhub.environment=staging",)
    ]
    # Default privileges came back: the reader can read the tables the migrations created.
    assert db.query(
        "SELECT has_table_privilege(%s, 'public.\"Ring\"', 'SELECT'), pg_get_userbyid(relowner) "
        "FROM pg_class WHERE oid = 'public.\"Ring\"'::regclass",
        (reader,),
    ) == [(True, owner)]
    assert db.query('SELECT count(*) FROM "Membership"')[0][0] == 0


def test_discrete_options_over_the_unix_socket_in_check_mode(pg_server, pg_db, fixture_migrations) -> None:
    before = seeded(pg_db, fixture_migrations)
    args = {
        "login_unix_socket": str(pg_server.socket_dir),
        "port": pg_server.port,
        "login_user": "postgres",
        "db": pg_db.name,
        "schema": "public",
        "migrations_dir": str(fixture_migrations),
        "backup": False,
    }
    res = run_module("pg_schema_reset", args, check=True)
    assert not res.failed, res.msg
    assert res.result["connection"]["host"] == str(pg_server.socket_dir)
    assert res.result["connection"]["source"] == "options"
    assert {t["name"]: t["rows"] for t in res.result["dropped"]["tables"]} == before
    assert pg_db.row_counts() == before


def test_the_terminate_list_spares_the_reset_lock_holder_and_itself(pg_db) -> None:
    holder, idle, me = pg_db.connect(), pg_db.connect(), pg_db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (RESET_LOCK_KEY,))
        with me.cursor() as cur:
            cur.execute(_OTHER_SESSIONS_SQL, (LOCK_CLASSID, LOCK_OBJID))
            pids = {row[0] for row in cur.fetchall()}
        assert idle.get_backend_pid() in pids
        assert holder.get_backend_pid() not in pids and me.get_backend_pid() not in pids
    finally:
        for conn in (holder, idle, me):
            conn.close()


def test_a_superuser_reset_keeps_the_tables_owned_by_the_hub_role(pg_server, owned_db, fixture_migrations) -> None:
    db, owner, _reader, _outsider, passwords = owned_db
    apply_migrations_with_psql(db, fixture_migrations)
    db.execute(
        f"""DO $$ DECLARE r record; BEGIN
          FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
            EXECUTE format('ALTER TABLE public.%I OWNER TO "{owner}"', r.tablename); END LOOP;
          FOR r IN SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = 'public' AND t.typtype = 'e' LOOP
            EXECUTE format('ALTER TYPE public.%I OWNER TO "{owner}"', r.typname); END LOOP;
        END $$"""
    )
    seed_hub_data(db, rings=2, members_per_ring=1)
    res = run_module("pg_schema_reset", {"database_url": db.url(), "migrations_dir": str(fixture_migrations),
                                         "backup": False})  # fmt: skip
    assert not res.failed, res.msg
    assert res.result["role"] == "postgres" and res.result["migrations_role"] == owner
    owners = db.query(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'i')"
    )
    assert owners == [(owner,)]
    assert db.query("SELECT DISTINCT pg_get_userbyid(typowner) FROM pg_type WHERE typtype = 'e'") == [(owner,)]
    # The hub's role can use its tables right away.
    conn = pg_server.connect(db.name, user=owner, password=passwords[owner])
    try:
        with conn.cursor() as cur:
            cur.execute('INSERT INTO "Actor" (id, did, type) VALUES (%s, %s, %s)', ("a1", "did:web:x", "USER"))
            cur.execute("SELECT count(*) FROM _prisma_migrations")
            assert cur.fetchone() == (3,)
    finally:
        conn.close()


ALTER_ENUM = """-- AlterEnum
BEGIN;
CREATE TYPE "ActorType_new" AS ENUM ('USER', 'SERVICE', 'INSTANCE', 'BOT');
ALTER TABLE "Actor" ALTER COLUMN "type" TYPE "ActorType_new" USING ("type"::text::"ActorType_new");
ALTER TYPE "ActorType" RENAME TO "ActorType_old";
ALTER TYPE "ActorType_new" RENAME TO "ActorType";
DROP TYPE "ActorType_old";
COMMIT;
"""


def test_prisma_begin_commit_brackets_are_refused_or_run_inside_the_one_transaction(
    pg_db, fixture_migrations, tmp_path
) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    enum_sql = "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = %s::regtype"
    labels = pg_db.query(enum_sql, ('"ActorType"',))
    alter = migrations / "20250301000000_actor_type_bot" / "migration.sql"
    alter.parent.mkdir()
    alter.write_text(ALTER_ENUM)

    refused = run_module("pg_schema_reset", args_for(pg_db, migrations))
    assert refused.failed and f"{alter} line 2: transaction control statement BEGIN" in refused.msg
    assert f"{alter} line 8: transaction control statement COMMIT" in refused.msg
    assert "strip_transaction_control: true" in refused.msg
    assert_untouched(pg_db, before)

    # A failure after the COMMIT line still rolls back what came before it: that COMMIT never ran.
    alter.write_text(ALTER_ENUM + "SELECT no_such_function();\n")
    failed = run_module("pg_schema_reset", args_for(pg_db, migrations, strip_transaction_control=True))
    assert failed.failed and "no_such_function" in failed.msg and "line 9" in failed.msg
    assert_untouched(pg_db, before)
    assert pg_db.query(enum_sql, ('"ActorType"',)) == labels

    alter.write_text(ALTER_ENUM)
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, strip_transaction_control=True))
    assert not res.failed, res.msg
    assert res.result["transaction_control_removed"] == {alter.parent.name: [2, 8]}
    assert pg_db.query(enum_sql, ('"ActorType"',)) == [("USER,SERVICE,INSTANCE,BOT",)]
    assert pg_db.query("SELECT checksum FROM _prisma_migrations WHERE migration_name = %s", (alter.parent.name,)) == [
        (hashlib.sha256(alter.read_bytes()).hexdigest(),)
    ]


def gated_pg_dump(pg_server, directory: Path) -> tuple[Path, Path, Path]:
    """A pg_dump that waits for a ``go`` file before it dumps (``started`` appears when it waits).

    pg_restore next to it is the real one, so the module uses the pair.
    """
    directory.mkdir()
    started, go = directory / "started", directory / "go"
    wrapper = directory / "pg_dump"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" != "--version" ]; then\n'
        f"  touch '{started}'\n"
        f"  while [ ! -e '{go}' ]; do sleep 0.05; done\n"
        "fi\n"
        f"exec '{pg_server.tool('pg_dump')}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    (directory / "pg_restore").symlink_to(pg_server.tool("pg_restore"))
    return wrapper, started, go


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_the_lock_is_held_from_before_the_backup_until_the_commit(
    pg_server, pg_db, fixture_migrations, tmp_path, record_property
) -> None:
    """A session queued on the reset lock gets it only after the reset committed; a second reset fails fast."""
    before = seeded(pg_db, fixture_migrations)
    wrapper, started, go = gated_pg_dump(pg_server, tmp_path / "bin")
    backups = tmp_path / "backups"
    backups.mkdir()
    box: dict = {}
    first = threading.Thread(
        target=lambda: box.setdefault(
            "first",
            run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, backups, pg_dump_path=str(wrapper))),
        )
    )
    first.start()
    try:
        wait_for(started.exists, "the first reset to start its backup")
        holder = pg_db.query(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
            (LOCK_CLASSID, LOCK_OBJID),
        )
        assert [h[1] for h in holder] == [APP]  # taken before the backup, by the reset's own session

        # A second reset while the first one holds the lock: fails at once, changes nothing.
        clock = time.monotonic()
        second = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, backups))
        wall = time.monotonic() - clock
        assert second.failed and "another schema reset is running" in second.msg
        assert f"pid {holder[0][0]}" in second.msg and "pg_terminate_backend" in second.msg
        assert set(second.result["seconds"]) >= {"validate", "connect", "lock"}
        record_property("second_reset_wall_seconds", round(wall, 3))
        record_property("second_reset_module_seconds", second.result["seconds"])
        print(
            f"second reset failed after {wall:.3f} s wall (ansible-playbook), module phases {second.result['seconds']}"
        )

        # A session queued on the lock is granted it the moment the reset releases it.
        waiter = pg_db.connect()
        waiter_pid = waiter.get_backend_pid()
        seen: dict = {}

        def wait_for_lock() -> None:
            with waiter.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (RESET_LOCK_KEY,))
                # One statement, one snapshot: the old schema has no _prisma_migrations table.
                cur.execute("""SELECT (SELECT count(*) FROM "Ring"), to_regclass('_prisma_migrations') IS NOT NULL""")
                seen["rings"], seen["history"] = cur.fetchone()
                cur.execute("SELECT pg_advisory_unlock(%s)", (RESET_LOCK_KEY,))

        queued = threading.Thread(target=wait_for_lock)
        queued.start()
        wait_for(
            lambda: (
                pg_db.query(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = %s",
                    (waiter_pid,),
                )[0][0]
                == 1
            ),
            "the waiter to queue on the reset lock",
        )
    finally:
        go.touch()
        first.join(300)
    queued.join(60)
    waiter.close()
    res = box["first"]
    assert not res.failed, res.msg
    # The lock was never free between the backup and the commit: the queued session saw the new schema.
    assert seen == {"rings": 0, "history": True}
    assert all(s["pid"] != waiter_pid for s in res.result["terminated_sessions"])
    assert {t["name"]: t["rows"] for t in res.result["dropped"]["tables"]} == before
    assert Path(res.result["backup"]["path"]).exists()


PLAYBOOK = """
- name: preflight, reset and audit, as the reset playbook chains them
  hosts: localhost
  gather_facts: false
  vars:
    reset_args:
      migrations_dir: "{{ migrations_dir }}"
      backup_dir: "{{ backup_dir }}"
      expected_environment: production
  tasks:
    - name: preflight with DATABASE_URL from the environment of the module process
      threadring.ringhub.pg_schema_reset: "{{ reset_args }}"
      check_mode: true
      register: preflight
    - name: show the preflight
      ansible.builtin.debug:
        msg: "{{ preflight.summary }}"
    - name: reset
      threadring.ringhub.pg_schema_reset: "{{ reset_args | combine({'database_url': ringhub_database_url}) }}"
      register: reset
    - name: audit line
      threadring.ringhub.audit_log:
        path: "{{ audit_file }}"
        event: pg_schema_reset
        status: succeeded
        details:
          summary: "{{ reset.summary }}"
          connection: "{{ reset.connection }}"
          dropped: "{{ reset.dropped }}"
          applied: "{{ reset.applied }}"
          backup: "{{ reset.backup }}"
          environment: "{{ reset.environment }}"
          seconds: "{{ reset.seconds }}"
"""


def test_results_feed_a_summary_and_an_audit_line_without_the_password(
    pg_server, pg_db, fixture_migrations, tmp_path
) -> None:
    """A password full of URL-reserved characters, percent-encoded in the URL, never shows at -vvv."""
    role = "resetter_" + secrets.token_hex(4)
    password = "p@ss/w:rd?#%&=" + secrets.token_hex(6)
    pg_server.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER PASSWORD %s', (password,))
    try:
        before = seeded(pg_db, fixture_migrations)
        url = pg_db.url(user=role, password=password, params="schema=public&connection_limit=5")
        encoded = url.split("://", 1)[1].split("@")[0].split(":", 1)[1]
        assert encoded != password
        backups, audit = tmp_path / "backups", tmp_path / "audit" / "ringhub.jsonl"
        backups.mkdir()
        playbook = tmp_path / "reset.yml"
        playbook.write_text(PLAYBOOK)
        run = run_playbook(
            playbook,
            {"migrations_dir": str(fixture_migrations), "backup_dir": str(backups), "audit_file": str(audit),
             "ringhub_database_url": url},
            verbosity=3,
            env={"DATABASE_URL": url},
        )  # fmt: skip
        preflight, reset = (
            run.task("preflight with DATABASE_URL from the environment of the module process"),
            run.task("reset"),
        )
        assert not reset.get("failed"), reset.get("msg")
        assert preflight["connection"]["source"] == "DATABASE_URL environment variable"
        assert run.task("show the preflight")["msg"] == preflight["summary"]
        assert f"would drop {len(before)} tables ({sum(before.values())} rows)" in preflight["summary"]
        assert pg_db.query('SELECT count(*) FROM "Ring"') == [(0,)]

        [line] = audit.read_text().splitlines()
        record = json.loads(line)["details"]
        assert record["summary"] == reset["summary"]
        assert record["summary"].startswith(f"schema public of database {pg_db.name}: dropped {len(before)} tables")
        assert record["backup"]["sha256"] == hashlib.sha256(Path(reset["backup"]["path"]).read_bytes()).hexdigest()
        assert {t["name"]: t["rows"] for t in record["dropped"]["tables"]} == before
        assert [a["name"] for a in record["applied"]] == [m["name"] for m in reset["migrations"]]
        assert record["environment"]["value"] == "production" and record["environment"]["marked"] is True
        assert record["connection"]["url"] == (
            f"postgresql://{role}:********@127.0.0.1:{pg_server.port}/{pg_db.name}?schema=public&connection_limit=5"
        )
        for text in (run.output, audit.read_text(), json.dumps(run.results)):
            assert password not in text and encoded not in text and url not in text
    finally:
        pg_server.execute(f'DROP ROLE IF EXISTS "{role}"')


# -- progress_file ------------------------------------------------------------------------------------

ISO_MS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROGRESS_KEYS = {
    "phase", "started", "updated", "elapsed", "phase_elapsed", "check_mode", "database", "schema", "database_size",
    "backup_path", "backup_bytes", "rate_bytes_per_s", "failed_phase", "error", "summary",
}  # fmt: skip


def lingering_tools(pg_server, directory: Path) -> tuple[Path, dict[str, Path]]:
    """pg_dump and pg_restore that run the real ones, then wait before they exit.

    pg_dump: ``dumped`` appears when its dump is done, it exits once ``go`` exists;
    ``pg_restore --list``: ``listed`` appears, it exits once ``go_list`` exists.
    """
    directory.mkdir()
    files = {name: directory / name for name in ("dumped", "go", "listed", "go_list")}
    for tool, done, go, when in (("pg_dump", "dumped", "go", '[ "$1" != "--version" ]'),
                                 ("pg_restore", "listed", "go_list", '[ "$1" = "--list" ]')):  # fmt: skip
        wrapper = directory / tool
        wrapper.write_text(
            "#!/bin/sh\n"
            f"'{pg_server.tool(tool)}' \"$@\"\n"
            "rc=$?\n"
            f"if {when}; then\n"
            f"  touch '{files[done]}'\n"
            f"  while [ ! -e '{files[go]}' ]; do sleep 0.05; done\n"
            "fi\n"
            "exit $rc\n"
        )
        wrapper.chmod(0o755)
    return directory / "pg_dump", files


def read_progress(path: Path) -> dict:
    return json.loads(path.read_text())


def test_progress_file_follows_the_backup_while_pg_dump_runs_and_ends_done(
    pg_server, pg_db, fixture_migrations, tmp_path
) -> None:
    before = seeded(pg_db, fixture_migrations, rings=20)
    wrapper, gates = lingering_tools(pg_server, tmp_path / "bin")
    backups, reports = tmp_path / "backups", tmp_path / "reports"
    backups.mkdir()
    reports.mkdir()
    progress = reports / "reset.json"
    args = args_for(pg_db, fixture_migrations, backups, pg_dump_path=str(wrapper), progress_file=str(progress))
    box: dict = {}
    runner = threading.Thread(target=lambda: box.setdefault("res", run_module("pg_schema_reset", args, verbosity=3)))
    runner.start()
    try:
        wait_for(gates["dumped"].exists, "pg_dump to finish its dump")
        [backup_file] = backups.glob("*.dump")
        seen = read_progress(progress)
        assert set(seen) == PROGRESS_KEYS
        assert seen["phase"] == "backup" and seen["backup_path"] == str(backup_file)
        assert seen["database"] == pg_db.name and seen["schema"] == "public" and seen["check_mode"] is False
        assert isinstance(seen["database_size"], int) and seen["database_size"] > 0
        assert ISO_MS_RE.match(seen["started"]) and ISO_MS_RE.match(seen["updated"])
        # pg_dump is still running (its wrapper waits): the file keeps being rewritten with its size.
        wait_for(lambda: read_progress(progress)["phase_elapsed"] >= seen["phase_elapsed"] + 1.0, "a later report")
        later = read_progress(progress)
        assert later["phase"] == "backup" and later["started"] == seen["started"]
        assert later["updated"] > seen["updated"] and later["elapsed"] > seen["elapsed"]
        assert later["backup_bytes"] == backup_file.stat().st_size > 0
        assert later["rate_bytes_per_s"] > 0
        assert stat.S_IMODE(progress.stat().st_mode) == 0o600
        # pg_dump exited: the backup is being read back.
        gates["go"].touch()
        wait_for(gates["listed"].exists, "pg_restore --list to read the backup")
        listing = read_progress(progress)
        assert listing["phase"] == "verify_backup" and listing["backup_bytes"] == backup_file.stat().st_size
    finally:
        gates["go"].touch()
        gates["go_list"].touch()
        runner.join(300)
    res = box["res"]
    assert not res.failed, res.msg
    final = read_progress(progress)
    assert final["phase"] == "done" and final["summary"] == res.result["summary"]
    assert final["backup_bytes"] == res.result["backup"]["size"] == Path(res.result["backup"]["path"]).stat().st_size
    assert final["error"] is None and final["failed_phase"] is None
    assert final["elapsed"] >= later["elapsed"] and final["started"] == seen["started"]
    assert stat.S_IMODE(progress.stat().st_mode) == 0o600
    assert [p.name for p in reports.iterdir()] == ["reset.json"]  # no temp file left behind
    assert {t["name"]: t["rows"] for t in res.result["dropped"]["tables"]} == before
    assert pg_server.password not in progress.read_text()
    assert_no_secret(res, pg_server.password)


def test_progress_file_says_failed_with_the_masked_error(pg_server, pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    progress = tmp_path / "progress.json"

    wrong = "Wr0ng-" + secrets.token_hex(8)
    args = args_for(pg_db, migrations, progress_file=str(progress))
    args["database_url"] = pg_db.url(password=wrong, user="postgres")
    res = run_module("pg_schema_reset", args)
    assert res.failed
    report = read_progress(progress)
    assert report["phase"] == "failed" and report["failed_phase"] == "connect"
    assert report["error"] == res.msg and "password authentication failed" in report["error"]
    assert wrong not in progress.read_text() and pg_server.password not in progress.read_text()
    assert stat.S_IMODE(progress.stat().st_mode) == 0o600

    broken = last_migration(migrations)
    broken.write_text(broken.read_text() + "\nSELECT no_such_function();\n")
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, progress_file=str(progress)))
    assert res.failed and "no_such_function" in res.msg
    report = read_progress(progress)
    assert report["phase"] == "failed" and report["failed_phase"] == "reset" and report["error"] == res.msg
    assert report["error"].endswith("nothing was changed") and report["database_size"] > 0
    assert pg_server.password not in progress.read_text()
    assert_untouched(pg_db, before)


def test_progress_file_that_cannot_be_written_fails_before_anything(pg_db, fixture_migrations, tmp_path) -> None:
    seeded(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    backups = tmp_path / "backups"
    backups.mkdir()
    missing = tmp_path / "no-such-dir" / "progress.json"
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, backups, progress_file=str(missing)))
    assert res.failed
    assert f"progress_file {missing}: cannot write it" in res.msg and "nothing was changed" in res.msg
    assert "connect" not in res.result["seconds"]
    assert list(backups.iterdir()) == [] and not missing.parent.exists()
    assert_untouched(pg_db, before)


def test_check_mode_writes_the_preflight_progress(pg_db, fixture_migrations, tmp_path) -> None:
    before = seeded(pg_db, fixture_migrations)
    progress = tmp_path / "progress.json"
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations, progress_file=str(progress)), check=True)
    assert not res.failed, res.msg
    report = read_progress(progress)
    assert report["phase"] == "done" and report["check_mode"] is True and report["summary"] == res.result["summary"]
    assert report["backup_path"] is None and report["backup_bytes"] == 0
    assert report["database_size"] == res.result["database_size"]
    assert pg_db.row_counts() == before


# -- the COMMIT: refused by the server (rolled back) or unanswered (outcome unknown) --------------------


def test_a_commit_the_server_refuses_rolls_back_everything(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    # A deferred unique constraint is checked at COMMIT: PostgreSQL answers the COMMIT with an error.
    last = last_migration(migrations)
    last.write_text(
        last.read_text()
        + '\nCREATE TABLE "dup" (id int, CONSTRAINT dup_id UNIQUE (id) DEFERRABLE INITIALLY DEFERRED);\n'
        'INSERT INTO "dup" VALUES (1), (1);\n'
    )
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, expected_environment="test"))
    assert res.failed and res.result["step"] == "COMMIT" and res.result["sqlstate"] == "23505"
    assert res.msg.startswith("COMMIT of the reset failed: ") and 'unique constraint "dup_id"' in res.msg
    assert res.msg.endswith("; the transaction was rolled back, nothing was changed")
    assert res.result["nothing_changed"] is True and "outcome_unknown" not in res.result
    assert_untouched(pg_db, before)
    assert marker(pg_db) is None


def test_a_commit_without_an_answer_says_the_outcome_is_unknown(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    # A deferred constraint trigger runs inside the COMMIT; the session is terminated meanwhile.
    last = last_migration(migrations)
    last.write_text(
        last.read_text() + '\nCREATE TABLE "slow_commit" (id int);\n'
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); "
        "RETURN NULL; END $$;\n"
        'CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON "slow_commit" DEFERRABLE INITIALLY DEFERRED '
        "FOR EACH ROW EXECUTE FUNCTION slow_commit();\n"
        'INSERT INTO "slow_commit" VALUES (1);\n'
    )
    box: dict = {}
    runner = threading.Thread(
        target=lambda: box.setdefault("res", run_module("pg_schema_reset", args_for(pg_db, migrations)))
    )
    runner.start()
    killed = False
    deadline = time.monotonic() + 90
    while not killed and runner.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(psycopg2.Error):
            killed = bool(
                pg_db.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = %s AND state = 'active' AND query = 'COMMIT'",
                    (pg_db.name, APP),
                )
            )
        time.sleep(0.1)
    runner.join(120)
    assert killed
    res = box["res"]
    assert res.failed and res.result["step"] == "COMMIT" and res.result["outcome_unknown"] is True
    assert "COMMIT of the reset got no answer" in res.msg and "_prisma_migrations" in res.msg
    assert res.msg.endswith("; the outcome is unknown: check the state before running it again")
    assert "nothing was changed" not in res.msg and "nothing_changed" not in res.result


def test_commit_lsn_is_at_or_past_the_reset_commit_record(pg_db, fixture_migrations) -> None:
    seeded(pg_db, fixture_migrations)
    pg_db.execute("CREATE SCHEMA walinspect; CREATE EXTENSION pg_walinspect SCHEMA walinspect")
    start = pg_db.query("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations))
    assert not res.failed, res.msg
    lsn = res.result["commit_lsn"]
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", lsn)
    # The transaction id that wrote the new history rows is the reset's; its COMMIT record, as the
    # WAL itself shows it, ends at or before commit_lsn (a replica that replayed to it has the new schema).
    xid = pg_db.query("SELECT DISTINCT xmin::text::bigint FROM _prisma_migrations")
    assert len(xid) == 1
    deadline = time.monotonic() + 30  # pg_walinspect reads flushed WAL only (the harness commits asynchronously)
    while not pg_db.query("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (lsn,))[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    commits = pg_db.query(
        "SELECT start_lsn::text, end_lsn::text, %s::pg_lsn >= end_lsn FROM walinspect.pg_get_wal_records_info(%s, "
        "%s) WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid::text::bigint = %s",
        (lsn, start, lsn, xid[0][0]),
    )
    assert len(commits) == 1 and commits[0][2] is True, commits
    # And it is the reset's own position, not a later one: nothing else wrote WAL in between.
    assert pg_db.query("SELECT %s::pg_lsn - %s::pg_lsn", (lsn, commits[0][1]))[0][0] < 8192
    # Check mode commits nothing and returns no position.
    check = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations), check=True)
    assert not check.failed and "commit_lsn" not in check.result


# -- what the reset creates and locks, as PostgreSQL reports it -------------------------------------------


def test_the_reset_lock_is_the_pg_locks_entry_the_docs_name(pg_db) -> None:
    holder = pg_db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RESET_LOCK_KEY,))
            assert cur.fetchone()[0]
        locks = pg_db.query(
            "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
            (holder.get_backend_pid(),),
        )
    finally:
        holder.close()
    assert locks == [(LOCK_CLASSID, LOCK_OBJID, 1)]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "pg_schema_reset.md").read_text()
    assert f"classid = {LOCK_CLASSID} AND objid = {LOCK_OBJID} AND objsubid = 1" in docs
    assert str(RESET_LOCK_KEY) in docs and RESET_LOCK_KEY == int.from_bytes(b"RingHub!", "big")


def test_prisma_migrations_has_the_columns_prisma_migrate_creates(pg_db, fixture_migrations) -> None:
    seeded(pg_db, fixture_migrations)
    res = run_module("pg_schema_reset", args_for(pg_db, fixture_migrations))
    assert not res.failed, res.msg
    columns = pg_db.query(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '_prisma_migrations' "
        "ORDER BY ordinal_position"
    )
    # Prisma Migrate's own table (prisma-engines, migration-core): names, order, types, nullability, defaults.
    assert columns == [
        ("id", "character varying", 36, "NO", None),
        ("checksum", "character varying", 64, "NO", None),
        ("finished_at", "timestamp with time zone", None, "YES", None),
        ("migration_name", "character varying", 255, "NO", None),
        ("logs", "text", None, "YES", None),
        ("rolled_back_at", "timestamp with time zone", None, "YES", None),
        ("started_at", "timestamp with time zone", None, "NO", "now()"),
        ("applied_steps_count", "integer", None, "NO", "0"),
    ]
    primary_key = pg_db.query(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'public._prisma_migrations'::regclass AND i.indisprimary"
    )
    assert primary_key == [("id",)]


def test_warnings_gathered_before_a_failure_are_reported_with_it(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    last = last_migration(migrations)
    last.write_text(last.read_text() + "\nSELECT no_such_function();\n")
    args = args_for(pg_db, migrations)  # backup: false warns in the preflight
    args["database_url"] += "&frobnicate=1"  # unknown to libpq: warned about when the URL is parsed
    res = run_module("pg_schema_reset", args)
    assert res.failed and "no_such_function" in res.msg and res.result["nothing_changed"] is True
    warnings = res.result["warnings"]
    assert any("backup is false" in w for w in warnings)
    assert any("'frobnicate' is unknown to libpq" in w for w in warnings)
    assert res.result["connection"]["database"] == pg_db.name and {"preflight", "reset"} <= set(res.result["seconds"])
    assert_untouched(pg_db, before)


# -- a killed earlier run, and what a failure after the backup says ---------------------------------------


def interrupted_report(db, phase: str, backup_path: str | None, started: str) -> dict:
    """The last progress report of a real run whose process was killed in ``phase``."""
    return {
        "phase": phase, "started": started, "updated": started, "elapsed": 1.0, "phase_elapsed": 0.5,
        "check_mode": False, "database": db.name, "schema": "public", "database_size": 1, "backup_path": backup_path,
        "backup_bytes": 10, "rate_bytes_per_s": 1.0, "failed_phase": None, "error": None, "summary": None,
    }  # fmt: skip


def test_the_report_a_killed_run_left_is_read_under_the_lock_and_said(pg_db, fixture_migrations, tmp_path) -> None:
    before = seeded(pg_db, fixture_migrations)
    backups = tmp_path / "backups"
    backups.mkdir()
    progress = backups / "progress.json"
    stale = str(backups / "killed.dump")
    progress.write_text(json.dumps(interrupted_report(pg_db, "backup", stale, "2026-11-30T10:00:00.000Z")))
    args = args_for(pg_db, fixture_migrations, backups, progress_file=str(progress))

    # A second run refused at the lock leaves the report of the run that holds it in place.
    holder = pg_db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RESET_LOCK_KEY,))
            assert cur.fetchone()[0]
        refused = run_module("pg_schema_reset", args)
        assert refused.failed and "another schema reset is running" in refused.msg
        assert read_progress(progress)["phase"] == "backup" and read_progress(progress)["backup_path"] == stale
    finally:
        holder.close()

    res = run_module("pg_schema_reset", args)
    assert not res.failed, res.msg
    previous = res.result["previous_run"]
    assert previous["phase"] == "backup" and previous["schema_state"] == "old"
    assert previous["backup_path"] == stale and previous["backup_complete"] is False
    assert previous["message"] == (
        f"the previous reset of schema 'public' of database '{pg_db.name}' (started 2026-11-30T10:00:00.000Z) "
        "stopped in phase 'backup' at 2026-11-30T10:00:00.000Z without reporting an end (its process was killed); "
        f"the schema is the old one (that run's transaction never committed); its backup {stale} may be incomplete "
        "(its pg_dump did not finish). This run does the whole reset again."
    )
    assert previous["message"] in res.output  # a warning
    assert {t["name"]: t["rows"] for t in res.result["dropped"]["tables"]} == before
    assert read_progress(progress)["phase"] == "done"
    # A finished report left in place (the reset playbook removes it after its audit line): the run that wrote
    # it completed, the schema is the new one.
    again = run_module("pg_schema_reset", args)
    assert not again.failed, again.msg
    assert again.result["previous_run"]["phase"] == "done" and again.result["previous_run"]["schema_state"] == "new"
    assert again.result["previous_run"]["backup_path"] == res.result["backup"]["path"]
    assert again.result["previous_run"]["backup_complete"] is True
    # A report of a failed run (it said so itself) and a check-mode report are no unfinished run.
    report = read_progress(progress)
    progress.write_text(json.dumps(dict(report, phase="failed", failed_phase="reset", error="x")))
    assert "previous_run" not in run_module("pg_schema_reset", args).result
    # A check-mode report is no run of the past either.
    progress.write_text(json.dumps(dict(interrupted_report(pg_db, "reset", None, "2026-11-30T10:00:00.000Z"),
                                        check_mode=True)))  # fmt: skip
    third = run_module("pg_schema_reset", args)
    assert not third.failed and "previous_run" not in third.result


def test_a_failure_after_the_backup_names_it_and_the_restore_commands(pg_db, fixture_migrations, tmp_path) -> None:
    migrations = copy_migrations(fixture_migrations, tmp_path / "migrations")
    seeded(pg_db, migrations)
    before = snapshot(pg_db)
    broken = last_migration(migrations)
    broken.write_text(broken.read_text() + "\nSELECT no_such_function();\n")
    backups = tmp_path / "backups"
    backups.mkdir()
    res = run_module("pg_schema_reset", args_for(pg_db, migrations, backups))
    assert res.failed and res.result["nothing_changed"] is True
    [backup] = list(backups.glob("*.dump"))
    hint = res.result["restore_hint"]
    assert hint["file"] == str(backup) == res.result["backup"]["path"]
    assert hint["pg_restore"] == (
        "pg_restore --clean --if-exists --single-transaction --exit-on-error "
        f"--host={pg_db.server.host} --port={pg_db.server.port} --username={pg_db.server.superuser} "
        f"--dbname={pg_db.name} {backup}"
    )
    assert hint["playbook"] == f"ansible-playbook playbooks/restore.yml -l <hosts> -e ringhub_restore_file={backup}"
    assert f"The backup taken before the reset is {backup} (sha256 {res.result['backup']['sha256']})" in res.msg
    assert hint["pg_restore"] in res.msg and res.msg.endswith("the transaction was rolled back, nothing was changed")
    assert_untouched(pg_db, before)
    # Before the backup there is nothing to restore: no hint.
    res = run_module("pg_schema_reset", args_for(pg_db, migrations))
    assert res.failed and "restore_hint" not in res.result and "The backup taken" not in res.msg
