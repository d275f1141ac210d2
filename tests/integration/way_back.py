"""Shared helpers of the undo, restore and backup tests (test_undo*.py, test_restore*.py, test_*backup*.py).

A hub database owned by a non-superuser role (as the hub's own role is), the hub's
migrations applied as that role and recorded in ``_prisma_migrations`` as
``prisma migrate deploy`` records them, realistic rows, and the exact state to
compare: per table its row count and a digest of every row (all columns).
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import load_migrations_dir
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import (
    INSERT_MIGRATION_SQL,
    PRISMA_MIGRATIONS_DDL,
)
from harness.datagen import seed_hub_data

KEPT_RE = re.compile(r"^public_before_(reset|undo)_\d{8}_\d{6}_utc(_\d+)?$")


@dataclass
class HubDb:
    """A database as the hub has it: owned by ``role``, which owns the schema's tables too."""

    db: Any
    role: str
    password: str

    @property
    def name(self) -> str:
        return self.db.name

    @property
    def url(self) -> str:
        return self.db.url(user=self.role, password=self.password, params="schema=public&connection_limit=5")

    def connect_as_hub(self) -> Any:
        conn = psycopg2.connect(
            host=self.db.server.host, port=self.db.server.port, dbname=self.name, user=self.role, password=self.password
        )
        conn.autocommit = True
        return conn

    def comment(self) -> str:
        rows = self.db.query(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (self.name,)
        )
        return rows[0][0] or ""


def apply_as(hub: HubDb, migrations: Path) -> None:
    """The migrations as the hub's role, each with its ``_prisma_migrations`` row."""
    conn = hub.connect_as_hub()
    try:
        with conn.cursor() as cur:
            cur.execute(PRISMA_MIGRATIONS_DDL)
            for migration in load_migrations_dir(str(migrations)):
                cur.execute("SELECT clock_timestamp()")
                started = cur.fetchone()[0]
                if migration.sql.strip():
                    cur.execute(migration.sql)
                cur.execute(
                    INSERT_MIGRATION_SQL, (str(uuid.uuid4()), migration.checksum, started, migration.name, started)
                )
    finally:
        conn.close()


def make_hub_db(pg_server: Any, migrations: Path, *, createdb: bool = False, rings: int = 4) -> tuple[HubDb, str]:
    tag = secrets.token_hex(4)
    role, password = f"hub_{tag}", "pw-" + secrets.token_hex(10)
    pg_server.create_role(role, password, *(["CREATEDB"] if createdb else []))
    db = pg_server.create_database(owner=role)
    hub = HubDb(db, role, password)
    apply_as(hub, migrations)
    seed_hub_data(db, rings=rings, members_per_ring=3)
    return hub, role


def hub_databases(pg_server: Any) -> Iterator[Any]:
    """Body of a ``hub_db_factory`` fixture: ``make(migrations, createdb=False, rings=4)`` gives a seeded hub
    database; each is dropped afterwards (with the databases named after it) and so is its role."""
    made: list[tuple[HubDb, str]] = []

    def make(migrations: Path, **kwargs: Any) -> HubDb:
        hub, role = make_hub_db(pg_server, migrations, **kwargs)
        made.append((hub, role))
        return hub

    try:
        yield make
    finally:
        for hub, role in made:
            names = pg_server.query("SELECT datname FROM pg_database WHERE datname LIKE %s", (hub.name + "%",))
            for (name,) in names:
                pg_server.drop_database(name)
            pg_server.execute(f'DROP ROLE IF EXISTS "{role}"')


def digests(db: Any, schema: str = "public") -> dict[str, tuple[int, str]]:
    """Per table of ``schema``: (rows, md5 of every row as text, in order). Read as the superuser."""
    tables = [r[0] for r in db.query("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))]
    out = {}
    for table in tables:
        ident = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
        count, digest = db.query(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {ident} t"
        )[0]
        out[table] = (int(count), digest)
    return out


def schema_acl(db: Any, schema: str) -> list[tuple[str, str, bool]]:
    """Every privilege on ``schema`` (the owner's own included), as (grantee, privilege, grantable)."""
    return db.query(
        "SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END, g.privilege_type, "
        "g.is_grantable FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) g "
        "WHERE n.nspname = %s ORDER BY 1, 2",
        (schema,),
    )


def kept_schemas(db: Any) -> list[str]:
    return [r[0] for r in db.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'public_before_%' ORDER BY 1")]


def reset_args(hub: Any, migrations: Path, backup_dir: Path, **extra: Any) -> dict[str, Any]:
    """pg_schema_reset's options for ``hub`` with a backup into ``backup_dir``, and ``extra``."""
    return {
        "database_url": hub.url,
        "migrations_dir": str(migrations),
        "backup_dir": str(backup_dir),
        "expected_environment": "production",
    } | extra
