"""The undo window: pg_schema_reset with keep_previous, then pg_schema_undo, run as Ansible runs them.

Real PostgreSQL and the hub's real migrations (``reference_migrations``; skipped without
../shared), in a database owned by a non-superuser role as the hub's is. "Every row
back" is checked table by table: the row count and a digest of every row (all columns).
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from way_back import KEPT_RE, digests, hub_databases, kept_schemas, schema_acl

from harness.ansible import run_module

UNDO_APP = "threadring.ringhub.pg_schema_undo"
LSN_RE = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")


@pytest.fixture
def hub_db_factory(pg_server: Any) -> Any:
    yield from hub_databases(pg_server)


def reset_args(hub: Any, migrations: Any, **extra: Any) -> dict[str, Any]:
    args = {
        "database_url": hub.url,
        "migrations_dir": str(migrations),
        "backup": False,
        "expected_environment": "production",
        "keep_previous": True,
    }
    return args | extra


def undo_args(hub: Any, **extra: Any) -> dict[str, Any]:
    return {"database_url": hub.url, "expected_environment": "production"} | extra


def parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def kept_records(hub: Any) -> list[dict[str, Any]]:
    """The ``ringhub.kept=`` lines of the database comment, read straight from the catalog."""
    return [
        json.loads(line.split("=", 1)[1]) for line in hub.comment().splitlines() if line.startswith("ringhub.kept=")
    ]


def set_until(hub: Any, name: str, until: str) -> None:
    """Move the retention deadline of one record (as an operator's clock would, days later)."""
    lines = []
    for line in hub.comment().splitlines():
        if line.startswith("ringhub.kept="):
            record = json.loads(line.split("=", 1)[1])
            if record["name"] == name:
                record["until"] = until
                line = "ringhub.kept=" + json.dumps(record, separators=(",", ":"))
        lines.append(line)
    hub.db.execute(f'COMMENT ON DATABASE "{hub.name}" IS %s', ("\n".join(lines),))


def whole_state(hub: Any) -> dict[str, Any]:
    """The live schema, every kept schema (rows and digests), their privileges and the database comment."""
    return {
        "live": digests(hub.db),
        "kept": {name: digests(hub.db, name) for name in kept_schemas(hub.db)},
        "acl": {name: schema_acl(hub.db, name) for name in ["public", *kept_schemas(hub.db)]},
        "comment": hub.comment(),
    }


def assert_no_secret(res: Any, hub: Any) -> None:
    assert hub.password not in res.output
    assert hub.db.server.password not in res.output


# -- keep, then undo ---------------------------------------------------------------------------------------------


def test_reset_keeps_the_old_schema_out_of_reach_and_undo_brings_every_row_back(
    hub_db_factory, reference_migrations
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    acl_before = schema_acl(hub.db, "public")
    history = hub.db.query("SELECT id, checksum, migration_name, started_at FROM _prisma_migrations ORDER BY 3")
    assert before["Ring"][0] == 4 and before["Membership"][0] > 0 and len(history) == 8

    res = run_module("pg_schema_reset", reset_args(hub, reference_migrations))
    assert not res.failed, res.msg
    kept = res.result["kept"]
    name = kept["name"]
    assert KEPT_RE.match(name) and kept["by"] == "reset" and kept["schema"] == "public"
    assert parse_iso(kept["until"]) - parse_iso(kept["kept_at"]) == datetime.timedelta(days=7)
    assert kept["rows"] == {table: rows for table, (rows, _digest) in before.items()}
    assert kept["size_bytes"] > 0 and f"kept as {name}" in res.result["summary"]
    after_reset = digests(hub.db)
    assert after_reset["Ring"][0] == 0 and after_reset["_prisma_migrations"][0] == 8
    assert after_reset["_prisma_migrations"] != before["_prisma_migrations"]  # new ids and times

    # The kept schema is the old schema, every row in it, and the hub's role cannot reach it.
    assert kept_schemas(hub.db) == [name]
    assert digests(hub.db, name) == before
    assert hub.db.query("SELECT nspacl::text FROM pg_namespace WHERE nspname = %s", (name,)) == [("{}",)]
    conn = hub.connect_as_hub()
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(f'SELECT count(*) FROM "{name}"."Ring"')
    finally:
        conn.close()
    assert schema_acl(hub.db, "public") == acl_before
    # Recorded in the database comment, beside the environment marker.
    assert "ringhub.environment=production" in hub.comment().splitlines()
    assert kept_records(hub) == [
        {k: kept[k] for k in ("name", "schema", "by", "kept_at", "until", "total_rows", "rows")}
    ]

    # Check mode lists it with its size and changes nothing.
    check = run_module("pg_schema_undo", undo_args(hub), check=True, diff=True)
    assert not check.failed, check.msg
    assert check.changed and check.result["would_restore"]["name"] == name
    assert check.result["kept_schemas"][0]["size_bytes"] == kept["size_bytes"]
    assert check.result["diff"]["before"] == {"kept_schemas": [name]}
    assert digests(hub.db) == after_reset and kept_schemas(hub.db) == [name]

    undo = run_module("pg_schema_undo", undo_args(hub))
    assert not undo.failed, undo.msg
    assert undo.changed
    # Every row back, table by table; the Prisma history row for row; the privileges as they were.
    assert digests(hub.db) == before
    assert hub.db.query("SELECT id, checksum, migration_name, started_at FROM _prisma_migrations ORDER BY 3") == history
    assert schema_acl(hub.db, "public") == acl_before
    assert undo.result["restored"]["name"] == name and undo.result["restored"]["differences"] == {}
    assert LSN_RE.match(undo.result["commit_lsn"])
    # The post-reset schema is kept in turn, out of reach too, so the undo can be undone.
    aside = undo.result["set_aside"]["name"]
    assert aside.startswith("public_before_undo_") and kept_schemas(hub.db) == [aside]
    assert digests(hub.db, aside) == after_reset
    assert [r["name"] for r in kept_records(hub)] == [aside]
    assert hub.db.query("SELECT nspacl::text FROM pg_namespace WHERE nspname = %s", (aside,)) == [("{}",)]

    again = run_module("pg_schema_undo", undo_args(hub))
    assert not again.failed, again.msg
    assert digests(hub.db) == after_reset
    assert [digests(hub.db, n) for n in kept_schemas(hub.db)] == [before]
    for run in (res, check, undo, again):
        assert_no_secret(run, hub)


# -- the lock and failures in the middle -----------------------------------------------------------------------------

HOOKS = """
CREATE SCHEMA IF NOT EXISTS testhooks;
GRANT USAGE ON SCHEMA testhooks TO PUBLIC;
CREATE OR REPLACE FUNCTION testhooks.on_alter_schema() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF cmd.object_identity = 'public' THEN  -- the second rename: the kept schema becomes public
      IF %(mode)s = 'fail' THEN
        RAISE EXCEPTION 'injected failure after the first rename';
      END IF;
      PERFORM pg_advisory_xact_lock(4242);  -- waits while the test holds it
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER testhooks_alter_schema ON ddl_command_end WHEN TAG IN ('ALTER SCHEMA')
  EXECUTE FUNCTION testhooks.on_alter_schema();
"""


def install_hook(hub: Any, mode: str) -> None:
    hub.db.execute(HOOKS.replace("%(mode)s", f"'{mode}'"))


def remove_hook(hub: Any) -> None:
    hub.db.execute("DROP EVENT TRIGGER IF EXISTS testhooks_alter_schema; DROP SCHEMA IF EXISTS testhooks CASCADE")


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def undo_waiting(hub: Any) -> bool:
    """The undo's session waits for the test's advisory lock 4242 (inside its transaction, after the first rename)."""
    return bool(
        hub.db.query(
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND NOT l.granted AND l.objid = 4242 AND a.application_name = %s",
            (UNDO_APP,),
        )
    )


def test_a_reset_during_an_undo_is_refused_by_the_lock(hub_db_factory, reference_migrations) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    assert not run_module("pg_schema_reset", reset_args(hub, reference_migrations)).failed
    after_reset = digests(hub.db)
    install_hook(hub, "wait")
    holder = hub.db.connect()
    box: dict[str, Any] = {}
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(4242)")
        # terminate_sessions false: the undo would otherwise end the test's lock holder too.
        args = undo_args(hub, terminate_sessions=False, lock_timeout="60s")
        runner = threading.Thread(target=lambda: box.setdefault("res", run_module("pg_schema_undo", args)))
        runner.start()
        wait_for(lambda: undo_waiting(hub) or not runner.is_alive())
        assert runner.is_alive(), box.get("res") and box["res"].msg
        reset = run_module("pg_schema_reset", reset_args(hub, reference_migrations, keep_previous=False))
        assert reset.failed
        assert reset.msg.startswith("a schema undo (or purge) is running") and UNDO_APP in reset.msg
        assert reset.result["nothing_changed"] is True and reset.result["lock_holder_pid"] > 0
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(4242)")
        holder.close()
        if "runner" in locals():
            runner.join(120)
        remove_hook(hub)
    undo = box["res"]
    assert not undo.failed, undo.msg
    assert digests(hub.db) == before
    assert [digests(hub.db, n) for n in kept_schemas(hub.db)] == [after_reset]


@pytest.mark.parametrize("fault", ["error", "connection_lost"])
def test_a_failure_in_the_middle_of_an_undo_leaves_both_schemas_whole(
    hub_db_factory, reference_migrations, fault
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    assert not run_module("pg_schema_reset", reset_args(hub, reference_migrations)).failed
    state = whole_state(hub)
    assert list(state["kept"].values()) == [before]
    install_hook(hub, "fail" if fault == "error" else "wait")
    try:
        if fault == "error":
            res = run_module("pg_schema_undo", undo_args(hub))
        else:
            holder = hub.db.connect()
            try:
                with holder.cursor() as cur:
                    cur.execute("SELECT pg_advisory_lock(4242)")
                box: dict[str, Any] = {}
                args = undo_args(hub, terminate_sessions=False, lock_timeout="60s")
                runner = threading.Thread(target=lambda: box.setdefault("res", run_module("pg_schema_undo", args)))
                runner.start()
                wait_for(lambda: undo_waiting(hub) or not runner.is_alive())
                # The undo has renamed public away and waits before the second rename: its connection is cut.
                hub.db.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (UNDO_APP,)
                )
                runner.join(120)
            finally:
                holder.close()
            res = box["res"]
        assert res.failed
        assert res.result["nothing_changed"] is True and "outcome_unknown" not in res.result
        if fault == "error":
            assert "injected failure after the first rename" in res.msg
            assert res.msg.endswith("the transaction was rolled back, nothing was changed")
        else:
            assert "(connection lost)" in res.msg and res.msg.endswith("nothing was changed")
        assert res.result["step"].startswith("ALTER SCHEMA public_before_reset_")
        # Either state whole: the post-reset schema is live, the kept one intact, records and privileges as they were.
        assert whole_state(hub) == state
    finally:
        remove_hook(hub)
    retry = run_module("pg_schema_undo", undo_args(hub))
    assert not retry.failed, retry.msg
    assert digests(hub.db) == before


# -- refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["no_kept_schema", "past_retention", "marker_mismatch"])
def test_undo_is_refused_with_the_reason_and_changes_nothing(hub_db_factory, fixture_migrations, case) -> None:
    hub = hub_db_factory(fixture_migrations, rings=2)
    args = undo_args(hub)
    keep = case != "no_kept_schema"
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, keep_previous=keep))
    assert not res.failed, res.msg
    if case == "past_retention":
        set_until(hub, res.result["kept"]["name"], "2000-01-01T00:00:00Z")
    if case == "marker_mismatch":
        args["expected_environment"] = "staging"
    state = whole_state(hub)
    refused = run_module("pg_schema_undo", args)
    assert refused.failed and refused.result["nothing_changed"] is True
    assert refused.msg.endswith("; nothing was changed")
    if case == "no_kept_schema":
        assert "there is no kept schema of schema 'public'" in refused.msg and "playbooks/restore.yml" in refused.msg
    elif case == "past_retention":
        name = res.result["kept"]["name"]
        assert f"the kept schema '{name}'" in refused.msg and "was kept until 2000-01-01T00:00:00Z" in refused.msg
        assert "past its retention" in refused.msg
    else:
        assert "is marked as environment 'production'" in refused.msg and "not 'staging'" in refused.msg
    assert whole_state(hub) == state


