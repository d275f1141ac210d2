# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key and secret files on disk: inspect, back up, write atomically (private to the collection).

Writes go to a temporary file in the target directory, created with mode 0600,
then get their final mode/owner, are fsynced and renamed over the target, so a
reader never sees a half-written key and a private key is never world-readable,
not even for an instant. Backups are byte copies named
``<file>.<UTC timestamp>.bak``, mode 0600, same owner as the original.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
import stat
import tempfile
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError


def parse_mode(value: Any, option: str = "mode") -> int:
    """A numeric mode from an octal string (``'0600'``, ``'600'``) or an int (``0o600``); no symbolic modes."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        mode = int(text, 8)
    except ValueError:
        raise RingHubError(f"{option} must be an octal string such as '0600', got {value!r}") from None
    if mode < 0 or mode > 0o7777:
        raise RingHubError(f"{option} is out of range: {value!r}")
    return mode


def resolve_uid(owner: str | None) -> int:
    """A uid for a user name or number; -1 when ``owner`` is None."""
    if owner is None or owner == "":
        return -1
    if str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(str(owner)).pw_uid
    except KeyError:
        raise RingHubError(f"owner {owner!r} does not exist on this host") from None


def resolve_gid(group: str | None) -> int:
    """A gid for a group name or number; -1 when ``group`` is None."""
    if group is None or group == "":
        return -1
    if str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise RingHubError(f"group {group!r} does not exist on this host") from None


def read_bytes(path: str, what: str = "file") -> bytes | None:
    """The bytes of ``path``; None when it does not exist; ``RingHubError`` when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RingHubError(f"{what} {path} is a directory", problem="unreadable", path=path) from None
    except OSError as exc:
        raise RingHubError(
            f"{what} {path} exists but cannot be read: {exc.strerror}", problem="unreadable", path=path
        ) from None


def file_attrs(path: str) -> tuple[int, int, int] | None:
    """``(mode bits, uid, gid)`` of an existing file, else None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def attrs_differ(path: str, mode: int | None, uid: int = -1, gid: int = -1) -> dict[str, Any]:
    """What differs between ``path``'s attributes and the wanted ones (``{}`` when nothing)."""
    current = file_attrs(path)
    if current is None:
        return {}
    out: dict[str, Any] = {}
    if mode is not None and current[0] != mode:
        out["mode"] = (oct(current[0]), oct(mode))
    if uid != -1 and current[1] != uid:
        out["owner"] = (current[1], uid)
    if gid != -1 and current[2] != gid:
        out["group"] = (current[2], gid)
    return out


def apply_attrs(path: str, mode: int | None, uid: int = -1, gid: int = -1) -> None:
    """Set mode/owner/group of ``path`` where they differ."""
    try:
        if uid != -1 or gid != -1:
            current = file_attrs(path)
            if current and ((uid != -1 and current[1] != uid) or (gid != -1 and current[2] != gid)):
                os.chown(path, uid, gid)
        if mode is not None:
            os.chmod(path, mode)
    except OSError as exc:
        raise RingHubError(f"cannot set mode/owner of {path}: {exc.strerror}", path=path) from None


def write_atomic(path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Replace ``path`` with ``data`` atomically; the temporary file is 0600 from its creation."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise RingHubError(f"directory {directory} does not exist", path=path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ringhub-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise RingHubError(f"cannot write in {directory}: {exc.strerror}", path=path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise RingHubError(f"cannot write {path}: {exc.strerror}", path=path) from None
    _fsync_dir(directory)


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
    utc = datetime.timezone.utc  # noqa: UP017 - module_utils also run on Python < 3.11
    stamp = (now or datetime.datetime.now(utc)).strftime("%Y%m%dT%H%M%SZ")
    candidate = f"{path}.{stamp}.bak"
    n = 0
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}.{stamp}.{n}.bak"
    return candidate


def backup_file(path: str, now: datetime.datetime | None = None) -> str:
    """Copy ``path`` byte for byte to a new 0600 backup beside it (same owner/group); return its name."""
    data = read_bytes(path, "file to back up")
    if data is None:
        raise RingHubError(f"cannot back up {path}: it does not exist", path=path)
    target = backup_path(path, now)
    attrs = file_attrs(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(target, 0o600)
        if attrs and os.geteuid() == 0:
            os.chown(target, attrs[1], attrs[2])
    except OSError as exc:
        raise RingHubError(f"cannot back up {path} to {target}: {exc.strerror}", path=path) from None
    return target


def inspect_key_file(path: str, passphrase: str | None = None) -> dict[str, Any]:
    """The state of a key file, never raising for a bad key.

    Returns ``{"exists", "key", "encrypted", "problem", "msg"}``: ``key`` is the
    Ed25519 private key when it loads; otherwise ``problem`` is one of
    ``unreadable``, ``empty``, ``not_pem``, ``openssh_format``, ``public_key``,
    ``encrypted``, ``wrong_passphrase``, ``corrupt``, ``wrong_type`` and ``msg``
    says what is wrong.
    """
    state: dict[str, Any] = {"exists": False, "key": None, "encrypted": False, "problem": None, "msg": None}
    try:
        data = read_bytes(path, "key file")
    except RingHubError as exc:
        state.update(exists=True, problem="unreadable", msg=exc.msg)
        return state
    if data is None:
        return state
    state["exists"] = True
    state["encrypted"] = _ed25519.is_encrypted_pem(data)
    try:
        state["key"] = _ed25519.load_private_key(data, passphrase, source=f"key file {path}")
    except RingHubError as exc:
        state.update(problem=exc.details.get("problem", "corrupt"), msg=exc.msg)
    return state
