# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Ring Hub's root ring and its roles, written exactly as the hub's reset wrote them.

``"Ring"`` row: slug (default ``spool``), name, description, visibility,
joinPolicy, postPolicy, ownerDid = the instance DID, parentId NULL, metadata
``{"isRoot": true, "createdBy": "system", "resetAt": <ISO time>}``, client-side
uuid id, ``createdAt``/``updatedAt`` set in UTC. ``"RingRole"`` rows
owner/moderator/member with their permission arrays.

Idempotent: the current rows are read (``FOR UPDATE``), compared with the
desired state and only the differences are written, in one transaction.
``resetAt`` is written when the ring is created (or its metadata rewritten) and
is never by itself a reason for a change.

``seed_root_ring(params, check_mode)`` is the ring_seed module;
``RingSeeder.run()`` its seed on its own connection and transaction (any
failure before the COMMIT leaves the rows as they were: ``NothingChanged``).
``RingSeeder.seed_in(cur, schema)`` is the same seed on a cursor whose
transaction belongs to the caller (pg_schema_reset's ``root_ring``, before its
COMMIT); ``RingSeeder.preview_fresh(schema)`` is what that seed writes into a
schema without rings, computed without a database (its check mode). Each
returns an ``Outcome``. ``seed_argument_spec()`` holds the options of both.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    RingHubError,
    nothing_changed_on_failure,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    PSYCOPG2,
    URL_ENV,
    ConnSpec,
    connect,
    pg_argument_spec,
    pg_error_text,
    pg_mutually_exclusive,
    psycopg2,
    read_environment_marker,
    spec_from_params,
    sql,
)

ROOT_RING_NAME = "The Spool"
ROOT_RING_DESCRIPTION = "The root ThreadRing - the origin of all rings in this hub"
DEFAULT_SLUG = "spool"
DEFAULT_ROLES: dict[str, list[str]] = {
    "owner": [
        "manage_ring",
        "manage_members",
        "manage_roles",
        "manage_posts",
        "moderate_content",
        "invite_members",
        "block_users",
        "delete_ring",
    ],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}
VISIBILITIES = ["PUBLIC", "UNLISTED", "PRIVATE"]
JOIN_POLICIES = ["OPEN", "APPLICATION", "INVITATION", "CLOSED"]
POST_POLICIES = ["OPEN", "MEMBERS", "CURATED", "CLOSED"]
APPLICATION_NAME = "threadring.ringhub.ring_seed"

_IDCHAR = r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})"
DID_RE = re.compile(rf"^did:[a-z0-9]+:(?:{_IDCHAR}*:)*{_IDCHAR}+$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")

# Ring columns compared with the desired state: option name -> column.
RING_COLUMNS = {
    "name": "name",
    "description": "description",
    "visibility": "visibility",
    "join_policy": "joinPolicy",
    "post_policy": "postPolicy",
    "owner_did": "ownerDid",
    "parent_id": "parentId",
}


def seed_argument_spec() -> dict[str, dict[str, Any]]:
    """The root ring's options: ring_seed's own options and pg_schema_reset's ``root_ring`` suboptions."""
    return dict(
        owner_did=dict(type="str", required=True, fallback=(env_fallback, ["INSTANCE_DID"])),
        slug=dict(type="str", default=DEFAULT_SLUG, fallback=(env_fallback, ["ROOT_RING_SLUG"])),
        name=dict(type="str", default=ROOT_RING_NAME),
        description=dict(type="str", default=ROOT_RING_DESCRIPTION),
        visibility=dict(type="str", default="PUBLIC", choices=list(VISIBILITIES)),
        join_policy=dict(type="str", default="OPEN", choices=list(JOIN_POLICIES)),
        post_policy=dict(type="str", default="OPEN", choices=list(POST_POLICIES)),
        created_by=dict(type="str", default="system"),
        roles=dict(type="dict", default=copy.deepcopy(DEFAULT_ROLES)),
        reset_at=dict(type="str"),
    )


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options of ring_seed: the PostgreSQL connection, the root ring and the environment check."""
    spec = pg_argument_spec()
    spec.update(seed_argument_spec())  # the same options as pg_schema_reset's root_ring suboptions
    spec.update(expected_environment=dict(type="str"))
    return spec


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[PSYCOPG2], secret_env=[URL_ENV], mutually_exclusive=pg_mutually_exclusive()
)


def seed_root_ring(params: dict[str, Any], check_mode: bool) -> Outcome:
    """The ring_seed module: connect, compare, write the differences (not in check mode), report."""
    spec = None
    try:
        with nothing_changed_on_failure():
            spec = spec_from_params(params)
            desired = RootRing.from_params(params)
        seeder = RingSeeder(spec, desired, check_mode=check_mode, expected_environment=params["expected_environment"])
        outcome = seeder.run()
    except RingHubError as exc:
        if spec is not None:
            exc.msg = spec.redact(exc.msg)
            exc.add_context(spec.warnings, connection=spec.describe())
        raise
    outcome.result = {"connection": spec.describe(), **outcome.result}
    outcome.warnings = [*spec.warnings, *outcome.warnings]
    return outcome


def missing_tables(cur: Any, schema: str) -> list[str]:
    """The tables of the root ring (``Ring``, ``RingRole``) that ``schema`` lacks."""
    cur.execute(
        "SELECT to_regclass(%s), to_regclass(%s)",
        (sql.Identifier(schema, "Ring").as_string(cur), sql.Identifier(schema, "RingRole").as_string(cur)),
    )
    ring, role = cur.fetchone()
    return [name for name, reg in (("Ring", ring), ("RingRole", role)) if reg is None]


def utc_now() -> datetime.datetime:
    """Now in UTC, naive, to the millisecond (``TIMESTAMP(3)`` as Prisma writes it)."""
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso_ms(value: datetime.datetime) -> str:
    """JavaScript ``Date.toISOString()`` form: ``2026-11-28T17:30:00.123Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def validate_did(did: str) -> str:
    if not isinstance(did, str) or not DID_RE.match(did):
        raise RingHubError(
            f"owner_did {did!r} is not a DID (did:<method>:<method-specific-id>, for example did:web:hub.example.com)"
        )
    return did


