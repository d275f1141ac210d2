"""Sandbox hub HTTP server: a stand-in for the Ring Hub's hub-api. TEST AND DEMO TOOL ONLY.

Speaks the hub's protocol over the hub's own tables and Redis, so the collection's
restart and verify steps run without Node or Prisma. Run it through
``sandbox_hub.ctl`` (background, pid file, readiness wait) or in the foreground::

    PYTHONPATH=tests:.collections python -m sandbox_hub.server --env-file .env --web-root web/

What it answers, as hub-api does:

- ``GET /health`` and ``GET /health/ready`` (real PostgreSQL and Redis checks, 503 when either is down);
- ``GET /trp/root``, ``GET /trp/rings/<slug>``;
- ``POST /trp/join`` and ``POST /trp/leave``: draft-cavage HTTP signature with ``Digest``
  and ``Date`` (300 s skew) checks, did:web resolution over http for loopback hosts,
  a ``Profile`` service required in the actor's DID document;
- ``GET /trp/badges/<id>`` and ``POST /trp/badges/<id>/verify`` where ``<id>`` is the full
  badge URL percent-encoded as one path segment; ``GET /trp/actors/<did>/badges``;
- static ``/.well-known/did.json`` and ``/users/<hash>/did.json`` from the web root, as the
  reverse proxy serves them in production.

Badge signing key: ``RING_HUB_PRIVATE_KEY`` (base64 of PEM). Unset or unparsable ->
an ephemeral key, and with ``NODE_ENV=production`` no badge is issued (``badge: null``).
Binds 127.0.0.1 only; resolves loopback did:web DIDs only (never fetches other hosts).
"""

from __future__ import annotations

import argparse
import base64
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
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _httpsig, _jws
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
KEY_CACHE_SECONDS = 3600
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~%-]+$")

Response = tuple[int, Any]


def nanoid(size: int = 21) -> str:
    return "".join(secrets.choice(NANOID_ALPHABET) for _position in range(size))


