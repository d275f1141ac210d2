# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Swap a kept schema back in, or purge kept schemas: the pg_schema_undo module (private to the collection).

``undo_schema(params, check_mode)`` is the module. Order of work:

1. validate the options;
2. connect and take the reset lock (``_pg_lock``: a reset, an undo and a restore
   of one database exclude each other; a held lock fails at once);
3. preflight: the environment marker matches, the role may write the database
   comment, the kept schema exists, is recorded and is within its retention
   (``_pg_kept``), the hub's schema can be set aside (no extensions in it, no
   objects of other schemas depending on it);
4. ``undo``, one transaction: terminate the other sessions, rename the hub's
   schema to ``<schema>_before_undo_<time>_utc`` (so the undo can be undone),
   rename the kept schema to the hub's schema, give it the privileges the hub's
   schema had, revoke every privilege on the schema set aside, move the records
   in the database comment, commit. ``purge``, one transaction: drop the kept
   schemas past their retention (or the one named), remove their records, commit.

Every failure before the COMMIT leaves both schemas as they were
(``NothingChanged`` / ``RolledBack``); only a COMMIT without an answer is
``OutcomeUnknown``. Check mode runs steps 1 to 3 and lists the kept schemas with
their size and what would be swapped or dropped.
"""

from __future__ import annotations

import datetime
import re
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
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import (
    RESET_LOCK_KEY,
    SchemaState,
    count_rows,
    read_state,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_kept import (
    DEFAULT_KEEP_FOR,
    KeptRecord,
    comment_with_kept,
    existing_schemas,
    full_acl,
    grant_acl,
    iso,
    kept_listing,
    kept_name,
    kept_name_problem,
    make_unreachable,
    parse_kept,
    parse_retention,
    purge_expired,
    server_now,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_lock import release_reset_lock, take_reset_lock
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import (
    LOCK_NOT_AVAILABLE,
    commit,
    terminate_other_sessions,
)

ACTIONS = ("undo", "purge")
DEFAULT_ACTION = "undo"
DEFAULT_LOCK_TIMEOUT = "10s"
APPLICATION_NAME = "threadring.ringhub.pg_schema_undo"
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOCK_TIMEOUT_RE = re.compile(r"^\d+\s*(ms|s|min)?$")


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options of pg_schema_undo: the PostgreSQL connection, the action and its safety options."""
    spec = pg_argument_spec()
    spec.update(
        action=dict(type="str", default=DEFAULT_ACTION, choices=list(ACTIONS)),
        expected_environment=dict(type="str"),
        kept_schema=dict(type="str"),
        keep_previous_for=dict(type="str", default=DEFAULT_KEEP_FOR),
        terminate_sessions=dict(type="bool", default=True),
        lock_timeout=dict(type="str", default=DEFAULT_LOCK_TIMEOUT),
    )
    return spec


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[PSYCOPG2],
    secret_env=[URL_ENV],
    mutually_exclusive=pg_mutually_exclusive(),
)


def undo_schema(params: dict[str, Any], check_mode: bool) -> Outcome:
    """The pg_schema_undo module."""
    timer = PhaseTimer()
    spec: ConnSpec | None = None
    run: UndoRun | None = None
    try:
        with nothing_changed_on_failure():
            spec = spec_from_params(params)
        run = UndoRun(spec, params, check_mode, timer)
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
    warnings = [*spec.warnings, *run.warnings]
    changed = bool(result.get("restored") or result.get("purged")) or (
        check_mode and bool(result.get("would_restore") or result.get("would_purge"))
    )
    return Outcome(changed=changed, result=result, warnings=warnings, diff=run.diff(result))


