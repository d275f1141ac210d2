# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The badge key file on disk: read it and say what it holds (private to the collection).

Writing files, their attributes and backups are ``_files.Files`` (Ansible's own helpers).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError


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
