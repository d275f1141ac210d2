from __future__ import annotations

from ansible_collections.threadring.ringhub.plugins.module_utils._audit import build_record, mask_secrets
from ansible_collections.threadring.ringhub.plugins.module_utils._common import MASK, PhaseTimer, mask_url, redact


def test_mask_url_hides_password_keeps_rest() -> None:
    url = "postgresql://ringhub:s3cr%40t@db.example:5432/ringhub?schema=public"
    masked = mask_url(url)
    assert "s3cr" not in masked
    assert masked == f"postgresql://ringhub:{MASK}@db.example:5432/ringhub?schema=public"


def test_mask_url_without_password_is_unchanged() -> None:
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("rediss://:pw@h:1/2") == f"rediss://:{MASK}@h:1/2"


def test_redact_removes_literal_secrets_and_url_passwords() -> None:
    text = "connect failed for postgresql://u:hunter2@h/db with token abc123"
    out = redact(text, ["abc123", None, ""])
    assert "hunter2" not in out and "abc123" not in out
    assert out.count(MASK) == 2


def test_mask_secrets_is_deep_and_keeps_other_values() -> None:
    masked = mask_secrets({"password": "x", "nested": [{"api_key": "k", "n": 1}], "url": "redis://:p@h"})
    assert masked == {"password": MASK, "nested": [{"api_key": MASK, "n": 1}], "url": f"redis://:{MASK}@h"}


def test_build_record_fields() -> None:
    rec = build_record("reset", "started", {"private_key": "PEM"}, operator="alice")
    assert rec["operator"] == "alice" and rec["event"] == "reset" and rec["details"] == {"private_key": MASK}
    assert rec["time"].endswith("Z") and len(rec["time"]) == 24


def test_phase_timer_accumulates() -> None:
    timer = PhaseTimer()
    with timer.phase("a"):
        pass
    with timer.phase("a"):
        pass
    assert set(timer.seconds) == {"a"} and timer.seconds["a"] >= 0