class UndoRun:
    """One undo or purge (or its check-mode preflight) of the kept schemas of one schema of one database."""

    def __init__(self, spec: ConnSpec, params: dict[str, Any], check_mode: bool, timer: PhaseTimer) -> None:
        self.spec = spec
        self.schema = spec.schema
        self.action: str = params["action"]
        self.expected: str | None = params.get("expected_environment")
        self.kept_schema: str | None = params.get("kept_schema") or None
        self.keep_for_text: str = params.get("keep_previous_for") or DEFAULT_KEEP_FOR
        self.terminate: bool = bool(params.get("terminate_sessions", True))
        self.lock_timeout: str = str(params.get("lock_timeout") or DEFAULT_LOCK_TIMEOUT)
        self.check_mode = check_mode
        self.timer = timer
        self.conn: Any = None
        self.locked = False
        self.state = SchemaState()
        self.records: list[KeptRecord] = []
        self.now: datetime.datetime | None = None
        self.chosen: KeptRecord | None = None
        self.to_purge: set[str] = set()
        self.warnings: list[str] = []

    # -- validation --------------------------------------------------------------
    def validate(self) -> None:
        if self.expected is not None and not ENVIRONMENT_RE.match(self.expected):
            raise NothingChanged(f"expected_environment {self.expected!r} must be 1-63 letters, digits, '_', '.', '-'")
        if not LOCK_TIMEOUT_RE.match(self.lock_timeout.strip()):
            raise NothingChanged(f"lock_timeout {self.lock_timeout!r} must look like 10s, 500ms or 1min")
        try:
            self.keep_for = parse_retention(self.keep_for_text)
        except RingHubError as exc:
            raise NothingChanged(exc.msg, option="keep_previous_for") from None
        problem = kept_name_problem(self.schema)
        if problem and self.action == "undo":
            raise NothingChanged(problem)

    # -- orchestration ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "action": self.action,
            "connection": self.spec.describe(),
            "schema": self.schema,
            "lock_key": RESET_LOCK_KEY,
        }
        try:
            with nothing_changed_on_failure():
                self.validate()
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
                        f"PostgreSQL error before the {self.action} ({where(self.spec)}): "
                        f"{pg_error_text(exc, self.spec)}",
                        sqlstate=getattr(exc, "pgcode", None),
                    ) from None
            if self.check_mode:
                return self.finish(result)
            with self.timer.phase(self.action), failing_with(self.warnings):
                if self.action == "undo":
                    result.update(self.undo_transaction())
                elif self.to_purge:
                    result.update(self.purge_transaction())
                else:
                    result["purged"] = []
            return self.finish(result)
        finally:
            self.close()

    def preflight(self, result: dict[str, Any]) -> None:
        with self.conn.cursor() as cur:
            self.state = state = read_state(cur, self.schema)
            self.now = now = server_now(cur)
            self.records, warnings = parse_kept(state.database_comment)
            self.warnings.extend(warnings)
            listing = kept_listing(cur, self.records, now, self.schema)
        result.update(
            database=state.database,
            server_version=state.server_version,
            role=state.current_user,
            environment={"key": MARKER_KEY, "expected": self.expected, "found": state.marker},
            kept_schemas=listing,
        )
        problems = self.marker_problems()
        if not state.can_mark:
            problems.append(
                f"role {state.current_user!r} may not write the comment of database {state.database!r}, which records "
                f"the kept schemas (only its owner {state.database_owner!r}, a member of it, or a superuser can)"
            )
        ours = [r for r in self.records if r.schema == self.schema]
        if self.kept_schema is not None and self.kept_schema not in {r.name for r in ours}:
            recorded = ", ".join(r.name for r in ours) or "none"
            problems.append(
                f"{self.kept_schema!r} is not a kept schema of schema {self.schema!r} recorded in the comment of "
                f"database {state.database!r} (its ringhub.kept lines; recorded: {recorded})"
            )
        if problems:
            raise NothingChanged(f"{self.action} refused: " + "; ".join(problems), problems=problems)
        if self.action == "undo":
            chosen = self.choose(ours, listing)
            if self.check_mode:
                result["would_restore"] = dict(next(k for k in listing if k["name"] == chosen.name))
                result["would_set_aside"] = (
                    {
                        "schema": self.schema,
                        "name": kept_name(self.schema, "undo", now),
                        "until": iso(now + self.keep_for),
                        "tables": len(state.tables),
                    }
                    if state.schema_exists
                    else None
                )
        else:
            if self.kept_schema is not None:
                self.to_purge = {self.kept_schema}
            else:
                self.to_purge = {k["name"] for k in listing if k["expired"]}
            if self.check_mode:
                result["would_purge"] = [k for k in listing if k["name"] in self.to_purge]

    def marker_problems(self) -> list[str]:
        state, expected = self.state, self.expected
        marker = state.marker
        if expected is not None and marker is not None and marker != expected:
            return [
                f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}), not "
                f"{expected!r}: the connection settings most likely point at another environment's database; "
                "check them and the inventory group"
            ]
        if expected is None and marker is not None:
            return [
                f"database {state.database!r} is marked as environment {marker!r} ({MARKER_KEY}); if this is the "
                f"database you mean, set expected_environment: {marker}"
            ]
        return []

    def choose(self, ours: list[KeptRecord], listing: list[dict[str, Any]]) -> KeptRecord:
        """The kept schema to swap in (named, else the newest that exists), or the refusal that says why not."""
        state = self.state
        by_name = {k["name"]: k for k in listing}
        if self.kept_schema is not None:
            chosen = next(r for r in ours if r.name == self.kept_schema)
        else:
            present = [r for r in sorted(ours, key=lambda r: r.kept_at, reverse=True) if by_name[r.name]["exists"]]
            if not present:
                gone = [r.name for r in ours]
                raise NothingChanged(
                    f"undo refused: there is no kept schema of schema {self.schema!r} in database {state.database!r}"
                    + (f" (recorded but dropped: {', '.join(gone)})" if gone else "")
                    + ". Only a reset with keep_previous (ringhub_keep_previous) keeps one; to go back further, "
                    "restore the reset's backup (playbooks/restore.yml)",
                    kept_schemas=listing,
                )
            chosen = present[0]
        info = by_name[chosen.name]
        if not info["exists"]:
            raise NothingChanged(
                f"undo refused: the kept schema {chosen.name!r} is recorded but no longer exists in database "
                f"{state.database!r}; restore the reset's backup instead (playbooks/restore.yml)",
                kept_schemas=listing,
            )
        if info["expired"]:
            raise NothingChanged(
                f"undo refused: the kept schema {chosen.name!r} (kept {chosen.kept_at}) was kept until {chosen.until} "
                f"and is past its retention: it is dropped by the next reset or by the purge action. Restore the "
                "reset's backup instead (playbooks/restore.yml)",
                kept_schemas=listing,
            )
        if state.schema_exists and (state.extensions or state.outside):
            reasons = []
            if state.extensions:
                reasons.append(f"extensions are installed in it ({', '.join(state.extensions)})")
            if state.outside:
                reasons.append(f"objects in other schemas depend on it ({', '.join(state.outside)})")
            raise NothingChanged(
                f"undo refused: schema {self.schema!r} cannot be set aside: " + "; ".join(reasons),
                kept_schemas=listing,
            )
        if not state.schema_exists:
            self.warnings.append(
                f"schema {self.schema!r} does not exist: the kept schema comes back, nothing is set aside"
            )
        self.chosen = chosen
        return chosen

    # -- the transactions ---------------------------------------------------------
    def _begin(self, cur: Any, out: dict[str, Any]) -> None:
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout.strip(),))
        if self.terminate:
            out["terminated_sessions"], warnings = terminate_other_sessions(
                cur, self.spec, self.state.server_version_num
            )
            self.warnings.extend(warnings)

    def _reread(self, cur: Any) -> tuple[SchemaState, list[KeptRecord], datetime.datetime]:
        state = read_state(cur, self.schema)
        if state.marker != self.state.marker:
            raise RolledBack(
                f"the environment marker changed during the {self.action} ({self.state.marker!r} -> {state.marker!r})"
            )
        records, _warnings = parse_kept(state.database_comment)
        return state, records, server_now(cur)

    def undo_transaction(self) -> dict[str, Any]:
        if self.chosen is None:  # the preflight chooses it or refuses
            raise NothingChanged("undo: no kept schema was chosen by the preflight")
        chosen, schema = self.chosen, self.schema
        conn = self.conn
        conn.autocommit = False
        out: dict[str, Any] = {}
        step = "start the transaction"
        try:
            with conn.cursor() as cur:
                step = "set lock_timeout and terminate other sessions"
                self._begin(cur, out)
                step = "read the schemas again"
                state, records, now = self._reread(cur)
                if chosen.name not in {r.name for r in records} or chosen.name not in existing_schemas(cur):
                    raise RolledBack(f"the kept schema {chosen.name!r} went away during the undo")
                aside = None
                add: list[KeptRecord] = []
                if state.schema_exists:
                    live_rows = count_rows(cur, schema, state.tables)
                    live_acl = full_acl(cur, schema)
                    aside = kept_name(schema, "undo", now, existing_schemas(cur))
                    step = f"ALTER SCHEMA {schema} RENAME TO {aside}"
                    cur.execute(
                        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(schema), sql.Identifier(aside))
                    )
                else:
                    live_rows = []
                    cur.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (chosen.name,))
                    owner = cur.fetchone()[0]
                    live_acl = [(owner, "CREATE", False), (owner, "USAGE", False)]
                step = f"ALTER SCHEMA {chosen.name} RENAME TO {schema}"
                cur.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(chosen.name), sql.Identifier(schema))
                )
                step = f"grant the privileges of schema {schema} on the schema brought back"
                grant_acl(cur, schema, live_acl)
                if aside is not None:
                    step = f"revoke every privilege on the schema set aside, {aside}"
                    make_unreachable(cur, aside)
                    record = KeptRecord(
                        name=aside,
                        schema=schema,
                        by="undo",
                        kept_at=iso(now),
                        until=iso(now + self.keep_for),
                        rows={t["name"]: t["rows"] for t in live_rows},
                    )
                    add.append(record)
                    out["set_aside"] = record.describe()
                step = "record the swap in the database comment"
                comment = comment_with_kept(state.database_comment, add, {chosen.name})
                cur.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(state.database)), (comment,))
                step = "count the rows brought back"
                back = read_state(cur, schema)
                rows_now = {t["name"]: t["rows"] for t in count_rows(cur, schema, back.tables)}
                differences = {
                    name: [chosen.rows.get(name), rows_now.get(name)]
                    for name in sorted(set(chosen.rows) | set(rows_now))
                    if chosen.rows.get(name) != rows_now.get(name)
                }
                if differences:
                    self.warnings.append(
                        f"the schema brought back does not hold the rows recorded when it was kept "
                        f"(table: recorded, now): {differences}"
                    )
                out["restored"] = dict(chosen.describe(), rows_now=rows_now, differences=differences)
                remaining = [r for r in records if r.name != chosen.name] + add
                out["kept_schemas"] = kept_listing(cur, remaining, now, schema)
            out["commit_lsn"], warning = commit(
                conn, self.spec, "the undo", "the swap of the schemas",
                "look at the schemas and the ringhub.kept lines of the database comment",
            )  # fmt: skip
            if warning:
                self.warnings.append(warning)
        except (NothingChanged, OutcomeUnknown):
            rollback_quietly(conn)
            raise
        except RingHubError as exc:
            rollback_quietly(conn)
            raise RolledBack.from_error(exc) from None
        except psycopg2.Error as exc:
            rollback_quietly(conn)
            raise self.step_error(step, exc) from None
        finally:
            if not conn.closed:
                conn.autocommit = True
        return out

    def purge_transaction(self) -> dict[str, Any]:
        conn = self.conn
        conn.autocommit = False
        out: dict[str, Any] = {}
        step = "start the transaction"
        try:
            with conn.cursor() as cur:
                step = "set lock_timeout"
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout.strip(),))
                step = "read the kept schemas again"
                state, records, now = self._reread(cur)
                names = {self.kept_schema} if self.kept_schema is not None else None
                step = "drop the kept schemas"
                out["purged"], remove, warnings = purge_expired(cur, records, self.schema, now, names)
                self.warnings.extend(warnings)
                if remove:
                    step = "remove their records from the database comment"
                    comment = comment_with_kept(state.database_comment, (), remove)
                    cur.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(state.database)), (comment,)
                    )
                out["kept_schemas"] = kept_listing(cur, [r for r in records if r.name not in remove], now, self.schema)
            out["commit_lsn"], warning = commit(
                conn, self.spec, "the purge", "the drop of the kept schemas",
                "look at the schemas and the ringhub.kept lines of the database comment",
            )  # fmt: skip
            if warning:
                self.warnings.append(warning)
        except (NothingChanged, OutcomeUnknown):
            rollback_quietly(conn)
            raise
        except RingHubError as exc:
            rollback_quietly(conn)
            raise RolledBack.from_error(exc) from None
        except psycopg2.Error as exc:
            rollback_quietly(conn)
            raise self.step_error(step, exc) from None
        finally:
            if not conn.closed:
                conn.autocommit = True
        return out

    def step_error(self, step: str, exc: Exception) -> RingHubError:
        sqlstate = getattr(exc, "pgcode", None)
        text = f"the {self.action} failed at step '{step}'"
        if self.conn.closed:
            # The server ends a transaction whose connection is gone: it was not committed.
            return NothingChanged(
                f"{text} (connection lost): {pg_error_text(exc, self.spec)}; the transaction was not committed",
                step=step,
            )
        hint = ""
        if sqlstate == LOCK_NOT_AVAILABLE:
            hint = (
                f". Another session holds a lock longer than lock_timeout ({self.lock_timeout}): "
                "stop it or raise lock_timeout"
            )
        return RolledBack(
            f"{text}: {pg_error_text(exc, self.spec)}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "") + hint,
            step=step,
            sqlstate=sqlstate,
        )

    # -- the result ---------------------------------------------------------------
    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        result["seconds"] = dict(self.timer.seconds, total=self.timer.total)
        result["summary"] = summary_line(result, self.check_mode)
        return result

    def diff(self, result: dict[str, Any]) -> dict[str, Any]:
        """The kept schemas of the schema before and after (in check mode: after a real run)."""
        before = sorted(r.name for r in self.records if r.schema == self.schema)
        if not self.check_mode:
            after = sorted(k["name"] for k in result.get("kept_schemas", []))
        else:
            gone = {k["name"] for k in result.get("would_purge", [])}
            if result.get("would_restore"):
                gone.add(result["would_restore"]["name"])
            aside = [result["would_set_aside"]["name"]] if result.get("would_set_aside") else []
            after = sorted([n for n in before if n not in gone] + aside)
        return {"before": {"kept_schemas": before}, "after": {"kept_schemas": after}}

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            rollback_quietly(self.conn)
            try:
                self.conn.autocommit = True
            except psycopg2.Error:
                pass
            if self.locked:
                release_reset_lock(self.conn)
                self.locked = False
            self.conn.close()


