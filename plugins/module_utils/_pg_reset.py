# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drop and recreate the Ring Hub's schema from its own Prisma migrations, in one transaction.

``reset_schema(params, check_mode)`` is the pg_schema_reset module. Order of
work (``SchemaReset.run()``):

1. validate: options, migrations (``_pg_migrations``: they load, decode and hold
   no statement that cannot run in a transaction), the root ring;
2. connect and take the reset lock: ``pg_try_advisory_lock(RESET_LOCK_KEY)``,
   session level, held until the end; a held lock fails at once;
3. preflight (``_pg_catalog``): the role may drop and recreate the schema (with
   its owner, privileges and default privileges), the environment marker (a
   ``ringhub.environment=<name>`` line in the database comment) matches, the
   client tools are new enough (and know ``backup_compress``), the backup directory is writable;
4. backup (``_pg_backup``): ``pg_dump -Fc --compress=<backup_compress>`` into ``backup_dir`` (mode 0600),
   read back with ``pg_restore --list``, in a snapshot whose row counts are kept;
5. the one transaction (``_pg_transaction``): drop, recreate, migrate, record,
   seed the root ring, mark the environment, commit.

Every failure up to the COMMIT leaves the database as it was and is raised as
``NothingChanged`` (``RolledBack`` from inside the transaction); only a COMMIT
whose answer is lost is ``OutcomeUnknown``. Check mode runs steps 1 to 3 and
reports what would be dropped, applied and seeded. ``progress_file``
(``_pg_progress``) reports the phase and the backup's progress meanwhile.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    PhaseTimer,
    RingHubError,
    nothing_changed_on_failure,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    MARKER_KEY,
    PSYCOPG2,
    URL_ENV,
    ConnSpec,
    connect,
    pg_argument_spec,
    pg_error_text,
    pg_mutually_exclusive,
    psycopg2,
    rollback_quietly,
    spec_from_params,
    sql,
    where,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import (
    BACKUP_FORMATS,
    DEFAULT_COMPRESS,
    Tools,
    check_backup_dir,
    check_compress_supported,
    find_tools,
    make_backup,
    parse_compress,
    restore_drill,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import (
    RESET_LOCK_KEY,
    SchemaState,
    count_rows,
    read_state,
    role_rights,
    unreadable_tables,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_kept import (
    DEFAULT_KEEP_FOR,
    KeptRecord,
    iso,
    kept_listing,
    kept_name,
    kept_name_problem,
    parse_kept,
    parse_retention,
    schema_sizes,
    server_now,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_lock import release_reset_lock, take_reset_lock
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import (
    Migration,
    check_migrations,
    load_migrations_dir,
    load_sql_files,
    prepare_migrations,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_progress import PROGRESS_PHASES, Progress
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import ResetTransaction
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    RingSeeder,
    RootRing,
    seed_argument_spec,
)

ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOCK_TIMEOUT_RE = re.compile(r"^\d+\s*(ms|s|min)?$")
SYSTEM_SCHEMA_RE = re.compile(r"^(pg_.*|information_schema)$")
APPLICATION_NAME = "threadring.ringhub.pg_schema_reset"
DEFAULT_LOCK_TIMEOUT = "10s"


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options of pg_schema_reset: the PostgreSQL connection, the migrations and the safety options."""
    spec = pg_argument_spec()
    spec.update(
        migrations_dir=dict(type="path"),
        sql_files=dict(type="list", elements="path"),
        expected_environment=dict(type="str"),
        backup=dict(type="bool", default=True),
        backup_dir=dict(type="path"),
        backup_format=dict(type="str", choices=list(BACKUP_FORMATS), default="custom"),
        backup_jobs=dict(type="int", default=1),
        backup_compress=dict(type="str", default=DEFAULT_COMPRESS),
        pg_dump_path=dict(type="path"),
        pg_restore_path=dict(type="path"),
        terminate_sessions=dict(type="bool", default=True),
        lock_timeout=dict(type="str", default=DEFAULT_LOCK_TIMEOUT),
        allow_outside_drops=dict(type="bool", default=False),
        migrations_role=dict(type="str"),
        strip_transaction_control=dict(type="bool", default=False),
        root_ring=dict(type="dict", options=seed_argument_spec()),
        progress_file=dict(type="path"),
        keep_previous=dict(type="bool", default=False),
        keep_previous_for=dict(type="str", default=DEFAULT_KEEP_FOR),
        restore_drill=dict(type="bool", default=False),
    )
    return spec


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[PSYCOPG2],
    secret_env=[URL_ENV],
    mutually_exclusive=[*pg_mutually_exclusive(), ["migrations_dir", "sql_files"]],
    required_one_of=[["migrations_dir", "sql_files"]],
    required_if=[("backup", True, ["backup_dir"])],
)


@dataclass
class ResetOptions:
    schema: str
    expected_environment: str | None = None
    backup: bool = True
    backup_dir: str | None = None
    backup_format: str = "custom"
    backup_jobs: int = 1
    backup_compress: str = DEFAULT_COMPRESS
    pg_dump_path: str | None = None
    pg_restore_path: str | None = None
    terminate_sessions: bool = True
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    allow_outside_drops: bool = False
    migrations_role: str | None = None
    root_ring: RootRing | None = None
    keep_previous: bool = False
    keep_previous_for: str = DEFAULT_KEEP_FOR
    restore_drill: bool = False
    check_mode: bool = False

    @property
    def keep_for(self) -> datetime.timedelta:
        """The retention of the kept schema (``keep_previous_for``; validated by ``validate_options``)."""
        return parse_retention(self.keep_previous_for)

    @classmethod
    def from_params(cls, params: dict[str, Any], schema: str, check_mode: bool) -> ResetOptions:
        """From the module's parameters (shaped by ``argument_spec()``) and the connection's schema."""
        names = ("expected_environment", "backup", "backup_dir", "backup_format", "backup_jobs", "backup_compress",
                 "pg_dump_path", "pg_restore_path",
                 "terminate_sessions", "lock_timeout", "allow_outside_drops", "migrations_role", "keep_previous",
                 "keep_previous_for", "restore_drill")  # fmt: skip
        ring = params.get("root_ring")
        return cls(
            schema=schema,
            root_ring=RootRing.from_params(ring) if ring is not None else None,
            check_mode=check_mode,
            **{name: params[name] for name in names},
        )


def load_migrations(params: dict[str, Any]) -> tuple[list[Migration], dict[str, list[int]]]:
    """The migrations to apply, checked and prepared, and the transaction brackets removed (name: lines)."""
    if params.get("migrations_dir"):
        migrations = load_migrations_dir(params["migrations_dir"])
    else:
        migrations = load_sql_files(params["sql_files"])
    strip = bool(params.get("strip_transaction_control"))
    check_migrations(migrations, strip)
    return prepare_migrations(migrations, strip)


def reset_schema(params: dict[str, Any], check_mode: bool) -> Outcome:
    """The pg_schema_reset module: validate, lock, back up, reset (or, in check mode, report), summarize."""
    progress = Progress(params.get("progress_file"), check_mode=check_mode)
    timer = PhaseTimer()
    spec: ConnSpec | None = None
    reset: SchemaReset | None = None
    try:
        with nothing_changed_on_failure():
            progress.start()
            spec = spec_from_params(params)
            progress.redact = spec.redact
            with timer.phase("validate"):
                migrations, stripped = load_migrations(params)
            options = ResetOptions.from_params(params, spec.schema, check_mode)
        reset = SchemaReset(spec, options, migrations, timer, progress)
        result = reset.run()
    except RingHubError as exc:
        if reset is not None:
            reset.add_failure_context(exc)
        if spec is not None:
            exc.msg = spec.redact(exc.msg)
            exc.add_context(
                [*spec.warnings, *(reset.warnings if reset else []), *filter(None, [progress.warning])],
                connection=spec.describe(),
                seconds=dict(timer.seconds),
            )
        else:
            exc.add_context(seconds=dict(timer.seconds))
        if "lock_key" in exc.details and reset is not None and not reset.locked:
            # Refused at the lock: the file is the report of the run that holds it; put it back.
            progress.restore_previous()
        else:
            progress.fail(exc.operator_message)
        raise
    except Exception as exc:
        progress.fail(f"unexpected error: {spec.redact(str(exc)) if spec else type(exc).__name__}")
        raise
    warnings = [*spec.warnings, *reset.warnings]
    result["transaction_control_removed"] = stripped
    if stripped:
        warnings.append(f"transaction brackets were removed from migrations (name: lines): {stripped}")
    progress.done(result["summary"])
    if progress.warning:
        warnings.append(progress.warning)
    return Outcome(changed=True, result=result, warnings=warnings)


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
        self.warnings: list[str] = []
        self.state = SchemaState()
        self.kept_records: list[KeptRecord] = []
        self.kept_listing: list[dict[str, Any]] = []
        self.schema_size = 0
        self.kept_existing: list[str] = []
        self.server_time: datetime.datetime | None = None
        self.backup_info: dict[str, Any] | None = None
        self.previous_run: dict[str, Any] | None = None

    # -- validation --------------------------------------------------------------
    def validate_options(self) -> None:
        opts = self.opts
        if SYSTEM_SCHEMA_RE.match(opts.schema):
            raise NothingChanged(f"refusing to reset the system schema {opts.schema!r}")
        if opts.expected_environment is not None and not ENVIRONMENT_RE.match(opts.expected_environment):
            raise NothingChanged(
                f"expected_environment {opts.expected_environment!r} must be 1-63 letters, digits, '_', '.', '-'"
            )
        if not LOCK_TIMEOUT_RE.match(opts.lock_timeout.strip()):
            raise NothingChanged(f"lock_timeout {opts.lock_timeout!r} must look like 10s, 500ms or 1min")
        if opts.backup and not opts.backup_dir:
            raise NothingChanged("backup_dir is required unless backup is false")
        if opts.restore_drill and not opts.backup:
            raise NothingChanged("restore_drill restores the backup: it needs backup: true")
        if not 1 <= opts.backup_jobs <= 64 or (opts.backup_jobs > 1 and opts.backup_format != "directory"):
            raise NothingChanged(
                f"backup_jobs {opts.backup_jobs} must be 1 to 64, and more than 1 only with backup_format directory",
                option="backup_jobs",
            )
        try:
            parse_compress(opts.backup_compress)
        except RingHubError as exc:
            raise NothingChanged(exc.msg, option="backup_compress") from None
        try:
            parse_retention(opts.keep_previous_for)
        except RingHubError as exc:
            raise NothingChanged(exc.msg, option="keep_previous_for") from None
        if opts.keep_previous:
            problem = kept_name_problem(opts.schema)
            if problem:
                raise NothingChanged(f"keep_previous: {problem}", option="keep_previous")
        if opts.root_ring is not None:
            try:
                opts.root_ring.validate()
            except RingHubError as exc:
                raise NothingChanged(f"root_ring: {exc.msg}", option="root_ring") from None

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """One phase: timed (``seconds``) and reported in the progress file."""
        self.progress.phase(name)
        with self.timer.phase(name):
            yield

    def take_lock(self) -> None:
        take_reset_lock(self.conn, self.spec)
        self.locked = True

    def preflight(self) -> None:
        opts = self.opts
        with self.conn.cursor() as cur:
            self.state = state = read_state(cur, opts.schema)
            unreadable = unreadable_tables(cur, opts.schema)
            self.server_time = server_now(cur)
            self.kept_records, kept_warnings = parse_kept(state.database_comment)
            self.warnings.extend(kept_warnings)
            self.kept_listing = kept_listing(cur, self.kept_records, self.server_time, opts.schema)
            # Every kept schema of the database (of any hub schema): unreadable, so left out of the backup.
            self.kept_existing = sorted(schema_sizes(cur, [r.name for r in self.kept_records]))
            self.schema_size = schema_sizes(cur, [opts.schema]).get(opts.schema, {}).get("size_bytes", 0)
        problems: list[str] = self.undo_window_problems()
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
                row = role_rights(cur, opts.schema, role)
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
            raise NothingChanged(
                "preflight failed: " + "; ".join(problems),
                problems=problems,
                environment=self.environment_result(marked=False),
            )

    def undo_window_problems(self) -> list[str]:
        """What keeps ``keep_previous`` (and ``restore_drill``) from working here; warnings on the way."""
        opts, state = self.opts, self.state
        problems: list[str] = []
        who = f"role {state.current_user!r}"
        if opts.keep_previous and state.schema_exists:
            if state.extensions:
                problems.append(
                    f"keep_previous cannot keep schema {opts.schema!r}: extensions {', '.join(state.extensions)} are "
                    "installed in it and would stay with the kept schema, out of reach of the new one (move them "
                    "with ALTER EXTENSION ... SET SCHEMA, or set keep_previous: false)"
                )
            if state.outside:
                problems.append(
                    f"keep_previous cannot keep schema {opts.schema!r}: objects in other schemas depend on it and "
                    f"would follow the kept schema ({', '.join(state.outside)})"
                )
            if not state.can_mark:
                problems.append(
                    f"keep_previous records the kept schema in the database comment, which {who} may not write "
                    f"(only the owner of database {state.database!r}, {state.database_owner!r}, a member of it, or a "
                    "superuser can)"
                )
        elif opts.keep_previous:
            self.warnings.append(f"keep_previous: schema {opts.schema!r} does not exist yet, so nothing is kept")
        expired = [k["name"] for k in self.kept_listing if k["expired"]]
        if expired and not state.can_mark:
            self.warnings.append(
                f"kept schemas past their retention are left in place ({', '.join(expired)}): {who} may not write "
                "the database comment that records them"
            )
        if opts.restore_drill and not state.can_create_database:
            problems.append(
                f"restore_drill restores the backup into a scratch database, which {who} may not create "
                "(it needs CREATEDB), or set restore_drill: false"
            )
        return problems

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

    def _root_ring_result(self, seeded: Outcome | dict[str, Any], environment: str | None) -> dict[str, Any]:
        if isinstance(seeded, Outcome):
            self.warnings.extend(seeded.warnings)
            seeded = dict(seeded.result, changed=seeded.changed)
        return dict(seeded, environment=environment)

    # -- orchestration --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """The reset (in check mode: the preflight and what it would do); raises a typed ``RingHubError``."""
        opts = self.opts
        result: dict[str, Any] = {
            "connection": self.spec.describe(),
            "schema": opts.schema,
            "lock_key": RESET_LOCK_KEY,
            "migrations": [{"name": m.name, "checksum": m.checksum} for m in self.migrations],
        }
        try:
            with nothing_changed_on_failure():
                self.validate_options()
                try:
                    return self._run(result)
                except psycopg2.Error as exc:
                    # Only the transaction commits, and it turns its own errors into typed ones.
                    raise RingHubError(
                        f"PostgreSQL error before the reset ({where(self.spec)}): {pg_error_text(exc, self.spec)}",
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
            self.previous_run = self.read_previous_run()
            if self.previous_run is not None:
                result["previous_run"] = self.previous_run
                self.warnings.append(self.previous_run["message"])
            state = self.state
            progress.set(database=state.database, database_size=state.database_size)
            tools = None
            if opts.backup:
                tools = find_tools(opts.pg_dump_path, opts.pg_restore_path, state.server_version_num,
                                   state.server_version)  # fmt: skip
                try:
                    check_compress_supported(parse_compress(opts.backup_compress), tools)
                except RingHubError as exc:
                    raise NothingChanged(exc.msg, **exc.details) from None
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
                kept_schemas=self.kept_listing,
            )
            if opts.keep_previous and state.schema_exists:
                self.warnings.append(
                    f"keep_previous: schema {opts.schema!r} ({self.schema_size} bytes) is kept, unreachable for the "
                    f"hub, for {opts.keep_previous_for}; the database holds that disk space until the next reset "
                    "after that, or a purge, drops it"
                )
        if opts.check_mode:
            return self._check_mode_result(result, tools)
        backup_rows: dict[str, int | None] | None = None
        if opts.backup and tools is not None:
            with self._phase("backup"):
                result["backup"], backup_rows = self.backup(tools)
            self.backup_info = result["backup"]
            if opts.restore_drill:
                with self._phase("restore_drill"):
                    result["backup"]["restore_drill"] = self.restore_drill(tools, result["backup"], backup_rows)
                result["backup"]["restore_drill"]["seconds"] = self.timer.seconds["restore_drill"]
        else:
            result["backup"] = {"skipped": True}
        if self.conn.closed:
            # The backup's transaction ended on a broken connection (the server stopped or restarted, or the
            # session was terminated, while pg_dump or pg_restore --list ran).
            raise NothingChanged(
                f"the connection to PostgreSQL ({where(self.spec)}) was lost after the backup, before the reset's "
                "transaction began (the server stopped or restarted, or the session was terminated)"
            )
        with self._phase("reset"):
            out = self.transaction()
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
        result["commit_lsn"] = out.get("commit_lsn")
        result["kept"] = out.get("kept")
        result["purged"] = out.get("purged", [])
        result["kept_schemas"] = out.get("kept_schemas", self.kept_listing)
        if result["kept"]:
            result["kept"]["size_bytes"] = next(
                (k["size_bytes"] for k in result["kept_schemas"] if k["name"] == result["kept"]["name"]), 0
            )
        result["environment"] = self.environment_result(marked=bool(out.get("marked")))
        if "root_ring" in out:
            result["root_ring"] = self._root_ring_result(out["root_ring"], result["environment"]["value"])
        if result["environment"]["marked"]:
            self.warnings.append(
                f"database {state.database!r} had no environment marker; it is now marked as "
                f"{opts.expected_environment!r}"
            )
        return self._finish(result)

    def _check_mode_result(self, result: dict[str, Any], tools: Tools | None) -> dict[str, Any]:
        opts = self.opts
        with self._phase("count"), self.conn.cursor() as cur:
            tables = count_rows(cur, opts.schema, self.state.tables)
        result["dropped"] = self.dropped_summary(tables)
        result["applied"] = []
        result["backup"] = {"skipped": True, "reason": "check mode"} if opts.backup else {"skipped": True}
        if tools:
            result["backup"].update(
                pg_dump=tools.pg_dump,
                pg_dump_version=tools.pg_dump_version,
                compress=parse_compress(opts.backup_compress).value,
            )
        result["environment"] = self.environment_result(marked=False)
        result["would_keep"] = self.would_keep()
        result["would_purge"] = [k for k in self.kept_listing if k["expired"]] if self.state.can_mark else []
        if opts.root_ring is not None:
            preview = RingSeeder(self.spec, opts.root_ring, check_mode=True).preview_fresh(opts.schema)
            result["root_ring"] = self._root_ring_result(preview, result["environment"]["value"])
        return self._finish(result)

    def would_keep(self) -> dict[str, Any] | None:
        """In check mode, what ``keep_previous`` would keep (None without it, or with no schema to keep)."""
        if not (self.opts.keep_previous and self.state.schema_exists and self.server_time is not None):
            return None
        until = self.server_time + self.opts.keep_for
        return {
            "schema": self.opts.schema,
            "name": kept_name(self.opts.schema, "reset", self.server_time),
            "until": iso(until),
            "size_bytes": self.schema_size,
            "keep_for": self.opts.keep_previous_for,
        }

    def read_previous_run(self) -> dict[str, Any] | None:
        """What the progress file said before this run replaced it, when an earlier real run did not end.

        Read under the reset lock, so the run that wrote it is not running any more. ``None`` when the
        file held nothing, a check-mode run's report, or the report of a run that ended (``done`` and
        ``failed`` are removed by the reset playbook once its audit line is written, so a ``done`` left
        behind means that playbook stopped after the schema reset and before its audit line).
        """
        prev = self.progress.previous
        if not prev or prev.get("check_mode") is not False or prev.get("phase") not in PROGRESS_PHASES:
            return None
        if (prev.get("database"), prev.get("schema")) != (self.state.database, self.opts.schema):
            return None
        phase = prev["phase"]
        if phase == "failed":
            return None  # that run reported its own failure
        schema = "old"
        applied_at = None
        if phase in ("reset", "done"):
            applied_at = self.migrations_applied_at()
            started = parse_iso(prev.get("started"))
            schema = "new" if applied_at is not None and started is not None and applied_at >= started else "old"
        backup = prev.get("backup_path")
        where = f"schema {self.opts.schema!r} of database {self.state.database!r}"
        if phase == "done":
            what = (
                f"the previous reset of {where} (started {prev.get('started')}) completed its schema reset at "
                f"{prev.get('updated')}, but its progress file was left in place: the playbooks/reset.yml run that "
                "started it (which removes the file once its audit line is written) ended before that (it was killed "
                "or its terminal closed), so its Redis flush, key step and restart may not have run"
            )
        else:
            what = (
                f"the previous reset of {where} (started {prev.get('started')}) stopped in phase {phase!r} at "
                f"{prev.get('updated')} without reporting an end (its process was killed)"
            )
        state = (
            f"the schema is the new one (its migrations were applied at {iso(applied_at)})"
            if schema == "new"
            else "the schema is the old one (that run's transaction never committed)"
        )
        complete = phase not in ("backup", "verify_backup") and backup
        backup_text = (
            f"its backup {backup}" + (" is complete" if complete else " may be incomplete (its pg_dump did not finish)")
            if backup
            else "it took no backup"
        )
        return {
            "phase": phase,
            "started": prev.get("started"),
            "updated": prev.get("updated"),
            "schema_state": schema,
            "migrations_applied_at": iso(applied_at) if applied_at else None,
            "backup_path": backup,
            "backup_complete": bool(complete),
            "message": f"{what}; {state}; {backup_text}. This run does the whole reset again.",
        }

    def migrations_applied_at(self) -> datetime.datetime | None:
        """When the schema's migrations were applied (``_prisma_migrations``), None without that table."""
        table = sql.Identifier(self.opts.schema, "_prisma_migrations")
        with self.conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),))
            if cur.fetchone()[0] is None:
                return None
            cur.execute(sql.SQL("SELECT min(started_at) FROM {}").format(table))
            row = cur.fetchone()
        return row[0] if row else None

    def add_failure_context(self, exc: RingHubError) -> None:
        """A failure after the backup names the backup and how to restore it (also when nothing changed)."""
        backup = self.backup_info
        if not backup or not backup.get("path") or "restore_hint" in exc.details:
            return
        spec = self.spec
        path = backup["path"]
        target = " ".join(
            part
            for part in (
                f"--host={spec.host}" if spec.host else "",
                f"--port={spec.port}",
                f"--username={spec.user}" if spec.user else "",
                f"--dbname={spec.dbname}",
            )
            if part
        )
        command = f"pg_restore --clean --if-exists --single-transaction --exit-on-error {target} {path}"
        playbook = f"ansible-playbook playbooks/restore.yml -l <hosts> -e ringhub_restore_file={path}"
        outcome = isinstance(exc, OutcomeUnknown)
        lead = (
            "If the schema is not the one you want, restore"
            if outcome
            else "The database is as it was; should you need the data as it was at the backup, restore"
        )
        exc.msg = (
            f"{exc.msg.rstrip().rstrip('.;')}. The backup taken before the reset is {path} "
            f"(sha256 {backup.get('sha256')}). {lead} it with {playbook} (it checks the sha256 first), or by "
            f"hand: {command} (the password from PGPASSWORD or ~/.pgpass)"
        )
        exc.details["backup"] = backup
        exc.details["restore_hint"] = {"file": path, "playbook": playbook, "pg_restore": command}

    def restore_drill(self, tools: Tools, backup: dict[str, Any], rows: dict[str, int | None]) -> dict[str, Any]:
        """Restore the backup into a scratch database and compare its row counts with the backup's snapshot."""
        drill = restore_drill(
            self.conn, self.spec, tools, backup["path"], self.opts.schema, rows,
            application_name=APPLICATION_NAME + ".restore_drill",
        )  # fmt: skip
        self.warnings.extend(drill.pop("warnings"))
        if drill["differences"]:
            raise NothingChanged(
                f"the restore drill of the backup {backup['path']} into a scratch database gave other row counts than "
                f"the database had when it was backed up (table: backup, restored): {drill['differences']}; the "
                "backup file is kept for inspection",
                restore_drill=drill,
                path=backup["path"],
            )
        return drill

    def transaction(self) -> dict[str, Any]:
        """The one transaction (``_pg_transaction``), with what the preflight found."""
        transaction = ResetTransaction(
            self.conn, self.spec, self.opts, self.migrations, self.migrations_role, self.state
        )
        try:
            out = transaction.run()
        finally:
            self.warnings.extend(transaction.warnings)
        self.state = transaction.state
        if "root_ring" in out:
            self.warnings.extend(transaction.seed_warnings)
        return out

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
                counted: dict[str, dict[str, int | None]] = {}

                def count() -> None:  # in the same snapshot, on this connection, while pg_dump runs
                    counted["rows"] = {t["name"]: t["rows"] for t in count_rows(cur, opts.schema, tables)}

                info = make_backup(
                    self.spec, tools, opts.backup_dir or "", opts.schema, tables, snapshot, self.progress,
                    application_name=APPLICATION_NAME + ".backup", exclude_schemas=self.kept_existing,
                    fmt=opts.backup_format, jobs=opts.backup_jobs, during=count, compress=opts.backup_compress,
                )  # fmt: skip
                rows = counted["rows"]
        except psycopg2.Error as exc:
            raise RingHubError(f"the backup transaction failed: {pg_error_text(exc, self.spec)}") from None
        finally:
            rollback_quietly(self.conn)
            if not conn.closed:
                conn.autocommit = True
        info["rows"] = rows
        return info, rows

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        result["seconds"] = dict(self.timer.seconds, total=self.timer.total)
        result["summary"] = summary_line(result, self.opts.check_mode)
        return result

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                rollback_quietly(self.conn)
                self.conn.autocommit = True
                if self.locked:
                    release_reset_lock(self.conn)
                    self.locked = False
            except psycopg2.Error:
                pass
            self.conn.close()


