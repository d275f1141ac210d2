"""Files written through Ansible's own helpers: atomic replace, attributes, validation, backups."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files, backup_file

SPEC = {"path": {"type": "path", "required": True}, "mode": {"type": "raw"}}


def files_for(ansible_module, path: Path, check_mode: bool = False, **params) -> Files:  # type: ignore[no-untyped-def]
    module = ansible_module(SPEC, {"path": str(path), **params}, check_mode, add_file_common_args=True)
    return Files(module)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_creates_with_the_mode_and_replaces_keeping_the_attributes(ansible_module, tmp_path: Path) -> None:
    target = tmp_path / "k"
    files = files_for(ansible_module, target, mode="0640")
    files.write(files.task_args(), b"one")
    assert target.read_bytes() == b"one" and mode_of(target) == 0o640
    files.write(files.args(str(target)), b"two")  # no mode: the file keeps its own
    assert target.read_bytes() == b"two" and mode_of(target) == 0o640
    files.write(files.args(str(target), "u=rw,go="), b"three")  # symbolic modes, as ansible.builtin.file takes them
    assert target.read_bytes() == b"three" and mode_of(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no temporary file left
    with pytest.raises(RingHubError, match="does not exist"):
        files.write(files.args(str(tmp_path / "missing" / "k")), b"x")


def test_a_new_file_without_a_mode_is_private_whatever_the_umask(ansible_module, tmp_path: Path) -> None:
    # atomic_move alone gives a new file 0666 & ~umask; the content must never be readable by others.
    target = tmp_path / "secret"
    files = files_for(ansible_module, target)
    umask = os.umask(0)
    try:
        files.write(files.args(str(target)), b"secret")
    finally:
        os.umask(umask)
    assert mode_of(target) == 0o600


def test_an_existing_wide_file_is_narrowed_before_the_new_content_moves_in(ansible_module, tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_bytes(b"A=1\n")
    target.chmod(0o644)
    files = files_for(ansible_module, target)
    seen: list[int] = []
    real_move = files.module.atomic_move

    def move(src: str, dest: str, **kwargs: object) -> None:
        seen.append(mode_of(Path(dest)))
        real_move(src, dest, **kwargs)
        seen.append(mode_of(Path(dest)))

    files.module.atomic_move = move
    files.write(files.args(str(target), "0600"), b"A=1\nKEY=secret\n")
    assert seen == [0o600, 0o600] and mode_of(target) == 0o600 and target.read_bytes().endswith(b"secret\n")


def test_differences_validate_and_report_without_changing(ansible_module, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    target.chmod(0o644)
    files = files_for(ansible_module, target, mode="0600")
    assert files.differences(files.task_args()) == {"mode": ("0o644", "0o600")}
    assert mode_of(target) == 0o644 and files.check_mode is False  # the probe ran in check mode only
    assert files.set_attributes(files.task_args()) is True and mode_of(target) == 0o600
    assert files.differences(files.task_args()) == {} and files.set_attributes(files.task_args()) is False
    # A file that does not exist yet: nothing to report, but the nearest directory is probed.
    assert files.differences(files.args(str(tmp_path / "new" / "file"), "0600")) == {}


def test_check_mode_reports_and_changes_nothing(ansible_module, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"x")
    target.chmod(0o644)
    files = files_for(ansible_module, target, check_mode=True, mode="0600")
    assert files.set_attributes(files.task_args()) is True
    assert mode_of(target) == 0o644


def test_a_bad_mode_or_owner_fails_the_task_before_anything_is_written(ansible_module, capsys, tmp_path: Path) -> None:
    target = tmp_path / "new"
    cases = [
        ({"mode": "rw-------"}, "mode must be in octal or symbolic form"),
        ({"owner": "no-such-user-ringhub"}, "failed to look up user no-such-user-ringhub"),
    ]
    for params, text in cases:
        files = files_for(ansible_module, target, **params)
        with pytest.raises(SystemExit):
            files.differences(files.task_args())  # probed on the directory: the file does not exist yet
        failure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert failure["failed"] and text in failure["msg"]
        assert list(tmp_path.iterdir()) == []


def test_backup_is_a_0600_byte_copy_with_timestamp_and_no_collision(tmp_path: Path) -> None:
    src = tmp_path / "key.pem"
    src.write_bytes(b"old key bytes")
    src.chmod(0o644)
    now = datetime.datetime(2026, 11, 28, 17, 30, 5, tzinfo=datetime.UTC)
    first = backup_file(str(src), now)
    second = backup_file(str(src), now)
    assert first == f"{src}.20261128T173005Z.bak"
    assert second == f"{src}.20261128T173005Z.1.bak"
    for name in (first, second):
        assert Path(name).read_bytes() == b"old key bytes"
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    with pytest.raises(RingHubError, match="cannot back up"):
        backup_file(str(tmp_path / "absent"), now)
