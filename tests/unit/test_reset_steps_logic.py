"""reset_steps' own logic: the plan of the steps, the refusals, the step module, the run of fake steps.

Pure logic: the steps' entry points are replaced by fakes where a test is about what reset_steps does around
them (order, stop at the first failure, what the failure says). tests/integration/test_reset_steps.py runs
the real steps against real servers.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _redis_flush
from ansible_collections.threadring.ringhub.plugins.module_utils import _reset_steps as rs
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    RingHubError,
    RolledBack,
)
from ansible_collections.threadring.ringhub.plugins.modules import reset_steps

DB_URL = "postgresql://hub:Pg-" + secrets.token_hex(8) + "@db.example:5432/hub?schema=public"
REDIS_A = "redis://app:Rd-" + secrets.token_hex(8) + "@redis-a.example:6379/0"
REDIS_B = "redis://redis-b.example:6379/2"
PEM = _ed25519.private_pem(_ed25519.private_key_from_seed(b"K" * 32)).decode()
LOG_INVOCATION = AnsibleModule._log_invocation  # the fixture ansible_module turns it off; one test calls it


def all_steps(**extra: Any) -> dict[str, Any]:
    """reset_steps' parameters as Ansible hands them over: every step, two Redis URLs."""
    params: dict[str, Any] = {
        "database_url": DB_URL,
        "redis_urls": [REDIS_A, REDIS_B],
        "private_key_content": PEM,
        "pg_schema_reset": {"migrations_dir": "/srv/prisma/migrations", "backup": False},
        "redis_flush": {"mode": "db"},
        "did_keys": {"path": "/etc/ringhub/key.pem", "hub_url": "https://hub.example.org"},
    }
    params.update(extra)
    return params


# -- plan(): order, labels, options ---------------------------------------------------------------


def test_plan_runs_the_steps_in_the_reset_order_whatever_the_order_given() -> None:
    params = all_steps()
    backwards = {name: params[name] for name in reversed(list(params))}
    for given in (params, backwards):
        runs = rs.plan(given)
        assert [run.label for run in runs] == ["pg_schema_reset", "redis_flush[0]", "redis_flush[1]", "did_keys"]
        assert [run.module.name for run in runs] == ["pg_schema_reset", "redis_flush", "redis_flush", "did_keys"]


def test_plan_fills_each_step_with_its_secret_and_its_module_defaults() -> None:
    pg, redis_a, redis_b, keys = rs.plan(all_steps())
    assert pg.params["database_url"] == DB_URL and pg.params["migrations_dir"] == "/srv/prisma/migrations"
    assert pg.params["lock_timeout"] == "10s" and pg.params["terminate_sessions"] is True  # pg_schema_reset's defaults
    assert [redis_a.params["redis_url"], redis_b.params["redis_url"]] == [REDIS_A, REDIS_B]
    for run in (redis_a, redis_b):
        assert run.params["mode"] == "db" and run.params["batch_size"] == _redis_flush.DEFAULT_BATCH_SIZE
        assert run.params["asynchronous"] is True and run.params["cluster_mode"] == "auto"
    assert keys.params["private_key_content"] == PEM and keys.params["regenerate"] == "never"
    assert keys.params["mode"] == "0600" and keys.params["unsafe_writes"] is False  # Ansible's file options too
    # Validation works on copies: the task's own options are left as given.
    assert all_steps()["redis_flush"] == {"mode": "db"}


def test_a_step_left_out_does_not_run_and_the_secrets_stay_optional() -> None:
    runs = rs.plan({"redis_urls": [REDIS_B], "redis_flush": {}, "did_keys": {"path": "/k.pem"}})
    assert [run.label for run in runs] == ["redis_flush[0]", "did_keys"]
    assert runs[1].params["private_key_content"] is None
    assert [run.label for run in rs.plan({"redis_urls": [REDIS_A], "did_keys": {"path": "/k.pem"}})] == ["did_keys"]


def test_redis_flush_with_no_redis_url_is_refused() -> None:
    for urls in ([], None):
        with pytest.raises(NothingChanged) as refused:
            rs.plan(all_steps(redis_urls=urls))
        assert refused.value.details["failed_step"] == "redis_flush"
        assert "redis_urls is empty" in refused.value.msg