def summary_line(result: dict[str, Any], check_mode: bool) -> str:
    """One line for a playbook summary or an audit record (no secrets in it)."""
    head = f"schema {result.get('schema')} of database {result.get('database')}:"
    seconds = f"{result['seconds']['total']} s"
    if result["action"] == "undo":
        back = result.get("would_restore") if check_mode else result.get("restored")
        aside = result.get("would_set_aside") if check_mode else result.get("set_aside")
        if not back:
            return f"{head} nothing to undo, {seconds}"
        verb = ("would bring back", "would set aside") if check_mode else ("brought back", "set aside")
        parts = [f"{head} {verb[0]} {back['name']} (kept {back['kept_at']}, {back['total_rows']} rows),"]
        if aside:
            parts.append(f"{verb[1]} the schema it replaces as {aside['name']} until {aside['until']},")
        return " ".join([*parts, seconds])
    purged = result.get("would_purge") if check_mode else result.get("purged")
    if not purged:
        return f"{head} no kept schema to drop, {seconds}"
    size = sum(k.get("size_bytes", 0) for k in purged)
    verb = "would drop" if check_mode else "dropped"
    return f"{head} {verb} {len(purged)} kept schemas ({', '.join(k['name'] for k in purged)}; {size} bytes), {seconds}"
