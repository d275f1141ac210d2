"""The sandbox hub keeps serving while its database sessions and Redis connections are cut.

A reset terminates every other session on the database (``pg_terminate_backend``)
inside its transaction; the real hub (Prisma) reconnects and keeps answering 200.
These tests cut the sandbox's connections from outside, over and over, while
clients hammer it, and check every single answer. Thousands of requests a minute from
one address are far past the hub's rate limit (500 a minute per client), so the hubs
here run with it off (``SANDBOX_RATE_LIMIT=0``): what is tested is the database and
Redis, not the limit (that is ``test_sandbox_hub_fidelity.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sandbox_hub.instance import SandboxHub, http

from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import DEFAULT_ROLES
from harness.ansible import run_module
from harness.pg import FIXTURE_MIGRATIONS, PgServer

TERMINATE_SQL = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name = 'ringhub-sandbox'"
)


@pytest.fixture
def sandbox_hub(sandbox_hub_factory: Callable[..., SandboxHub]) -> SandboxHub:
    """The plugin's ``sandbox_hub`` with the rate limit off (the clients below hammer it)."""
    return sandbox_hub_factory(extra_env={"SANDBOX_RATE_LIMIT": "0"})


@dataclass
class Answer:
    path: str
    status: int
    body: Any
    started: float
    finished: float


class Hammer:
    """Client threads that GET paths of a hub in a loop and keep every answer."""

    def __init__(self, hub: SandboxHub, paths: list[str], threads: int = 3) -> None:
        self.hub = hub
        self.paths = paths
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        n = index
        while not self._stop.is_set():
            path = self.paths[n % len(self.paths)]
            n += 1
            started = time.monotonic()
            try:
                answer = http("GET", self.hub.url + path)
                status, body = answer.status, answer.json
            except OSError as exc:  # a refused or reset HTTP connection is a failure too
                status, body = -1, repr(exc)
            with self._lock:
                self.answers.append(Answer(path, status, body, started, time.monotonic()))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= n, f"only {self.count()} answers in {timeout}s"

    def bad(self, ok: Callable[[Answer], bool]) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if not ok(a)]


def terminate_sandbox_sessions(pg_server: PgServer, dbname: str) -> int:
    """``pg_terminate_backend`` on every session of the sandbox on ``dbname``; how many were ended."""
    return int(pg_server.query(TERMINATE_SQL, (dbname,))[0][0])


def ok_200(answer: Answer) -> bool:
    return answer.status == 200


def test_terminated_sessions_never_show_as_errors(sandbox_hub: SandboxHub, pg_server: PgServer) -> None:
    """pg_terminate_backend of every session of the hub, 40 times (each round is what one reset
    does), while 3 clients read: all of 900+ answers are 200."""
    hub = sandbox_hub
    terminated = 0
    rounds = 0
    with Hammer(hub, ["/trp/rings/spool", "/health/ready", "/trp/root"]) as hammer:
        hammer.wait_for(20)
        while hammer.count() < 900 or rounds < 40:
            ended = terminate_sandbox_sessions(pg_server, hub.db.name)
            terminated += ended
            rounds += 1 if ended else 0
            time.sleep(0.1)
    bad = hammer.bad(ok_200)
    assert not bad, f"{len(bad)} of {len(hammer.answers)} answers were not 200, first: {bad[:3]}"
    assert rounds >= 40 and terminated >= 40  # the sessions really were cut under the clients
    assert all(a.body["slug"] == "spool" for a in hammer.answers if a.path == "/trp/rings/spool")
    ready = [a.body for a in hammer.answers if a.path == "/health/ready"]
    assert ready and all(b["checks"] == {"database": "ok", "redis": "ok"} for b in ready)
    log = hub.log_text()
    assert "closed by the server" in log or "reading again" in log  # the reconnect path was taken
    assert " 500 " not in log and "Traceback" not in log


def test_a_signed_join_after_its_sessions_were_terminated(sandbox_hub: SandboxHub, pg_server: PgServer) -> None:
    """A write request on a pool whose every connection was terminated runs on new connections."""
    hub = sandbox_hub
    warm = hub.new_actor()
    assert hub.join(warm).status == 201  # the pool now holds connections
    for _round in range(5):
        assert terminate_sandbox_sessions(pg_server, hub.db.name) >= 1
        actor = hub.new_actor()
        answer = hub.join(actor)
        assert answer.status == 201, answer.json
        badge_id = answer.json["badge"]["id"]
        assert hub.verify(badge_id).json["isValid"] is True
    members = hub.db.query('SELECT count(*) FROM "Membership" WHERE "status" = \'ACTIVE\'')[0][0]
    assert members == 6  # each join written exactly once


