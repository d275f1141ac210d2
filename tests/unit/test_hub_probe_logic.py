"""hub_probe's logic without a network: a fake hub answers the probe's requests in-process.

The fake hub is a plain function of (method, URL, body, headers): it checks the probe's HTTP
signatures with the collection's verifier, signs badges with its own key and serves DID
documents from a web root on disk. Behaviour against a real hub process is in
tests/integration/test_hub_probe.py and test_verify_role.py.
"""

from __future__ import annotations

import email.utils
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _httpsig, _hub_probe, _jws
from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._hub_probe import (
    Answer,
    Client,
    NoAnswer,
    Probe,
    retry_after,
)

HUB = "https://hub.example.org"
API = "http://127.0.0.1:3000"
ISSUER = "did:web:hub.example.org"
ALL = list(_hub_probe.CHECKS)


class Clock:
    """A clock that only moves when the probe sleeps or a request takes time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return status, dict(headers or {}), data


class FakeHub:
    """Routes (method, path) to handlers; records every request; speaks the hub's protocol."""

    def __init__(self, web_root: Path, clock: Clock) -> None:
        self.web_root = web_root
        self.clock = clock
        self.key = _ed25519.generate_private_key()  # what the hub signs with
        self.published = _ed25519.raw_public_key(self.key)  # what /.well-known/did.json holds
        self.sent: list[dict[str, Any]] = []
        self.members: dict[str, str] = {}  # did -> badge id
        self.badges: dict[str, dict[str, Any]] = {}
        self.role = "member"
        self.issue_badges = True
        self.overrides: dict[tuple[str, str], Callable[..., Any]] = {}

    def __call__(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Any:
        parts = urlsplit(url)
        path = parts.path
        self.sent.append({"method": method, "url": url, "path": path, "headers": dict(headers), "body": body})
        self.clock.now += 0.01
        for (m, prefix), handler in self.overrides.items():
            if m == method and path.startswith(prefix):
                return handler(method=method, url=url, body=body, headers=headers, timeout=timeout)
        if path == "/health":
            return reply(200, {"status": "ok", "timestamp": "2026-12-01T09:30:22.053Z"})
        if path == "/health/ready":
            return reply(200, {"status": "ready", "checks": {"database": "ok", "redis": "ok"}})
        if path in ("/trp/rings/spool", "/trp/root"):
            ring = {"id": "r1", "slug": "spool", "name": "The Spool", "ownerDid": ISSUER, "parentId": None}
            return reply(200, dict(ring, joinPolicy="OPEN", memberCount=len(self.members), metadata={"isRoot": True}))
        if path == "/.well-known/did.json":
            return reply(200, _did.build_document(ISSUER, self.published, include_base64=True))
        if path.startswith("/users/"):
            file = self.web_root / path.lstrip("/")
            return reply(200, file.read_bytes()) if file.is_file() else reply(404, {"error": "Not found"})
        if path in ("/trp/join", "/trp/leave"):
            return self.signed(method, url, body or b"", headers, path)
        if path.startswith("/trp/badges/"):
            rest = path[len("/trp/badges/") :]
            badge_id, _slash, verify = rest.partition("/")
            badge = self.badges.get(unquote(badge_id))
            if badge is None:
                return reply(404, {"error": "Not found"})
            if verify:
                ok = self.hub_verifies(badge)
                return reply(200, {"isValid": ok, "issuer": ISSUER, **({} if ok else {"error": "Invalid signature"})})
            return reply(200, {"badge": badge, "metadata": {"isRevoked": False}})
        if path.startswith("/trp/actors/"):
            did = unquote(path.split("/")[3])
            badge = self.badges.get(self.members.get(did, ""))
            listed = [{"badge": badge, "ring": {"slug": "spool"}, "isRevoked": False}] if badge else []
            return reply(200, {"badges": listed, "total": len(listed)})
        return reply(404, {"error": "Not Found"})

    def hub_verifies(self, badge: dict[str, Any]) -> bool:
        try:
            _jws.verify_compact(badge["proof"]["jws"], self.key)
        except RingHubError:
            return False
        return True

    def signed(self, method: str, url: str, body: bytes, headers: dict[str, str], path: str) -> Any:
        def key_of(key_id: str) -> bytes:
            doc_url = _did.did_web_to_url(key_id.split("#")[0])
            doc = json.loads((self.web_root / urlsplit(doc_url).path.lstrip("/")).read_text())
            return _did.document_public_key(doc, key_id)

        try:
            checked = _httpsig.verify_request(method, _httpsig.request_target(url), headers, body, key_of)
        except (RingHubError, OSError) as exc:
            return reply(401, {"error": "Authentication required", "message": str(exc)})
        did = checked["actorDid"]
        if path == "/trp/leave":
            if did not in self.members:
                return reply(404, {"error": "Not a member", "message": "You are not a member of this ring"})
            del self.members[did]
            return reply(200, {"message": "Successfully left ring"})
        badge = None
        if self.issue_badges:
            credential = {
                "@context": ["https://www.w3.org/2018/credentials/v1"],
                "id": f"{HUB}/badges/b{len(self.badges) + 1}",
                "type": ["VerifiableCredential", "OpenBadgeCredential", "ThreadRingMembershipBadge"],
                "issuer": {"id": ISSUER, "type": "Profile"},
                "credentialSubject": {"id": did, "type": ["Profile"]},
                "issuanceDate": "2026-12-01T09:30:00.000Z",
            }
            badge = _jws.sign_badge(credential, self.key)
            self.badges[badge["id"]] = badge
            self.members[did] = badge["id"]
        membership = {"id": "m1", "status": "ACTIVE", "role": self.role}
        return reply(201, {"membership": membership, "badge": {"id": badge["id"], "url": "x"} if badge else None})


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The actor's private directories go under the test's own tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    root.mkdir()
    return root


@pytest.fixture
def hub(web_root: Path, clock: Clock) -> FakeHub:
    return FakeHub(web_root, clock)


@pytest.fixture
def key_file(tmp_path: Path, hub: FakeHub) -> Path:
    path = tmp_path / "hub.pem"
    path.write_bytes(_ed25519.private_pem(hub.key))
    return path


def params(**overrides: Any) -> dict[str, Any]:
    base = {name: option.get("default") for name, option in _hub_probe.argument_spec().items()}
    base.update(api_url=API, hub_url=HUB)
    base.update(overrides)
    return base


def probe(hub: FakeHub, clock: Clock, check_mode: bool = False, secrets: set[str] | None = None, **overrides: Any):
    return Probe(params(**overrides), check_mode, secrets, send=hub, clock=clock, sleep=clock.sleep)


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["checks"]}


