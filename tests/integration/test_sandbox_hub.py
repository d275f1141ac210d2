"""The sandbox hub (test and demo tool) speaks hub-api's protocol over real PostgreSQL and Redis.

Badge signatures are checked with PyJWT, an implementation independent of the
collection's own JWS code, against the key in the DID document the sandbox serves.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sandbox_hub import ctl as sandbox_ctl
from sandbox_hub.instance import SandboxHub, badge_path, http

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _httpsig
from harness.datagen import seed_hub_data
from harness.pg import REPO, reference_migrations_dir

CTL = REPO / "tests" / "sandbox_hub" / "ctl.py"


def published_key(hub: SandboxHub) -> Ed25519PublicKey:
    """The issuer's ``#key-1`` from the DID document served at ``/.well-known/did.json``."""
    doc = hub.instance_document()
    assert doc["id"] == hub.issuer_did == "did:web:127.0.0.1"
    return Ed25519PublicKey.from_public_bytes(_did.document_public_key(doc, f"{hub.issuer_did}#key-1"))


def independent_verify(badge: dict[str, Any], key: Ed25519PublicKey) -> dict[str, Any]:
    """PyJWT checks the EdDSA compact JWS; returns the payload (raises on a bad signature)."""
    token = badge["proof"]["jws"]
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT"}
    return jwt.decode(token, key=key, algorithms=["EdDSA"], options={"require": ["iss", "sub", "iat"]})


def rows(hub: SandboxHub, sql: str, params: Any = None) -> list[tuple]:
    return hub.db.query(sql, params)


def membership_count(hub: SandboxHub, did: str) -> int:
    return rows(hub, 'SELECT count(*) FROM "Membership" WHERE "actorDid" = %s', (did,))[0][0]


# -- health and rings ------------------------------------------------------------------------


def without_timestamp(body: dict[str, Any]) -> dict[str, Any]:
    assert body["timestamp"].endswith("Z"), body  # every health answer carries one (checked in the fidelity tests)
    return {k: v for k, v in body.items() if k != "timestamp"}


def test_health_and_readiness_follow_redis_and_postgres(sandbox_hub: SandboxHub, pg_server: Any) -> None:
    assert without_timestamp(sandbox_hub.get("/health").json) == {"status": "ok"}
    ready = sandbox_hub.get("/health/ready")
    assert (ready.status, without_timestamp(ready.json)) == (
        200,
        {"status": "ready", "checks": {"database": "ok", "redis": "ok"}},
    )

    sandbox_hub.redis.stop()
    ready = sandbox_hub.get("/health/ready")
    assert ready.status == 503
    assert ready.json["status"] == "not_ready"
    assert ready.json["checks"] == {"database": "ok", "redis": "unhealthy"}
    assert without_timestamp(sandbox_hub.get("/health").json) == {"status": "ok"}  # liveness is not readiness

    pg_server.drop_database(sandbox_hub.db.name)  # the hub's database is gone: PostgreSQL check fails
    ready = sandbox_hub.get("/health/ready")
    assert ready.status == 503
    assert ready.json["checks"] == {"database": "unhealthy", "redis": "unhealthy"}


def test_root_and_ring_descriptors(sandbox_hub: SandboxHub) -> None:
    root = sandbox_hub.get("/trp/root")
    assert root.status == 200
    ring = root.json
    assert ring["slug"] == "spool" and ring["name"] == "The Spool"
    assert (ring["visibility"], ring["joinPolicy"], ring["postPolicy"]) == ("PUBLIC", "OPEN", "OPEN")
    assert ring["ownerDid"] == sandbox_hub.issuer_did and ring["parentId"] is None
    assert ring["metadata"]["isRoot"] is True and ring["memberCount"] == 0
    assert ring["createdAt"].endswith("Z")
    assert sandbox_hub.get("/trp/rings/spool").json == ring
    assert sandbox_hub.get("/trp/actors/did%3Aweb%3Ax/badges?status=bogus").status == 400
    child_id = sandbox_hub.add_ring("child-ring", parent_id=ring["id"])
    sandbox_hub.add_ring("hidden", visibility="PRIVATE")
    child = sandbox_hub.get("/trp/rings/child-ring").json
    assert child["parentId"] == ring["id"] and child["lineage"] == [
        {"id": ring["id"], "slug": "spool", "name": "The Spool"}
    ]
    children = sandbox_hub.get("/trp/root").json["children"]
    assert children == [{"id": child_id, "slug": "child-ring", "name": "Child-Ring", "memberCount": 0}]
    assert sandbox_hub.get("/trp/rings/hidden").status == 404  # private rings are not shown anonymously
    missing = sandbox_hub.get("/trp/rings/no-such-ring")
    assert (missing.status, missing.json["message"]) == (404, "Ring not found")
    assert sandbox_hub.get("/trp/nothing-here").status == 404