@dataclass
class RootRing:
    owner_did: str
    slug: str = DEFAULT_SLUG
    name: str = ROOT_RING_NAME
    description: str = ROOT_RING_DESCRIPTION
    visibility: str = "PUBLIC"
    join_policy: str = "OPEN"
    post_policy: str = "OPEN"
    created_by: str = "system"
    roles: dict[str, list[str]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_ROLES))
    reset_at: str | None = None
    parent_id: None = None

    def validate(self) -> None:
        validate_did(self.owner_did)
        if not SLUG_RE.match(self.slug):
            raise RingHubError(f"slug {self.slug!r} must be lower-case letters, digits and '-' (1-100 characters)")
        for option, allowed in (
            ("visibility", VISIBILITIES),
            ("join_policy", JOIN_POLICIES),
            ("post_policy", POST_POLICIES),
        ):
            if getattr(self, option) not in allowed:
                raise RingHubError(f"{option} must be one of {allowed}, got {getattr(self, option)!r}")
        if not self.name:
            raise RingHubError("name must not be empty")
        if not isinstance(self.roles, dict) or not self.roles:
            raise RingHubError("roles must map role names to lists of permissions")
        for role, perms in self.roles.items():
            if not role or not isinstance(perms, list) or not all(isinstance(p, str) and p for p in perms):
                raise RingHubError(f"role {role!r}: permissions must be a list of non-empty strings")
        if "member" not in self.roles:
            raise RingHubError("roles must include member: the hub's /trp/join assigns the role named member")
        if self.reset_at is not None and not ISO_RE.match(self.reset_at):
            raise RingHubError(f"reset_at {self.reset_at!r} must be an ISO 8601 time such as 2026-11-28T17:30:00.000Z")

    def desired_value(self, option: str) -> Any:
        return getattr(self, option)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RootRing:
        """From module parameters shaped by ``seed_argument_spec()`` (other keys are ignored)."""
        return cls(**{option: params[option] for option in seed_argument_spec()})


def _ring_view(row: dict[str, Any]) -> dict[str, Any]:
    return {option: row.get(option) for option in RING_COLUMNS} | {"metadata": row.get("metadata")}


def _metadata_ok(metadata: Any, desired: RootRing) -> bool:
    if not isinstance(metadata, dict) or "resetAt" not in metadata:
        return False
    rest = {k: v for k, v in metadata.items() if k != "resetAt"}
    return rest == {"isRoot": True, "createdBy": desired.created_by} and isinstance(metadata["resetAt"], str)


