"""pg_schema_reset's ``backup_compress``: the value parser, the pg_dump version rule, the command line (no server).

The command line is checked with stand-in ``pg_dump``/``pg_restore`` scripts that report version 16 (the
method syntax needs it and the machine has pg_dump 15) and record the arguments they were given.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, PhaseTimer, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import (
    Compression,
    Tools,
    check_compress_supported,
    make_backup,
    parse_compress,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import (
    ResetOptions,
    SchemaReset,
    argument_spec,
    summary_line,
)


@pytest.mark.parametrize(
    ("given", "value", "method", "level", "min_pg_dump"),
    [
        ("0", "0", "none", 0, 0),
        ("1", "1", "gzip", 1, 0),
        ("9", "9", "gzip", 9, 0),
        (" 5 ", "5", "gzip", 5, 0),
        (6, "6", "gzip", 6, 0),
        ("gzip", "gzip", "gzip", None, 16),
        ("GZIP:9", "gzip:9", "gzip", 9, 16),
        ("gzip:1", "gzip:1", "gzip", 1, 16),
        ("lz4", "lz4", "lz4", None, 16),
        ("lz4:1", "lz4:1", "lz4", 1, 16),
        ("lz4:12", "lz4:12", "lz4", 12, 16),
        ("zstd", "zstd", "zstd", None, 16),
        ("zstd:1", "zstd:1", "zstd", 1, 16),
        ("zstd:22", "zstd:22", "zstd", 22, 16),
    ],
)
def test_accepted_values(given, value, method, level, min_pg_dump) -> None:
    assert parse_compress(given) == Compression(value=value, method=method, level=level, min_pg_dump=min_pg_dump)


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("10", "is not a compression level 0-9"),
        ("99", "is not a compression level 0-9"),
        ("-1", "is not a pg_dump compression"),
        ("1.5", "is not a pg_dump compression"),
        ("", "is not a pg_dump compression"),
        ("   ", "is not a pg_dump compression"),
        (None, "is not a pg_dump compression"),
        ("fast", "names no compression method pg_dump knows"),
        ("none", "names no compression method pg_dump knows"),
        ("bzip2:9", "names no compression method pg_dump knows"),
        ("gzip:", "has no gzip level 1-9 after the colon"),
        ("gzip:0", "has no gzip level 1-9 after the colon"),
        ("gzip:10", "has no gzip level 1-9 after the colon"),
        ("gzip:level=3", "has no gzip level 1-9 after the colon"),
        ("gzip:1:2", "has no gzip level 1-9 after the colon"),
        ("lz4:13", "has no lz4 level 1-12 after the colon"),
        ("zstd:0", "has no zstd level 1-22 after the colon"),
        ("zstd:23", "has no zstd level 1-22 after the colon"),
        ("zstd:-1", "has no zstd level 1-22 after the colon"),
        ("gzip 9", "is not a pg_dump compression"),
    ],
)
def test_refused_values_name_the_option_the_value_and_what_is_accepted(given, why) -> None:
    with pytest.raises(RingHubError) as caught:
        parse_compress(given)
    msg = caught.value.msg
    assert msg.startswith(f"backup_compress {given!r} {why}: give ")
    assert "an integer 0-9" in msg and "gzip:1-9, lz4:1-12, zstd:1-22 (pg_dump 16 or later)" in msg
    assert caught.value.details["option"] == "backup_compress"


def tools(major: int, version: str | None = None) -> Tools:
    return Tools("/opt/pg/bin/pg_dump", "/opt/pg/bin/pg_restore", version or f"{major}.4", major)


@pytest.mark.parametrize("value", ["gzip", "gzip:5", "lz4", "lz4:3", "zstd", "zstd:19"])
def test_a_method_needs_pg_dump_16(value) -> None:
    with pytest.raises(RingHubError) as caught:
        check_compress_supported(parse_compress(value), tools(15, "15.18"))
    msg = caught.value.msg
    assert f"backup_compress {value!r} is a compression method" in msg
    assert "/opt/pg/bin/pg_dump is version 15.18" in msg and "from version 16 on" in msg
    assert "only an integer 0-9" in msg and "pg_dump_path" in msg
    assert caught.value.details == {
        "option": "backup_compress",
        "pg_dump": "/opt/pg/bin/pg_dump",
        "pg_dump_version": "15.18",
    }
    for major in (16, 17, 18):
        assert check_compress_supported(parse_compress(value), tools(major)) is None


@pytest.mark.parametrize("value", [str(n) for n in range(10)])
def test_an_integer_level_works_with_every_pg_dump(value) -> None:
    for major in (12, 15, 16, 17):
        assert check_compress_supported(parse_compress(value), tools(major)) is None


def test_the_option_defaults_to_level_1() -> None:
    spec = argument_spec()["backup_compress"]
    assert spec == {"type": "str", "default": "1"}
    assert ResetOptions(schema="public").backup_compress == "1"


@pytest.mark.parametrize("value", ["10", "fast", "gzip:", "zstd:99"])
def test_validate_options_refuses_a_bad_value_before_anything(value) -> None:
    reset = SchemaReset(
        ConnSpec(dbname="db"), ResetOptions(schema="public", backup=False, backup_compress=value), [], PhaseTimer()
    )
    with pytest.raises(NothingChanged) as caught:
        reset.validate_options()
    assert caught.value.details["option"] == "backup_compress"
    assert caught.value.operator_message.startswith(f"backup_compress {value!r} ")
    assert caught.value.operator_message.endswith("; nothing was changed")
    assert reset.conn is None  # refused before any connection


def test_summary_line_names_the_compression() -> None:
    result = {
        "schema": "public",
        "database": "ringhub",
        "dropped": {"tables": [{"name": "Ring", "rows": 2}], "total_rows": 2},
        "migrations": [{"name": "a"}],
        "backup": {"path": "/b/x.dump", "size": 10, "sha256": "ab", "compress": "zstd:3"},
        "environment": {"value": "production"},
        "seconds": {"total": 1.5},
    }
    assert "backup /b/x.dump (10 bytes, compression zstd:3, sha256 ab)," in summary_line(result, False)


# -- the pg_dump command line, with stand-in client tools ---------------------------------------------


def stand_in_tools(tmp_path: Path, major: int) -> tuple[Tools, Path]:
    """A pg_dump that records its arguments (one a line) and writes a tiny archive; a pg_restore that lists one
    table's data."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv = tmp_path / "pg_dump.argv"
    pg_dump = bin_dir / "pg_dump"
    pg_dump.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{argv}'\n"
        "while [ $# -gt 0 ]; do\n"
        '  case "$1" in --file) shift; out="$1";; --format=directory) dir=1;; esac; shift\n'
        "done\n"
        'if [ -n "$dir" ]; then echo toc > "$out/toc.dat"; else echo archive > "$out"; fi\n'
    )
    pg_restore = bin_dir / "pg_restore"
    pg_restore.write_text("#!/bin/sh\necho '3338; 0 16390 TABLE DATA public Ring hub'\n")
    for tool in (pg_dump, pg_restore):
        tool.chmod(0o755)
    return Tools(str(pg_dump), str(pg_restore), f"{major}.4", major), argv


