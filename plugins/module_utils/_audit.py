# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit records: one JSON line per event, secrets masked, appended atomically.

``append_event(params, files)`` is the audit_log module. A new audit file is
created mode 0600 and then gets the task's file options (``mode``, ``owner``,
``group``...) through Ansible's helpers (``_files.Files``); an existing one keeps
its attributes.

``remove_files`` names files the run is done with (the reset's progress file): they
are removed only once the line is written and synced, so a run that fails before
that leaves them. A listed directory (or any path that is not a regular file or
a symlink) is refused before the line is written.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import socket
import stat
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    MASK,
    NothingChanged,
    Outcome,
    RingHubError,
    redact,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files, _fsync_dir

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
        remove_files=dict(type="list", elements="path", default=[]),
    )


MODULE_OPTIONS: dict[str, Any] = dict(add_file_common_args=True)


def append_event(params: dict[str, Any], files: Files) -> Outcome:
    """The audit_log module: build the record, append it, remove ``remove_files`` (not in check mode), return it."""
    record = build_record(params["event"], params["status"], params["details"], params["operator"])
    path = os.path.abspath(params["path"])
    file_args = files.task_args(path)
    files.differences(file_args)  # Ansible validates mode, owner and group before anything is written
    to_remove = removable_paths(params.get("remove_files") or [], path)
    removed: list[str] = []
    if not files.check_mode:
        if append_record(path, record):
            files.set_attributes(file_args)
        removed = remove_after_write(to_remove, path)
    # The invocation echo shows the masked details, never the raw ones.
    invocation = {"module_args": dict(params, details=record["details"])}
    return Outcome(
        changed=True,
        result={
            "record": json.loads(json.dumps(record)),
            "path": path,
            "removed": removed,
            "invocation": invocation,
        },
    )


def removable_paths(paths: list[str], audit_path: str) -> list[str]:
    """``paths`` made absolute, without repeats; a ``NothingChanged`` for one that could not be removed as a file.

    Runs before the line is written: a listed directory, fifo, socket or device, or
    the audit file itself, fails the task with nothing written and nothing removed.
    A path that does not exist (or whose parent is not a directory) is kept: it
    is reported as not removed.
    """
    wanted = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    for target in wanted:
        if target == audit_path:
            raise NothingChanged(
                f"remove_files names the audit file {target} itself: the audit line would be removed with it",
                path=audit_path,
            )
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            continue  # missing: nothing to remove (it is not reported as removed)
        if stat.S_ISDIR(mode):
            raise NothingChanged(
                f"remove_files removes regular files and symlinks, not directories: {target} is a directory; "
                "the audit line was not written",
                path=audit_path,
            )
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise NothingChanged(
                f"remove_files removes regular files and symlinks: {target} is neither; the audit line was not written",
                path=audit_path,
            )
    return wanted


def remove_after_write(paths: list[str], audit_path: str) -> list[str]:
    """Remove each of ``paths`` (the line is already in ``audit_path``); the ones removed.

    Every path is tried; a failure to remove any of them is one ``RingHubError`` that
    names each file and says the line was written (running the task again would
    write it twice).
    """
    removed: list[str] = []
    failed: dict[str, str] = {}
    for target in paths:
        try:
            os.unlink(target)
        except (FileNotFoundError, NotADirectoryError):
            continue  # missing (a parent that is not a directory holds nothing either)
        except OSError as exc:
            failed[target] = exc.strerror or str(exc)
            continue
        removed.append(target)
    for directory in dict.fromkeys(os.path.dirname(p) for p in removed):
        _fsync_dir(directory)
    if failed:
        reasons = "; ".join(f"{target}: {reason}" for target, reason in failed.items())
        raise RingHubError(
            f"remove_files could not remove {reasons}. The audit line WAS written to {audit_path} "
            f"(running the task again would write it twice): remove {'it' if len(failed) == 1 else 'them'} by hand",
            path=audit_path,
            removed=removed,
            not_removed=list(failed),
            changed=True,
        )
    return removed


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
    """Append ``record`` as one line (one ``write`` in append mode, then ``fsync``); whether the file was created.

    A new file is created mode 0600 and its directory is synced too, so the line is
    on disk when this returns.
    """
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
        try:
            os.write(fd, line.encode("utf-8"))
        except OSError as exc:
            raise RingHubError(f"cannot write audit file {path}: {exc.strerror}", path=path) from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise RingHubError(
                f"the audit line was written to {path} but could not be synced to disk: {exc.strerror}",
                path=path,
                changed=True,
            ) from exc
    finally:
        os.close(fd)
    if created:
        _fsync_dir(parent)
    return created
