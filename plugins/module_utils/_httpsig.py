# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""draft-cavage HTTP signatures with Ed25519, as the hub checks them (private to the collection).

Signing (a client such as the verify role) and verifying (a test hub) share one
signing-string builder, so both sides agree byte for byte::

    (request-target): post /trp/join
    host: hub.example.org
    date: Sat, 28 Nov 2026 17:30:00 GMT
    digest: SHA-256=<base64 of sha256(body)>

joined by ``\\n``, signed with Ed25519, sent as
``Signature: keyId="<did>#key-1",algorithm="ed25519",headers="(request-target) host date digest",signature="<base64>"``.
The hub allows 300 seconds of clock skew on ``Date``.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

DEFAULT_HEADERS = ("(request-target)", "host", "date", "digest")
ALGORITHMS = ("ed25519", "hs2019")
MAX_SKEW_SECONDS = 300
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


def digest_header(body: bytes) -> str:
    """``SHA-256=<base64 of sha256(body)>`` for the exact body bytes sent."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def http_date(timestamp: float | None = None) -> str:
    """An RFC 7231 ``Date`` value (``Sat, 28 Nov 2026 17:30:00 GMT``)."""
    return email.utils.formatdate(timestamp if timestamp is not None else time.time(), usegmt=True)


def request_target(url_or_path: str) -> str:
    """Path plus ``?query`` of a URL (or a path given as is), as ``(request-target)`` uses it."""
    if url_or_path.startswith("/"):
        return url_or_path
    parts = urlsplit(url_or_path)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def signing_string(method: str, target: str, headers: Mapping[str, str], names: Sequence[str] = DEFAULT_HEADERS) -> str:
    """The string that is signed: one ``name: value`` line per covered header, ``\\n``-joined.

    ``target`` is the path with query. Header lookup is case-insensitive; a
    covered header that is missing raises ``RingHubError``.
    """
    lower = _lower_headers(headers)
    lines: list[str] = []
    for name in names:
        name = name.lower()
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {target}")
        elif name in lower:
            lines.append(f"{name}: {lower[name]}")
        else:
            raise RingHubError(f"header {name!r} is covered by the signature but missing from the request")
    return "\n".join(lines)


def signature_header(key_id: str, signature: bytes, names: Sequence[str] = DEFAULT_HEADERS) -> str:
    """The ``Signature`` header value for a computed signature."""
    sig = base64.b64encode(signature).decode("ascii")
    return f'keyId="{key_id}",algorithm="ed25519",headers="{" ".join(names)}",signature="{sig}"'


def sign_request(
    method: str,
    url: str,
    body: bytes,
    private_key: Any,
    key_id: str,
    *,
    date: str | None = None,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
    names: Sequence[str] = DEFAULT_HEADERS,
) -> dict[str, str]:
    """Headers to send with a signed request: ``Host``, ``Date``, ``Digest``, ``Signature``.

    ``headers`` are extra headers (e.g. ``Content-Type``); they are returned too and
    may be covered by ``names``. ``host`` defaults to the URL's ``host[:port]``.
    The caller must send exactly ``body`` and exactly these header values.
    """
    out: dict[str, str] = dict(headers or {})
    out["Host"] = host or urlsplit(url).netloc.rsplit("@", 1)[-1]
    out["Date"] = date or http_date()
    out["Digest"] = digest_header(body)
    text = signing_string(method, request_target(url), out, names)
    out["Signature"] = signature_header(key_id, _ed25519.sign(private_key, text.encode("utf-8")), names)
    return out


def parse_signature(value: str) -> dict[str, Any]:
    """Parameters of a ``Signature`` header (or ``Authorization: Signature ...``).

    Returns ``keyId``, ``algorithm`` (default ``ed25519``), ``headers`` (a list;
    default ``["(request-target)", "date"]``) and ``signature`` (bytes).
    """
    text = value.strip()
    if text.lower().startswith("signature "):
        text = text[len("signature ") :]
    params = dict(_PARAM_RE.findall(text))
    if not params.get("keyId") or not params.get("signature"):
        raise RingHubError("Signature header lacks keyId or signature")
    try:
        sig = base64.b64decode(params["signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RingHubError("Signature header's signature is not base64") from exc
    return {
        "keyId": params["keyId"],
        "algorithm": params.get("algorithm", "ed25519"),
        "headers": params.get("headers", "(request-target) date").split(),
        "signature": sig,
    }


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    key: Any,
    *,
    required: Sequence[str] = DEFAULT_HEADERS,
    max_skew: float = MAX_SKEW_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify a signed request as the hub does; return ``{"keyId", "actorDid", "headers"}``.

    ``target`` is the request path with query; ``key`` is an Ed25519 public key
    (object, raw bytes, PEM) or a callable ``key(key_id)`` returning one (e.g. a
    DID resolver). Checks, each with its own ``RingHubError``: a Signature (or
    ``Authorization: Signature``) header; algorithm ``ed25519``/``hs2019``;
    every ``required`` header covered; ``Date`` within ``max_skew`` seconds;
    ``Digest`` equal to SHA-256 of ``body``; the Ed25519 signature.
    """
    lower = _lower_headers(headers)
    raw = lower.get("signature") or (
        lower.get("authorization") if lower.get("authorization", "").lower().startswith("signature ") else None
    )
    if not raw:
        raise RingHubError("missing Signature header", reason="missing_signature")
    params = parse_signature(raw)
    if params["algorithm"].lower() not in ALGORITHMS:
        raise RingHubError(f"unsupported signature algorithm {params['algorithm']!r}", reason="algorithm")
    covered = [h.lower() for h in params["headers"]]
    missing = [h for h in required if h not in covered]
    if missing:
        raise RingHubError(f"signature does not cover {', '.join(missing)}", reason="coverage")
    if "date" in covered or "date" in lower:
        parsed = _parse_http_date(lower.get("date", ""))
        if parsed is None:
            raise RingHubError("missing or unparsable Date header", reason="date")
        skew = abs((now if now is not None else time.time()) - parsed)
        if skew > max_skew:
            raise RingHubError(f"Date is {int(skew)} s away from now (allowed {int(max_skew)} s)", reason="date")
    if "digest" in covered or "digest" in lower:
        if not _digest_matches(lower.get("digest", ""), body):
            raise RingHubError("Digest header does not match the body", reason="digest")
    text = signing_string(method, target, headers, params["headers"])
    public = key(params["keyId"]) if callable(key) else key
    if not _ed25519.verify(public, params["signature"], text.encode("utf-8")):
        raise RingHubError("HTTP signature does not verify", reason="signature", keyId=params["keyId"])
    return {"keyId": params["keyId"], "actorDid": params["keyId"].split("#", 1)[0], "headers": params["headers"]}


def _parse_http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP ``Date`` value, or None when it does not parse."""
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError):
        return None


def _digest_matches(value: str, body: bytes) -> bool:
    expected = hashlib.sha256(body).digest()
    for part in value.split(","):
        pieces = part.strip().partition("=")
        algo, b64 = pieces[0], pieces[2]
        if algo.lower() == "sha-256":
            try:
                return hmac.compare_digest(base64.b64decode(b64, validate=True), expected)
            except (binascii.Error, ValueError):
                return False
    return False
