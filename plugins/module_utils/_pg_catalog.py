# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pg_schema_reset reads from the PostgreSQL catalogs (read-only queries; private to the collection).

``read_state()`` is the preflight's picture of the database and the schema
(rights, owner, privileges, default privileges, tables, objects, dependants in
other schemas, the environment marker, other sessions); the reset transaction
reads it again before it drops anything. The reset lock is the session-level
advisory lock ``RESET_LOCK_KEY``, which ``pg_locks`` shows split into
``classid`` (high 32 bits) and ``objid`` (low 32 bits) with ``objsubid = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    parse_marker,
    read_database_comment,
    sql,
)

# int.from_bytes(b"RingHub!", "big"): the bigint key of pg_try_advisory_lock(bigint).
# Advisory locks are per database, so resets of different databases never collide.
RESET_LOCK_KEY = 5938398973541048865
LOCK_CLASSID = RESET_LOCK_KEY >> 32
LOCK_OBJID = RESET_LOCK_KEY & 0xFFFFFFFF


@dataclass
class SchemaState:
    """What the preflight read from the server (all read-only)."""

    server_version_num: int = 0
    server_version: str = ""
    database: str = ""
    database_owner: str = ""
    database_size: int = 0
    current_user: str = ""
    superuser: bool = False
    schema_exists: bool = False
    schema_owner: str | None = None
    schema_comment: str | None = None
    schema_acl: list[tuple[str, str, bool]] = field(default_factory=list)
    default_acl: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    table_owners: list[str] = field(default_factory=list)
    marker: str | None = None
    database_comment: str | None = None
    can_drop: bool = False
    can_create: bool = False
    can_mark: bool = False
    can_create_database: bool = False
    default_acl_roles_ok: bool = True
    other_sessions: int = 0


