"""Key file inspection, backups and atomic writes."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _keyfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

NOENC = serialization.NoEncryption()


def pem(key, encryption=NOENC, fmt=serialization.PrivateFormat.PKCS8) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def write(tmp_path: Path, data: bytes, name: str = "key.pem") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_valid_ed25519_key_loads(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    state = _keyfile.inspect_key_file(write(tmp_path, pem(key)))
    assert state["exists"] and state["problem"] is None and not state["encrypted"]
    assert _ed25519.same_key(state["key"], key)


def test_absent_file(tmp_path: Path) -> None:
    state = _keyfile.inspect_key_file(str(tmp_path / "nope.pem"))
    assert state == {"exists": False, "key": None, "encrypted": False, "problem": None, "msg": None}


@pytest.mark.parametrize(
    ("make", "problem", "words"),
    [
        (lambda: pem(rsa.generate_private_key(65537, 2048)), "wrong_type", "RSA 2048"),
        (
            lambda: pem(rsa.generate_private_key(65537, 2048), fmt=serialization.PrivateFormat.TraditionalOpenSSL),
            "wrong_type",
            "RSA 2048",
        ),
        (lambda: pem(ec.generate_private_key(ec.SECP256R1())), "wrong_type", "EC secp256r1"),
        (lambda: pem(ed448.Ed448PrivateKey.generate()), "wrong_type", "Ed448"),
        (
            lambda: b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINotbase64!!\n-----END PRIVATE KEY-----\n",
            "corrupt",
            "corrupt",
        ),
        (lambda: b"", "empty", "empty"),
        (lambda: b"hello\n", "not_pem", "not PEM"),
        (
            lambda: (
                ed25519.Ed25519PrivateKey.generate()
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            ),
            "public_key",
            "not a private key",
        ),
        (
            lambda: pem(ed25519.Ed25519PrivateKey.generate(), fmt=serialization.PrivateFormat.OpenSSH),
            "openssh_format",
            "ssh-keygen",
        ),
        (
            lambda: pem(ed25519.Ed25519PrivateKey.generate(), serialization.BestAvailableEncryption(b"right")),
            "encrypted",
            "no passphrase",
        ),
    ],
)
def test_bad_key_files_are_named_and_left_alone(tmp_path: Path, make, problem: str, words: str) -> None:  # type: ignore[no-untyped-def]
    data = make()
    path = write(tmp_path, data)
    state = _keyfile.inspect_key_file(path)
    assert state["problem"] == problem, state["msg"]
    assert words in state["msg"]
    assert Path(path).read_bytes() == data


def test_encrypted_key_right_and_wrong_passphrase(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    path = write(tmp_path, pem(key, serialization.BestAvailableEncryption(b"right")))
    good = _keyfile.inspect_key_file(path, "right")
    assert good["encrypted"] and _ed25519.same_key(good["key"], key)
    bad = _keyfile.inspect_key_file(path, "wrong")
    assert bad["problem"] == "wrong_passphrase" and "wrong passphrase" in bad["msg"]


def test_a_directory_is_reported_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.pem").mkdir()
    state = _keyfile.inspect_key_file(str(tmp_path / "dir.pem"))
    assert state["exists"] and state["problem"] == "unreadable"


def test_write_atomic_sets_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "k"
    _keyfile.write_atomic(str(target), b"one", 0o600)
    assert target.read_bytes() == b"one" and stat.S_IMODE(target.stat().st_mode) == 0o600
    _keyfile.write_atomic(str(target), b"two", 0o640)
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
    with pytest.raises(RingHubError, match="does not exist"):
        _keyfile.write_atomic(str(tmp_path / "missing" / "k"), b"x", 0o600)


def test_backup_is_a_0600_byte_copy_with_timestamp_and_no_collision(tmp_path: Path) -> None:
    src = tmp_path / "key.pem"
    src.write_bytes(b"old key bytes")
    src.chmod(0o644)
    now = datetime.datetime(2026, 11, 28, 17, 30, 5, tzinfo=datetime.timezone.utc)  # noqa: UP017
    first = _keyfile.backup_file(str(src), now)
    second = _keyfile.backup_file(str(src), now)
    assert first == f"{src}.20261128T173005Z.bak"
    assert second == f"{src}.20261128T173005Z.1.bak"
    for name in (first, second):
        assert Path(name).read_bytes() == b"old key bytes"
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600


def test_parse_mode_and_attrs(tmp_path: Path) -> None:
    assert (
        _keyfile.parse_mode("0600") == 0o600 and _keyfile.parse_mode("640") == 0o640 and _keyfile.parse_mode(384) == 384
    )
    with pytest.raises(RingHubError, match="octal"):
        _keyfile.parse_mode("rw-------")
    path = tmp_path / "f"
    path.write_bytes(b"")
    path.chmod(0o644)
    assert _keyfile.attrs_differ(str(path), 0o600) == {"mode": ("0o644", "0o600")}
    _keyfile.apply_attrs(str(path), 0o600)
    assert _keyfile.attrs_differ(str(path), 0o600) == {}
    assert _keyfile.resolve_uid(None) == -1 and _keyfile.resolve_uid("0") == 0
    with pytest.raises(RingHubError, match="does not exist"):
        _keyfile.resolve_uid("no-such-user-ringhub")
