"""Sandbox hub HTTP server: a stand-in for the Ring Hub's hub-api. TEST AND DEMO TOOL ONLY.

Speaks the hub's protocol over the hub's own tables and Redis, so the collection's
restart and verify steps run without Node or Prisma. Run it through
``sandbox_hub.ctl`` (background, pid file, readiness wait) or in the foreground::

    PYTHONPATH=tests:.collections python -m sandbox_hub.server --env-file .env --web-root web/

What it answers, as hub-api (commit e46efaf) does:

- ``GET /health``, ``GET /health/live`` and ``GET /health/ready`` with a ``timestamp``
  (real PostgreSQL and Redis checks; 503 ``not_ready`` with the failing check ``unhealthy``);
- ``GET /trp/root``, ``GET /trp/rings/<slug>`` (with ``bannerUrl`` and ``themeColor``);
- ``POST /trp/join`` and ``POST /trp/leave``: a draft-cavage HTTP signature over the
  headers it names; ``Date`` (300 s skew, when signed) and ``Digest`` (when sent) checked,
  neither required; keys from the ``HttpSignature`` cache or the actor's did:web document
  (fetched over http for loopback hosts; a loopback DID nobody serves gets the hub's
  placeholder document, so its signature fails); a join needs a ``Profile`` service
  (400 ``Invalid DID Document``) and fills the membership's profile fields;
- ``GET /trp/badges/<id>`` and ``POST /trp/badges/<id>/verify`` where ``<id>`` is the full
  badge URL percent-encoded as one path segment; ``GET /trp/actors/<did>/badges``;
- a rate limit on every route, as ``@fastify/rate-limit`` 8 (500 requests a minute per
  client, ``x-ratelimit-*`` headers, 429 past it; ``SANDBOX_RATE_LIMIT``/``_WINDOW``);
- static ``/.well-known/did.json`` and ``/users/<hash>/did.json`` from the web root, as the
  reverse proxy serves them in production (outside the hub, so outside its rate limit).

Badge signing key: ``RING_HUB_PRIVATE_KEY`` (base64 of PEM). Unset or unparsable ->
an ephemeral key, and with ``NODE_ENV=production`` no badge is issued (``badge: null``).
Binds 127.0.0.1 only; resolves loopback did:web DIDs only (never fetches other hosts).
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import json
import logging
import math
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _jws
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from sandbox_hub.config import (
    ConfigError,
    Settings,
    database_spec,
    decode_private_key,
    load_env,
    settings_from_env,
)
from sandbox_hub.store import Cache, ConnectionLost, Database, iso, utcnow

LOG = logging.getLogger("sandbox_hub")
NANOID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
CREDENTIAL_CONTEXT = [
    "https://www.w3.org/2018/credentials/v1",
    "https://purl.imsglobal.org/spec/ob/v3p0/context.json",
    "https://threadring.org/contexts/v1",
]
MAX_BODY = 1024 * 1024
JSON_TYPE = "application/json; charset=utf-8"
KEY_CACHE_SECONDS = 24 * 3600  # the hub trusts a cached did:web key for 24 h (HttpSignature.expiresAt)
PROFILE_MAX_AGE_SECONDS = 24 * 3600  # the profile kept in Actor.metadata is re-resolved after 24 h
CLOCK_SKEW_SECONDS = 300
DEFAULT_THEME_COLOR = "thread-pine"  # "Ring"."themeColor" DEFAULT
HUB_LOOPBACK_HOSTS = ("localhost", "127.0.0.1")  # what the hub's resolver fetches over plain http
PROFILE_SERVICE_MISSING = (
    "Your instance must provide a Profile service endpoint in your DID document to join federated "
    'ThreadRings. Please ensure your DID document includes a service with type "Profile".'
)
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~%-]+$")
_SIGNATURE_PARAM_RE = re.compile(r'(\w+)="([^"]+)"')  # the hub's parseSignatureHeader
_DIGEST_RE = re.compile(r"^sha-256=(.+)$", re.I)
_LEADING_INT_RE = re.compile(r"^\s*([+-]?\d+)")

Response = tuple[int, Any]
Routed = tuple[int, Any, str]


def nanoid(size: int = 21) -> str:
    return "".join(secrets.choice(NANOID_ALPHABET) for _position in range(size))


def err(status: int, error: str, message: str) -> Response:
    return status, {"error": error, "message": message}


def _truthy(value: Any) -> bool:
    """JavaScript truthiness (``{}`` and ``[]`` are true; ``0``, ``""``, ``null`` are not)."""
    return isinstance(value, (dict, list)) or bool(value)


def ms_long(milliseconds: float) -> str:
    """``ms(value, {long: true})`` of the npm ``ms`` package: ``1 minute``, ``2 seconds``, ``500 ms``."""
    size = abs(milliseconds)
    for unit, name in ((86_400_000, "day"), (3_600_000, "hour"), (60_000, "minute"), (1000, "second")):
        if size >= unit:
            return f"{math.floor(milliseconds / unit + 0.5)} {name}{'s' if size >= unit * 1.5 else ''}"
    return f"{milliseconds:g} ms"


class RateLimiter:
    """``@fastify/rate-limit`` 8.1 with its local store, as hub-api registers it (max 500, ``'1 minute'``).

    One counter per client key, in a fixed window that starts at the client's first
    request and lasts ``window`` seconds (the store's LRU entry expires then; a request
    past the limit does not extend it). Every request of a route counts, refused ones
    too. A request within the limit gets ``x-ratelimit-limit``, ``x-ratelimit-remaining``
    (``limit - count``) and ``x-ratelimit-reset`` (whole seconds left in the window); one
    past it gets the same with ``remaining`` 0 plus ``retry-after`` (the window in whole
    seconds, as the plugin sends it without ``enableDraftSpec``) and a 429.
    ``limit`` 0 turns it off (no headers): a sandbox-only setting for load tests.
    """

    MAX_CLIENTS = 5000  # the store's LRU size

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._clients: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def hit(self, client: str) -> tuple[bool, dict[str, str]]:
        """Count one request of ``client``: ``(allowed, headers to send)``."""
        if not self.enabled:
            return True, {}
        now = self._clock()
        with self._lock:
            count, started = self._clients.pop(client, (0, now))
            if now - started >= self.window:
                count, started = 0, now
            count += 1
            self._clients[client] = (count, started)  # most recently used last
            if len(self._clients) > self.MAX_CLIENTS:
                del self._clients[next(iter(self._clients))]
        seconds_left = math.floor(self.window - (now - started))
        allowed = count <= self.limit
        headers = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.limit - count if allowed else 0),
            "x-ratelimit-reset": str(seconds_left),
        }
        if not allowed:
            headers["retry-after"] = str(int(self.window))
        return allowed, headers

    def refusal(self) -> dict[str, Any]:
        """The 429 body: Fastify's serialization of the plugin's error."""
        return {
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": f"Rate limit exceeded, retry in {ms_long(self.window * 1000)}",
        }


def client_key(headers: dict[str, str], peer: str) -> str:
    """``request.ip`` with ``trustProxy: true``: the left-most ``X-Forwarded-For`` address, else the peer."""
    forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
    return forwarded or peer


def placeholder_document(did: str) -> dict[str, Any]:
    """The hub's ``createMockWebDID``: what it uses for a loopback did:web DID nobody serves.

    Its key (32 bytes of 0x01) is nobody's, so a request signed by that DID fails with
    ``Invalid signature``; its ``Profile`` service would pass the join's document check.
    """
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1"],
        "id": did,
        "verificationMethod": [
            {
                "id": f"{did}#key-1",
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyBase64": base64.b64encode(b"\x01" * 32).decode("ascii"),
            }
        ],
        "authentication": [f"{did}#key-1"],
        "assertionMethod": [f"{did}#key-1"],
        "service": [
            {"id": f"{did}#ring-hub", "type": "RingHub", "serviceEndpoint": "http://localhost:3100/trp"},
            {"id": f"{did}#profile", "type": "Profile", "serviceEndpoint": "http://localhost:3100/profile"},
        ],
    }


def _multibase_to_base64(value: str) -> str | None:
    """The hub's ``convertMultibaseToBase64``: ``z`` + base58btc of 0xed 0x01 + 32 bytes, else None."""
    if not value.startswith("z"):
        return None
    try:
        raw = _did.b58decode(value[1:])
    except RingHubError:
        return None
    if len(raw) != 34 or raw[0] != 0xED or raw[1] != 0x01:
        return None
    return base64.b64encode(raw[2:]).decode("ascii")


