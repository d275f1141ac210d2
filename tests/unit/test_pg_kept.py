"""The pure logic of kept schemas: retention, names, the records in the database comment, dump listings."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import marked_comment, parse_marker
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import dump_tables, quote_pattern
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_kept import (
    KeptRecord,
    comment_with_kept,
    kept_name,
    kept_name_problem,
    parse_kept,
    parse_retention,
)

WHEN = datetime.datetime(2026, 11, 28, 17, 30, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("36h", 36 * 3600), ("1d12h", 36 * 3600), ("2w", 14 * 86400), ("90m", 5400),
     ("90min", 5400), ("3600s", 3600), (" 1d 2h ", 93600)],
)  # fmt: skip
def test_retention_durations(text: str, seconds: int) -> None:
    assert parse_retention(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "a week", "7 days", "-1d", "0d", "0s0m", "1y"])
def test_retention_that_is_no_positive_duration_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(RingHubError, match=r"^keep_previous_for '"):
        parse_retention(text)


def test_kept_names_are_lower_case_utc_and_never_collide() -> None:
    local = WHEN.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert kept_name("public", "reset", local) == "public_before_reset_20261128_173005_utc"
    taken = {"public_before_undo_20261128_173005_utc", "public_before_undo_20261128_173005_utc_2"}
    assert kept_name("public", "undo", WHEN, taken) == "public_before_undo_20261128_173005_utc_3"
    assert kept_name_problem("public") is None
    assert "63-byte limit" in (kept_name_problem("s" * 30) or "")


def record(name: str, until: str = "2026-12-05T17:30:05Z") -> KeptRecord:
    return KeptRecord(name, "public", "reset", "2026-11-28T17:30:05Z", until, {"Ring": 3, "RingRole": 9, "Badge": None})


def test_records_live_beside_the_marker_and_the_operators_lines() -> None:
    comment = marked_comment("Ring Hub production", "production")
    a, b = record("public_before_reset_a"), record("public_before_reset_b", "2000-01-01T00:00:00Z")
    with_both = comment_with_kept(comment, [a, b])
    assert with_both.splitlines()[:2] == ["Ring Hub production", "ringhub.environment=production"]
    assert parse_marker(with_both) == "production"
    parsed, warnings = parse_kept(with_both)
    assert parsed == [a, b] and warnings == []
    assert parsed[0].total_rows == 12
    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert [r.expired(now) for r in parsed] == [False, True]
    # Removing one keeps everything else; the marker line survives a marker rewrite with records in place.
    left = comment_with_kept(with_both, (), {"public_before_reset_b"})
    assert parse_kept(left)[0] == [a]
    assert parse_kept(marked_comment(left, "production"))[0] == [a]
    assert "Ring Hub production" in left


def test_a_broken_record_is_ignored_with_a_warning_and_kept_in_the_comment() -> None:
    comment = "ringhub.environment=production\nringhub.kept={not json\n" + record("x").line()
    parsed, warnings = parse_kept(comment)
    assert [r.name for r in parsed] == ["x"]
    assert len(warnings) == 1 and "does not parse" in warnings[0]
    assert "ringhub.kept={not json" in comment_with_kept(comment, (), {"x"})


def test_dump_listing_and_exact_patterns() -> None:
    listing = (
        ";\n; Archive created at ...\n"
        '215; 1259 16390 TABLE public Ring hub\n'
        "3390; 0 16390 TABLE DATA public Ring hub\n"
        '3391; 0 16400 TABLE DATA public _prisma_migrations hub\n'
        "3392; 0 16500 TABLE DATA public_before_reset_x Ring hub\n"
    )  # fmt: skip
    assert dump_tables(listing, "public") == ["Ring", "_prisma_migrations"]
    assert quote_pattern('we*ird"name') == '"we*ird""name"'
