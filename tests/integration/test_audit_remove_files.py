"""audit_log's remove_files run as Ansible runs it: the line on disk first, then the files, never one without the other.

Every case looks at the files themselves: the audit file's lines (or its bytes, when
nothing may have been written) and whether each listed path still exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._audit import remove_after_write
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from harness.ansible import run_module


def audit_args(audit: Path, *remove: Path | str) -> dict[str, object]:
    return {"path": str(audit), "event": "reset", "status": "succeeded", "remove_files": [str(p) for p in remove]}


def lines(audit: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def test_the_line_is_written_then_the_files_are_removed(tmp_path: Path) -> None:
    audit = tmp_path / "logs" / "audit.jsonl"
    progress = tmp_path / "backups" / ".ringhub-reset-progress.json"
    progress.parent.mkdir()
    progress.write_text('{"phase": "done"}')
    target = tmp_path / "kept.txt"
    target.write_text("the link's target stays")
    link = tmp_path / "progress-link"
    link.symlink_to(target)
    dangling = tmp_path / "dangling-link"
    dangling.symlink_to(tmp_path / "nowhere")

    res = run_module("audit_log", audit_args(audit, progress, link, dangling, progress))

    assert not res.failed, res.msg
    assert res.changed
    assert res.result["removed"] == [str(progress), str(link), str(dangling)]  # the repeat once
    assert not os.path.lexists(progress) and not os.path.lexists(link) and not os.path.lexists(dangling)
    assert target.read_text() == "the link's target stays"  # a symlink goes, not what it points to
    assert progress.parent.is_dir()
    [record] = lines(audit)
    assert record["event"] == "reset" and record["status"] == "succeeded"
    assert res.result["record"] == record


def test_a_missing_file_is_not_an_error_and_is_not_reported_removed(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    missing = tmp_path / "gone.json"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    under_a_file = blocker / "progress.json"  # its parent is a regular file: it cannot exist

    res = run_module("audit_log", audit_args(audit, missing, under_a_file))

    assert not res.failed, res.msg
    assert res.changed and res.result["removed"] == []
    assert len(lines(audit)) == 1
    assert blocker.read_text() == "x"


def test_without_remove_files_nothing_is_removed(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    res = run_module("audit_log", {"path": str(audit), "event": "verify"})
    assert not res.failed and res.changed and res.result["removed"] == []
    assert [r["event"] for r in lines(audit)] == ["verify"]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check_mode"])
def test_a_directory_is_refused_before_anything_is_written(tmp_path: Path, check: bool) -> None:
    audit = tmp_path / "audit.jsonl"
    first = run_module("audit_log", {"path": str(audit), "event": "reset", "status": "started"})
    assert not first.failed, first.msg
    before = audit.read_bytes()
    progress = tmp_path / "progress.json"
    progress.write_text("{}")
    directory = tmp_path / "backups"
    (directory / "inside").mkdir(parents=True)

    res = run_module("audit_log", audit_args(audit, progress, directory), check=check)

    assert res.failed
    assert str(directory) in res.msg and "is a directory" in res.msg
    assert "the audit line was not written" in res.msg and res.msg.endswith("nothing was changed")
    assert res.result["nothing_changed"] is True
    assert audit.read_bytes() == before  # no line, not even a partial one
    assert progress.read_text() == "{}"  # listed before the directory, and still there
    assert (directory / "inside").is_dir()


def test_a_fifo_and_the_audit_file_itself_are_refused(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text("")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    res = run_module("audit_log", audit_args(audit, fifo))
    assert res.failed and str(fifo) in res.msg and res.result["nothing_changed"] is True
    assert fifo.exists() and audit.read_bytes() == b""

    res = run_module("audit_log", audit_args(audit, f"{tmp_path}/./audit.jsonl"))
    assert res.failed and f"the audit file {audit}" in res.msg and res.result["nothing_changed"] is True
    assert audit.read_bytes() == b""


def test_check_mode_removes_nothing_and_writes_nothing(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    progress = tmp_path / "progress.json"
    progress.write_text('{"phase": "done"}')

    res = run_module("audit_log", audit_args(audit, progress), check=True)

    assert not res.failed, res.msg
    assert res.changed and res.result["removed"] == []
    assert progress.read_text() == '{"phase": "done"}'
    assert not audit.exists()


@contextlib.contextmanager
def unremovable_entries(directory: Path) -> Iterator[None]:
    """Make the entries of ``directory`` impossible to remove for the module (which runs as this user).

    An unprivileged user is stopped by mode 0500. Root ignores the mode; it is stopped by the
    immutable attribute (``chattr +i``, which needs CAP_LINUX_IMMUTABLE and a file system that has
    it): the case is skipped where neither works.
    """
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root, where only an immutable directory stops a removal, and chattr is missing")
    done = subprocess.run([chattr, "+i", str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i is refused here ({done.stderr.strip()}): no way to stop a removal")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_file_that_cannot_be_removed_fails_with_the_line_written_once(tmp_path: Path) -> None:
    audit = tmp_path / "logs" / "audit.jsonl"
    locked = tmp_path / "locked"
    locked.mkdir()
    stuck = locked / "progress.json"
    stuck.write_text('{"phase": "done"}')
    free = tmp_path / "other.json"
    free.write_text("{}")

    with unremovable_entries(locked):
        res = run_module("audit_log", audit_args(audit, stuck, free))
        assert stuck.exists()

    assert res.failed
    assert str(stuck) in res.msg
    assert f"The audit line WAS written to {audit}" in res.msg
    assert "nothing was changed" not in res.msg and "nothing_changed" not in res.result
    assert res.result["not_removed"] == [str(stuck)]
    assert res.result["removed"] == [str(free)] and not free.exists()  # the other file is still removed
    assert res.result["changed"] is True
    [record] = lines(audit)  # written, and once
    assert record["event"] == "reset" and record["status"] == "succeeded"


def test_a_real_removal_failure_names_the_file_and_the_written_line(tmp_path: Path) -> None:
    """The error path of the pure function, as root too: /proc refuses every unlink, whoever asks."""
    unremovable = "/proc/self/status"
    if not os.path.isfile(unremovable):
        pytest.skip("no /proc here")
    audit = tmp_path / "audit.jsonl"
    audit.write_text('{"event":"reset"}\n')
    free = tmp_path / "progress.json"
    free.write_text("{}")
    missing = tmp_path / "gone.json"

    with pytest.raises(RingHubError) as caught:
        remove_after_write([str(free), unremovable, str(missing)], str(audit))

    error = caught.value
    assert f"could not remove {unremovable}: " in error.msg
    assert f"The audit line WAS written to {audit}" in error.msg
    assert error.details["removed"] == [str(free)] and error.details["not_removed"] == [unremovable]
    assert error.details["changed"] is True
    assert not free.exists() and os.path.isfile(unremovable)
    assert audit.read_text() == '{"event":"reset"}\n'
