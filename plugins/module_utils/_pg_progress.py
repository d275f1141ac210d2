# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_schema_reset's ``progress_file``: its phase and the backup's progress, for a playbook polling an async task.

Every phase change, and every ``PROGRESS_INTERVAL`` seconds while ``pg_dump``
runs, replaces a small JSON file (same-directory temp file, mode 0600, rename).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

# Seconds between two writes of the progress file while pg_dump runs.
PROGRESS_INTERVAL = 0.5
PROGRESS_PHASES = (
    "validate", "connect", "lock", "preflight", "count", "backup", "verify_backup", "restore_drill", "reset", "done",
    "failed",
)  # fmt: skip


def _iso_now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Progress:
    """The ``progress_file`` of one run; with ``path`` None every call is a no-op.

    Each write replaces the whole file atomically: a temp file in the same
    directory (``mkstemp``: mode 0600), then ``os.replace``. A reader sees the old
    or the new JSON, never half of one. Only the first write (``start()``) may fail
    the run; a later write that fails leaves ``warning`` set and the run goes on.
    Nothing secret goes in: names, sizes, times, and an error already masked
    (``redact`` is applied once more).
    """

    def __init__(self, path: str | None, check_mode: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.redact: Callable[[str], str] = str
        self.begun = clock()
        self.phase_begun = self.begun
        self.dump_begun: float | None = None
        self.writes = 0
        self.warning: str | None = None
        # What the file held before this run replaced it (an earlier run's last report), and its text.
        self.previous: dict[str, Any] | None = None
        self._previous_text: str | None = None
        self.data: dict[str, Any] = {
            "phase": "validate",
            "started": _iso_now(),
            "updated": None,
            "elapsed": 0.0,
            "phase_elapsed": 0.0,
            "check_mode": check_mode,
            "database": None,
            "schema": None,
            "database_size": None,
            "backup_path": None,
            "backup_bytes": 0,
            "rate_bytes_per_s": 0.0,
            "failed_phase": None,
            "error": None,
            "summary": None,
        }

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def start(self) -> None:
        """The first write (phase ``validate``): a path that cannot be written fails before anything else.

        The file's earlier content (the last report of an earlier run) is kept in ``previous``.
        """
        if self.path:
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self._previous_text = fh.read()
                loaded = json.loads(self._previous_text)
                self.previous = loaded if isinstance(loaded, dict) else None
            except (OSError, ValueError):
                self.previous = None
        self._write(strict=True)

    def restore_previous(self) -> None:
        """Put the earlier run's report back (this run was refused before it owned the file); never raises."""
        if not self.path or self._previous_text is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self._previous_text)
            os.replace(tmp, self.path)
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def set(self, **fields: Any) -> None:
        """Change fields without writing (they go out with the next write)."""
        self.data.update(fields)

    def phase(self, name: str, **fields: Any) -> None:
        self.data.update(fields, phase=name)
        self.phase_begun = self.clock()
        self._write()

    def dump_started(self, path: str) -> None:
        self.dump_begun = self.clock()
        self.data.update(backup_path=path, backup_bytes=0, rate_bytes_per_s=0.0)
        self._write()

    def dump_size(self, size: int) -> None:
        """The backup file's size now; the rate is the average since pg_dump started."""
        seconds = self.clock() - (self.dump_begun if self.dump_begun is not None else self.phase_begun)
        self.data.update(backup_bytes=size, rate_bytes_per_s=round(size / seconds, 1) if seconds > 0 else 0.0)
        self._write()

    def done(self, summary: str) -> None:
        self.phase("done", summary=summary)

    def fail(self, msg: str) -> None:
        """Phase ``failed`` with the (masked) error; never raises."""
        failed_phase = self.data["phase"] if self.data["phase"] not in ("done", "failed") else None
        self.data.update(failed_phase=failed_phase, error=self.redact(msg))
        try:
            self.phase("failed")
        except RingHubError:
            pass

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return dict(
            self.data,
            updated=_iso_now(),
            elapsed=round(now - self.begun, 3),
            phase_elapsed=round(now - self.phase_begun, 3),
        )

    def _write(self, strict: bool = False) -> None:
        if not self.path:
            return
        text = json.dumps(self.snapshot()) + "\n"
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
            tmp = None
            self.writes += 1
        except OSError as exc:
            reason = f"progress_file {self.path}: cannot write it ({exc.strerror or exc})"
            if strict or self.writes == 0:
                raise RingHubError(
                    f"{reason}: its directory must exist and be writable by the user running the module",
                    path=self.path,
                ) from None
            self.warning = self.warning or f"{reason}; the run went on without progress reports"
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