@pytest.mark.parametrize(
    ("step", "options", "label", "text"),
    [
        ("pg_schema_reset", {"backup": False}, "pg_schema_reset", "migrations_dir, sql_files"),
        ("pg_schema_reset", {"migrations_dir": "/m", "backup": True}, "pg_schema_reset", "backup_dir"),
        ("redis_flush", {"mode": "bogus"}, "redis_flush[0]", "bogus"),
        ("redis_flush", {"mode": "pattern"}, "redis_flush[0]", "patterns"),
        ("redis_flush", {"batch_size": "many"}, "redis_flush[0]", "batch_size"),
        ("did_keys", {"path": "/k.pem", "hub_urll": "https://x"}, "did_keys", "Unsupported parameters: hub_urll."),
        ("did_keys", {"hub_url": "https://x"}, "did_keys", "path"),
        ("did_keys", {"path": "/k.pem", "instance_document": "/d.json"}, "did_keys", "hub_url"),
        ("did_keys", {"path": "/k.pem", "regenerate": "sometimes"}, "did_keys", "sometimes"),
    ],
)
def test_a_bad_option_fails_the_plan_naming_its_step(step: str, options: dict, label: str, text: str) -> None:
    with pytest.raises(NothingChanged) as refused:
        rs.plan(all_steps(**{step: options}))
    assert refused.value.details["failed_step"] == label
    assert refused.value.msg.startswith(f"{label}: ") and text in refused.value.msg


@pytest.mark.parametrize(
    ("step", "option", "value", "hint"),
    [
        ("pg_schema_reset", "database_url", DB_URL, "database_url of reset_steps"),
        ("pg_schema_reset", "login_password", "Pg-" + secrets.token_hex(8), "database_url of reset_steps"),
        ("pg_schema_reset", "password", "Pg-" + secrets.token_hex(8), "database_url of reset_steps"),  # an alias
        ("redis_flush", "redis_url", REDIS_A, "redis_urls of reset_steps"),
        ("redis_flush", "password", "Rd-" + secrets.token_hex(8), "redis_urls of reset_steps"),
        ("did_keys", "private_key_content", PEM, "private_key_content of reset_steps"),
        ("did_keys", "passphrase", "Pass-" + secrets.token_hex(8), "takes no passphrase"),
    ],
)
def test_a_secret_inside_a_step_is_refused_naming_the_option_not_its_value(
    step: str, option: str, value: str, hint: str
) -> None:
    params = all_steps()
    params[step] = dict(params[step], **{option: value})
    with pytest.raises(NothingChanged) as refused:
        rs.plan(params)
    error = refused.value
    assert error.details == {"failed_step": step}
    assert error.msg.startswith(f"{step}: {option} must not be inside the {step} options") and hint in error.msg
    assert value not in error.msg and value not in json.dumps(error.details)
    # The value is what run_steps registers with Ansible, so that the failure masks it everywhere.
    assert value in rs.inside_secrets(params)


def test_inside_secrets_finds_the_password_inside_a_url_too() -> None:
    params = all_steps(redis_flush={"redis_url": REDIS_A})
    found = rs.inside_secrets(params)
    password = REDIS_A.split(":")[2].split("@")[0]
    assert {REDIS_A, password} <= found
    assert rs.inside_secrets(all_steps()) == set()


def test_step_secrets_are_the_passwords_inside_the_step_urls() -> None:
    found = rs.step_secrets(rs.plan(all_steps()))
    for url in (DB_URL, REDIS_A):
        password = url.split("://", 1)[1].split("@")[0].split(":")[1]
        assert password in found
    assert PEM in found  # a no_log option's whole value, as Ansible's validation of the step found it


def test_the_secret_options_of_each_module_include_their_aliases() -> None:
    assert rs._MODULES["pg_schema_reset"].secret_options == {
        "database_url": "database_url",
        "login_password": "login_password",
        "password": "login_password",
    }
    assert rs._MODULES["redis_flush"].secret_options == {"redis_url": "redis_url", "password": "password"}
    assert rs._MODULES["did_keys"].secret_options == {
        "passphrase": "passphrase",
        "private_key_content": "private_key_content",
    }
    assert set(rs._SECRET_HINTS) >= {own for m in rs._MODULES.values() for own in m.secret_options.values()}


# -- _changed_so_far ------------------------------------------------------------------------------


def test_changed_so_far_names_the_steps_that_changed_in_order() -> None:
    assert rs._changed_so_far({}) == []
    steps = {
        "pg_schema_reset": {"changed": True},
        "redis_flush": [{"changed": False, "deleted": 0}, {"changed": True, "deleted": 3}, {"changed": True}],
        "did_keys": {"changed": False},
    }
    assert rs._changed_so_far(steps) == ["pg_schema_reset", "redis_flush[1]", "redis_flush[2]"]
    assert rs._changed_so_far({"redis_flush": [{"changed": False}], "did_keys": {}}) == []


