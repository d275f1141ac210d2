"""The directory-format backup: pg_schema_reset ``backup_format: directory`` / ``backup_jobs`` and its restore.

Real PostgreSQL and the hub's real migrations (``reference_migrations``) in a database owned by a
non-superuser role, as Ansible runs the modules. "Every row back" is checked table by table (row
count and a digest of every row).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from way_back import digests, hub_databases, reset_args

from harness.ansible import run_module


@pytest.fixture
def hub_db_factory(pg_server: Any) -> Any:
    yield from hub_databases(pg_server)


def manifest_sha256(directory: Path) -> str:
    """What ``cd DIR && LC_ALL=C sha256sum $(LC_ALL=C ls) | sha256sum`` prints, computed independently."""
    names = sorted(os.listdir(directory), key=os.fsencode)
    lines = "".join(f"{hashlib.sha256((directory / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def test_a_parallel_directory_backup_is_verified_private_and_restores_every_row(
    hub_db_factory, reference_migrations, tmp_path
) -> None:
    hub = hub_db_factory(reference_migrations)
    before = digests(hub.db)
    backups = tmp_path / "backups"
    backups.mkdir()
    res = run_module(
        "pg_schema_reset", reset_args(hub, reference_migrations, backups, backup_format="directory", backup_jobs=2)
    )
    assert not res.failed, res.msg
    backup = res.result["backup"]
    path = Path(backup["path"])
    assert path.is_dir() and path.name.endswith(".dir") and path.parent == backups
    assert backup["format"] == "directory" and backup["jobs"] == 2
    # Private: the directory 0700, every file in it 0600.
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    files = sorted(path.iterdir())
    assert (path / "toc.dat") in files and backup["files"] == len(files) > 1
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    # The recorded sha256 is the manifest's, as an operator recomputes it with sha256sum.
    assert backup["sha256"] == manifest_sha256(path)
    shell = subprocess.run(
        ["bash", "-c", 'cd "$1" && LC_ALL=C sha256sum $(LC_ALL=C ls) | sha256sum', "_", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shell.stdout.split()[0] == backup["sha256"]
    assert backup["size"] == sum(f.stat().st_size for f in files)
    # pg_restore reads it: every table of the schema has its data in it.
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True)
    assert listing.stdout.count(" TABLE DATA public ") == len(before)
    assert backup["toc_entries"] > len(before)
    assert digests(hub.db)["Ring"][0] == 0 < before["Ring"][0]  # the reset ran

    restored = run_module(
        "pg_restore_backup",
        {"database_url": hub.url, "path": str(path), "sha256": backup["sha256"], "expected_environment": "production"},
    )
    assert not restored.failed, restored.msg
    assert restored.result["backup"]["format"] == "directory"
    assert restored.result["backup"]["sha256"] == backup["sha256"]
    assert digests(hub.db) == before
    for run in (res, restored):
        assert hub.password not in run.output


def test_the_default_is_still_one_custom_format_file(hub_db_factory, fixture_migrations, tmp_path) -> None:
    hub = hub_db_factory(fixture_migrations)
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, tmp_path))
    assert not res.failed, res.msg
    path = Path(res.result["backup"]["path"])
    assert path.is_file() and path.suffix == ".dump" and res.result["backup"]["format"] == "custom"
    assert res.result["backup"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"backup_jobs": 4}, "more than 1 only with backup_format directory"),
        ({"backup_format": "directory", "backup_jobs": 0}, "backup_jobs 0 must be 1 to 64"),
        ({"backup_format": "tar"}, "backup_format"),
    ],
)
def test_bad_backup_options_are_refused_before_anything(
    hub_db_factory, fixture_migrations, tmp_path, extra, words
) -> None:
    hub = hub_db_factory(fixture_migrations)
    state = digests(hub.db)
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, tmp_path, **extra))
    assert res.failed and words in res.msg
    assert digests(hub.db) == state
    assert list(tmp_path.iterdir()) == []


def test_a_changed_file_in_a_directory_backup_is_refused(hub_db_factory, fixture_migrations, tmp_path) -> None:
    hub = hub_db_factory(fixture_migrations)
    res = run_module("pg_schema_reset", reset_args(hub, fixture_migrations, tmp_path, backup_format="directory"))
    assert not res.failed, res.msg
    backup = res.result["backup"]
    path = Path(backup["path"])
    data_file = next(f for f in sorted(path.iterdir()) if f.name != "toc.dat")
    data_file.write_bytes(data_file.read_bytes() + b"\0")
    state = digests(hub.db)
    restored = run_module(
        "pg_restore_backup",
        {"database_url": hub.url, "path": str(path), "sha256": backup["sha256"], "expected_environment": "production"},
    )
    assert restored.failed and restored.result["nothing_changed"] is True
    assert f"not {backup['sha256']}" in restored.msg and "it is not restored" in restored.msg
    assert digests(hub.db) == state
