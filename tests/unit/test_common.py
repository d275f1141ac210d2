from __future__ import annotations

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._audit import build_record, mask_secrets
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    MASK,
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    PhaseTimer,
    RingHubError,
    RolledBack,
    failing_with,
    mask_url,
    nothing_changed_on_failure,
    option_secrets,
    redact,
    url_secrets,
)


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


def test_phase_timer_adds_up_the_time_of_each_phase() -> None:
    now = [10.0]
    timer = PhaseTimer(clock=lambda: now[0])
    with timer.phase("a"):
        now[0] += 1.25
    with timer.phase("b"):
        now[0] += 0.5
    with pytest.raises(ValueError), timer.phase("a"):  # a failing phase still counts
        now[0] += 2.0
        raise ValueError
    assert timer.seconds == {"a": 3.25, "b": 0.5} and timer.total == 3.75


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://hub:pa/ss-XYZ@db:5432/hub?schema=public", f"postgresql://hub:{MASK}@db:5432/hub?schema=public"),
        ("redis://u:p@ss@h:1/2", f"redis://u:{MASK}@h:1/2"),
        ("redis://odd:p@ss:w/rd?#%Zq@127.0.0.1:6379/0", f"redis://odd:{MASK}@127.0.0.1:6379/0"),  # cut short
        ("rediss://app:1234?XYZ@h:6380", f"rediss://app:{MASK}@h:6380"),
        ("postgresql://db/hub?sslpassword=k3y&password=pw", f"postgresql://db/hub?sslpassword={MASK}&password={MASK}"),
        ("postgresql://db:5432/hub?application_name=reset@ops", "postgresql://db:5432/hub?application_name=reset@ops"),
        ("unix://app:s3cret@/run/redis.sock?db=1", f"unix://app:{MASK}@/run/redis.sock?db=1"),
        ("redis://user@h:1", "redis://user@h:1"),
        ("no url at all", "no url at all"),
    ],
)
def test_one_masker_for_every_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_url_secrets_are_the_passwords_as_written_and_decoded() -> None:
    assert url_secrets("postgresql://hub:s3cr%40t@db/hub?sslpassword=k%2Fy") == ["s3cr%40t", "k%2Fy", "s3cr@t", "k/y"]
    assert url_secrets("redis://:pa/ss@h") == ["pa/ss"]
    # An unencoded "/" after an "@" in the password: the whole password, not the piece before the "@".
    assert url_secrets("redis://odd:p@ss:w/rd?#%Zq@127.0.0.1:6379/0") == ["p@ss:w/rd?#%Zq"]
    assert url_secrets("postgresql://u:pw@h/db?application_name=ops@host") == ["pw"]
    assert url_secrets("redis://h:6379/0") == [] and url_secrets(None) == [] and url_secrets("not a url") == []


def test_option_secrets_come_from_no_log_options_and_named_environment(monkeypatch) -> None:
    spec = {"url": {"type": "str", "no_log": True}, "plain": {"type": "str"}}
    params = {"url": "redis://u:Opt%21on@h", "plain": "redis://u:NotSecret@h"}
    monkeypatch.setenv("RINGHUB_TEST_URL", "postgresql://u:Env@h/db")
    assert option_secrets(spec, params) == {"Opt%21on", "Opt!on"}
    assert option_secrets(spec, params, ["RINGHUB_TEST_URL", "RINGHUB_UNSET"]) == {"Opt%21on", "Opt!on", "Env"}


def test_error_types_carry_their_sentence() -> None:
    assert RingHubError("x failed").operator_message == "x failed"
    assert NothingChanged("x failed.").operator_message == "x failed; nothing was changed"
    assert RolledBack("x").operator_message == "x; the transaction was rolled back, nothing was changed"
    assert OutcomeUnknown("COMMIT lost").operator_message.startswith("COMMIT lost; the outcome is unknown")
    assert isinstance(RolledBack("x"), NothingChanged) and not isinstance(OutcomeUnknown("x"), NothingChanged)
    assert (NothingChanged.result_flag, RolledBack.result_flag, OutcomeUnknown.result_flag) == (
        "nothing_changed", "nothing_changed", "outcome_unknown",
    )  # fmt: skip
    error = RingHubError("p@ss leaked")
    error.msg = "******** leaked"
    assert str(error) == "******** leaked"  # tracebacks show the redacted message


def test_nothing_changed_on_failure_converts_plain_errors_only() -> None:
    with pytest.raises(NothingChanged) as err, nothing_changed_on_failure():
        error = RingHubError("refused", path="/x")
        error.warnings = ["w1"]
        raise error
    assert (err.value.msg, err.value.details, err.value.warnings) == ("refused", {"path": "/x"}, ["w1"])
    for typed in (RolledBack("r"), OutcomeUnknown("u")):
        with pytest.raises(type(typed)) as err, nothing_changed_on_failure():
            raise typed
        assert err.value is typed


def test_failing_with_attaches_the_warnings_gathered_until_the_failure() -> None:
    warnings = ["first"]
    with pytest.raises(RingHubError) as err, failing_with(warnings, step="a"):
        warnings.append("second")
        error = RingHubError("boom", step="own")
        error.warnings = ["second", "third"]
        raise error
    assert err.value.warnings == ["first", "second", "third"] and err.value.details == {"step": "own"}


def test_outcome_refuses_result_keys_that_belong_to_the_runner() -> None:
    assert Outcome(changed=False, result={"path": "/x"}).diff is None
    for key in ("changed", "diff", "warnings", "msg"):
        with pytest.raises(TypeError, match=key):
            Outcome(changed=True, result={key: 1})