def plan(
    current: dict[str, Any] | None, current_roles: dict[str, dict[str, Any]], desired: RootRing, now_iso: str
) -> dict[str, Any]:
    """Compare the current rows with the desired state (pure; no database).

    Returns ``ring_changes`` (option -> new value, ``metadata`` included when it
    must be rewritten), ``create_ring``, ``roles_create``, ``roles_update`` and
    ``extra_roles``.
    """
    out: dict[str, Any] = {"create_ring": current is None, "ring_changes": {}, "roles_create": [], "roles_update": []}
    reset_at = desired.reset_at or now_iso
    if current is None:
        out["ring_changes"] = {option: desired.desired_value(option) for option in RING_COLUMNS}
        out["ring_changes"]["metadata"] = {"isRoot": True, "createdBy": desired.created_by, "resetAt": reset_at}
    else:
        for option in RING_COLUMNS:
            if current.get(option) != desired.desired_value(option):
                out["ring_changes"][option] = desired.desired_value(option)
        metadata = current.get("metadata")
        if not _metadata_ok(metadata, desired):
            kept = metadata.get("resetAt") if isinstance(metadata, dict) else None
            out["ring_changes"]["metadata"] = {
                "isRoot": True,
                "createdBy": desired.created_by,
                "resetAt": desired.reset_at or (kept if isinstance(kept, str) else None) or reset_at,
            }
    for role, perms in desired.roles.items():
        if role not in current_roles:
            out["roles_create"].append(role)
        elif current_roles[role]["permissions"] != perms:
            out["roles_update"].append(role)
    out["extra_roles"] = sorted(set(current_roles) - set(desired.roles))
    return out


