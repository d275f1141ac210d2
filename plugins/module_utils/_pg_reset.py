# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drop and recreate the Ring Hub's schema from its own Prisma migrations, in one transaction.

Order of work (``SchemaReset.run()``):

1. validate: migrations load, decode and hold no statement that cannot run in
   a transaction (done by the caller through ``_pg_migrations``);
2. connect and take the reset lock: ``pg_try_advisory_lock(RESET_LOCK_KEY)``,
   session level, held until the end; a held lock fails at once;
3. preflight: the role may drop and recreate the schema (with its owner,
   privileges and default privileges), the environment marker (a
   ``ringhub.environment=<name>`` line in the database comment) matches, the
   client tools are new enough, the backup directory is writable;
4. backup: ``pg_dump -Fc`` into ``backup_dir`` (mode 0600), read back with
   ``pg_restore --list`` (every table's data must be listed);
5. one transaction: terminate other sessions, set ``lock_timeout``, record
   tables and row counts, ``DROP SCHEMA ... CASCADE``, ``CREATE SCHEMA`` with
   owner, comment and privileges restored, create ``_prisma_migrations`` as
   Prisma Migrate does, apply every migration and record it, seed the root
   ring and its roles (``root_ring``, ring_seed's own ``RingSeeder``, as the
   migrations role), mark the environment, commit. Any error rolls everything
   back.

Check mode runs steps 1 to 3 and reports what would be dropped, applied and
seeded.

With a ``progress_file`` (``Progress``) every phase change, and every
``PROGRESS_INTERVAL`` seconds while ``pg_dump`` runs, replaces a small JSON
file (same-directory temp file, mode 0600, rename) that a playbook polling an
async task can print.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import PhaseTimer, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    MARKER_KEY,
    ConnSpec,
    connect,
    marked_comment,
    parse_marker,
    pg_error_text,
    psycopg2,
    quote_ident,
    read_database_comment,
    where,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import Migration
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    RingSeeder,
    RootRing,
    missing_tables,
)

# int.from_bytes(b"RingHub!", "big"): the bigint key of pg_try_advisory_lock(bigint).
# Advisory locks are per database, so resets of different databases never collide.
RESET_LOCK_KEY = 5938398973541048865
LOCK_CLASSID = RESET_LOCK_KEY >> 32
LOCK_OBJID = RESET_LOCK_KEY & 0xFFFFFFFF

ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOCK_TIMEOUT_RE = re.compile(r"^\d+\s*(ms|s|min)?$")
SYSTEM_SCHEMA_RE = re.compile(r"^(pg_.*|information_schema)$")
APPLICATION_NAME = "threadring.ringhub.pg_schema_reset"
NOTHING_CHANGED = "nothing was changed"
# Seconds between two writes of the progress file while pg_dump runs.
PROGRESS_INTERVAL = 0.5
PROGRESS_PHASES = (
    "validate", "connect", "lock", "preflight", "count", "backup", "verify_backup", "reset", "done", "failed",
)  # fmt: skip

PRISMA_MIGRATIONS_TABLE = "_prisma_migrations"
PRISMA_MIGRATIONS_DDL = """CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);"""
INSERT_MIGRATION_SQL = (
    'INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at", "migration_name", "logs", '
    '"rolled_back_at", "started_at", "applied_steps_count") VALUES (%s, %s, %s, %s, NULL, NULL, %s, 1)'
)

SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
DEFAULT_ACL_OBJTYPES = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES"}
DEFAULT_ACL_PRIVILEGES = {
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE", "EXECUTE", "MAINTAIN",
}  # fmt: skip


@dataclass
class ResetOptions:
    schema: str
    expected_environment: str | None = None
    backup: bool = True
    backup_dir: str | None = None
    pg_dump_path: str | None = None
    pg_restore_path: str | None = None
    terminate_sessions: bool = True
    lock_timeout: str = "10s"
    allow_outside_drops: bool = False
    migrations_role: str | None = None
    root_ring: RootRing | None = None
    check_mode: bool = False


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
    default_acl_roles_ok: bool = True
    other_sessions: int = 0


# -- SQL read by the preflight (and again inside the transaction) -------------------