def failure(run: Callable[[], Any]) -> tuple[RingHubError, dict[str, dict[str, Any]]]:
    with pytest.raises(RingHubError) as caught:
        run()
    return caught.value, {c["name"]: c for c in caught.value.details["checks"]}


# -- the whole run ---------------------------------------------------------------------------


def test_every_check_passes_and_the_actor_is_gone_afterwards(
    hub: FakeHub, clock: Clock, web_root: Path, key_file: Path
) -> None:
    secrets: set[str] = set()
    out = probe(hub, clock, secrets=secrets, checks=ALL, web_root=str(web_root), key_path=str(key_file)).run()
    checks = by_name(out.result)
    assert [c["name"] for c in out.result["checks"]] == ALL
    assert {c["status"] for c in checks.values()} == {"passed"}, out.result
    assert out.changed and out.result["passed"] and out.result["failed_checks"] == []
    actor = out.result["actor"]
    assert actor["did"].startswith("did:web:hub.example.org:users:verify-") and actor["user_id"].startswith("verify-")
    assert actor["document_url"] == f"{HUB}/users/{actor['user_id']}/did.json"
    assert actor["profile_url"] == f"{HUB}/users/{actor['user_id']}"
    assert out.result["badge"]["issuer"] == ISSUER and out.result["badge"]["subject"] == actor["did"]
    assert checks["instance_document"]["document"]["matches_key_file"] is True
    # The actor joined, then left; its document, its key file and the private directory are gone.
    assert hub.members == {}
    assert not Path(actor["document_path"]).exists() and not Path(actor["key_file"]).exists()
    assert not Path(actor["key_file"]).parent.exists()
    assert not (web_root / "users" / actor["user_id"]).exists()
    # The actor's private key was registered for Ansible's censor and appears nowhere in the result.
    pems = [s for s in secrets if "PRIVATE KEY" in s]
    assert len(pems) == 1 and pems[0] not in json.dumps(out.result)
    bodies = [s for s in secrets if "PRIVATE KEY" not in s]
    assert bodies and all(b not in json.dumps(out.result) for b in bodies)