# -- _StepModule ----------------------------------------------------------------------------------


def test_step_module_forwards_check_mode_and_everything_else_but_params() -> None:
    wrapped = SimpleNamespace(check_mode=False, params={"all": "of reset_steps"}, no_log_values={"x"})
    wrapped.load_file_common_arguments = lambda params, path=None: {"path": path, "mode": params.get("mode")}
    step = rs._StepModule(wrapped, {"path": "/k.pem", "mode": "0600"})
    assert step.params == {"path": "/k.pem", "mode": "0600"} and wrapped.params == {"all": "of reset_steps"}
    assert step.check_mode is False
    step.check_mode = True  # Files.differences() asks Ansible in check mode, then puts it back
    assert wrapped.check_mode is True and step.check_mode is True
    wrapped.check_mode = False
    assert step.check_mode is False
    assert step.no_log_values is wrapped.no_log_values
    assert step.load_file_common_arguments(step.params, path="/k.pem") == {"path": "/k.pem", "mode": "0600"}
    with pytest.raises(AttributeError):
        step.no_such_attribute  # noqa: B018


def test_files_of_a_step_use_the_step_options_and_the_real_module(ansible_module: Any, tmp_path: Path) -> None:
    from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files

    module = ansible_module(rs.argument_spec(), {"did_keys": {"path": "x"}})
    key = tmp_path / "key.pem"
    key.write_text("x")
    key.chmod(0o644)
    files = Files(rs._StepModule(module, {"path": str(key), "mode": "0600"}))
    assert files.differences(files.task_args(str(key))) == {"mode": ("0o644", "0o600")}
    assert module.check_mode is False  # put back after the question
    assert oct(key.stat().st_mode & 0o777) == "0o644"


# -- run_steps with fake steps ----------------------------------------------------------------------


