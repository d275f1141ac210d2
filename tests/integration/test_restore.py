"""Restore from the verified backup: pg_restore_backup and pg_schema_reset's restore drill, as Ansible runs them.

Real PostgreSQL and the hub's real migrations (``reference_migrations``), in a database
owned by a non-superuser role as the hub's is. "Every row back" is checked table by
table: the row count and a digest of every row (all columns).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from way_back import digests, hub_databases

from harness.ansible import run_module
from harness.pg import PgDatabase

LSN_RE = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")


@pytest.fixture
def hub_db_factory(pg_server: Any) -> Any:
    yield from hub_databases(pg_server)


def reset(hub: Any, migrations: Path, backup_dir: Path, **extra: Any) -> dict[str, Any]:
    args = {
        "database_url": hub.url,
        "migrations_dir": str(migrations),
        "backup_dir": str(backup_dir),
        "expected_environment": "production",
    }
    res = run_module("pg_schema_reset", args | extra)
    assert not res.failed, res.msg
    return res.result


def restore_args(hub: Any, path: str, **extra: Any) -> dict[str, Any]:
    return {"database_url": hub.url, "path": path, "expected_environment": "production"} | extra


def audit_line(audit: Path, path: str, sha256: str, environment: str = "production") -> None:
    """An audit line as the reset playbook's report writes it (only the fields the restore reads matter)."""
    record = {
        "time": "2026-11-28T17:30:05.000Z",
        "event": "reset",
        "status": "succeeded",
        "details": {
            "run_id": "20261128T173000Z-abc123",
            "environment": environment,
            "backup": {"path": path, "sha256": sha256},
        },
    }
    with audit.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def test_a_reset_then_a_restore_brings_back_every_row(hub_db_factory, reference_migrations, tmp_path) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    assert before["Ring"][0] == 4 and before["_prisma_migrations"][0] == 8
    backup = reset(hub, reference_migrations, tmp_path)["backup"]
    after_reset = digests(hub.db)
    assert after_reset != before and after_reset["Ring"][0] == 0

    check = run_module("pg_restore_backup", restore_args(hub, backup["path"], sha256=backup["sha256"]), check=True)
    assert not check.failed, check.msg
    assert check.result["would_replace"]["total_rows"] == sum(n for n, _d in after_reset.values())
    assert sorted(check.result["backup"]["tables"]) == sorted(before)
    assert digests(hub.db) == after_reset

    res = run_module("pg_restore_backup", restore_args(hub, backup["path"], sha256=backup["sha256"]))
    assert not res.failed, res.msg
    assert res.changed
    # Every row of every table, the Prisma history included, as it was before the reset.
    assert digests(hub.db) == before
    assert {t["name"]: t["rows"] for t in res.result["restored"]["tables"]} == {t: n for t, (n, _d) in before.items()}
    assert res.result["backup"]["sha256"] == hashlib.sha256(Path(backup["path"]).read_bytes()).hexdigest()
    assert res.result["backup"]["sha256_source"] == "the sha256 option"
    assert "--clean --if-exists" in res.result["command"] and "--single-transaction" in res.result["command"]
    assert LSN_RE.match(res.result["commit_lsn"])
    # The hub's role owns the restored tables, as before.
    owners = hub.db.query("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == [(hub.role,)]
    assert "ringhub.environment=production" in hub.comment().splitlines()
    for run in (check, res):
        assert hub.password not in run.output


@pytest.mark.parametrize("proof", ["sha256", "audit_log"])
def test_a_tampered_backup_is_refused_before_anything_changes(
    hub_db_factory, fixture_migrations, tmp_path, proof
) -> None:
    hub = hub_db_factory(fixture_migrations)
    backup = reset(hub, fixture_migrations, tmp_path)["backup"]
    audit = tmp_path / "audit.jsonl"
    audit_line(audit, backup["path"], backup["sha256"])
    # One byte in the middle of the file changes; its size does not.
    path = Path(backup["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    state = digests(hub.db)
    args = restore_args(
        hub, str(path), **({"sha256": backup["sha256"]} if proof == "sha256" else {"audit_log": str(audit)})
    )
    res = run_module("pg_restore_backup", args)
    assert res.failed and res.result["nothing_changed"] is True
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert f"has sha256 {actual}, not {backup['sha256']}" in res.msg and "it is not restored" in res.msg
    assert res.result["expected_sha256"] == backup["sha256"]
    assert digests(hub.db) == state
    # Refused before a session was opened on the database.
    assert "connect" not in res.result["seconds"]


def test_the_audit_line_gives_the_sha256_and_another_environment_is_refused(
    hub_db_factory, fixture_migrations, tmp_path
) -> None:
    hub = hub_db_factory(fixture_migrations)
    before = digests(hub.db)
    backup = reset(hub, fixture_migrations, tmp_path)["backup"]
    after_reset = digests(hub.db)
    audit = tmp_path / "audit.jsonl"
    unknown = run_module("pg_restore_backup", restore_args(hub, backup["path"], audit_log=str(audit)))
    assert unknown.failed and "cannot be read" in unknown.msg and digests(hub.db) == after_reset
    audit_line(audit, backup["path"], backup["sha256"], environment="staging")
    other = run_module("pg_restore_backup", restore_args(hub, backup["path"], audit_log=str(audit)))
    assert other.failed and other.result["nothing_changed"] is True
    assert "names environment 'staging', not 'production'" in other.msg and digests(hub.db) == after_reset
    audit.write_text("")
    audit_line(audit, backup["path"], backup["sha256"])
    res = run_module("pg_restore_backup", restore_args(hub, backup["path"], audit_log=str(audit)))
    assert not res.failed, res.msg
    assert res.result["backup"]["audit"]["run_id"] == "20261128T173000Z-abc123"
    assert digests(hub.db) == before


def test_a_restore_into_a_new_database_leaves_the_live_one_alone(hub_db_factory, fixture_migrations, tmp_path) -> None:
    hub = hub_db_factory(fixture_migrations, createdb=True)
    before = digests(hub.db)
    backup = reset(hub, fixture_migrations, tmp_path)["backup"]
    after_reset = digests(hub.db)
    target = hub.name + "_copy"
    res = run_module(
        "pg_restore_backup", restore_args(hub, backup["path"], sha256=backup["sha256"], target_database=target)
    )
    assert not res.failed, res.msg
    assert digests(PgDatabase(hub.db.server, target)) == before
    assert digests(hub.db) == after_reset
    assert res.result["new_database"] is True and f"into new database {target}" in res.result["summary"]
    again = run_module(
        "pg_restore_backup", restore_args(hub, backup["path"], sha256=backup["sha256"], target_database=target)
    )
    assert again.failed and again.result["nothing_changed"] is True and "exists already" in again.msg


# -- the restore drill of the reset --------------------------------------------------------------------------------


def test_the_restore_drill_restores_the_backup_before_the_drop_and_reports_its_cost(
    hub_db_factory, reference_migrations, tmp_path
) -> None:
    hub = hub_db_factory(reference_migrations, createdb=True)
    before = digests(hub.db)
    result = reset(hub, reference_migrations, tmp_path, restore_drill=True)
    drill = result["backup"]["restore_drill"]
    assert drill["differences"] == {}
    assert {t["name"]: (t["backup_rows"], t["restored_rows"]) for t in drill["tables"]} == {
        t: (n, n) for t, (n, _d) in before.items()
    }
    assert drill["seconds"] > 0 and result["seconds"]["restore_drill"] == drill["seconds"]
    assert "restore drill passed (13 tables" in result["summary"]
    # The scratch database is gone again.
    assert hub.db.query("SELECT datname FROM pg_database WHERE datname = %s", (drill["database"],)) == []


def test_the_restore_drill_needs_createdb_and_says_so_before_anything(
    hub_db_factory, fixture_migrations, tmp_path
) -> None:
    hub = hub_db_factory(fixture_migrations, createdb=False)
    state = digests(hub.db)
    res = run_module(
        "pg_schema_reset",
        {"database_url": hub.url, "migrations_dir": str(fixture_migrations), "backup_dir": str(tmp_path),
         "expected_environment": "production", "restore_drill": True},
    )  # fmt: skip
    assert res.failed and res.result["nothing_changed"] is True
    assert "restore_drill restores the backup into a scratch database" in res.msg and "CREATEDB" in res.msg
    assert digests(hub.db) == state and os.listdir(tmp_path) == []
    off = run_module(
        "pg_schema_reset",
        {"database_url": hub.url, "migrations_dir": str(fixture_migrations), "backup": False,
         "expected_environment": "production", "restore_drill": True},
    )  # fmt: skip
    assert off.failed and "restore_drill restores the backup: it needs backup: true" in off.msg
    assert digests(hub.db) == state
