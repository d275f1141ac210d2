"""Pure parts of the schema reset: options, tool versions, backup directory probe (no server)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, PhaseTimer, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import (
    check_backup_dir,
    find_tools,
    tool_version,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import (
    ResetOptions,
    SchemaReset,
    argument_spec,
    reset_schema,
    summary_line,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import line_of


def fake_tool(tmp_path, name: str, version_line: str):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)
    return path


def reset_for(**opts) -> SchemaReset:
    return SchemaReset(ConnSpec(dbname="db"), ResetOptions(**opts), [], PhaseTimer())


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
    with pytest.raises(NothingChanged, match=text):
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
    with pytest.raises(NothingChanged, match="1-63"):
        reset_for(schema="public", backup=False, expected_environment="a" * 64).validate_options()


def test_line_of_statement_position() -> None:
    sql = "SELECT 1;\n\nSELECT x;"
    assert line_of(sql, "12") == 3 and line_of(sql, "1") == 1 and line_of(sql, None) is None


def test_tool_version_and_version_policy(tmp_path) -> None:
    new = fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)")
    assert tool_version(str(new)) == ("16.4", 16)
    fake_tool(tmp_path, "pg_restore", "pg_restore (PostgreSQL) 16.4")
    tools = find_tools(str(tmp_path), None, 150008, "15.8")
    assert tools.pg_dump == str(new) and tools.pg_restore == str(tmp_path / "pg_restore")
    with pytest.raises(RingHubError, match="older than the server"):
        find_tools(str(new), None, 170000, "17.0")
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


def module_params(tmp_path, **overrides) -> dict:
    """pg_schema_reset's parameters as Ansible hands them over (every option, defaults filled in)."""
    params = {name: option.get("default") for name, option in argument_spec().items()}
    migrations = tmp_path / "migrations"
    (migrations / "20250101000000_init").mkdir(parents=True)
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (migrations / "20250101000000_init" / "migration.sql").write_text('CREATE TABLE "Ring" (id text);\n')
    params.update(database_url="postgresql://hub:pw@127.0.0.1:1/hub", migrations_dir=str(migrations), backup=False)
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    "overrides, text",
    [
        ({"database_url": "mysql://hub:pw@h/db"}, "must start with postgresql://"),
        ({"schema": "pg_catalog"}, "system schema"),
        ({"lock_timeout": "soon"}, "lock_timeout"),
        ({"root_ring": {"owner_did": "nope"}}, "root_ring: owner_did 'nope' is not a DID"),
        ({"migrations_dir": "/nonexistent/migrations"}, "does not exist"),
        ({"strip_transaction_control": False, "sql_files": None}, "cannot run in the one reset transaction"),
        ({}, "cannot connect to PostgreSQL"),  # port 1: nothing listens
    ],
)
def test_every_failure_before_the_transaction_says_nothing_was_changed(tmp_path, overrides, text) -> None:
    params = module_params(tmp_path, **overrides)
    if text == "cannot run in the one reset transaction":
        sql = tmp_path / "migrations" / "20250101000000_init" / "migration.sql"
        sql.write_text("VACUUM;\n")
    if isinstance(params.get("root_ring"), dict):
        ring = {name: option.get("default") for name, option in argument_spec()["root_ring"]["options"].items()}
        params["root_ring"] = dict(ring, **params["root_ring"])
    progress = tmp_path / "progress.json"
    params["progress_file"] = str(progress)
    with pytest.raises(NothingChanged, match=text) as err:
        reset_schema(params, check_mode=False)
    message = err.value.operator_message
    assert message.endswith("; nothing was changed") and "pw@" not in message
    assert err.value.details["seconds"] is not None
    report = json.loads(progress.read_text())
    assert report["phase"] == "failed" and report["error"] == message
