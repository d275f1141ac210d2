"""pg_schema_reset's root_ring: the root ring and its roles written inside the reset transaction.

Run as Ansible runs it, against real PostgreSQL. The rows are compared with
what the ring_seed module writes, and a concurrent reader proves the hub never
finds the database without its root ring.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from harness.ansible import run_module
from harness.datagen import seed_hub_data
from harness.pg import apply_migrations_with_psql, schema_dump

OWNER = "did:web:hub.example.test"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# ../shared/RINGHUB_FACTS.md, "The root ring and its roles", written out here on purpose (not imported).
PERMISSIONS = {
    "owner": ["manage_ring", "manage_members", "manage_roles", "manage_posts", "moderate_content",
              "invite_members", "block_users", "delete_ring"],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}  # fmt: skip
CREATE_ACTIONS = ["create ring spool", "create role owner", "create role moderator", "create role member"]

# Every column of the ring and its roles except ids and timestamps (metadata without resetAt),
# whatever columns the migrations gave the tables (the hub's real ones have more than the fixture's).
RING_CONTENT_SQL = """
SELECT (to_jsonb(r) - 'id' - 'createdAt' - 'updatedAt') || jsonb_build_object('metadata', r.metadata - 'resetAt')
FROM {schema}."Ring" r WHERE r.slug = %s
"""
ROLES_CONTENT_SQL = """
SELECT to_jsonb(rr) - 'id' - 'ringId' - 'createdAt'
FROM {schema}."RingRole" rr JOIN {schema}."Ring" r ON r.id = rr."ringId" WHERE r.slug = %s ORDER BY rr.name
"""


def reset_args(db, migrations: Path, schema: str = "public", **extra) -> dict:
    args = {"database_url": db.url(params=f"schema={schema}"), "migrations_dir": str(migrations), "backup": False}
    args.update(extra)
    return args


def old_hub(db, migrations: Path) -> dict[str, int]:
    """The old database: the hub's schema and data, its root ring spool with its three roles included."""
    apply_migrations_with_psql(db, migrations)
    seed_hub_data(db, rings=3, members_per_ring=2)
    return db.row_counts()


def snapshot(db) -> dict:
    comment = db.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db.name,))
    return {"rows": db.row_counts(), "schema": schema_dump(db), "comment": comment[0][0]}


def ring_row(db, slug: str = "spool", schema: str = "public") -> dict:
    cols = ["id", "slug", "name", "description", "visibility", "joinPolicy", "postPolicy", "ownerDid", "parentId",
            "metadata", "createdAt", "updatedAt"]  # fmt: skip
    rows = db.query(
        'SELECT id, slug, name, description, visibility::text, "joinPolicy"::text, "postPolicy"::text, "ownerDid", '
        f'"parentId", metadata, "createdAt", "updatedAt" FROM {schema}."Ring" WHERE slug = %s',
        (slug,),
    )
    assert len(rows) == 1, rows
    return dict(zip(cols, rows[0], strict=True))


def role_rows(db, ring_id: str, schema: str = "public") -> dict[str, tuple]:
    rows = db.query(
        f'SELECT name, permissions, id, "createdAt" FROM {schema}."RingRole" WHERE "ringId" = %s', (ring_id,)
    )
    return {r[0]: r[1:] for r in rows}


def content(db, slug: str = "spool", schema: str = "public") -> tuple:
    ring = db.query(RING_CONTENT_SQL.format(schema=schema), (slug,))
    roles = db.query(ROLES_CONTENT_SQL.format(schema=schema), (slug,))
    return [r[0] for r in ring], [r[0] for r in roles]


