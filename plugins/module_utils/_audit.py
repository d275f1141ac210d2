# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit records: one JSON line per event, secrets masked, appended atomically.

``append_event(params, files)`` is the audit_log module. A new audit file is
created mode 0600 and then gets the task's file options (``mode``, ``owner``,
``group``...) through Ansible's helpers (``_files.Files``); an existing one keeps
its attributes.
"""

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
    Outcome,
    RingHubError,
    redact,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files

STATUSES = ("started", "succeeded", "failed", "aborted", "info")
DEFAULT_STATUS = "info"
DEFAULT_MODE = "0600"


def argument_spec() -> dict[str, Any]:
    """The options of audit_log (``mode`` and the other file options are Ansible's, for a new audit file)."""
    return dict(
        path=dict(type="path", required=True),
        event=dict(type="str", required=True),
        status=dict(type="str", default=DEFAULT_STATUS, choices=list(STATUSES)),
        details=dict(type="dict", default={}),
        operator=dict(type="str"),
        mode=dict(type="raw", default=DEFAULT_MODE),
    )


MODULE_OPTIONS: dict[str, Any] = dict(add_file_common_args=True)


def append_event(params: dict[str, Any], files: Files) -> Outcome:
    """The audit_log module: build the record, append it (not in check mode), return it."""
    record = build_record(params["event"], params["status"], params["details"], params["operator"])
    path = os.path.abspath(params["path"])
    file_args = files.task_args(path)
    files.differences(file_args)  # Ansible validates mode, owner and group before anything is written
    if not files.check_mode and append_record(path, record):
        files.set_attributes(file_args)
    # The invocation echo shows the masked details, never the raw ones.
    invocation = {"module_args": dict(params, details=record["details"])}
    return Outcome(
        changed=True, result={"record": json.loads(json.dumps(record)), "path": path, "invocation": invocation}
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


def append_record(path: str, record: dict[str, Any]) -> bool:
    """Append ``record`` as one line (one ``write`` in append mode); whether the file was created (mode 0600)."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n"
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise RingHubError(f"cannot write audit file {path}: {parent} is not a directory", path=path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RingHubError(f"cannot create the audit directory {parent}: {exc.strerror}", path=path) from exc
    created = not os.path.exists(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RingHubError(f"cannot open audit file {path}: {exc.strerror}", path=path) from exc
    try:
        os.write(fd, line.encode("utf-8"))
    except OSError as exc:
        raise RingHubError(f"cannot write audit file {path}: {exc.strerror}", path=path) from exc
    finally:
        os.close(fd)
    return created
