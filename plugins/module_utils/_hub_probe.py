# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the ``hub_probe`` module: a running Ring Hub probed as its clients see it (private to the collection).

``probe_hub(params, check_mode, secrets)`` is the module. It runs the requested
checks in their fixed order (``CHECKS``), each one passed, failed or skipped
with a one-line message:

* ``health``: ``GET /health`` and ``GET /health/ready`` (database and redis ``ok``),
  polled until both answer or the deadline passes;
* ``root_ring``: ``GET /trp/rings/<slug>`` and ``GET /trp/root``: the root ring,
  owned by the instance DID;
* ``instance_document``: ``GET <hub_url>/.well-known/did.json``: the document of
  ``did:web:<host>`` whose ``#key-1`` is, byte for byte, the public key of the
  signing key file on disk (``publicKeyMultibase`` and ``publicKeyBase64`` must agree);
* ``actor``: a fresh Ed25519 key (written to ``actor_key``, 0600) and a user DID
  document with a ``Profile`` service under ``<web_root>/users/<id>/did.json``,
  fetched back from the URL the hub resolves it at;
* ``join``: a signed ``POST /trp/join`` (draft-cavage signature over
  ``(request-target) host date digest``, with ``Date`` and ``Digest``): 201, role
  ``member`` and a badge;
* ``badge``: the badge fetched by its full-URL id (percent-encoded) and its JWS
  verified here, against the published key: ``EdDSA``, issuer, subject, ``vc``
  equal to the credential without its proof, not expired; then the hub's own
  ``POST /trp/badges/<id>/verify`` must agree;
* ``actor_badges``: the actor's badges looked up by actor (ids may change at a
  restart) verify against the published key, and the hub agrees;
* ``cleanup``: a signed ``POST /trp/leave``, then the actor's DID document and key
  file are removed.

A check whose prerequisite (``NEEDS``) ran in the same call and did not pass is
skipped. Check mode runs only the read-only probes (``actor``, ``join`` and
``cleanup`` write). A failed check says what was expected, what came back and
what to fix; the module then fails with every failed check's message, and the
results of all checks in ``checks``. Answers 429 are retried after their
``Retry-After`` within the deadline and never count as failures.

The actor's private key lives only in the ``actor_key`` file; it is registered
with Ansible's censor and never returned.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ansible.module_utils import urls

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _httpsig, _jws, _keyfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    RingHubError,
    mask_url,
)

CHECKS = ("health", "root_ring", "instance_document", "actor", "join", "badge", "actor_badges", "cleanup")
WRITING_CHECKS = ("actor", "join", "cleanup")
READ_ONLY_CHECKS = tuple(c for c in CHECKS if c not in WRITING_CHECKS)
# A check is skipped when one of these ran in the same call and did not pass.
NEEDS: dict[str, tuple[str, ...]] = {
    "root_ring": ("health",),
    "join": ("health", "root_ring", "actor"),
    "badge": ("join", "instance_document"),
    "actor_badges": ("health", "instance_document", "actor", "join"),
}
DEFAULT_CHECKS = ("health", "root_ring", "instance_document")
DEFAULT_SLUG = "spool"
DEFAULT_TIMEOUT = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.5
MAX_BODY = 1024 * 1024
ACTOR_PREFIX = "verify-"
ACTOR_DIR_PREFIX = "ringhub-verify-"  # the private directory made for the actor's key when actor_key is unset
ACTOR_KEY_NAME = "actor.pem"
ACTOR_NAME = "Ring Hub verification (threadring.ringhub)"
USER_AGENT = "threadring.ringhub-hub_probe"
DOCUMENT_MODE = 0o644
MIN_RETRY_WAIT = 0.2


def argument_spec() -> dict[str, Any]:
    return dict(
        api_url=dict(type="str", required=True),
        hub_url=dict(type="str", required=True),
        checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(DEFAULT_CHECKS)),
        root_slug=dict(type="str", default=DEFAULT_SLUG),
        instance_did=dict(type="str"),
        key_path=dict(type="path", no_log=False),
        passphrase=dict(type="str", no_log=True),
        web_root=dict(type="path"),
        actor_key=dict(type="path", no_log=False),
        badge_id=dict(type="str"),
        leave=dict(type="bool", default=True),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        request_timeout=dict(type="float", default=DEFAULT_REQUEST_TIMEOUT),
        interval=dict(type="float", default=DEFAULT_INTERVAL),
        validate_certs=dict(type="bool", default=True),
        use_proxy=dict(type="bool", default=True),
    )


MODULE_OPTIONS: dict[str, Any] = dict(libraries=[_ed25519.CRYPTOGRAPHY])


def probe_hub(params: dict[str, Any], check_mode: bool, secrets: set[str] | None = None) -> Outcome:
    """The hub_probe module: the requested checks, in order (see the module docstring)."""
    with_defaults = {name: option.get("default") for name, option in argument_spec().items()}
    with_defaults.update({k: v for k, v in params.items() if v is not None})
    return Probe(with_defaults, check_mode, secrets).run()


# -- HTTP ---------------------------------------------------------------------------------------


class NoAnswer(Exception):
    """The request got no HTTP answer (refused, timed out, TLS, reset)."""


# send(method, url, body, headers, timeout) -> (status, lower-case headers, body); raises NoAnswer
Sender = Callable[..., Any]


