"""Drive a sandbox hub from tests and demos (test and demo tool only).

``SandboxHub`` writes the hub's ``.env`` and web root, starts/stops/restarts the
server through ``sandbox_hub.ctl``, seeds rings with SQL, and talks to it.
``SandboxActor`` is a member-to-be: an Ed25519 key and a did:web user document
under the web root (served by the sandbox itself at ``/users/<hash>/did.json``),
able to sign requests the way a ThreadRing client does.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile, _httpsig
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    DEFAULT_ROLES,
    ROOT_RING_DESCRIPTION,
    ROOT_RING_NAME,
)
from sandbox_hub import ctl

# The root ring exactly as the collection's ring_seed writes it.
ROLE_PERMISSIONS = DEFAULT_ROLES


# -- small HTTP client (loopback only, never through a proxy) ---------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HttpAnswer:
    """One HTTP request; any status comes back as an ``HttpAnswer`` (no exception for 4xx/5xx)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=30) as resp:
            return HttpAnswer(resp.status, resp.read(), dict(resp.headers.items()))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read(), dict(exc.headers.items()))


def badge_path(badge_id: str) -> str:
    """``/trp/badges/<id>`` with the full-URL id percent-encoded as one path segment."""
    return "/trp/badges/" + quote(badge_id, safe="")


def key_env_value(key: Ed25519PrivateKey) -> str:
    """``RING_HUB_PRIVATE_KEY`` for a key: base64 of its PKCS#8 PEM text."""
    return _envfile.encode_key_value(key)


def env_line(name: str, value: str) -> str:
    """A compose-style ``.env`` line; values with spaces, quotes or ``$`` are single-quoted."""
    if value and all(c.isalnum() or c in "-_.:/@%?&=+,~" for c in value):
        return f"{name}={value}"
    if "'" in value:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        return f'{name}="{escaped}"'
    return f"{name}='{value}'"


# -- actors ----------------------------------------------------------------------------------


def default_profile_url(base_url: str, user_id: str) -> str:
    """A ``Profile`` endpoint the hub accepts for a user served under ``base_url``: the
    collection's default (``<origin>/users/<id>``), with a loopback IP host written
    ``localhost`` (the hub ignores a ``http://`` endpoint unless it starts with ``http://localhost``)."""
    parts = urlsplit(base_url)
    origin = _did.origin(base_url)
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1"):
        origin = "http://localhost" + (f":{parts.port}" if parts.port else "")
    return f"{origin}/users/{quote(user_id, safe='')}"