def test_keep_previous_is_refused_before_anything_when_an_extension_lives_in_the_schema(
    hub_db_factory, fixture_migrations, tmp_path
) -> None:
    hub = hub_db_factory(fixture_migrations, rings=2)
    hub.db.execute("CREATE EXTENSION citext SCHEMA public")
    state = whole_state(hub)
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, backup=True, backup_dir=str(tmp_path)))
    assert res.failed and res.result["nothing_changed"] is True
    assert "keep_previous cannot keep schema 'public': extensions citext are installed in it" in res.msg
    assert whole_state(hub) == state and list(tmp_path.iterdir()) == []


def test_retention_must_be_a_duration(hub_db_factory, fixture_migrations) -> None:
    hub = hub_db_factory(fixture_migrations, rings=1)
    state = whole_state(hub)
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, keep_previous_for="a week"))
    assert res.failed and res.result["option"] == "keep_previous_for"
    assert "keep_previous_for 'a week' must be a duration such as 7d" in res.msg
    assert whole_state(hub) == state


# -- purge ------------------------------------------------------------------------------------------------------------


def test_purge_drops_what_is_past_its_retention_and_check_mode_lists_the_sizes(
    hub_db_factory, fixture_migrations
) -> None:
    hub = hub_db_factory(fixture_migrations, rings=3)
    first = run_module("pg_schema_reset", reset_args(hub, fixture_migrations))
    second = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, keep_previous_for="2w"))
    assert not first.failed and not second.failed, (first.msg, second.msg)
    old, newer = first.result["kept"]["name"], second.result["kept"]["name"]
    assert sorted(kept_schemas(hub.db)) == sorted([old, newer])
    set_until(hub, old, "2000-01-01T00:00:00Z")
    state = whole_state(hub)

    check = run_module("pg_schema_undo", undo_args(hub, action="purge"), check=True, diff=True)
    assert not check.failed, check.msg
    assert check.changed and [k["name"] for k in check.result["would_purge"]] == [old]
    listed = {k["name"]: k for k in check.result["kept_schemas"]}
    assert set(listed) == {old, newer} and listed[old]["expired"] and not listed[newer]["expired"]
    assert all(k["size_bytes"] > 0 and k["exists"] and k["unreachable"] for k in listed.values())
    assert check.result["diff"] == {
        "before": {"kept_schemas": sorted([old, newer])},
        "after": {"kept_schemas": [newer]},
    }
    assert "would drop 1 kept schemas" in check.result["summary"]
    assert whole_state(hub) == state

    purge = run_module("pg_schema_undo", undo_args(hub, action="purge"))
    assert not purge.failed, purge.msg
    assert purge.changed and [k["name"] for k in purge.result["purged"]] == [old]
    assert purge.result["purged"][0]["size_bytes"] == listed[old]["size_bytes"]
    assert kept_schemas(hub.db) == [newer] and [r["name"] for r in kept_records(hub)] == [newer]
    assert digests(hub.db, newer) == state["kept"][newer] and digests(hub.db) == state["live"]
    again = run_module("pg_schema_undo", undo_args(hub, action="purge"))
    assert not again.failed and not again.changed and again.result["purged"] == []

    # The next reset drops a kept schema past its retention in its own transaction, with or without keep_previous.
    set_until(hub, newer, "2000-01-01T00:00:00Z")
    reset = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, keep_previous=False), check=True)
    assert [k["name"] for k in reset.result["would_purge"]] == [newer] and kept_schemas(hub.db) == [newer]
    reset = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, keep_previous=False))
    assert not reset.failed, reset.msg
    assert [k["name"] for k in reset.result["purged"]] == [newer] and "dropped kept schemas" in reset.result["summary"]
    assert kept_schemas(hub.db) == [] and kept_records(hub) == []
    assert "ringhub.environment=production" in hub.comment().splitlines()
