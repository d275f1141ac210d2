"""The sandbox hub does what the running hub-api was measured to do (RINGHUB_FACTS, last section).

Each behaviour seen on the real hub has its test here, against a running sandbox on
real PostgreSQL and Redis, on the project's fixture schema and (where the schema
matters) on the hub's own migrations: health bodies, ring descriptors, DID documents
without a ``Profile`` service, optional ``Digest``/``Date``, the rate limit, the
membership's profile fields, unserved loopback DIDs, re-joins after a leave.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sandbox_hub.instance import HttpAnswer, SandboxActor, SandboxHub, http
from sandbox_hub.server import PROFILE_SERVICE_MISSING, RateLimiter, ms_long

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _httpsig
from harness.pg import PgServer

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
PLACEHOLDER_KEY = base64.b64encode(b"\x01" * 32).decode()


def header(answer: HttpAnswer, name: str) -> str | None:
    return next((v for k, v in answer.headers.items() if k.lower() == name), None)


def rate_headers(answer: HttpAnswer) -> dict[str, str]:
    return {k.lower(): v for k, v in answer.headers.items() if k.lower() in (*RATE_HEADERS, "retry-after")}


def as_client(address: str) -> dict[str, str]:
    """A request from ``address`` as the reverse proxy forwards it (the hub runs with trustProxy)."""
    return {"X-Forwarded-For": address}


def assert_recent_iso(stamp: str) -> None:
    assert ISO_MS.match(stamp), stamp
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 30, stamp


def one(hub: SandboxHub, sql: str, params: Any = None) -> tuple:
    rows = hub.db.query(sql, params)
    assert len(rows) == 1, rows
    return rows[0]


def count(hub: SandboxHub, sql: str, params: Any = None) -> int:
    return int(hub.db.query(sql, params)[0][0])


# -- health ----------------------------------------------------------------------------------


def test_health_bodies_carry_an_iso_timestamp(sandbox_hub: SandboxHub) -> None:
    """``new Date().toISOString()``: UTC, milliseconds, ``Z``; the last field of each body."""
    for path, status in (("/health", "ok"), ("/health/live", "live"), ("/health/ready", "ready")):
        answer = sandbox_hub.get(path)
        assert answer.status == 200, (path, answer.json)
        body = answer.json
        assert body["status"] == status, path
        assert list(body)[-1] == "timestamp", body
        assert_recent_iso(body["timestamp"])
    ready = sandbox_hub.get("/health/ready").json
    assert list(ready) == ["status", "checks", "timestamp"]
    assert ready["checks"] == {"database": "ok", "redis": "ok"}


def test_not_ready_is_503_not_ready_with_the_failing_check_unhealthy(
    sandbox_hub: SandboxHub, pg_server: PgServer
) -> None:
    hub = sandbox_hub
    hub.redis.stop()
    answer = hub.get("/health/ready")
    assert answer.status == 503
    assert {k: v for k, v in answer.json.items() if k != "timestamp"} == {
        "status": "not_ready",
        "checks": {"database": "ok", "redis": "unhealthy"},
    }
    assert_recent_iso(answer.json["timestamp"])
    assert hub.get("/health").status == 200  # liveness does not look at Redis
    hub.redis.start()
    assert hub.get("/health/ready").json["status"] == "ready"

    pg_server.execute(f'ALTER DATABASE "{hub.db.name}" ALLOW_CONNECTIONS false')
    try:
        pg_server.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'ringhub-sandbox'",
            (hub.db.name,),
        )
        answer = hub.get("/health/ready")
        assert (answer.status, answer.json["status"], answer.json["checks"]) == (
            503,
            "not_ready",
            {"database": "unhealthy", "redis": "ok"},
        )
    finally:
        pg_server.execute(f'ALTER DATABASE "{hub.db.name}" ALLOW_CONNECTIONS true')
    assert hub.get("/health/ready").status == 200


# -- ring descriptors ------------------------------------------------------------------------


def test_ring_descriptors_carry_banner_url_and_theme_color(
    sandbox_hub_factory: Callable[..., SandboxHub], any_migrations: Path
) -> None:
    hub = sandbox_hub_factory(migrations=any_migrations)
    for path in ("/trp/root", "/trp/rings/spool"):
        ring = hub.get(path).json
        assert (ring["bannerUrl"], ring["themeColor"]) == (None, "thread-pine"), path
        keys = list(ring)
        assert keys[keys.index("curatorNote") + 1 : keys.index("curatorNote") + 3] == ["bannerUrl", "themeColor"]

    hub.db.execute(
        'UPDATE "Ring" SET "bannerUrl" = %s, "themeColor" = %s WHERE "slug" = %s',
        ("https://hub.example.org/banners/spool.png", "ocean-ink", "spool"),
    )
    ring = hub.get("/trp/rings/spool").json
    assert (ring["bannerUrl"], ring["themeColor"]) == ("https://hub.example.org/banners/spool.png", "ocean-ink")
    hub.db.execute('UPDATE "Ring" SET "themeColor" = NULL WHERE "slug" = %s', ("spool",))
    assert hub.get("/trp/root").json["themeColor"] is None  # a NULL column is answered as it is

    # A schema without the visual-identity columns: the fields are still there, with the defaults.
    hub.db.execute('ALTER TABLE "Ring" DROP COLUMN "bannerUrl", DROP COLUMN "themeColor"')
    for path in ("/trp/root", "/trp/rings/spool"):
        ring = hub.get(path).json
        assert (ring["bannerUrl"], ring["themeColor"]) == (None, "thread-pine"), path


# -- DID documents and the Profile service ---------------------------------------------------


PROFILE_CASES: dict[str, tuple[Callable[[SandboxHub], dict[str, Any]], int, str | None]] = {
    "no Profile service": (lambda hub: {"profile": False}, 400, None),
    "a plain-http 127.0.0.1 Profile endpoint": (
        lambda hub: {"profile_url": f"{hub.url}/users/someone"},  # the hub takes https:// or http://localhost only
        400,
        None,
    ),
    "an https Profile endpoint": (lambda hub: {"profile_url": "https://site.example.org/resident/@ada"}, 201, "ada"),
    "an http://localhost Profile endpoint": (lambda hub: {}, 201, "<user id>"),
}


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_a_did_document_without_a_usable_profile_service_is_400_invalid_did_document(
    sandbox_hub: SandboxHub, case: str
) -> None:
    hub = sandbox_hub
    actor_options, status, handle = PROFILE_CASES[case]
    actor = hub.new_actor(**actor_options(hub))
    answer = hub.join(actor)
    assert answer.status == status, answer.json
    if status == 400:
        assert answer.json == {"error": "Invalid DID Document", "message": PROFILE_SERVICE_MISSING}
        assert count(hub, 'SELECT count(*) FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == 0
        assert count(hub, 'SELECT count(*) FROM "Badge"') == 0
        # The signature was valid: the actor is registered (verified) before the join refuses it.
        assert one(hub, 'SELECT "verified", "instanceUrl", "metadata" FROM "Actor" WHERE "did" = %s', (actor.did,)) == (
            True,
            None,
            None,
        )
        assert "Invalid DID Document" in hub.log_text()
    else:
        assert answer.json["badge"]["id"]
        expected = actor.user_id if handle == "<user id>" else handle
        assert one(hub, 'SELECT "handle" FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == (expected,)


def test_a_loopback_did_nobody_serves_gets_the_placeholder_document_and_401(sandbox_hub: SandboxHub) -> None:
    """As the hub: the placeholder's key is nobody's, so 'Invalid signature'; it is cached like a
    real document, and once the real document is published the next join re-resolves it."""
    hub = sandbox_hub
    actor = hub.new_actor(publish=False)
    answer = hub.join(actor)
    assert (answer.status, answer.json) == (401, {"error": "Authentication required", "message": "Invalid signature"})
    cached = json.loads(hub.redis.client().get(f"did:{actor.did}"))
    assert cached["id"] == actor.did
    assert cached["verificationMethod"][0]["publicKeyBase64"] == PLACEHOLDER_KEY
    assert [s["type"] for s in cached["service"]] == ["RingHub", "Profile"]
    assert one(hub, 'SELECT "publicKey" FROM "HttpSignature" WHERE "keyId" = %s', (actor.key_id,)) == (PLACEHOLDER_KEY,)
    assert count(hub, 'SELECT count(*) FROM "Actor" WHERE "did" = %s', (actor.did,)) == 0
    assert count(hub, 'SELECT count(*) FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == 0

    actor.doc_path.parent.mkdir(parents=True, exist_ok=True)
    actor.doc_path.write_bytes(_did.render_document(actor.document))
    answer = hub.join(actor)
    assert answer.status == 201, answer.json  # the failed check re-resolved the DID: the real key now
    real_key = base64.b64encode(_ed25519.raw_public_key(actor.key)).decode()
    assert one(hub, 'SELECT "publicKey" FROM "HttpSignature" WHERE "keyId" = %s', (actor.key_id,)) == (real_key,)
    assert "holds a new key (rotation)" in hub.log_text()


# -- Digest and Date -------------------------------------------------------------------------


# case -> (signing options, expected status, expected message)
SIGNED_HEADER_CASES: dict[str, tuple[Callable[[], dict[str, Any]], int, str | None]] = {
    "neither Date nor Digest": (
        lambda: {"names": ("(request-target)", "host"), "omit": ("Date", "Digest")},
        201,
        None,
    ),
    "Date signed, no Digest": (lambda: {"names": ("(request-target)", "host", "date"), "omit": ("Digest",)}, 201, None),
    "Digest signed, no Date": (lambda: {"names": ("(request-target)", "host", "digest"), "omit": ("Date",)}, 201, None),
    "a stale Date that is not signed": (
        lambda: {"names": ("(request-target)", "host", "digest"), "date": _httpsig.http_date(time.time() - 3600)},
        201,
        None,
    ),
    "a wrong Digest that is not signed": (
        lambda: {"names": ("(request-target)", "host", "date"), "signed_body": b'{"ringSlug": "other"}'},
        401,
        "Digest does not match request body",
    ),
    "a signed Date that does not parse": (lambda: {"date": "yesterday at noon"}, 401, "Invalid Date header"),
}


@pytest.mark.parametrize("case", list(SIGNED_HEADER_CASES))
def test_digest_and_date_are_checked_when_present_not_required_when_absent(sandbox_hub: SandboxHub, case: str) -> None:
    options, status, message = SIGNED_HEADER_CASES[case]
    actor = sandbox_hub.new_actor()
    answer = sandbox_hub.join(actor, **options())
    assert answer.status == status, answer.json
    members = count(sandbox_hub, 'SELECT count(*) FROM "Membership" WHERE "actorDid" = %s', (actor.did,))
    if status == 201:
        assert answer.json["badge"]["id"] and members == 1
    else:
        assert answer.json == {"error": "Authentication required", "message": message}
        assert members == 0


def test_the_collections_signed_requests_always_carry_digest_and_date(sandbox_hub: SandboxHub) -> None:
    """The hub no longer insists on them, so the collection's own signer must: every request it
    signs sends both and covers both (what the sandbox logs for each signed request)."""
    key = _ed25519.generate_private_key()
    for method, body in (("POST", b'{"ringSlug":"spool"}'), ("POST", b""), ("GET", b"")):
        signed = _httpsig.sign_request(method, sandbox_hub.url + "/trp/join", body, key, "did:web:x#key-1")
        assert signed["Digest"] == _httpsig.digest_header(body)
        assert signed["Date"] and _httpsig.parse_signature(signed["Signature"])["headers"] == [
            "(request-target)",
            "host",
            "date",
            "digest",
        ]
    actor = sandbox_hub.new_actor()
    assert sandbox_hub.join(actor).status == 201  # SandboxActor signs with the collection's _httpsig
    assert sandbox_hub.leave(actor).status == 200
    lines = [line for line in sandbox_hub.log_text().splitlines() if f"keyId={actor.key_id} " in line]
    assert len(lines) == 2, lines
    for line in lines:
        assert "headers='(request-target) host date digest' Date sent Digest sent -> valid" in line, line


# -- the rate limit --------------------------------------------------------------------------


def test_every_hub_answer_carries_the_rate_limit_headers(sandbox_hub: SandboxHub) -> None:
    """500 a minute per client by default; counted per X-Forwarded-For client (trustProxy)."""
    hub = sandbox_hub
    client = as_client("203.0.113.50")
    actor = hub.new_actor()
    answers = [
        http("GET", hub.url + "/health", headers=client),
        http("GET", hub.url + "/health/ready", headers=client),
        http("GET", hub.url + "/trp/root", headers=client),
        http("GET", hub.url + "/trp/rings/spool", headers=client),
        hub.join(actor, headers=client),
    ]
    badge_id = answers[-1].json["badge"]["id"]
    answers.append(http("GET", hub.url + "/trp/badges/" + _quote(badge_id), headers=client))
    answers.append(http("POST", hub.url + "/trp/badges/" + _quote(badge_id) + "/verify", headers=client))
    answers.append(http("GET", hub.url + f"/trp/actors/{_quote(actor.did)}/badges", headers=client))
    answers.append(hub.leave(actor, headers=client))
    assert [a.status for a in answers] == [200, 200, 200, 200, 201, 200, 200, 200, 200]
    for n, answer in enumerate(answers, start=1):
        got = rate_headers(answer)
        assert set(got) == set(RATE_HEADERS), got
        assert (got["x-ratelimit-limit"], got["x-ratelimit-remaining"]) == ("500", str(500 - n))
        assert 0 <= int(got["x-ratelimit-reset"]) <= 60
    # The static DID documents (the reverse proxy's in production) and unknown paths are outside it.
    for path in ("/.well-known/did.json", f"/users/{actor.user_id}/did.json", "/no/such/route"):
        answer = http("GET", hub.url + path, headers=client)
        assert rate_headers(answer) == {}, (path, answer.headers)
    after = http("GET", hub.url + "/health", headers=client)
    assert header(after, "x-ratelimit-remaining") == str(500 - len(answers) - 1)
    # Another client has its own budget.
    assert header(http("GET", hub.url + "/health", headers=as_client("203.0.113.51")), "x-ratelimit-remaining") == "499"


def test_past_the_limit_429_with_retry_after_then_the_window_resets(
    sandbox_hub_factory: Callable[..., SandboxHub],
) -> None:
    hub = sandbox_hub_factory(extra_env={"SANDBOX_RATE_LIMIT": "3", "SANDBOX_RATE_LIMIT_WINDOW": "3"})
    client, other = as_client("198.51.100.7"), as_client("198.51.100.8")
    first = [http("GET", hub.url + "/trp/rings/spool", headers=client) for _attempt in range(3)]
    assert [a.status for a in first] == [200, 200, 200]
    assert [header(a, "x-ratelimit-remaining") for a in first] == ["2", "1", "0"]
    assert all(header(a, "retry-after") is None for a in first)

    refused = http("GET", hub.url + "/trp/rings/spool", headers=client)
    assert refused.status == 429
    assert refused.json == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Rate limit exceeded, retry in 3 seconds",
    }
    got = rate_headers(refused)
    assert (got["x-ratelimit-limit"], got["x-ratelimit-remaining"], got["retry-after"]) == ("3", "0", "3")
    assert 0 <= int(got["x-ratelimit-reset"]) <= 3

    # A signed join past the limit is refused before anything is looked at or written.
    actor = hub.new_actor()
    join = hub.join(actor, headers=client)
    assert join.status == 429
    for table, column in (("Actor", "did"), ("HttpSignature", "actorDid"), ("Membership", "actorDid")):
        assert count(hub, f'SELECT count(*) FROM "{table}" WHERE "{column}" = %s', (actor.did,)) == 0, table
    assert hub.redis.client().exists(f"did:{actor.did}") == 0
    assert hub.log_text().count("rate limit: 198.51.100.7 made more than 3 requests") == 1  # named once

    assert header(http("GET", hub.url + "/health", headers=other), "x-ratelimit-remaining") == "2"

    # The window is fixed from the client's first request: polling while refused does not extend it.
    deadline = time.monotonic() + 15
    answer = refused
    while answer.status == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = http("GET", hub.url + "/health", headers=client)
    assert answer.status == 200 and header(answer, "x-ratelimit-remaining") == "2"
    assert hub.join(actor, headers=client).status == 201


def test_the_rate_limiter_counts_like_fastify_rate_limit() -> None:
    """Pure logic with a fake clock: fixed windows per client, the headers, the LRU bound, off at 0."""
    now = [1000.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])
    assert limiter.hit("a") == (
        True,
        {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "60"},
    )
    now[0] += 10.4
    assert limiter.hit("a")[1]["x-ratelimit-reset"] == "49"
    now[0] += 10
    allowed, headers = limiter.hit("a")
    assert not allowed and headers == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "39",
        "retry-after": "60",
    }
    assert limiter.hit("b")[0] is True
    now[0] += 40  # 60.4 s after a's first request: a new window
    assert limiter.hit("a") == (
        True,
        {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "60"},
    )
    for n in range(RateLimiter.MAX_CLIENTS + 10):
        limiter.hit(f"client-{n}")
    assert len(limiter._clients) == RateLimiter.MAX_CLIENTS
    assert RateLimiter(0, 60.0).hit("a") == (True, {})
    assert limiter.refusal()["message"] == "Rate limit exceeded, retry in 1 minute"
    assert [ms_long(v) for v in (60000, 90000, 1000, 2000, 1499, 500, 3_600_000)] == [
        "1 minute",
        "2 minutes",
        "1 second",
        "2 seconds",
        "1 second",
        "500 ms",
        "1 hour",
    ]


# -- the membership's profile fields -----------------------------------------------------------


def test_a_join_fills_the_membership_profile_fields(
    sandbox_hub_factory: Callable[..., SandboxHub], any_migrations: Path
) -> None:
    hub = sandbox_hub_factory(migrations=any_migrations)
    hub.add_ring("second-ring")
    actor = hub.new_actor(name="Ada Lovelace")
    port = hub.url.rsplit(":", 1)[1]
    before = datetime.now(UTC).replace(tzinfo=None)
    assert hub.join(actor).status == 201
    assert hub.join(actor, "second-ring").status == 201
    rows = hub.db.query(
        'SELECT r."slug", m."profileUrl", m."instanceDomain", m."profileSource", m."profileLastFetched", '
        'm."handle", m."actorName", m."avatarUrl" FROM "Membership" m JOIN "Ring" r ON r."id" = m."ringId" '
        'WHERE m."actorDid" = %s ORDER BY r."slug" = \'spool\' DESC',
        (actor.did,),
    )
    profile_url = f"http://localhost:{port}/users/{actor.user_id}"
    assert [r[:4] for r in rows] == [
        ("spool", profile_url, f"127.0.0.1:{port}", "DID_RESOLUTION"),
        ("second-ring", profile_url, f"127.0.0.1:{port}", "DID_RESOLUTION"),
    ]
    for row in rows:
        assert 0 <= (row[4] - before).total_seconds() < 30
        assert (row[6], row[7]) == ("Ada Lovelace", None)
    # The handle comes from the DID document on the first join; a later join within 24 h reads the
    # profile the hub keeps in Actor.metadata, which has no handle.
    assert [r[5] for r in rows] == [actor.user_id, None]
    name, instance_url, metadata = one(
        hub, 'SELECT "name", "instanceUrl", "metadata" FROM "Actor" WHERE "did" = %s', (actor.did,)
    )
    assert (name, instance_url) == ("Ada Lovelace", None)  # instanceUrl stays NULL for a did:web actor
    assert {k: v for k, v in metadata.items() if k != "profileLastFetched"} == {
        "actorName": "Ada Lovelace",
        "avatarUrl": None,
        "profileUrl": profile_url,
        "instanceDomain": f"127.0.0.1:{port}",
    }
    assert_recent_iso(metadata["profileLastFetched"])


def test_a_schema_without_the_profile_columns_still_joins(sandbox_hub: SandboxHub) -> None:
    hub = sandbox_hub
    hub.db.execute(
        'ALTER TABLE "Membership" DROP COLUMN "profileUrl", DROP COLUMN "handle", DROP COLUMN "profileSource"'
    )
    actor = hub.new_actor()
    answer = hub.join(actor)
    assert answer.status == 201 and answer.json["badge"]["id"]
    assert one(hub, 'SELECT "status", "instanceDomain" FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == (
        "ACTIVE",
        f"127.0.0.1:{hub.url.rsplit(':', 1)[1]}",
    )
    assert "no handle, profileSource, profileUrl column(s)" in hub.log_text()


# -- re-joining after a leave ----------------------------------------------------------------


def test_a_rejoin_after_leaving_answers_201_with_a_badge_that_was_never_stored(
    sandbox_hub_factory: Callable[..., SandboxHub], any_migrations: Path
) -> None:
    hub = sandbox_hub_factory(migrations=any_migrations)
    actor = hub.new_actor()
    first = hub.join(actor).json["badge"]["id"]
    assert hub.leave(actor).status == 200
    again = hub.join(actor)
    assert again.status == 201, again.json
    assert again.json["membership"]["status"] == "ACTIVE"
    second = again.json["badge"]["id"]
    assert second != first and second.startswith(f"{hub.url}/badges/")
    assert hub.badge(second).status == 404  # the insert hit the Badge.membershipId unique constraint
    assert hub.verify(second).status == 404
    assert hub.db.query('SELECT "id", "revokedAt" IS NOT NULL FROM "Badge"') == [(first, True)]
    assert one(hub, 'SELECT "status", "badgeId" FROM "Membership" WHERE "actorDid" = %s', (actor.did,)) == (
        "ACTIVE",
        second,
    )
    assert hub.actor_badges(actor.did).json["total"] == 0  # no valid badge: use a fresh actor each run
    assert f"the answer names badge {second}, which is not stored" in hub.log_text()

    fresh: SandboxActor = hub.new_actor()
    badge_id = hub.join(fresh).json["badge"]["id"]
    assert hub.badge(badge_id).status == 200 and hub.verify(badge_id).json["isValid"] is True


def _quote(value: str) -> str:
    return quote(value, safe="")