@dataclass
class Answer:
    """One HTTP exchange as the checks see it; ``status`` None when no answer came."""

    method: str
    url: str
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    error: str | None = None
    rate_limited: bool = False  # still 429 when the deadline came

    def data(self) -> Any:
        """The JSON body, or None when it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (ValueError, UnicodeDecodeError):
            return None

    def show(self, limit: int = 300) -> str:
        """``HTTP 503 {...}`` (body cut at ``limit``), or ``no answer (...)``."""
        if self.status is None:
            return f"no answer from {self.method} {self.url} ({self.error})"
        text = " ".join(self.body.decode("utf-8", errors="replace").split())
        if len(text) > limit:
            text = text[:limit] + "..."
        return f"HTTP {self.status} {text}".rstrip()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    text = str(getattr(reason, "strerror", None) or reason or type(exc).__name__)
    if isinstance(reason, TimeoutError) or "timed out" in text:
        return "timed out"
    return text.lower() if text.startswith("Connection") else text


def open_url_sender(validate_certs: bool, use_proxy: bool) -> Sender:
    """A ``Sender`` on Ansible's ``open_url`` (proxies, certificates, timeouts as ``uri`` has them)."""

    def send(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Any:
        try:
            response = urls.open_url(
                url,
                data=body,
                headers=headers,
                method=method,
                timeout=timeout,
                validate_certs=validate_certs,
                use_proxy=use_proxy,
                follow_redirects="safe" if method in ("GET", "HEAD") else "none",
                http_agent=USER_AGENT,
                use_netrc=False,
            )
            status = response.getcode()
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            return status, answer_headers, response.read(MAX_BODY)
        except urllib.error.HTTPError as exc:
            try:
                data = exc.read(MAX_BODY)
            except (OSError, http.client.HTTPException):
                data = b""
            return exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, data
        except (urllib.error.URLError, OSError, http.client.HTTPException, urls.ConnectionError, ValueError) as exc:
            raise NoAnswer(_reason(exc)) from None

    return send


def retry_after(headers: dict[str, str], now: float | None = None) -> float:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or an HTTP date), else ``x-ratelimit-reset``, else 1."""
    value = (headers.get("retry-after") or "").strip()
    wait: float | None = None
    if value:
        try:
            wait = float(value)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                wait = email.utils.mktime_tz(parsed) - (now if now is not None else time.time())
    if wait is None:
        try:
            wait = float(headers.get("x-ratelimit-reset") or "")
        except ValueError:
            wait = 1.0
    return max(MIN_RETRY_WAIT, wait)


class Client:
    """HTTP requests under one deadline; a 429 is retried after its ``Retry-After`` while time is left."""

    def __init__(
        self,
        deadline: float,
        request_timeout: float,
        send: Sender,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.send = send
        self.clock = clock
        self.sleep = sleep
        self.requests = 0
        self.rate_limited = 0
        self.waited = 0.0

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        sign: Callable[[], dict[str, str]] | None = None,
        deadline: float | None = None,
    ) -> Answer:
        """One request (signed afresh for every attempt when ``sign`` is given); never raises for HTTP."""
        until = self.deadline if deadline is None else deadline
        while True:
            left = until - self.clock()
            if left <= 0:
                return Answer(method, url, error="the deadline passed before the request could be sent")
            sent = dict(headers or {})
            if sign is not None:
                sent.update(sign())
            try:
                status, answer_headers, data = self.send(method, url, body, sent, min(self.request_timeout, left))
            except NoAnswer as exc:
                self.requests += 1
                return Answer(method, url, error=str(exc))
            self.requests += 1
            if status != 429:
                return Answer(method, url, status, data, answer_headers)
            self.rate_limited += 1
            wait = retry_after(answer_headers)
            if self.clock() + wait >= until:
                return Answer(method, url, status, data, answer_headers, rate_limited=True)
            self.sleep(wait)
            self.waited += wait


# -- checks -------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A check that failed: what is wrong, what was expected, what came back, what to fix."""

    def __init__(self, problem: str, *, expected: str, got: str, fix: str, **details: Any) -> None:
        self.msg = f"{problem}. Expected: {expected}. Got: {got}. Fix: {fix}"
        super().__init__(self.msg)
        self.details = details


@dataclass
class Check:
    name: str
    status: str = "skipped"  # passed, failed, skipped
    msg: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "msg": self.msg, "seconds": self.seconds, **self.details}


@dataclass
class Actor:
    """The test actor: a did:web user whose document is in the web root (no private key in repr)."""

    did: str
    user_id: str
    document: dict[str, Any]
    document_path: str
    document_url: str
    key_file: str
    key: Any = field(repr=False)

    @property
    def key_id(self) -> str:
        return _did.key_id(self.did)

    def public(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "key_id": self.key_id,
            "user_id": self.user_id,
            "document_path": self.document_path,
            "document_url": self.document_url,
            "profile_url": (_did.document_services(self.document, "Profile") or [{}])[0].get("serviceEndpoint"),
            "key_file": self.key_file,
        }


def _url_problem(name: str, url: Any) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return f"{name} is required"
    try:
        parts = urlsplit(url)
        _port = parts.port
    except ValueError:
        # Not repeated: an unparsable URL cannot be masked, and it may hold a password.
        return f"{name} does not parse as a URL: its port is not a number from 0 to 65535, or a '[' has no ']'"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} must be an http:// or https:// URL with a host, got {mask_url(url)!r}"
    if parts.password is not None or parts.username:
        return f"{name} must not carry credentials: {mask_url(url)!r}"
    return None


def _site(url: str) -> str:
    return url.strip().rstrip("/")