class RingSeeder:
    def __init__(
        self, spec: ConnSpec, desired: RootRing, check_mode: bool = False, expected_environment: str | None = None
    ) -> None:
        self.spec = spec
        self.expected_environment = expected_environment
        self.desired = desired
        self.check_mode = check_mode
        self.queries: list[str] = []

    def _exec(self, cur: Any, query: str, params: Any = None) -> None:
        """Run one writing statement; without a cursor (``preview_fresh``) only record it."""
        if cur is not None:
            cur.execute(query, params)
        self.queries.append(" ".join(query.split()))

    def _check_tables(self, cur: Any, schema: str) -> None:
        missing = missing_tables(cur, schema)
        if missing:
            raise RingHubError(
                f"schema {schema!r} of database {self.spec.dbname!r} has no {' and no '.join(missing)} table: "
                "apply the hub's migrations first (pg_schema_reset)",
                schema=schema,
            )

    def run(self) -> Outcome:
        """The seed in its own transaction: committed, or rolled back in check mode and on any failure."""
        with nothing_changed_on_failure():
            self.desired.validate()
            conn = connect(self.spec, APPLICATION_NAME, autocommit=False)
        try:
            with nothing_changed_on_failure():
                try:
                    with conn.cursor() as cur:
                        outcome = self._seed(cur)
                except psycopg2.Error as exc:
                    raise RingHubError(
                        f"ring_seed failed on database {self.spec.dbname!r} schema {self.spec.schema!r}: "
                        f"{pg_error_text(exc, self.spec)}",
                        sqlstate=getattr(exc, "pgcode", None),
                    ) from None
                if self.check_mode:
                    conn.rollback()
                    return outcome
            self._commit(conn)
            return outcome
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            conn.close()

    def _commit(self, conn: Any) -> None:
        try:
            conn.commit()
        except psycopg2.Error as exc:
            text = pg_error_text(exc, self.spec)
            if conn.closed or not getattr(exc, "pgcode", None):
                # The COMMIT was sent and its answer lost: the rows may or may not be written.
                raise RingHubError(
                    f"the COMMIT of the root ring on database {self.spec.dbname!r} got no answer ({text}): check "
                    "the Ring and RingRole rows or run ring_seed again (it writes only what differs)"
                ) from None
            raise NothingChanged(
                f"the COMMIT of the root ring on database {self.spec.dbname!r} failed: {text} (SQLSTATE {exc.pgcode})",
                sqlstate=exc.pgcode,
            ) from None

    def _seed(self, cur: Any) -> Outcome:
        schema = self.spec.schema
        environment = read_environment_marker(cur)
        if self.expected_environment is not None and environment not in (None, self.expected_environment):
            raise RingHubError(
                f"database {self.spec.dbname!r} is marked as environment {environment!r}, "
                f"not {self.expected_environment!r}",
                environment=environment,
            )
        self._check_tables(cur, schema)
        outcome = self.seed_in(cur, schema)
        outcome.result["environment"] = environment
        return outcome

    def seed_in(self, cur: Any, schema: str) -> Outcome:
        """The seed on ``cur``, inside the caller's transaction: no commit, no rollback, no marker check.

        ``schema`` must hold the ``Ring`` and ``RingRole`` tables (see ``missing_tables``).
        ``environment`` in the result is None: the caller knows the marker.
        """
        desired = self.desired
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        cur.execute(
            'SELECT id, name, description, visibility::text, "joinPolicy"::text, "postPolicy"::text, "ownerDid", '
            '"parentId", metadata FROM "Ring" WHERE slug = %s FOR UPDATE',
            (desired.slug,),
        )
        row = cur.fetchone()
        current = None
        ring_id = None
        if row:
            ring_id = row[0]
            current = dict(zip(["id", *RING_COLUMNS, "metadata"], row, strict=True))
        current_roles: dict[str, dict[str, Any]] = {}
        if ring_id:
            cur.execute('SELECT id, name, permissions FROM "RingRole" WHERE "ringId" = %s FOR UPDATE', (ring_id,))
            current_roles = {r[1]: {"id": r[0], "permissions": r[2]} for r in cur.fetchall()}
        cur.execute(
            """SELECT slug FROM "Ring" WHERE slug <> %s AND jsonb_typeof(metadata) = 'object' """
            """AND metadata->>'isRoot' = 'true' ORDER BY slug""",
            (desired.slug,),
        )
        other_roots = [r[0] for r in cur.fetchall()]
        return self._write(cur, schema, current, current_roles, other_roots)

    def preview_fresh(self, schema: str) -> Outcome:
        """What ``seed_in`` writes into ``schema`` right after it was created empty; no database.

        The seeder must be in check mode (ids of rows to be created are None).
        """
        return self._write(None, schema, None, {}, [])

    def _write(
        self,
        cur: Any,
        schema: str,
        current: dict[str, Any] | None,
        current_roles: dict[str, dict[str, Any]],
        other_roots: list[str],
    ) -> Outcome:
        desired = self.desired
        ring_id = current["id"] if current else None
        warnings = (
            [f"other rings are marked as root (metadata.isRoot): {', '.join(other_roots)}"] if other_roots else []
        )
        now = utc_now()
        steps = plan(current, current_roles, desired, iso_ms(now))
        actions: list[str] = []
        changes = steps["ring_changes"]
        if steps["create_ring"]:
            ring_id = str(uuid.uuid4())
            actions.append(f"create ring {desired.slug}")
            self._exec(
                cur,
                'INSERT INTO "Ring" (id, slug, name, description, visibility, "joinPolicy", "postPolicy", '
                '"ownerDid", "parentId", metadata, "createdAt", "updatedAt") '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s)",
                (
                    ring_id,
                    desired.slug,
                    desired.name,
                    desired.description,
                    desired.visibility,
                    desired.join_policy,
                    desired.post_policy,
                    desired.owner_did,
                    json.dumps(changes["metadata"]),
                    now,
                    now,
                ),
            )
        elif changes:
            actions.append(f"update ring {desired.slug}: {', '.join(sorted(changes))}")
            sets, params = [], []
            for option, value in sorted(changes.items()):
                column = "metadata" if option == "metadata" else RING_COLUMNS[option]
                sets.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(json.dumps(value) if option == "metadata" else value)
            sets.append(sql.SQL('"updatedAt" = %s'))
            params += [now, ring_id]
            update = sql.SQL('UPDATE "Ring" SET {} WHERE id = %s').format(sql.SQL(", ").join(sets))
            self._exec(cur, update.as_string(cur), params)
        roles_after: dict[str, dict[str, Any]] = {k: dict(v) for k, v in current_roles.items()}
        for role in steps["roles_create"]:
            role_id = str(uuid.uuid4())
            perms = desired.roles[role]
            actions.append(f"create role {role}")
            self._exec(
                cur,
                'INSERT INTO "RingRole" (id, "ringId", name, permissions, "createdAt") VALUES (%s, %s, %s, %s, %s)',
                (role_id, ring_id, role, json.dumps(perms), now),
            )
            roles_after[role] = {"id": role_id, "permissions": perms}
        for role in steps["roles_update"]:
            perms = desired.roles[role]
            actions.append(f"update role {role} permissions")
            self._exec(
                cur,
                'UPDATE "RingRole" SET permissions = %s WHERE id = %s',
                (json.dumps(perms), current_roles[role]["id"]),
            )
            roles_after[role]["permissions"] = perms

        before = {
            "ring": _ring_view(current) if current else {},
            "roles": {k: v["permissions"] for k, v in current_roles.items()},
        }
        after_ring = dict(before["ring"]) if current else {}
        after_ring.update(changes)
        after = {"ring": after_ring, "roles": {k: v["permissions"] for k, v in roles_after.items()}}
        ring_out = {"id": ring_id if not (self.check_mode and steps["create_ring"]) else None, "slug": desired.slug}
        ring_out.update(after_ring)
        result = {
            "ring": ring_out,
            "roles": [
                {
                    "name": name,
                    "id": None if (self.check_mode and name in steps["roles_create"]) else data["id"],
                    "permissions": data["permissions"],
                }
                for name, data in sorted(roles_after.items())
            ],
            "extra_roles": steps["extra_roles"],
            "actions": actions,
            "queries": self.queries,
            "schema": schema,
            "environment": None,
            "other_root_rings": other_roots,
        }
        return Outcome(changed=bool(actions), result=result, warnings=warnings, diff={"before": before, "after": after})
