# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ed25519 keys: load, classify, serialize, fingerprint (private to the collection).

Everything here works on ``cryptography`` key objects. The import is guarded:
modules check ``HAS_CRYPTOGRAPHY`` and call ``missing_required_lib("cryptography")``.

Formats used across the collection:

* private keys: PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), optionally encrypted;
* public keys: raw 32 bytes, standard base64 of those bytes, multibase
  (see ``_did.py``), or SubjectPublicKeyInfo PEM;
* fingerprint: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo, i.e.
  ``openssl pkey -pubout -outform DER | sha256sum``.
"""

from __future__ import annotations

import base64
import hashlib
import traceback
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import Library, RingHubError

CRYPTOGRAPHY_IMPORT_ERROR: str | None = None
try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - exercised only on hosts without cryptography
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

CRYPTOGRAPHY = Library("cryptography", HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_IMPORT_ERROR)

PEM_PRIVATE_MARKERS = (
    b"-----BEGIN PRIVATE KEY-----",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
    b"-----BEGIN RSA PRIVATE KEY-----",
    b"-----BEGIN EC PRIVATE KEY-----",
    b"-----BEGIN DSA PRIVATE KEY-----",
    b"-----BEGIN OPENSSH PRIVATE KEY-----",
)


def require_cryptography() -> None:
    """Raise ``RingHubError`` when the ``cryptography`` library is missing."""
    if not HAS_CRYPTOGRAPHY:
        raise RingHubError("the Python library 'cryptography' is required for Ed25519 keys")


def key_type_name(key: Any) -> str:
    """A short human name for a key object: ``Ed25519``, ``RSA 2048``, ``EC secp256r1``, ``Ed448``..."""
    curve = getattr(getattr(key, "curve", None), "name", None)
    if curve:
        return f"EC {curve}"
    name = type(key).__name__.replace("PrivateKey", "").replace("PublicKey", "").lstrip("_")
    size = getattr(key, "key_size", None)
    if size and name.upper() in ("RSA", "DSA"):
        return f"{name.upper()} {size}"
    return name or type(key).__name__


def is_encrypted_pem(data: bytes) -> bool:
    """True when ``data`` is an encrypted PEM private key (PKCS#8 or legacy OpenSSL)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def load_private_key(data: bytes, passphrase: str | None = None, source: str = "key") -> Any:
    """Load an Ed25519 private key from PEM bytes.

    Raises ``RingHubError`` whose ``details['problem']`` names the cause:
    ``empty``, ``not_pem``, ``openssh_format``, ``public_key``, ``encrypted``
    (no passphrase given), ``wrong_passphrase``, ``corrupt``, ``wrong_type``.
    A passphrase given for an unencrypted key is ignored (the caller may warn).
    """
    require_cryptography()
    stripped = data.strip()
    if not stripped:
        raise RingHubError(f"{source} is empty", problem="empty")
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in stripped:
        raise RingHubError(
            f"{source} is an OpenSSH-format private key; a PKCS#8 PEM Ed25519 key is required "
            "(convert with 'ssh-keygen -p -m PKCS8')",
            problem="openssh_format",
        )
    if b"-----BEGIN" not in stripped:
        raise RingHubError(f"{source} is not PEM text (no '-----BEGIN' line)", problem="not_pem")
    if b"PRIVATE KEY-----" not in stripped:
        kind = "certificate" if b"CERTIFICATE-----" in stripped else "public key or other PEM object"
        raise RingHubError(f"{source} holds a {kind}, not a private key", problem="public_key")
    encrypted = is_encrypted_pem(stripped)
    if encrypted and not passphrase:
        raise RingHubError(f"{source} is encrypted and no passphrase was given", problem="encrypted")
    password = passphrase.encode("utf-8") if (encrypted and passphrase) else None
    try:
        key = serialization.load_pem_private_key(stripped, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise RingHubError(
                f"{source} could not be decrypted: wrong passphrase (or corrupt encrypted key)",
                problem="wrong_passphrase",
            ) from exc
        raise RingHubError(
            f"{source} is corrupt: its PEM data does not parse as a private key", problem="corrupt"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise RingHubError(
            f"{source} holds a private key of the wrong type ({key_type_name(key)}); the badge key must be Ed25519",
            problem="wrong_type",
            key_type=key_type_name(key),
        )
    return key


def generate_private_key() -> Any:
    """A fresh Ed25519 private key."""
    require_cryptography()
    return ed25519.Ed25519PrivateKey.generate()


def private_key_from_seed(seed: bytes) -> Any:
    """The Ed25519 private key for a 32-byte seed (RFC 8032 secret key)."""
    require_cryptography()
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def private_pem(key: Any, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM bytes of ``key`` (encrypted with the best available scheme when a passphrase is given)."""
    require_cryptography()
    enc = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def public_key_of(key: Any) -> Any:
    """The public key object of a private key (a public key is returned unchanged)."""
    return key.public_key() if hasattr(key, "public_key") else key


def raw_public_key(key: Any) -> bytes:
    """The 32 raw public-key bytes of an Ed25519 private or public key."""
    require_cryptography()
    pub = public_key_of(key)
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(raw: bytes) -> Any:
    """An Ed25519 public key object from 32 raw bytes (``RingHubError`` for a wrong length)."""
    require_cryptography()
    if len(raw) != 32:
        raise RingHubError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def public_pem(key: Any) -> str:
    """SubjectPublicKeyInfo PEM text of the public key (what ``openssl pkey -pubout`` prints)."""
    require_cryptography()
    pub = public_key_of(key)
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(data: Any) -> Any:
    """An Ed25519 public key from raw bytes (32), SPKI PEM text/bytes, or a key object."""
    require_cryptography()
    if isinstance(data, ed25519.Ed25519PublicKey):
        return data
    if isinstance(data, ed25519.Ed25519PrivateKey):
        return data.public_key()
    if isinstance(data, str):
        data = data.encode("ascii")
    if isinstance(data, (bytes, bytearray)) and len(data) == 32:
        return public_key_from_raw(bytes(data))
    try:
        pub = serialization.load_pem_public_key(bytes(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise RingHubError("not an Ed25519 public key (expected 32 raw bytes or SPKI PEM)") from exc
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise RingHubError(f"public key is {key_type_name(pub)}, expected Ed25519")
    return pub


def fingerprint(key: Any) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of ``key``."""
    require_cryptography()
    der = public_key_of(key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_key_b64(key: Any) -> str:
    """Standard base64 (with padding) of the raw public key, as ``publicKeyBase64`` holds it."""
    return base64.b64encode(raw_public_key(key)).decode("ascii")


def same_key(a: Any, b: Any) -> bool:
    """True when two Ed25519 keys (private or public) share the same public key."""
    return raw_public_key(a) == raw_public_key(b)


def sign(key: Any, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message``."""
    require_cryptography()
    return key.sign(message)


def verify(public_key: Any, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``."""
    require_cryptography()
    try:
        load_public_key(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True
