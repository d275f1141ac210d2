# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""base58btc / multibase, did:key, did:web and DID documents (private to the collection).

Standard library only, except ``fetch_document`` which uses Ansible's
``open_url``. Keys are handled as 32 raw bytes here; ``_ed25519.py`` converts
from and to key objects.

* ``publicKeyMultibase`` = ``"z"`` + base58btc(0xed 0x01 + 32-byte key);
* did:web mapping (https://w3c-ccg.github.io/did-method-web/)::

    did:web:example.com                  -> https://example.com/.well-known/did.json
    did:web:example.com:users:<hash>     -> https://example.com/users/<hash>/did.json
    did:web:localhost%3A3000             -> http://localhost:3000/.well-known/did.json

  (loopback hosts ``localhost``, ``127.0.0.1`` and ``::1`` are fetched over plain http);
* the hub's issuer DID is ``did:web:<hostname of RING_HUB_URL>`` (hostname only, no port).
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}
ED25519_PUB_MULTICODEC = b"\xed\x01"
DID_CONTEXT = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1"]
VM_TYPE = "Ed25519VerificationKey2020"
KEY_FRAGMENT = "key-1"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


# --------------------------------------------------------------------------- base58btc / multibase


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet) of ``data``; each leading zero byte becomes ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of ``b58encode``; ``RingHubError`` on a character outside the alphabet."""
    num = 0
    for char in text:
        if char not in _B58_INDEX:
            raise RingHubError(f"invalid base58btc character {char!r}")
        num = num * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def multibase_from_raw(raw: bytes) -> str:
    """``publicKeyMultibase`` of a 32-byte Ed25519 public key: ``z`` + base58btc(0xed01 + key)."""
    if len(raw) != 32:
        raise RingHubError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return "z" + b58encode(ED25519_PUB_MULTICODEC + raw)


def raw_from_multibase(value: str) -> bytes:
    """The 32 raw key bytes of an Ed25519 ``publicKeyMultibase`` value (``RingHubError`` otherwise)."""
    if not isinstance(value, str) or not value.startswith("z"):
        raise RingHubError("publicKeyMultibase must start with 'z' (base58btc)")
    data = b58decode(value[1:])
    if not data.startswith(ED25519_PUB_MULTICODEC):
        raise RingHubError("publicKeyMultibase is not an Ed25519 public key (multicodec prefix 0xed01 missing)")
    raw = data[len(ED25519_PUB_MULTICODEC) :]
    if len(raw) != 32:
        raise RingHubError(f"publicKeyMultibase holds {len(raw)} key bytes, expected 32")
    return raw


def raw_from_base64(value: str) -> bytes:
    """The 32 raw key bytes of a ``publicKeyBase64`` value (standard or url-safe, padding optional)."""
    if not isinstance(value, str):
        raise RingHubError("publicKeyBase64 must be a string")
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RingHubError("publicKeyBase64 is not valid base64") from exc
    if len(raw) != 32:
        raise RingHubError(f"publicKeyBase64 holds {len(raw)} bytes, expected 32")
    return raw


# --------------------------------------------------------------------------- did:key


def did_key_from_raw(raw: bytes) -> str:
    """``did:key:z6Mk...`` for a 32-byte Ed25519 public key."""
    return "did:key:" + multibase_from_raw(raw)


def raw_from_did_key(did: str) -> bytes:
    """The 32 raw key bytes of an Ed25519 ``did:key`` (a ``#fragment`` is ignored)."""
    if not did.startswith("did:key:"):
        raise RingHubError(f"not a did:key: {did!r}")
    return raw_from_multibase(did[len("did:key:") :].split("#", 1)[0])


# --------------------------------------------------------------------------- did:web


def _host_is_loopback(hostname: str) -> bool:
    return hostname.lower().strip("[]") in LOOPBACK_HOSTS


def did_web_to_url(did: str) -> str:
    """The URL of the DID document of a ``did:web`` DID (``#fragment`` ignored)."""
    if not did.startswith("did:web:"):
        raise RingHubError(f"not a did:web DID: {did!r}")
    parts = did[len("did:web:") :].split("#", 1)[0].split(":")
    if not parts[0]:
        raise RingHubError(f"did:web without a host: {did!r}")
    host = unquote(parts[0])
    if "/" in host or "@" in host:
        raise RingHubError(f"did:web host is not a plain host name: {did!r}")
    segments = [unquote(p) for p in parts[1:]]
    if any(not s or "/" in s or s in (".", "..") for s in segments):
        raise RingHubError(f"did:web path segments must be non-empty names: {did!r}")
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    scheme = "http" if _host_is_loopback(hostname) else "https"
    path = "/" + "/".join(segments) + "/did.json" if segments else "/.well-known/did.json"
    return f"{scheme}://{host}{path}"


def url_to_did_web(url: str) -> str:
    """The ``did:web`` DID whose document lives at ``url`` (inverse of ``did_web_to_url``).

    ``url`` is a ``.../did.json`` URL, or a site URL (taken as its ``/.well-known/did.json``).
    A port is kept, percent-encoded.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RingHubError(f"not an http(s) URL: {url!r}")
    host = parts.hostname + (f"%3A{parts.port}" if parts.port else "")
    path = parts.path
    if path in ("", "/", "/.well-known/did.json"):
        return "did:web:" + host
    if path.endswith("/did.json"):
        path = path[: -len("/did.json")]
    segments = [s for s in path.split("/") if s]
    return "did:web:" + ":".join([host] + [quote(s, safe="") for s in segments])


def instance_did(hub_url: str) -> str:
    """The hub's issuer DID: ``did:web:<hostname of hub_url>`` (hostname only, as the hub builds it)."""
    parts = urlsplit(hub_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RingHubError(f"hub_url must be an http(s) URL with a host, got {hub_url!r}")
    return "did:web:" + parts.hostname


def user_did(base_url: str, user_id: str) -> str:
    """``did:web:<host[%3Aport]>:users:<user_id>`` for a user served under ``base_url``.

    Unlike ``instance_did`` a non-default port is kept (percent-encoded), so the
    DID resolves to the server that actually serves the document.
    """
    if not user_id or "/" in user_id or ":" in user_id:
        raise RingHubError(f"user id must be one path segment without '/' or ':', got {user_id!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RingHubError(f"base URL must be an http(s) URL with a host, got {base_url!r}")
    host = parts.hostname + (f"%3A{parts.port}" if parts.port else "")
    return f"did:web:{host}:users:{quote(user_id, safe='')}"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


# --------------------------------------------------------------------------- documents


def key_id(did: str, fragment: str = KEY_FRAGMENT) -> str:
    """``<did>#key-1``."""
    return f"{did}#{fragment}"


def build_document(
    did: str,
    raw_public_key: bytes,
    *,
    include_base64: bool = False,
    services: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A DID document with one Ed25519VerificationKey2020 method ``#key-1``.

    The method is listed in ``authentication`` and ``assertionMethod``. With
    ``include_base64`` the method also carries ``publicKeyBase64`` (the same key).
    """
    kid = key_id(did)
    method: dict[str, Any] = {
        "id": kid,
        "type": VM_TYPE,
        "controller": did,
        "publicKeyMultibase": multibase_from_raw(raw_public_key),
    }
    if include_base64:
        method["publicKeyBase64"] = base64.b64encode(raw_public_key).decode("ascii")
    doc: dict[str, Any] = {
        "@context": list(DID_CONTEXT),
        "id": did,
        "verificationMethod": [method],
        "authentication": [kid],
        "assertionMethod": [kid],
    }
    if services:
        doc["service"] = [dict(s) for s in services]
    return doc


def profile_service(did: str, profile_url: str) -> dict[str, str]:
    """The ``Profile`` service entry the hub requires in an actor's DID document."""
    return {"id": f"{did}#profile", "type": "Profile", "serviceEndpoint": profile_url}


def profile_endpoint(base_url: str, user_id: str) -> str:
    """A ``Profile`` endpoint the hub accepts for a user served under ``base_url``.

    The hub ignores an endpoint that is neither ``https://`` nor starts with
    ``http://localhost`` (the join then answers 400 ``Invalid DID Document``), so:
    ``https://<host[:port]>/users/<user_id>`` for an https base URL,
    ``http://localhost[:port]/users/<user_id>`` for a plain-http loopback one
    (``localhost``, ``127.0.0.1``, ``::1``) and ``https://`` for any other host,
    whose ``did:web`` documents resolve over https anyway.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RingHubError(f"base URL must be an http(s) URL with a host, got {base_url!r}")
    port = f":{parts.port}" if parts.port else ""
    if parts.scheme == "http" and _host_is_loopback(parts.hostname):
        site = f"http://localhost{port}"
    else:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        site = f"https://{host}{port}"
    return f"{site}/users/{quote(user_id, safe='')}"


def build_user_document(
    base_url: str,
    user_id: str,
    raw_public_key: bytes,
    profile_url: str | None = None,
    include_base64: bool = False,
) -> dict[str, Any]:
    """The DID document of ``did:web:<host>:users:<user_id>`` with a ``Profile`` service.

    ``profile_url`` defaults to ``profile_endpoint(base_url, user_id)``, an endpoint the
    hub accepts (the hub takes the last path segment of the profile URL as the member's handle).
    """
    did = user_did(base_url, user_id)
    endpoint = profile_url or profile_endpoint(base_url, user_id)
    return build_document(did, raw_public_key, include_base64=include_base64, services=[profile_service(did, endpoint)])


def render_document(doc: dict[str, Any]) -> bytes:
    """Stable bytes of a DID document: 2-space indented JSON, keys in insertion order, final newline."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_document(data: Any) -> dict[str, Any]:
    """A DID document from bytes/str/dict; ``RingHubError`` when it is not a JSON object with an ``id``."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8", errors="replace")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise RingHubError(f"DID document is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise RingHubError("DID document must be a JSON object with a string 'id'")
    return data


def _method_id_matches(method_id: str, wanted: str, did: str) -> bool:
    if method_id == wanted:
        return True
    # Relative ids ("#key-1") are resolved against the document's DID.
    return method_id.startswith("#") and did + method_id == wanted


def find_method(doc: dict[str, Any], kid: str | None = None) -> dict[str, Any]:
    """The verification method with id ``kid`` (default ``<doc id>#key-1``), or ``RingHubError``."""
    did = doc.get("id", "")
    wanted = kid or key_id(did)
    if wanted.startswith("#"):
        wanted = did + wanted
    methods = doc.get("verificationMethod") or []
    if not isinstance(methods, list):
        raise RingHubError("DID document 'verificationMethod' must be a list")
    for method in methods:
        if isinstance(method, dict) and _method_id_matches(str(method.get("id", "")), wanted, did):
            return method
    raise RingHubError(f"DID document {did!r} has no verification method {wanted!r}", key_id=wanted)


def method_public_key(method: dict[str, Any]) -> bytes:
    """The 32 raw key bytes of a verification method.

    Reads ``publicKeyMultibase`` and/or ``publicKeyBase64``; refuses a method
    where both are present and disagree, or where neither is.
    """
    mb = method.get("publicKeyMultibase")
    b64 = method.get("publicKeyBase64")
    from_mb = raw_from_multibase(mb) if mb is not None else None
    from_b64 = raw_from_base64(b64) if b64 is not None else None
    if from_mb is not None and from_b64 is not None and from_mb != from_b64:
        raise RingHubError(
            f"verification method {method.get('id')!r} has publicKeyMultibase and publicKeyBase64 "
            "holding different keys",
            key_id=method.get("id"),
        )
    raw = from_mb if from_mb is not None else from_b64
    if raw is None:
        raise RingHubError(
            f"verification method {method.get('id')!r} has neither publicKeyMultibase nor publicKeyBase64",
            key_id=method.get("id"),
        )
    return raw


def document_public_key(doc: dict[str, Any], kid: str | None = None, purpose: str | None = None) -> bytes:
    """The raw public key of method ``kid`` (default ``#key-1``) of a DID document.

    With ``purpose`` (``assertionMethod``, ``authentication``) the method must
    also be listed under that relationship.
    """
    method = find_method(doc, kid)
    if purpose:
        did = doc.get("id", "")
        listed = doc.get(purpose) or []
        ids = [
            entry if isinstance(entry, str) else entry.get("id", "")
            for entry in listed
            if isinstance(entry, (str, dict))
        ]
        ids = [did + i if i.startswith("#") else i for i in ids]
        if method.get("id") not in ids and did + str(method.get("id")) not in ids:
            raise RingHubError(f"key {method.get('id')!r} is not listed in {purpose!r}", key_id=method.get("id"))
    return method_public_key(method)


def document_services(doc: dict[str, Any], service_type: str) -> list[dict[str, Any]]:
    """Service entries of a given type (the hub accepts ``Profile`` and ``profile``)."""
    wanted = service_type.lower()
    return [s for s in doc.get("service") or [] if isinstance(s, dict) and str(s.get("type", "")).lower() == wanted]


def document_summary(data: bytes | None) -> dict[str, Any] | None:
    """``{"id", "key_id", "publicKeyMultibase"}`` of existing document bytes, or None if absent/unreadable."""
    if data is None:
        return None
    try:
        doc = parse_document(data)
        raw = document_public_key(doc)
        return {"id": doc["id"], "publicKeyMultibase": multibase_from_raw(raw)}
    except (RingHubError, UnicodeDecodeError):
        return {"id": None, "publicKeyMultibase": None}


# --------------------------------------------------------------------------- resolution


def fetch_document(
    did: str,
    *,
    url: str | None = None,
    timeout: float = 10.0,
    max_bytes: int = 1024 * 1024,
    validate_certs: bool = True,
) -> tuple[dict[str, Any], str]:
    """Resolve a did:web DID over HTTP(S); return ``(document, url)``.

    ``url`` overrides the URL derived from the DID (for servers reached through
    another address). The document's ``id`` must equal ``did``. Uses Ansible's
    ``open_url`` (proxies, certificate checks, redirects as Ansible handles them).
    """
    # Imported here: the modules that only read and write keys (did_keys, reset_steps) never fetch, and
    # Ansible's urls module is a twentieth of a second of every module start.
    from ansible.module_utils import urls

    target = url or did_web_to_url(did)
    try:
        response = urls.open_url(
            target,
            headers={"Accept": "application/did+json, application/json"},
            timeout=timeout,
            validate_certs=validate_certs,
            use_netrc=False,
        )
        body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise RingHubError(f"DID document {target} answered HTTP {exc.code}", url=target, status=exc.code) from exc
    except (urllib.error.URLError, urls.ConnectionError, OSError, ValueError) as exc:
        raise RingHubError(f"DID document {target} could not be fetched: {exc}", url=target) from exc
    if len(body) > max_bytes:
        raise RingHubError(f"DID document {target} is larger than {max_bytes} bytes", url=target)
    doc = parse_document(body)
    if doc["id"] != did.split("#", 1)[0]:
        raise RingHubError(f"DID document at {target} has id {doc['id']!r}, expected {did!r}", url=target)
    return doc, target
