"""Pure parts of pg_schema_reset's progress_file and root_ring (no server)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import PhaseTimer, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import run_polled
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_progress import PROGRESS_PHASES, Progress
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import (
    ResetOptions,
    SchemaReset,
    summary_line,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    DEFAULT_ROLES,
    JOIN_POLICIES,
    POST_POLICIES,
    ROOT_RING_DESCRIPTION,
    ROOT_RING_NAME,
    VISIBILITIES,
    RingSeeder,
    RootRing,
    seed_argument_spec,
)

OWNER = "did:web:hub.example.test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_every_field_atomically_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "progress.json"
    clock = FakeClock()
    progress = Progress(str(path), clock=clock)
    progress.start()
    first = json.loads(path.read_text())
    assert first["phase"] == "validate" and first["elapsed"] == 0.0 and first["check_mode"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    progress.set(database="ringhub", schema="public", database_size=1000)
    clock.now += 2
    progress.phase("backup")
    progress.dump_started(str(tmp_path / "x.dump"))
    clock.now += 4
    progress.dump_size(2000)
    data = json.loads(path.read_text())
    assert data["phase"] == "backup" and data["elapsed"] == 6.0 and data["phase_elapsed"] == 4.0
    assert (data["backup_bytes"], data["rate_bytes_per_s"], data["database_size"]) == (2000, 500.0, 1000)
    assert data["backup_path"] == str(tmp_path / "x.dump") and data["database"] == "ringhub"
    clock.now += 1
    progress.phase("verify_backup")
    data = json.loads(path.read_text())
    assert data["phase_elapsed"] == 0.0 and data["rate_bytes_per_s"] == 500.0  # the dump's rate stays
    progress.done("all done")
    data = json.loads(path.read_text())
    assert data["phase"] == "done" and data["summary"] == "all done" and data["error"] is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["progress.json"]
    assert progress.writes == 6 and progress.warning is None


def test_progress_fail_masks_the_error_and_names_the_phase(tmp_path) -> None:
    path = tmp_path / "progress.json"
    progress = Progress(str(path))
    progress.redact = lambda text: text.replace("s3cret", "********")
    progress.start()
    progress.phase("lock")
    progress.fail("password s3cret refused")
    data = json.loads(path.read_text())
    assert (data["phase"], data["failed_phase"], data["error"]) == ("failed", "lock", "password ******** refused")
    assert "s3cret" not in path.read_text()


def test_progress_phases_are_the_documented_ones() -> None:
    module = Path(__file__).resolve().parents[2] / "plugins" / "modules" / "pg_schema_reset.py"
    doc = " ".join(module.read_text().split("progress_file:", 1)[1].split("version_added")[0].split())
    assert set(PROGRESS_PHASES) >= {
        "connect",
        "lock",
        "preflight",
        "backup",
        "verify_backup",
        "reset",
        "done",
        "failed",
    }
    for phase in PROGRESS_PHASES:
        assert f"C({phase})" in doc
    for key in Progress(None).data:
        assert f"C({key})" in doc


def test_progress_first_write_fails_the_run_later_ones_only_warn(tmp_path) -> None:
    with pytest.raises(RingHubError, match=r"progress_file .*/none/p\.json: cannot write it .*must exist"):
        Progress(str(tmp_path / "none" / "p.json")).start()
    # fail() on a file that was never writable: no exception, nothing written.
    Progress(str(tmp_path / "none" / "p.json")).fail("boom")
    assert not (tmp_path / "none").exists()

    directory = tmp_path / "d"
    directory.mkdir()
    progress = Progress(str(directory / "p.json"))
    progress.start()
    (directory / "p.json").unlink()
    directory.rmdir()
    progress.phase("backup")  # the directory went away: a warning, the run goes on
    assert progress.warning and "cannot write it" in progress.warning and "went on" in progress.warning


def test_disabled_progress_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    progress = Progress(None)
    progress.start()
    progress.phase("backup")
    progress.dump_size(10)
    progress.fail("x")
    assert not progress.enabled and progress.writes == 0 and os.listdir(tmp_path) == []


def test_run_polled_ticks_while_the_process_runs_and_returns_like_subprocess_run() -> None:
    ticks: list[float] = []
    script = "import sys, time; time.sleep(1.3); print('out'); print('err', file=sys.stderr); sys.exit(3)"
    proc = run_polled([sys.executable, "-c", script], dict(os.environ), lambda: ticks.append(time.monotonic()), 0.25)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    # At least one tick per interval while it ran, and not more often than the interval.
    assert len(ticks) >= 4 and min(b - a for a, b in zip(ticks, ticks[1:], strict=False)) >= 0.2
    quiet = run_polled([sys.executable, "-c", "print('x')"], dict(os.environ))
    assert (quiet.returncode, quiet.stdout) == (0, "x\n")


def test_root_ring_options_are_ring_seeds_and_use_its_constants() -> None:
    spec = seed_argument_spec()
    assert list(spec) == ["owner_did", "slug", "name", "description", "visibility", "join_policy", "post_policy",
                          "created_by", "roles", "reset_at"]  # fmt: skip
    assert spec["visibility"]["choices"] == VISIBILITIES and spec["join_policy"]["choices"] == JOIN_POLICIES
    assert spec["post_policy"]["choices"] == POST_POLICIES
    assert (spec["name"]["default"], spec["description"]["default"]) == (ROOT_RING_NAME, ROOT_RING_DESCRIPTION)
    assert spec["roles"]["default"] == DEFAULT_ROLES and spec["roles"]["default"] is not DEFAULT_ROLES
    assert spec["owner_did"]["required"] and spec["owner_did"]["fallback"][1] == ["INSTANCE_DID"]
    assert spec["slug"]["fallback"][1] == ["ROOT_RING_SLUG"]
    params = {option: value.get("default") for option, value in spec.items()} | {"owner_did": OWNER, "other": 1}
    assert RootRing.from_params(params) == RootRing(owner_did=OWNER)


def test_preview_of_a_fresh_schema_is_the_create_plan_without_ids() -> None:
    seeder = RingSeeder(ConnSpec(dbname="db"), RootRing(owner_did=OWNER, slug="root"), check_mode=True)
    preview = seeder.preview_fresh("hub")
    result = preview.result
    assert preview.changed is True and preview.warnings == []
    assert preview.diff["before"] == {"ring": {}, "roles": {}} and preview.diff["after"]["roles"] == DEFAULT_ROLES
    assert result["actions"] == ["create ring root", "create role owner", "create role moderator", "create role member"]
    assert result["ring"]["id"] is None and [r["id"] for r in result["roles"]] == [None, None, None]
    assert result["ring"]["metadata"]["isRoot"] is True and result["ring"]["owner_did"] == OWNER
    assert {r["name"]: r["permissions"] for r in result["roles"]} == DEFAULT_ROLES
    assert result["schema"] == "hub" and len(result["queries"]) == 4


@pytest.mark.parametrize(
    "ring, text",
    [
        (RootRing(owner_did="nope"), "root_ring: owner_did 'nope' is not a DID"),
        (RootRing(owner_did=OWNER, slug="-x"), "root_ring: slug '-x' must be"),
        (RootRing(owner_did=OWNER, roles={}), "root_ring: roles must map role names"),
    ],
)
def test_root_ring_is_validated_with_the_options(ring, text) -> None:
    reset = SchemaReset(ConnSpec(dbname="db"), ResetOptions(schema="public", backup=False, root_ring=ring), [],
                        PhaseTimer())  # fmt: skip
    with pytest.raises(RingHubError, match=text):
        reset.validate_options()


def test_summary_names_the_root_ring() -> None:
    base = {"schema": "public", "database": "db", "migrations": [], "seconds": {"total": 1.0}}
    seeded = {"ring": {"slug": "spool"}, "roles": [{"name": "member"}, {"name": "owner"}]}
    assert "seeded root ring spool (roles member, owner), environment" in summary_line(
        dict(base, root_ring=seeded), False
    )
    assert "would seed root ring spool" in summary_line(dict(base, root_ring=seeded), True)
    assert "root ring" not in summary_line(base, False)