def test_root_ring_is_written_in_the_reset_exactly_as_ring_seed_writes_it(pg_server, pg_db, any_migrations) -> None:
    before = old_hub(pg_db, any_migrations)
    res = run_module("pg_schema_reset", reset_args(pg_db, any_migrations, root_ring={"owner_did": OWNER}), verbosity=3)
    assert not res.failed, res.msg
    assert pg_server.password not in res.output

    # The rows, read back: every column as ../shared/RINGHUB_FACTS.md says.
    ring = ring_row(pg_db)
    assert UUID_RE.match(ring["id"])
    assert (ring["name"], ring["description"]) == (
        "The Spool",
        "The root ThreadRing - the origin of all rings in this hub",
    )
    assert (ring["visibility"], ring["joinPolicy"], ring["postPolicy"]) == ("PUBLIC", "OPEN", "OPEN")
    assert ring["ownerDid"] == OWNER and ring["parentId"] is None
    assert set(ring["metadata"]) == {"isRoot", "createdBy", "resetAt"}
    assert ring["metadata"]["isRoot"] is True and ring["metadata"]["createdBy"] == "system"
    reset_at = datetime.datetime.strptime(ring["metadata"]["resetAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert ring["createdAt"] == ring["updatedAt"] == reset_at
    roles = role_rows(pg_db, ring["id"])
    assert {name: perms for name, (perms, *_rest) in roles.items()} == PERMISSIONS
    for _perms, role_id, created in roles.values():
        assert UUID_RE.match(role_id) and created == ring["createdAt"]
    # Only the new ring and its roles: the old rows are gone, the counts of the rest are 0.
    counts = pg_db.row_counts()
    assert counts["Ring"] == 1 and counts["RingRole"] == 3 and before["Ring"] == 3
    assert all(n == 0 for t, n in counts.items() if t not in ("Ring", "RingRole", "_prisma_migrations"))
    # Within the reset transaction: resetAt lies between the migrations' end and now.
    finished = max(a["finished_at"] for a in res.result["applied"])
    assert finished[:19] <= ring["metadata"]["resetAt"][:19]

    # The result: ring_seed's shape, ids of the rows written.
    seeded = res.result["root_ring"]
    assert seeded["ring"]["id"] == ring["id"] and seeded["ring"]["metadata"] == ring["metadata"]
    assert seeded["ring"]["owner_did"] == OWNER and seeded["ring"]["slug"] == "spool"
    assert {r["name"]: (r["id"], r["permissions"]) for r in seeded["roles"]} == {
        name: (role_id, perms) for name, (perms, role_id, _created) in roles.items()
    }
    assert seeded["actions"] == CREATE_ACTIONS and seeded["changed"] is True
    assert [q.split(" (")[0] for q in seeded["queries"]] == ['INSERT INTO "Ring"'] + ['INSERT INTO "RingRole"'] * 3
    assert seeded["extra_roles"] == [] and seeded["other_root_rings"] == [] and seeded["schema"] == "public"
    assert "seeded root ring spool (roles member, moderator, owner)," in res.result["summary"]

    # Identical to what the ring_seed module writes after a plain reset (ids and timestamps aside).
    other = pg_server.create_database()
    try:
        apply_migrations_with_psql(other, any_migrations)
        plain = run_module("pg_schema_reset", reset_args(other, any_migrations))
        assert not plain.failed, plain.msg
        assert "root_ring" not in plain.result and "root ring" not in plain.result["summary"]
        seed = run_module("ring_seed", {"database_url": other.url(), "owner_did": OWNER})
        assert not seed.failed and seed.changed, seed.msg
        assert content(pg_db) == content(other)
        assert content(pg_db)[0] and len(content(pg_db)[1]) == 3
        assert seed.result["actions"] == seeded["actions"]
        assert seed.result["queries"] == seeded["queries"]
        assert set(seed.result) >= set(seeded)
    finally:
        pg_server.drop_database(other.name)

    # ring_seed afterwards finds nothing to do.
    again = run_module("ring_seed", {"database_url": pg_db.url(), "owner_did": OWNER}, check=True)
    assert not again.failed and not again.changed, again.result
    again = run_module("ring_seed", {"database_url": pg_db.url(), "owner_did": OWNER})
    assert not again.failed and not again.changed, again.result
    assert ring_row(pg_db) == ring


@pytest.fixture
def hub_role_db(pg_server):
    """A database owned by a non-superuser role, the hub's own."""
    owner, password = "hub_" + secrets.token_hex(4), "pw-" + secrets.token_hex(10)
    pg_server.create_role(owner, password)
    db = pg_server.create_database(owner=owner)
    try:
        yield db, owner, password
    finally:
        pg_server.drop_database(db.name)
        pg_server.execute(f'DROP ROLE IF EXISTS "{owner}"')


def test_root_ring_as_the_hub_role_in_another_schema_with_the_environment_fallbacks(
    pg_server, hub_role_db, reference_migrations
) -> None:
    """A superuser reset: the seed runs as the tables' owner; INSTANCE_DID and ROOT_RING_SLUG fill root_ring: {}."""
    db, owner, password = hub_role_db
    db.execute(f'CREATE SCHEMA hub AUTHORIZATION "{owner}"')
    apply_migrations_with_psql(db, reference_migrations, schema="hub")
    db.execute(
        f"""DO $$ DECLARE r record; BEGIN
          FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'hub' LOOP
            EXECUTE format('ALTER TABLE hub.%I OWNER TO "{owner}"', r.tablename); END LOOP;
          FOR r IN SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = 'hub' AND t.typtype = 'e' LOOP
            EXECUTE format('ALTER TYPE hub.%I OWNER TO "{owner}"', r.typname); END LOOP;
        END $$"""
    )
    env = {"DATABASE_URL": db.url(params="schema=hub"), "INSTANCE_DID": OWNER, "ROOT_RING_SLUG": "root"}
    res = run_module(
        "pg_schema_reset",
        {"migrations_dir": str(reference_migrations), "backup": False, "expected_environment": "test", "root_ring": {}},
        task_env=env,
    )
    assert not res.failed, res.msg
    assert res.result["migrations_role"] == owner and res.result["role"] == "postgres"
    ring = ring_row(db, "root", "hub")
    assert ring["ownerDid"] == OWNER and ring["metadata"]["isRoot"] is True
    assert {n: r[0] for n, r in role_rows(db, ring["id"], "hub").items()} == PERMISSIONS
    assert db.query('SELECT "themeColor" FROM hub."Ring"') == [("thread-pine",)]
    assert res.result["root_ring"]["environment"] == "test" and res.result["root_ring"]["schema"] == "hub"
    # The hub's own role sees and owns its rows at once.
    conn = pg_server.connect(db.name, user=owner, password=password)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT count(*) FROM hub."RingRole"')
            assert cur.fetchone() == (3,)
    finally:
        conn.close()
    seed = run_module("ring_seed", {"expected_environment": "test"}, task_env=env)
    assert not seed.failed and not seed.changed, seed.result
    assert seed.result["ring"]["id"] == ring["id"] == res.result["root_ring"]["ring"]["id"]


def test_check_mode_tells_what_would_be_seeded_and_changes_nothing(pg_db, fixture_migrations, tmp_path) -> None:
    old_hub(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    args = reset_args(pg_db, fixture_migrations, backup=True, backup_dir=str(tmp_path), expected_environment="staging",
                      root_ring={"owner_did": OWNER, "slug": "root", "join_policy": "CLOSED"})  # fmt: skip
    res = run_module("pg_schema_reset", args, check=True)
    assert not res.failed, res.msg
    seeded = res.result["root_ring"]
    assert seeded["actions"] == ["create ring root", "create role owner", "create role moderator", "create role member"]
    assert seeded["ring"]["id"] is None and all(r["id"] is None for r in seeded["roles"])
    assert seeded["ring"]["join_policy"] == "CLOSED" and seeded["ring"]["owner_did"] == OWNER
    assert seeded["ring"]["metadata"]["isRoot"] is True and seeded["environment"] == "staging"
    assert {r["name"]: r["permissions"] for r in seeded["roles"]} == PERMISSIONS
    assert len(seeded["queries"]) == 4
    assert "would seed root ring root (roles member, moderator, owner)," in res.result["summary"]
    after = snapshot(pg_db)
    assert after == before and list(tmp_path.iterdir()) == []
    assert [r[0] for r in pg_db.query("SELECT slug FROM \"Ring\" WHERE slug = 'root'")] == []


@pytest.mark.parametrize(
    "root_ring, text",
    [
        ({"owner_did": "did:web:"}, "root_ring: owner_did 'did:web:' is not a DID"),
        ({"owner_did": "hub.example.test"}, "root_ring: owner_did 'hub.example.test' is not a DID"),
        ({"owner_did": OWNER, "slug": "The Spool"}, "root_ring: slug 'The Spool' must be lower-case"),
        ({"owner_did": OWNER, "roles": {"owner": ["manage_ring"]}}, "root_ring: roles must include member"),
        ({"owner_did": OWNER, "roles": {"member": "comment"}}, "root_ring: role 'member': permissions must be a list"),
        ({"owner_did": OWNER, "reset_at": "yesterday"}, "root_ring: reset_at 'yesterday' must be an ISO 8601 time"),
        ({"owner_did": OWNER, "visibility": "SECRET"}, "value of visibility must be one of: PUBLIC, UNLISTED, PRIVATE"),
        ({"slug": "spool"}, "missing required arguments: owner_did found in root_ring"),
    ],
)
def test_bad_root_ring_fails_before_the_lock_the_backup_and_the_drop(
    pg_db, fixture_migrations, tmp_path, root_ring, text
) -> None:
    old_hub(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    args = reset_args(pg_db, fixture_migrations, backup=True, backup_dir=str(tmp_path), root_ring=root_ring)
    res = run_module("pg_schema_reset", args)
    assert res.failed
    assert text in res.msg
    if text.startswith("root_ring:"):
        assert res.msg.endswith("nothing was changed")
        # Refused before connecting: no lock was ever taken, no backup written.
        assert "connect" not in res.result["seconds"] and "validate" in res.result["seconds"]
    assert list(tmp_path.iterdir()) == []
    assert snapshot(pg_db) == before


HALF_SCHEMA = """
CREATE TYPE "RingVisibility" AS ENUM ('PUBLIC', 'UNLISTED', 'PRIVATE');
CREATE TABLE "Ring" ("id" TEXT PRIMARY KEY, "slug" TEXT NOT NULL UNIQUE, "name" TEXT NOT NULL);
"""


@pytest.mark.parametrize(
    "sql, missing, text",
    [
        (HALF_SCHEMA, ["RingRole"], 'no "RingRole" table'),
        ("CREATE TABLE other (id int);", ["Ring", "RingRole"], 'no "Ring" and no "RingRole" table'),
    ],
    ids=["no_RingRole", "neither"],
)
def test_missing_ring_tables_roll_the_whole_reset_back(pg_db, fixture_migrations, tmp_path, sql, missing, text) -> None:
    old_hub(pg_db, fixture_migrations)
    before = snapshot(pg_db)
    migration = tmp_path / "only.sql"
    migration.write_text(sql)
    args = {"database_url": pg_db.url(), "sql_files": [str(migration)], "backup": False,
            "expected_environment": "test", "root_ring": {"owner_did": OWNER}}  # fmt: skip
    res = run_module("pg_schema_reset", args)
    assert res.failed
    assert f"root_ring: after the migrations schema 'public' has {text}" in res.msg
    assert "the transaction was rolled back, nothing was changed" in res.msg
    assert res.result["step"] == "seed the root ring" and res.result["missing_tables"] == missing
    # The old database, rows, schema and (unmarked) comment, is exactly as it was.
    after = snapshot(pg_db)
    assert after["rows"] == before["rows"] and after["schema"] == before["schema"] and after["comment"] is None
    assert sum(before["rows"].values()) > 0
    assert pg_db.query("SELECT to_regclass('_prisma_migrations'), to_regclass('other')") == [(None, None)]


OBSERVE_SQL = """
SELECT (SELECT count(*) FROM "Ring" WHERE slug = %(slug)s),
       (SELECT coalesce(array_agg(rr.name::text ORDER BY rr.name), '{}')
          FROM "RingRole" rr JOIN "Ring" r ON r.id = rr."ringId" WHERE r.slug = %(slug)s),
       (SELECT min(id) FROM "Ring" WHERE slug = %(slug)s),
       to_regclass('_prisma_migrations') IS NOT NULL
"""


class Observer(threading.Thread):
    """A reader on its own connection, like the hub serving /trp/rings/spool during the reset.

    Each sample is one statement (one snapshot): ring count, role names, ring id and whether
    the schema has Prisma's history table (the new schema has it, the old one not). A terminated
    connection is reopened, as Prisma does, and the error kept.
    """

    def __init__(self, db, slug: str = "spool") -> None:
        super().__init__(daemon=True)
        self.db, self.slug = db, slug
        self.samples: list[tuple[float, int, list[str], str | None, bool]] = []
        self.errors: list[tuple[str | None, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self.db.connect()
                with conn.cursor() as cur:
                    cur.execute(OBSERVE_SQL, {"slug": self.slug})
                    count, roles, ring_id, history = cur.fetchone()
                self.samples.append((time.monotonic(), count, list(roles), ring_id, history))
            except psycopg2.Error as exc:
                self.errors.append((exc.pgcode, type(exc).__name__))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.005)
        if conn is not None:
            conn.close()


@pytest.mark.parametrize("terminate", [True, False], ids=["terminate_sessions", "keep_sessions"])
def test_a_concurrent_reader_never_finds_the_root_ring_missing(
    pg_db, any_migrations, terminate, record_property
) -> None:
    old_hub(pg_db, any_migrations)
    [(old_id,)] = pg_db.query("SELECT id FROM \"Ring\" WHERE slug = 'spool'")
    observer = Observer(pg_db)
    observer.start()
    try:
        deadline = time.monotonic() + 30
        while len(observer.samples) < 50:
            assert time.monotonic() < deadline and observer.is_alive(), observer.errors
            time.sleep(0.01)
        res = run_module(
            "pg_schema_reset",
            reset_args(pg_db, any_migrations, terminate_sessions=terminate, root_ring={"owner_did": OWNER}),
        )
        done = time.monotonic()
        assert not res.failed, res.msg
        while not [s for s in observer.samples if s[0] > done + 0.2]:
            assert time.monotonic() < done + 30 and observer.is_alive(), observer.errors
            time.sleep(0.01)
    finally:
        observer.stop.set()
        observer.join(30)
    new_id = res.result["root_ring"]["ring"]["id"]
    samples = observer.samples
    old = [s for s in samples if not s[4]]
    new = [s for s in samples if s[4]]
    # Samples before the COMMIT (old schema, old ring) and after it (new schema, new ring), and no other.
    assert len(old) >= 50 and len(new) >= 1
    assert {s[3] for s in old} == {old_id} and {s[3] for s in new} == {new_id}
    assert max(s[0] for s in old) < min(s[0] for s in new)
    # The key property: the ring and its three roles in every single sample.
    assert all(s[1] == 1 and s[2] == ["member", "moderator", "owner"] for s in samples), [
        s for s in samples if s[1] != 1 or len(s[2]) != 3
    ][:5]
    # No "relation does not exist" or any error but the terminated connection (terminate_sessions).
    if terminate:
        assert observer.errors and {code for code, _kind in observer.errors} <= {"57P01", None}
        assert any(s["terminated"] for s in res.result["terminated_sessions"])
    else:
        assert observer.errors == []
    gap = max(b[0] - a[0] for a, b in zip(samples, samples[1:], strict=False))
    record_property("samples", len(samples))
    record_property("longest_gap_between_samples_s", round(gap, 3))
    print(f"{len(old)} samples before, {len(new)} after the COMMIT; longest gap {gap:.3f} s; errors {observer.errors}")
    assert json.dumps(res.result).count(OWNER) >= 1