@pytest.mark.parametrize(
    ("fmt", "given", "passed"),
    [
        ("custom", None, "--compress=1"),
        ("directory", None, "--compress=1"),
        ("custom", "0", "--compress=0"),
        ("custom", "zstd:3", "--compress=zstd:3"),
        ("directory", " LZ4 ", "--compress=lz4"),
        ("directory", "gzip:9", "--compress=gzip:9"),
    ],
)
def test_pg_dump_gets_the_compression_in_either_format(tmp_path, fmt, given, passed) -> None:
    tools_16, argv = stand_in_tools(tmp_path, 16)
    backups = tmp_path / "backups"
    backups.mkdir()
    kwargs = {} if given is None else {"compress": given}
    info = make_backup(ConnSpec(dbname="hub"), tools_16, str(backups), "public", ["Ring"], fmt=fmt, **kwargs)
    args = argv.read_text().splitlines()
    assert args.count(passed) == 1 and sum(a.startswith("--compress") for a in args) == 1
    assert args[0] == f"--format={fmt}"
    assert info["compress"] == passed.split("=", 1)[1] and info["format"] == fmt
    assert os.path.exists(info["path"])


def test_a_method_with_pg_dump_15_is_refused_before_pg_dump_runs(tmp_path) -> None:
    tools_15, argv = stand_in_tools(tmp_path, 15)
    backups = tmp_path / "backups"
    backups.mkdir()
    with pytest.raises(RingHubError, match=r"backup_compress 'lz4' is a compression method.* version 15\.4"):
        make_backup(ConnSpec(dbname="hub"), tools_15, str(backups), "public", ["Ring"], compress="lz4")
    assert not argv.exists() and list(backups.iterdir()) == []
    with pytest.raises(RingHubError, match=r"backup_compress '10' is not a compression level 0-9"):
        make_backup(ConnSpec(dbname="hub"), tools_15, str(backups), "public", ["Ring"], compress="10")
    assert not argv.exists() and list(backups.iterdir()) == []