def err(status: int, error: str, message: str) -> Response:
    return status, {"error": error, "message": message}


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
    def resolve_did(self, did: str) -> dict[str, Any]:
        cache_key = f"did:{did}"
        cached = self.cache.get_json(cache_key)
        if isinstance(cached, dict):
            return cached
        if not did.startswith("did:web:"):
            raise RingHubError(f"Unsupported DID method: {did}", reason="resolve")
        try:
            url = _did.did_web_to_url(did)
        except RingHubError as exc:
            raise RingHubError(exc.msg, reason="resolve") from exc
        host = urlsplit(url).hostname or ""
        if host.lower() not in _did.LOOPBACK_HOSTS:
            raise RingHubError(f"the sandbox hub resolves loopback did:web DIDs only, not {did}", reason="resolve")
        try:
            doc = self._fetch_document(did, url)
        except RingHubError as exc:
            raise RingHubError(f"Could not resolve DID document for {did}: {exc.msg}", reason="resolve") from exc
        self.cache.set_json(cache_key, doc, self.settings.did_cache_ttl)
        return doc

    def _fetch_document(self, did: str, url: str) -> dict[str, Any]:
        """GET a loopback DID document directly (never through a proxy), parsed by ``_did``."""
        request = urllib.request.Request(url, headers={"Accept": "application/did+json, application/json"})
        try:
            with _NO_PROXY_OPENER.open(request, timeout=self.settings.http_timeout) as response:
                body = response.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            raise RingHubError(f"{url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RingHubError(f"{url} could not be fetched: {exc}") from exc
        if len(body) > MAX_BODY:
            raise RingHubError(f"{url} is larger than {MAX_BODY} bytes")
        doc = _did.parse_document(body)
        if doc["id"] != did:
            raise RingHubError(f"{url} holds the document of {doc['id']!r}")
        return doc

    def _key_resolver(self, seen: dict[str, Any]) -> Callable[[str], bytes]:
        """The key lookup for ``_httpsig.verify_request``: DID document -> ``#key-1`` (cached in HttpSignature)."""

        def key_for(key_id: str) -> bytes:
            did = key_id.split("#", 1)[0]
            doc = self.resolve_did(did)
            if not _did.document_services(doc, "Profile"):
                raise RingHubError(f"DID document of {did} has no Profile service", reason="profile")
            try:
                raw = _did.document_public_key(doc, key_id)
            except RingHubError as exc:
                raise RingHubError(exc.msg, reason="key") from exc
            seen.update(doc=doc, public_key=base64.b64encode(raw).decode("ascii"))
            self.db.store_key(key_id, seen["public_key"], did, utcnow() + timedelta(seconds=KEY_CACHE_SECONDS))
            return raw

        return key_for

    def authenticate(self, method: str, target: str, headers: dict[str, str], body: bytes) -> str:
        """Verify the request's HTTP signature; mark the actor verified; return its DID."""
        seen: dict[str, Any] = {}
        try:
            result = _httpsig.verify_request(method, target, headers, body, self._key_resolver(seen))
        except RingHubError as exc:
            reason = exc.details.get("reason")
            if reason == "profile":
                raise SignedRequestError(err(403, "Verification required", exc.msg)) from None
            raise SignedRequestError(err(401, "Authentication required", exc.msg)) from None
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            raise SignedRequestError(err(401, "Authentication required", f"Invalid signature header: {exc}")) from None
        did = result["actorDid"]
        doc = seen.get("doc") or {}
        name = doc.get("name") if isinstance(doc.get("name"), str) else None
        self.db.upsert_verified_actor(did, name, seen.get("public_key", ""), _did.origin(_did.did_web_to_url(did)))
        actor = self.db.actor(did)
        if not actor or not actor["verified"]:
            raise SignedRequestError(err(403, "Verification required", "This action requires a verified actor"))
        return did

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
        checks: dict[str, str] = {}
        try:
            self.db.ping()
            checks["database"] = "ok"
        except psycopg2.Error as exc:
            LOG.warning("readiness: database check failed: %s", _db_reason(exc))
            checks["database"] = "error"
        try:
            self.cache.ping()
            checks["redis"] = "ok"
        except (redis.RedisError, OSError) as exc:
            LOG.warning("readiness: redis check failed: %s", type(exc).__name__)
            checks["redis"] = "error"
        if all(v == "ok" for v in checks.values()):
            return 200, {"status": "ready", "checks": checks}
        return 503, {"status": "not ready", "checks": checks}

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
        membership = self.db.upsert_membership(ring["id"], actor_did, role["id"], status, message, metadata)
        badge = None
        if status == "ACTIVE":
            blocked = self.ephemeral and self.settings.production
            if blocked:
                LOG.error(
                    "Badge issuance is disabled: the hub is running with an ephemeral signing key "
                    "(RING_HUB_PRIVATE_KEY is unset or invalid). Configure a persistent key and restart."
                )
            else:
                try:
                    badge = self.build_badge(ring, actor_did, role["name"])
                    self.db.set_membership_badge(membership["id"], badge["id"])
                    self.db.insert_badge(badge["id"], membership["id"], badge)
                except (psycopg2.Error, RingHubError) as exc:
                    LOG.error("Failed to generate badge for %s in %s: %s", actor_did, ring_slug, type(exc).__name__)
                    badge = None
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

    def route(self, method: str, raw_target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        """Return ``(status, payload, content type)``; payload is JSON-able or bytes.

        A request whose database connection died under it (``ConnectionLost``: a reset's
        ``pg_terminate_backend``, a PostgreSQL restart) runs once more on a new connection,
        when it has written nothing yet; otherwise, or when it fails again, it answers 500.
        """
        path = raw_target.partition("?")[0]
        for attempt in (1, 2):
            self.db.begin_request()
            try:
                return self._route(method, raw_target, headers, body)
            except ConnectionLost as exc:
                writes = self.db.writes_in_request
                if attempt == 1 and writes == 0:
                    LOG.warning("%s %s: %s before anything was written; running it again", method, path, exc)
                    continue
                LOG.error(
                    "%s %s: %s%s", method, path, exc, f" after {writes} write(s); not run again" if writes else ""
                )
                return 500, {"error": "Internal error", "message": "Database connection lost"}, JSON_TYPE
        raise AssertionError("unreachable")

    def _route(self, method: str, raw_target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        path, _sep, query_string = raw_target.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        segs = path.split("/")[1:]
        json_type = JSON_TYPE
        try:
            if method in ("GET", "HEAD"):
                if path == "/health":
                    return 200, {"status": "ok"}, json_type
                if path == "/health/live":
                    return 200, {"status": "alive"}, json_type
                if path == "/health/ready":
                    return (*self.health_ready(), json_type)
                if path == "/.well-known/did.json" or (
                    len(segs) == 3 and segs[0] == "users" and segs[2] == "did.json" and _safe_segment(segs[1])
                ):
                    relative = f"users/{unquote(segs[1])}/did.json" if segs[0] == "users" else ".well-known/did.json"
                    status, data = self.static_file(relative)
                    if data is None:
                        return (*err(404, "Not found", "No such file"), json_type)
                    return status, data, "application/did+json"
                if path == "/trp/root":
                    return (*self.get_root(), json_type)
                if len(segs) == 3 and segs[:2] == ["trp", "rings"] and segs[2]:
                    return (*self.get_ring(unquote(segs[2])), json_type)
                if len(segs) == 3 and segs[:2] == ["trp", "badges"] and segs[2]:
                    return (*self.get_badge(unquote(segs[2])), json_type)
                if len(segs) == 4 and segs[:2] == ["trp", "actors"] and segs[3] == "badges" and segs[2]:
                    return (*self.actor_badges(unquote(segs[2]), query), json_type)
            if method == "POST":
                if path == "/trp/join":
                    return (*self.signed_json(method, raw_target, headers, body, self.join, "join"), json_type)
                if path == "/trp/leave":
                    return (*self.signed_json(method, raw_target, headers, body, self.leave, "leave"), json_type)
                if len(segs) == 4 and segs[:2] == ["trp", "badges"] and segs[3] == "verify" and segs[2]:
                    return (*self.verify_badge(unquote(segs[2])), json_type)
        except ConnectionLost:
            raise
        except psycopg2.Error as exc:
            LOG.error("%s %s: database error %s", method, path, type(exc).__name__)
            return (*err(500, "Internal error", "Database error"), json_type)
        return (
            404,
            {"message": f"Route {method}:{path} not found", "error": "Not Found", "statusCode": 404},
            json_type,
        )

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
        try:
            status, payload, ctype = hub.route(method, self.path, headers, body)
        except Exception:  # the server must answer, whatever went wrong
            LOG.exception("unhandled error on %s %s", method, self.path.partition("?")[0])
            status, payload, ctype = 500, {"error": "Internal error", "message": "Unexpected error"}, "application/json"
        self._send(status, payload, ctype, head=method == "HEAD")

    def _send(self, status: int, payload: Any, ctype: str, head: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
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
        "sandbox hub (test tool) on %s: NODE_ENV=%s, RING_HUB_URL=%s, issuer %s, %s key %s, database %s",
        settings.local_url,
        settings.node_env,
        settings.ring_hub_url,
        hub.issuer_did,
        "EPHEMERAL" if hub.ephemeral else "persistent",
        hub.public_multibase,
        database_spec(settings.database_url).masked_url,
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