def hub_public_key(doc: Any, key_id: str) -> str | None:
    """The hub's ``extractPublicKey``: the base64 key of the method whose id is exactly ``key_id``.

    ``publicKeyBase64`` and/or ``publicKeyMultibase``; when both are present and disagree
    the hub logs it and takes ``publicKeyMultibase``.
    """
    methods = doc.get("verificationMethod") if isinstance(doc, dict) else None
    if not isinstance(methods, list):
        return None
    method = next((m for m in methods if isinstance(m, dict) and m.get("id") == key_id), None)
    if method is None:
        return None
    from_b64 = method.get("publicKeyBase64") if isinstance(method.get("publicKeyBase64"), str) else None
    multibase = method.get("publicKeyMultibase")
    from_mb = _multibase_to_base64(multibase) if isinstance(multibase, str) and multibase else None
    if from_b64 and from_mb and from_b64 != from_mb:
        LOG.warning("%s has publicKeyBase64 and publicKeyMultibase that DISAGREE: using publicKeyMultibase", key_id)
        return from_mb
    return from_b64 or from_mb or None


def verify_ed25519(public_key_b64: str, message: str, signature_b64: str) -> bool:
    """Ed25519 check as the hub makes it (lenient base64; a malformed key or signature is just invalid)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(_b64_lenient(public_key_b64))
        key.verify(_b64_lenient(signature_b64), message.encode("utf-8"))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _b64_lenient(value: str) -> bytes:
    """``Buffer.from(value, 'base64')``: characters outside the (standard or url-safe) alphabet
    are skipped, padding is optional."""
    cleaned = re.sub(r"[^A-Za-z0-9+/_-]", "", value.split("=", 1)[0]).replace("-", "+").replace("_", "/")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def profile_url_of(doc: Any) -> str | None:
    """The hub's ``extractProfileUrl``: the first ``Profile``/``profile`` service's endpoint, when it
    is an ``https://`` URL or starts with ``http://localhost`` (anything else is ignored)."""
    services = doc.get("service") if isinstance(doc, dict) else None
    if not isinstance(services, list):
        return None
    service = next((s for s in services if isinstance(s, dict) and s.get("type") in ("Profile", "profile")), None)
    url = service.get("serviceEndpoint") if service else None
    if not isinstance(url, str) or not url:
        return None
    if not (url.startswith("https://") or url.startswith("http://localhost")):
        LOG.warning("Profile URL %s of %s is not HTTPS (nor http://localhost): the hub ignores it", url, doc.get("id"))
        return None
    return url


def profile_problem(doc: Any) -> str | None:
    """The hub's ``validateProfileServiceEndpoint``: None, or the message of its 400."""
    url = profile_url_of(doc)
    if url is None:
        return PROFILE_SERVICE_MISSING
    parts = urlsplit(url)
    if not parts.hostname or any(c.isspace() for c in url):
        return f"Invalid profile URL format: {url}"
    return None


def profile_from_document(did: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The hub's ``extractProfileFromDID``: profile URL (required), handle, instance domain, name, avatar."""
    url = profile_url_of(doc)
    if url is None:
        return None
    path_parts = [p for p in urlsplit(url).path.split("/") if p]
    handle = path_parts[-1].removeprefix("@") if len(path_parts) >= 2 else None
    parts = did.split(":")
    domain = parts[2].replace("%3A", ":") if did.startswith("did:web:") and len(parts) >= 3 else None
    name, image = doc.get("name"), doc.get("image")
    return {
        "actorName": name if isinstance(name, str) and name else None,
        "avatarUrl": image if isinstance(image, str) and image else None,
        "profileUrl": url,
        "handle": handle or None,
        "instanceDomain": domain,
    }


def _parse_http_date(value: str) -> float | None:
    """Epoch seconds of a ``Date`` header (``Date.parse``), None when it does not parse."""
    parsed = email.utils.parsedate_tz(value)
    if parsed is not None:
        try:
            return float(email.utils.mktime_tz(parsed))
        except (TypeError, ValueError, OverflowError):
            return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _leading_int(value: str | None) -> int | None:
    """``parseInt(value, 10)`` (None where it gives NaN)."""
    match = _LEADING_INT_RE.match(value or "")
    return int(match.group(1)) if match else None


def _parse_iso(value: Any) -> float | None:
    """Epoch seconds of an ISO timestamp (``new Date(value)``), None when it does not parse."""
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def hub_signing_string(
    method: str, target: str, headers: dict[str, str], names: list[str], params: dict[str, str]
) -> str:
    """The hub's ``buildSigningString`` (its own code, not the collection's signer): one
    ``name: value`` line per signed header that the request carries (a missing one is
    left out, not an error), ``(created)``/``(expires)`` from the signature's parameters."""
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {target}")
        elif name in ("(created)", "(expires)"):
            raw = params.get(name[1:-1])
            value = _leading_int(raw)
            lines.append(f"{name}: {'' if raw is None else ('NaN' if value is None else value)}")
        elif headers.get(name.lower()):
            lines.append(f"{name.lower()}: {headers[name.lower()]}")
    return "\n".join(lines)


class SignedRequestError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response[1].get("message"))
        self.response = response


