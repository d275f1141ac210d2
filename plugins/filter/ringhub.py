# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the reset roles: the hub's ``.env``, connection URLs without their passwords,
setting checks, and whether the controller can show a prompt.

Documentation of each filter is in the ``<name>.yml`` file beside this one.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError, mask_url, redact

# Every task that uses one of these filters runs in a worker process forked from ansible-playbook, which
# imports this file afresh: the module_utils behind the filters (psycopg2, cryptography, urllib's HTTP
# stack) are imported only by the filters that need them, so a task pays for what it uses.


def _instance_did(hub_url: str) -> str:
    from ansible_collections.threadring.ringhub.plugins.module_utils._did import instance_did as did_of

    return did_of(hub_url)


def _pg() -> Any:
    from ansible_collections.threadring.ringhub.plugins.module_utils import _pg as pg

    return pg


def mask_database_url(url: str) -> str:
    return _pg().mask_database_url(url)


def parse_database_url(url: str) -> Any:
    return _pg().parse_database_url(url)


# The hub's own variables the reset can take from its compose .env.
HUB_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "INSTANCE_DID", "RING_HUB_URL", "ROOT_RING_SLUG", "NODE_ENV")
REDIS_SCHEMES = ("redis", "rediss", "unix")
RESTART_BACKENDS = ("command", "docker_compose", "none")
PATH_SETTINGS = ("migrations_dir", "backup_dir", "key_path", "env_file", "web_root")