class Probe:
    """One run of the module: the checks in order, their results, what changed."""

    def __init__(
        self,
        params: dict[str, Any],
        check_mode: bool,
        secrets: set[str] | None = None,
        *,
        send: Sender | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.params = params
        self.check_mode = check_mode
        self.secrets = secrets if secrets is not None else set()
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self.checks = [name for name in CHECKS if name in (params.get("checks") or [])]
        self._validate()
        self.api = _site(params["api_url"])
        self.site = _site(params["hub_url"])
        self.issuer = _did.instance_did(self.site)
        self.owner = params.get("instance_did") or self.issuer
        self.slug = params.get("root_slug") or DEFAULT_SLUG
        self.interval = max(0.05, float(params.get("interval") or DEFAULT_INTERVAL))
        self.request_timeout = float(params.get("request_timeout") or DEFAULT_REQUEST_TIMEOUT)
        self.timeout = float(params.get("timeout") or DEFAULT_TIMEOUT)
        self.client = Client(
            self.started + self.timeout,
            self.request_timeout,
            send or open_url_sender(bool(params.get("validate_certs", True)), bool(params.get("use_proxy", True))),
            clock,
            sleep,
        )
        self.results: dict[str, Check] = {}
        self.changed = False
        self.warnings: list[str] = []
        self.published: bytes | None = None  # raw #key-1 of the published instance document
        self.document_url = self.site + "/.well-known/did.json"
        self.disk_key: bytes | None = None
        self.actor: Actor | None = None
        self.badge_id: str | None = params.get("badge_id") or None
        self.badge: dict[str, Any] | None = None
        self.joined = False
        self.instance: dict[str, Any] | None = None

    # -- parameters -----------------------------------------------------------------------------
    def _validate(self) -> None:
        p = self.params
        problems = [
            problem
            for problem in (_url_problem("api_url", p.get("api_url")), _url_problem("hub_url", p.get("hub_url")))
            if problem
        ]
        unknown = [c for c in p.get("checks") or [] if c not in CHECKS]
        if unknown:
            problems.append(f"unknown checks {unknown}: choose from {', '.join(CHECKS)}")
        if not self.checks and not unknown:
            problems.append("checks is empty: name at least one of " + ", ".join(CHECKS))
        if "actor" in self.checks and not p.get("web_root"):
            problems.append("the actor check needs web_root (the directory the reverse proxy serves at hub_url)")
        for name in ("join", "actor_badges", "cleanup"):
            if name in self.checks and "actor" not in self.checks and not p.get("actor_key"):
                problems.append(f"the {name} check needs the actor check in the same run, or actor_key")
        if "badge" in self.checks and "join" not in self.checks and not p.get("badge_id"):
            problems.append("the badge check needs the join check in the same run, or badge_id")
        for name in ("timeout", "request_timeout"):
            if p.get(name) is not None and float(p[name]) <= 0:
                problems.append(f"{name} must be more than 0 seconds")
        if problems:
            raise NothingChanged("; ".join(problems))

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> Outcome:
        for name in self.checks:
            check = Check(name)
            self.results[name] = check
            blocked = [n for n in NEEDS.get(name, ()) if n in self.results and self.results[n].status != "passed"]
            if self.check_mode and name in WRITING_CHECKS:
                check.msg = "check mode: only the read-only probes run"
                continue
            if name != "cleanup" and self.clock() >= self.client.deadline:
                check.msg = f"the deadline of the probe (timeout {self.timeout:g} s) passed before this check"
                continue
            if blocked:
                check.msg = "; ".join(
                    f"{n} {'failed' if self.results[n].status == 'failed' else 'was skipped'}" for n in blocked
                )
                continue
            start = self.clock()
            try:
                check.msg, check.details = getattr(self, f"check_{name}")()
                check.status = "passed"
            except CheckFailed as exc:
                check.status, check.msg, check.details = "failed", exc.msg, exc.details
            check.seconds = round(self.clock() - start, 3)
        return self._outcome()

    def _outcome(self) -> Outcome:
        failed = [c for c in self.results.values() if c.status == "failed"]
        result = {
            "passed": not failed,
            "checks": [c.as_dict() for c in self.results.values()],
            "failed_checks": [c.name for c in failed],
            "instance_document": self.instance,
            "actor": self.actor.public() if self.actor else None,
            "badge": self.badge,
            "requests": self.client.requests,
            "rate_limited": {"answers": self.client.rate_limited, "seconds_waited": round(self.client.waited, 3)},
            "seconds": round(self.clock() - self.started, 3),
        }
        if failed:
            text = " / ".join(f"{c.name}: {c.msg}" for c in failed)
            error_type = RingHubError if self.changed else NothingChanged
            error = error_type(f"hub_probe: {len(failed)} of {len(self.results)} checks failed: {text}", **result)
            error.warnings = list(self.warnings)
            raise error
        diff = {
            "before": {"test_actor": None},
            "after": {"test_actor": self.actor.did if self.actor and "cleanup" not in self.results else None},
        }
        return Outcome(changed=self.changed, result=result, warnings=self.warnings, diff=diff)

    # -- helpers --------------------------------------------------------------------------------
    def get(self, url: str, accept: str = "application/json", deadline: float | None = None) -> Answer:
        return self.client.request("GET", url, headers={"Accept": accept}, deadline=deadline)

    def signed_post(self, url: str, payload: dict[str, Any], deadline: float | None = None) -> Answer:
        actor = self.load_actor()
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")

        def sign() -> dict[str, str]:
            return _httpsig.sign_request(
                "POST",
                url,
                body,
                actor.key,
                actor.key_id,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )

        return self.client.request("POST", url, body, sign=sign, deadline=deadline)

    def unexpected(self, answer: Answer, problem: str, expected: str, fix: str) -> CheckFailed:
        """The failure for an answer no case of the check explains (no answer, 429 to the end, other)."""
        if answer.status is None:
            return CheckFailed(
                f"the hub does not answer at {self.api}"
                if answer.url.startswith(self.api)
                else f"{answer.url} does not answer",
                expected=expected,
                got=answer.show(),
                fix="start the hub (docker compose up -d hub-api) and check ringhub_api_url and ringhub_hub_url "
                "(the request waited at most " + f"{self.request_timeout:g} s, the whole check {self.timeout:g} s)",
            )
        if answer.rate_limited:
            return CheckFailed(
                "the hub kept answering 429 Too Many Requests until the deadline",
                expected=expected,
                got=f"{answer.show()} (retry-after {answer.headers.get('retry-after', '?')} s)",
                fix="run again when the hub's rate limit (500 requests a minute per client) allows, or raise the "
                "timeout (ringhub_verify_timeout) beyond the Retry-After",
            )
        return CheckFailed(problem, expected=expected, got=answer.show(), fix=fix)

    def load_actor(self) -> Actor:
        if self.actor is not None:
            return self.actor
        path = self.params.get("actor_key") or ""
        try:
            data = _keyfile.read_bytes(path, "test actor key file")
        except RingHubError as exc:
            raise CheckFailed(
                "the test actor's key file cannot be read",
                expected=f"the key the actor check wrote to {path}",
                got=exc.msg,
                fix="run the actor check first, with the same actor_key",
            ) from None
        if data is None:
            raise CheckFailed(
                "there is no test actor",
                expected=f"its key file {path}",
                got="no such file",
                fix="run the actor check first, with the same actor_key",
            )
        self.secrets.add(data.decode("ascii", errors="replace"))
        try:
            key = _ed25519.load_private_key(data, None, source=f"test actor key file {path}")
        except RingHubError as exc:
            raise CheckFailed(
                "the test actor's key file holds no usable key",
                expected=f"the Ed25519 key the actor check wrote to {path}",
                got=exc.msg,
                fix="run the actor check again with a new actor_key",
            ) from None
        self.actor = self.make_actor(key, path)
        return self.actor

    def make_actor(self, key: Any, key_file: str) -> Actor:
        raw = _ed25519.raw_public_key(key)
        user_id = ACTOR_PREFIX + hashlib.sha256(raw).hexdigest()[:16]
        document = _did.build_user_document(self.site, user_id, raw)
        document["name"] = ACTOR_NAME
        web_root = self.params.get("web_root") or ""
        return Actor(
            did=document["id"],
            user_id=user_id,
            document=document,
            document_path=os.path.join(web_root, "users", user_id, "did.json") if web_root else "",
            document_url=_did.did_web_to_url(document["id"]),
            key_file=key_file,
            key=key,
        )

    def published_key(self) -> bytes:
        """The raw ``#key-1`` of the published instance document (fetched when this run has not)."""
        if self.published is None:
            self.fetch_instance_document()
        return self.published or b""

    # -- 1. health ------------------------------------------------------------------------------
    def check_health(self) -> tuple[str, dict[str, Any]]:
        health_url, ready_url = self.api + "/health", self.api + "/health/ready"
        while True:
            health = self.get(health_url)
            ready = self.get(ready_url) if health.status == 200 else None
            body = (ready.data() if ready else None) or {}
            checks = body.get("checks") if isinstance(body, dict) else None
            good_health = health.status == 200 and (health.data() or {}).get("status") == "ok"
            good_ready = (
                ready is not None
                and ready.status == 200
                and body.get("status") == "ready"
                and isinstance(checks, dict)
                and checks.get("database") == "ok"
                and checks.get("redis") == "ok"
            )
            if good_health and good_ready:
                return (
                    f"{self.api}: /health ok, /health/ready ready (database ok, redis ok)",
                    {"url": self.api, "ready": body},
                )
            rate_limited = health.rate_limited or (ready is not None and ready.rate_limited)
            left = self.client.deadline - self.clock()
            if rate_limited or left <= 0:
                break
            self.sleep(min(self.interval, left))
            if self.clock() >= self.client.deadline:
                break
        expected_ready = 'HTTP 200 {"status":"ready","checks":{"database":"ok","redis":"ok"}}'
        if not good_health:
            raise self.unexpected(
                health,
                f"GET {health_url} does not answer ok",
                f'HTTP 200 {{"status":"ok"}} within {self.timeout:g} s',
                "look at the hub's log (docker compose logs hub-api) and check ringhub_api_url",
            )
        if ready is None or ready.status is None or ready.rate_limited:
            raise self.unexpected(ready or health, f"GET {ready_url} does not answer", expected_ready, "")
        bad = sorted(k for k, v in (checks or {}).items() if v != "ok") if isinstance(checks, dict) else []
        fixes = {
            "database": "the hub cannot reach PostgreSQL: check DATABASE_URL in its .env and the database server",
            "redis": "the hub cannot reach Redis: check REDIS_URL in its .env and the Redis server",
        }
        problem = (
            f"the hub is not ready: its {' and '.join(bad)} check{'s are' if len(bad) > 1 else ' is'} "
            f"{' / '.join(str(checks[k]) for k in bad)} (polled for {self.timeout:g} s)"
            if bad
            else f"GET {ready_url} does not answer ready (polled for {self.timeout:g} s)"
        )
        fix = "; ".join(fixes.get(k, f"the hub's {k} check fails") for k in bad) or (
            "look at the hub's log (docker compose logs hub-api)"
        )
        raise CheckFailed(problem, expected=expected_ready, got=ready.show(), fix=fix)

    # -- 2. root ring ---------------------------------------------------------------------------
    def check_root_ring(self) -> tuple[str, dict[str, Any]]:
        ring_url = f"{self.api}/trp/rings/{quote(self.slug, safe='')}"
        seed_fix = (
            f"create it with the reset (pg_schema_reset with root_ring) or threadring.ringhub.ring_seed "
            f"(slug {self.slug}, owner_did {self.owner})"
        )
        answer = self.get(ring_url)
        expected = f"HTTP 200 with the descriptor of the root ring {self.slug}, owned by {self.owner}"
        if answer.status == 404:
            raise CheckFailed(
                f"the root ring {self.slug} is missing", expected=expected, got=answer.show(), fix=seed_fix
            )
        ring = answer.data()
        if answer.status != 200 or not isinstance(ring, dict):
            raise self.unexpected(answer, f"GET {ring_url} does not answer the ring", expected, "look at the hub's log")
        if ring.get("ownerDid") != self.owner:
            raise CheckFailed(
                f"the root ring {self.slug} is not owned by the instance DID",
                expected=f"ownerDid {self.owner}",
                got=f"ownerDid {ring.get('ownerDid')!r}",
                fix=f"run threadring.ringhub.ring_seed with owner_did {self.owner} (or set ringhub_instance_did to "
                "the DID that owns the hub)",
            )
        if ring.get("parentId") is not None:
            raise CheckFailed(
                f"the ring {self.slug} is not a root ring",
                expected="parentId null",
                got=f"parentId {ring.get('parentId')!r}",
                fix=f"set ringhub_root_slug to the hub's root ring, or recreate {self.slug} with ring_seed",
            )
        metadata = ring.get("metadata") if isinstance(ring.get("metadata"), dict) else {}
        if metadata.get("isRoot") is not True:
            self.warnings.append(f"the metadata of the root ring {self.slug} does not say isRoot: true")
        root_url = f"{self.api}/trp/root"
        root = self.get(root_url)
        root_ring = root.data()
        root_expected = f"HTTP 200 with the ring {self.slug} (id {ring.get('id')})"
        root_fix = (
            f"set ROOT_RING_SLUG={self.slug} in the hub's .env and restart it, or set ringhub_root_slug to the "
            "hub's ROOT_RING_SLUG"
        )
        if root.status == 404:
            raise CheckFailed(
                "GET /trp/root finds no ring: the hub's ROOT_RING_SLUG names a ring that does not exist",
                expected=root_expected,
                got=root.show(),
                fix=root_fix,
            )
        if root.status != 200 or not isinstance(root_ring, dict):
            raise self.unexpected(
                root, f"GET {root_url} does not answer the root ring", root_expected, "look at the hub's log"
            )
        if root_ring.get("id") != ring.get("id"):
            raise CheckFailed(
                f"GET /trp/root answers another ring than {self.slug}",
                expected=root_expected,
                got=f"the ring {root_ring.get('slug')!r} (id {root_ring.get('id')})",
                fix=root_fix,
            )
        summary = {
            k: ring.get(k) for k in ("id", "slug", "name", "ownerDid", "joinPolicy", "visibility", "memberCount")
        }
        return (
            f"/trp/rings/{self.slug} and /trp/root: {self.slug} ({ring.get('name')}) owned by {self.owner}, "
            f"join policy {ring.get('joinPolicy')}, {ring.get('memberCount')} members",
            {"ring": summary},
        )

    # -- 3. instance DID document ---------------------------------------------------------------
    def fetch_instance_document(self) -> dict[str, Any]:
        url = self.document_url
        answer = self.get(url, "application/did+json, application/json")
        expected = f"HTTP 200 with the DID document of {self.issuer}, its #key-1 the badge-signing key"
        publish = (
            "publish it with threadring.ringhub.did_keys (hub_url, instance_document: "
            f"{self.web_root_hint()}/.well-known/did.json) and have the reverse proxy serve that directory at "
            f"{self.site}/"
        )
        if answer.status == 404:
            raise CheckFailed(
                f"no instance DID document is served at {url}", expected=expected, got=answer.show(), fix=publish
            )
        if answer.status != 200:
            raise self.unexpected(answer, f"{url} does not serve the instance DID document", expected, publish)
        try:
            doc = _did.parse_document(answer.body)
        except RingHubError as exc:
            raise CheckFailed(f"{url} serves no DID document", expected=expected, got=exc.msg, fix=publish) from None
        if doc["id"] != self.issuer:
            raise CheckFailed(
                f"the DID document at {url} is not the hub's",
                expected=f"id {self.issuer} (did:web:<hostname of the hub URL>, the issuer of every badge)",
                got=f"id {doc['id']!r}",
                fix=f"republish it with threadring.ringhub.did_keys and hub_url {self.site}",
            )
        kid = _did.key_id(self.issuer)
        try:
            raw = _did.document_public_key(doc, kid, purpose="assertionMethod")
        except RingHubError as exc:
            raise CheckFailed(
                f"the DID document at {url} has no usable {kid}",
                expected=f"{kid} listed in assertionMethod, with publicKeyMultibase and/or publicKeyBase64 of one key",
                got=exc.msg,
                fix=f"republish it with threadring.ringhub.did_keys (hub_url {self.site})",
            ) from None
        self.published = raw
        return doc

    def web_root_hint(self) -> str:
        return self.params.get("web_root") or "<web root>"

    def check_instance_document(self) -> tuple[str, dict[str, Any]]:
        self.fetch_instance_document()
        raw = self.published or b""
        kid = _did.key_id(self.issuer)
        published_mb = _did.multibase_from_raw(raw)
        fingerprint = _ed25519.fingerprint(_ed25519.public_key_from_raw(raw))
        self.instance = {
            "url": self.document_url,
            "did": self.issuer,
            "key_id": kid,
            "public_key_multibase": published_mb,
            "fingerprint": fingerprint,
            "matches_key_file": None,
        }
        key_path = self.params.get("key_path")
        if not key_path:
            return (
                f"{self.document_url}: {kid} is {published_mb} (sha256 {fingerprint[:16]}...); no key_path, "
                "so it was not compared with the key on disk",
                {"document": self.instance},
            )
        state = _keyfile.inspect_key_file(key_path, self.params.get("passphrase") or None)
        if not state["exists"] or state["key"] is None:
            raise CheckFailed(
                "the badge-signing key on disk cannot be read",
                expected=f"the persistent Ed25519 key (PKCS#8 PEM) at {key_path}",
                got=state["msg"] or "no such file",
                fix="set ringhub_key_path to the key the hub signs with (threadring.ringhub.did_keys keeps it)",
                document=self.instance,
            )
        self.disk_key = _ed25519.raw_public_key(state["key"])
        disk_fp = _ed25519.fingerprint(state["key"])
        self.instance["matches_key_file"] = self.disk_key == raw
        if self.disk_key != raw:
            raise CheckFailed(
                "the DID document's key differs from the signing key on disk: the hub restarted with another key, "
                "or the document is stale",
                expected=f"{kid} = {_did.multibase_from_raw(self.disk_key)} (the public key of {key_path}, "
                f"sha256 {disk_fp[:16]}...)",
                got=f"{published_mb} (sha256 {fingerprint[:16]}...) at {self.document_url}",
                fix="republish the document from the key with threadring.ringhub.did_keys (the reset's key step does), "
                "and make sure RING_HUB_PRIVATE_KEY in the hub's .env holds that same key",
                document=self.instance,
            )
        return (
            f"{self.document_url}: {kid} is the public key of {key_path} "
            f"({published_mb}, sha256 {fingerprint[:16]}...)",
            {"document": self.instance},
        )

    # -- 4. test actor --------------------------------------------------------------------------
    def check_actor(self) -> tuple[str, dict[str, Any]]:
        web_root = self.params["web_root"]
        if not os.path.isdir(web_root):
            raise CheckFailed(
                "the web root does not exist",
                expected=f"the directory the reverse proxy serves at {self.site}/",
                got=f"{web_root}: no such directory",
                fix="set ringhub_web_root to that directory",
            )
        key_file = self.params.get("actor_key") or os.path.join(
            tempfile.mkdtemp(prefix=ACTOR_DIR_PREFIX), ACTOR_KEY_NAME
        )
        if os.path.lexists(key_file):
            raise CheckFailed(
                "the test actor's key file exists already: every run needs a fresh actor (the hub answers a re-join "
                "with a badge it never stores)",
                expected=f"no file at {key_file}",
                got="a file",
                fix="give a new actor_key path",
            )
        key = _ed25519.generate_private_key()
        pem = _ed25519.private_pem(key)
        self.secrets.add(pem.decode("ascii"))
        self.secrets.add("".join(pem.decode("ascii").splitlines()[1:-1]))
        actor = self.make_actor(key, key_file)
        self._write_actor(actor, pem)
        self.actor = actor
        self.changed = True
        answer = self.get(actor.document_url, "application/did+json, application/json")
        served = answer.data() if answer.status == 200 else None
        if served != actor.document:
            raise CheckFailed(
                "the test actor's DID document is not served where the hub resolves it",
                expected=f"HTTP 200 from {actor.document_url} with the document written to {actor.document_path}",
                got=answer.show() if served is None else "HTTP 200 with another document",
                fix=f"set ringhub_web_root to the directory the reverse proxy serves at {self.site}/ "
                "(users/<id>/did.json under it must be served)",
                actor=actor.public(),
            )
        return f"{actor.did}: document written to {actor.document_path}, served at {actor.document_url}", {
            "actor": actor.public()
        }

    def _write_actor(self, actor: Actor, pem: bytes) -> None:
        """The key file (0600, never over an existing file) and the DID document (0644, atomically)."""
        directory = os.path.dirname(actor.document_path)
        created: list[str] = []
        try:
            fd = os.open(actor.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            created.append(actor.key_file)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.makedirs(directory, mode=0o755, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".did.json.", dir=directory)
            created.append(temporary)
            with os.fdopen(handle, "wb") as fh:
                fh.write(_did.render_document(actor.document))
            os.chmod(temporary, DOCUMENT_MODE)
            os.replace(temporary, actor.document_path)
        except OSError as exc:
            for leftover in created:
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            key_dir = os.path.dirname(actor.key_file)
            if os.path.basename(key_dir).startswith(ACTOR_DIR_PREFIX):
                with contextlib.suppress(OSError):
                    os.rmdir(key_dir)
            raise CheckFailed(
                "the test actor could not be written",
                expected=f"its key file {actor.key_file} and its DID document {actor.document_path}",
                got=f"{exc.filename or ''}: {exc.strerror}",
                fix="give the user running the verification write access to the web root and actor_key's directory",
            ) from None
        self.changed = True

    # -- 5. join --------------------------------------------------------------------------------
    def check_join(self) -> tuple[str, dict[str, Any]]:
        actor = self.load_actor()
        url = self.api + "/trp/join"
        answer = self.signed_post(url, {"ringSlug": self.slug})
        self.joined = self.changed = True
        data = answer.data() if isinstance(answer.data(), dict) else {}
        expected = f"HTTP 201 with membership {{status ACTIVE, role member}} and badge {{id, url}} for {actor.did}"
        error = f"{data.get('error', '')}: {data.get('message', '')}".strip(": ")
        key_fix = (
            "put the key's value in the hub's .env (threadring.ringhub.did_keys with env_file; the reset's key step "
            "does) and recreate the hub-api container so that it reads it (a plain restart does not re-read .env)"
        )
        if answer.status == 201:
            membership = data.get("membership") if isinstance(data.get("membership"), dict) else {}
            badge = data.get("badge") if isinstance(data.get("badge"), dict) else None
            if membership.get("status") != "ACTIVE":
                raise CheckFailed(
                    f"the join of the root ring {self.slug} is {membership.get('status')!r}, not active",
                    expected=expected,
                    got=answer.show(),
                    fix="the root ring's join policy must be OPEN (ringhub_root_ring_options, ring_seed's join_policy)",
                )
            if membership.get("role") != "member":
                raise CheckFailed(
                    f"the hub made the test actor {membership.get('role')!r}: the root ring {self.slug} has no "
                    "'member' role",
                    expected=expected,
                    got=answer.show(),
                    fix="create the owner, moderator and member roles with threadring.ringhub.ring_seed",
                )
            if not badge or not isinstance(badge.get("id"), str):
                raise CheckFailed(
                    "the hub made the test actor a member but issued no badge: it runs with NODE_ENV=production and an "
                    "ephemeral signing key (RING_HUB_PRIVATE_KEY is unset or unreadable in its environment)",
                    expected=expected,
                    got=answer.show(),
                    fix=key_fix,
                )
            self.badge_id = badge["id"]
            return (
                f"signed POST /trp/join (Date, Digest) as {actor.did}: 201, member of {self.slug}, "
                f"badge {self.badge_id}",
                {"badge_id": self.badge_id, "membership": membership},
            )
        if answer.status == 500:
            raise CheckFailed(
                f"the hub failed to make the test actor a member of {self.slug} (HTTP 500): the root ring has no roles "
                "(the hub answers 500 when there is no 'member' role to give)",
                expected=expected,
                got=answer.show(),
                fix="create the owner, moderator and member roles with threadring.ringhub.ring_seed (or the reset with "
                "root_ring); if they exist, read the hub's log",
            )
        if answer.status == 400 and data.get("error") == "Invalid DID Document":
            raise CheckFailed(
                "the hub refused the test actor's DID document",
                expected=expected,
                got=answer.show(),
                fix=f"the hub needs a Profile service endpoint that is https:// or http://localhost; the document at "
                f"{actor.document_url} has {actor.public()['profile_url']}: serve the hub at an https:// hub_url",
            )
        if answer.status == 400 and data.get("error") == "Invalid DID":
            raise CheckFailed(
                "the hub could not resolve the test actor's DID document",
                expected=expected,
                got=answer.show(),
                fix=f"the hub itself must reach {actor.document_url} (served by the reverse proxy from "
                "ringhub_web_root)",
            )
        if answer.status == 401:
            skew = "clock-skew" in error or "Date" in error
            raise CheckFailed(
                f"the hub did not accept the test actor's HTTP signature ({error or 'no reason given'})",
                expected=expected,
                got=answer.show(),
                fix="the clocks of this host and the hub differ by more than 300 s: synchronise them (NTP)"
                if skew
                else f"the hub could not fetch {actor.document_url} and used a placeholder key: the hub itself (from "
                f"inside its container) must reach {self.site}/users/, which the reverse proxy serves from "
                "ringhub_web_root",
            )
        if answer.status == 403:
            raise CheckFailed(
                f"the hub refuses the join of {self.slug} ({error})",
                expected=expected,
                got=answer.show(),
                fix="the root ring's join policy must be OPEN (ringhub_root_ring_options, ring_seed's join_policy)",
            )
        if answer.status == 404:
            raise CheckFailed(
                f"the hub does not find the root ring {self.slug} for the join",
                expected=expected,
                got=answer.show(),
                fix=f"create it with threadring.ringhub.ring_seed (slug {self.slug})",
            )
        if answer.status == 409:
            raise CheckFailed(
                "the test actor is a member already",
                expected=expected,
                got=answer.show(),
                fix="every run needs a fresh actor: run the actor check with a new actor_key",
            )
        raise self.unexpected(
            answer, f"POST {url} did not make the test actor a member", expected, "read the hub's log"
        )

    # -- 6. badge -------------------------------------------------------------------------------
    def badge_url(self, badge_id: str) -> str:
        return f"{self.api}/trp/badges/{quote(badge_id, safe='')}"

    def check_badge(self) -> tuple[str, dict[str, Any]]:
        badge_id = self.badge_id or ""
        url = self.badge_url(badge_id)
        answer = self.get(url)
        expected = f"HTTP 200 with the credential {badge_id}"
        if answer.status == 404:
            raise CheckFailed(
                f"the hub does not find the badge {badge_id} that its join answered",
                expected=expected,
                got=answer.show(),
                fix="the hub answers a re-join after a leave with a badge it never stores: every run needs a fresh "
                "actor; otherwise read the hub's log (the badge could not be stored)",
            )
        body = answer.data()
        if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("badge"), dict):
            raise self.unexpected(answer, f"GET {url} does not answer the badge", expected, "read the hub's log")
        credential = body["badge"]
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if metadata.get("isRevoked"):
            raise CheckFailed(
                f"the badge {badge_id} is revoked",
                expected="isRevoked false",
                got=answer.show(),
                fix="read the hub's log",
            )
        if credential.get("id") != badge_id:
            raise CheckFailed(
                f"GET {url} answers another credential",
                expected=f"id {badge_id}",
                got=f"id {credential.get('id')!r}",
                fix="read the hub's log",
            )
        payload = self.verify_credential(credential)
        self.hub_agrees(badge_id)
        self.badge = {
            "id": badge_id,
            "issuer": payload.get("iss"),
            "subject": payload.get("sub"),
            "issued": payload.get("iat"),
            "expires": payload.get("exp"),
            "verification_method": (credential.get("proof") or {}).get("verificationMethod"),
        }
        return (
            f"{badge_id}: JWS EdDSA by {self.issuer} for {payload.get('sub')}, verified with {self.issuer}#key-1 of "
            f"{self.document_url}; the hub's own verification agrees",
            {"badge": self.badge},
        )

    def verify_credential(self, credential: dict[str, Any], after_restart: bool = False) -> dict[str, Any]:
        """The credential's JWS verified here against the published ``#key-1``: the JWS payload."""
        badge_id = credential.get("id")
        kid = _did.key_id(self.issuer)
        issuer = (credential.get("issuer") or {}).get("id") if isinstance(credential.get("issuer"), dict) else None
        if issuer != self.issuer:
            raise CheckFailed(
                f"the badge {badge_id} is issued by another DID than the hub's",
                expected=f"issuer.id {self.issuer}",
                got=f"issuer.id {issuer!r}",
                fix=f"RING_HUB_URL in the hub's .env and ringhub_hub_url ({self.site}) must name the same host",
            )
        subject = (
            (credential.get("credentialSubject") or {}).get("id")
            if isinstance(credential.get("credentialSubject"), dict)
            else None
        )
        if self.actor is not None and subject != self.actor.did:
            raise CheckFailed(
                f"the badge {badge_id} is not the test actor's",
                expected=f"credentialSubject.id {self.actor.did}",
                got=f"credentialSubject.id {subject!r}",
                fix="read the hub's log",
            )
        proof = credential.get("proof") if isinstance(credential.get("proof"), dict) else {}
        if proof.get("verificationMethod") != kid:
            raise CheckFailed(
                f"the badge {badge_id} names another verification method",
                expected=f"proof.verificationMethod {kid}",
                got=f"proof.verificationMethod {proof.get('verificationMethod')!r}",
                fix=f"RING_HUB_URL in the hub's .env and ringhub_hub_url ({self.site}) must name the same host",
            )
        jws = proof.get("jws")
        try:
            header, _payload, _signature = _jws.decode_unverified(jws if isinstance(jws, str) else "")
        except RingHubError as exc:
            raise CheckFailed(
                f"the badge {badge_id} carries no readable JWS",
                expected="proof.jws, a compact JWS",
                got=exc.msg,
                fix="read the hub's log",
            ) from None
        if header.get("alg") != "EdDSA":
            raise CheckFailed(
                f"the badge {badge_id} is not signed with EdDSA",
                expected='JWS header {"alg":"EdDSA","typ":"JWT"}',
                got=f"JWS header {json.dumps(header)}",
                fix="read the hub's log",
            )
        published = self.published_key()
        signing_input, _dot, signature_b64 = jws.rpartition(".")
        signature = _jws.b64url_decode(signature_b64)
        if not _ed25519.verify(published, signature, signing_input.encode("ascii")):
            with_disk = self.disk_key is not None and _ed25519.verify(
                self.disk_key, signature, signing_input.encode("ascii")
            )
            when = "after the restart " if after_restart else ""
            if with_disk:
                problem = (
                    f"{when}the badge {badge_id} verifies with the key on disk but not with the published DID "
                    "document: the document is stale"
                )
                fix = "republish the document from the key with threadring.ringhub.did_keys"
            else:
                problem = (
                    f"{when}the badge {badge_id} does not verify with {kid} of the published DID document: the hub "
                    "signs with another key (an ephemeral one when RING_HUB_PRIVATE_KEY is unset or unreadable in "
                    "its environment)"
                )
                fix = (
                    "put the key's value in the hub's .env (threadring.ringhub.did_keys with env_file; the reset's key "
                    "step does) and recreate the hub-api container so that it reads it"
                )
            raise CheckFailed(
                problem,
                expected=f"an Ed25519 signature by {_did.multibase_from_raw(published)} ({self.document_url})",
                got="a signature by another key",
                fix=fix,
            )
        try:
            return _jws.verify_badge(credential, published)
        except RingHubError as exc:
            raise CheckFailed(
                f"the badge {badge_id} does not verify",
                expected="iss = issuer.id, sub = credentialSubject.id, vc = the credential without its proof, "
                "not expired",
                got=exc.msg,
                fix="read the hub's log",
            ) from None

    def hub_agrees(self, badge_id: str, after_restart: bool = False) -> None:
        url = self.badge_url(badge_id) + "/verify"
        answer = self.client.request("POST", url, headers={"Accept": "application/json"})
        body = answer.data() if isinstance(answer.data(), dict) else {}
        expected = f'HTTP 200 {{"isValid":true,"issuer":"{self.issuer}"}}'
        if answer.status == 200 and body.get("isValid") is True and body.get("issuer") == self.issuer:
            return
        if answer.status == 200 and body.get("isValid") is False:
            if after_restart:
                problem = (
                    f"after the restart the hub's own verification rejects the badge {badge_id} it issued before "
                    f"({body.get('error')!r}), although it verifies with the published key: the hub restarted with "
                    "another signing key (an ephemeral one when RING_HUB_PRIVATE_KEY is missing from its environment)"
                )
            else:
                problem = (
                    f"the hub's own verification rejects the badge {badge_id} ({body.get('error')!r}) although it "
                    "verifies with the published key"
                )
            raise CheckFailed(
                problem,
                expected=expected,
                got=answer.show(),
                fix="put the key's value in the hub's .env (threadring.ringhub.did_keys with env_file) and recreate "
                "the hub-api container so that it reads it",
            )
        raise self.unexpected(answer, f"POST {url} does not confirm the badge", expected, "read the hub's log")

    # -- 7. the actor's badges (after a restart) ------------------------------------------------
    def check_actor_badges(self) -> tuple[str, dict[str, Any]]:
        actor = self.load_actor()
        url = f"{self.api}/trp/actors/{quote(actor.did, safe='')}/badges"
        answer = self.get(url)
        body = answer.data()
        expected = f"HTTP 200 listing an active badge of {actor.did} in {self.slug}"
        if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("badges"), list):
            raise self.unexpected(answer, f"GET {url} does not list the actor's badges", expected, "read the hub's log")
        mine = [
            entry["badge"]
            for entry in body["badges"]
            if isinstance(entry, dict)
            and isinstance(entry.get("badge"), dict)
            and not entry.get("isRevoked")
            and (
                (entry.get("ring") or {}).get("slug") == self.slug
                or (entry["badge"].get("threadRing") or {}).get("ringSlug") == self.slug
            )
        ]
        if not mine:
            raise CheckFailed(
                f"the hub lists no active badge of the test actor in {self.slug}",
                expected=expected,
                got=answer.show(),
                fix="read the hub's log (the badges are re-signed at every start)",
            )
        ids = []
        for credential in mine:
            self.verify_credential(credential, after_restart=True)
            self.hub_agrees(str(credential.get("id")), after_restart=True)
            ids.append(str(credential.get("id")))
        known = self.params.get("badge_id")
        changed = bool(known) and known not in ids
        note = " (its id changed)" if changed else ""
        return (
            f"GET /trp/actors/<did>/badges lists {len(ids)} badge(s) of the test actor in {self.slug}{note}; each "
            f"verifies with {self.issuer}#key-1 of {self.document_url}, and the hub's own verification agrees",
            {"badge_ids": ids, "id_changed": changed},
        )

    # -- 8. cleanup -----------------------------------------------------------------------------
    def check_cleanup(self) -> tuple[str, dict[str, Any]]:
        path = self.params.get("actor_key") or ""
        if self.actor is None and not os.path.lexists(path):
            return f"nothing to clean up (no test actor key at {path})", {"left": False, "removed": []}
        actor = self.load_actor()
        deadline = max(self.client.deadline, self.clock() + 2 * self.request_timeout)
        wants_leave = self.joined if "join" in self.results else bool(self.params.get("leave", True))
        left, leave_problem = False, None
        url = self.api + "/trp/leave"
        if wants_leave:
            answer = self.signed_post(url, {"ringSlug": self.slug}, deadline=deadline)
            data = answer.data() if isinstance(answer.data(), dict) else {}
            if answer.status == 200:
                left = self.changed = True
            elif not (answer.status == 404 and data.get("error") == "Not a member"):
                leave_problem = answer
        removed = []
        for target in (actor.document_path, actor.key_file):
            if target and os.path.lexists(target):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                removed.append(target)
                self.changed = True
        if actor.document_path:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(actor.document_path))
        key_dir = os.path.dirname(actor.key_file)
        if os.path.basename(key_dir).startswith(ACTOR_DIR_PREFIX):
            with contextlib.suppress(OSError):
                os.rmdir(key_dir)  # only when empty
        details = {"left": left, "removed": removed}
        if leave_problem is not None:
            raise CheckFailed(
                f"the test actor {actor.did} could not leave {self.slug} (its DID document and key were removed)",
                expected=f"HTTP 200 from the signed POST {url}",
                got=leave_problem.show(),
                fix="nothing urgent: the actor stays a member of the root ring with a valid badge; it can be removed "
                "with the hub's admin tools",
                **details,
            )
        what = f"the test actor left {self.slug}" if left else "the test actor was not a member"
        return f"{what}; removed {', '.join(removed) or 'nothing'}", details
