# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runner every module's ``main()`` uses, its result and error types, secret masking.

A module is its documentation and one call in ``main()``; the work is a pure
function in module_utils that takes the parameters and returns an ``Outcome``::

    # plugins/module_utils/_greeting.py
    from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, Outcome

    STYLES = ("plain", "loud")

    def argument_spec() -> dict[str, Any]:
        return dict(
            path=dict(type="path", required=True),
            style=dict(type="str", default="plain", choices=list(STYLES)),
            hub_url=dict(type="str", no_log=True),  # a URL that may carry a password
        )

    MODULE_OPTIONS: dict[str, Any] = dict(required_if=[("style", "loud", ("hub_url",))])

    def greet(params: dict[str, Any], check_mode: bool) -> Outcome:
        path = params["path"]
        if not os.path.isdir(os.path.dirname(path)):
            raise NothingChanged(f"the directory of {path} does not exist", path=path)  # "...; nothing was changed"
        before = open(path).read() if os.path.exists(path) else ""
        after = "HELLO\n" if params["style"] == "loud" else "hello\n"
        if before != after and not check_mode:
            with open(path, "w") as fh:
                fh.write(after)
        return Outcome(changed=before != after, result={"path": path, "greeting": after.strip()},
                       warnings=[] if before else [f"{path} was empty"], diff={"before": before, "after": after})

    # plugins/modules/greeting.py (DOCUMENTATION, EXAMPLES, RETURN above)
    from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
    from ansible_collections.threadring.ringhub.plugins.module_utils import _greeting

    def main() -> None:
        run_as_module(_greeting.argument_spec(), lambda m: _greeting.greet(m.params, m.check_mode),
                      **_greeting.MODULE_OPTIONS)

``run_as_module()`` builds the ``AnsibleModule`` (check mode supported), fails at
once when a required library is missing, registers the passwords inside no_log
URL options (and the URL environment variables a module names) in
``no_log_values``, calls the work, emits its warnings through ``module.warn()``
on success and on failure, adds ``diff`` only under ``--diff`` and calls
``exit_json`` or ``fail_json`` once. A ``RingHubError`` becomes the failure:
its ``msg`` plus the sentence of its type, its ``details`` merged into the
result. ``docs/module_contract.md`` is the whole contract.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn
from urllib.parse import unquote, urlsplit

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

MASK = "********"


# -- errors --------------------------------------------------------------------------------


class RingHubError(Exception):
    """An error with a message fit for the operator: what failed and what to fix.

    ``details`` is merged into the module's failure result (never secrets);
    ``warnings`` are the warnings gathered before the failure, which the runner
    emits with it. A plain ``RingHubError`` says nothing about what was changed;
    its subclasses do, and the runner adds their ``sentence`` to the message.
    """

    sentence = ""  # appended to ``msg`` by the runner ("...; <sentence>")
    result_flag = ""  # set to true in the failure result by the runner

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details: dict[str, Any] = details
        self.warnings: list[str] = []

    def __str__(self) -> str:
        return self.msg  # a redacted ``msg`` is what tracebacks show too

    @property
    def operator_message(self) -> str:
        """``msg`` with the sentence of the error's type: what the task reports."""
        if not self.sentence:
            return self.msg
        return f"{self.msg.rstrip().rstrip('.;')}; {self.sentence}"

    def add_context(self, warnings: Iterable[str] = (), **details: Any) -> RingHubError:
        """Put the warnings gathered so far before the error's own; add details it does not have yet."""
        self.warnings = list(dict.fromkeys([*warnings, *self.warnings]))
        for key, value in details.items():
            self.details.setdefault(key, value)
        return self

    @classmethod
    def from_error(cls, error: RingHubError) -> RingHubError:
        """The same message, details and warnings as ``error``, as this type (and with its traceback)."""
        converted = cls(error.msg, **error.details)
        converted.warnings = list(error.warnings)
        return converted.with_traceback(error.__traceback__)


class NothingChanged(RingHubError):
    """Refused (or failed) before anything was changed: the managed state is as it was."""

    sentence = "nothing was changed"
    result_flag = "nothing_changed"


class RolledBack(NothingChanged):
    """Failed inside a database transaction that was rolled back: nothing was changed."""

    sentence = "the transaction was rolled back, nothing was changed"


