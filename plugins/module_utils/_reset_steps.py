# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reset_steps module: pg_schema_reset, redis_flush and did_keys in one module run (private to the collection).

A module run costs a fixed few tenths of a second whatever it does (Ansible
builds and ships the module, the host starts Python and compiles Ansible's
module_utils again): the reset's preflight ran three of them in check mode. This
runs the same entry points, with the same options and the same results, in
one process, in the order of the reset: ``pg_schema_reset``, then ``redis_flush``
once per Redis URL, then ``did_keys``.

- Every step's options are validated against that module's own argument spec
  (types, choices, defaults, ``mutually_exclusive``, ``required_if``...) before
  any step runs: a bad option of the last step fails before the first one has
  touched anything. In a real run, every step after the first is also checked
  the way its module checks before it changes anything, without changing
  anything (``redis_flush``: the mode, the patterns and the URL; ``did_keys``:
  its whole plan, which reads the files only), so a ``hub_url`` that is not
  http(s) or a key file holding another key fails before the database is reset.
- The secrets are options of reset_steps itself (``database_url``, ``redis_urls``,
  ``private_key_content``, all ``no_log``), never inside a step's dictionary:
  Ansible masks them from its first log line on; a step dictionary that holds
  one of the modules' secret options (or one of their aliases) is refused, and
  the value is masked in the failure. (Ansible's own "Invoked with" line in the
  host's log is written before any module code runs: such a value is in it,
  only a URL's password masked by Ansible's heuristic.)
- The steps run in order and the first failure stops the run. The failure names
  the step (``failed_step``) and carries the results of the steps before it
  (``steps``), also when a step fails unexpectedly (a bug). After a step that
  changed something, a later step's "nothing was changed" would be wrong for the
  run: it says what the earlier steps did instead. In check mode nothing
  changes, so a failure there is always "nothing was changed".
- ``steps`` holds each module's own result (as its task would register it:
  ``changed`` and its RETURN values); ``redis_flush`` is a list, one per URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import FILE_COMMON_ARGUMENTS, missing_required_lib
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError

from ansible_collections.threadring.ringhub.plugins.module_utils import _did_keys, _pg_reset, _redis_flush
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    RingHubError,
    nothing_changed_on_failure,
    option_secrets,
    url_secrets,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files

STEP_NAMES = ("pg_schema_reset", "redis_flush", "did_keys")


def argument_spec() -> dict[str, Any]:
    """The options of reset_steps: the three secrets, then one dictionary of options per module."""
    return dict(
        database_url=dict(type="str", no_log=True),
        redis_urls=dict(type="list", elements="str", no_log=True, default=[]),
        private_key_content=dict(type="str", no_log=True),
        pg_schema_reset=dict(type="dict"),
        redis_flush=dict(type="dict"),
        did_keys=dict(type="dict", no_log=False),  # key file paths and options; the key is private_key_content
    )


MODULE_OPTIONS: dict[str, Any] = dict(required_one_of=[list(STEP_NAMES)])


class _StepModule:
    """The reset_steps ``AnsibleModule`` as one step sees it: that step's ``params``, everything else shared."""

    def __init__(self, module: Any, params: dict[str, Any]) -> None:
        self._module = module
        self.params = params

    @property
    def check_mode(self) -> bool:
        return bool(self._module.check_mode)

    @check_mode.setter
    def check_mode(self, value: bool) -> None:
        self._module.check_mode = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _redis_flush_check(params: dict[str, Any], module: Any) -> None:
    """What redis_flush refuses before it connects: the mode and its patterns, the batch size, the URL."""
    _redis_flush.flusher_for(params, check_mode=True)


def _did_keys_check(params: dict[str, Any], module: Any) -> None:
    """did_keys' own plan: it reads the key file, the env file and the DID documents, and writes nothing."""
    _did_keys.plan(params, Files(module), [])


@dataclass(frozen=True)
class _Module:
    """One of the modules reset_steps runs: its argument spec, its runner options and its entry point.

    ``check`` (when set) refuses what the entry point would refuse before it changes anything, and changes
    nothing itself: a later step is checked with it before the first step runs.
    """

    name: str
    spec: Callable[[], dict[str, Any]]
    options: Mapping[str, Any]
    work: Callable[[dict[str, Any], Any], Outcome]  # (params, the module as the step sees it)
    check: Callable[[dict[str, Any], Any], None] | None = None

    def argument_spec(self) -> dict[str, Any]:
        spec = self.spec()
        if self.options.get("add_file_common_args"):
            spec.update({k: v for k, v in FILE_COMMON_ARGUMENTS.items() if k not in spec})
        return spec

    @property
    def secret_options(self) -> dict[str, str]:
        """Every name (aliases too) of the module's secret options: ``{name: the option's own name}``."""
        names: dict[str, str] = {}
        for name, option in self.spec().items():
            if option.get("no_log"):
                names[name] = name
                names.update((alias, name) for alias in option.get("aliases") or ())
        return names