class Hub:
    """The hub's behaviour; the HTTP layer only routes to it."""

    def __init__(self, settings: Settings, web_root: str | Path | None = None) -> None:
        self.settings = settings
        self.web_root = Path(web_root).resolve() if web_root else None
        self.db = Database(settings.database_url)
        self.cache = Cache(settings.redis_url)
        self.issuer_did = _did.instance_did(settings.ring_hub_url)
        self.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_limit_window)
        self._limited: dict[str, float] = {}
        self._limited_lock = threading.Lock()
        key = decode_private_key(settings.private_key_value)
        self.ephemeral = key is None
        if key is None:
            if settings.private_key_value:
                LOG.error(
                    "RING_HUB_PRIVATE_KEY is set but FAILED TO LOAD (expected base64 of a PKCS#8 PEM Ed25519 key). "
                    "Falling back to an EPHEMERAL in-memory key: every badge signed this boot will be INVALID "
                    "after the next restart."
                )
            else:
                LOG.error(
                    "RING_HUB_PRIVATE_KEY is NOT configured. Using an EPHEMERAL in-memory signing key: every "
                    "badge signed this boot will be PERMANENTLY INVALID after the next restart."
                )
            key = Ed25519PrivateKey.generate()
        else:
            LOG.info("Loaded persistent RING_HUB_PRIVATE_KEY from configuration")
        self.signing_key = key
        self.public_multibase = _did.multibase_from_raw(_ed25519.raw_public_key(key))

    # -- start-up ---------------------------------------------------------------------
    def resign_badges(self) -> dict[str, int]:
        """What the hub does at every start: re-sign each stored badge under a NEW id.

        As in the hub's current release the new row reuses the membership, so the
        ``Badge.membershipId`` unique constraint refuses it and every id stays.
        Skipped when no persistent key is configured.
        """
        counts = {"processed": 0, "updated": 0, "errors": 0}
        if not self.settings.private_key_value:
            LOG.warning("No persistent private key configured. Skipping badge re-signing as keys are ephemeral.")
            return counts
        if self.ephemeral:
            LOG.error("Failed to load private key for re-signing. Aborting migration.")
            return counts
        try:
            rows = self.db.all_badges()
        except psycopg2.Error as exc:
            LOG.error("badge re-signing skipped: database error %s", type(exc).__name__)
            return counts
        for row in rows:
            counts["processed"] += 1
            try:
                old = row["badgeData"] or {}
                ring = {"slug": old["threadRing"]["ringSlug"], "name": old["threadRing"]["ringName"]}
                badge = self.build_badge(ring, old["credentialSubject"]["id"], old["threadRing"]["memberRole"])
                new_id = badge["id"].rsplit("/", 1)[-1]
                if self.db.replace_badge(row["id"], new_id, row["membershipId"], badge):
                    counts["updated"] += 1
                else:
                    LOG.error("Failed to re-sign badge %s: the database refused the new row", row["id"])
                    counts["errors"] += 1
            except (KeyError, TypeError, psycopg2.Error) as exc:
                LOG.error("Failed to re-sign badge %s: %s", row.get("id"), type(exc).__name__)
                counts["errors"] += 1
        LOG.info("Badge re-signing migration completed: %s", json.dumps(counts))
        return counts

    # -- badges ------------------------------------------------------------------------
    def build_badge(self, ring: dict[str, Any], actor_did: str, role: str) -> dict[str, Any]:
        """A signed membership credential exactly as the hub's generateBadge builds it."""
        hub_url = self.settings.ring_hub_url
        issued = iso(utcnow())
        achievement: dict[str, Any] = {
            "id": f"{hub_url}/rings/{ring['slug']}/achievement",
            "type": ["Achievement"],
            "name": f"{ring['name']} Member",
            "description": f"Verified member of the {ring['name']} ThreadRing community with {role} privileges",
        }
        if ring.get("badgeImageUrl"):
            achievement["image"] = ring["badgeImageUrl"]
        if ring.get("badgeImageHighResUrl"):
            achievement["imageHighRes"] = ring["badgeImageHighResUrl"]
        achievement["criteria"] = {
            "narrative": "Membership verified through cryptographic authentication and Ring Hub consensus"
        }
        credential = {
            "@context": list(CREDENTIAL_CONTEXT),
            "id": f"{hub_url}/badges/{nanoid()}",
            "type": ["VerifiableCredential", "OpenBadgeCredential", "ThreadRingMembershipBadge"],
            "issuer": {
                "id": self.issuer_did,
                "type": "Profile",
                "name": f"ThreadRing Hub - {ring['name']}",
                "url": hub_url,
            },
            "credentialSubject": {"id": actor_did, "type": ["Profile"], "achievement": achievement},
            "issuanceDate": issued,
            "threadRing": {
                "ringSlug": ring["slug"],
                "ringName": ring["name"],
                "memberRole": role,
                "joinDate": issued,
                "ringHubUrl": hub_url,
                "badgeVersion": "1.0.0",
            },
        }
        return _jws.sign_badge(credential, self.signing_key)

    def verify_with_own_key(self, badge: Any) -> dict[str, Any]:
        """The hub's verifyBadge: signature with its current key, then ``exp``."""
        try:
            jws = badge["proof"]["jws"]
            parts = jws.split(".")
            if len(parts) != 3 or not all(parts):
                return {"isValid": False, "error": "Invalid JWS format"}
            signature = _jws.b64url_decode(parts[2])
            if not _ed25519.verify(self.signing_key.public_key(), signature, f"{parts[0]}.{parts[1]}".encode()):
                return {"isValid": False, "error": "Invalid signature"}
            payload = json.loads(_jws.b64url_decode(parts[1]))
            if payload.get("exp") and time.time() > payload["exp"]:
                return {"isValid": False, "error": "Badge expired"}
            return {"isValid": True}
        except (KeyError, TypeError, ValueError, AttributeError, RingHubError):
            return {"isValid": False, "error": "Verification error"}

    # -- DID resolution and signed requests --------------------------------------------
    def resolve_did(self, did: str, force_refresh: bool = False) -> Any:
        """The hub's ``resolveDID``: the document from Redis (``did:<did>``, 1 h) or fetched.

        A loopback did:web DID whose document cannot be fetched (an HTTP error, no
        server, not JSON) gets the hub's placeholder document, cached like a real one.
        Other hosts are never fetched by the sandbox (None, as an unreachable host
        gives in the hub). ``force_refresh`` drops the cached copy first.
        """
        cache_key = f"did:{did}"
        if force_refresh:
            self.cache.delete(cache_key)
        else:
            cached = self.cache.get_json(cache_key)
            if _truthy(cached):
                return cached
        if not did.startswith("did:web:"):
            LOG.warning("unsupported DID method (the sandbox resolves did:web only): %s", did)
            return None
        try:
            url = _did.did_web_to_url(did)
        except RingHubError as exc:
            LOG.warning("cannot resolve %s: %s", did, exc.msg)
            return None
        host = (urlsplit(url).hostname or "").lower()
        if host not in HUB_LOOPBACK_HOSTS:
            LOG.warning("the sandbox hub resolves loopback did:web DIDs only; %s is not fetched", did)
            return None
        try:
            doc = self._fetch_document(url)
        except RingHubError as exc:
            LOG.warning("DID document of %s: %s; using the placeholder document (its key is nobody's)", did, exc.msg)
            doc = placeholder_document(did)
        if not _truthy(doc):
            return None
        self.cache.set_json(cache_key, doc, self.settings.did_cache_ttl)
        return doc

    def _fetch_document(self, url: str) -> Any:
        """GET a loopback DID document directly (never through a proxy); the parsed JSON, whatever it is."""
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "RingHub-DID-Resolver/1.0"}
        )
        try:
            with _NO_PROXY_OPENER.open(request, timeout=self.settings.http_timeout) as response:
                body = response.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            raise RingHubError(f"{url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RingHubError(f"{url} could not be fetched: {exc}") from exc
        if len(body) > MAX_BODY:
            raise RingHubError(f"{url} is larger than {MAX_BODY} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RingHubError(f"{url} is not JSON") from exc

    def resolve_key(self, key_id: str, force_refresh: bool = False) -> str | None:
        """The hub's ``resolveKeyFromDID``: the base64 key of ``key_id`` from its DID document,
        cached in ``HttpSignature`` for 24 h (did:web)."""
        did = key_id.split("#", 1)[0]
        if not did.startswith("did:web:"):
            LOG.warning("unsupported DID method for key resolution: %s", key_id)
            return None
        doc = self.resolve_did(did, force_refresh)
        public_key = hub_public_key(doc, key_id) if doc is not None else None
        if public_key:
            self.db.store_key(key_id, public_key, did, utcnow() + timedelta(seconds=KEY_CACHE_SECONDS))
        return public_key

    def fetch_public_key(self, key_id: str) -> str | None:
        """The hub's ``fetchPublicKey``: ``HttpSignature`` first (re-resolved once expired; the stale
        key when that fails), else the DID document."""
        cached = self.db.cached_key(key_id)
        if cached:
            expires = cached.get("expiresAt")
            if expires is not None and expires < utcnow():
                fresh = self.resolve_key(key_id, force_refresh=True)
                if fresh:
                    return fresh
                LOG.warning("could not re-resolve the expired key %s: using the cached one", key_id)
            self.db.touch_key(key_id)
            return cached["publicKey"]
        return self.resolve_key(key_id)

    def verify_signature(self, method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The hub's ``verifyHttpSignature``: ``{"valid", "error"?, "actorDid"?, "keyId"?, "publicKey"?}``.

        Only what the signature names is signed; ``Date`` is checked (300 s) when it is
        signed and sent, ``Digest`` whenever it is sent; neither is required. A signature
        that fails against a cached did:web key is tried once more after re-resolving the
        DID document (a rotated key). Errors carry the hub's own messages.
        """
        raw = headers.get("signature")
        if not raw and headers.get("authorization", "").startswith("Signature "):
            raw = headers["authorization"][len("Signature ") :]
        if not raw:
            return {"valid": False, "error": "Missing signature header"}
        params = dict(_SIGNATURE_PARAM_RE.findall(raw))
        key_id, signature = params.get("keyId"), params.get("signature")
        if not key_id or not signature:
            return {"valid": False, "error": "Invalid signature header format"}
        names = params["headers"].split(" ") if "headers" in params else ["(request-target)", "date"]
        algorithm = params.get("algorithm", "ed25519")
        if algorithm not in ("ed25519", "hs2019"):
            return {"valid": False, "error": f"Unsupported algorithm: {algorithm}"}
        now = time.time()
        created, expires = _leading_int(params.get("created")), _leading_int(params.get("expires"))
        if created and created > now + 60:
            return {"valid": False, "error": "Signature created in the future"}
        if expires and expires < now:
            return {"valid": False, "error": "Signature expired"}
        if "date" in names and headers.get("date"):
            stamp = _parse_http_date(headers["date"])
            if stamp is None:
                return {"valid": False, "error": "Invalid Date header"}
            if abs(now - stamp) > CLOCK_SKEW_SECONDS:
                LOG.warning(
                    "Date %r is %.0f s away from now (allowed %d s)", headers["date"], now - stamp, CLOCK_SKEW_SECONDS
                )
                return {"valid": False, "error": "Date header outside allowed clock-skew window"}
        if headers.get("digest"):
            match = _DIGEST_RE.match(headers["digest"].strip())
            computed = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
            if not match or match.group(1) != computed:
                LOG.warning(
                    "Digest %r does not match the %d body bytes (SHA-256=%s)", headers["digest"], len(body), computed
                )
                return {"valid": False, "error": "Digest does not match request body"}
        public_key = self.fetch_public_key(key_id)
        if not public_key:
            return {"valid": False, "error": f"Unknown key: {key_id}"}
        text = hub_signing_string(method, target, headers, names, params)
        stored = self.db.cached_key(key_id)
        actor_did = (stored or {}).get("actorDid") or key_id.split("#", 1)[0]
        valid = verify_ed25519(public_key, text, signature)
        if not valid and key_id.split("#", 1)[0].startswith("did:web:"):
            fresh = self.resolve_key(key_id, force_refresh=True)
            if fresh and fresh != public_key:
                LOG.warning("the DID document of %s holds a new key (rotation): verifying with it", key_id)
                public_key = fresh
                valid = verify_ed25519(public_key, text, signature)
        found = {"actorDid": actor_did, "keyId": key_id, "publicKey": public_key, "headers": names}
        if not valid:
            return {"valid": False, "error": "Invalid signature", **found}
        return {"valid": True, **found}

    def authenticate(self, method: str, target: str, headers: dict[str, str], body: bytes) -> str:
        """``authenticateActor`` + ``requireVerifiedActor``: the signature, then the ``Actor`` row
        (registered on first sight: verified when its DID document resolves, no name, no
        instanceUrl). Returns the actor's DID."""
        result = self.verify_signature(method, target, headers, body)
        LOG.info(
            "signed %s %s: keyId=%s headers=%r Date %s Digest %s -> %s",
            method,
            target.partition("?")[0],
            result.get("keyId"),
            " ".join(result.get("headers") or []),
            "sent" if headers.get("date") else "absent",
            "sent" if headers.get("digest") else "absent",
            "valid" if result["valid"] else result["error"],
        )
        if not result["valid"]:
            raise SignedRequestError(
                err(401, "Authentication required", result.get("error") or "Invalid or missing signature")
            )
        did = result["actorDid"]
        verified = self.db.register_actor(did, result.get("publicKey"), lambda: self.resolve_did(did) is not None)
        if not verified:
            raise SignedRequestError(err(403, "Verification required", "This action requires a verified actor"))
        return did

    def actor_profile(self, did: str) -> dict[str, Any] | None:
        """The hub's ``resolveActorProfile``: the profile kept in ``Actor.metadata`` when under 24 h
        old (it keeps no handle), else from the DID document, stored back in ``Actor``."""
        actor = self.db.actor(did)
        meta = actor.get("metadata") if actor else None
        if isinstance(meta, dict) and meta.get("profileUrl") and meta.get("profileLastFetched"):
            fetched = _parse_iso(meta["profileLastFetched"])
            if fetched is None or time.time() - fetched <= PROFILE_MAX_AGE_SECONDS:
                return {
                    "actorName": meta.get("actorName") or (actor or {}).get("name") or None,
                    "avatarUrl": meta.get("avatarUrl") or None,
                    "profileUrl": meta["profileUrl"],
                    "handle": meta.get("handle") or None,
                    "instanceDomain": meta.get("instanceDomain") or None,
                }
        doc = self.resolve_did(did)
        profile = profile_from_document(did, doc) if isinstance(doc, dict) else None
        if profile is None:
            LOG.warning("no profile could be read from the DID document of %s", did)
            return None
        self.db.store_actor_profile(did, profile, iso(utcnow()))
        return profile

    # -- ring descriptors --------------------------------------------------------------
    def ring_response(self, ring: dict[str, Any]) -> dict[str, Any]:
        members, posts = self.db.ring_counts(ring["id"])
        out = {
            "id": ring["id"],
            "slug": ring["slug"],
            "name": ring["name"],
            "description": ring.get("description"),
            "shortCode": ring.get("shortCode"),
            "visibility": ring["visibility"],
            "joinPolicy": ring["joinPolicy"],
            "postPolicy": ring["postPolicy"],
            "ownerDid": ring["ownerDid"],
            "parentId": ring.get("parentId"),
            "createdAt": iso(ring["createdAt"]),
            "updatedAt": iso(ring["updatedAt"]),
            "curatorNote": ring.get("curatorNote"),
            # Columns of the hub's 20251127111500_add_ring_visual_identity; on a schema without
            # them the descriptor still carries them, with the column defaults.
            "bannerUrl": ring.get("bannerUrl"),
            "themeColor": ring["themeColor"] if "themeColor" in ring else DEFAULT_THEME_COLOR,
            "badgeImageUrl": ring.get("badgeImageUrl"),
            "badgeImageHighResUrl": ring.get("badgeImageHighResUrl"),
            "metadata": ring.get("metadata"),
            "policies": ring.get("policies"),
            "memberCount": members,
            "postCount": posts,
        }
        if ring.get("parentId"):
            lineage: list[dict[str, Any]] = []
            current: dict[str, Any] | None = ring
            seen = {ring["id"]}
            while current and current.get("parentId") and current["parentId"] not in seen:
                parent = self.db.ring_by_id(current["parentId"])
                if not parent:
                    break
                seen.add(parent["id"])
                lineage.insert(0, {"id": parent["id"], "slug": parent["slug"], "name": parent["name"]})
                current = parent
            out["lineage"] = lineage
        out["children"] = [
            {"id": c["id"], "slug": c["slug"], "name": c["name"], "memberCount": int(c["memberCount"])}
            for c in self.db.ring_children(ring["id"])
        ]
        return out

    # -- handlers ----------------------------------------------------------------------
    def health_ready(self) -> Response:
        """``SELECT 1`` and ``PING``: 200 ``ready``, or 503 ``not_ready`` with the failing check ``unhealthy``."""
        checks: dict[str, str] = {}
        try:
            self.db.ping()
            checks["database"] = "ok"
        except psycopg2.Error as exc:
            LOG.warning("readiness: database check failed: %s", _db_reason(exc))
            checks["database"] = "unhealthy"
        try:
            self.cache.ping()
            checks["redis"] = "ok"
        except (redis.RedisError, OSError) as exc:
            LOG.warning("readiness: redis check failed: %s (%s)", type(exc).__name__, exc)
            checks["redis"] = "unhealthy"
        healthy = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if healthy else "not_ready", "checks": checks, "timestamp": iso(utcnow())}
        return (200 if healthy else 503), body

    def get_ring(self, slug: str) -> Response:
        ring = self.db.ring_by_slug(slug)
        if not ring or ring["visibility"] == "PRIVATE":
            return err(404, "Not found", "Ring not found")
        return 200, self.ring_response(ring)

    def get_root(self) -> Response:
        ring = self.db.ring_by_slug(self.settings.root_ring_slug)
        if not ring:
            return err(404, "Not found", "Root ring not found")
        return 200, self.ring_response(ring)

    def join(self, body: dict[str, Any], actor_did: str) -> Response:
        """``POST /trp/join`` in the hub's order: ring, block, existing membership, the actor's
        DID document and its ``Profile`` service (400), profile, join policy, role, membership
        (with the profile fields), badge, audit row."""
        ring_slug = body["ringSlug"]
        message = body.get("message")
        metadata = body.get("metadata")
        ring = self.db.ring_by_slug(ring_slug)
        if not ring:
            return err(404, "Not found", "Ring not found")
        if self.db.actor_blocked(actor_did, ring["id"]):
            return err(403, "Access denied", "You are blocked from this ring")
        existing = self.db.membership(ring["id"], actor_did)
        if existing and existing["status"] == "ACTIVE":
            return err(409, "Already member", "You are already a member of this ring")
        if existing and existing["status"] == "PENDING":
            return err(409, "Application pending", "Your membership application is pending approval")
        doc = self.resolve_did(actor_did)
        if doc is None:
            return err(
                400,
                "Invalid DID",
                "Failed to resolve your DID document. Please ensure your instance is properly configured.",
            )
        problem = profile_problem(doc)
        if problem:
            LOG.warning("join of %s to %s refused: Invalid DID Document (%s)", actor_did, ring_slug, problem)
            return err(400, "Invalid DID Document", problem)
        profile = self.actor_profile(actor_did)
        self.db.register_actor(actor_did, None, lambda: True)
        policy = ring["joinPolicy"]
        status, requires_approval = "PENDING", False
        if policy == "OPEN":
            status = "ACTIVE"
        elif policy == "APPLICATION":
            requires_approval = True
        elif policy == "INVITATION":
            invitation = self.db.pending_invitation(actor_did, ring["id"])
            if not invitation:
                return err(403, "Invitation required", "This ring requires an invitation to join")
            status = "ACTIVE"
            self.db.accept_invitation(invitation["id"])
        elif policy == "CLOSED":
            return err(403, "Ring closed", "This ring is not accepting new members")
        roles = self.db.ring_roles(ring["id"])
        role = next((r for r in roles if r["name"] == "member"), roles[0] if roles else None)
        if role is None:
            return err(500, "Configuration error", "Ring has no roles configured")
        profile_fields: dict[str, Any] = {}
        if profile:
            profile_fields = {**profile, "profileLastFetched": utcnow(), "profileSource": "DID_RESOLUTION"}
        membership = self.db.upsert_membership(
            ring["id"], actor_did, role["id"], status, message, metadata, profile_fields
        )
        badge = None
        if status == "ACTIVE":
            if self.ephemeral and self.settings.production:
                LOG.error(
                    "Badge issuance is disabled: the hub is running with an ephemeral signing key "
                    "(RING_HUB_PRIVATE_KEY is unset or invalid). Configure a persistent key and restart."
                )
            else:
                badge = self._issue_badge(ring, actor_did, role["name"], membership["id"])
        self.db.audit(
            ring["id"],
            "membership.applied" if requires_approval else "membership.joined",
            actor_did,
            {"membershipId": membership["id"], "status": status, "message": message},
        )
        LOG.info("Ring join request processed: %s -> %s (%s)", actor_did, ring_slug, status)
        hub_url = self.settings.ring_hub_url
        return 201, {
            "membership": _defined(
                id=membership["id"],
                status=status,
                role=role["name"],
                joinedAt=iso(membership.get("joinedAt")),
                requiresApproval=requires_approval,
            ),
            # As the hub answers: badge.id is already a full URL, so url repeats the prefix.
            "badge": {"id": badge["id"], "url": f"{hub_url}/badges/{badge['id']}"} if badge else None,
            "message": "Application submitted for review" if requires_approval else "Successfully joined ring",
        }

    def _issue_badge(
        self, ring: dict[str, Any], actor_did: str, role: str, membership_id: str
    ) -> dict[str, Any] | None:
        """Sign a badge, point the membership at it, store it; as the hub, the answer carries the
        badge once it is signed, even when storing it fails (a re-join after a leave: the
        membership still has its old, revoked badge, and ``Badge.membershipId`` is unique)."""
        try:
            badge = self.build_badge(ring, actor_did, role)
        except RingHubError as exc:
            LOG.error("Failed to generate badge for %s in %s: %s", actor_did, ring["slug"], exc.msg)
            return None
        try:
            self.db.set_membership_badge(membership_id, badge["id"])
            self.db.insert_badge(badge["id"], membership_id, badge)
        except psycopg2.Error as exc:
            LOG.error(
                "Failed to generate badge for %s in %s: %s; the answer names badge %s, which is not stored",
                actor_did,
                ring["slug"],
                _db_reason(exc),
                badge["id"],
            )
        return badge

    def leave(self, body: dict[str, Any], actor_did: str) -> Response:
        reason = body.get("reason")
        ring = self.db.ring_by_slug(body["ringSlug"])
        if not ring:
            return err(404, "Not found", "Ring not found")
        membership = self.db.membership(ring["id"], actor_did)
        if not membership or membership["status"] not in ("ACTIVE", "PENDING"):
            return err(404, "Not a member", "You are not a member of this ring")
        if ring["ownerDid"] == actor_did and self.db.active_member_count_except(ring["id"], actor_did) > 0:
            return err(
                400,
                "Transfer ownership required",
                "Ring owners cannot leave until ownership is transferred to another member",
            )
        if membership.get("badgeId"):
            self.db.revoke_badge(membership["badgeId"], reason or "Member left ring")
        self.db.leave(membership["id"], reason)
        self.db.audit(
            ring["id"],
            "membership.left",
            actor_did,
            {"membershipId": membership["id"], "reason": reason, "role": membership.get("roleName")},
        )
        return 200, {"message": "Successfully left ring", "leftAt": iso(utcnow())}

    def get_badge(self, badge_id: str) -> Response:
        row = self.db.badge(badge_id)
        if not row:
            return err(404, "Not found", "Badge not found")
        return 200, {
            "badge": row["badgeData"],
            "metadata": {
                **_defined(
                    ring={"slug": row["ringSlug"], "name": row["ringName"]},
                    role=row.get("roleName"),
                    issuedAt=iso(row["issuedAt"]),
                    isRevoked=row["revokedAt"] is not None,
                    revokedAt=iso(row["revokedAt"]),
                ),
                "revocationReason": row.get("revocationReason"),
            },
        }

    def verify_badge(self, badge_id: str) -> Response:
        row = self.db.badge(badge_id)
        if not row:
            return err(404, "Not found", "Badge not found")
        now = iso(utcnow())
        if row["revokedAt"] is not None:
            return 200, {"isValid": False, "error": "Badge has been revoked", "verifiedAt": now}
        result = self.verify_with_own_key(row["badgeData"])
        issuer = (row["badgeData"] or {}).get("issuer") if isinstance(row["badgeData"], dict) else None
        out: dict[str, Any] = {"isValid": result["isValid"]}
        if result.get("error"):
            out["error"] = result["error"]
        out["verifiedAt"] = now
        out["issuer"] = issuer.get("id") if isinstance(issuer, dict) else None
        return 200, out

    def actor_badges(self, did: str, query: dict[str, str]) -> Response:
        status = query.get("status", "active")
        if status not in ("active", "revoked", "all"):
            return 400, {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "querystring/status must be equal to one of the allowed values",
            }
        try:
            limit = float(query.get("limit", "20"))
            offset = float(query.get("offset", "0"))
        except ValueError:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "querystring/limit must be number"}
        if not (1 <= limit <= 100) or offset < 0 or math.isnan(limit) or math.isnan(offset):
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "querystring limit/offset out of range"}
        limit_n, offset_n = int(limit), int(offset)
        rows = self.db.actor_badges(did, status, limit_n, offset_n)
        visible = [r for r in rows if r["ringVisibility"] != "PRIVATE"]
        badges = [
            {
                "badge": r["badgeData"],
                "ring": {"slug": r["ringSlug"], "name": r["ringName"], "visibility": r["ringVisibility"]},
                "membership": {
                    "role": r.get("roleName"),
                    "joinedAt": iso(r.get("memberJoinedAt")),
                    "status": r["memberStatus"],
                },
                "issuedAt": iso(r["issuedAt"]),
                "isRevoked": r["revokedAt"] is not None,
                "revokedAt": iso(r["revokedAt"]),
                "revocationReason": r.get("revocationReason"),
            }
            for r in visible
        ]
        return 200, {
            "badges": badges,
            "total": len(badges),
            "limit": limit_n,
            "offset": offset_n,
            "hasMore": offset_n + limit_n < len(badges),
        }

    def static_file(self, relative: str) -> tuple[int, bytes | None]:
        if self.web_root is None:
            return 404, None
        path = (self.web_root / relative).resolve()
        if self.web_root not in path.parents or not path.is_file():
            return 404, None
        return 200, path.read_bytes()

    # -- routing -----------------------------------------------------------------------
    def signed_json(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        handler: Callable[[dict[str, Any], str], Response],
        action: str,
    ) -> Response:
        ctype = headers.get("content-type", "")
        if body and "json" not in ctype.lower():
            return 415, {
                "statusCode": 415,
                "code": "FST_ERR_CTP_INVALID_MEDIA_TYPE",
                "error": "Unsupported Media Type",
                "message": f"Unsupported Media Type: {ctype}",
            }
        try:
            data = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Body is not valid JSON"}
        if not isinstance(data, dict) or not isinstance(data.get("ringSlug"), str):
            return 400, {
                "statusCode": 400,
                "code": "FST_ERR_VALIDATION",
                "error": "Bad Request",
                "message": "body must have required property 'ringSlug'",
            }
        try:
            actor_did = self.authenticate(method, target, headers, body)
            return handler(data, actor_did)
        except SignedRequestError as exc:
            LOG.warning("%s %s refused: %s", method, target, exc.response[1].get("message"))
            return exc.response
        except ConnectionLost:
            raise  # route() runs the request again when it wrote nothing
        except psycopg2.Error as exc:
            LOG.error("%s failed: %s", action, type(exc).__name__)
            return err(500, "Internal error", f"Failed to process {action} request")

    def route(
        self, method: str, raw_target: str, headers: dict[str, str], body: bytes, peer: str = "127.0.0.1"
    ) -> tuple[int, Any, str, dict[str, str]]:
        """Return ``(status, payload, content type, extra headers)``; payload is JSON-able or bytes.

        A hub route counts against its client's rate limit first (429 past it, the
        ``x-ratelimit-*`` headers on every answer); the static DID documents (the reverse
        proxy's in production) and unknown paths (Fastify's not-found handler) do not.

        A request whose database connection died under it (``ConnectionLost``: a reset's
        ``pg_terminate_backend``, a PostgreSQL restart) runs once more on a new connection,
        when it has written nothing yet; otherwise, or when it fails again, it answers 500.
        """
        path, _sep, query_string = raw_target.partition("?")
        endpoint = self._endpoint(method, path, query_string, raw_target, headers, body)
        if endpoint is None:
            return (
                404,
                {"message": f"Route {method}:{path} not found", "error": "Not Found", "statusCode": 404},
                JSON_TYPE,
                {},
            )
        kind, run = endpoint
        if kind == "static":
            return (*run(), {})
        client = client_key(headers, peer)
        allowed, limit_headers = self.rate_limiter.hit(client)
        if not allowed:
            if self._note_limited(client):
                LOG.warning(
                    "rate limit: %s made more than %d requests in %s; answering 429",
                    client,
                    self.rate_limiter.limit,
                    ms_long(self.rate_limiter.window * 1000),
                )
            return 429, self.rate_limiter.refusal(), JSON_TYPE, limit_headers
        return (*self._run(method, path, run), limit_headers)

    def _note_limited(self, client: str) -> bool:
        """True the first time ``client`` is refused in a window (the log names it once)."""
        now = time.monotonic()
        with self._limited_lock:
            last = self._limited.get(client)
            if last is not None and now - last < self.rate_limiter.window:
                return False
            self._limited[client] = now
            return True

    def _run(self, method: str, path: str, run: Callable[[], Routed]) -> Routed:
        for attempt in (1, 2):
            self.db.begin_request()
            try:
                return run()
            except ConnectionLost as exc:
                writes = self.db.writes_in_request
                if attempt == 1 and writes == 0:
                    LOG.warning("%s %s: %s before anything was written; running it again", method, path, exc)
                    continue
                LOG.error(
                    "%s %s: %s%s", method, path, exc, f" after {writes} write(s); not run again" if writes else ""
                )
                return 500, {"error": "Internal error", "message": "Database connection lost"}, JSON_TYPE
            except psycopg2.Error as exc:
                LOG.error("%s %s: database error %s", method, path, type(exc).__name__)
                return (*err(500, "Internal error", "Database error"), JSON_TYPE)
        raise AssertionError("unreachable")

    def _endpoint(
        self, method: str, path: str, query_string: str, raw_target: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, Callable[[], Routed]] | None:
        """The route of a request, as ``("api" | "static", run)``, or None (404)."""
        segs = path.split("/")[1:]
        json_type = JSON_TYPE

        def api(call: Callable[[], Response]) -> tuple[str, Callable[[], Routed]]:
            return "api", lambda: (*call(), json_type)

        if method in ("GET", "HEAD"):
            if path == "/health":
                return api(lambda: (200, {"status": "ok", "timestamp": iso(utcnow())}))
            if path == "/health/live":
                return api(lambda: (200, {"status": "live", "timestamp": iso(utcnow())}))
            if path == "/health/ready":
                return api(self.health_ready)
            if path == "/.well-known/did.json" or (
                len(segs) == 3 and segs[0] == "users" and segs[2] == "did.json" and _safe_segment(segs[1])
            ):
                relative = f"users/{unquote(segs[1])}/did.json" if segs[0] == "users" else ".well-known/did.json"
                return "static", lambda: self._static(relative)
            if path == "/trp/root":
                return api(self.get_root)
            if len(segs) == 3 and segs[:2] == ["trp", "rings"] and segs[2]:
                return api(lambda: self.get_ring(unquote(segs[2])))
            if len(segs) == 3 and segs[:2] == ["trp", "badges"] and segs[2]:
                return api(lambda: self.get_badge(unquote(segs[2])))
            if len(segs) == 4 and segs[:2] == ["trp", "actors"] and segs[3] == "badges" and segs[2]:
                query = dict(parse_qsl(query_string, keep_blank_values=True))
                return api(lambda: self.actor_badges(unquote(segs[2]), query))
        if method == "POST":
            if path == "/trp/join":
                return api(lambda: self.signed_json(method, raw_target, headers, body, self.join, "join"))
            if path == "/trp/leave":
                return api(lambda: self.signed_json(method, raw_target, headers, body, self.leave, "leave"))
            if len(segs) == 4 and segs[:2] == ["trp", "badges"] and segs[3] == "verify" and segs[2]:
                return api(lambda: self.verify_badge(unquote(segs[2])))
        return None

    def _static(self, relative: str) -> Routed:
        status, data = self.static_file(relative)
        if data is None:
            return (*err(404, "Not found", "No such file"), JSON_TYPE)
        return status, data, "application/did+json"

    def close(self) -> None:
        self.db.close()
        self.cache.close()


