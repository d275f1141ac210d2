# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a backup made by pg_schema_reset: the pg_restore_backup module (private to the collection).

``restore_backup(params, check_mode)`` is the module. Order of work:

1. validate the options and the backup: a regular file (``pg_dump --format=custom``) or a
   directory of regular files with a ``toc.dat`` (``--format=directory``);
2. its sha256 against the one the reset recorded (``sha256``, and/or the
   audit line of ``audit_log`` that names the file): a file that differs is
   refused before anything is connected to;
3. ``pg_restore --list`` reads it and it holds the data of the hub's schema;
4. connect, take the reset lock (``_pg_lock``), check the environment marker
   (and, with ``target_database``, that the new database does not exist and may
   be created);
5. restore: into the connected database ``pg_restore --clean --if-exists
   --single-transaction --exit-on-error --schema=<schema>`` after terminating the
   other sessions (``lock_timeout`` through ``PGOPTIONS``); into a new database,
   ``CREATE DATABASE ... TEMPLATE template0`` and the same without ``--clean``
   (the new database is dropped again when the restore fails);
6. count the rows of every table restored.

A failed restore is rolled back by PostgreSQL (one transaction): ``RolledBack``;
only a COMMIT whose answer was lost is ``OutcomeUnknown``. Check mode runs steps
1 to 4 and tells what would be replaced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    OutcomeUnknown,
    PhaseTimer,
    RingHubError,
    RolledBack,
    failing_with,
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
    _client_env,
    _resolve_tool,
    backup_sha256,
    backup_size,
    directory_files,
    dump_tables,
    tool_version,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import (
    RESET_LOCK_KEY,
    SchemaState,
    count_rows,
    read_state,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_lock import release_reset_lock, take_reset_lock
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import (
    terminate_other_sessions,
    wal_position,
)

APPLICATION_NAME = "threadring.ringhub.pg_restore_backup"
DEFAULT_LOCK_TIMEOUT = "10s"
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOCK_TIMEOUT_RE = re.compile(r"^\d+\s*(ms|s|min)?$")
DATABASE_NAME_RE = re.compile(r"^[^\x00]{1,63}$")


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options of pg_restore_backup: the PostgreSQL connection, the backup file and what proves it."""
    spec = pg_argument_spec()
    spec.update(
        path=dict(type="path", required=True),
        sha256=dict(type="str"),
        audit_log=dict(type="path"),
        target_database=dict(type="str"),
        expected_environment=dict(type="str"),
        pg_restore_path=dict(type="path"),
        terminate_sessions=dict(type="bool", default=True),
        lock_timeout=dict(type="str", default=DEFAULT_LOCK_TIMEOUT),
    )
    return spec


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[PSYCOPG2],
    secret_env=[URL_ENV],
    mutually_exclusive=pg_mutually_exclusive(),
    required_one_of=[["sha256", "audit_log"]],
)


def file_sha256(path: str) -> str:
    """The sha256 pg_schema_reset recorded: of the file, or of a directory backup's manifest."""
    return backup_sha256(path)


def audit_records_for(audit_log: str, path: str) -> list[dict[str, Any]]:
    """The audit records (newest last) whose ``details.backup.path`` is ``path`` (same file, links resolved)."""
    try:
        with open(audit_log, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise RingHubError(f"audit_log {audit_log} cannot be read: {exc.strerror}", path=audit_log) from None
    wanted = os.path.realpath(path)
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        backup = (record.get("details") or {}).get("backup") if isinstance(record, dict) else None
        if isinstance(backup, dict) and backup.get("path") and backup.get("sha256"):
            if os.path.realpath(str(backup["path"])) == wanted:
                found.append(record)
    return found


def restore_backup(params: dict[str, Any], check_mode: bool) -> Outcome:
    """The pg_restore_backup module."""
    timer = PhaseTimer()
    spec: ConnSpec | None = None
    run: RestoreRun | None = None
    try:
        with nothing_changed_on_failure():
            spec = spec_from_params(params)
        run = RestoreRun(spec, params, check_mode, timer)
        result = run.run()
    except RingHubError as exc:
        if spec is not None:
            exc.msg = spec.redact(exc.msg)
            exc.add_context(
                [*spec.warnings, *(run.warnings if run else [])],
                connection=spec.describe(),
                seconds=dict(timer.seconds),
            )
        raise
    return Outcome(changed=True, result=result, warnings=[*spec.warnings, *run.warnings])


class RestoreRun:
    """One restore (or its check-mode preflight) of one backup file."""

    def __init__(self, spec: ConnSpec, params: dict[str, Any], check_mode: bool, timer: PhaseTimer) -> None:
        self.spec = spec
        self.schema = spec.schema
        self.path = os.path.abspath(params["path"])
        self.sha256: str | None = params.get("sha256") or None
        self.audit_log: str | None = params.get("audit_log") or None
        self.target: str | None = params.get("target_database") or None
        self.expected: str | None = params.get("expected_environment")
        self.pg_restore_path: str | None = params.get("pg_restore_path")
        self.terminate = bool(params.get("terminate_sessions", True))
        self.lock_timeout = str(params.get("lock_timeout") or DEFAULT_LOCK_TIMEOUT)
        self.check_mode = check_mode
        self.timer = timer
        self.conn: Any = None
        self.locked = False
        self.state = SchemaState()
        self.warnings: list[str] = []
        self.pg_restore = ""

    # -- checks that touch nothing -----------------------------------------------
    def validate(self) -> None:
        if self.sha256 is not None and not SHA256_RE.match(self.sha256.strip()):
            raise NothingChanged(f"sha256 {self.sha256!r} is not a SHA-256 (64 hexadecimal digits)", option="sha256")
        if self.expected is not None and not ENVIRONMENT_RE.match(self.expected):
            raise NothingChanged(f"expected_environment {self.expected!r} must be 1-63 letters, digits, '_', '.', '-'")
        if not LOCK_TIMEOUT_RE.match(self.lock_timeout.strip()):
            raise NothingChanged(f"lock_timeout {self.lock_timeout!r} must look like 10s, 500ms or 1min")
        if self.target is not None:
            if not DATABASE_NAME_RE.match(self.target):
                raise NothingChanged(f"target_database {self.target!r} must be 1 to 63 characters")
            if self.target == self.spec.dbname:
                raise NothingChanged(
                    f"target_database {self.target!r} is the connected database: leave target_database unset to "
                    "restore into it"
                )

    def check_file(self) -> dict[str, Any]:
        """The backup is a regular file (or a directory backup of regular files) whose sha256 is the recorded one."""
        path = self.path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise NothingChanged(f"backup file {path} cannot be read: {exc.strerror}", path=path) from None
        directory = stat.S_ISDIR(st.st_mode)
        if not (directory or stat.S_ISREG(st.st_mode)):
            raise NothingChanged(f"backup file {path} is not a regular file (nor a directory backup)", path=path)
        try:
            modes = {path: st.st_mode}
            if directory:
                modes.update({os.path.join(path, n): os.lstat(os.path.join(path, n)).st_mode
                              for n in directory_files(path)})  # fmt: skip
            open_to_others = [name for name, mode in modes.items() if mode & 0o077]
            if open_to_others:
                self.warnings.append(
                    f"backup {path} is readable by others ({', '.join(open_to_others[:5])}): it holds every row of "
                    f"the hub; chmod {'-R go-rwx' if directory else '0600'} it"
                )
            actual = file_sha256(path)
            size = backup_size(path)
        except RingHubError as exc:
            raise NothingChanged(exc.msg, path=path) from None
        except OSError as exc:
            raise NothingChanged(f"backup {path} cannot be read: {exc.strerror}", path=path) from None
        expected: dict[str, str] = {}
        audit: dict[str, Any] | None = None
        if self.sha256:
            expected["the sha256 option"] = self.sha256.strip().lower()
        if self.audit_log:
            found = audit_records_for(self.audit_log, path)
            if not found:
                raise NothingChanged(
                    f"no audit line of {self.audit_log} names the backup {path}: it was not made by a recorded reset "
                    "(or the audit log is another one); give the sha256 from the reset's result (sha256 option) if "
                    "you are sure of the file",
                    path=path,
                )
            audit = found[-1]
            shas = {str(r["details"]["backup"]["sha256"]).lower() for r in found}
            if len(shas) > 1:
                raise NothingChanged(
                    f"the audit lines of {self.audit_log} give {len(shas)} different sha256 for {path}: "
                    f"{', '.join(sorted(shas))}; give the right one with the sha256 option",
                    path=path,
                )
            expected[f"the audit line of {audit.get('time', '?')} in {self.audit_log}"] = shas.pop()
        if len(set(expected.values())) > 1:
            raise NothingChanged(
                f"the sha256 recorded for {path} disagree: "
                + "; ".join(f"{where_} says {value}" for where_, value in expected.items()),
                path=path,
            )
        source, wanted = next(iter(expected.items()))
        if actual != wanted:
            raise NothingChanged(
                f"backup file {path} has sha256 {actual}, not {wanted} ({source}): it was changed after the "
                "reset made it, or it is another file; it is not restored",
                path=path,
                sha256=actual,
                expected_sha256=wanted,
            )
        facts: dict[str, Any] = {
            "path": path,
            "format": "directory" if directory else "custom",
            "size": size,
            "sha256": actual,
            "sha256_source": ", ".join(expected),
        }
        if audit is not None:
            details = audit.get("details") or {}
            facts["audit"] = {
                "time": audit.get("time"),
                "event": audit.get("event"),
                "run_id": details.get("run_id"),
                "environment": details.get("environment"),
                "database": (details.get("database") or {}).get("database"),
            }
            recorded_env = details.get("environment")
            if self.expected is not None and recorded_env and recorded_env != self.expected:
                raise NothingChanged(
                    f"the audit line of backup {path} names environment {recorded_env!r}, not {self.expected!r}: it is "
                    "another environment's backup",
                    path=path,
                )
        return facts

    def check_archive(self, facts: dict[str, Any]) -> None:
        """``pg_restore --list`` reads the file and finds the data of the hub's schema in it."""
        self.pg_restore = _resolve_tool("pg_restore", "pg_restore_path", self.pg_restore_path)
        version = tool_version(self.pg_restore)[0]
        listing = subprocess.run(
            [self.pg_restore, "--list", self.path],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"},
        )
        if listing.returncode != 0:
            raise NothingChanged(
                f"pg_restore --list cannot read the backup {self.path}: {listing.stderr.strip()[-1000:]}",
                path=self.path,
            )
        tables = dump_tables(listing.stdout, self.schema)
        if not tables:
            raise NothingChanged(
                f"the backup {self.path} holds no table data of schema {self.schema!r}", path=self.path
            )
        facts.update(
            toc_entries=sum(1 for line in listing.stdout.splitlines() if re.match(r"^\d+;", line)),
            tables=sorted(tables),
            pg_restore=self.pg_restore,
            pg_restore_version=version,
        )

    # -- orchestration ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "connection": self.spec.describe(),
            "schema": self.schema,
            "lock_key": RESET_LOCK_KEY,
            "target_database": self.target or self.spec.dbname,
            "new_database": self.target is not None,
        }
        try:
            with nothing_changed_on_failure():
                self.validate()
                with self.timer.phase("verify_file"):
                    result["backup"] = facts = self.check_file()
                    self.check_archive(facts)
                try:
                    with self.timer.phase("connect"):
                        self.conn = connect(self.spec, APPLICATION_NAME)
                    with self.timer.phase("lock"):
                        take_reset_lock(self.conn, self.spec)
                        self.locked = True
                    with self.timer.phase("preflight"):
                        self.preflight(result)
                except psycopg2.Error as exc:
                    raise RingHubError(
                        f"PostgreSQL error before the restore ({where(self.spec)}): {pg_error_text(exc, self.spec)}",
                        sqlstate=getattr(exc, "pgcode", None),
                    ) from None
            if self.check_mode:
                return self.finish(result)
            with self.timer.phase("restore"), failing_with(self.warnings):
                result.update(self.restore(facts))
            with self.timer.phase("count"), failing_with(self.warnings):
                result["restored"] = self.count(facts)
            return self.finish(result)
        finally:
            self.close()

    def preflight(self, result: dict[str, Any]) -> None:
        with self.conn.cursor() as cur:
            self.state = state = read_state(cur, self.schema)
            replaced = count_rows(cur, self.schema, state.tables) if self.target is None else []
            exists = False
            if self.target is not None:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.target,))
                exists = cur.fetchone() is not None
        result.update(
            database=state.database,
            server_version=state.server_version,
            role=state.current_user,
            environment={"key": MARKER_KEY, "expected": self.expected, "found": state.marker},
        )
        problems = []
        marker = state.marker
        if self.expected is not None and marker is not None and marker != self.expected:
            problems.append(
                f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}), not "
                f"{self.expected!r}: the connection settings most likely point at another environment's database"
            )
        if self.expected is None and marker is not None:
            problems.append(
                f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}); if this is the "
                f"database you mean, set expected_environment: {marker}"
            )
        if self.target is not None:
            if exists:
                problems.append(
                    f"target_database {self.target!r} exists already: the restore into a new database never "
                    "overwrites one; name another, or drop it first"
                )
            if not state.can_create_database:
                problems.append(f"role {state.current_user!r} may not create databases (it needs CREATEDB)")
        if problems:
            raise NothingChanged("restore refused: " + "; ".join(problems), problems=problems)
        if self.target is None:
            result["replaced" if not self.check_mode else "would_replace"] = {
                "tables": replaced,
                "total_rows": sum(t["rows"] or 0 for t in replaced),
            }
            not_in_backup = sorted(set(state.tables) - set(result["backup"]["tables"]))
            if not_in_backup:
                self.warnings.append(
                    f"tables of schema {self.schema!r} that the backup does not hold are left as they are: "
                    f"{', '.join(not_in_backup)}"
                )

    def restore(self, facts: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dbname = self.target or self.spec.dbname or ""
        created = False
        try:
            if self.target is None and self.terminate:
                self.conn.autocommit = False
                with self.conn.cursor() as cur:
                    out["terminated_sessions"], warnings = terminate_other_sessions(
                        cur, self.spec, self.state.server_version_num
                    )
                self.conn.commit()
                self.conn.autocommit = True
                self.warnings.extend(warnings)
            if self.target is not None:
                with self.conn.cursor() as cur:
                    cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(self.target)))
                created = True
        except psycopg2.Error as exc:
            rollback_quietly(self.conn)
            raise NothingChanged(f"the restore could not start: {pg_error_text(exc, self.spec)}") from None
        target_spec = dataclasses.replace(self.spec, dbname=dbname)
        env = _client_env(target_spec, APPLICATION_NAME + ".pg_restore")
        lock_timeout = self.lock_timeout.strip().replace(" ", "")
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={lock_timeout}".strip()
        cmd = [self.pg_restore, "--single-transaction", "--exit-on-error", "--no-password", f"--schema={self.schema}"]
        if self.target is None:
            cmd += ["--clean", "--if-exists"]
        cmd += ["--dbname", dbname, self.path]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        out["command"] = " ".join(cmd[:-3] + ["--dbname", dbname, self.path])
        if proc.returncode != 0:
            error = self.spec.redact(proc.stderr.strip()[-2000:])
            if created:
                self._drop_new_database()
            if "Command was: COMMIT" in proc.stderr and ("server closed" in proc.stderr or "connection" in proc.stderr):
                raise OutcomeUnknown(
                    f"pg_restore of {self.path} into database {dbname!r} lost its connection at the COMMIT: the "
                    f"restore may or may not be in place; look at the tables of schema {self.schema!r}: {error}",
                    step="COMMIT",
                )
            hint = ""
            if "lock timeout" in proc.stderr:
                hint = (
                    f". A session held a lock on the hub's tables longer than lock_timeout ({self.lock_timeout}): "
                    "stop the hub, or raise lock_timeout, and run the restore again"
                )
            what = "the new database was dropped again" if created else "nothing was restored"
            raise RolledBack(
                f"pg_restore of {self.path} into database {dbname!r} failed (exit {proc.returncode}; it ran in one "
                f"transaction, so {what}): {error}{hint}",
                step="pg_restore",
            )
        out["commit_lsn"], warning = wal_position(self.conn, self.spec, "The restore")
        if warning:
            self.warnings.append(warning)
        return out

    def _drop_new_database(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.target)))
        except psycopg2.Error as exc:
            self.warnings.append(
                f"the new database {self.target!r} could not be dropped after the failed restore "
                f"({pg_error_text(exc, self.spec)}): drop it by hand"
            )

    def count(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The rows of every table of the schema in the target, read after the restore."""
        target_spec = dataclasses.replace(self.spec, dbname=self.target or self.spec.dbname)
        try:
            conn = connect(target_spec, APPLICATION_NAME) if self.target else self.conn
            try:
                with conn.cursor() as cur:
                    tables = read_state(cur, self.schema).tables
                    rows = count_rows(cur, self.schema, tables)
            finally:
                if self.target:
                    conn.close()
        except (psycopg2.Error, RingHubError) as exc:
            text = exc.msg if isinstance(exc, RingHubError) else pg_error_text(exc, self.spec)
            self.warnings.append(f"the restore is committed, but its rows could not be counted: {text}")
            return {"database": target_spec.dbname, "schema": self.schema, "tables": [], "total_rows": None}
        missing = sorted(set(facts["tables"]) - {t["name"] for t in rows})
        if missing:
            self.warnings.append(f"tables of the backup missing after the restore: {', '.join(missing)}")
        return {
            "database": target_spec.dbname,
            "schema": self.schema,
            "tables": rows,
            "total_rows": sum(t["rows"] or 0 for t in rows),
        }

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        result["seconds"] = dict(self.timer.seconds, total=self.timer.total)
        result["summary"] = summary_line(result, self.check_mode)
        return result

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            rollback_quietly(self.conn)
            if self.locked:
                release_reset_lock(self.conn)
                self.locked = False
            self.conn.close()


def summary_line(result: dict[str, Any], check_mode: bool) -> str:
    """One line for a playbook summary or an audit record (no secrets in it)."""
    backup = result.get("backup", {})
    into = f"new database {result['target_database']}" if result.get("new_database") else (
        f"database {result.get('database')}"
    )  # fmt: skip
    head = f"backup {backup.get('path')} (sha256 {backup.get('sha256')}, checked against {backup.get('sha256_source')})"
    if check_mode:
        replaced = result.get("would_replace")
        extra = f", replacing {replaced['total_rows']} rows" if replaced else ""
        return (
            f"{head}: would restore schema {result.get('schema')} ({len(backup.get('tables', []))} tables) into "
            f"{into}{extra}, {result['seconds']['total']} s"
        )
    restored = result.get("restored", {})
    return (
        f"{head}: restored schema {result.get('schema')} into {into}, {len(restored.get('tables', []))} tables "
        f"({restored.get('total_rows')} rows), {result['seconds']['total']} s"
    )