class FakeSteps:
    """Replaces the entry points of the three modules: each records its call and returns or raises as told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **behaviour: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.behaviour = behaviour
        modules = {}
        for name, module in rs._MODULES.items():
            modules[name] = dataclasses.replace(module, work=self._work(name), check=None)
        monkeypatch.setattr(rs, "_MODULES", modules)

    def _work(self, name: str) -> Any:
        def work(params: dict[str, Any], module: Any) -> Outcome:
            label = name if name != "redis_flush" else f"redis_flush[{[REDIS_A, REDIS_B].index(params['redis_url'])}]"
            self.calls.append((label, params, module.check_mode))
            todo = self.behaviour.get(label)
            if isinstance(todo, BaseException):
                raise todo
            changed = True if todo is None else bool(todo)
            return Outcome(changed=changed, result={"step": label}, warnings=[f"{label} warns"], diff={"after": label})

        return work


def fake_module(check_mode: bool = False) -> SimpleNamespace:
    return SimpleNamespace(check_mode=check_mode, no_log_values=set(), params={})


def test_run_steps_runs_in_order_and_returns_each_result(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakeSteps(monkeypatch, **{"redis_flush[1]": False})
    module = fake_module()
    outcome = rs.run_steps(all_steps(), module)
    assert [call[0] for call in fakes.calls] == ["pg_schema_reset", "redis_flush[0]", "redis_flush[1]", "did_keys"]
    assert outcome.changed is True
    assert outcome.result["ran"] == ["pg_schema_reset", "redis_flush[0]", "redis_flush[1]", "did_keys"]
    assert outcome.result["steps"] == {
        "pg_schema_reset": {"changed": True, "step": "pg_schema_reset"},
        "redis_flush": [{"changed": True, "step": "redis_flush[0]"}, {"changed": False, "step": "redis_flush[1]"}],
        "did_keys": {"changed": True, "step": "did_keys"},
    }
    assert set(outcome.result["seconds"]) == {*outcome.result["ran"], "total"}
    assert outcome.warnings == [f"{label} warns" for label in outcome.result["ran"]]
    assert [d["before_header"] for d in outcome.diff] == outcome.result["ran"]  # type: ignore[union-attr]
    # The passwords inside the URLs are registered before any step runs.
    assert {DB_URL.split(":")[2].split("@")[0], REDIS_A.split(":")[2].split("@")[0]} <= module.no_log_values


def test_nothing_changed_after_a_changed_step_says_what_the_steps_before_did(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakeSteps(monkeypatch, **{"redis_flush[1]": NothingChanged("cannot connect to Redis.", endpoint="b")})
    with pytest.raises(RingHubError) as failed:
        rs.run_steps(all_steps(), fake_module())
    error = failed.value
    assert not isinstance(error, NothingChanged)  # the runner must not add "nothing was changed", nor the flag
    assert error.operator_message == (
        "cannot connect to Redis; redis_flush[1] changed nothing, but the steps before it did: "
        "pg_schema_reset, redis_flush[0] (their results are in steps)"
    )
    assert error.details["failed_step"] == "redis_flush[1]" and error.details["endpoint"] == "b"
    assert error.details["changed"] is True
    assert list(error.details["steps"]) == ["pg_schema_reset", "redis_flush"]
    assert len(error.details["steps"]["redis_flush"]) == 1
    assert set(error.details["seconds"]) == {"pg_schema_reset", "redis_flush[0]", "redis_flush[1]", "total"}
    assert error.warnings == ["pg_schema_reset warns", "redis_flush[0] warns"]
    assert "did_keys" not in [call[0] for call in fakes.calls]


def test_a_first_step_that_changes_nothing_keeps_nothing_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = RolledBack("the migration failed", sqlstate="42704")
    FakeSteps(monkeypatch, pg_schema_reset=refusal)
    with pytest.raises(RolledBack) as failed:
        rs.run_steps(all_steps(), fake_module())
    assert failed.value is refusal
    assert failed.value.details == {
        "sqlstate": "42704",
        "failed_step": "pg_schema_reset",
        "steps": {},
        "seconds": failed.value.details["seconds"],
        "changed": False,
    }


def test_in_check_mode_a_failure_after_steps_that_would_change_is_nothing_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fakes = FakeSteps(monkeypatch, did_keys=NothingChanged("hub_url must be an http(s) URL"))
    with pytest.raises(NothingChanged) as failed:
        rs.run_steps(all_steps(), fake_module(check_mode=True))
    assert failed.value.operator_message == "hub_url must be an http(s) URL; nothing was changed"
    assert failed.value.details["changed"] is False and failed.value.details["failed_step"] == "did_keys"
    assert all(check_mode for _label, _params, check_mode in fakes.calls)


def test_in_check_mode_any_failure_of_a_step_is_nothing_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    for raised in (RingHubError("cannot read the env file"), ValueError("bad")):
        FakeSteps(monkeypatch, did_keys=raised)
        with pytest.raises(NothingChanged) as failed:
            rs.run_steps(all_steps(), fake_module(check_mode=True))
        assert failed.value.operator_message.endswith("; nothing was changed")
        assert failed.value.details["failed_step"] == "did_keys" and "steps before" not in failed.value.msg
        assert list(failed.value.details["steps"]) == ["pg_schema_reset", "redis_flush"]


def test_a_plain_error_after_a_changed_step_names_the_steps_before(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSteps(monkeypatch, did_keys=OutcomeUnknown("the env file write was cut off"))
    with pytest.raises(OutcomeUnknown) as failed:
        rs.run_steps(all_steps(), fake_module())
    assert failed.value.operator_message == (
        "the env file write was cut off; the steps before did_keys changed things: pg_schema_reset, "
        "redis_flush[0], redis_flush[1] (their results are in steps); "
        "the outcome is unknown: check the state before running it again"
    )


def test_a_bug_in_a_step_still_reports_the_steps_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSteps(monkeypatch, **{"redis_flush[0]": KeyError("nodes")})
    with pytest.raises(RingHubError) as failed:
        rs.run_steps(all_steps(), fake_module())
    error = failed.value
    assert not isinstance(error, (NothingChanged, OutcomeUnknown)) and isinstance(error.__cause__, KeyError)
    assert error.msg.startswith("redis_flush[0] failed unexpectedly: KeyError: 'nodes'; the steps before")
    assert error.details["failed_step"] == "redis_flush[0]"
    assert error.details["steps"]["pg_schema_reset"] == {"changed": True, "step": "pg_schema_reset"}


def test_a_validation_failure_runs_no_step_and_still_returns_steps_and_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fakes = FakeSteps(monkeypatch)
    with pytest.raises(NothingChanged) as failed:
        rs.run_steps(all_steps(did_keys={"path": "/k.pem", "bogus": 1}), fake_module())
    assert fakes.calls == []
    assert failed.value.details["failed_step"] == "did_keys" and failed.value.details["steps"] == {}
    assert set(failed.value.details["seconds"]) == {"total"}


# -- the checks of the later steps, before the first step runs ---------------------------------------


def test_later_steps_are_checked_before_the_first_runs(ansible_module: Any, tmp_path: Path) -> None:
    module = ansible_module(rs.argument_spec(), {"did_keys": {"path": "x"}})
    (tmp_path / "keys").mkdir()
    good = {"path": str(tmp_path / "keys" / "key.pem"), "hub_url": "https://hub.example.org"}
    rs.check_later_steps(rs.plan(all_steps(did_keys=good)), module)  # nothing to refuse
    assert list((tmp_path / "keys").iterdir()) == []

    bad = dict(good, hub_url="ftp://x", instance_document=str(tmp_path / "did.json"))
    with pytest.raises(NothingChanged) as refused:
        rs.check_later_steps(rs.plan(all_steps(did_keys=bad)), module)
    assert refused.value.details == {"failed_step": "did_keys"}
    assert refused.value.msg == "did_keys: hub_url must be an http(s) URL with a host, got 'ftp://x'"

    runs = rs.plan(all_steps(redis_flush={"mode": "all", "patterns": ["cache:*"]}, did_keys=good))
    with pytest.raises(NothingChanged) as refused:
        rs.check_later_steps(runs, module)
    assert refused.value.details == {"failed_step": "redis_flush[0]"}
    # The words of redis_flush itself, which refuses this before it connects.
    with pytest.raises(NothingChanged) as alone:
        _redis_flush.flush_redis(runs[1].params, check_mode=True)
    assert refused.value.msg == f"redis_flush[0]: {alone.value.msg}"

    for flush, text in (({"batch_size": 0}, "batch_size"), ({"mode": "pattern", "patterns": [""]}, "empty")):
        with pytest.raises(NothingChanged) as refused:
            rs.check_later_steps(rs.plan(all_steps(redis_flush=flush, did_keys=good)), module)
        assert refused.value.details == {"failed_step": "redis_flush[0]"} and text in refused.value.msg
    with pytest.raises(NothingChanged) as refused:
        rs.check_later_steps(rs.plan(all_steps(redis_urls=[REDIS_A, "http://not-redis"], did_keys=good)), module)
    assert refused.value.details["failed_step"] == "redis_flush[1]"


def test_the_first_step_is_not_checked_twice(ansible_module: Any, tmp_path: Path) -> None:
    module = ansible_module(rs.argument_spec(), {"did_keys": {"path": "x"}})
    runs = rs.plan({"did_keys": {"path": str(tmp_path / "key.pem"), "hub_url": "ftp://x"}})
    [first] = runs
    with pytest.raises(RingHubError, match="ftp://x"):  # the check would refuse it ...
        first.module.check(first.params, rs._StepModule(module, first.params))
    assert rs.check_later_steps(runs, module) is None  # ... but the first step checks itself when it runs


# -- the module in-process and its documentation ------------------------------------------------------


def test_a_secret_inside_a_step_is_masked_in_the_module_failure(run_module_main: Any) -> None:
    password = "Rd-" + secrets.token_hex(10)
    params = {"redis_urls": ["redis://h:6379/0"], "redis_flush": {"password": password}}
    code, result = run_module_main(reset_steps.main, params)
    assert code == 1 and result["failed"] is True and result["failed_step"] == "redis_flush"
    assert result["nothing_changed"] is True and result["msg"].endswith("; nothing was changed")
    assert "redis_flush: password must not be inside" in result["msg"]
    assert password not in json.dumps(result)


def test_at_least_one_step_is_required(run_module_main: Any) -> None:
    code, result = run_module_main(reset_steps.main, {"database_url": DB_URL})
    assert code == 1 and "pg_schema_reset, redis_flush, did_keys" in result["msg"]
    assert DB_URL not in json.dumps(result)


def test_a_planned_step_shows_no_secret_in_its_repr() -> None:
    shown = repr(rs.plan(all_steps()))
    assert "redis_flush[1]" in shown
    for secret in (DB_URL, REDIS_A, PEM.splitlines()[1]):
        assert secret not in shown


def test_the_invocation_log_line_carries_no_secret(ansible_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """AnsibleModule logs "Invoked with ..." on the host before the module's own code runs."""
    module = ansible_module(rs.argument_spec(), all_steps(), **rs.MODULE_OPTIONS)
    lines: list[str] = []
    monkeypatch.setattr(module, "log", lambda msg, log_args=None: lines.append(msg))
    LOG_INVOCATION(module)
    (line,) = lines
    assert "pg_schema_reset=" in line and "redis_flush=" in line and "/etc/ringhub/key.pem" in line
    assert line.count("NOT_LOGGING_PARAMETER") == 3  # database_url, redis_urls, private_key_content
    for url in (DB_URL, REDIS_A):
        assert url not in line and url.split("@")[0].split(":")[-1] not in line
    for secret in (PEM, *PEM.splitlines()[1:-1]):
        assert secret not in line