def _db_reason(exc: BaseException) -> str:
    """Class and SQLSTATE of a database error, for the log (never a statement, value or password)."""
    code = getattr(exc, "pgcode", None)
    return type(exc).__name__ + (f" (SQLSTATE {code})" if code else "")


def _defined(**fields: Any) -> dict[str, Any]:
    """Drop ``None`` values, as JSON.stringify drops ``undefined`` ones."""
    return {k: v for k, v in fields.items() if v is not None}


def _safe_segment(seg: str) -> bool:
    return bool(_SEGMENT_RE.match(seg)) and unquote(seg) not in (".", "..") and "/" not in unquote(seg)


class Handler(BaseHTTPRequestHandler):
    server_version = "ringhub-sandbox/0.1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        LOG.info("%s %s", self.address_string(), fmt % args)

    def _handle(self, method: str) -> None:
        hub: Hub = self.server.hub  # type: ignore[attr-defined]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send(413, {"error": "Payload Too Large", "message": "bad or too large body"}, "application/json")
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        extra: dict[str, str] = {}
        try:
            status, payload, ctype, extra = hub.route(method, self.path, headers, body, self.client_address[0])
        except Exception:  # the server must answer, whatever went wrong
            LOG.exception("unhandled error on %s %s", method, self.path.partition("?")[0])
            status, payload, ctype = 500, {"error": "Internal error", "message": "Unexpected error"}, "application/json"
        self._send(status, payload, ctype, head=method == "HEAD", extra=extra)

    def _send(
        self, status: int, payload: Any, ctype: str, head: bool = False, extra: dict[str, str] | None = None
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        super().__init__((hub.settings.bind_address, hub.settings.port), Handler)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox_hub.server",
        description="Sandbox hub: a local stand-in for the Ring Hub's hub-api (test and demo tool only).",
    )
    parser.add_argument("--env-file", help="compose-style .env file (its values win over the environment)")
    parser.add_argument("--web-root", help="directory served at /.well-known/did.json and /users/<hash>/did.json")
    parser.add_argument("--port", type=int, help="listen port; overrides PORT (several hubs can share one env file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        values = load_env(args.env_file)
        if args.port is not None:
            values["PORT"] = str(args.port)
        settings = settings_from_env(values)
    except ConfigError as exc:
        LOG.error("configuration refused: %s", exc)
        return 2
    hub = Hub(settings, args.web_root)
    try:
        server = SandboxServer(hub)
    except OSError as exc:
        LOG.error("cannot listen on %s:%s: %s", settings.bind_address, settings.port, exc.strerror)
        return 1

    def shutdown(signum: int, _frame: Any) -> None:
        LOG.info("signal %s: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    LOG.info(
        "sandbox hub (test tool) on %s: NODE_ENV=%s, RING_HUB_URL=%s, issuer %s, %s key %s, database %s, rate limit %s",
        settings.local_url,
        settings.node_env,
        settings.ring_hub_url,
        hub.issuer_did,
        "EPHEMERAL" if hub.ephemeral else "persistent",
        hub.public_multibase,
        database_spec(settings.database_url).masked_url,
        f"{settings.rate_limit} requests per {ms_long(settings.rate_limit_window * 1000)} per client"
        if settings.rate_limit
        else "off",
    )
    hub.resign_badges()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        hub.close()
        LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
