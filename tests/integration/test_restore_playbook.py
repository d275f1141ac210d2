"""playbooks/restore.yml end to end: a reset, then the restore of its backup, against a local deployment.

Real PostgreSQL with the hub's real migrations, Redis and a sandbox hub
(tests/harness/deployment.py); the playbooks run as an operator runs them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from test_undo_playbook import audit_lines, play, ring_status, summary_of

pytestmark = pytest.mark.slow


def test_a_reset_then_the_restore_playbook_brings_back_every_row_and_a_tampered_file_is_refused(
    sandbox_deployment_factory: Any, reference_migrations: Any
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True, migrations=reference_migrations)
    before = dep.counts()
    old_rings = [slug for slug in before["rings"] if slug != "spool"]
    served = {slug: ring_status(dep, slug) for slug in old_rings}
    reset = play("reset.yml", dep, {"ringhub_verify_after_reset": False})
    assert reset.rc == 0, reset.stdout[-3000:]
    reset_record = audit_lines(dep)[-1]
    backup = Path(reset_record["details"]["backup"]["path"])
    sha256 = reset_record["details"]["backup"]["sha256"]
    assert hashlib.sha256(backup.read_bytes()).hexdigest() == sha256
    after_reset = dep.counts()

    # A file changed after the reset is refused before anything changes (the sha256 of its audit line).
    good = backup.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 3] ^= 0x20
    backup.write_bytes(bytes(bad))
    refused = play("restore.yml", dep, {"ringhub_restore_file": str(backup)})
    assert refused.rc != 0
    assert f"has sha256 {hashlib.sha256(bytes(bad)).hexdigest()}, not {sha256}" in refused.output
    assert "nothing was changed" in refused.output
    record = audit_lines(dep)[-1]
    assert record["event"] == "restore" and record["status"] == "aborted"
    now = dep.counts()
    assert now["tables"] == after_reset["tables"] and now["redis"] == after_reset["redis"]
    backup.write_bytes(good)

    check = play("restore.yml", dep, {"ringhub_restore_file": str(backup)}, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    told = "\n".join(summary_of(check, "Summary of what the restore will do"))
    assert f"sha256 {sha256}, the one of the audit line of" in told and "REPLACED: schema public" in told
    assert dep.counts()["tables"] == after_reset["tables"]

    restore = play("restore.yml", dep, {"ringhub_restore_file": str(backup), "ringhub_verify_after_restore": False})
    assert restore.rc == 0, restore.stdout[-3000:]
    after = dep.counts()
    assert after["tables"] == before["tables"]
    assert after["rings"] == before["rings"] and after["migrations"] == before["migrations"]
    assert after["environment_marker"] == "production"
    assert all(db["keys"] == 0 for db in after["redis"].values())
    assert {slug: ring_status(dep, slug) for slug in old_rings} == served
    record = audit_lines(dep)[-1]
    assert record["event"] == "restore" and record["status"] == "succeeded"
    assert record["details"]["backup"]["sha256"] == sha256
    assert record["details"]["backup"]["audit_run_id"] == reset_record["details"]["run_id"]
    assert {t["name"]: t["rows"] for t in record["details"]["restored"]["tables"]} == {
        name: t["rows"] for name, t in before["tables"].items()
    }
    assert dep.state["database"]["role_password"] not in restore.output + refused.output


def test_the_restore_ends_with_the_verification(sandbox_deployment_factory: Any, fixture_migrations: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=False, migrations=fixture_migrations)
    reset = play("reset.yml", dep, {"ringhub_verify_after_reset": False})
    assert reset.rc == 0, reset.stdout[-3000:]
    backup = audit_lines(dep)[-1]["details"]["backup"]["path"]
    restore = play("restore.yml", dep, {"ringhub_restore_file": backup})
    assert restore.rc == 0, restore.stdout[-4000:]
    assert any(r["task"].endswith("Verify") and r["status"] == "ok" for r in restore.results)
    record = audit_lines(dep)[-1]
    assert record["event"] == "restore" and record["status"] == "succeeded" and record["details"]["verify"] == "passed"
    assert json.dumps(record).count(dep.state["database"]["role_password"]) == 0