@dataclass
class SandboxActor:
    """A did:web user whose document the sandbox serves from its web root."""

    did: str
    user_id: str
    key: Ed25519PrivateKey
    document: dict[str, Any]
    doc_path: Path

    @property
    def key_id(self) -> str:
        return _did.key_id(self.did)

    @classmethod
    def create(
        cls,
        web_root: str | Path,
        base_url: str,
        *,
        user_id: str | None = None,
        profile: bool = True,
        profile_url: str | None = None,
        name: str | None = None,
        publish: bool = True,
        key: Ed25519PrivateKey | None = None,
    ) -> SandboxActor:
        """A new key and DID document; ``profile=False`` leaves out the ``Profile`` service,
        ``publish=False`` writes no document (the DID then does not resolve).

        The hub takes a ``Profile`` endpoint only when it is ``https://...`` or starts with
        ``http://localhost``, so for a loopback ``base_url`` the default endpoint is
        ``http://localhost:<port>/users/<user_id>`` (``profile_url`` sets another one).
        ``name`` is the document's ``name`` (the member's display name).
        """
        user_id = user_id or secrets.token_hex(8)
        key = key or Ed25519PrivateKey.generate()
        raw = _ed25519.raw_public_key(key)
        doc = _did.build_user_document(base_url, user_id, raw, profile_url or default_profile_url(base_url, user_id))
        if name is not None:
            doc["name"] = name
        if not profile:
            doc.pop("service", None)
        path = Path(web_root) / "users" / user_id / "did.json"
        if publish:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_did.render_document(doc))
        return cls(did=doc["id"], user_id=user_id, key=key, document=doc, doc_path=path)

    def signed_headers(
        self,
        method: str,
        url: str,
        body: bytes,
        *,
        date: str | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        signed_body: bytes | None = None,
        names: Sequence[str] | None = None,
        omit: Sequence[str] = (),
        headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """``Host``, ``Date``, ``Digest``, ``Signature`` (+ ``Content-Type``) for a request,
        made by the collection's own signer (``_httpsig.sign_request``).

        ``signing_key`` signs with another key (a forged signature); ``signed_body``
        computes Digest and signature over other bytes than the ones sent; ``names`` are
        the headers the signature covers (default ``(request-target) host date digest``);
        ``omit`` drops headers after signing (e.g. ``("Date", "Digest")`` with ``names``
        that do not cover them: a request without them); ``headers`` are sent too.
        """
        signed = _httpsig.sign_request(
            method,
            url,
            body if signed_body is None else signed_body,
            signing_key or self.key,
            self.key_id,
            date=date,
            headers={"Content-Type": "application/json", **(headers or {})},
            names=tuple(names) if names is not None else _httpsig.DEFAULT_HEADERS,
        )
        dropped = {name.lower() for name in omit}
        return {k: v for k, v in signed.items() if k.lower() not in dropped}

    def post(self, url: str, payload: dict[str, Any], **kwargs: Any) -> HttpAnswer:
        """A signed JSON POST (see ``signed_headers`` for the tampering options)."""
        body = json.dumps(payload).encode()
        return http("POST", url, body, self.signed_headers("POST", url, body, **kwargs))


# -- the sandbox -------------------------------------------------------------------------------


@dataclass
class SandboxHub:
    """One sandbox hub: its files, its configuration, its database and Redis."""

    directory: Path
    port: int
    database_url: str
    redis_url: str
    db: Any = None  # harness.pg.PgDatabase, for SQL in tests
    redis: Any = None  # harness.redis_servers.RedisServer
    node_env: str = "production"
    private_key: Ed25519PrivateKey | None = field(default_factory=Ed25519PrivateKey.generate)
    extra_env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    die_with_parent: bool = False

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.web_root.mkdir(parents=True, exist_ok=True)
        self.write_env()
        if self.private_key is not None:
            self.publish_instance_document(self.private_key)

    # -- files -----------------------------------------------------------------------------
    @property
    def web_root(self) -> Path:
        return self.directory / "web"

    @property
    def env_file(self) -> Path:
        return self.directory / ".env"

    @property
    def pid_file(self) -> Path:
        return self.directory / "hub.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "hub.log"

    @property
    def url(self) -> str:
        """Where the sandbox listens, and its ``RING_HUB_URL``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer_did(self) -> str:
        return _did.instance_did(self.url)

    def env_values(self) -> dict[str, str]:
        values = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "RING_HUB_URL": self.url,
            "NODE_ENV": self.node_env,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "INSTANCE_DID": self.issuer_did,
        }
        if self.private_key is not None:
            values["RING_HUB_PRIVATE_KEY"] = key_env_value(self.private_key)
        values.update(self.extra_env)
        return values

    def write_env(self) -> Path:
        lines = ["# sandbox hub (test and demo tool) - hub-api variables"]
        lines += [env_line(k, v) for k, v in self.env_values().items()]
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env_file.chmod(0o600)
        return self.env_file

    def configure(self, **changes: Any) -> None:
        """Change ``node_env``, ``private_key`` (None = unset) or ``extra_env`` and rewrite ``.env``."""
        for name, value in changes.items():
            if not hasattr(self, name):
                raise AttributeError(name)
            setattr(self, name, value)
        self.write_env()

    def publish_instance_document(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        """``/.well-known/did.json`` of the issuer DID with ``key`` as ``#key-1``."""
        doc = _did.build_document(self.issuer_did, _ed25519.raw_public_key(key))
        path = self.web_root / ".well-known" / "did.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_did.render_document(doc))
        return doc

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> int:
        self.pid = ctl.start(
            self.env_file,
            self.web_root,
            self.pid_file,
            self.log_file,
            timeout=timeout,
            inherit=False,
            die_with_parent=self.die_with_parent,
        )
        return self.pid

    def stop(self) -> bool:
        stopped = ctl.stop(self.pid_file)
        self.pid = None
        return stopped

    def restart(self, timeout: float = 30.0) -> int:
        self.pid = ctl.restart(
            self.env_file,
            self.web_root,
            self.pid_file,
            self.log_file,
            timeout=timeout,
            inherit=False,
            die_with_parent=self.die_with_parent,
        )
        return self.pid

    # -- HTTP ------------------------------------------------------------------------------
    def get(self, path: str) -> HttpAnswer:
        return http("GET", self.url + path)

    def post(self, path: str, payload: Any = None) -> HttpAnswer:
        body = None if payload is None else json.dumps(payload).encode()
        return http("POST", self.url + path, body, {"Content-Type": "application/json"} if body else {})

    def new_actor(self, **kwargs: Any) -> SandboxActor:
        return SandboxActor.create(self.web_root, self.url, **kwargs)

    def join(self, actor: SandboxActor, ring_slug: str = "spool", **kwargs: Any) -> HttpAnswer:
        return actor.post(self.url + "/trp/join", {"ringSlug": ring_slug}, **kwargs)

    def leave(
        self, actor: SandboxActor, ring_slug: str = "spool", reason: str | None = None, **kwargs: Any
    ) -> HttpAnswer:
        payload: dict[str, Any] = {"ringSlug": ring_slug}
        if reason:
            payload["reason"] = reason
        return actor.post(self.url + "/trp/leave", payload, **kwargs)

    def badge(self, badge_id: str) -> HttpAnswer:
        return self.get(badge_path(badge_id))

    def verify(self, badge_id: str) -> HttpAnswer:
        return self.post(badge_path(badge_id) + "/verify")

    def actor_badges(self, did: str, status: str | None = None) -> HttpAnswer:
        query = f"?status={status}" if status else ""
        return self.get(f"/trp/actors/{quote(did, safe='')}/badges{query}")

    def instance_document(self) -> dict[str, Any]:
        """The issuer's DID document as the sandbox serves it."""
        answer = self.get("/.well-known/did.json")
        if answer.status != 200:
            raise RuntimeError(f"/.well-known/did.json answered {answer.status}")
        return _did.parse_document(answer.body)

    # -- SQL seeding -----------------------------------------------------------------------
    def seed_root_ring(self, slug: str = "spool") -> str:
        """The root ring and its owner/moderator/member roles, as the reset creates them."""
        metadata = {"isRoot": True, "createdBy": "system", "resetAt": _now_iso()}
        ring_id = self.add_ring(
            slug, name=ROOT_RING_NAME, description=ROOT_RING_DESCRIPTION, metadata=metadata, roles=True
        )
        return ring_id

    def add_ring(
        self,
        slug: str,
        *,
        name: str | None = None,
        description: str | None = None,
        join_policy: str = "OPEN",
        visibility: str = "PUBLIC",
        roles: bool = True,
        parent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        if self.db is None:
            raise RuntimeError("no database handle: pass db= to SandboxHub to seed with SQL")
        ring_id = str(uuid.uuid4())
        self.db.execute(
            'INSERT INTO "Ring" ("id", "slug", "name", "description", "updatedAt", "visibility", "joinPolicy", '
            '"postPolicy", "ownerDid", "parentId", "metadata") VALUES (%s, %s, %s, %s, %s, %s::"RingVisibility", '
            '%s::"JoinPolicy", \'OPEN\'::"PostPolicy", %s, %s, %s::jsonb)',
            (
                ring_id,
                slug,
                name or slug.title(),
                description,
                _now(),
                visibility,
                join_policy,
                self.issuer_did,
                parent_id,
                json.dumps(metadata) if metadata is not None else None,
            ),
        )
        if roles:
            for role, permissions in ROLE_PERMISSIONS.items():
                self.db.execute(
                    'INSERT INTO "RingRole" ("id", "ringId", "name", "permissions") VALUES (%s, %s, %s, %s::jsonb)',
                    (str(uuid.uuid4()), ring_id, role, json.dumps(permissions)),
                )
        return ring_id


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _now_iso() -> str:
    now = _now()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
