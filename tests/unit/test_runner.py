"""The runner every module's main() uses, run in-process with a real AnsibleModule (no playbook)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    Library,
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    RingHubError,
    RolledBack,
    run_as_module,
)
from ansible_collections.threadring.ringhub.plugins.modules import pg_schema_reset, redis_flush, ring_seed

SPEC = {
    "name": {"type": "str", "required": True},
    "url": {"type": "str", "no_log": True},
    "fail": {"type": "str", "choices": ["", "plain", "unchanged", "rolled_back", "unknown"], "default": ""},
}
TYPES = {"plain": RingHubError, "unchanged": NothingChanged, "rolled_back": RolledBack, "unknown": OutcomeUnknown}


def work(module: Any) -> Outcome:
    """A module's work: warns, fails as asked, or returns a result that quotes the URL's password."""
    warnings = ["gathered before the end", "gathered before the end", "second"]
    kind = module.params["fail"]
    if kind:
        error = TYPES[kind]("it went wrong.", step="the step")
        error.warnings = warnings
        raise error
    password = "S3cret/Pw"  # as decoded from url (S3cret%2FPw)
    return Outcome(
        changed=not module.check_mode,
        result={"greeting": f"hello {module.params['name']}", "leak": f"{password} and S3cret%2FPw"},
        warnings=warnings,
        diff={"before": "", "after": "hello"},
    )


def main() -> None:
    run_as_module(SPEC, work)


def warning_texts(result: dict[str, Any]) -> list[str]:
    return [w if isinstance(w, str) else w["event"]["msg"] for w in result.get("warnings", [])]


ARGS = {"name": "hub", "url": "redis://app:S3cret%2FPw@h:6379"}


def test_success_warns_once_per_warning_and_adds_diff_only_under_diff(run_module_main) -> None:
    rc, result = run_module_main(main, ARGS)
    assert rc == 0 and result["changed"] is True and result["greeting"] == "hello hub"
    assert "diff" not in result
    assert warning_texts(result) == ["gathered before the end", "second"]
    rc, with_diff = run_module_main(main, ARGS, check_mode=True, diff=True)
    assert rc == 0 and with_diff["changed"] is False and with_diff["diff"] == {"before": "", "after": "hello"}


def test_url_passwords_are_registered_encoded_and_decoded(run_module_main) -> None:
    _rc, result = run_module_main(main, ARGS)
    assert "S3cret" not in str(result)
    assert result["leak"] == "******** and ********"  # Ansible masks no_log values


@pytest.mark.parametrize(
    "kind, sentence, flag",
    [
        ("plain", "", None),
        ("unchanged", "; nothing was changed", "nothing_changed"),
        ("rolled_back", "; the transaction was rolled back, nothing was changed", "nothing_changed"),
        ("unknown", "; the outcome is unknown: check the state before running it again", "outcome_unknown"),
    ],
)
def test_failure_carries_the_sentence_of_its_type_details_and_warnings(run_module_main, kind, sentence, flag) -> None:
    rc, result = run_module_main(main, dict(ARGS, fail=kind))
    assert rc == 1 and result["failed"] is True
    assert result["msg"] == ("it went wrong." if kind == "plain" else "it went wrong" + sentence)
    assert result["step"] == "the step"
    assert {key for key in ("nothing_changed", "outcome_unknown") if result.get(key)} == ({flag} if flag else set())
    assert warning_texts(result) == ["gathered before the end", "second"]


def test_a_missing_library_fails_before_the_work(run_module_main) -> None:
    def never(module: Any) -> Outcome:
        raise AssertionError("the work must not run")

    rc, result = run_module_main(
        lambda: run_as_module(SPEC, never, libraries=[Library("psycopg2", False, "ImportError: psycopg2")]), ARGS
    )
    assert rc == 1 and "psycopg2" in result["msg"] and "Failed to import" in result["msg"]


def test_the_modules_refuse_bad_input_through_the_runner(run_module_main, monkeypatch) -> None:
    rc, result = run_module_main(redis_flush.main, {"redis_url": "redis://u:Top/Secret@h:6379/0"})
    assert rc == 1 and "percent-encode" in result["msg"] and result["nothing_changed"] is True
    assert "Top" not in result["msg"] and result["msg"].endswith("; nothing was changed")

    monkeypatch.setenv("DATABASE_URL", "postgresql://hub:Env-S3cret@127.0.0.1:1/hub")
    args = {"migrations_dir": "/nonexistent", "backup": False}
    rc, result = run_module_main(pg_schema_reset.main, args)
    assert rc == 1 and "migrations_dir /nonexistent does not exist" in result["msg"]
    assert result["msg"].endswith("; nothing was changed") and result["nothing_changed"] is True
    assert result["connection"]["source"] == "DATABASE_URL environment variable"
    assert "Env-S3cret" not in str(result)

    rc, result = run_module_main(ring_seed.main, {"owner_did": "not-a-did"})
    assert rc == 1 and "is not a DID" in result["msg"] and result["nothing_changed"] is True