def test_static_did_documents_and_no_traversal(sandbox_hub: SandboxHub) -> None:
    actor = sandbox_hub.new_actor()
    served = sandbox_hub.get(f"/users/{actor.user_id}/did.json")
    assert served.status == 200 and json.loads(served.body) == actor.document
    (sandbox_hub.directory / "secret.txt").write_text("not for the web")
    for path in ("/users/..%2F..%2Fsecret.txt/did.json", "/users/../did.json", "/users/%2e%2e/did.json", "/secret.txt"):
        assert sandbox_hub.get(path).status == 404, path


# -- joining and badges ----------------------------------------------------------------------


def test_signed_join_issues_a_badge_that_verifies_independently(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    actor = hub.new_actor()
    answer = hub.join(actor)
    assert answer.status == 201, answer.json
    body = answer.json
    assert body["membership"]["status"] == "ACTIVE" and body["membership"]["role"] == "member"
    badge_id = body["badge"]["id"]
    assert badge_id.startswith(f"{hub.url}/badges/") and len(badge_id.rsplit("/", 1)[1]) == 21
    # The hub's join answer repeats the prefix in badge.url; the id is the one to use.
    assert body["badge"]["url"] == f"{hub.url}/badges/{badge_id}"

    got = hub.badge(badge_id)
    assert got.status == 200
    badge, metadata = got.json["badge"], got.json["metadata"]
    assert metadata["isRevoked"] is False and metadata["ring"]["slug"] == "spool" and metadata["role"] == "member"
    assert badge["id"] == badge_id
    assert badge["type"] == ["VerifiableCredential", "OpenBadgeCredential", "ThreadRingMembershipBadge"]
    assert badge["issuer"]["id"] == "did:web:127.0.0.1"
    assert badge["credentialSubject"]["id"] == actor.did
    assert badge["threadRing"]["ringSlug"] == "spool" and badge["threadRing"]["memberRole"] == "member"
    assert badge["threadRing"]["ringHubUrl"] == hub.url and badge["threadRing"]["badgeVersion"] == "1.0.0"
    proof = badge["proof"]
    assert proof["type"] == "Ed25519Signature2020" and proof["proofPurpose"] == "assertionMethod"
    assert proof["verificationMethod"] == "did:web:127.0.0.1#key-1"

    payload = independent_verify(badge, published_key(hub))
    assert payload["iss"] == "did:web:127.0.0.1" and payload["sub"] == actor.did
    assert "exp" not in payload
    assert payload["vc"] == {k: v for k, v in badge.items() if k != "proof"}

    verdict = hub.verify(badge_id)
    assert verdict.status == 200
    assert verdict.json["isValid"] is True and verdict.json["issuer"] == "did:web:127.0.0.1"

    # Only the whole URL, percent-encoded as one segment, finds the badge.
    assert hub.get("/trp/badges/" + badge_id.rsplit("/", 1)[1]).status == 404
    assert hub.get("/trp/badges/" + badge_id).status == 404

    listed = hub.actor_badges(actor.did)
    assert listed.status == 200 and listed.json["total"] == 1
    assert listed.json["badges"][0]["badge"]["id"] == badge_id

    # The hub's tables hold what it did.
    assert rows(hub, 'SELECT "status", "badgeId" FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == [
        ("ACTIVE", badge_id)
    ]
    assert rows(hub, 'SELECT count(*) FROM "Badge" WHERE "id" = %s', (badge_id,)) == [(1,)]
    assert rows(hub, 'SELECT "verified", "type"::text FROM "Actor" WHERE "did" = %s', (actor.did,)) == [(True, "USER")]
    assert rows(hub, 'SELECT "keyId" FROM "HttpSignature" WHERE "actorDid" = %s', (actor.did,)) == [(actor.key_id,)]
    assert rows(hub, 'SELECT "action" FROM "AuditLog" WHERE "actorDid" = %s', (actor.did,)) == [("membership.joined",)]
    assert hub.redis.client().exists(f"did:{actor.did}") == 1  # the DID document is cached in Redis

    again = hub.join(actor)
    assert (again.status, again.json["error"]) == (409, "Already member")


def test_date_within_the_skew_window_is_accepted(sandbox_hub: SandboxHub) -> None:
    actor = sandbox_hub.new_actor()
    answer = sandbox_hub.join(actor, date=_httpsig.http_date(time.time() - 240))
    assert answer.status == 201, answer.json


# case -> (signing options, actor options, expected status, the hub's message)
REJECTIONS: dict[str, tuple[Callable[[], dict[str, Any]], dict[str, Any], int, str]] = {
    "bad signature": (lambda: {"signing_key": Ed25519PrivateKey.generate()}, {}, 401, "Invalid signature"),
    "wrong digest": (
        lambda: {"signed_body": b'{"ringSlug": "elsewhere"}'},
        {},
        401,
        "Digest does not match request body",
    ),
    "date 10 minutes off": (
        lambda: {"date": _httpsig.http_date(time.time() - 600)},
        {},
        401,
        "Date header outside allowed clock-skew window",
    ),
    "date 10 minutes ahead": (
        lambda: {"date": _httpsig.http_date(time.time() + 600)},
        {},
        401,
        "Date header outside allowed clock-skew window",
    ),
    # A loopback DID nobody serves: the hub's placeholder document, whose key is nobody's.
    "unresolvable DID": (dict, {"publish": False}, 401, "Invalid signature"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_join_rejections_change_nothing(sandbox_hub: SandboxHub, case: str) -> None:
    sign_kwargs, actor_kwargs, status, message = REJECTIONS[case]
    actor = sandbox_hub.new_actor(**actor_kwargs)
    answer = sandbox_hub.join(actor, **sign_kwargs())
    assert answer.status == status, answer.json
    assert answer.json == {"error": "Authentication required", "message": message}
    assert membership_count(sandbox_hub, actor.did) == 0
    assert rows(sandbox_hub, 'SELECT count(*) FROM "Badge"') == [(0,)]
    assert rows(sandbox_hub, 'SELECT count(*) FROM "Actor" WHERE "did" = %s', (actor.did,)) == [(0,)]


def test_unsigned_join_and_foreign_hosts_are_refused(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    unsigned = hub.post("/trp/join", {"ringSlug": "spool"})
    assert (unsigned.status, unsigned.json["message"]) == (401, "Missing signature header")
    # A DID on another host is never fetched: the sandbox resolves loopback hosts only.
    actor = hub.new_actor()
    foreign = "did:web:ringhub.example.org:users:someone"
    url = hub.url + "/trp/join"
    body = json.dumps({"ringSlug": "spool"}).encode()
    headers = _httpsig.sign_request(
        "POST", url, body, actor.key, foreign + "#key-1", headers={"Content-Type": "application/json"}
    )
    answer = http("POST", url, body, headers)
    assert (answer.status, answer.json["message"]) == (401, f"Unknown key: {foreign}#key-1")
    assert "resolves loopback did:web DIDs only" in hub.log_text()
    assert membership_count(hub, foreign) == 0


def test_ring_without_roles_answers_500_and_closed_ring_403(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    hub.add_ring("roleless", roles=False)
    hub.add_ring("closed-ring", join_policy="CLOSED")
    actor = hub.new_actor()
    roleless = hub.join(actor, "roleless")
    assert (roleless.status, roleless.json["message"]) == (500, "Ring has no roles configured")
    closed = hub.join(actor, "closed-ring")
    assert (closed.status, closed.json["error"]) == (403, "Ring closed")
    missing = hub.join(actor, "no-such-ring")
    assert missing.status == 404
    assert membership_count(hub, actor.did) == 0


def test_application_ring_gives_pending_membership_without_badge(sandbox_hub: SandboxHub) -> None:
    sandbox_hub.add_ring("by-application", join_policy="APPLICATION")
    actor = sandbox_hub.new_actor()
    answer = sandbox_hub.join(actor, "by-application")
    assert answer.status == 201
    assert answer.json["membership"]["status"] == "PENDING" and answer.json["membership"]["requiresApproval"] is True
    assert "joinedAt" not in answer.json["membership"] and answer.json["badge"] is None


def test_leave_revokes_the_badge(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    actor = hub.new_actor()
    badge_id = hub.join(actor).json["badge"]["id"]
    left = hub.leave(actor, reason="moving on")
    assert left.status == 200 and left.json["message"] == "Successfully left ring"
    meta = hub.badge(badge_id).json["metadata"]
    assert meta["isRevoked"] is True and meta["revocationReason"] == "moving on"
    verdict = hub.verify(badge_id).json
    assert (verdict["isValid"], verdict["error"]) == (False, "Badge has been revoked")
    assert hub.actor_badges(actor.did).json["total"] == 0
    assert hub.actor_badges(actor.did, "revoked").json["total"] == 1
    assert rows(hub, 'SELECT "status" FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == [("REVOKED",)]
    assert hub.leave(actor).status == 404


# -- restarts and the signing key -----------------------------------------------------------


def test_restart_with_the_same_key_keeps_badges_valid(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    actor = hub.new_actor()
    badge_id = hub.join(actor).json["badge"]["id"]
    old_pid = hub.pid
    hub.restart()
    assert hub.pid != old_pid
    listed = hub.actor_badges(actor.did).json["badges"]
    assert len(listed) == 1
    # The hub's start-up re-sign hits the Badge.membershipId unique constraint: ids stay.
    assert listed[0]["badge"]["id"] == badge_id
    assert '"errors": 1' in hub.log_text()
    independent_verify(listed[0]["badge"], published_key(hub))
    assert hub.verify(badge_id).json["isValid"] is True


def test_restart_without_key_breaks_badges_and_production_issues_none(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    actor = hub.new_actor()
    badge_id = hub.join(actor).json["badge"]["id"]
    hub.configure(private_key=None)  # the key was never persisted
    hub.restart()
    assert "EPHEMERAL" in hub.log_text()
    verdict = hub.verify(badge_id).json
    assert verdict["isValid"] is False and verdict["error"] == "Invalid signature"
    # The published document still holds the old key: the stored badge verifies against it...
    independent_verify(hub.actor_badges(actor.did).json["badges"][0]["badge"], published_key(hub))
    # ...but with NODE_ENV=production an ephemeral key issues no badge at all.
    newcomer = hub.new_actor()
    answer = hub.join(newcomer)
    assert answer.status == 201 and answer.json["membership"]["status"] == "ACTIVE"
    assert answer.json["badge"] is None
    assert rows(hub, 'SELECT "badgeId" FROM "Membership" WHERE "actorDid" = %s', (newcomer.did,)) == [(None,)]


def test_unparsable_key_in_development_signs_with_an_ephemeral_key(sandbox_hub_factory: Any) -> None:
    hub = sandbox_hub_factory(node_env="development", start=False)
    raw_pem = hub.env_values()["RING_HUB_PRIVATE_KEY"]
    # Raw PEM text instead of base64 of it: the hub cannot parse it and falls back.
    hub.configure(extra_env={"RING_HUB_PRIVATE_KEY": base64.b64decode(raw_pem).decode()})
    hub.start()
    assert "FAILED TO LOAD" in hub.log_text()
    actor = hub.new_actor()
    badge = hub.join(actor).json["badge"]
    assert badge is not None
    assert hub.verify(badge["id"]).json["isValid"] is True
    with pytest.raises(jwt.InvalidSignatureError):  # not the published key
        independent_verify(hub.badge(badge["id"]).json["badge"], published_key(hub))
    hub.restart()
    assert hub.verify(badge["id"]).json["isValid"] is False


@pytest.mark.reference
def test_real_migrations_and_prisma_schema_parameter(sandbox_hub_factory: Any) -> None:
    migrations = reference_migrations_dir()
    if migrations is None:
        pytest.skip("../shared/ringhub-reference/prisma/migrations not present")
    hub = sandbox_hub_factory(migrations=migrations, schema="ringhub")
    actor = hub.new_actor()
    answer = hub.join(actor)
    assert answer.status == 201, answer.json
    badge_id = answer.json["badge"]["id"]
    independent_verify(hub.badge(badge_id).json["badge"], published_key(hub))
    assert hub.db.query('SELECT count(*) FROM ringhub."Badge"') == [(1,)]
    assert hub.db.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# -- the control script ------------------------------------------------------------------------


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CTL), *args], capture_output=True, text=True, timeout=60, check=False)


def test_ctl_script_start_status_stop_and_host_refusal(sandbox_hub_factory: Any) -> None:
    hub = sandbox_hub_factory(start=False)
    files = ["--env-file", str(hub.env_file), "--pid-file", str(hub.pid_file), "--log-file", str(hub.log_file)]
    started = ctl("start", *files, "--web-root", str(hub.web_root), "--no-inherit")
    assert started.returncode == 0, started.stderr
    pid = int(hub.pid_file.read_text())
    assert hub.get("/health").json["status"] == "ok"
    assert ctl("status", *files, "--no-inherit").returncode == 0
    again = ctl("start", *files, "--no-inherit")
    assert again.returncode == 1 and "already running" in again.stderr
    assert int(hub.pid_file.read_text()) == pid
    stopped = ctl("stop", "--pid-file", str(hub.pid_file))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not hub.pid_file.exists()
    assert ctl("status", *files, "--no-inherit").returncode == 3

    # A pid file naming some other process is never signalled: only a sandbox hub is stopped.
    hub.pid_file.write_text(f"{os.getpid()}\n")
    foreign = ctl("stop", "--pid-file", str(hub.pid_file))
    assert foreign.returncode == 0 and "was not running" in foreign.stdout
    assert not hub.pid_file.exists()

    hub.configure(extra_env={"HOST": "0.0.0.0"})
    refused = ctl("start", *files, "--no-inherit")
    assert refused.returncode == 1 and "127.0.0.1 only" in refused.stderr
    assert not hub.pid_file.exists()
    assert sandbox_ctl.health(hub.url) is None


def test_badge_path_encodes_the_whole_url() -> None:
    assert (
        badge_path("http://127.0.0.1:3000/badges/abc_-") == "/trp/badges/http%3A%2F%2F127.0.0.1%3A3000%2Fbadges%2Fabc_-"
    )


def test_existing_hub_data_is_served_and_restart_keeps_every_badge_id(sandbox_hub_factory: Any) -> None:
    hub = sandbox_hub_factory(seed_root=False, start=False)
    inserted = seed_hub_data(hub.db, rings=4, members_per_ring=3, hub_url=hub.url)
    hub.start()
    root = hub.get("/trp/root").json
    assert root["metadata"]["isRoot"] is True and root["memberCount"] == 3 and len(root["children"]) == 3
    before = sorted(r[0] for r in hub.db.query('SELECT "id" FROM "Badge"'))
    assert len(before) == inserted["Badge"] == 12
    hub.restart()
    assert '"processed": 12, "updated": 0, "errors": 12' in hub.log_text()
    assert sorted(r[0] for r in hub.db.query('SELECT "id" FROM "Badge"')) == before
