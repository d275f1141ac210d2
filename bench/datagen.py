"""The benchmarks' data: a hub database and a Redis of a given size, generated fast.

    .venv/bin/python bench/datagen.py                      # 1,000,000 rows and keys: how long the generation takes
    .venv/bin/python bench/datagen.py --rows 100000 --keys 100000
    .venv/bin/python bench/datagen.py --quick              # 20,000 of each

As a library (bench/reset_playbook.py, bench/memory.py)::

    from datagen import fill_database, fill_redis, migrations_source
    fill_database(conn, 1_000_000)     # rows over Ring, RingRole, Membership, Badge, PostRef, AuditLog
    fill_redis(client, 1_000_000)      # keys: cached DID documents, sessions, rate limits, job data

The schema is the hub's own: ``migrations_source()`` is the hub's real Prisma migrations
(``/work/shared/ringhub-reference/prisma/migrations``, or ``$RINGHUB_REFERENCE_MIGRATIONS``) when they
are on this machine, else the collection's fixture schema ``tests/fixtures/prisma/migrations``; the
deployment is brought up with it and the reset applies it. The generator writes only columns both
schemas have, in one transaction, server-side (``INSERT ... SELECT FROM generate_series``: no row
crosses the wire), with the indexes and foreign keys of the migrations in place, then ``ANALYZE``.

Rows of ``rows`` (a root ring ``spool`` with its roles must exist; it is the parent of the others):

- rings: ``rows / 20000`` (at least 1), each with the hub's three roles;
- memberships 30 % (ACTIVE, role member, spread over the rings, one actor DID each);
- badges 30 % (one per membership: a Verifiable Credential in ``badgeData`` as the hub stores it);
- post refs 20 % (ACCEPTED, one URI each);
- audit log rows: the rest (``member.joined`` with a small JSON ``metadata``).

Redis keys of ``keys``, pipelined (``MSET`` in batches, ``HSET``/``SET EX`` in pipelines of 10,000):
50 % ``did:doc:<n>`` strings (a DID document's JSON, about 300 bytes), 25 % ``session:<n>`` hashes,
15 % ``ratelimit:<did>:<action>`` counters with a TTL of a day, 10 % ``cache:ring:<n>`` strings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MIGRATIONS = Path(
    os.environ.get("RINGHUB_REFERENCE_MIGRATIONS", "/work/shared/ringhub-reference/prisma/migrations")
)
FIXTURE_MIGRATIONS = REPO / "tests" / "fixtures" / "prisma" / "migrations"
ROOT_SLUG = "spool"
ROLES = {
    "owner": ["manage_ring", "manage_members", "manage_roles", "manage_posts", "moderate_content",
              "invite_members", "block_users", "delete_ring"],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}  # fmt: skip
REDIS_BATCH = 10_000


def migrations_source() -> Path:
    """The hub's real migrations when present (a test input, read in place), else the fixture schema."""
    if (REFERENCE_MIGRATIONS / "migration_lock.toml").is_file():
        return REFERENCE_MIGRATIONS
    return FIXTURE_MIGRATIONS


