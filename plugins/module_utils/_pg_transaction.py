# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one transaction of pg_schema_reset (private to the collection).

In order: ``lock_timeout``, terminate the other sessions (a savepoint each),
read the schema again (what is dropped is what is recorded), count the rows,
``DROP SCHEMA ... CASCADE``, ``CREATE SCHEMA`` with its owner, comment,
privileges and default privileges (checked to be exactly the old ones),
``_prisma_migrations`` as Prisma Migrate creates it, every migration with its
history row (as the migrations role), the root ring (``root_ring``, ring_seed's
own ``RingSeeder``), the environment marker, ``COMMIT``, and then, on the
same connection, the WAL position of that commit (``commit_lsn``: what a
replica must have replayed to see the new schema).

How it fails says what happened: a failure before the ``COMMIT`` is
``RolledBack`` (or ``NothingChanged`` when the connection was lost and the
server ends the transaction itself); an error answer to the ``COMMIT`` is
``RolledBack`` (PostgreSQL committed nothing); a ``COMMIT`` whose answer was
lost is ``OutcomeUnknown``, the only failure after which the database may
hold the new schema.
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    OutcomeUnknown,
    RingHubError,
    RolledBack,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    ConnSpec,
    marked_comment,
    pg_error_text,
    psycopg2,
    rollback_quietly,
    sql,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import (
    SchemaState,
    count_rows,
    other_sessions,
    read_default_acl,
    read_schema_acl,
    read_state,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_kept import (
    KeptRecord,
    comment_with_kept,
    existing_schemas,
    iso,
    kept_listing,
    kept_name,
    make_unreachable,
    parse_kept,
    purge_expired,
    server_now,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import Migration
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    RingSeeder,
    RootRing,
    missing_tables,
)

if TYPE_CHECKING:  # the options of the module; _pg_reset imports this file
    from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import ResetOptions

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
LOCK_NOT_AVAILABLE = "55P03"


def utc_iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def line_of(text: str, position: str | None) -> int | None:
    """The line of a 1-based character ``position`` (PostgreSQL's ``statement_position``) in ``text``."""
    try:
        pos = int(position or "")
    except ValueError:
        return None
    return text.count("\n", 0, max(pos - 1, 0)) + 1


class ResetTransaction:
    """Drop and recreate one schema on ``conn`` in one transaction; ``run()`` commits or raises."""

    def __init__(
        self,
        conn: Any,
        spec: ConnSpec,
        opts: ResetOptions,
        migrations: list[Migration],
        migrations_role: str,
        state: SchemaState,
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.opts = opts
        self.migrations = migrations
        self.migrations_role = migrations_role
        self.preflight_marker = state.marker
        self.state = state  # the preflight's; replaced by the transaction's own reading
        self.warnings: list[str] = []
        self.seed_warnings: list[str] = []
        # Set when COMMIT is sent: a failure from then on may have changed the database.
        self.committing = False
        # The WAL position at or past the end of the COMMIT record (None when it could not be read).
        self.commit_lsn: str | None = None

    def run(self) -> dict[str, Any]:
        """The transaction; its facts (``terminated_sessions``, ``dropped_tables``, ``applied``, ...)."""
        opts, conn = self.opts, self.conn
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
                state = self.state = read_state(cur, opts.schema)
                self._recheck(state)
                out["dropped_tables"] = count_rows(cur, opts.schema, state.tables)
                now = server_now(cur)
                if opts.keep_previous and state.schema_exists:
                    kept = kept_name(opts.schema, "reset", now, existing_schemas(cur))
                    step = f"ALTER SCHEMA {opts.schema} RENAME TO {kept}"
                    cur.execute(
                        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                            sql.Identifier(opts.schema), sql.Identifier(kept)
                        )
                    )
                else:
                    kept = None
                    step = f"DROP SCHEMA {opts.schema} CASCADE"
                    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(opts.schema)))
                step = f"CREATE SCHEMA {opts.schema}"
                self._recreate_schema(cur, state)
                step = "apply migrations"
                out["applied"] = self._apply(cur)
                if opts.root_ring is not None:
                    # Still as migrations_role, the owner of the tables just created.
                    step = "seed the root ring"
                    out["root_ring"] = self._seed_root_ring(cur, opts.root_ring)
                cur.execute("RESET ROLE")
                add: list[KeptRecord] = []
                if kept is not None:
                    step = f"revoke every privilege on the kept schema {kept}"
                    make_unreachable(cur, kept)
                    record = KeptRecord(
                        name=kept,
                        schema=opts.schema,
                        by="reset",
                        kept_at=iso(now),
                        until=iso(now + opts.keep_for),
                        rows={t["name"]: t["rows"] for t in out["dropped_tables"]},
                    )
                    add.append(record)
                    out["kept"] = record.describe()
                records, parse_warnings = parse_kept(state.database_comment)
                self.warnings.extend(parse_warnings)
                remove: set[str] = set()
                if state.can_mark:
                    step = "drop the kept schemas past their retention"
                    out["purged"], remove, purge_warnings = purge_expired(cur, records, opts.schema, now)
                    self.warnings.extend(purge_warnings)
                comment = state.database_comment
                if opts.expected_environment is not None and state.marker is None:
                    comment = marked_comment(comment, opts.expected_environment)
                    out["marked"] = True
                comment = comment_with_kept(comment, add, remove) if (add or remove) else comment
                if comment != state.database_comment:
                    step = "record the environment marker and the kept schemas in the database comment"
                    cur.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(state.database)), (comment,)
                    )
                step = "list the kept schemas"
                records = [r for r in records if r.name not in remove] + add
                out["kept_schemas"] = kept_listing(cur, records, now, opts.schema)
            self._commit()
            out["commit_lsn"] = self.commit_lsn
        except (NothingChanged, OutcomeUnknown):
            rollback_quietly(self.conn)
            raise
        except RingHubError as exc:
            rollback_quietly(self.conn)
            raise RolledBack.from_error(exc) from None
        except psycopg2.Error as exc:
            rollback_quietly(self.conn)
            raise self._step_error(step, exc) from None
        finally:
            if not conn.closed:
                conn.autocommit = True
        return out

    # -- inside the transaction ------------------------------------------------------------
    def _recheck(self, state: SchemaState) -> None:
        """What the preflight allowed must still hold now that the schema is read under the transaction."""
        opts = self.opts
        if state.outside and not opts.allow_outside_drops:
            raise RolledBack(
                f"DROP SCHEMA {opts.schema} CASCADE would also drop objects in other schemas: "
                f"{', '.join(state.outside)}"
            )
        if opts.keep_previous and state.schema_exists and (state.outside or state.extensions):
            raise RolledBack(
                f"keep_previous cannot keep schema {opts.schema!r} any more: "
                + "; ".join(
                    filter(None, [
                        state.outside and f"objects in other schemas depend on it ({', '.join(state.outside)})",
                        state.extensions and f"extensions are installed in it ({', '.join(state.extensions)})",
                    ])
                )
            )  # fmt: skip
        if state.marker != self.preflight_marker:
            raise RolledBack(
                f"the environment marker changed during the reset ({self.preflight_marker!r} -> {state.marker!r})"
            )

    def _terminate_others(self, cur: Any) -> list[dict[str, Any]]:
        sessions, warnings = terminate_other_sessions(cur, self.spec, self.state.server_version_num)
        self.warnings.extend(warnings)
        return sessions

    def _recreate_schema(self, cur: Any, state: SchemaState) -> None:
        schema = sql.Identifier(self.opts.schema)
        owner = state.schema_owner or state.current_user
        cur.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, sql.Identifier(owner)))
        if state.schema_comment is not None:
            cur.execute(sql.SQL("COMMENT ON SCHEMA {} IS %s").format(schema), (state.schema_comment,))
        for grantee, privilege, grantable in state.schema_acl:
            if privilege not in SCHEMA_PRIVILEGES:
                raise RolledBack(f"unexpected schema privilege {privilege!r}")
            cur.execute(
                sql.SQL("GRANT {} ON SCHEMA {} TO {}{}").format(
                    sql.SQL(privilege), schema, _grantee(grantee), _grant_option(grantable)
                )
            )
        for role, objtype, grantee, privilege, grantable in state.default_acl:
            kind = DEFAULT_ACL_OBJTYPES.get(objtype)
            if kind is None or privilege not in DEFAULT_ACL_PRIVILEGES:
                raise RolledBack(f"unexpected default privilege {privilege!r} on {objtype!r}")
            cur.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON {} TO {}{}").format(
                    sql.Identifier(role), schema, sql.SQL(privilege), sql.SQL(kind), _grantee(grantee),
                    _grant_option(grantable),
                )
            )  # fmt: skip
        # The restored privileges must be exactly the old ones.
        acl = read_schema_acl(cur, self.opts.schema)
        default_acl = read_default_acl(cur, self.opts.schema)
        if sorted(acl) != sorted(state.schema_acl) or sorted(default_acl) != sorted(state.default_acl):
            raise RolledBack(
                f"the privileges of the recreated schema differ from the old ones (old {state.schema_acl} / "
                f"{state.default_acl}, new {acl} / {default_acl})"
            )

    def _apply(self, cur: Any) -> list[dict[str, Any]]:
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.opts.schema)))
        if self.migrations_role and self.migrations_role != self.state.current_user:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.migrations_role)))
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
                    "started_at": utc_iso(started),
                    "finished_at": utc_iso(finished),
                }
            )
        return applied

    def _seed_root_ring(self, cur: Any, ring: RootRing) -> dict[str, Any]:
        """ring_seed's own seed, on the reset's cursor, inside the reset transaction."""
        schema = self.opts.schema
        missing = missing_tables(cur, schema)
        if missing:
            raise RolledBack(
                f"root_ring: after the migrations schema {schema!r} has no "
                + " and no ".join(f'"{name}"' for name in missing)
                + " table, so the root ring cannot be seeded (do the migrations or sql_files create the hub's "
                "tables?)",
                missing_tables=missing,
                step="seed the root ring",
            )
        seeded = RingSeeder(self.spec, ring).seed_in(cur, schema)
        self.seed_warnings.extend(seeded.warnings)
        return dict(seeded.result, changed=seeded.changed)

    # -- errors ------------------------------------------------------------------------------
    def _migration_error(self, migration: Migration, exc: Exception) -> RingHubError:
        diag = getattr(exc, "diag", None)
        sqlstate = getattr(exc, "pgcode", None)
        line = line_of(migration.sql, getattr(diag, "statement_position", None)) if diag else None
        at = f" at line {line}" if line else ""
        if self.conn.closed or isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not sqlstate:
            return NothingChanged(
                f"the connection was lost while applying migration {migration.name} ({migration.path}): "
                f"{pg_error_text(exc, self.spec)}; the transaction was not committed",
                migration=migration.name,
                file=migration.path,
            )
        return RolledBack(
            f"migration {migration.name} ({migration.path}) failed{at}: {pg_error_text(exc, self.spec)}"
            + (f" (SQLSTATE {sqlstate})" if sqlstate else ""),
            migration=migration.name,
            file=migration.path,
            line=line,
            sqlstate=sqlstate,
        )

    def _step_error(self, step: str, exc: Exception) -> RingHubError:
        sqlstate = getattr(exc, "pgcode", None)
        lost = " (connection lost)" if self.conn.closed else ""
        hint = ""
        if sqlstate == LOCK_NOT_AVAILABLE:
            hint = (
                f". Another session holds a lock on the schema's objects longer than lock_timeout "
                f"({self.opts.lock_timeout}): "
                + (
                    "it could not be terminated (see the warnings); stop it or raise lock_timeout"
                    if self.opts.terminate_sessions
                    else "stop the hub (or set terminate_sessions: true) or raise lock_timeout"
                )
            )
        return RolledBack(
            f"the reset failed at step '{step}'{lost}: {pg_error_text(exc, self.spec)}"
            + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
            + hint,
            step=step,
        )

    def _commit(self) -> None:
        self.committing = True
        look = "look at the schema and _prisma_migrations"
        self.commit_lsn, warning = commit(self.conn, self.spec, "the reset", "the new schema", look)
        if warning:
            self.warnings.append(warning)


