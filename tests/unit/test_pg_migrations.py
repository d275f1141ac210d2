"""Loading Prisma migrations and finding statements that cannot run in one transaction (no server)."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import (
    Migration,
    blank_sql,
    check_migration,
    check_migrations,
    load_migrations_dir,
    load_sql_files,
    prepare_migrations,
    split_statements,
    strip_transaction_brackets,
)


def make_dir(tmp_path, files: dict[str, bytes | str], lock: str | None = 'provider = "postgresql"\n'):
    root = tmp_path / "migrations"
    root.mkdir()
    if lock is not None:
        (root / "migration_lock.toml").write_text(lock)
    for name, body in files.items():
        (root / name).mkdir()
        path = root / name / "migration.sql"
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return root


def problems(sql: str) -> list[str]:
    return check_migration(Migration(name="m", path="m.sql", checksum="", sql=sql))


def test_loads_in_lexical_order_with_prisma_checksums(tmp_path) -> None:
    root = make_dir(tmp_path, {"20250201_b": "SELECT 2;", "20250101_a": "\ufeffSELECT 1;", "20250115_c": ""})
    (root / "README.md").write_text("not a migration")
    (root / ".hidden").mkdir()
    migrations = load_migrations_dir(str(root))
    assert [m.name for m in migrations] == ["20250101_a", "20250115_c", "20250201_b"]
    first = root / "20250101_a" / "migration.sql"
    assert migrations[0].checksum == hashlib.sha256(first.read_bytes()).hexdigest()
    assert migrations[0].sql == "SELECT 1;"  # BOM not executed, but part of the checksum


@pytest.mark.parametrize(
    "lock, files, text",
    [
        (None, {"a": "SELECT 1;"}, "migration_lock.toml is missing"),
        ('provider = "mysql"', {"a": "SELECT 1;"}, "provider 'mysql'"),
        ('provider = "postgresql"', {}, "holds no <name>/migration.sql"),
        ('provider = "postgresql"', {"a": b"SELECT '\xff';"}, "is not valid UTF-8"),
    ],
)
def test_bad_directories_are_refused(tmp_path, lock, files, text) -> None:
    root = make_dir(tmp_path, files, lock)
    with pytest.raises(RingHubError, match=text):
        load_migrations_dir(str(root))


def test_missing_dir_and_dir_without_sql(tmp_path) -> None:
    with pytest.raises(RingHubError, match="does not exist"):
        load_migrations_dir(str(tmp_path / "nope"))
    root = make_dir(tmp_path, {"a": "SELECT 1;"})
    (root / "b_empty").mkdir()
    with pytest.raises(RingHubError, match="has no migration.sql"):
        load_migrations_dir(str(root))


def test_sql_files_keep_their_order_and_names(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    a = tmp_path / "x" / "migration.sql"
    b = tmp_path / "extra.sql"
    a.write_text("SELECT 1;")
    b.write_text("SELECT 2;")
    assert [m.name for m in load_sql_files([str(b), str(a)])] == ["extra", "x"]
    with pytest.raises(RingHubError, match="share the migration name"):
        load_sql_files([str(b), str(b)])


@pytest.mark.parametrize(
    "sql, expected",
    [
        ('CREATE INDEX CONCURRENTLY "i" ON "t"("a");', "CREATE INDEX CONCURRENTLY"),
        ("create unique\n  index concurrently i on t(a);", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY i;", "DROP INDEX CONCURRENTLY"),
        ("REINDEX TABLE CONCURRENTLY t;", "REINDEX CONCURRENTLY"),
        ("VACUUM ANALYZE t;", "VACUUM"),
        ("ALTER SYSTEM SET work_mem = '1MB';", "ALTER SYSTEM"),
        ("CREATE DATABASE x;", "CREATE DATABASE"),
        ("BEGIN;\nALTER TYPE e ADD VALUE 'X';\nCOMMIT;", "transaction control statement BEGIN"),
        ("COMMIT;", "transaction control statement COMMIT"),
        ("START TRANSACTION;", "transaction control statement START"),
        ("\\connect other", "psql meta-command"),
        ("COPY t FROM STDIN;", "COPY FROM STDIN"),
    ],
)
def test_statements_that_cannot_run_in_a_transaction(sql, expected) -> None:
    found = problems(sql)
    assert found and expected in found[0] and "m.sql line 1" in found[0]


@pytest.mark.parametrize(
    "sql",
    [
        "-- CREATE INDEX CONCURRENTLY i ON t(a);\nSELECT 1;",
        "/* VACUUM; /* nested COMMIT; */ BEGIN; */ SELECT 1;",
        "SELECT 'COMMIT; VACUUM';",
        "SELECT E'it\\'s; VACUUM';",
        'CREATE TABLE "VACUUM" ("COMMIT" int);',
        "DO $$ BEGIN PERFORM 1; COMMIT; END $$;",
        "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN VACUUM; RETURN 1; END $body$ LANGUAGE plpgsql;",
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;",
        "CREATE INDEX i ON t(a); ALTER TYPE e ADD VALUE 'CONCURRENTLY';",
        "SELECT $1::text, a$b FROM t;",
    ],
)
def test_keywords_in_comments_strings_bodies_and_identifiers_are_ignored(sql) -> None:
    assert problems(sql) == []


def test_line_numbers_survive_blanking() -> None:
    sql = "-- one\n/* two\nthree */\nSELECT 'a\nb';\n\nVACUUM;\n"
    assert len(blank_sql(sql)) == len(sql) and blank_sql(sql).count("\n") == sql.count("\n")
    assert [(s.line, s.words[0]) for s in split_statements(sql)] == [(4, "SELECT"), (7, "VACUUM")]


def test_check_migrations_lists_every_problem() -> None:
    ms = [Migration("a", "a.sql", "", "VACUUM;"), Migration("b", "b.sql", "", "SELECT 1;\nCOMMIT;")]
    with pytest.raises(RingHubError) as err:
        check_migrations(ms)
    assert err.value.details["problems"] == [
        "a.sql line 1: VACUUM cannot run inside a transaction",
        "b.sql line 2: transaction control statement COMMIT (the reset applies every migration in one "
        "transaction) cannot run inside a transaction",
    ]


def test_transaction_brackets_can_be_stripped_keeping_lines_and_checksum() -> None:
    sql = "-- AlterEnum\nBEGIN;\nCREATE TYPE x AS ENUM ('a');\nCOMMIT ;\nSELECT 'BEGIN;';\nbegin transaction;\nEND;\n"
    original = Migration("m", "m.sql", "sum", sql)
    assert problems(sql)  # refused by default
    assert check_migration(original, strip_transaction_control=True) == []
    m, lines = strip_transaction_brackets(original)
    assert lines == [2, 4, 6, 7]
    assert original.sql == sql  # the given migration is left as it is
    assert m.sql.count("\n") == sql.count("\n") and m.checksum == "sum" and m.name == "m"
    assert "BEGIN;" not in m.sql.replace("'BEGIN;'", "") and "COMMIT" not in m.sql and "END" not in m.sql
    assert "CREATE TYPE x AS ENUM ('a');" in m.sql and "SELECT 'BEGIN;';" in m.sql
    # Brackets with options, and ROLLBACK, stay refused.
    assert check_migration(Migration("r", "r.sql", "", "ROLLBACK;"), strip_transaction_control=True)
    iso = Migration("i", "i.sql", "", "BEGIN ISOLATION LEVEL SERIALIZABLE;")
    assert check_migration(iso, strip_transaction_control=True)


def test_prepare_migrations_returns_new_objects_and_the_lines_per_name() -> None:
    plain = Migration("a", "a.sql", "s1", "CREATE TABLE t (id int);\n")
    bracketed = Migration("b", "b.sql", "s2", "BEGIN;\nCREATE TYPE e AS ENUM ('x');\nCOMMIT;\n")
    given = [plain, bracketed]
    prepared, stripped = prepare_migrations(given, strip_transaction_control=True)
    assert stripped == {"b": [1, 3]}
    assert [m.name for m in prepared] == ["a", "b"] and prepared is not given
    assert prepared[1] is not bracketed and bracketed.sql.startswith("BEGIN;")
    assert "BEGIN" not in prepared[1].sql and "CREATE TYPE e" in prepared[1].sql
    assert prepared[0].sql == plain.sql
    unchanged, none = prepare_migrations(given)
    assert none == {} and unchanged == given and unchanged is not given