_MODULES = {
    m.name: m
    for m in (
        _Module("pg_schema_reset", _pg_reset.argument_spec, _pg_reset.MODULE_OPTIONS,
                lambda params, module: _pg_reset.reset_schema(params, module.check_mode)),
        _Module("redis_flush", _redis_flush.argument_spec, _redis_flush.MODULE_OPTIONS,
                lambda params, module: _redis_flush.flush_redis(params, module.check_mode), _redis_flush_check),
        _Module("did_keys", _did_keys.argument_spec, _did_keys.MODULE_OPTIONS,
                lambda params, module: _did_keys.keep_keys(params, Files(module)), _did_keys_check),
    )
}  # fmt: skip

# The top-level secret option that fills each module's own.
_SECRET_OF = {
    "pg_schema_reset": ("database_url", "database_url"),
    "did_keys": ("private_key_content", "private_key_content"),
}

# Where each secret option of a step goes instead (by the option's own name).
_SECRET_HINTS = {
    "database_url": "give the URL as database_url of reset_steps (a password belongs inside the URL)",
    "login_password": "give the URL as database_url of reset_steps (a password belongs inside the URL)",
    "redis_url": "give the URLs as redis_urls of reset_steps (a password belongs inside its URL)",
    "password": "give the URLs as redis_urls of reset_steps (a password belongs inside its URL)",
    "private_key_content": "give the key as private_key_content of reset_steps",
    "passphrase": "reset_steps takes no passphrase: run threadring.ringhub.did_keys on its own for an encrypted key",
}

_CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


@dataclass
class _Run:
    """One step to run: its label (``redis_flush[1]``), its module and its validated parameters."""

    label: str
    module: _Module
    params: dict[str, Any] = field(repr=False)  # the step's secrets (database_url, private_key_content) included
    no_log_values: set[str] = field(default_factory=set, repr=False)  # what Ansible's validation found secret


