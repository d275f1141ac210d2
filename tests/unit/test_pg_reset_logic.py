"""Pure parts of the schema reset: options, tool versions, backup directory probe (no server)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import PhaseTimer, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import (
    LOCK_CLASSID,
    LOCK_OBJID,
    PRISMA_MIGRATIONS_DDL,
    RESET_LOCK_KEY,
    ResetOptions,
    SchemaReset,
    _line_of,
    check_backup_dir,
    find_tools,
    summary_line,
    tool_version,
)


def fake_tool(tmp_path, name: str, version_line: str):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)
    return path


def reset_for(**opts) -> SchemaReset:
    return SchemaReset(ConnSpec(dbname="db"), ResetOptions(**opts), [], PhaseTimer())


def test_lock_key_is_documented_and_splits_like_pg_locks() -> None:
    assert RESET_LOCK_KEY == int.from_bytes(b"RingHub!", "big")
    assert (LOCK_CLASSID << 32) | LOCK_OBJID == RESET_LOCK_KEY
    assert (LOCK_CLASSID, LOCK_OBJID) == (1382641255, 1215652385)  # as written in docs/pg_schema_reset.md


def test_prisma_migrations_ddl_is_prismas() -> None:
    columns = [line.split()[0] for line in PRISMA_MIGRATIONS_DDL.splitlines()[1:-1]]
    assert columns == ['"id"', '"checksum"', '"finished_at"', '"migration_name"', '"logs"', '"rolled_back_at"',
                       '"started_at"', '"applied_steps_count"']  # fmt: skip
    assert '"id"                    VARCHAR(36) PRIMARY KEY NOT NULL' in PRISMA_MIGRATIONS_DDL


@pytest.mark.parametrize(
    "opts, text",
    [
        ({"schema": "pg_catalog", "backup": False}, "system schema"),
        ({"schema": "information_schema", "backup": False}, "system schema"),
        ({"schema": "public", "backup": False, "expected_environment": "prod; DROP"}, "expected_environment"),
        ({"schema": "public", "backup": False, "lock_timeout": "soon"}, "lock_timeout"),
        ({"schema": "public", "backup": True}, "backup_dir is required"),
    ],
)
def test_invalid_options_are_refused(opts, text) -> None:
    with pytest.raises(RingHubError, match=text):
        reset_for(**opts).validate_options()


@pytest.mark.parametrize(
    "opts",
    [
        {"schema": "hub", "backup": False, "expected_environment": "production", "lock_timeout": "500ms"},
        {"schema": "public", "backup": False, "expected_environment": "a" * 63, "lock_timeout": " 1min "},
        {"schema": "public", "backup": True, "backup_dir": "/var/backups/ringhub", "lock_timeout": "10s"},
    ],
)
def test_valid_options_pass(opts) -> None:
    reset = reset_for(**opts)
    assert reset.validate_options() is None
    assert reset.opts.schema == opts["schema"]


def test_environment_name_length_limit() -> None:
    with pytest.raises(RingHubError, match="1-63"):
        reset_for(schema="public", backup=False, expected_environment="a" * 64).validate_options()


def test_line_of_statement_position() -> None:
    sql = "SELECT 1;\n\nSELECT x;"
    assert _line_of(sql, "12") == 3 and _line_of(sql, "1") == 1 and _line_of(sql, None) is None


def test_tool_version_and_version_policy(tmp_path) -> None:
    new = fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)")
    assert tool_version(str(new)) == ("16.4", 16)
    fake_tool(tmp_path, "pg_restore", "pg_restore (PostgreSQL) 16.4")
    tools = find_tools(ResetOptions(schema="public", pg_dump_path=str(tmp_path)), 150008, "15.8")
    assert tools.pg_dump == str(new) and tools.pg_restore == str(tmp_path / "pg_restore")
    with pytest.raises(RingHubError, match="older than the server"):
        find_tools(ResetOptions(schema="public", pg_dump_path=str(new)), 170000, "17.0")
    junk = fake_tool(tmp_path, "junk", "hello")
    with pytest.raises(RingHubError, match="gave no PostgreSQL version"):
        tool_version(str(junk))


def test_backup_dir_probe(tmp_path) -> None:
    info = check_backup_dir(str(tmp_path))
    assert info["path"] == str(tmp_path) and info["free_bytes"] > 0
    assert os.listdir(tmp_path) == []  # the probe file is gone
    with pytest.raises(RingHubError, match="does not exist"):
        check_backup_dir(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(RingHubError, match="is not a directory"):
        check_backup_dir(str(tmp_path / "f"))


def test_summary_line_for_the_audit_record() -> None:
    result = {
        "schema": "public",
        "database": "ringhub",
        "dropped": {"tables": [{"name": "Ring", "rows": 2}], "total_rows": 2},
        "migrations": [{"name": "a"}, {"name": "b"}],
        "backup": {"path": "/b/x.dump", "size": 10, "sha256": "ab"},
        "environment": {"value": "production", "marked": True},
        "seconds": {"total": 1.5},
    }
    assert summary_line(result, False) == (
        "schema public of database ringhub: dropped 1 tables (2 rows), applied 2 migrations, "
        "backup /b/x.dump (10 bytes, sha256 ab), environment production (marked now), 1.5 s"
    )
    result.update(backup={"skipped": True, "reason": "check mode"}, environment={"value": None})
    assert summary_line(result, True) == (
        "schema public of database ringhub: would drop 1 tables (2 rows), would apply 2 migrations, "
        "no backup (check mode), environment unmarked, 1.5 s"
    )
    result.update(environment={"value": "production", "would_mark": True, "marked": False})
    assert summary_line(result, True).endswith("environment production (would be marked), 1.5 s")
