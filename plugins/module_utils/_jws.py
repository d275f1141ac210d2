# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compact JWS with EdDSA (Ed25519), as the hub signs badges (private to the collection).

A badge's ``proof.jws`` is ``b64url(header) "." b64url(payload) "." b64url(signature)``
with header ``{"alg":"EdDSA","typ":"JWT"}``, payload ``{iss, sub, iat, exp?, vc}``
(``vc`` = the credential without ``proof``), base64url without padding, and the
Ed25519 signature over the ASCII bytes ``header.payload``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import time
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

JWS_HEADER = {"alg": "EdDSA", "typ": "JWT"}


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ``RingHubError`` on bad input."""
    if not isinstance(text, str) or any(c in text for c in "+/ \n\r\t"):
        raise RingHubError("not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise RingHubError("not base64url text") from exc


def _json_bytes(value: Any) -> bytes:
    # Compact separators, as JavaScript's JSON.stringify produces.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_compact(payload: Any, private_key: Any, header: dict[str, Any] | None = None) -> str:
    """A compact JWS of ``payload`` (dict -> JSON, bytes as is) signed with an Ed25519 key."""
    head = dict(header or JWS_HEADER)
    if head.get("alg") != "EdDSA":
        raise RingHubError("only alg EdDSA is supported")
    body = payload if isinstance(payload, (bytes, bytearray)) else _json_bytes(payload)
    signing_input = b64url_encode(_json_bytes(head)) + "." + b64url_encode(bytes(body))
    signature = _ed25519.sign(private_key, signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def decode_unverified(token: str) -> tuple[dict[str, Any], Any, bytes]:
    """``(header, payload, signature)`` of a compact JWS, WITHOUT checking the signature."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise RingHubError("JWS must have three dot-separated parts")
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = json.loads(b64url_decode(head_b64))
        payload = json.loads(b64url_decode(body_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RingHubError("JWS header or payload is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise RingHubError("JWS header is not a JSON object")
    return header, payload, b64url_decode(sig_b64)


def verify_compact(token: str, public_key: Any) -> tuple[dict[str, Any], Any]:
    """Verify an EdDSA compact JWS; return ``(header, payload)`` or raise ``RingHubError``.

    ``public_key``: an Ed25519 key object, 32 raw bytes or SPKI PEM.
    """
    header, payload, signature = decode_unverified(token)
    if header.get("alg") != "EdDSA":
        raise RingHubError(f"JWS alg is {header.get('alg')!r}, expected 'EdDSA'")
    if len(signature) != 64:
        raise RingHubError(f"JWS signature has {len(signature)} bytes, expected 64")
    signing_input = token.rsplit(".", 1)[0].encode("ascii")
    if not _ed25519.verify(public_key, signature, signing_input):
        raise RingHubError("JWS signature does not verify with the given key")
    return header, payload


# --------------------------------------------------------------------------- badges


def _epoch(iso: str) -> int:
    text = iso.replace("Z", "+00:00")
    return int(datetime.datetime.fromisoformat(text).timestamp())


def badge_payload(credential: dict[str, Any]) -> dict[str, Any]:
    """The JWS payload the hub signs for a credential (without ``proof``)."""
    vc = {k: v for k, v in credential.items() if k != "proof"}
    payload: dict[str, Any] = {
        "iss": vc["issuer"]["id"],
        "sub": vc["credentialSubject"]["id"],
        "iat": _epoch(vc["issuanceDate"]),
    }
    if vc.get("expirationDate"):
        payload["exp"] = _epoch(vc["expirationDate"])
    payload["vc"] = vc
    return payload


def sign_badge(credential: dict[str, Any], private_key: Any, created: str | None = None) -> dict[str, Any]:
    """A copy of ``credential`` with an ``Ed25519Signature2020`` proof as the hub builds it."""
    vc = {k: v for k, v in credential.items() if k != "proof"}
    issuer = vc["issuer"]["id"]
    utc = datetime.timezone.utc  # noqa: UP017 - module_utils also run on Python < 3.11
    stamp = created or datetime.datetime.now(utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    vc["proof"] = {
        "type": "Ed25519Signature2020",
        "created": stamp,
        "verificationMethod": f"{issuer}#key-1",
        "proofPurpose": "assertionMethod",
        "jws": sign_compact(badge_payload(vc), private_key),
    }
    return vc


def verify_badge(
    badge: dict[str, Any], public_key: Any, now: float | None = None, check_content: bool = True
) -> dict[str, Any]:
    """Verify a badge's ``proof.jws`` against ``public_key``; return the JWS payload.

    Checks: the signature; ``alg`` EdDSA; ``iss`` = ``issuer.id``; ``sub`` =
    ``credentialSubject.id``; with ``check_content`` the signed ``vc`` equals the
    badge without its proof; ``exp`` (when present) is not in the past. Raises ``RingHubError`` naming the check.
    """
    proof = badge.get("proof")
    if not isinstance(proof, dict) or not isinstance(proof.get("jws"), str):
        raise RingHubError("badge has no proof.jws")
    _header, payload = verify_compact(proof["jws"], public_key)
    if not isinstance(payload, dict):
        raise RingHubError("badge JWS payload is not a JSON object")
    issuer = (badge.get("issuer") or {}).get("id")
    subject = (badge.get("credentialSubject") or {}).get("id")
    if payload.get("iss") != issuer:
        raise RingHubError(f"badge JWS iss {payload.get('iss')!r} differs from issuer.id {issuer!r}")
    if payload.get("sub") != subject:
        raise RingHubError(f"badge JWS sub {payload.get('sub')!r} differs from credentialSubject.id {subject!r}")
    unsigned = {k: v for k, v in badge.items() if k != "proof"}
    if check_content and payload.get("vc") != unsigned:
        raise RingHubError("badge content differs from the credential signed in proof.jws")
    exp = payload.get("exp")
    if exp is not None and (now if now is not None else time.time()) > float(exp):
        raise RingHubError("badge has expired")
    return payload
