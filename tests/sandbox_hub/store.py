"""Storage of the sandbox hub (test and demo tool): the hub's PostgreSQL tables and a Redis cache.

SQL touches only columns that both the hub's real migrations and the project's
fixture schema have; the membership's profile columns are written where the schema
has them (``Database.columns``). Every statement runs in autocommit, one after the
other, as Prisma runs the hub's route handlers (no transaction around a join).

Lost connections are survived the way Prisma survives them (a reset terminates
every other session on the database with ``pg_terminate_backend``, a restart of
PostgreSQL drops them all): a pooled connection whose server side has gone is
noticed before use (its socket is readable while it should be idle) and replaced;
a statement that fails because its connection died (``OperationalError`` /
``InterfaceError`` with the connection closed, or SQLSTATE 57P01 admin_shutdown,
57P02 crash_shutdown, 57P05 idle_session_timeout) is run again once on a new
connection when it only reads; a write that fails that way raises
``ConnectionLost``, and the server runs the whole request again once when that
request has written nothing yet. Every other error is raised as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sandbox_hub.config import database_spec

LOG = logging.getLogger("sandbox_hub.store")
DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# The server ended the session: terminated (pg_terminate_backend, fast shutdown), crashed, idle timeout.
LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P05"})
_READ_RE = re.compile(r"^\s*(SELECT|SHOW|WITH\s[^;]*\sSELECT\s)", re.I | re.S)
_WRITE_WORDS_RE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)


class ConnectionLost(psycopg2.OperationalError):
    """A statement that may have written failed because its connection died (never retried here)."""


def connection_lost(exc: BaseException, conn: Any = None) -> bool:
    """True when ``exc`` says the connection is gone (not an SQL error on a live connection)."""
    if not isinstance(exc, DB_ERRORS):
        return False
    if isinstance(exc, ConnectionLost):
        return True
    if conn is not None and conn.closed:
        return True
    return getattr(exc, "pgcode", None) in LOST_SQLSTATES


def is_read_only(sql: str) -> bool:
    """A statement that writes nothing (``SELECT``/``SHOW``, no data-modifying ``WITH``)."""
    return bool(_READ_RE.match(sql)) and not _WRITE_WORDS_RE.search(sql)


def _stale(conn: Any) -> bool:
    """True when a pooled connection cannot be used: closed, not idle, or its socket has data
    (a terminated backend sends its FATAL message and closes; an idle session gets nothing)."""
    if conn.closed:
        return True
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return True
    try:
        readable, _w, _x = select.select([conn], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _why(exc: BaseException | None) -> str:
    """A short reason for the log: SQLSTATE or the error class (never the statement or its values)."""
    code = getattr(exc, "pgcode", None)
    return f"SQLSTATE {code}" if code else type(exc).__name__


def utcnow() -> datetime:
    """Naive UTC with millisecond precision (``TIMESTAMP(3)`` without time zone)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime | None) -> str | None:
    """``Date.toISOString()`` of a naive UTC timestamp: ``2026-01-02T03:04:05.678Z``."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def new_id() -> str:
    return str(uuid.uuid4())


def _options_for_schema(schema: str) -> str:
    ident = '"' + schema.replace('"', '""') + '"'
    return "-c search_path=" + ident.replace("\\", "\\\\").replace(" ", "\\ ")


class Database:
    """A small thread-safe pool of psycopg2 connections, ``search_path`` set to the URL's schema."""

    def __init__(self, database_url: str, max_connections: int = 8) -> None:
        spec = database_spec(database_url)
        kwargs, self.schema = spec.libpq_kwargs(), spec.schema
        kwargs.setdefault("connect_timeout", "5")
        extra = kwargs.pop("options", "")
        kwargs["options"] = (extra + " " + _options_for_schema(self.schema)).strip()
        kwargs.setdefault("application_name", "ringhub-sandbox")
        self._kwargs = kwargs
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._local = threading.local()
        self.reconnects = 0

    # -- the request's unit of work ------------------------------------------------------
    def begin_request(self) -> None:
        """Start counting the writes of one request (per thread)."""
        self._local.writes = 0

    @property
    def writes_in_request(self) -> int:
        """Statements of the current request that may have written (0: the request may run again)."""
        return getattr(self._local, "writes", 0)

    def _count_write(self) -> None:
        self._local.writes = self.writes_in_request + 1

    # -- connections ---------------------------------------------------------------------
    def _connect(self) -> Any:
        conn = psycopg2.connect(**self._kwargs)
        conn.autocommit = True
        return conn

    def _discard_idle(self) -> None:
        """Close every idle connection: when one was terminated, its siblings were too
        (a reset ends every session at once), even if their sockets do not show it yet."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def _checkout(self, fresh: bool = False) -> Any:
        if fresh:
            return self._connect()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _stale(conn):
                return conn
            self.reconnects += 1
            LOG.info("database connection closed by the server; opening a new one")
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def connection(self, fresh: bool = False) -> Iterator[Any]:
        """A pooled connection, checked before use (``fresh``: a new one); a broken one is
        closed instead of returned."""
        self._slots.acquire()
        conn = None
        try:
            conn = self._checkout(fresh)
            yield conn
        except DB_ERRORS:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            raise
        finally:
            if conn is not None and not conn.closed:
                with self._lock:
                    self._idle.append(conn)
            self._slots.release()

    def _run(self, sql: str, params: Any, fetch: bool) -> Any:
        """Run one statement in autocommit.

        When its connection dies under it, a read runs once more on a new connection.
        A write is never run again here: it raises ``ConnectionLost``, and counts as a
        write of the request unless the server itself said it ended the session
        (SQLSTATE 57P01/57P02/57P05: the statement was rolled back with it).
        """
        read_only = is_read_only(sql)
        for attempt in (1, 2):
            lost: BaseException | None = None
            with self.connection(fresh=attempt > 1) as conn:
                try:
                    if fetch:
                        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                            cur.execute(sql, params)
                            result: Any = [dict(r) for r in cur.fetchall()] if cur.description else []
                    else:
                        with conn.cursor() as cur:
                            cur.execute(sql, params)
                            result = cur.rowcount
                except DB_ERRORS as exc:
                    if not connection_lost(exc, conn):
                        raise
                    lost = exc
                    with contextlib.suppress(Exception):
                        conn.close()  # not returned to the pool
                else:
                    if not read_only:
                        self._count_write()
                    return result
            self.reconnects += 1
            self._discard_idle()
            if read_only and attempt == 1:
                LOG.info("database connection lost (%s); reading again on a new connection", _why(lost))
                continue
            if not read_only and getattr(lost, "pgcode", None) not in LOST_SQLSTATES:
                self._count_write()  # the server may have committed it before the connection went
            raise ConnectionLost(f"database connection lost ({_why(lost)})") from lost
        raise AssertionError("unreachable")

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self._run(sql, params, fetch=True)

    def one(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Any = None) -> int:
        return self._run(sql, params, fetch=False)

    def ping(self) -> None:
        self.query("SELECT 1 AS ok")

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                with contextlib.suppress(Exception):
                    conn.close()
            self._idle.clear()

    # -- rings -------------------------------------------------------------------------
    def ring_by_slug(self, slug: str) -> dict[str, Any] | None:
        return self.one('SELECT * FROM "Ring" WHERE "slug" = %s', (slug,))

    def ring_by_id(self, ring_id: str) -> dict[str, Any] | None:
        return self.one('SELECT "id", "slug", "name", "parentId" FROM "Ring" WHERE "id" = %s', (ring_id,))

    def ring_counts(self, ring_id: str) -> tuple[int, int]:
        row = self.one(
            'SELECT (SELECT count(*) FROM "Membership" WHERE "ringId" = %s AND "status" = \'ACTIVE\') AS members, '
            '(SELECT count(*) FROM "PostRef" WHERE "ringId" = %s AND "status" = \'ACCEPTED\') AS posts',
            (ring_id, ring_id),
        )
        assert row is not None
        return int(row["members"]), int(row["posts"])

    def ring_children(self, ring_id: str) -> list[dict[str, Any]]:
        return self.query(
            'SELECT r."id", r."slug", r."name", (SELECT count(*) FROM "Membership" m WHERE m."ringId" = r."id" '
            'AND m."status" = \'ACTIVE\') AS "memberCount" FROM "Ring" r WHERE r."parentId" = %s '
            'ORDER BY r."createdAt"',
            (ring_id,),
        )

    def ring_roles(self, ring_id: str) -> list[dict[str, Any]]:
        return self.query(
            'SELECT "id", "name", "permissions" FROM "RingRole" WHERE "ringId" = %s ORDER BY "name"', (ring_id,)
        )

    def actor_blocked(self, actor_did: str, ring_id: str) -> bool:
        try:
            row = self.one('SELECT 1 AS b FROM "Block" WHERE "ringId" = %s AND "targetDid" = %s', (ring_id, actor_did))
        except psycopg2.errors.UndefinedTable:
            return False
        return row is not None

    def pending_invitation(self, actor_did: str, ring_id: str) -> dict[str, Any] | None:
        try:
            return self.one(
                'SELECT "id" FROM "Invitation" WHERE "ringId" = %s AND "inviteeDid" = %s AND "status" = \'PENDING\' '
                'AND "expiresAt" > %s LIMIT 1',
                (ring_id, actor_did, utcnow()),
            )
        except psycopg2.errors.UndefinedTable:
            return None

    def accept_invitation(self, invitation_id: str) -> None:
        self.execute('UPDATE "Invitation" SET "status" = \'ACCEPTED\' WHERE "id" = %s', (invitation_id,))

    # -- schema ------------------------------------------------------------------------
    def columns(self, table: str) -> frozenset[str]:
        """The columns ``table`` has in the schema the hub uses (read each time: a reset may change it)."""
        rows = self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s",
            (table,),
        )
        return frozenset(r["column_name"] for r in rows)

    # -- actors and their keys ---------------------------------------------------------
    def actor(self, did: str) -> dict[str, Any] | None:
        return self.one(
            'SELECT "did", "name", "verified", "trusted", "instanceUrl", "metadata" FROM "Actor" WHERE "did" = %s',
            (did,),
        )

    def register_actor(self, did: str, public_key: str | None, resolves: Callable[[], bool]) -> bool:
        """The hub's ``getActor``/``registerActor``: an existing actor only gets ``lastSeenAt``; a new
        one is a ``USER`` with no name and no ``instanceUrl``, verified when ``resolves()`` (its DID
        document resolves). Returns ``verified``."""
        now = utcnow()
        row = self.one('UPDATE "Actor" SET "lastSeenAt" = %s WHERE "did" = %s RETURNING "verified"', (now, did))
        if row is None:
            row = self.one(
                'INSERT INTO "Actor" ("id", "did", "type", "publicKey", "verified", "trusted", "discoveredAt", '
                "\"lastSeenAt\") VALUES (%s, %s, 'USER', %s, %s, false, %s, %s) "
                'ON CONFLICT ("did") DO UPDATE SET "lastSeenAt" = EXCLUDED."lastSeenAt" RETURNING "verified"',
                (new_id(), did, public_key, bool(resolves()), now, now),
            )
        return bool(row and row["verified"])

    def store_actor_profile(self, did: str, profile: dict[str, Any], fetched_at: str) -> None:
        """What ``resolveActorProfile`` keeps in ``Actor``: the name, and the profile in ``metadata``
        (no handle); a new actor also gets the profile URL as ``instanceUrl``, verified."""
        now = utcnow()
        metadata = json.dumps(
            {
                "actorName": profile["actorName"],
                "avatarUrl": profile["avatarUrl"],
                "profileUrl": profile["profileUrl"],
                "instanceDomain": profile["instanceDomain"],
                "profileLastFetched": fetched_at,
            }
        )
        self.execute(
            'INSERT INTO "Actor" ("id", "did", "name", "type", "instanceUrl", "metadata", "verified", "trusted", '
            '"discoveredAt", "lastSeenAt") VALUES (%s, %s, %s, \'USER\', %s, %s::jsonb, true, false, %s, %s) '
            'ON CONFLICT ("did") DO UPDATE SET "name" = EXCLUDED."name", "metadata" = EXCLUDED."metadata", '
            '"lastSeenAt" = EXCLUDED."lastSeenAt"',
            (new_id(), did, profile["actorName"], profile["profileUrl"], metadata, now, now),
        )

    def cached_key(self, key_id: str) -> dict[str, Any] | None:
        return self.one(
            'SELECT "publicKey", "actorDid", "expiresAt" FROM "HttpSignature" WHERE "keyId" = %s', (key_id,)
        )

    def store_key(self, key_id: str, public_key_b64: str, actor_did: str, expires_at: datetime) -> None:
        """The hub's ``httpSignature.upsert``: a new key untrusted, no ``lastUsed``; a known one gets
        the key, a new expiry and ``lastUsed`` (its ``actorDid`` stays)."""
        now = utcnow()
        self.execute(
            'INSERT INTO "HttpSignature" ("id", "keyId", "publicKey", "actorDid", "createdAt", "updatedAt", '
            '"trusted", "expiresAt") VALUES (%s, %s, %s, %s, %s, %s, false, %s) ON CONFLICT ("keyId") DO UPDATE SET '
            '"publicKey" = EXCLUDED."publicKey", "updatedAt" = EXCLUDED."updatedAt", "lastUsed" = %s, '
            '"expiresAt" = EXCLUDED."expiresAt"',
            (new_id(), key_id, public_key_b64, actor_did, now, now, expires_at, now),
        )

    def touch_key(self, key_id: str) -> None:
        self.execute('UPDATE "HttpSignature" SET "lastUsed" = %s WHERE "keyId" = %s', (utcnow(), key_id))

    # -- memberships -------------------------------------------------------------------
    def membership(self, ring_id: str, actor_did: str) -> dict[str, Any] | None:
        return self.one(
            'SELECT m.*, r."name" AS "roleName" FROM "Membership" m LEFT JOIN "RingRole" r ON r."id" = m."roleId" '
            'WHERE m."ringId" = %s AND m."actorDid" = %s',
            (ring_id, actor_did),
        )

    def upsert_membership(
        self,
        ring_id: str,
        actor_did: str,
        role_id: str,
        status: str,
        message: str | None,
        metadata: Any,
        profile: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The join's ``membership.upsert`` (unique on ring + actor). A new row gets ``message`` and
        ``metadata`` as sent; an existing one (a re-join) gets ``message`` or NULL, ``metadata`` or
        ``{}``, ``joinedAt`` now (ACTIVE) or NULL. ``profile`` fields are written in both cases,
        those the schema has columns for."""
        now = utcnow()
        joined = now if status == "ACTIVE" else None
        fields = dict(profile or {})
        present = self.columns("Membership") if fields else frozenset()
        extra = [name for name in fields if name in present]
        skipped = sorted(set(fields) - set(extra))
        if skipped:
            LOG.info("the Membership table has no %s column(s): not written", ", ".join(skipped))
        columns = '"id", "ringId", "actorDid", "roleId", "status", "joinedAt", "updatedAt", "applicationMessage", '
        columns += '"metadata"' + "".join(f', "{name}"' for name in extra)
        values = '%s, %s, %s, %s, %s::"MembershipStatus", %s, %s, %s, %s::jsonb' + ", %s" * len(extra)
        updates = "".join(f', "{name}" = EXCLUDED."{name}"' for name in extra)
        row = self.one(
            f'INSERT INTO "Membership" ({columns}) VALUES ({values}) '
            'ON CONFLICT ("ringId", "actorDid") DO UPDATE SET "status" = EXCLUDED."status", '
            '"roleId" = EXCLUDED."roleId", "joinedAt" = EXCLUDED."joinedAt", "updatedAt" = EXCLUDED."updatedAt", '
            '"applicationMessage" = %s, "metadata" = %s::jsonb' + updates + " "
            'RETURNING "id", "joinedAt", "status"',
            (
                new_id(),
                ring_id,
                actor_did,
                role_id,
                status,
                joined,
                now,
                message,
                json.dumps(metadata) if metadata is not None else None,
                *(fields[name] for name in extra),
                message or None,
                json.dumps(metadata or {}),
            ),
        )
        assert row is not None
        return row

    def set_membership_badge(self, membership_id: str, badge_id: str) -> None:
        self.execute(
            'UPDATE "Membership" SET "badgeId" = %s, "updatedAt" = %s WHERE "id" = %s',
            (badge_id, utcnow(), membership_id),
        )

    def leave(self, membership_id: str, reason: str | None) -> None:
        now = utcnow()
        self.execute(
            'UPDATE "Membership" SET "status" = \'REVOKED\', "leftAt" = %s, "leaveReason" = %s, "updatedAt" = %s '
            'WHERE "id" = %s',
            (now, reason, now, membership_id),
        )

    def active_member_count_except(self, ring_id: str, actor_did: str) -> int:
        row = self.one(
            'SELECT count(*) AS n FROM "Membership" WHERE "ringId" = %s AND "actorDid" <> %s AND "status" = \'ACTIVE\'',
            (ring_id, actor_did),
        )
        return int(row["n"]) if row else 0

    # -- badges ------------------------------------------------------------------------
    def insert_badge(self, badge_id: str, membership_id: str, badge: dict[str, Any]) -> None:
        self.execute(
            'INSERT INTO "Badge" ("id", "membershipId", "badgeData", "issuedAt") VALUES (%s, %s, %s::jsonb, %s)',
            (badge_id, membership_id, json.dumps(badge), utcnow()),
        )

    def revoke_badge(self, badge_id: str, reason: str) -> None:
        self.execute(
            'UPDATE "Badge" SET "revokedAt" = %s, "revocationReason" = %s WHERE "id" = %s', (utcnow(), reason, badge_id)
        )

    def badge(self, badge_id: str) -> dict[str, Any] | None:
        return self.one(
            'SELECT b.*, r."slug" AS "ringSlug", r."name" AS "ringName", rr."name" AS "roleName" FROM "Badge" b '
            'JOIN "Membership" m ON m."id" = b."membershipId" JOIN "Ring" r ON r."id" = m."ringId" '
            'LEFT JOIN "RingRole" rr ON rr."id" = m."roleId" WHERE b."id" = %s',
            (badge_id,),
        )

    def actor_badges(self, did: str, status: str, limit: int, offset: int) -> list[dict[str, Any]]:
        where = ['m."actorDid" = %s']
        if status == "active":
            where += ['b."revokedAt" IS NULL', "m.\"status\" = 'ACTIVE'"]
        elif status == "revoked":
            where.append('b."revokedAt" IS NOT NULL')
        return self.query(
            'SELECT b.*, r."slug" AS "ringSlug", r."name" AS "ringName", r."visibility" AS "ringVisibility", '
            'rr."name" AS "roleName", m."joinedAt" AS "memberJoinedAt", m."status" AS "memberStatus" FROM "Badge" b '
            'JOIN "Membership" m ON m."id" = b."membershipId" JOIN "Ring" r ON r."id" = m."ringId" '
            'LEFT JOIN "RingRole" rr ON rr."id" = m."roleId" WHERE ' + " AND ".join(where) + " "
            'ORDER BY b."issuedAt" DESC LIMIT %s OFFSET %s',
            (did, limit, offset),
        )

    def all_badges(self) -> list[dict[str, Any]]:
        return self.query('SELECT "id", "membershipId", "badgeData" FROM "Badge" ORDER BY "issuedAt"')

    def replace_badge(self, old_id: str, new_id: str, membership_id: str, badge: dict[str, Any]) -> bool:
        """The hub's start-up re-sign of one badge, in one transaction: insert the copy
        under ``new_id``, point the membership at it, delete the old row.

        Returns False (and changes nothing) when the database refuses, as it does
        while ``Badge.membershipId`` is unique and the old row still exists.
        """
        with self.connection() as conn:
            conn.autocommit = False
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        'INSERT INTO "Badge" ("id", "membershipId", "badgeData", "issuedAt") '
                        "VALUES (%s, %s, %s::jsonb, %s)",
                        (new_id, membership_id, json.dumps(badge), utcnow()),
                    )
                    cur.execute('UPDATE "Membership" SET "badgeId" = %s WHERE "id" = %s', (new_id, membership_id))
                    cur.execute('DELETE FROM "Badge" WHERE "id" = %s', (old_id,))
                conn.commit()
                return True
            except psycopg2.IntegrityError:
                conn.rollback()
                return False
            finally:
                if not conn.closed:
                    conn.autocommit = True

    def audit(self, ring_id: str, action: str, actor_did: str, metadata: dict[str, Any]) -> None:
        clean = {k: v for k, v in metadata.items() if v is not None}
        self.execute(
            'INSERT INTO "AuditLog" ("id", "ringId", "action", "actorDid", "metadata", "timestamp") '
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
            (new_id(), ring_id, action, actor_did, json.dumps(clean), utcnow()),
        )


