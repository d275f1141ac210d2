# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files written by the modules, through Ansible's own helpers (private to the collection).

A module built with ``add_file_common_args=True`` has Ansible's ``mode``,
``owner``, ``group``, SELinux and ``attributes`` options; ``Files`` applies
them with ``set_fs_attributes_if_different`` and replaces files with
``atomic_move``. What Ansible lacks is kept here, and only that:

- the new content goes first into a temporary file in the target directory,
  created mode 0600 (``mkstemp``) and fsynced, so a private key is never
  readable by others, not even for an instant: an existing target gets its
  wanted attributes before the move (``atomic_move`` copies the target's), a new
  one is moved in under umask 077 (``atomic_move`` gives a new file the umask's mode);
- timestamped backups ``<file>.<UTC time>.bak``, mode 0600, same owner.

``differences()`` asks Ansible, in check mode, what it would change: it
validates ``owner``, ``group`` and ``mode`` (Ansible fails the task itself for
an unknown user or a malformed mode) before anything is written.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError


def _mode_text(value: Any) -> str:
    """``0o600`` for Ansible's ``'0600'`` (the form the modules have always returned)."""
    return oct(int(value, 8)) if isinstance(value, str) else str(value)


class Files:
    """The file operations of one module run (``module`` is the ``AnsibleModule``)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    @property
    def check_mode(self) -> bool:
        return bool(self.module.check_mode)

    def task_args(self, path: str | None = None) -> dict[str, Any]:
        """Ansible's file arguments from the task's own options (``mode``, ``owner``, ``group``, SELinux...).

        For ``path``, by default the module's ``path`` option.
        """
        return self.module.load_file_common_arguments(self.module.params, path=path)

    def args(self, path: str, mode: Any = None) -> dict[str, Any]:
        """Ansible's file arguments for another file: ``mode`` only (None keeps the file's own)."""
        return self.module.load_file_common_arguments({"mode": mode}, path=path)

    def differences(self, file_args: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """What ``set_attributes`` would change: ``{"mode": ("0o644", "0o600"), "owner": (0, 1000)...}``.

        Nothing is changed. For a path that does not exist yet, the nearest existing
        directory stands in, so the owner, group and mode are still validated.
        """
        path = file_args["path"]
        probe = dict(file_args)
        while not os.path.lexists(probe["path"]):
            parent = os.path.dirname(probe["path"])
            if parent == probe["path"]:
                return {}
            probe["path"] = parent
        diff: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
        saved = self.module.check_mode
        self.module.check_mode = True
        try:
            self.module.set_fs_attributes_if_different(probe, False, diff=diff)
        finally:
            self.module.check_mode = saved
        if probe["path"] != path:
            return {}
        return {
            key: (_mode_text(diff["before"][key]), _mode_text(diff["after"][key]))
            if key == "mode"
            else (diff["before"].get(key), value)
            for key, value in diff["after"].items()
        }

    def set_attributes(self, file_args: dict[str, Any]) -> bool:
        """Apply mode, owner, group, SELinux context and attributes (nothing in check mode); whether they differed."""
        return bool(self.module.set_fs_attributes_if_different(file_args, False))

    def write(self, file_args: dict[str, Any], data: bytes) -> None:
        """Replace ``file_args["path"]`` with ``data`` atomically, then give it its attributes."""
        path = file_args["path"]
        directory = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(directory):
            raise RingHubError(f"directory {directory} does not exist", path=path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".ringhub-", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise RingHubError(f"cannot write in {directory}: {exc.strerror}", path=path) from None
        self.module.add_cleanup_file(tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if os.path.exists(path):
                self.set_attributes(file_args)  # atomic_move copies the target's attributes to the new file
            umask = os.umask(0o077)  # atomic_move gives a new file the umask's mode
            try:
                self.module.atomic_move(tmp, path, unsafe_writes=bool(self.module.params.get("unsafe_writes")))
            finally:
                os.umask(umask)
        except Exception as exc:  # atomic_move raises plain Exceptions
            raise RingHubError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}", path=path) from None
        self.set_attributes(file_args)
        _fsync_dir(directory)

    def backup(self, path: str, now: datetime.datetime | None = None) -> str:
        """Copy ``path`` byte for byte to a new 0600 backup beside it (same owner and group); return its name."""
        return backup_file(path, now)


def _fsync_dir(directory: str) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def backup_path(path: str, now: datetime.datetime | None = None) -> str:
    """A free name ``<path>.<YYYYmmddTHHMMSSZ>.bak`` (``.1``, ``.2``... appended on collision)."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = f"{path}.{stamp}.bak"
    n = 0
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}.{stamp}.{n}.bak"
    return candidate


def backup_file(path: str, now: datetime.datetime | None = None) -> str:
    """Copy ``path`` byte for byte to a new 0600 backup beside it (same owner and group); return its name."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        st = os.stat(path)
    except OSError as exc:
        raise RingHubError(f"cannot back up {path}: {exc.strerror}", path=path) from None
    target = backup_path(path, now)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(target, 0o600)
        if os.geteuid() == 0:
            os.chown(target, st.st_uid, st.st_gid)
    except OSError as exc:
        raise RingHubError(f"cannot back up {path} to {target}: {exc.strerror}", path=path) from None
    return target
