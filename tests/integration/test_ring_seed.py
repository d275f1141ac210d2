"""ring_seed run as Ansible runs it: the four-step idempotence test and every column in SQL."""

from __future__ import annotations

import datetime
import json
import re

from harness.ansible import run_module
from harness.pg import apply_migrations_with_psql

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
OWNER = "did:web:hub.example.test"
PERMISSIONS = {
    "owner": ["manage_ring", "manage_members", "manage_roles", "manage_posts", "moderate_content",
              "invite_members", "block_users", "delete_ring"],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}  # fmt: skip
RING_SQL = (
    'SELECT id, slug, name, description, visibility::text, "joinPolicy"::text, "postPolicy"::text, "ownerDid", '
    '"parentId", metadata, "createdAt", "updatedAt" FROM {schema}."Ring"'
)


def ring_rows(db, schema: str = "public") -> list[dict]:
    cols = ["id", "slug", "name", "description", "visibility", "joinPolicy", "postPolicy", "ownerDid", "parentId",
            "metadata", "createdAt", "updatedAt"]  # fmt: skip
    return [dict(zip(cols, row, strict=True)) for row in db.query(RING_SQL.format(schema=schema))]


def role_rows(db, schema: str = "public") -> dict[str, tuple]:
    rows = db.query(f'SELECT name, permissions, id, "ringId", "createdAt" FROM {schema}."RingRole"')
    return {r[0]: r[1:] for r in rows}