def test_signed_requests_always_carry_digest_and_date_and_are_signed_over_them(
    hub: FakeHub, clock: Clock, web_root: Path
) -> None:
    probe(hub, clock, checks=["actor", "join", "cleanup"], web_root=str(web_root)).run()
    signed = [r for r in hub.sent if r["path"] in ("/trp/join", "/trp/leave")]
    assert [r["path"] for r in signed] == ["/trp/join", "/trp/leave"]
    for request in signed:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["digest"] == _httpsig.digest_header(request["body"])
        assert _httpsig._parse_http_date(headers["date"]) is not None
        assert headers["host"] == "127.0.0.1:3000" and headers["content-type"] == "application/json"
        covered = _httpsig.parse_signature(headers["signature"])["headers"]
        assert covered == ["(request-target)", "host", "date", "digest"]


def test_a_key_file_that_exists_is_never_overwritten(
    hub: FakeHub, clock: Clock, web_root: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "actor.pem"
    taken.write_text("someone else's file")
    error, checks = failure(
        lambda: probe(hub, clock, checks=["actor"], web_root=str(web_root), actor_key=str(taken)).run()
    )
    assert checks["actor"]["status"] == "failed" and "exists already" in checks["actor"]["msg"]
    assert taken.read_text() == "someone else's file" and not (web_root / "users").exists()
    assert isinstance(error, NothingChanged)


def test_the_actor_files_have_private_and_public_modes(
    hub: FakeHub, clock: Clock, web_root: Path, tmp_path: Path
) -> None:
    key = tmp_path / "actor.pem"
    out = probe(hub, clock, checks=["actor"], web_root=str(web_root), actor_key=str(key)).run()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    doc = Path(out.result["actor"]["document_path"])
    assert stat.S_IMODE(doc.stat().st_mode) == 0o644
    published = json.loads(doc.read_text())
    assert _did.document_services(published, "Profile") and published["id"] == out.result["actor"]["did"]
    assert _did.document_public_key(published) == _ed25519.raw_public_key(_ed25519.load_private_key(key.read_bytes()))


def test_check_mode_runs_only_the_read_only_probes(hub: FakeHub, clock: Clock, web_root: Path, key_file: Path) -> None:
    out = probe(hub, clock, True, checks=ALL, web_root=str(web_root), key_path=str(key_file)).run()
    checks = by_name(out.result)
    assert {n: c["status"] for n, c in checks.items()} == {
        "health": "passed", "root_ring": "passed", "instance_document": "passed", "actor": "skipped",
        "join": "skipped", "badge": "skipped", "actor_badges": "skipped", "cleanup": "skipped",
    }  # fmt: skip
    assert checks["actor"]["msg"] == "check mode: only the read-only probes run"
    assert checks["badge"]["msg"] == "join was skipped"
    assert not out.changed and list(web_root.iterdir()) == []
    assert {r["method"] for r in hub.sent} == {"GET"}


def test_a_failed_prerequisite_skips_what_needs_it_and_the_cleanup_still_runs(
    hub: FakeHub, clock: Clock, web_root: Path
) -> None:
    hub.overrides[("GET", "/trp/rings/")] = lambda **_: reply(404, {"error": "Not found", "message": "Ring not found"})
    error, checks = failure(lambda: probe(hub, clock, checks=ALL, web_root=str(web_root)).run())
    assert checks["root_ring"]["status"] == "failed"
    assert checks["join"] == dict(checks["join"], status="skipped", msg="root_ring failed")
    assert checks["badge"]["msg"] == "join was skipped"
    assert checks["cleanup"]["status"] == "passed" and "was not a member" in checks["cleanup"]["msg"]
    assert not any(r["path"] in ("/trp/join", "/trp/leave") for r in hub.sent)  # no join, so no leave either
    assert not (web_root / "users" / checks["actor"]["actor"]["user_id"]).exists()
    # Files were written (and removed): the failure does not claim that nothing changed.
    assert (
        not isinstance(error, NothingChanged)
        and "1 of 8 checks failed: root_ring: the root ring spool is missing" in error.msg
    )


# -- each failure with its own message ------------------------------------------------------


def assert_explained(msg: str) -> None:
    assert ". Expected: " in msg and ". Got: " in msg and ". Fix: " in msg, msg


def test_hub_down_fails_within_the_deadline(hub: FakeHub, clock: Clock) -> None:
    def refused(**_: Any) -> Any:
        clock.now += 0.001
        raise NoAnswer("connection refused")

    hub.overrides[("GET", "/health")] = refused
    error, checks = failure(lambda: probe(hub, clock, checks=["health", "root_ring"], timeout=5, interval=0.5).run())
    msg = checks["health"]["msg"]
    assert_explained(msg)
    assert msg.startswith("the hub does not answer at http://127.0.0.1:3000")
    assert "no answer from GET http://127.0.0.1:3000/health (connection refused)" in msg
    assert "start the hub" in msg
    assert checks["root_ring"]["msg"] == "the deadline of the probe (timeout 5 s) passed before this check"
    assert 4.5 <= clock.now - 1000 <= 5.1 and len(clock.slept) >= 8  # polled until the deadline, not beyond
    assert isinstance(error, NothingChanged)  # nothing was written, no request that changes the hub was sent


def test_a_hub_that_is_not_ready_names_the_failing_check(hub: FakeHub, clock: Clock) -> None:
    body = {"status": "not_ready", "checks": {"database": "unhealthy", "redis": "ok"}}
    hub.overrides[("GET", "/health/ready")] = lambda **_: reply(503, body)
    _error, checks = failure(lambda: probe(hub, clock, checks=["health"], timeout=2).run())
    msg = checks["health"]["msg"]
    assert_explained(msg)
    assert msg.startswith("the hub is not ready: its database check is unhealthy")
    assert "HTTP 503" in msg and "check DATABASE_URL" in msg


def test_a_stale_did_document_is_told_apart_from_the_key_on_disk(hub: FakeHub, clock: Clock, key_file: Path) -> None:
    hub.published = _ed25519.raw_public_key(_ed25519.generate_private_key())
    _error, checks = failure(lambda: probe(hub, clock, checks=["instance_document"], key_path=str(key_file)).run())
    msg = checks["instance_document"]["msg"]
    assert_explained(msg)
    assert msg.startswith(
        "the DID document's key differs from the signing key on disk: the hub restarted with another key, "
        "or the document is stale. Expected: did:web:hub.example.org#key-1 = "
        + _did.multibase_from_raw(_ed25519.raw_public_key(hub.key))
    )
    assert _did.multibase_from_raw(hub.published) in msg and "threadring.ringhub.did_keys" in msg
    assert checks["instance_document"]["document"]["matches_key_file"] is False


def test_multibase_and_base64_that_disagree_fail(hub: FakeHub, clock: Clock) -> None:
    doc = _did.build_document(ISSUER, hub.published, include_base64=True)
    doc["verificationMethod"][0]["publicKeyBase64"] = _ed25519.public_key_b64(_ed25519.generate_private_key())
    hub.overrides[("GET", "/.well-known/did.json")] = lambda **_: reply(200, doc)
    _error, checks = failure(lambda: probe(hub, clock, checks=["instance_document"]).run())
    assert "has no usable did:web:hub.example.org#key-1" in checks["instance_document"]["msg"]
    assert "holding different keys" in checks["instance_document"]["msg"]


def test_no_did_document_served(hub: FakeHub, clock: Clock) -> None:
    hub.overrides[("GET", "/.well-known/")] = lambda **_: reply(404, {"error": "Not found"})
    _error, checks = failure(lambda: probe(hub, clock, checks=["instance_document"], web_root="/srv/www").run())
    msg = checks["instance_document"]["msg"]
    assert_explained(msg)
    assert msg.startswith(f"no instance DID document is served at {HUB}/.well-known/did.json")
    assert "instance_document: /srv/www/.well-known/did.json" in msg


def test_a_ring_owned_by_another_did(hub: FakeHub, clock: Clock) -> None:
    ring = {"id": "r1", "slug": "spool", "ownerDid": "did:web:someone.else", "parentId": None}
    hub.overrides[("GET", "/trp/rings/")] = lambda **_: reply(200, ring)
    _error, checks = failure(lambda: probe(hub, clock, checks=["root_ring"]).run())
    assert checks["root_ring"]["msg"].startswith("the root ring spool is not owned by the instance DID")
    assert "ownerDid 'did:web:someone.else'" in checks["root_ring"]["msg"]


def test_join_500_means_no_roles(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    hub.overrides[("POST", "/trp/join")] = lambda **_: reply(500, {"error": "Configuration error"})
    _error, checks = failure(
        lambda: probe(hub, clock, checks=["actor", "join", "cleanup"], web_root=str(web_root)).run()
    )
    msg = checks["join"]["msg"]
    assert_explained(msg)
    assert "HTTP 500" in msg and "no 'member' role" in msg and "ring_seed" in msg
    assert checks["cleanup"]["status"] == "passed"  # the hub says the actor is not a member: fine


def test_a_join_with_another_role_than_member(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    hub.role = "owner"
    _error, checks = failure(lambda: probe(hub, clock, checks=["actor", "join"], web_root=str(web_root)).run())
    assert checks["join"]["msg"].startswith("the hub made the test actor 'owner': the root ring spool has no 'member'")


def test_a_join_without_a_badge_names_the_ephemeral_key(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    hub.issue_badges = False
    _error, checks = failure(lambda: probe(hub, clock, checks=["actor", "join", "badge"], web_root=str(web_root)).run())
    msg = checks["join"]["msg"]
    assert_explained(msg)
    assert msg.startswith("the hub made the test actor a member but issued no badge: it runs with NODE_ENV=production")
    assert '"badge": null' in msg and "RING_HUB_PRIVATE_KEY" in msg
    assert checks["badge"] == dict(checks["badge"], status="skipped", msg="join failed")


def test_a_badge_signed_with_an_ephemeral_key(hub: FakeHub, clock: Clock, web_root: Path, key_file: Path) -> None:
    hub.key = _ed25519.generate_private_key()  # the hub signs with a key nobody published
    _error, checks = failure(
        lambda: probe(hub, clock, checks=ALL, web_root=str(web_root), key_path=str(key_file)).run()
    )
    msg = checks["badge"]["msg"]
    assert_explained(msg)
    assert "does not verify with did:web:hub.example.org#key-1 of the published DID document: the hub signs" in msg
    assert "an ephemeral one when RING_HUB_PRIVATE_KEY is unset" in msg
    assert checks["actor_badges"]["status"] == "failed" and checks["cleanup"]["status"] == "passed"


def test_after_a_restart_with_another_key_the_hub_disagrees(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    before = probe(hub, clock, checks=["actor", "join", "badge"], web_root=str(web_root)).run()
    hub.key = _ed25519.generate_private_key()  # the restart: the hub now holds an ephemeral key
    actor_key = before.result["actor"]["key_file"]
    _error, checks = failure(
        lambda: probe(
            hub, clock, checks=["health", "actor_badges", "cleanup"], web_root=str(web_root), actor_key=actor_key,
            badge_id=before.result["badge"]["id"],
        ).run()
    )  # fmt: skip
    msg = checks["actor_badges"]["msg"]
    assert_explained(msg)
    assert msg.startswith("after the restart the hub's own verification rejects the badge")
    assert "the hub restarted with another signing key (an ephemeral one when RING_HUB_PRIVATE_KEY is missing" in msg
    assert checks["cleanup"]["status"] == "passed" and not Path(actor_key).exists()


def test_badges_are_looked_up_by_actor_and_a_new_id_is_noted(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    before = probe(hub, clock, checks=["actor", "join", "badge"], web_root=str(web_root)).run()
    old_id = before.result["badge"]["id"]
    did = before.result["actor"]["did"]
    badge = dict(hub.badges.pop(old_id), id=f"{HUB}/badges/renewed")  # re-signed under a new id at the start
    hub.badges[badge["id"]] = _jws.sign_badge(badge, hub.key)
    hub.members[did] = badge["id"]
    out = probe(
        hub, clock, checks=["actor_badges"], web_root=str(web_root), actor_key=before.result["actor"]["key_file"],
        badge_id=old_id,
    ).run()  # fmt: skip
    check = by_name(out.result)["actor_badges"]
    assert check["badge_ids"] == [f"{HUB}/badges/renewed"] and check["id_changed"] is True
    assert "(its id changed)" in check["msg"]
    assert any(r["path"] == "/trp/badges/" + quote(f"{HUB}/badges/renewed", safe="") + "/verify" for r in hub.sent)


def test_a_document_the_proxy_does_not_serve(hub: FakeHub, clock: Clock, web_root: Path) -> None:
    hub.overrides[("GET", "/users/")] = lambda **_: reply(404, {"error": "Not found"})
    _error, checks = failure(lambda: probe(hub, clock, checks=["actor", "cleanup"], web_root=str(web_root)).run())
    msg = checks["actor"]["msg"]
    assert_explained(msg)
    assert msg.startswith("the test actor's DID document is not served where the hub resolves it")
    assert "set ringhub_web_root to the directory the reverse proxy serves" in msg
    assert list((web_root / "users").iterdir()) == []  # removed again by the cleanup


# -- HTTP: deadline and rate limit ----------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    date = "Tue, 01 Dec 2026 09:30:10 GMT"
    epoch = email.utils.mktime_tz(email.utils.parsedate_tz(date))
    assert retry_after({"retry-after": date}, now=epoch - 10) == pytest.approx(10.0)
    assert retry_after({"x-ratelimit-reset": "7"}) == 7.0
    assert retry_after({}) == 1.0
    assert retry_after({"retry-after": "0"}) == _hub_probe.MIN_RETRY_WAIT


def test_a_429_is_retried_after_retry_after_and_signed_afresh(clock: Clock) -> None:
    answers = [
        reply(429, {"statusCode": 429}, {"retry-after": "2"}),
        reply(429, None, {"retry-after": "1"}),
        reply(201, {}),
    ]
    sent: list[dict[str, str]] = []

    def send(method: str, url: str, body: Any, headers: dict[str, str], timeout: float) -> Any:
        sent.append(headers)
        return answers.pop(0)

    stamps = iter(range(10))
    client = Client(clock() + 10, 5, send, clock, clock.sleep)
    answer = client.request("POST", API + "/trp/join", b"{}", sign=lambda: {"Date": str(next(stamps))})
    assert answer.status == 201 and clock.slept == [2.0, 1.0]
    assert [h["Date"] for h in sent] == ["0", "1", "2"]  # every attempt carries a new signature
    assert (client.requests, client.rate_limited, client.waited) == (3, 2, 3.0)


def test_a_429_beyond_the_deadline_is_given_up_not_waited_for(clock: Clock) -> None:
    client = Client(clock() + 5, 5, lambda *a: reply(429, None, {"retry-after": "60"}), clock, clock.sleep)
    answer = client.request("GET", API + "/health")
    assert answer.status == 429 and answer.rate_limited and clock.slept == []


def test_rate_limited_checks_say_so(hub: FakeHub, clock: Clock) -> None:
    hub.overrides[("GET", "/trp/root")] = lambda **_: reply(429, {"statusCode": 429}, {"retry-after": "60"})
    _error, checks = failure(lambda: probe(hub, clock, checks=["root_ring"], timeout=10).run())
    msg = checks["root_ring"]["msg"]
    assert msg.startswith("the hub kept answering 429 Too Many Requests until the deadline")
    assert "(retry-after 60 s)" in msg and "ringhub_verify_timeout" in msg


def test_no_request_is_sent_once_the_deadline_passed(clock: Clock) -> None:
    calls: list[str] = []
    client = Client(clock() - 1, 5, lambda *a: calls.append("sent"), clock, clock.sleep)
    answer = client.request("GET", API)
    assert answer.status is None and "deadline" in (answer.error or "") and calls == []


def test_requests_get_at_most_the_time_left(clock: Clock) -> None:
    timeouts: list[float] = []

    def send(method: str, url: str, body: Any, headers: dict[str, str], timeout: float) -> Any:
        timeouts.append(timeout)
        return reply(200, {})

    client = Client(clock() + 3, 10, send, clock, clock.sleep)
    client.request("GET", API)
    clock.now += 2.5
    client.request("GET", API)
    assert timeouts == [3.0, pytest.approx(0.5)]


def test_answer_show_cuts_long_bodies() -> None:
    assert Answer("GET", API, 500, b"x" * 400).show() == "HTTP 500 " + "x" * 300 + "..."
    assert Answer("GET", API, error="timed out").show() == f"no answer from GET {API} (timed out)"


# -- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"checks": ["actor"]}, "the actor check needs web_root"),
        ({"checks": ["join"]}, "the join check needs the actor check in the same run, or actor_key"),
        ({"checks": ["badge"]}, "the badge check needs the join check in the same run, or badge_id"),
        ({"checks": []}, "checks is empty"),
        ({"api_url": "ftp://x"}, "api_url must be an http:// or https:// URL with a host"),
        ({"hub_url": "https://u:secret@hub.example.org"}, "hub_url must not carry credentials"),
        ({"timeout": 0}, "timeout must be more than 0 seconds"),
    ],
)
def test_bad_parameters_are_refused_before_anything(hub: FakeHub, clock: Clock, overrides: dict, expected: str) -> None:
    with pytest.raises(NothingChanged, match=expected) as caught:
        probe(hub, clock, **overrides)
    assert "secret" not in caught.value.msg
    assert hub.sent == []


def test_the_module_entry_point_fills_in_defaults(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    monkeypatch.setattr(_hub_probe, "open_url_sender", lambda validate_certs, use_proxy: hub)
    out = _hub_probe.probe_hub({"api_url": API, "hub_url": HUB}, False)
    assert [c["name"] for c in out.result["checks"]] == list(_hub_probe.DEFAULT_CHECKS)
    assert out.result["passed"] and not out.changed


# -- shared code ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("https://hub.example.org", "https://hub.example.org/users/u1"),
        ("https://hub.example.org:8443/", "https://hub.example.org:8443/users/u1"),
        ("http://127.0.0.1:3100", "http://localhost:3100/users/u1"),
        ("http://[::1]:3100", "http://localhost:3100/users/u1"),
        ("http://localhost", "http://localhost/users/u1"),
        ("http://hub.internal:8080", "https://hub.internal:8080/users/u1"),
    ],
)
def test_profile_endpoints_are_ones_the_hub_accepts(base: str, endpoint: str) -> None:
    assert _did.profile_endpoint(base, "u1") == endpoint
    assert endpoint.startswith(("https://", "http://localhost"))
    doc = _did.build_user_document(base, "u1", b"\x01" * 32)
    assert _did.document_services(doc, "Profile")[0]["serviceEndpoint"] == endpoint


def test_the_actor_dataclass_hides_its_key() -> None:
    key = _ed25519.generate_private_key()
    actor = _hub_probe.Actor("did:web:h:users:x", "x", {}, "/d", "https://h/users/x/did.json", "/k", key)
    assert "key=" not in repr(actor) and "PRIVATE" not in repr(actor)
    assert os.fspath("/k") == actor.public()["key_file"]


def test_a_url_that_does_not_parse_is_not_repeated_in_the_error() -> None:
    """An unparsable URL cannot be masked, so its text (which may hold a password) is never echoed."""
    problem = _hub_probe._url_problem("api_url", "http://ops:s3cr%t@hub.example:99999/")
    assert problem is not None and problem.startswith("api_url does not parse as a URL")
    assert "s3cr" not in problem and "ops" not in problem
    masked = _hub_probe._url_problem("api_url", "http://ops:s3cret@hub.example:3000/")
    assert masked is not None and "must not carry credentials" in masked and "s3cret" not in masked
