"""Key file inspection: what a key file holds, and that a bad one is named and left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _keyfile

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