def test_four_step_idempotence_and_every_column(pg_server, pg_db, fixture_migrations) -> None:
    apply_migrations_with_psql(pg_db, fixture_migrations)
    args = {"database_url": pg_db.url(params="schema=public&connection_limit=5"), "owner_did": OWNER}

    check1 = run_module("ring_seed", args, check=True, diff=True)
    assert not check1.failed, check1.msg
    assert check1.changed and check1.result["ring"]["id"] is None
    assert check1.result["diff"]["before"] == {"ring": {}, "roles": {}}
    assert check1.result["diff"]["after"]["roles"] == PERMISSIONS
    assert ring_rows(pg_db) == [] and role_rows(pg_db) == {}

    run1 = run_module("ring_seed", args, diff=True, verbosity=3)
    assert not run1.failed, run1.msg
    assert run1.changed
    assert run1.result["actions"] == ["create ring spool", "create role owner", "create role moderator",
                                      "create role member"]  # fmt: skip
    assert pg_server.password not in run1.output

    check2 = run_module("ring_seed", args, check=True, diff=True)
    assert not check2.failed and not check2.changed, check2.result
    assert check2.result["diff"]["before"] == check2.result["diff"]["after"]

    run2 = run_module("ring_seed", args)
    assert not run2.failed and not run2.changed, run2.result
    assert run2.result["actions"] == [] and run2.result["queries"] == []

    # The independent look: every column, as the hub's reset wrote them.
    [ring] = ring_rows(pg_db)
    assert UUID_RE.match(ring["id"]) and ring["id"] == run1.result["ring"]["id"] == run2.result["ring"]["id"]
    assert ring["slug"] == "spool" and ring["name"] == "The Spool"
    assert ring["description"] == "The root ThreadRing - the origin of all rings in this hub"
    assert (ring["visibility"], ring["joinPolicy"], ring["postPolicy"]) == ("PUBLIC", "OPEN", "OPEN")
    assert ring["ownerDid"] == OWNER and ring["parentId"] is None
    assert set(ring["metadata"]) == {"isRoot", "createdBy", "resetAt"}
    assert ring["metadata"]["isRoot"] is True and ring["metadata"]["createdBy"] == "system"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ring["metadata"]["resetAt"])
    # createdAt/updatedAt are UTC and set together; resetAt is the same instant.
    assert ring["createdAt"] == ring["updatedAt"]
    reset_at = datetime.datetime.strptime(ring["metadata"]["resetAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert reset_at == ring["updatedAt"]
    roles = role_rows(pg_db)
    assert {name: perms for name, (perms, *_rest) in roles.items()} == PERMISSIONS
    for _perms, role_id, ring_id, created in roles.values():
        assert UUID_RE.match(role_id) and ring_id == ring["id"] and created == ring["createdAt"]
    assert pg_db.query('SELECT jsonb_typeof(permissions) FROM "RingRole" GROUP BY 1') == [("array",)]


def test_drift_is_corrected_with_diff_and_reset_at_is_kept(pg_db, fixture_migrations) -> None:
    apply_migrations_with_psql(pg_db, fixture_migrations)
    args = {"database_url": pg_db.url(), "owner_did": OWNER}
    assert not run_module("ring_seed", args).failed
    [original] = ring_rows(pg_db)
    pg_db.execute(
        """INSERT INTO "Ring" (id, slug, name, "updatedAt", "ownerDid", metadata)
           VALUES ('old-root', 'old-root', 'Old', now(), %s, '{"isRoot": true}')""",
        (OWNER,),
    )
    pg_db.execute(
        """UPDATE "Ring" SET name = %s, "joinPolicy" = %s, "parentId" = 'old-root' WHERE slug = 'spool'""",
        ("Renamed", "CLOSED"),
    )
    pg_db.execute("""UPDATE "RingRole" SET permissions = '["comment"]' WHERE name = 'member'""")
    pg_db.execute("""DELETE FROM "RingRole" WHERE name = 'moderator'""")
    pg_db.execute(
        """INSERT INTO "RingRole" (id, "ringId", name, permissions) VALUES ('x-curator', %s, 'curator', '[]')""",
        (original["id"],),
    )
    drifted = ring_rows(pg_db), role_rows(pg_db)
    check = run_module("ring_seed", args, check=True, diff=True)
    assert not check.failed and check.changed, check.msg
    assert check.result["diff"]["before"]["ring"]["name"] == "Renamed"
    assert check.result["diff"]["after"]["ring"]["name"] == "The Spool"
    assert (ring_rows(pg_db), role_rows(pg_db)) == drifted  # check mode wrote nothing

    res = run_module("ring_seed", args, diff=True)
    assert not res.failed, res.msg
    assert res.changed
    assert res.result["other_root_rings"] == ["old-root"]
    assert any("other rings are marked as root" in w for w in res.result["warnings"])
    diff = res.result["diff"]
    assert diff["before"]["ring"]["name"] == "Renamed" and diff["after"]["ring"]["name"] == "The Spool"
    assert diff["before"]["ring"]["join_policy"] == "CLOSED" and diff["after"]["ring"]["join_policy"] == "OPEN"
    assert diff["before"]["ring"]["parent_id"] == "old-root" and diff["after"]["ring"]["parent_id"] is None
    assert (
        "moderator" not in diff["before"]["roles"] and diff["after"]["roles"]["moderator"] == PERMISSIONS["moderator"]
    )
    assert diff["before"]["roles"]["member"] == ["comment"]
    assert res.result["extra_roles"] == ["curator"]
    assert res.result["actions"] == ["update ring spool: join_policy, name, parent_id", "create role moderator",
                                     "update role member permissions"]  # fmt: skip

    [ring] = [r for r in ring_rows(pg_db) if r["slug"] == "spool"]
    assert ring["id"] == original["id"] and ring["name"] == "The Spool" and ring["joinPolicy"] == "OPEN"
    assert ring["parentId"] is None
    assert ring["metadata"] == original["metadata"]  # resetAt kept
    assert ring["updatedAt"] >= original["updatedAt"] and ring["createdAt"] == original["createdAt"]
    roles = role_rows(pg_db)
    assert {n: r[0] for n, r in roles.items()} == dict(PERMISSIONS, curator=[])

    again = run_module("ring_seed", args)
    assert not again.failed and not again.changed


def test_fails_clearly_without_a_ring_table(pg_db) -> None:
    res = run_module("ring_seed", {"database_url": pg_db.url(), "owner_did": OWNER})
    assert res.failed
    assert "has no Ring and no RingRole table" in res.msg and "pg_schema_reset" in res.msg


def test_invalid_did_is_refused(pg_db, fixture_migrations) -> None:
    apply_migrations_with_psql(pg_db, fixture_migrations)
    res = run_module("ring_seed", {"database_url": pg_db.url(), "owner_did": "did:web:"})
    assert res.failed and "is not a DID" in res.msg
    assert ring_rows(pg_db) == []


def test_reset_then_seed_on_the_hub_migrations_in_another_schema(pg_db, reference_migrations, tmp_path) -> None:
    url = pg_db.url(params="schema=hub")
    env = {"DATABASE_URL": url, "INSTANCE_DID": OWNER, "ROOT_RING_SLUG": "root"}
    reset = run_module(
        "pg_schema_reset",
        {"migrations_dir": str(reference_migrations), "backup_dir": str(tmp_path), "expected_environment": "test"},
        task_env=env,
    )
    assert not reset.failed, reset.msg
    seed = run_module("ring_seed", {"expected_environment": "test"}, task_env=env)
    assert not seed.failed, seed.msg
    assert seed.changed and seed.result["environment"] == "test" and seed.result["schema"] == "hub"
    [ring] = ring_rows(pg_db, "hub")
    assert ring["slug"] == "root" and ring["ownerDid"] == OWNER and ring["metadata"]["isRoot"] is True
    assert {n: r[0] for n, r in role_rows(pg_db, "hub").items()} == PERMISSIONS
    # Columns the fixture schema lacks got their database defaults.
    assert pg_db.query('SELECT "themeColor" FROM hub."Ring"') == [("thread-pine",)]
    mismatch = run_module("ring_seed", {"expected_environment": "production"}, task_env=env)
    assert mismatch.failed and "marked as environment 'test'" in mismatch.msg
    assert json.dumps(seed.result).count(OWNER) >= 1