def parse_iso(value: Any) -> datetime.datetime | None:
    """An ISO UTC time of the progress file (``2026-11-28T17:30:00.123Z``), None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def summary_line(result: dict[str, Any], check_mode: bool) -> str:
    """One line for a playbook summary or an audit record (no secrets in it)."""
    dropped = result.get("dropped", {})
    tables = dropped.get("tables", [])
    backup = result.get("backup", {})
    env = result.get("environment", {})
    verb = ("would drop", "would apply") if check_mode else ("dropped", "applied")
    kept = result.get("would_keep") if check_mode else result.get("kept")
    what = f"{len(tables)} tables ({dropped.get('total_rows', 0)} rows)"
    if kept:
        what += f" kept as {kept['name']} until {kept['until']}"
        verb = ("would set aside", verb[1]) if check_mode else ("set aside", verb[1])
    parts = [
        f"schema {result.get('schema')} of database {result.get('database')}:",
        f"{verb[0]} {what},",
        f"{verb[1]} {len(result.get('migrations', []))} migrations,",
        (
            f"backup {backup['path']} ({backup['size']} bytes"
            + (f", compression {backup['compress']}" if backup.get("compress") else "")
            + f", sha256 {backup['sha256']})"
            if backup.get("path")
            else "no backup" + (" (check mode)" if check_mode and backup.get("reason") else "")
        )
        + (
            f" restore drill passed ({len(backup['restore_drill']['tables'])} tables, "
            f"{backup['restore_drill']['seconds']} s)"
            if backup.get("restore_drill")
            else ""
        )
        + ",",
        undo_window_part(result, check_mode),
        root_ring_part(result.get("root_ring"), check_mode),
        f"environment {env.get('value') or 'unmarked'}"
        + (" (marked now)" if env.get("marked") else " (would be marked)" if env.get("would_mark") else "")
        + ",",
        f"{result['seconds']['total']} s",
    ]
    return " ".join(part for part in parts if part)


def undo_window_part(result: dict[str, Any], check_mode: bool) -> str:
    """The purged kept schemas in the summary line ("" when there are none)."""
    parts = []
    purged = result.get("would_purge") if check_mode else result.get("purged")
    if purged:
        names = ", ".join(k["name"] for k in purged)
        parts.append(f"{'would drop' if check_mode else 'dropped'} kept schemas past their retention ({names}),")
    return " ".join(parts)


def root_ring_part(seeded: dict[str, Any] | None, check_mode: bool) -> str:
    """The root ring's words in the summary line ("" without root_ring)."""
    if not seeded:
        return ""
    roles = ", ".join(role["name"] for role in seeded.get("roles", []))
    verb = "would seed" if check_mode else "seeded"
    return f"{verb} root ring {seeded['ring']['slug']} (roles {roles}),"