def envfile(text: Any, names: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
    """The variables of a compose ``.env`` text (the last assignment of a name wins, as in Compose)."""
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise AnsibleFilterError(f"envfile expects the text of an .env file, got {type(text).__name__}")
    from ansible_collections.threadring.ringhub.plugins.module_utils._envfile import parse_entries

    wanted = None if names is None else set(names)
    values: dict[str, str] = {}
    for entry in parse_entries(text):
        if wanted is None or entry["name"] in wanted:
            values[entry["name"]] = entry["value"]
    return values


def pg_url_info(url: Any, strict: bool = True) -> dict[str, Any] | None:
    """What a Prisma ``DATABASE_URL`` points at, never its password.

    With ``strict=False`` an empty or unparsable URL gives None instead of an error.
    """
    if not isinstance(url, str) or not url.strip():
        if not strict:
            return None
        raise AnsibleFilterError("pg_url_info expects a postgresql:// URL, got an empty value")
    try:
        spec = parse_database_url(url)
    except RingHubError as exc:
        if not strict:
            return None
        raise AnsibleFilterError(exc.msg) from None
    return {
        "database": spec.dbname,
        "host": spec.host or "(libpq default)",
        "port": spec.port,
        "user": spec.user,
        "schema": spec.schema,
        "url": spec.masked_url or mask_database_url(url),
        "has_password": spec.password is not None,
    }


def masked_url(url: Any) -> str:
    """``url`` with any password replaced by ``********`` (PostgreSQL, Redis or any other scheme);
    in a text that is not one URL, the password of every URL in it."""
    if url is None:
        return ""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")) and not any(c.isspace() for c in text):
        return mask_database_url(text)
    if "://" in text and not any(c.isspace() for c in text):
        return mask_url(text)
    return redact(text)


def instance_did(hub_url: Any) -> str:
    """``did:web:<hostname of hub_url>``, the hub's issuer DID."""
    try:
        return _instance_did(str(hub_url))
    except RingHubError as exc:
        raise AnsibleFilterError(exc.msg) from None


def _redis_problem(url: Any) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return "ringhub_redis_url (REDIS_URL) is not set"
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return (
            f"ringhub_redis_url {mask_url(url)} does not parse as a URL: its port is not a number from 0 to 65535"
            " (or a '[' has no ']'); percent-encode / ? # @ : [ ] in a password"
        )
    if parts.scheme not in REDIS_SCHEMES:
        return f"ringhub_redis_url must start with redis://, rediss:// or unix://, got {mask_url(url)}"
    if parts.scheme != "unix" and not parts.hostname:
        return f"ringhub_redis_url {mask_url(url)} names no host"
    return None


def _http_url_problem(name: str, url: Any) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return f"{name} is not set"
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return f"{name} {url!r} does not parse as a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} must be an http:// or https:// URL with a host, got {mask_url(url)!r}"
    if parts.password is not None:
        return f"{name} must not carry credentials: {mask_url(url)!r}"
    return None


# --------------------------------------------------------------------------- settings

# Settings the hub's compose .env can supply, and the variable of the same meaning there.
ENV_SETTINGS = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "instance_did": "INSTANCE_DID",
    "hub_url": "RING_HUB_URL",
    "root_slug": "ROOT_RING_SLUG",
    "node_env": "NODE_ENV",
}
SECRET_SETTINGS = ("database_url", "redis_url")
# Settings that are free text: shown with the password of any URL in them masked.
TEXT_SETTINGS = ("restart_command",)


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def resolve_settings(
    given: Mapping[str, Any],
    env: Mapping[str, Any] | None = None,
    env_file: str | None = None,
    limit: str | None = None,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """The reset settings of one host: each ``ringhub_<name>`` variable, else the hub's own
    variable in its compose ``.env``, else a default; with the source of every value and a view
    of them fit for output (passwords masked).

    ``given`` maps setting names (without ``ringhub_``) to the variables' values (None when unset).
    """
    if not isinstance(given, Mapping):
        raise AnsibleFilterError("resolve_settings expects a dict of settings")
    env = env or {}
    where = env_file or "the env file"
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in given.items():
        values[key] = None if _unset(value) else value
        sources[key] = f"variable ringhub_{key}" if values[key] is not None else "unset"
    for key, env_name in ENV_SETTINGS.items():
        if values.get(key) is None and not _unset(env.get(env_name)):
            values[key] = env[env_name]
            sources[key] = f"{env_name} in {where}"
    if values.get("root_slug") is None:
        values["root_slug"] = "spool"
        sources["root_slug"] = "default"
    if values.get("instance_did") is None and values.get("hub_url"):
        try:
            values["instance_did"] = _instance_did(str(values["hub_url"]))
            sources["instance_did"] = "derived from the hub URL (did:web:<hostname>)"
        except RingHubError:
            pass
    if values.get("api_url") is None and values.get("hub_url"):
        values["api_url"] = values["hub_url"]
        sources["api_url"] = "the hub URL"
    if values.get("environment") is None:
        groups = list(groups or [])
        if limit and limit in groups:
            values["environment"] = limit
            sources["environment"] = f"the inventory group given with --limit ({limit})"
        elif len(groups) == 1:
            values["environment"] = groups[0]
            sources["environment"] = f"the host's only inventory group ({groups[0]})"
    view = {
        key: (masked_url(value) if key in SECRET_SETTINGS + TEXT_SETTINGS and value else value)
        for key, value in values.items()
    }
    database = None
    if values.get("database_url"):
        try:
            database = pg_url_info(values["database_url"])
        except AnsibleFilterError:
            database = None
    return {**values, "sources": sources, "view": view, "database": database}


def _data_problems(settings: Mapping[str, Any]) -> list[str]:
    from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import DID_RE, SLUG_RE

    problems: list[str] = []
    url = settings.get("database_url")
    if _unset(url) or not isinstance(url, str):
        problems.append("ringhub_database_url (DATABASE_URL) is not set")
    else:
        try:
            parse_database_url(url)
        except RingHubError as exc:
            problems.append(f"ringhub_database_url: {exc.msg}")
    redis_problem = _redis_problem(settings.get("redis_url"))
    if redis_problem:
        problems.append(redis_problem)
    did = settings.get("instance_did")
    if not isinstance(did, str) or not DID_RE.match(did):
        problems.append(f"ringhub_instance_did (INSTANCE_DID) must be a DID like did:web:hub.example.org, got {did!r}")
    hub_problem = _http_url_problem("ringhub_hub_url (RING_HUB_URL)", settings.get("hub_url"))
    if hub_problem:
        problems.append(hub_problem)
    slug = settings.get("root_slug")
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        problems.append(
            f"ringhub_root_slug (ROOT_RING_SLUG) must be lower-case letters, digits and '-' "
            f"(1-100 characters), got {slug!r}"
        )
    for key in PATH_SETTINGS:
        value = settings.get(key)
        if key == "backup_dir" and settings.get("backup") is False:
            continue
        if _unset(value) or not isinstance(value, str):
            problems.append(f"ringhub_{key} is not set")
        elif not value.startswith(("/", "~")):
            problems.append(f"ringhub_{key} must be an absolute path, got {value!r}")
    environment = settings.get("environment")
    if not isinstance(environment, str) or not re.match(r"^[A-Za-z0-9_.-]{1,63}$", environment):
        problems.append(
            "ringhub_environment must name the environment the database belongs to (letters, digits, "
            f"'_', '.', '-'), got {environment!r}; by default it is the inventory group given with --limit"
        )
    return problems


def _api_problems(settings: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    backend = settings.get("restart_backend")
    if backend not in RESTART_BACKENDS:
        problems.append(f"ringhub_restart_backend must be one of {', '.join(RESTART_BACKENDS)}, got {backend!r}")
        return problems
    if backend == "command":
        command = settings.get("restart_command")
        if _unset(command) or not isinstance(command, str):
            problems.append("ringhub_restart_command is not set (needed with ringhub_restart_backend=command)")
    if backend != "none":
        api_problem = _http_url_problem("ringhub_api_url", settings.get("api_url"))
        if api_problem:
            problems.append(api_problem)
        timeout = settings.get("ready_timeout")
        try:
            if isinstance(timeout, bool) or float(timeout) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"ringhub_ready_timeout must be a positive number of seconds, got {timeout!r}")
    return problems


def settings_problems(settings: Mapping[str, Any], data: bool = True, api: bool = True) -> list[str]:
    """Every problem of a host's resolved settings, each naming its variable (empty when all is well).

    ``data`` checks what the database, Redis and key steps need (the primary host), ``api``
    what the restart and readiness wait need (every API host).
    """
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError("settings_problems expects a dict of settings")
    problems: list[str] = []
    if data:
        problems += _data_problems(settings)
    if api:
        problems += _api_problems(settings)
    return problems


# --------------------------------------------------------------------------- confirmations


def phrase_mismatch(typed: Any, expected: str) -> str:
    """Why ``typed`` is not exactly ``expected`` ('' when it is), without repeating what was typed."""
    text = "" if typed is None else str(typed)
    if text == expected:
        return ""
    if not text:
        return "the answer was empty"
    if text.strip() == expected:
        return "it has spaces before or after it"
    if text.lower() == expected.lower():
        return "it differs in capital letters"
    return "it is another text"


def confirmation_check(given: Any, expected: Any, prompt: bool = False) -> dict[str, Any]:
    """The state of the typed confirmations given as variables, in order.

    ``given`` holds the variables' values (None when unset), ``expected`` the phrases. Returns ``ask``:
    the numbers (from 1) of the phrases still to be asked at a prompt (unset or empty, when ``prompt``);
    ``missing``: the variable names of the phrases that are unset while nothing can be asked; ``wrong``:
    the first phrase given that does not match (``index``, ``name``, ``why``, ``expected``), or None.
    """
    if not isinstance(given, (list, tuple)) or not isinstance(expected, (list, tuple)) or len(given) != len(expected):
        raise AnsibleFilterError("confirmation_check expects two lists of the same length: the answers and the phrases")
    ask: list[int] = []
    missing: list[str] = []
    wrong: dict[str, Any] | None = None
    for index, (typed, phrase) in enumerate(zip(given, expected, strict=True), 1):
        name = f"ringhub_confirm_{index}"
        if typed is None or (prompt and str(typed) == ""):
            if prompt:
                ask.append(index)
            else:
                missing.append(name)
            continue
        why = phrase_mismatch(typed, str(phrase))
        if why and wrong is None:
            wrong = {"index": index, "name": name, "why": why, "expected": str(phrase)}
    return {"ask": ask, "missing": missing, "wrong": wrong}


# --------------------------------------------------------------------------- progress


def _human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def progress_line(progress: Any) -> str:
    """One line for a progress file of pg_schema_reset: phase, bytes written, rate, elapsed seconds."""
    if not isinstance(progress, Mapping) or not progress:
        return "starting"
    parts = [str(progress.get("phase") or "starting")]
    written = progress.get("backup_bytes")
    if isinstance(written, (int, float)) and not isinstance(written, bool):
        text = f"backup {_human_bytes(written)} written"
        size = progress.get("database_size")
        if isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0:
            text += f" (database {_human_bytes(size)})"
        parts.append(text)
    rate = progress.get("rate_bytes_per_s")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
        parts.append(f"{_human_bytes(rate)}/s")
    elapsed = progress.get("elapsed")
    if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
        parts.append(f"{elapsed:.1f} s elapsed")
    if progress.get("phase") == "failed" and progress.get("failed_phase"):
        parts.append(f"failed in {progress['failed_phase']}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- the controller's stdin


def _controller_pid() -> int:
    """The ansible-playbook process: the parent of a worker, or this process itself."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getpid()


def _tty_via_ps(pid: int) -> bool:
    """Fallback where /proc is missing: ``ps`` names the terminal of ``pid`` ('?' or '??' when none)."""
    try:
        out = subprocess.run(
            ["ps", "-o", "tty=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out) and out.strip("?-") != ""


def _in_foreground(pid: int, fd: int | None) -> bool:
    """True when ``pid`` is in the foreground process group of its terminal.

    From another session (a worker) ``tcgetpgrp`` is refused, so fields 5 (pgrp) and
    8 (tpgid) of ``/proc/<pid>/stat`` are compared instead.
    """
    try:
        if fd is not None:
            return os.tcgetpgrp(fd) == os.getpgrp()
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[2]) == int(fields[5])
    except (OSError, ValueError, IndexError):
        return False


def controller_stdin(_input: Any = None) -> dict[str, Any]:
    """Whether the standard input of the controller (the ansible-playbook process) is a terminal
    in the foreground: the condition under which ``ansible.builtin.pause`` can read an answer.

    Workers run with stdin on /dev/null, so the answer is read from the controller's own fd 0.
    """
    pid = _controller_pid()
    own = pid == os.getpid()
    result: dict[str, Any] = {"pid": pid, "terminal": False, "foreground": False, "interactive": False}
    fd = -1
    try:
        if own:
            fd = os.dup(0)
        elif os.path.isdir(f"/proc/{pid}/fd"):
            fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        else:
            terminal = _tty_via_ps(pid)
            result.update(terminal=terminal, foreground=terminal, interactive=terminal)
            result["detail"] = "a terminal (from ps)" if terminal else "not a terminal (from ps)"
            return result
    except OSError as exc:
        result["detail"] = f"stdin is not readable ({exc.strerror})"
        return result
    try:
        terminal = os.isatty(fd)
        foreground = False
        if terminal:
            foreground = _in_foreground(pid, fd if own else None)
    finally:
        os.close(fd)
    result.update(terminal=terminal, foreground=foreground, interactive=terminal and foreground)
    if not terminal:
        result["detail"] = "stdin is not a terminal"
    elif not foreground:
        result["detail"] = "ansible-playbook runs in the background of its terminal"
    else:
        result["detail"] = "stdin is a terminal"
    return result


class FilterModule:
    """Filters of threadring.ringhub."""

    def filters(self) -> dict[str, Any]:
        return {
            "envfile": envfile,
            "pg_url_info": pg_url_info,
            "masked_url": masked_url,
            "instance_did": instance_did,
            "settings_problems": settings_problems,
            "resolve_settings": resolve_settings,
            "controller_stdin": controller_stdin,
            "progress_line": progress_line,
            "phrase_mismatch": phrase_mismatch,
            "confirmation_check": confirmation_check,
        }
