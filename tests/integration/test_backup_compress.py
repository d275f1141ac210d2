"""pg_schema_reset ``backup_compress``: the backup's compression, read back from the archive, and its restore.

Real PostgreSQL, the harness's pg_dump and pg_restore, and a database owned by a non-superuser role with
realistic rows, as Ansible runs the modules. The compression is asserted from the archive itself (the
``; Compression:`` line of ``pg_restore --list``, the ``.dat.gz`` files of a directory backup, and whether
row values can be read in the raw bytes), and "every row back" table by table (row count and a digest
of every row).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from way_back import digests, hub_databases, reset_args

from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import tool_version
from harness.ansible import run_module


@pytest.fixture
def hub_db_factory(pg_server: Any) -> Any:
    yield from hub_databases(pg_server)


@pytest.fixture(scope="module")
def pg_dump_version() -> tuple[str, int]:
    return tool_version("pg_dump")


def archive_compression(path: Path) -> str:
    """What the archive's header says (``pg_restore --list``: ``;     Compression: 1``)."""
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True)
    found = re.findall(r"^;\s+Compression: (\S+)$", listing.stdout, re.M)
    assert len(found) == 1, listing.stdout[:800]
    return found[0]


def header_for(level: int, pg_dump_major: int) -> str:
    """pg_dump up to 15 records the zlib level (-1 for its default); 16 and later the method name."""
    if pg_dump_major < 16:
        return str(level)
    return "gzip" if level else "none"


def row_values(hub: Any) -> list[str]:
    """Values that only the table data holds (random digests of the seeded PostRef rows)."""
    values = [r[0] for r in hub.db.query('SELECT "digest" FROM public."PostRef" ORDER BY 1')]
    assert len(values) >= 4 and all(v.startswith("sha256-") and len(v) == 39 for v in values)
    return values


def archive_bytes(path: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(path.iterdir())) if path.is_dir() else path.read_bytes()


def restore(hub: Any, backup: dict[str, Any]) -> Any:
    args = {"database_url": hub.url, "path": backup["path"], "sha256": backup["sha256"]}
    res = run_module("pg_restore_backup", args | {"expected_environment": "production"})
    assert not res.failed, res.msg
    return res


def test_the_default_backup_is_zlib_level_1_and_restores_every_row(
    hub_db_factory, reference_migrations, tmp_path, pg_dump_version
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    values = row_values(hub)
    res = run_module("pg_schema_reset", reset_args(hub, reference_migrations, tmp_path))
    assert not res.failed, res.msg
    backup = res.result["backup"]
    path = Path(backup["path"])
    assert backup["compress"] == "1" and backup["format"] == "custom" and path.is_file()
    assert archive_compression(path) == header_for(1, pg_dump_version[1])
    raw = path.read_bytes()
    assert not any(v.encode() in raw for v in values)  # the table data is compressed
    assert f"({backup['size']} bytes, compression 1, sha256 {backup['sha256']})" in res.result["summary"]
    assert digests(hub.db)["PostRef"][0] == 0 < before["PostRef"][0]  # the reset ran

    restored = restore(hub, backup)
    assert restored.result["backup"]["sha256"] == backup["sha256"]
    assert digests(hub.db) == before
    for run in (res, restored):
        assert hub.password not in run.output


def test_backup_compress_0_writes_an_uncompressed_archive_that_restores_every_row(
    hub_db_factory, reference_migrations, tmp_path, pg_dump_version
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    values = row_values(hub)
    # An unquoted 0 in YAML is an integer: the option takes it as "0".
    res = run_module("pg_schema_reset", reset_args(hub, reference_migrations, tmp_path, backup_compress=0))
    assert not res.failed, res.msg
    backup = res.result["backup"]
    path = Path(backup["path"])
    assert backup["compress"] == "0" and path.is_file()
    assert archive_compression(path) == header_for(0, pg_dump_version[1])
    raw = path.read_bytes()
    assert all(v.encode() in raw for v in values)  # every row is there as plain text
    assert "compression 0," in res.result["summary"]
    assert not [w for w in res.result.get("warnings", []) if "backup_compress" in w or "converted" in w]

    restore(hub, backup)
    assert digests(hub.db) == before


@pytest.mark.parametrize(("given", "level"), [(None, 1), ("0", 0), ("9", 9)])
def test_a_directory_backup_honours_backup_compress_and_restores_every_row(
    hub_db_factory, reference_migrations, tmp_path, pg_dump_version, given, level
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    values = row_values(hub)
    extra: dict[str, Any] = {"backup_format": "directory", "backup_jobs": 2}
    if given is not None:
        extra["backup_compress"] = given
    res = run_module("pg_schema_reset", reset_args(hub, reference_migrations, tmp_path, **extra))
    assert not res.failed, res.msg
    backup = res.result["backup"]
    path = Path(backup["path"])
    assert backup["compress"] == str(level) and backup["format"] == "directory" and path.is_dir()
    assert archive_compression(path) == header_for(level, pg_dump_version[1])
    data_files = sorted(f.name for f in path.iterdir() if f.name != "toc.dat")
    assert data_files and all(re.fullmatch(r"\d+\.dat" + (r"\.gz" if level else ""), n) for n in data_files)
    found = [v.encode() in archive_bytes(path) for v in values]
    assert all(found) if level == 0 else not any(found)

    restore(hub, backup)
    assert digests(hub.db) == before


@pytest.mark.parametrize("check", [True, False], ids=["check_mode", "real_run"])
@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("10", "is not a compression level 0-9"),
        ("fast", "names no compression method pg_dump knows"),
        ("gzip:", "has no gzip level 1-9 after the colon"),
        ("lz4", "is a compression method, which pg_dump accepts from version 16 on"),
    ],
)
def test_a_bad_backup_compress_is_refused_and_nothing_is_touched(
    hub_db_factory, fixture_migrations, tmp_path, pg_dump_version, check, given, words
) -> None:
    version, major = pg_dump_version
    if given == "lz4" and major >= 16:
        pytest.skip(f"pg_dump {version} accepts lz4")
    hub = hub_db_factory(fixture_migrations)
    state = digests(hub.db)
    assert state["Ring"][0] > 0
    res = run_module(
        "pg_schema_reset", reset_args(hub, fixture_migrations, tmp_path, backup_compress=given), check=check
    )
    assert res.failed
    assert res.result["nothing_changed"] is True and res.result["option"] == "backup_compress"
    assert res.msg.startswith(f"backup_compress {given!r} {words}")
    assert res.msg.endswith("; nothing was changed")
    if given == "lz4":
        assert f"is version {version}, which accepts only an integer 0-9" in res.msg
        assert res.result["pg_dump_version"] == version
    else:
        assert "give an integer 0-9" in res.msg and "gzip:1-9, lz4:1-12, zstd:1-22 (pg_dump 16 or later)" in res.msg
    assert digests(hub.db) == state  # every row of every table as it was
    assert list(tmp_path.iterdir()) == []  # no backup file was started
    assert hub.password not in res.output


def test_check_mode_reports_the_compression_it_would_use(hub_db_factory, fixture_migrations, tmp_path) -> None:
    hub = hub_db_factory(fixture_migrations)
    state = digests(hub.db)
    res = run_module(
        "pg_schema_reset", reset_args(hub, fixture_migrations, tmp_path, backup_compress=" 6 "), check=True
    )
    assert not res.failed, res.msg
    assert res.result["backup"]["skipped"] is True and res.result["backup"]["compress"] == "6"
    assert digests(hub.db) == state and list(tmp_path.iterdir()) == []