def test_real_errors_are_not_hidden(sandbox_hub: SandboxHub, pg_server: PgServer) -> None:
    """A missing table is an SQL error on a live connection: 500 at once, never retried into success."""
    hub = sandbox_hub
    hub.db.execute('ALTER TABLE "Ring" RENAME TO "RingGone"')
    try:
        answer = hub.get("/trp/rings/spool")
        assert answer.status == 500 and answer.json["message"] == "Database error"
        assert "UndefinedTable" in hub.log_text()
    finally:
        hub.db.execute('ALTER TABLE "RingGone" RENAME TO "Ring"')
    assert hub.get("/trp/rings/spool").status == 200
    pg_server.execute(f'ALTER DATABASE "{hub.db.name}" ALLOW_CONNECTIONS false')
    try:
        terminate_sandbox_sessions(pg_server, hub.db.name)
        ready = hub.get("/health/ready")  # no new connection is possible: not ready, not a hidden 200
        assert (ready.status, ready.json["status"], ready.json["checks"]["database"]) == (
            503,
            "not_ready",
            "unhealthy",
        )
        assert hub.get("/trp/rings/spool").status == 500
    finally:
        pg_server.execute(f'ALTER DATABASE "{hub.db.name}" ALLOW_CONNECTIONS true')
    assert hub.get("/health/ready").status == 200


def test_redis_connection_resets_flushall_and_restart(sandbox_hub: SandboxHub) -> None:
    """CLIENT KILL, FLUSHALL and a Redis restart under load: readiness stays 200, joins still resolve DIDs."""
    hub = sandbox_hub
    admin = hub.redis.client()
    actor = hub.new_actor()
    assert hub.join(actor).status == 201
    assert admin.exists(f"did:{actor.did}") == 1  # the DID document is cached in Redis
    killed = 0
    with Hammer(hub, ["/health/ready", "/trp/rings/spool"]) as hammer:
        hammer.wait_for(10)
        for _round in range(40):
            killed += int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            if _round % 10 == 0:
                admin.flushall()
            time.sleep(0.01)
        hammer.wait_for(hammer.count() + 30)
    bad = hammer.bad(ok_200)
    assert not bad, f"{len(bad)} of {len(hammer.answers)} answers were not 200, first: {bad[:3]}"
    assert killed >= 10
    assert admin.exists(f"did:{actor.did}") == 0  # flushed

    second = hub.new_actor()
    assert hub.join(second).status == 201  # the DID is fetched again and cached again
    assert admin.exists(f"did:{second.did}") == 1

    hub.redis.stop()
    assert hub.get("/health/ready").json["checks"]["redis"] == "unhealthy"
    hub.redis.start()  # same port, empty data
    ready = hub.get("/health/ready")  # the first request after the restart
    assert (ready.status, ready.json["checks"]) == (200, {"database": "ok", "redis": "ok"})


# -- a reset that holds its locks while requests arrive ----------------------------------------


def _reset_by_hand(hub: SandboxHub, *, seed_root: bool, hold: float) -> dict[str, float]:
    """What pg_schema_reset does, by hand: in one transaction terminate the hub's sessions, drop
    and recreate the schema, apply the fixture migrations, optionally seed the root ring, then
    hold every lock ``hold`` seconds before COMMIT. Returns the moments of commit and seed."""
    conn = hub.db.connect(autocommit=False)
    times: dict[str, float] = {}
    try:
        with conn.cursor() as cur:
            cur.execute(TERMINATE_SQL, (hub.db.name,))
            cur.execute("DROP SCHEMA public CASCADE")
            cur.execute("CREATE SCHEMA public")
            cur.execute("SET LOCAL search_path TO public")
            for migration in sorted(Path(FIXTURE_MIGRATIONS).glob("*/migration.sql")):
                cur.execute(migration.read_text())
            if seed_root:
                _insert_root(cur, hub.issuer_did)
            times["locked"] = time.monotonic()
            cur.execute("SELECT pg_sleep(%s)", (hold,))
        times["commit_sent"] = time.monotonic()
        conn.commit()
        times["committed"] = time.monotonic()
        if not seed_root:
            time.sleep(0.3)  # requests see the ring really missing for a while
            with conn.cursor() as cur:
                _insert_root(cur, hub.issuer_did)
            conn.commit()
        times["seeded"] = time.monotonic()
    finally:
        conn.close()
    return times