_STATE_SQL = """
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       current_database(),
       pg_get_userbyid(d.datdba),
       current_user,
       r.rolsuper,
       r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'),
       r.rolsuper OR has_database_privilege(current_database(), 'CREATE'),
       pg_database_size(d.oid),
       r.rolsuper OR r.rolcreatedb
FROM pg_database d, pg_roles r
WHERE d.datname = current_database() AND r.rolname = current_user
"""
_SCHEMA_SQL = """
SELECT pg_get_userbyid(n.nspowner),
       obj_description(n.oid, 'pg_namespace'),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(current_user, n.nspowner, 'MEMBER')
FROM pg_namespace n WHERE n.nspname = %s
"""
_SCHEMA_ACL_SQL = """
SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END, g.privilege_type, g.is_grantable
FROM pg_namespace n, aclexplode(n.nspacl) g
WHERE n.nspname = %s AND g.grantee <> n.nspowner
ORDER BY 1, 2
"""
_DEFAULT_ACL_SQL = """
SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype::text,
       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END, g.privilege_type, g.is_grantable,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(current_user, d.defaclrole, 'MEMBER')
FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) g
WHERE n.nspname = %s
ORDER BY 1, 2, 3, 4
"""
_TABLES_SQL = """
SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname
"""
_ROLE_SQL = """
SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(current_user, r.oid, 'MEMBER'),
       CASE WHEN n.oid IS NULL THEN NULL ELSE has_schema_privilege(r.oid, n.oid, 'CREATE') END
FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = %s
WHERE r.rolname = %s
"""
_OBJECTS_SQL = """
SELECT
  (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')),
  (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('v', 'm')),
  (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind = 'S'),
  (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('i', 'I')),
  (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid),
  (SELECT count(*) FROM pg_type t WHERE t.typnamespace = n.oid AND t.typtype IN ('e', 'd', 'c', 'r')
     AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')),
  ARRAY(SELECT e.extname FROM pg_extension e WHERE e.extnamespace = n.oid ORDER BY 1)
FROM pg_namespace n WHERE n.nspname = %s
"""
# Objects in OTHER schemas that DROP SCHEMA ... CASCADE would drop or alter.
_OUTSIDE_SQL = """
SELECT DISTINCT kind || ' ' || name FROM (
  SELECT 'foreign key' AS kind, format('%%I.%%I.%%I', cn.nspname, cl.relname, co.conname) AS name
  FROM pg_constraint co
  JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace
  JOIN pg_class rc ON rc.oid = co.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
  WHERE co.contype = 'f' AND rn.nspname = %(s)s AND cn.nspname <> %(s)s
  UNION
  SELECT 'view', format('%%I.%%I', vn.nspname, v.relname)
  FROM pg_depend d
  JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
  JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_class t ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  WHERE tn.nspname = %(s)s AND vn.nspname <> %(s)s
  UNION
  SELECT 'column', format('%%I.%%I.%%I', an.nspname, ac.relname, a.attname)
  FROM pg_attribute a
  JOIN pg_class ac ON ac.oid = a.attrelid JOIN pg_namespace an ON an.oid = ac.relnamespace
  JOIN pg_type ty ON ty.oid = a.atttypid JOIN pg_namespace tyn ON tyn.oid = ty.typnamespace
  WHERE tyn.nspname = %(s)s AND an.nspname <> %(s)s AND a.attnum > 0 AND NOT a.attisdropped
    AND ac.relkind IN ('r', 'p', 'v', 'm', 'f')
) x ORDER BY 1
"""
_LOCK_HOLDER_SQL = """
SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), a.client_addr::text,
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_OTHER_SESSIONS_SQL = """
SELECT a.pid, coalesce(a.usename::text, ''), coalesce(a.application_name, '')
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND NOT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 1)
ORDER BY a.pid
"""


def read_state(cur: Any, schema: str) -> SchemaState:
    state = SchemaState()
    cur.execute(_STATE_SQL)
    (
        state.server_version_num,
        state.server_version,
        state.database,
        state.database_owner,
        state.current_user,
        state.superuser,
        state.can_mark,
        state.can_create,
        state.database_size,
        state.can_create_database,
    ) = cur.fetchone()
    cur.execute(_SCHEMA_SQL, (schema,))
    row = cur.fetchone()
    if row:
        state.schema_exists = True
        state.schema_owner, state.schema_comment, state.can_drop = row
        state.schema_acl = read_schema_acl(cur, schema)
        cur.execute(_DEFAULT_ACL_SQL, (schema,))
        rows = cur.fetchall()
        state.default_acl = [(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
        state.default_acl_roles_ok = all(r[5] for r in rows)
        cur.execute(_TABLES_SQL, (schema,))
        rows = cur.fetchall()
        state.tables = [r[0] for r in rows]
        state.table_owners = sorted({r[1] for r in rows})
        cur.execute(_OBJECTS_SQL, (schema,))
        tables, views, sequences, indexes, functions, types, extensions = cur.fetchone()
        state.objects = {
            "tables": tables,
            "views": views,
            "sequences": sequences,
            "indexes": indexes,
            "functions": functions,
            "types": types,
        }
        state.extensions = list(extensions)
        cur.execute(_OUTSIDE_SQL, {"s": schema})
        state.outside = [r[0] for r in cur.fetchall()]
    else:
        state.schema_owner = state.current_user
        state.can_drop = True
    state.database_comment = read_database_comment(cur)
    state.marker = parse_marker(state.database_comment)
    state.other_sessions = len(other_sessions(cur))
    return state


def read_schema_acl(cur: Any, schema: str) -> list[tuple[str, str, bool]]:
    """``(grantee, privilege, grantable)`` of the schema's privileges, its owner's own left out."""
    cur.execute(_SCHEMA_ACL_SQL, (schema,))
    return [(r[0], r[1], bool(r[2])) for r in cur.fetchall()]


def read_default_acl(cur: Any, schema: str) -> list[tuple[str, str, str, str, bool]]:
    """``(role, object type, grantee, privilege, grantable)`` of the default privileges defined in the schema."""
    cur.execute(_DEFAULT_ACL_SQL, (schema,))
    return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in cur.fetchall()]


def role_rights(cur: Any, schema: str, role: str) -> tuple[bool, bool | None] | None:
    """Whether the connected role may ``SET ROLE role`` and whether ``role`` may create in ``schema``.

    None when ``role`` does not exist; the second value is None when the schema does not.
    """
    cur.execute(_ROLE_SQL, (schema, role))
    row = cur.fetchone()
    return None if row is None else (bool(row[0]), row[1])


def lock_holder(cur: Any) -> tuple[Any, ...] | None:
    """``(pid, application, user, client address, connected since)`` of the session holding the reset lock."""
    cur.execute(_LOCK_HOLDER_SQL, (LOCK_CLASSID, LOCK_OBJID))
    return cur.fetchone()


def other_sessions(cur: Any) -> list[tuple[int, str, str]]:
    """``(pid, user, application)`` of the other client sessions on the database, the lock holder left out."""
    cur.execute(_OTHER_SESSIONS_SQL, (LOCK_CLASSID, LOCK_OBJID))
    return [(r[0], r[1], r[2]) for r in cur.fetchall()]


def count_rows(cur: Any, schema: str, tables: list[str]) -> list[dict[str, Any]]:
    """Exact row count of every table; ``rows`` is None for a table the role may not read."""
    out = []
    for table in tables:
        qualified = sql.Identifier(schema, table)
        cur.execute("SELECT has_table_privilege(%s::regclass, 'SELECT')", (qualified.as_string(cur),))
        if not cur.fetchone()[0]:
            out.append({"name": table, "rows": None})
            continue
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified))
        out.append({"name": table, "rows": int(cur.fetchone()[0])})
    return out


def unreadable_tables(cur: Any, schema: str) -> list[str]:
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT has_table_privilege(c.oid, 'SELECT') "
        "ORDER BY 1",
        (schema,),
    )
    return [r[0] for r in cur.fetchall()]