def _validate(module: _Module, label: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    options = module.options
    for library in options.get("libraries", ()):
        if not library.found:
            raise NothingChanged(f"{label}: {missing_required_lib(library.name)}", failed_step=label)
    validator = ArgumentSpecValidator(module.argument_spec(), **{k: options[k] for k in _CONSTRAINTS if k in options})
    checked = validator.validate(dict(given))
    if checked.error_messages:
        # As AnsibleModule words them: an unsupported option's message alone is only the names.
        messages = [
            f"Unsupported parameters: {error.msg}" if isinstance(error, UnsupportedError) else error.msg
            for error in checked.errors
        ]
        raise NothingChanged(f"{label}: " + "; ".join(messages), failed_step=label)
    return dict(checked.validated_parameters), set(checked._no_log_values)


def _secrets_inside(name: str, given: Mapping[str, Any]) -> dict[str, str]:
    """The secret options given inside a step's dictionary: ``{name as given: the option's own name}``."""
    secret = _MODULES[name].secret_options
    return {option: secret[option] for option in sorted(given) if option in secret}


def inside_secrets(params: Mapping[str, Any]) -> set[str]:
    """The values of secret options given inside the step dictionaries (refused by ``plan``), to be masked."""
    values: set[str] = set()
    for name in STEP_NAMES:
        given = params.get(name)
        if not isinstance(given, Mapping):
            continue
        for option in _secrets_inside(name, given):
            value = given[option]
            if value is not None and not isinstance(value, (bool, Mapping, list)) and str(value):
                values.add(str(value))
                values.update(url_secrets(str(value)))
    return values


def plan(params: Mapping[str, Any]) -> list[_Run]:
    """Every step to run, in order, its options validated. Raises ``NothingChanged`` for the first bad one."""
    runs: list[_Run] = []
    for name in STEP_NAMES:
        given = params.get(name)
        if given is None:
            continue
        module = _MODULES[name]
        inside = _secrets_inside(name, given)
        if inside:
            hints = list(dict.fromkeys(_SECRET_HINTS[own] for own in inside.values()))
            raise NothingChanged(
                f"{name}: {', '.join(inside)} must not be inside the {name} options of reset_steps, where Ansible "
                f"would not keep {'it' if len(inside) == 1 else 'them'} secret; {'; '.join(hints)}; "
                f"or run threadring.ringhub.{name} on its own",
                failed_step=name,
            )
        if name == "redis_flush":
            if not params.get("redis_urls"):
                raise NothingChanged("redis_flush: redis_urls is empty: name the Redis to flush", failed_step=name)
            for index, url in enumerate(params.get("redis_urls") or []):
                label = f"redis_flush[{index}]"
                runs.append(_Run(label, module, *_validate(module, label, {**given, "redis_url": url})))
            continue
        top, option = _SECRET_OF[name]
        step_given = dict(given)
        if params.get(top) is not None:
            step_given[option] = params[top]
        runs.append(_Run(name, module, *_validate(module, name, step_given)))
    return runs


def step_secrets(runs: list[_Run]) -> set[str]:
    """What ``option_secrets`` finds in each step's options (passwords inside URLs, as written and decoded),
    and the values Ansible's validation of each step's options found secret."""
    secrets: set[str] = set()
    for run in runs:
        secrets |= option_secrets(run.module.spec(), run.params, run.module.options.get("secret_env", ()))
        secrets |= {value for value in run.no_log_values if value}
    return secrets


def check_later_steps(runs: list[_Run], module: Any) -> None:
    """Check every step after the first as its module checks before it changes anything; changes nothing.

    The first step checks itself before it changes anything; a later one would check itself only after the
    steps before it have changed things.
    """
    for run in runs[1:]:
        if run.module.check is None:
            continue
        try:
            with nothing_changed_on_failure():
                run.module.check(run.params, _StepModule(module, run.params))
        except RingHubError as exc:
            exc.msg = f"{run.label}: {exc.msg}"
            exc.add_context(failed_step=run.label)
            raise


def _changed_so_far(steps: Mapping[str, Any]) -> list[str]:
    changed = []
    for name, result in steps.items():
        for i, item in enumerate(result if isinstance(result, list) else [result]):
            if item.get("changed"):
                changed.append(f"{name}[{i}]" if isinstance(result, list) else name)
    return changed


def _in_context(exc: RingHubError, label: str, changed: list[str]) -> RingHubError:
    """The failure of step ``label`` as the failure of the run, after the steps in ``changed`` changed things."""
    if not changed:
        return exc
    msg = exc.msg.rstrip().rstrip(".;")
    done = f"{', '.join(changed)} (their results are in steps)"
    if isinstance(exc, NothingChanged):
        # The step's "nothing was changed" is not true of the run: say what the steps before it did instead.
        converted = RingHubError(f"{msg}; {label} changed nothing, but the steps before it did: {done}", **exc.details)
        converted.warnings = list(exc.warnings)
        return converted
    exc.msg = f"{msg}; the steps before {label} changed things: {done}"
    return exc


def run_steps(params: Mapping[str, Any], module: Any) -> Outcome:
    """The reset_steps module: validate every step, then run them in order (``module`` is the AnsibleModule)."""
    started = time.monotonic()
    module.no_log_values.update(inside_secrets(params))
    try:
        runs = plan(params)
        module.no_log_values.update(step_secrets(runs))
        if not module.check_mode:  # in check mode no step changes anything: each checks itself as it runs
            check_later_steps(runs, module)
    except RingHubError as exc:
        exc.add_context(steps={}, seconds={"total": round(time.monotonic() - started, 3)})
        raise
    steps: dict[str, Any] = {}
    warnings: list[str] = []
    diffs: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for run in runs:
        step_started = time.monotonic()
        try:
            outcome = run.module.work(run.params, _StepModule(module, run.params))
        except Exception as exc:
            # A bug in a step is a failure of the run too: the results of the steps before it still go out.
            error = (
                exc
                if isinstance(exc, RingHubError)
                else RingHubError(f"{run.label} failed unexpectedly: {type(exc).__name__}: {exc}")
            )
            if module.check_mode and not isinstance(error, (NothingChanged, OutcomeUnknown)):
                error = NothingChanged.from_error(error)  # in check mode no step changes anything
            changed = [] if module.check_mode else _changed_so_far(steps)
            failure = _in_context(error, run.label, changed)
            seconds[run.label] = round(time.monotonic() - step_started, 3)
            seconds["total"] = round(time.monotonic() - started, 3)
            failure.add_context(warnings, failed_step=run.label, steps=steps, seconds=seconds, changed=bool(changed))
            if failure is exc:
                raise
            raise failure from exc
        seconds[run.label] = round(time.monotonic() - step_started, 3)
        warnings.extend(outcome.warnings)
        result = {"changed": outcome.changed, **outcome.result}
        if run.module.name == "redis_flush":
            steps.setdefault("redis_flush", []).append(result)
        else:
            steps[run.module.name] = result
        if outcome.diff is not None:
            diffs.append({**outcome.diff, "before_header": run.label, "after_header": run.label})
    changed = _changed_so_far(steps)
    return Outcome(
        changed=bool(changed),
        result={
            "steps": steps,
            "ran": [run.label for run in runs],
            "seconds": {**seconds, "total": round(time.monotonic() - started, 3)},
        },
        warnings=warnings,
        diff=diffs if diffs else None,
    )