class OutcomeUnknown(RingHubError):
    """The change was sent but its confirmation was lost (a COMMIT without an answer)."""

    sentence = "the outcome is unknown: check the state before running it again"
    result_flag = "outcome_unknown"


@contextmanager
def nothing_changed_on_failure() -> Iterator[None]:
    """Code inside changes nothing: a plain ``RingHubError`` leaves it as ``NothingChanged``.

    Errors that already say what changed (``NothingChanged``, ``RolledBack``,
    ``OutcomeUnknown``) pass unchanged.
    """
    try:
        yield
    except (NothingChanged, OutcomeUnknown):
        raise
    except RingHubError as exc:
        raise NothingChanged.from_error(exc) from None


@contextmanager
def failing_with(warnings: list[str], **details: Any) -> Iterator[None]:
    """A ``RingHubError`` raised inside takes ``warnings`` (as they are then) and ``details`` along."""
    try:
        yield
    except RingHubError as exc:
        exc.add_context(warnings, **details)
        raise


# -- the result ----------------------------------------------------------------------------

_RESERVED_KEYS = frozenset({"changed", "diff", "warnings", "failed", "msg", "exception"})


@dataclass
class Outcome:
    """What a module_utils entry point returns: the runner turns it into the task result.

    ``result`` holds the module's return values (RETURN); ``warnings`` go out
    through ``module.warn()``; ``diff`` (``{"before": ..., "after": ...}``) is
    added to the result only when the task runs with ``--diff``.
    """

    changed: bool
    result: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    diff: dict[str, Any] | list[dict[str, Any]] | None = None  # a list: one diff per step (reset_steps)

    def __post_init__(self) -> None:
        clash = _RESERVED_KEYS & set(self.result)
        if clash:
            raise TypeError(f"Outcome.result must not hold {sorted(clash)}: they are Outcome fields or Ansible's")


# -- the runner ----------------------------------------------------------------------------


class Library(NamedTuple):
    """A Python library a module needs on the managed host, as its guarded import found it."""

    name: str
    found: bool
    import_error: str | None = None


def run_as_module(
    argument_spec: dict[str, Any],
    work: Callable[[AnsibleModule], Outcome],
    *,
    libraries: Iterable[Library] = (),
    secret_env: Iterable[str] = (),
    **module_options: Any,
) -> NoReturn:
    """Run one module: the whole of a ``main()``. See the module docstring and docs/module_contract.md.

    ``module_options`` go to ``AnsibleModule`` (``mutually_exclusive``, ``required_if``,
    ``add_file_common_args``...); a module keeps them, with ``libraries`` and
    ``secret_env``, in its ``MODULE_OPTIONS``. ``secret_env`` names environment variables that
    may hold a URL the work reads (``DATABASE_URL``): their passwords are
    registered like those of no_log URL options.
    """
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **module_options)
    for library in libraries:
        if not library.found:
            module.fail_json(msg=missing_required_lib(library.name), exception=library.import_error)
    module.no_log_values.update(option_secrets(argument_spec, module.params, secret_env))
    try:
        outcome = work(module)
    except RingHubError as exc:
        for warning in dict.fromkeys(exc.warnings):
            module.warn(warning)
        failure = dict(exc.details)
        if exc.result_flag:
            failure[exc.result_flag] = True
        module.fail_json(msg=exc.operator_message, exception=traceback.format_exc(), **failure)
    for warning in dict.fromkeys(outcome.warnings):
        module.warn(warning)
    result = dict(outcome.result)
    if module._diff and outcome.diff is not None:
        result["diff"] = outcome.diff
    module.exit_json(changed=outcome.changed, **result)


def option_secrets(
    argument_spec: Mapping[str, Any], params: Mapping[str, Any], environment_names: Iterable[str] = ()
) -> set[str]:
    """The passwords inside no_log URL options (and the named environment variables), as written and decoded.

    Ansible registers a no_log option's whole value; a message that quotes only
    the password (a server's error, a URL cut by an unencoded ``/``) needs the
    password itself registered.
    """
    values = [params.get(name) for name, option in argument_spec.items() if option.get("no_log")]
    values += [os.environ.get(name) for name in environment_names]
    return {secret for value in values if isinstance(value, str) for secret in url_secrets(value)}