def _insert_root(cur: Any, owner: str) -> None:
    import json
    import uuid

    ring_id = str(uuid.uuid4())
    cur.execute(
        'INSERT INTO "Ring" ("id", "slug", "name", "updatedAt", "visibility", "joinPolicy", "postPolicy", '
        "\"ownerDid\", \"metadata\") VALUES (%s, 'spool', 'The Spool', now(), 'PUBLIC', 'OPEN', 'OPEN', %s, "
        "'{\"isRoot\": true}')",
        (ring_id, owner),
    )
    for role, permissions in DEFAULT_ROLES.items():
        cur.execute(
            'INSERT INTO "RingRole" ("id", "ringId", "name", "permissions") VALUES (%s, %s, %s, %s)',
            (str(uuid.uuid4()), ring_id, role, json.dumps(permissions)),
        )


def test_requests_during_a_locking_reset_wait_and_find_the_new_root(sandbox_hub: SandboxHub) -> None:
    """The root ring is seeded in the reset's transaction: requests wait on the locks, then see
    the new ring; not one answer is a 404 or a 5xx."""
    hub = sandbox_hub
    old_id = hub.get("/trp/rings/spool").json["id"]
    with Hammer(hub, ["/trp/rings/spool", "/health/ready"]) as hammer:
        hammer.wait_for(10)
        times = _reset_by_hand(hub, seed_root=True, hold=1.0)
        hammer.wait_for(hammer.count() + 30)
    bad = hammer.bad(ok_200)
    assert not bad, f"{len(bad)} of {len(hammer.answers)} answers were not 200, first: {bad[:3]}"
    rings = [a for a in hammer.answers if a.path == "/trp/rings/spool"]
    waited = [a for a in rings if a.started < times["commit_sent"] and a.finished >= times["committed"]]
    assert waited, "no request was held by the reset's locks"
    assert {a.body["id"] for a in waited} - {old_id}, "requests that waited must see the new ring"
    assert rings[-1].body["id"] != old_id and all(a.body["id"] != old_id for a in rings if a.started > times["seeded"])


def test_a_404_only_while_the_root_ring_is_really_missing(sandbox_hub: SandboxHub) -> None:
    """The root ring seeded after the COMMIT: requests that waited on the locks answer 404 (the
    ring is really missing then), and 200 again once it is seeded; never a 5xx."""
    hub = sandbox_hub
    with Hammer(hub, ["/trp/rings/spool"]) as hammer:
        hammer.wait_for(10)
        times = _reset_by_hand(hub, seed_root=False, hold=0.8)
        hammer.wait_for(hammer.count() + 30)
    answers = hammer.answers
    assert all(a.status in (200, 404) for a in answers), [a for a in answers if a.status not in (200, 404)][:3]
    missing = [a for a in answers if a.status == 404]
    assert missing, "the window without a root ring was not seen"
    for answer in missing:  # a 404 only between the reset's COMMIT and the seed
        assert answer.finished >= times["commit_sent"] and answer.started <= times["seeded"], answer
        assert answer.body["message"] == "Ring not found"
    assert answers[-1].status == 200


def test_the_real_pg_schema_reset_under_load(sandbox_hub: SandboxHub, tmp_path: Path) -> None:
    """threadring.ringhub.pg_schema_reset (root ring in the transaction, sessions terminated) while
    clients read: every answer is 200 and the ring the clients see afterwards is the new one."""
    hub = sandbox_hub
    old_id = hub.get("/trp/rings/spool").json["id"]
    with Hammer(hub, ["/trp/rings/spool", "/health/ready"]) as hammer:
        hammer.wait_for(10)
        run = run_module(
            "pg_schema_reset",
            {
                "database_url": hub.database_url,
                "migrations_dir": str(FIXTURE_MIGRATIONS),
                "backup": False,
                "terminate_sessions": True,
                "root_ring": {"owner_did": hub.issuer_did},
            },
        )
        assert not run.failed, run.msg
        hammer.wait_for(hammer.count() + 30)
    assert [s for s in run.result["terminated_sessions"] if s["application"] == "ringhub-sandbox"]
    bad = hammer.bad(ok_200)
    assert not bad, f"{len(bad)} of {len(hammer.answers)} answers were not 200, first: {bad[:3]}"
    assert hub.get("/trp/rings/spool").json["id"] != old_id