_STATE_SQL = """
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       current_database(),
       pg_get_userbyid(d.datdba),
       current_user,
       r.rolsuper,
       r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'),
       r.rolsuper OR has_database_privilege(current_database(), 'CREATE'),
       pg_database_size(d.oid)
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
    ) = cur.fetchone()
    cur.execute(_SCHEMA_SQL, (schema,))
    row = cur.fetchone()
    if row:
        state.schema_exists = True
        state.schema_owner, state.schema_comment, state.can_drop = row
        cur.execute(_SCHEMA_ACL_SQL, (schema,))
        state.schema_acl = [(r[0], r[1], bool(r[2])) for r in cur.fetchall()]
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
    cur.execute(_OTHER_SESSIONS_SQL, (LOCK_CLASSID, LOCK_OBJID))
    state.other_sessions = len(cur.fetchall())
    return state


def count_rows(cur: Any, schema: str, tables: list[str]) -> list[dict[str, Any]]:
    """Exact row count of every table; ``rows`` is None for a table the role may not read."""
    out = []
    for table in tables:
        qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
        cur.execute("SELECT has_table_privilege(%s::regclass, 'SELECT')", (qualified,))
        if not cur.fetchone()[0]:
            out.append({"name": table, "rows": None})
            continue
        cur.execute(f"SELECT count(*) FROM {qualified}")
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


# -- progress file ----------------------------------------------------------------------


def _iso_now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Progress:
    """The ``progress_file`` of one run; with ``path`` None every call is a no-op.

    Each write replaces the whole file atomically: a temp file in the same
    directory (``mkstemp``: mode 0600), then ``os.replace``. A reader sees the old
    or the new JSON, never half of one. Only the first write (``start()``) may fail
    the run; a later write that fails leaves ``warning`` set and the run goes on.
    Nothing secret goes in: names, sizes, times, and an error already masked
    (``redact`` is applied once more).
    """

    def __init__(self, path: str | None, check_mode: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.redact: Callable[[str], str] = str
        self.begun = clock()
        self.phase_begun = self.begun
        self.dump_begun: float | None = None
        self.writes = 0
        self.warning: str | None = None
        self.data: dict[str, Any] = {
            "phase": "validate",
            "started": _iso_now(),
            "updated": None,
            "elapsed": 0.0,
            "phase_elapsed": 0.0,
            "check_mode": check_mode,
            "database": None,
            "schema": None,
            "database_size": None,
            "backup_path": None,
            "backup_bytes": 0,
            "rate_bytes_per_s": 0.0,
            "failed_phase": None,
            "error": None,
            "summary": None,
        }

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def start(self) -> None:
        """The first write (phase ``validate``): a path that cannot be written fails before anything else."""
        self._write(strict=True)

    def set(self, **fields: Any) -> None:
        """Change fields without writing (they go out with the next write)."""
        self.data.update(fields)

    def phase(self, name: str, **fields: Any) -> None:
        self.data.update(fields, phase=name)
        self.phase_begun = self.clock()
        self._write()

    def dump_started(self, path: str) -> None:
        self.dump_begun = self.clock()
        self.data.update(backup_path=path, backup_bytes=0, rate_bytes_per_s=0.0)
        self._write()

    def dump_size(self, size: int) -> None:
        """The backup file's size now; the rate is the average since pg_dump started."""
        seconds = self.clock() - (self.dump_begun if self.dump_begun is not None else self.phase_begun)
        self.data.update(backup_bytes=size, rate_bytes_per_s=round(size / seconds, 1) if seconds > 0 else 0.0)
        self._write()

    def done(self, summary: str) -> None:
        self.phase("done", summary=summary)

    def fail(self, msg: str) -> None:
        """Phase ``failed`` with the (masked) error; never raises."""
        failed_phase = self.data["phase"] if self.data["phase"] not in ("done", "failed") else None
        self.data.update(failed_phase=failed_phase, error=self.redact(msg))
        try:
            self.phase("failed")
        except RingHubError:
            pass

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return dict(
            self.data,
            updated=_iso_now(),
            elapsed=round(now - self.begun, 3),
            phase_elapsed=round(now - self.phase_begun, 3),
        )

    def _write(self, strict: bool = False) -> None:
        if not self.path:
            return
        text = json.dumps(self.snapshot()) + "\n"
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
            tmp = None
            self.writes += 1
        except OSError as exc:
            reason = f"progress_file {self.path}: cannot write it ({exc.strerror or exc})"
            if strict or self.writes == 0:
                raise RingHubError(
                    f"{reason}: its directory must exist and be writable by the user running the module",
                    path=self.path,
                ) from None
            self.warning = self.warning or f"{reason}; the run went on without progress reports"
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


# -- client tools and backup ----------------------------------------------------------


@dataclass
class Tools:
    pg_dump: str
    pg_restore: str
    pg_dump_version: str
    pg_dump_major: int


def tool_version(path: str) -> tuple[str, int]:
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise RingHubError(f"cannot run {path}: {exc.strerror}", path=path) from None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RingHubError(f"{path} --version gave no PostgreSQL version: {(proc.stdout + proc.stderr).strip()!r}")
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return version, int(match.group(1))


def _resolve_tool(name: str, option: str, given: str | None, near: str | None = None) -> str:
    if given:
        path = os.path.join(given, name) if os.path.isdir(given) else given
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RingHubError(f"{option} {given}: no executable {name} there", path=given)
        return path
    if near:
        sibling = os.path.join(os.path.dirname(near), name)
        if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
            return sibling
    found = shutil.which(name)
    if not found:
        raise RingHubError(
            f"{name} not found on PATH ({os.environ.get('PATH', '')}); install the PostgreSQL client "
            f"(same major version as the server or newer) or set {option}"
        )
    return found