# -- URLs and secrets ----------------------------------------------------------------------


class _UrlParts(NamedTuple):
    head: str  # "scheme://"
    user: str
    password: str | None  # None: no password in the userinfo
    tail: str  # what follows the userinfo's "@" (or the whole rest without userinfo)
    cut_short: bool = False  # an unencoded / ? # in the password ended the authority before its "@"


_PASSWORD_PARAM_RE = re.compile(r"([?&](?:password|sslpassword)=)[^&#]*")


def userinfo_outside_netloc(parts: Any) -> bool:
    """True when an unencoded ``/``, ``?`` or ``#`` in the password pushed the ``@`` out of the authority.

    A real URL names its path (``/<db>``) before its query, so an ``@`` in the
    query after an empty path, or in the path or fragment, belongs to the userinfo.
    """
    if "@" in parts.netloc:
        return False
    return "@" in parts.path + parts.fragment or ("@" in parts.query and not parts.path)


def split_url(url: str) -> _UrlParts | None:
    """The userinfo of ``url`` as written (not decoded), or None when it is not a ``scheme://`` URL.

    The userinfo ends at the last ``@`` of the authority; when an unencoded
    ``/``, ``?`` or ``#`` in the password ends the authority early, at the last
    ``@`` of the whole URL (see ``userinfo_outside_netloc``).
    """
    head, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        return None
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    later_at = "@" in rest[len(netloc) :]
    if "@" in netloc:
        # "u:p@ss:w/rd@host": the authority "u:p@ss:w" ends in no valid port, so the password goes on.
        cut_short = later_at and not _valid_port(netloc.rpartition("@")[2])
    else:
        try:
            cut_short = userinfo_outside_netloc(urlsplit(url))
        except ValueError:
            cut_short = False
        if not cut_short:
            return _UrlParts(head + sep, "", None, rest)
    if cut_short:
        userinfo, _at, tail = rest.rpartition("@")
    else:
        userinfo, _at, hostinfo = netloc.rpartition("@")
        tail = hostinfo + rest[len(netloc) :]
    user, colon, password = userinfo.partition(":")
    return _UrlParts(head + sep, user, password if colon else None, tail, cut_short)


def _valid_port(hostinfo: str) -> bool:
    """Whether ``host[:port]`` (``[v6]:port`` too) has no port or a numeric one."""
    port = hostinfo.rpartition("]")[2] if hostinfo.startswith("[") else hostinfo
    return ":" not in port or port.rpartition(":")[2].isdigit() or not port.rpartition(":")[2]


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo and its ``password=``/``sslpassword=`` values as ``MASK``.

    The one URL masker of the collection (postgresql://, redis://, rediss://,
    unix://, any scheme). A password with an unencoded ``/ ? # @`` is masked up
    to the last ``@`` (a display may over-mask, it never shows a password). Text
    that is not a URL has every ``scheme://user:password@`` in it masked.
    """
    parts = split_url(url)
    if parts is None:
        return _mask_userinfo_regex(url)
    out = url
    if parts.password is not None:
        out = f"{parts.head}{parts.user}:{MASK}@{parts.tail}"
    return _PASSWORD_PARAM_RE.sub(rf"\g<1>{MASK}", out)


def url_secrets(url: str | None) -> list[str]:
    """The passwords in a URL (userinfo, ``password=``, ``sslpassword=``), as written and percent-decoded."""
    if not url:
        return []
    parts = split_url(url)
    if parts is None:
        return []
    found = [parts.password] if parts.password else []
    query = parts.tail.split("?", 1)[1].split("#", 1)[0] if "?" in parts.tail else ""
    found += re.findall(r"(?:^|&)(?:password|sslpassword)=([^&#]*)", query)
    return [secret for secret in dict.fromkeys([*found, *(unquote(f) for f in found)]) if secret]


_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")


def _mask_userinfo_regex(text: str) -> str:
    return _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Free ``text`` with every given secret, and the password of every URL in it, masked."""
    out = _mask_userinfo_regex(str(text))
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return out


# -- time ------------------------------------------------------------------------------------


class PhaseTimer:
    """Collects wall-clock seconds per named phase: ``with timer.phase("backup"): ...``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + self.clock() - start, 3)

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 3)
