"""audit_log run as Ansible runs it: the line on disk, its mode, and masking."""

from __future__ import annotations

import json
import stat

from harness.ansible import run_module

SECRET = "audit-secret-7f3a"


def test_appends_masked_record_with_private_mode(tmp_path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    args = {
        "path": str(path),
        "event": "reset",
        "status": "started",
        "operator": "alice",
        "details": {"database_url": f"postgresql://hub:{SECRET}@db:5432/hub", "redis_password": SECRET, "n": 3},
    }
    first = run_module("audit_log", args, verbosity=3)
    second = run_module("audit_log", dict(args, status="succeeded"))
    assert not first.failed and first.changed and second.changed
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["started", "succeeded"]
    assert lines[0]["details"] == {
        "database_url": "postgresql://hub:********@db:5432/hub",
        "redis_password": "********",
        "n": 3,
    }
    assert lines[0]["operator"] == "alice" and lines[0]["event"] == "reset"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Neither the -vvv output nor the returned result carries the secret.
    assert SECRET not in first.output
    assert SECRET not in json.dumps(first.result)


def test_check_mode_writes_nothing(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    res = run_module("audit_log", {"path": str(path), "event": "verify"}, check=True)
    assert res.changed and res.result["record"]["event"] == "verify"
    assert not path.exists()


def test_unwritable_location_fails_with_the_reason(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    res = run_module("audit_log", {"path": str(blocker / "audit.jsonl"), "event": "reset"})
    assert res.failed
    assert "audit" in res.msg and str(blocker) in res.msg
    assert blocker.read_text() == "x"