def find_tools(opts: ResetOptions, server_version_num: int, server_version: str) -> Tools:
    pg_dump = _resolve_tool("pg_dump", "pg_dump_path", opts.pg_dump_path)
    pg_restore = _resolve_tool("pg_restore", "pg_restore_path", opts.pg_restore_path, near=pg_dump)
    version, major = tool_version(pg_dump)
    server_major = server_version_num // 10000
    if major < server_major:
        raise RingHubError(
            f"{pg_dump} is version {version}, older than the server ({server_version}); pg_dump must be the "
            f"server's major version ({server_major}) or newer: install it or set pg_dump_path",
            pg_dump=pg_dump,
        )
    restore_major = tool_version(pg_restore)[1]
    if restore_major < major:
        raise RingHubError(f"{pg_restore} is older than {pg_dump} ({version}): it cannot read the backup")
    return Tools(pg_dump=pg_dump, pg_restore=pg_restore, pg_dump_version=version, pg_dump_major=major)


def check_backup_dir(path: str) -> dict[str, Any]:
    """The backup directory exists and a file can be created in it (a real probe, root included)."""
    if not os.path.exists(path):
        raise RingHubError(
            f"backup_dir {path} does not exist: create it (mode 0700, owned by the user running the module) "
            "or set backup_dir to an existing directory",
            path=path,
        )
    if not os.path.isdir(path):
        raise RingHubError(f"backup_dir {path} is not a directory", path=path)
    probe = os.path.join(path, f".ringhub-write-probe-{uuid.uuid4().hex}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RingHubError(f"backup_dir {path} is not writable: {exc.strerror}", path=path) from None
    usage = shutil.disk_usage(path)
    return {"path": path, "free_bytes": usage.free}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "db"


def _client_env(spec: ConnSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(spec.libpq_env())
    env["PGAPPNAME"] = APPLICATION_NAME + ".backup"
    env["LC_ALL"] = "C"
    return env


def run_polled(
    cmd: list[str], env: dict[str, str], tick: Callable[[], None] | None = None, interval: float = PROGRESS_INTERVAL
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, env=env)``, calling ``tick()`` every
    ``interval`` seconds while the process runs (no polling without ``tick``)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=interval if tick else None)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick()
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def make_backup(
    spec: ConnSpec,
    tools: Tools,
    backup_dir: str,
    schema: str,
    tables: list[str],
    snapshot: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``pg_dump -Fc`` of the whole database, mode 0600, read back with ``pg_restore --list``.

    With ``snapshot`` (from ``pg_export_snapshot()``) the dump sees exactly that snapshot.
    With an enabled ``progress`` the running pg_dump is polled and the file's size reported.
    """
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{_safe_name(spec.dbname or 'db')}-{_safe_name(schema)}-{stamp}"
    path = os.path.join(backup_dir, base + ".dump")
    suffix = 1
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            suffix += 1
            path = os.path.join(backup_dir, f"{base}-{suffix}.dump")
        except OSError as exc:
            raise RingHubError(f"cannot create backup file {path}: {exc.strerror}", path=path) from None
    os.close(fd)
    os.chmod(path, 0o600)
    env = _client_env(spec)
    tick = None
    if progress is not None and progress.enabled:
        progress.dump_started(path)

        def tick() -> None:
            progress.dump_size(_file_size(path))

    try:
        proc = run_polled(
            [tools.pg_dump, "--format=custom", "--no-password", "--file", path]
            + ([f"--snapshot={snapshot}"] if snapshot else []),
            env,
            tick,
        )
        if proc.returncode != 0:
            raise RingHubError(
                f"pg_dump of database {spec.dbname!r} failed (exit {proc.returncode}); nothing was changed: "
                + spec.redact(proc.stderr.strip()[-2000:]),
                pg_dump=tools.pg_dump,
            )
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if progress is not None and progress.enabled:
            progress.dump_size(_file_size(path))
            progress.phase("verify_backup")
        listing = subprocess.run(
            [tools.pg_restore, "--list", path], capture_output=True, text=True, env=env, check=False
        )
        if listing.returncode != 0:
            raise RingHubError(
                f"pg_restore --list cannot read the backup {path}; nothing was changed: "
                + spec.redact(listing.stderr.strip()[-2000:]),
                path=path,
            )
        entries = [line for line in listing.stdout.splitlines() if re.match(r"^\d+;", line)]
        data_entries = {line.split(" TABLE DATA ", 1)[1] for line in entries if " TABLE DATA " in line}
        missing = [t for t in tables if not any(e.startswith(f"{schema} {t} ") for e in data_entries)]
        if missing:
            raise RingHubError(
                f"the backup {path} lists no data for tables {missing} of schema {schema!r}; nothing was changed",
                path=path,
            )
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return {
        "path": path,
        "size": os.path.getsize(path),
        "sha256": sha.hexdigest(),
        "toc_entries": len(entries),
        "mode": "0600",
        "pg_dump": tools.pg_dump,
        "pg_dump_version": tools.pg_dump_version,
    }


# -- the reset --------------------------------------------------------------------------


def _utc_iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _line_of(sql: str, position: str | None) -> int | None:
    try:
        pos = int(position or "")
    except ValueError:
        return None
    return sql.count("\n", 0, max(pos - 1, 0)) + 1


class SchemaReset:
    """One reset (or its check-mode preflight) of one schema of one database."""

    def __init__(
        self,
        spec: ConnSpec,
        opts: ResetOptions,
        migrations: list[Migration],
        timer: PhaseTimer,
        progress: Progress | None = None,
    ) -> None:
        self.spec = spec
        self.opts = opts
        self.migrations = migrations
        self.timer = timer
        self.progress = progress if progress is not None else Progress(None)
        self.conn: Any = None
        self.locked = False
        self.migrations_role = ""
        self.preflight_marker: str | None = None
        # Set when COMMIT is sent: a failure from then on may have changed the database.
        self.committing = False
        self.warnings: list[str] = []
        self.state = SchemaState()

    # -- validation --------------------------------------------------------------
    def validate_options(self) -> None:
        opts = self.opts
        if SYSTEM_SCHEMA_RE.match(opts.schema):
            raise RingHubError(f"refusing to reset the system schema {opts.schema!r}")
        if opts.expected_environment is not None and not ENVIRONMENT_RE.match(opts.expected_environment):
            raise RingHubError(
                f"expected_environment {opts.expected_environment!r} must be 1-63 letters, digits, '_', '.', '-'"
            )
        if not LOCK_TIMEOUT_RE.match(opts.lock_timeout.strip()):
            raise RingHubError(f"lock_timeout {opts.lock_timeout!r} must look like 10s, 500ms or 1min")
        if opts.backup and not opts.backup_dir:
            raise RingHubError("backup_dir is required unless backup is false")
        if opts.root_ring is not None:
            try:
                opts.root_ring.validate()
            except RingHubError as exc:
                raise RingHubError(f"root_ring: {exc.msg}", option="root_ring") from None

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """One phase: timed (``seconds``) and reported in the progress file."""
        self.progress.phase(name)
        with self.timer.phase(name):
            yield

    def take_lock(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RESET_LOCK_KEY,))
            if cur.fetchone()[0]:
                self.locked = True
                return
            cur.execute(_LOCK_HOLDER_SQL, (LOCK_CLASSID, LOCK_OBJID))
            holder = cur.fetchone()
        who = (
            f"pid {holder[0]}, application {holder[1]!r}, user {holder[2]!r}, connected since {holder[4]}"
            if holder
            else "a session that has just ended"
        )
        raise RingHubError(
            f"another schema reset is running on database {self.spec.dbname!r} (it holds the reset lock, "
            f"advisory key {RESET_LOCK_KEY}: {who}); nothing was changed. Wait for it to finish; if that "
            "session is left over from an interrupted run, end it with "
            f"SELECT pg_terminate_backend({holder[0] if holder else '<pid>'}) and run the reset again",
            lock_key=RESET_LOCK_KEY,
            lock_holder_pid=holder[0] if holder else None,
        )

    def preflight(self) -> None:
        opts = self.opts
        with self.conn.cursor() as cur:
            self.state = state = read_state(cur, opts.schema)
            unreadable = unreadable_tables(cur, opts.schema)
        problems: list[str] = []
        if unreadable and opts.backup:
            problems.append(
                f"role {state.current_user!r} may not read tables {unreadable} of schema {opts.schema!r}, "
                "so pg_dump cannot back them up"
            )
        elif unreadable:
            self.warnings.append(
                f"role {state.current_user!r} may not read tables {unreadable}: their row counts are unknown"
            )
        who = f"role {state.current_user!r}"
        if state.schema_exists and not state.can_drop:
            problems.append(
                f"{who} may not drop schema {opts.schema!r} (owned by {state.schema_owner!r}; only its owner, "
                "a member of the owner role, or a superuser can)"
            )
        if not state.can_create:
            problems.append(f"{who} may not create schemas in database {state.database!r} (needs CREATE on it)")
        if state.outside and not opts.allow_outside_drops:
            problems.append(
                f"DROP SCHEMA {opts.schema} CASCADE would also drop objects in other schemas: "
                f"{', '.join(state.outside)} (set allow_outside_drops to accept that)"
            )
        elif state.outside:
            self.warnings.append(f"objects in other schemas are dropped with the schema: {', '.join(state.outside)}")
        if state.extensions:
            self.warnings.append(
                f"extensions installed in schema {opts.schema!r} are dropped with it: {', '.join(state.extensions)} "
                "(the migrations must create them again)"
            )
        if not state.default_acl_roles_ok:
            problems.append(f"{who} cannot restore the default privileges defined in schema {opts.schema!r}")
        # The role that runs the migrations owns what they create: by default the one owner of the
        # existing tables, so a reset run by a superuser does not take the tables from the hub's role.
        owners = state.table_owners
        role = opts.migrations_role or (owners[0] if len(owners) == 1 else state.current_user)
        self.migrations_role = role
        if role != state.current_user:
            with self.conn.cursor() as cur:
                cur.execute(_ROLE_SQL, (opts.schema, role))
                row = cur.fetchone()
            if row is None:
                problems.append(f"migrations_role {role!r} does not exist")
            elif not row[0]:
                problems.append(f"{who} may not SET ROLE {role!r} (the role that owns and runs the migrations)")
            elif row[1] is False:
                problems.append(f"role {role!r} may not create objects in schema {opts.schema!r}")
        marker = self.preflight_marker = state.marker
        if opts.expected_environment is not None:
            if marker is not None and marker != opts.expected_environment:
                problems.append(
                    f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}), "
                    f"not {opts.expected_environment!r}: the connection settings most likely point at another "
                    "environment's database; check them and the inventory group"
                )
            if marker is None and not state.can_mark:
                problems.append(
                    f"database {state.database!r} has no environment marker and {who} may not set one "
                    f"(COMMENT ON DATABASE needs the database owner {state.database_owner!r} or a superuser)"
                )
        elif marker is not None:
            problems.append(
                f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}); "
                f"if this is the database you mean to reset, set expected_environment: {marker}"
            )
        if problems:
            raise RingHubError(
                "preflight failed; nothing was changed: " + "; ".join(problems),
                problems=problems,
                environment=self.environment_result(marked=False),
            )

    def environment_result(self, marked: bool) -> dict[str, Any]:
        found = self.state.marker
        expected = self.opts.expected_environment
        will_mark = expected is not None and found is None
        return {
            "key": MARKER_KEY,
            "where": "COMMENT ON DATABASE",
            "expected": expected,
            "found": found,
            "marked": marked,
            "would_mark": will_mark and not marked,
            # The marker after the run (in check mode: after a real run).
            "value": expected if will_mark else found,
        }

    # -- the transaction ----------------------------------------------------------------
    def _terminate_others(self, cur: Any) -> list[dict[str, Any]]:
        cur.execute(_OTHER_SESSIONS_SQL, (LOCK_CLASSID, LOCK_OBJID))
        sessions = cur.fetchall()
        out = []
        wait = self.state.server_version_num >= 140000
        for pid, user, app in sessions:
            cur.execute("SAVEPOINT ringhub_terminate")
            try:
                if wait:
                    cur.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
                else:
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ok = bool(cur.fetchone()[0])
                cur.execute("RELEASE SAVEPOINT ringhub_terminate")
                reason = None if ok else "not terminated within 5 s"
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT ringhub_terminate")
                ok, reason = False, pg_error_text(exc, self.spec)
            entry: dict[str, Any] = {"pid": pid, "user": user, "application": app, "terminated": ok}
            if reason:
                entry["reason"] = reason
                self.warnings.append(f"session pid {pid} (user {user!r}) was not terminated: {reason}")
            out.append(entry)
        return out

    def _recreate_schema(self, cur: Any, state: SchemaState) -> None:
        schema = quote_ident(self.opts.schema)
        owner = state.schema_owner or state.current_user
        cur.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {quote_ident(owner)}")
        if state.schema_comment is not None:
            cur.execute(f"COMMENT ON SCHEMA {schema} IS %s", (state.schema_comment,))
        for grantee, privilege, grantable in state.schema_acl:
            if privilege not in SCHEMA_PRIVILEGES:
                raise RingHubError(f"unexpected schema privilege {privilege!r}")
            target = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            cur.execute(f"GRANT {privilege} ON SCHEMA {schema} TO {target}{option}")
        for role, objtype, grantee, privilege, grantable in state.default_acl:
            kind = DEFAULT_ACL_OBJTYPES.get(objtype)
            if kind is None or privilege not in DEFAULT_ACL_PRIVILEGES:
                raise RingHubError(f"unexpected default privilege {privilege!r} on {objtype!r}")
            target = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            cur.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_ident(role)} IN SCHEMA {schema} "
                f"GRANT {privilege} ON {kind} TO {target}{option}"
            )
        # The restored privileges must be exactly the old ones.
        cur.execute(_SCHEMA_ACL_SQL, (self.opts.schema,))
        acl = [(r[0], r[1], bool(r[2])) for r in cur.fetchall()]
        cur.execute(_DEFAULT_ACL_SQL, (self.opts.schema,))
        default_acl = [(r[0], r[1], r[2], r[3], bool(r[4])) for r in cur.fetchall()]
        if sorted(acl) != sorted(state.schema_acl) or sorted(default_acl) != sorted(state.default_acl):
            raise RingHubError(
                f"the privileges of the recreated schema differ from the old ones (old {state.schema_acl} / "
                f"{state.default_acl}, new {acl} / {default_acl}); rolled back, nothing was changed"
            )

    def _apply(self, cur: Any) -> list[dict[str, Any]]:
        cur.execute(f"SET LOCAL search_path TO {quote_ident(self.opts.schema)}")
        if self.migrations_role and self.migrations_role != self.state.current_user:
            cur.execute(f"SET LOCAL ROLE {quote_ident(self.migrations_role)}")
        cur.execute(PRISMA_MIGRATIONS_DDL)
        applied = []
        for migration in self.migrations:
            cur.execute("SELECT clock_timestamp()")
            started = cur.fetchone()[0]
            try:
                if migration.sql.strip():  # psycopg2 refuses an empty query; Prisma allows empty files
                    cur.execute(migration.sql)
            except psycopg2.Error as exc:
                raise self._migration_error(migration, exc) from None
            cur.execute("SELECT clock_timestamp()")
            finished = cur.fetchone()[0]
            cur.execute(
                INSERT_MIGRATION_SQL, (str(uuid.uuid4()), migration.checksum, finished, migration.name, started)
            )
            applied.append(
                {
                    "name": migration.name,
                    "checksum": migration.checksum,
                    "path": migration.path,
                    "started_at": _utc_iso(started),
                    "finished_at": _utc_iso(finished),
                }
            )
        return applied

    def _seed_root_ring(self, cur: Any, ring: RootRing) -> dict[str, Any]:
        """ring_seed's own seed, on the reset's cursor, inside the reset transaction."""
        schema = self.opts.schema
        missing = missing_tables(cur, schema)
        if missing:
            raise RingHubError(
                f"root_ring: after the migrations schema {schema!r} has no "
                + " and no ".join(f'"{name}"' for name in missing)
                + " table, so the root ring cannot be seeded (do the migrations or sql_files create the hub's "
                "tables?); the transaction was rolled back, nothing was changed",
                missing_tables=missing,
                step="seed the root ring",
            )
        return RingSeeder(self.spec, ring).seed_in(cur, schema)

    def _root_ring_result(self, seeded: dict[str, Any], environment: str | None) -> dict[str, Any]:
        seeded = dict(seeded, environment=environment)
        seeded.pop("diff", None)
        self.warnings.extend(seeded.pop("warnings_list", []))
        return seeded

    def _migration_error(self, migration: Migration, exc: Exception) -> RingHubError:
        diag = getattr(exc, "diag", None)
        sqlstate = getattr(exc, "pgcode", None)
        line = _line_of(migration.sql, getattr(diag, "statement_position", None)) if diag else None
        at = f" at line {line}" if line else ""
        if self.conn.closed or isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not sqlstate:
            return RingHubError(
                f"the connection was lost while applying migration {migration.name} ({migration.path}): "
                f"{pg_error_text(exc, self.spec)}; the transaction was not committed, nothing was changed",
                migration=migration.name,
                file=migration.path,
            )
        return RingHubError(
            f"migration {migration.name} ({migration.path}) failed{at}: {pg_error_text(exc, self.spec)}"
            + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
            + "; the transaction was rolled back, nothing was changed",
            migration=migration.name,
            file=migration.path,
            line=line,
            sqlstate=sqlstate,
        )

    def reset(self) -> dict[str, Any]:
        opts, state = self.opts, self.state
        schema = quote_ident(opts.schema)
        conn = self.conn
        conn.autocommit = False
        out: dict[str, Any] = {}
        step = "start the transaction"
        try:
            with conn.cursor() as cur:
                step = "set lock_timeout"
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (opts.lock_timeout.strip(),))
                if opts.terminate_sessions:
                    step = "terminate other sessions"
                    out["terminated_sessions"] = self._terminate_others(cur)
                step = "record the existing tables"
                # Re-read inside the transaction: what is dropped is what is recorded.
                state = self.state = read_state(cur, opts.schema)
                if state.outside and not opts.allow_outside_drops:
                    raise RingHubError(
                        f"DROP SCHEMA {opts.schema} CASCADE would also drop objects in other schemas: "
                        f"{', '.join(state.outside)}; rolled back, nothing was changed"
                    )
                if state.marker != self.preflight_marker:
                    raise RingHubError(
                        f"the environment marker changed during the reset ({self.preflight_marker!r} -> "
                        f"{state.marker!r}); rolled back, nothing was changed"
                    )
                out["dropped_tables"] = count_rows(cur, opts.schema, state.tables)
                step = f"DROP SCHEMA {opts.schema} CASCADE"
                cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                step = f"CREATE SCHEMA {opts.schema}"
                self._recreate_schema(cur, state)
                step = "apply migrations"
                out["applied"] = self._apply(cur)
                if opts.root_ring is not None:
                    # Still as migrations_role, the owner of the tables just created.
                    step = "seed the root ring"
                    out["root_ring"] = self._seed_root_ring(cur, opts.root_ring)
                cur.execute("RESET ROLE")
                if opts.expected_environment is not None and state.marker is None:
                    step = "set the environment marker"
                    cur.execute(
                        f"COMMENT ON DATABASE {quote_ident(state.database)} IS %s",
                        (marked_comment(state.database_comment, opts.expected_environment),),
                    )
                    out["marked"] = True
            step = "COMMIT"
            self.committing = True
            conn.commit()
        except RingHubError:
            self._rollback()
            raise
        except psycopg2.Error as exc:
            self._rollback()
            if step == "COMMIT":
                raise RingHubError(
                    f"COMMIT of the reset failed ({pg_error_text(exc, self.spec)}); if the connection was lost the "
                    "outcome is unknown: check the database and _prisma_migrations",
                ) from None
            lost = " (connection lost)" if conn.closed else ""
            hint = ""
            if getattr(exc, "pgcode", None) == "55P03":
                hint = (
                    f". Another session holds a lock on the schema's objects longer than lock_timeout "
                    f"({opts.lock_timeout}): "
                    + (
                        "it could not be terminated (see the warnings); stop it or raise lock_timeout"
                        if opts.terminate_sessions
                        else "stop the hub (or set terminate_sessions: true) or raise lock_timeout"
                    )
                )
            raise RingHubError(
                f"the reset failed at step '{step}'{lost}: {pg_error_text(exc, self.spec)}"
                + (f" (SQLSTATE {exc.pgcode})" if getattr(exc, "pgcode", None) else "")
                + "; the transaction was rolled back, nothing was changed"
                + hint,
                step=step,
            ) from None
        finally:
            if not conn.closed:
                conn.autocommit = True
        return out

    def _rollback(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.rollback()
            except psycopg2.Error:
                pass

    # -- orchestration --------------------------------------------------------------------
    def dropped_summary(self, tables: list[dict[str, Any]]) -> dict[str, Any]:
        state = self.state
        return {
            "schemas": [self.opts.schema] if state.schema_exists else [],
            "tables": tables,
            "total_rows": sum(t["rows"] or 0 for t in tables),
            "objects": state.objects,
            "extensions": state.extensions,
            "outside_schema": state.outside,
        }

    def run(self) -> dict[str, Any]:
        opts = self.opts
        result: dict[str, Any] = {
            "changed": True,
            "connection": self.spec.describe(),
            "schema": opts.schema,
            "lock_key": RESET_LOCK_KEY,
            "migrations": [{"name": m.name, "checksum": m.checksum} for m in self.migrations],
        }
        self.validate_options()
        try:
            return self._run(result)
        except psycopg2.Error as exc:
            # Only reset() commits, and it turns its own errors into RingHubError.
            raise RingHubError(
                f"PostgreSQL error before the reset ({where(self.spec)}): {pg_error_text(exc, self.spec)}; "
                "nothing was changed",
                sqlstate=getattr(exc, "pgcode", None),
            ) from None
        finally:
            self.close()

    def _run(self, result: dict[str, Any]) -> dict[str, Any]:
        opts, progress = self.opts, self.progress
        progress.set(database=self.spec.dbname, schema=opts.schema)
        with self._phase("connect"):
            self.conn = connect(self.spec, APPLICATION_NAME)
            with self.conn.cursor() as cur:
                # The session waits idle in a transaction while pg_dump reads its exported snapshot.
                cur.execute("SET idle_in_transaction_session_timeout = 0")
        with self._phase("lock"):
            self.take_lock()
        with self._phase("preflight"):
            self.preflight()
            state = self.state
            progress.set(database=state.database, database_size=state.database_size)
            tools = None
            if opts.backup:
                tools = find_tools(opts, state.server_version_num, state.server_version)
                result["backup_dir"] = check_backup_dir(opts.backup_dir or "")
                free = result["backup_dir"]["free_bytes"]
                if free < state.database_size:
                    self.warnings.append(
                        f"backup_dir {opts.backup_dir} has {free} bytes free and database {state.database!r} "
                        f"takes {state.database_size} bytes: the compressed backup is usually smaller, but a "
                        "full disk fails the reset (before the drop)"
                    )
            else:
                self.warnings.append("backup is false: no backup was taken before the reset")
            result.update(
                database=state.database,
                server_version=state.server_version,
                role=state.current_user,
                schema_owner=state.schema_owner,
                database_size=state.database_size,
                migrations_role=self.migrations_role,
                other_sessions=state.other_sessions,
            )
        if opts.check_mode:
            with self._phase("count"), self.conn.cursor() as cur:
                tables = count_rows(cur, opts.schema, state.tables)
            result["dropped"] = self.dropped_summary(tables)
            result["applied"] = []
            result["backup"] = {"skipped": True, "reason": "check mode"} if opts.backup else {"skipped": True}
            if tools:
                result["backup"].update(pg_dump=tools.pg_dump, pg_dump_version=tools.pg_dump_version)
            result["environment"] = self.environment_result(marked=False)
            if opts.root_ring is not None:
                preview = RingSeeder(self.spec, opts.root_ring, check_mode=True).preview_fresh(opts.schema)
                result["root_ring"] = self._root_ring_result(preview, result["environment"]["value"])
            return self._finish(result)
        backup_rows: dict[str, int | None] | None = None
        if opts.backup and tools is not None:
            with self._phase("backup"):
                result["backup"], backup_rows = self.backup(tools)
        else:
            result["backup"] = {"skipped": True}
        with self._phase("reset"):
            out = self.reset()
        if backup_rows is not None:
            written = {
                t["name"]: (t["rows"] or 0) - (backup_rows.get(t["name"]) or 0)
                for t in out["dropped_tables"]
                if t["rows"] != backup_rows.get(t["name"])
            }
            result["backup"]["rows_written_after_backup"] = written
            if written:
                self.warnings.append(f"rows changed between the backup and the reset (not in the backup): {written}")
        result["dropped"] = self.dropped_summary(out["dropped_tables"])
        result["applied"] = out["applied"]
        result["terminated_sessions"] = out.get("terminated_sessions", [])
        result["environment"] = self.environment_result(marked=bool(out.get("marked")))
        if "root_ring" in out:
            result["root_ring"] = self._root_ring_result(out["root_ring"], result["environment"]["value"])
        if result["environment"]["marked"]:
            self.warnings.append(
                f"database {state.database!r} had no environment marker; it is now marked as "
                f"{opts.expected_environment!r}"
            )
        return self._finish(result)

    def backup(self, tools: Tools) -> tuple[dict[str, Any], dict[str, int | None]]:
        """The backup of one exported snapshot; row counts read in that same snapshot."""
        opts, conn = self.opts, self.conn
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SELECT pg_export_snapshot()")
                snapshot = cur.fetchone()[0]
                tables = read_state(cur, opts.schema).tables
                rows = {t["name"]: t["rows"] for t in count_rows(cur, opts.schema, tables)}
                info = make_backup(
                    self.spec, tools, opts.backup_dir or "", opts.schema, tables, snapshot, self.progress
                )
        except psycopg2.Error as exc:
            raise RingHubError(
                f"the backup transaction failed: {pg_error_text(exc, self.spec)}; nothing was changed"
            ) from None
        finally:
            self._rollback()
            if not conn.closed:
                conn.autocommit = True
        info["rows"] = rows
        return info, rows

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        result["seconds"] = dict(self.timer.seconds, total=self.timer.total)
        result["warnings_list"] = list(self.spec.warnings) + self.warnings
        result["summary"] = summary_line(result, self.opts.check_mode)
        return result

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self._rollback()
                self.conn.autocommit = True
                if self.locked:
                    with self.conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (RESET_LOCK_KEY,))
                    self.locked = False
            except psycopg2.Error:
                pass
            self.conn.close()


def summary_line(result: dict[str, Any], check_mode: bool) -> str:
    """One line for a playbook summary or an audit record (no secrets in it)."""
    dropped = result.get("dropped", {})
    tables = dropped.get("tables", [])
    backup = result.get("backup", {})
    env = result.get("environment", {})
    verb = ("would drop", "would apply") if check_mode else ("dropped", "applied")
    parts = [
        f"schema {result.get('schema')} of database {result.get('database')}:",
        f"{verb[0]} {len(tables)} tables ({dropped.get('total_rows', 0)} rows),",
        f"{verb[1]} {len(result.get('migrations', []))} migrations,",
        (
            f"backup {backup['path']} ({backup['size']} bytes, sha256 {backup['sha256']})"
            if backup.get("path")
            else "no backup" + (" (check mode)" if check_mode and backup.get("reason") else "")
        )
        + ",",
        root_ring_part(result.get("root_ring"), check_mode),
        f"environment {env.get('value') or 'unmarked'}"
        + (" (marked now)" if env.get("marked") else " (would be marked)" if env.get("would_mark") else "")
        + ",",
        f"{result['seconds']['total']} s",
    ]
    return " ".join(part for part in parts if part)


def root_ring_part(seeded: dict[str, Any] | None, check_mode: bool) -> str:
    """The root ring's words in the summary line ("" without root_ring)."""
    if not seeded:
        return ""
    roles = ", ".join(role["name"] for role in seeded.get("roles", []))
    verb = "would seed" if check_mode else "seeded"
    return f"{verb} root ring {seeded['ring']['slug']} (roles {roles}),"