class Cache:
    """The Redis cache (DID documents), as the hub keeps it: best effort, errors only logged.

    A connection the server closed (``CLIENT KILL``, a Redis restart, an idle timeout)
    is reopened and the command sent once more (redis-py's retry, on connection and
    timeout errors); a connection closed again while it is being set up (redis-py sends
    ``CLIENT SETINFO`` outside its retry) is tried afresh, up to ``ATTEMPTS`` times in
    all, as ioredis (the hub's client) reconnects and replays its queued commands.
    ``FLUSHALL`` only empties the cache, so the next lookup fetches again.
    """

    ATTEMPTS = 3

    def __init__(self, redis_url: str, timeout: float = 2.0) -> None:
        self.client = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def _call(self, command: Callable[[], Any]) -> Any:
        """Run one command, again on a fresh connection when the connection dies while it is made."""
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                return command()
            except redis.ConnectionError:
                if attempt == self.ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def ping(self) -> None:
        self._call(self.client.ping)

    def get_json(self, key: str) -> Any:
        try:
            raw = self._call(lambda: self.client.get(key))
        except redis.RedisError as exc:
            LOG.warning("redis get failed: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def delete(self, key: str) -> None:
        try:
            self._call(lambda: self.client.delete(key))
        except redis.RedisError as exc:
            LOG.warning("redis del failed: %s", type(exc).__name__)

    def set_json(self, key: str, value: Any, ttl: int) -> None:
        if ttl <= 0:
            return
        try:
            self._call(lambda: self.client.set(key, json.dumps(value), ex=ttl))
        except redis.RedisError as exc:
            LOG.warning("redis set failed: %s", type(exc).__name__)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