def split(rows: int) -> dict[str, int]:
    """How ``rows`` rows are spread over the tables (the sum is ``rows``)."""
    rings = max(1, rows // 20_000)
    memberships = rows * 3 // 10
    badges = memberships
    post_refs = rows * 2 // 10
    audit = max(0, rows - rings * 4 - memberships - badges - post_refs)
    return {"Ring": rings, "RingRole": rings * 3, "Membership": memberships, "Badge": badges,
            "PostRef": post_refs, "AuditLog": audit}  # fmt: skip


def fill_database(conn: Any, rows: int, *, schema: str = "public", hub_url: str = "https://hub.example.test") -> dict:
    """``rows`` rows over the hub's tables (see the module's docstring), in one transaction, then ANALYZE.

    ``conn`` is a psycopg2 connection as the hub's role; the root ring ``spool`` must exist.
    Returns the rows written per table and the seconds it took.
    """
    n = split(rows)
    host = hub_url.split("://", 1)[-1].split("/", 1)[0]
    owner = f"did:web:{host}"
    started = time.perf_counter()
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f'SET LOCAL search_path TO "{schema}"')
            cur.execute('SELECT id FROM "Ring" WHERE slug = %s', (ROOT_SLUG,))
            found = cur.fetchone()
            if found is None:
                raise RuntimeError(f"fill_database: no root ring {ROOT_SLUG!r} in schema {schema!r}")
            root = found[0]
            cur.execute(
                'INSERT INTO "Ring" (id, slug, name, description, "updatedAt", visibility, "joinPolicy", '
                '"postPolicy", "ownerDid", "parentId", metadata) '
                "SELECT md5('ring' || g)::uuid::text, 'ring-' || g, 'Ring ' || g, 'About ring ' || g, now(), "
                "'PUBLIC', 'OPEN', 'OPEN', %(owner)s, %(root)s, "
                "jsonb_build_object('topic', (ARRAY['art', 'code', 'zines'])[1 + g %% 3]) "
                "FROM generate_series(1, %(rings)s) g",
                {"owner": owner, "root": root, "rings": n["Ring"]},
            )
            cur.execute(
                'INSERT INTO "RingRole" (id, "ringId", name, permissions) '
                "SELECT md5('role' || g || r.name)::uuid::text, md5('ring' || g)::uuid::text, r.name, r.perms::jsonb "
                "FROM generate_series(1, %(rings)s) g, "
                "(VALUES ('owner', %(owner_p)s), ('moderator', %(mod_p)s), ('member', %(member_p)s)) r(name, perms)",
                {"rings": n["Ring"], "owner_p": json.dumps(ROLES["owner"]), "mod_p": json.dumps(ROLES["moderator"]),
                 "member_p": json.dumps(ROLES["member"])},
            )  # fmt: skip
            # The rings other than the root one, numbered from 0, with their member role.
            cur.execute(
                "CREATE TEMP TABLE _bench_rings ON COMMIT DROP AS "
                "SELECT (row_number() OVER (ORDER BY r.id)) - 1 AS n, r.id, rr.id AS role "
                'FROM "Ring" r JOIN "RingRole" rr ON rr."ringId" = r.id AND rr.name = %s WHERE r.slug <> %s',
                ("member", ROOT_SLUG),
            )
            cur.execute(
                'INSERT INTO "Membership" (id, "ringId", "actorDid", "roleId", status, "joinedAt", "updatedAt") '
                "SELECT md5('m' || g)::uuid::text, r.id, 'did:web:u' || g || '.example.test', r.role, 'ACTIVE', "
                "now() - (g %% 400) * interval '1 day', now() "
                "FROM generate_series(1, %(m)s) g JOIN _bench_rings r ON r.n = g %% %(rings)s",
                {"m": n["Membership"], "rings": n["Ring"]},
            )
            cur.execute(
                'INSERT INTO "Badge" (id, "membershipId", "badgeData", "issuedAt") '
                "SELECT %(hub)s || '/badges/' || md5('b' || g), md5('m' || g)::uuid::text, "
                "jsonb_build_object("
                "'@context', jsonb_build_array('https://www.w3.org/2018/credentials/v1'), "
                "'type', jsonb_build_array('VerifiableCredential', 'ThreadRingBadge'), "
                "'issuer', %(owner)s, 'issuanceDate', to_char(now(), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                "'credentialSubject', jsonb_build_object('id', 'did:web:u' || g || '.example.test', "
                "'ring', 'ring-' || (1 + g %% %(rings)s)), "
                "'proof', jsonb_build_object('type', 'Ed25519Signature2020', 'verificationMethod', "
                "%(owner)s || '#key-1', 'proofValue', 'z' || md5('p' || g) || md5('q' || g))), now() "
                "FROM generate_series(1, %(b)s) g",
                {"hub": hub_url, "owner": owner, "rings": n["Ring"], "b": n["Badge"]},
            )
            cur.execute(
                'INSERT INTO "PostRef" (id, "ringId", "actorDid", uri, digest, "submittedBy", status) '
                "SELECT md5('p' || g)::uuid::text, r.id, 'did:web:u' || g || '.example.test', "
                "'https://u' || g || '.example.test/posts/' || g, 'sha256-' || md5('d' || g), "
                "'did:web:u' || g || '.example.test', 'ACCEPTED' "
                "FROM generate_series(1, %(p)s) g JOIN _bench_rings r ON r.n = g %% %(rings)s",
                {"p": n["PostRef"], "rings": n["Ring"]},
            )
            cur.execute(
                'INSERT INTO "AuditLog" (id, "ringId", action, "actorDid", "targetDid", metadata) '
                "SELECT md5('a' || g)::uuid::text, r.id, 'member.joined', 'did:web:u' || g || '.example.test', NULL, "
                "jsonb_build_object('n', g, 'note', repeat('x', 20 + g %% 40)) "
                "FROM generate_series(1, %(a)s) g JOIN _bench_rings r ON r.n = g %% %(rings)s",
                {"a": n["AuditLog"], "rings": n["Ring"]},
            )
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{schema}"')
            cur.execute("ANALYZE")
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = autocommit
    return {"rows": n, "total": sum(n.values()), "seconds": round(time.perf_counter() - started, 3)}


def split_keys(keys: int) -> dict[str, int]:
    did = keys // 2
    sessions = keys // 4
    limits = keys * 15 // 100
    return {"did:doc": did, "session": sessions, "ratelimit": limits, "cache:ring": keys - did - sessions - limits}


def fill_redis(client: Any, keys: int, *, flush: bool = True) -> dict:
    """``keys`` keys (see the module's docstring) through pipelines; ``client`` a redis-py client."""
    n = split_keys(keys)
    started = time.perf_counter()
    if flush:
        client.flushall()
    doc = json.dumps({"@context": ["https://www.w3.org/ns/did/v1"], "id": "did:web:u{n}.example.test",
                      "verificationMethod": [{"id": "#key-1", "type": "Ed25519VerificationKey2020",
                                              "publicKeyMultibase": "z6Mk" + "x" * 44}]})  # fmt: skip
    pipe = client.pipeline(transaction=False)
    queued = 0

    def flush_if_full(force: bool = False) -> None:
        nonlocal queued
        if queued >= REDIS_BATCH or (force and queued):
            pipe.execute()
            queued = 0

    for start in range(0, n["did:doc"], 100):
        stop = min(start + 100, n["did:doc"])
        pipe.mset({f"did:doc:{i}": doc.replace("{n}", str(i)) for i in range(start, stop)})
        queued += stop - start
        flush_if_full()
    for i in range(n["session"]):
        pipe.hset(f"session:{i:08x}", mapping={"did": f"did:web:u{i}.example.test", "created": "1764547200"})
        queued += 1
        flush_if_full()
    for i in range(n["ratelimit"]):
        pipe.set(f"ratelimit:did:web:u{i}.example.test:join", i % 10, ex=86400)
        queued += 1
        flush_if_full()
    for start in range(0, n["cache:ring"], 100):
        stop = min(start + 100, n["cache:ring"])
        pipe.mset({f"cache:ring:{i}": "x" * 64 for i in range(start, stop)})
        queued += stop - start
        flush_if_full()
    flush_if_full(force=True)
    return {"keys": n, "total": client.dbsize(), "seconds": round(time.perf_counter() - started, 3)}


def resp(*parts: str | bytes | int) -> bytes:
    """One command in the Redis protocol."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_protocol(keys: int) -> bytes:
    """The same keys as ``fill_redis``, as a command stream for ``redis-cli --pipe``."""
    n = split_keys(keys)
    doc = json.dumps({"@context": ["https://www.w3.org/ns/did/v1"], "id": "did:web:u{n}.example.test",
                      "verificationMethod": [{"id": "#key-1", "type": "Ed25519VerificationKey2020",
                                              "publicKeyMultibase": "z6Mk" + "x" * 44}]})  # fmt: skip
    chunks: list[bytes] = []
    for start in range(0, n["did:doc"], 100):
        args: list[str] = []
        for i in range(start, min(start + 100, n["did:doc"])):
            args += [f"did:doc:{i}", doc.replace("{n}", str(i))]
        chunks.append(resp("MSET", *args))
    for i in range(n["session"]):
        chunks.append(resp("HSET", f"session:{i:08x}", "did", f"did:web:u{i}.example.test", "created", "1764547200"))
    for i in range(n["ratelimit"]):
        chunks.append(resp("SET", f"ratelimit:did:web:u{i}.example.test:join", i % 10, "EX", 86400))
    for start in range(0, n["cache:ring"], 100):
        args = []
        for i in range(start, min(start + 100, n["cache:ring"])):
            args += [f"cache:ring:{i}", "x" * 64]
        chunks.append(resp("MSET", *args))
    return b"".join(chunks)


class RedisFiller:
    """``fill_redis`` through ``redis-cli --pipe`` (the stream built once per size): a second or two for 1M keys."""

    def __init__(self, host: str, port: int, password: str | None, redis_cli: str = "redis-cli") -> None:
        self.cmd = [redis_cli, "-h", host, "-p", str(port), "--pipe"]
        self.env = dict(os.environ, **({"REDISCLI_AUTH": password} if password else {}))
        self.streams: dict[int, bytes] = {}

    def fill(self, keys: int) -> float:
        stream = self.streams.get(keys)
        if stream is None:
            stream = self.streams[keys] = resp("FLUSHALL") + redis_protocol(keys)
        started = time.perf_counter()
        proc = subprocess.run(self.cmd, input=stream, env=self.env, capture_output=True, check=False)
        if proc.returncode != 0 or b"errors: 0" not in proc.stdout:
            raise RuntimeError(f"redis-cli --pipe failed: {proc.stdout[-500:]!r} {proc.stderr[-500:]!r}")
        return time.perf_counter() - started


class DatabaseCopy:
    """The filled database kept as a template and copied back before every run (``CREATE DATABASE ...
    TEMPLATE ... STRATEGY FILE_COPY``): seconds instead of a minute of inserts and index builds at 1M rows.

    ``save()`` copies the deployment's database (its sessions terminated) to ``<db>_bench_<rows>``;
    ``restore()`` drops the database (WITH FORCE) and creates it again from that copy, with its owner and
    its comment (the environment marker, which a copy does not carry); ``drop()`` removes the copies.
    """

    def __init__(self, dep: Any) -> None:
        self.dep = dep
        self.db = dep.state["database"]
        self.copies: set[str] = set()

    def _admin(self) -> Any:
        import psycopg2

        db = self.db
        conn = psycopg2.connect(host=db["host"], port=db["port"], user=db["superuser"],
                                password=db["superuser_password"], dbname="postgres")  # fmt: skip
        conn.autocommit = True
        return conn

    def _name(self, rows: int) -> str:
        return f"{self.db['name']}_bench_{rows}"

    def save(self, rows: int) -> float:
        started = time.perf_counter()
        name, target = self._name(rows), self.db["name"]
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (target,))  # fmt: skip
                self.comment = cur.fetchone()[0]
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (target,))
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{target}" STRATEGY FILE_COPY')
        finally:
            conn.close()
        self.copies.add(name)
        return time.perf_counter() - started

    def restore(self, rows: int) -> float:
        started = time.perf_counter()
        name, target, owner = self._name(rows), self.db["name"], self.db["role"]
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{target}" TEMPLATE "{name}" OWNER "{owner}" STRATEGY FILE_COPY')
                if self.comment is not None:
                    cur.execute(f'COMMENT ON DATABASE "{target}" IS %s', (self.comment,))
        finally:
            conn.close()
        return time.perf_counter() - started

    def drop(self) -> None:
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                for name in sorted(self.copies):
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            conn.close()
        self.copies.clear()


class HubData:
    """A deployment's data of a given size: generated once per size, then copied back before every run."""

    def __init__(self, dep: Any) -> None:
        self.dep = dep
        redis = dep.state["redis"]
        self.redis = RedisFiller("127.0.0.1", redis["port"], redis["password"])
        self.copy = DatabaseCopy(dep)
        self.generated: dict[int, dict[str, Any]] = {}

    def fill(self, rows: int) -> dict[str, float]:
        """``rows`` rows over the hub's tables and ``rows`` Redis keys; seconds of each part."""
        out: dict[str, float] = {}
        if rows not in self.generated:
            conn = self.dep.connect()
            try:
                self.generated[rows] = fill_database(conn, rows, hub_url=self.dep.hub_url)
            finally:
                conn.close()
            out["generate_s"] = self.generated[rows]["seconds"]
            out["save_s"] = self.copy.save(rows)
        else:
            out["copy_s"] = self.copy.restore(rows)
        out["redis_s"] = self.redis.fill(rows)
        return out

    def close(self) -> None:
        self.copy.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 rows and keys")
    opts = parser.parse_args(argv)
    rows, keys = (20_000, 20_000) if opts.quick else (opts.rows, opts.keys)
    sys.path.insert(0, str(REPO / "tests"))
    from harness import deployment as deployment_mod

    migrations = migrations_source()
    workdir = Path(tempfile.mkdtemp(prefix="ringhub-bench-datagen-"))
    os.chmod(workdir, 0o711)
    dep = deployment_mod.up(workdir / "deployment", hubs=1, migrations=migrations)
    try:
        conn = dep.connect()
        try:
            db = fill_database(conn, rows, hub_url=dep.hub_url)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(current_database())")
                size = cur.fetchone()[0]
        finally:
            conn.close()
        with dep.redis_client() as client:
            kv = fill_redis(client, keys)
            memory = client.info("memory")["used_memory"]
    finally:
        dep.down()
        if workdir.exists() and not any(workdir.iterdir()):
            workdir.rmdir()
    print(f"schema: {migrations}")
    print(f"database: {db['total']} rows in {db['seconds']} s ({db['rows']}), {size / 1e6:.0f} MB")
    print(f"redis: {kv['total']} keys in {kv['seconds']} s ({kv['keys']}), {memory / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