def terminate_other_sessions(
    cur: Any, spec: ConnSpec, server_version_num: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Terminate the other client sessions of the database (never a reset lock holder), a savepoint each.

    Returns ``(pid, user, application, terminated[, reason])`` of each, and a warning for each left running.
    """
    out = []
    warnings = []
    wait = server_version_num >= 140000
    for pid, user, app in other_sessions(cur):
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
            ok, reason = False, pg_error_text(exc, spec)
        entry: dict[str, Any] = {"pid": pid, "user": user, "application": app, "terminated": ok}
        if reason:
            entry["reason"] = reason
            warnings.append(f"session pid {pid} (user {user!r}) was not terminated: {reason}")
        out.append(entry)
    return out, warnings


def wal_position(conn: Any, spec: ConnSpec, what: str) -> tuple[str | None, str | None]:
    """The WAL insert position right after a COMMIT, on the same connection, and a warning when unread.

    The COMMIT record is inserted before the server answers the COMMIT, so this
    position is at or past its end, even with ``synchronous_commit = off`` (where
    ``pg_current_wal_lsn()``, the write position, may still be behind it). A
    standby that has replayed up to it sees what was committed. Reading it cannot
    undo the commit: a failure here is a warning and ``None``.
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_insert_lsn()::text")
            value = cur.fetchone()[0]
        if not conn.autocommit:
            conn.commit()  # ends the read's own transaction
        return str(value), None
    except psycopg2.Error as exc:
        rollback_quietly(conn)
        return None, f"{what} is committed, but its WAL position could not be read: {pg_error_text(exc, spec)}"


def commit(conn: Any, spec: ConnSpec, what: str, change: str, look: str) -> tuple[str | None, str | None]:
    """COMMIT ``conn``'s transaction: ``(commit_lsn, warning)``, or the typed error of a failed COMMIT.

    An unanswered COMMIT is ``OutcomeUnknown`` ("... so <change> may or may not be in place; <look>");
    an error answer is ``RolledBack`` (PostgreSQL committed nothing).
    """
    try:
        conn.commit()
    except psycopg2.Error as exc:
        sqlstate = getattr(exc, "pgcode", None)
        if conn.closed or not sqlstate:
            raise OutcomeUnknown(
                f"COMMIT of {what} got no answer ({pg_error_text(exc, spec)}): the connection was lost "
                f"after the COMMIT was sent, so {change} may or may not be in place; {look}",
                step="COMMIT",
            ) from None
        # PostgreSQL answered the COMMIT with an error (a deferred constraint, a serialization failure):
        # it committed nothing.
        raise RolledBack(
            f"COMMIT of {what} failed: {pg_error_text(exc, spec)} (SQLSTATE {sqlstate})",
            step="COMMIT",
            sqlstate=sqlstate,
        ) from None
    return wal_position(conn, spec, what[:1].upper() + what[1:])


def _grantee(grantee: str) -> Any:
    return sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)


def _grant_option(grantable: bool) -> Any:
    return sql.SQL(" WITH GRANT OPTION" if grantable else "")
