# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit records: one JSON line per event, secrets masked, appended atomically."""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import socket
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    MASK,
    RingHubError,
    redact,
)

SECRET_KEY_RE = re.compile(r"pass(word|phrase)?|secret|token|private_?key|credential|api_?key", re.I)


def mask_secrets(value: Any) -> Any:
    """Deep copy of ``value`` with secret-looking keys masked and URL passwords hidden."""
    if isinstance(value, dict):
        return {
            str(k): (MASK if SECRET_KEY_RE.search(str(k)) and v not in (None, "") else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def utc_now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def build_record(
    event: str, status: str, details: dict[str, Any] | None, operator: str | None = None
) -> dict[str, Any]:
    if operator is None:
        operator = os.environ.get("SUDO_USER") or _login_user()
    return {
        "time": utc_now_iso(),
        "event": event,
        "status": status,
        "operator": operator,
        "host": socket.gethostname(),
        "details": mask_secrets(details or {}),
    }


def _login_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def append_record(path: str, record: dict[str, Any], mode: int = 0o600) -> None:
    """Append ``record`` as one line; create the file with ``mode`` if missing."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n"
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise RingHubError(f"cannot write audit file {path}: {parent} is not a directory", path=path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RingHubError(f"cannot create the audit directory {parent}: {exc.strerror}", path=path) from exc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    except OSError as exc:
        raise RingHubError(f"cannot open audit file {path}: {exc.strerror}", path=path) from exc
    try:
        os.write(fd, line.encode("utf-8"))
    except OSError as exc:
        raise RingHubError(f"cannot write audit file {path}: {exc.strerror}", path=path) from exc
    finally:
        os.close(fd)
