"""Faults injected into playbooks/reset.yml against local deployments (tests/harness/deployment.py).

Each fault is injected into a real run (its own ``ansible-playbook`` process, real PostgreSQL, Redis
and sandbox hubs) at a point the test waits for, never after a fixed delay: a pg_dump wrapper that
waits at a gate file, a migration that waits on an advisory lock the test holds, Redis paused for
writes. Every test then reads the state itself: each table's row count and checksum (``counts()``),
Redis keys, the reset lock, backup and progress files, the audit line. docs/faults.md describes
each fault as the operator sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sandbox_hub import ctl

from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import RESET_LOCK_KEY
from harness.ansible import REPO, _base_env, _bin, ensure_collection_link, run_module, run_playbook
from harness.deployment import Deployment, stop_postgres
from harness.pg import FIXTURE_MIGRATIONS, _run_user

PLAYBOOK = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}
RESET_APP = "threadring.ringhub.pg_schema_reset"
RESET_TASK = "Back up, then reset the schema and seed the root ring in one transaction; empty Redis; keep the badge key"
NEW_SCHEMA_TABLES = {"Ring": 1, "RingRole": 3}


# --------------------------------------------------------------------------- helpers


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def seed_rows(dep: Deployment, rings: int = 25) -> None:
    """Rings under the root with their roles and audit rows, and Redis keys in db 0 and db 1: data a
    reset must either keep whole or drop whole."""
    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT id FROM "Ring" WHERE slug = %s', ("spool",))
            root = cur.fetchone()[0]
            for i in range(rings):
                ring = str(uuid.uuid4())
                cur.execute(
                    'INSERT INTO "Ring" ("id", "slug", "name", "createdAt", "updatedAt", "ownerDid", "parentId") '
                    "VALUES (%s, %s, %s, now(), now(), %s, %s)",
                    (ring, f"fault-{uuid.uuid4().hex[:10]}", f"Fault ring {i}", dep.instance_did, root),
                )
                for role in ("owner", "moderator", "member"):
                    cur.execute(
                        'INSERT INTO "RingRole" ("id", "ringId", "name", "permissions") VALUES (%s, %s, %s, %s)',
                        (str(uuid.uuid4()), ring, role, json.dumps([f"{role}:all"])),
                    )
                cur.execute(
                    'INSERT INTO "AuditLog" ("id", "ringId", "action", "actorDid", "metadata", "timestamp") '
                    "VALUES (%s, %s, 'ring.created', %s, '{}'::jsonb, now())",
                    (str(uuid.uuid4()), ring, dep.instance_did),
                )
    finally:
        conn.close()
    for db in (0, 1):
        with dep.redis_client(db) as client:
            client.mset({f"fault:{db}:{i}": str(i) for i in range(40)})


def tables(state: dict[str, Any]) -> dict[str, Any]:
    """Row count and checksum (md5 of every row) of each table."""
    return state["tables"]


def assert_old_database_intact(dep: Deployment, before: dict[str, Any]) -> None:
    after = dep.counts()
    assert before["total_rows"] > 100
    assert tables(after) == tables(before)
    assert after["rings"] == before["rings"] and after["environment_marker"] == "production"


def assert_new_database_complete(dep: Deployment, before: dict[str, Any]) -> dict[str, Any]:
    after = dep.counts()
    assert {name: t["rows"] for name, t in tables(after).items() if t["rows"]} == {
        **NEW_SCHEMA_TABLES,
        "_prisma_migrations": len(before["migrations"]),
    }
    assert after["rings"] == ["spool"] and after["root_roles"] == ["member", "moderator", "owner"]
    assert after["environment_marker"] == "production"
    return after


def new_database_complete(dep: Deployment, before: dict[str, Any]) -> bool:
    try:
        assert_new_database_complete(dep, before)
    except AssertionError:
        return False
    return True


def reset_lock_free(dep: Deployment) -> bool:
    """True when a new session can take the reset lock (it is released at once)."""
    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RESET_LOCK_KEY,))
            got = cur.fetchone()[0]
            if got:
                cur.execute("SELECT pg_advisory_unlock(%s)", (RESET_LOCK_KEY,))
            return bool(got)
    finally:
        conn.close()


def reset_sessions(dep: Deployment) -> list[tuple[int, str, str | None, str | None]]:
    """Sessions of the reset module on the database: pid, state, wait event type, wait event."""
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = 'ringhub' AND application_name = %s",
                (RESET_APP,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def audit_lines(dep: Deployment) -> list[dict[str, Any]]:
    path = dep.paths["audit_log"]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def dumps(dep: Deployment) -> list[Path]:
    return sorted(dep.paths["backup_dir"].glob("*.dump"))


def progress_files(dep: Deployment) -> list[Path]:
    return sorted(dep.paths["backup_dir"].glob(".ringhub-reset-progress-*.json"))


GATE_SQL = (
    "DO $$ DECLARE n int := 0; BEGIN "
    "WHILE (SELECT last_value FROM faultgate.gate) = 0 AND n < 2400 LOOP PERFORM pg_sleep(0.05); n := n + 1; "
    "END LOOP; END $$;"
)


def gated_migrations(directory: Path, where: str = "last") -> Path:
    """The fixture migrations with one that waits at the gate (``open_gate``) before it ends, at most 120 s.

    The reset terminates every other session of the database, so the gate is no lock a session of the
    test holds: it is a sequence in a schema of its own (``faultgate``), read outside any snapshot."""
    shutil.copytree(FIXTURE_MIGRATIONS, directory)
    files = sorted(directory.glob("*/migration.sql"))
    target = files[-1] if where == "last" else files[len(files) // 2]
    target.write_text(target.read_text() + "\n" + GATE_SQL + "\n")
    return directory


def install_gate(dep: Deployment) -> None:
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS faultgate CASCADE")
            cur.execute("CREATE SCHEMA faultgate")
            cur.execute("CREATE SEQUENCE faultgate.gate MINVALUE 0 START 0")
            cur.execute("GRANT USAGE ON SCHEMA faultgate TO ringhub")
            cur.execute("GRANT SELECT ON faultgate.gate TO ringhub")
    finally:
        conn.close()


def open_gate(dep: Deployment) -> None:
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT setval('faultgate.gate', 1)")
    finally:
        conn.close()


def at_gate(dep: Deployment) -> bool:
    """The reset's session runs the gated migration."""
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'ringhub' AND application_name = %s "
                "AND state = 'active' AND query LIKE %s",
                (RESET_APP, "%faultgate.gate%"),
            )
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


def gated_pg_dump(directory: Path, dep: Deployment) -> tuple[Path, dict[str, Path]]:
    """A pg_dump that runs the real one, then waits at a gate (``dumped`` appears, it exits once ``go``
    exists, at most 120 s); a pg_restore beside it that is the real one."""
    directory.mkdir(parents=True)
    bindir = Path(dep.state["database"]["bindir"])
    gates = {name: directory / name for name in ("dumped", "go")}
    (directory / "pg_dump").write_text(
        "#!/bin/sh\n"
        f"'{bindir / 'pg_dump'}' \"$@\"\n"
        "rc=$?\n"
        'if [ "$1" != "--version" ]; then\n'
        f"  touch '{gates['dumped']}'\n"
        "  n=0\n"
        f"  while [ ! -e '{gates['go']}' ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done\n"
        "fi\n"
        "exit $rc\n"
    )
    (directory / "pg_restore").write_text(f"#!/bin/sh\nexec '{bindir / 'pg_restore'}' \"$@\"\n")
    for tool in ("pg_dump", "pg_restore"):
        (directory / tool).chmod(0o755)
    return directory / "pg_dump", gates


@dataclass
class Run:
    """An ``ansible-playbook`` of the reset in a session of its own, as a terminal runs it."""

    proc: subprocess.Popen[bytes]
    tmp: Path
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 240) -> int:
        return self.proc.wait(timeout)

    @property
    def results(self) -> list[dict[str, Any]]:
        path = self.tmp / "results.json"
        return json.loads(path.read_text()) if path.exists() else []


def start_reset(dep: Deployment, extra_vars: dict[str, Any] | None = None, inventory: Path | None = None) -> Run:
    ensure_collection_link()
    tmp = Path(tempfile.mkdtemp(prefix="fault-run-", dir=dep.directory))  # removed with the deployment
    vars_file = tmp / "extra_vars.json"
    vars_file.write_text(json.dumps({**PHRASES, **(extra_vars or {})}))
    log = tmp / "output.log"
    cmd = [_bin("ansible-playbook"), str(PLAYBOOK), "-i", str(inventory or dep.inventory), "-l", "production"]
    cmd += ["-e", "@" + str(vars_file)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=str(REPO),
            env=_base_env(str(tmp / "results.json"), None),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group, as a terminal's job
            # As a terminal's shell starts it: SIGHUP at its default, whatever the test runner inherited (nohup).
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )
    return Run(proc, tmp, log)


def reset(dep: Deployment, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return run_playbook(
        PLAYBOOK, {**PHRASES, **(extra_vars or {})}, inventory=dep.inventory, limit="production", timeout=300, **kwargs
    )


def processes_of(session: int) -> list[tuple[int, str]]:
    """Live processes of a session (pid, command line), zombies left out."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            out.append((int(entry.name), cmdline))
    return out


def end_session(session: int) -> None:
    """SIGKILL what is left of a run's session (only the processes the test started)."""
    for pid, _cmd in processes_of(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_postgres_again(dep: Deployment) -> None:
    """``pg_ctl start`` the deployment's cluster (as its server account), wait until it answers."""
    db = dep.state["database"]
    account = _run_user()
    extra: dict[str, Any] = {}
    if account is not None:
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run(
        [str(Path(db["bindir"]) / "pg_ctl"), "-D", db["data_dir"], "-l", db["log_file"], "-w", "-t", "60", "start"],
        capture_output=True,
        env=env,
        cwd=db["base_dir"],
        check=True,
        **extra,
    )

    def answers() -> bool:
        try:
            dep.connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    wait_for(answers, "PostgreSQL to answer again")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (by parent pid), at this moment."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def shared_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for the tests that leave PostgreSQL, Redis and the hub running (each seeds its own data)."""
    from harness.deployment import down, new_directory, up

    directory = new_directory()
    dep = up(directory, hubs=1)
    try:
        yield dep
    finally:
        with contextlib.suppress(Exception):
            down(directory)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


def fresh_state(dep: Deployment) -> dict[str, Any]:
    """Seed data, clear what earlier tests left (the gate), and return the state before the run."""
    install_gate(dep)
    seed_rows(dep)
    return dep.counts()


def redis_keys(dep: Deployment) -> int:
    return sum(db["keys"] for db in dep.counts()["redis"].values())


# --------------------------------------------------------------------------- ansible-playbook killed

KILL_POINTS = ["backup", "migrations", "flush"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_ansible_playbook_killed_at_each_step(
    shared_deployment: Deployment, tmp_path: Path, point: str, how: str
) -> None:
    """SIGKILL of the ansible-playbook process, or SIGHUP to its process group as a closing terminal sends it.

    Ansible's workers start a session of their own (they are detached from the terminal), so neither
    reaches the module that runs: it finishes its task (reset_steps: the backup, the transaction, its
    COMMIT, then the Redis flush; a kill at any of them leaves Redis flushed too) and its worker then
    exits; the tasks after it never run. The reset lock is released
    when the module ends; the next run reads the progress file the killed one left and says so."""
    dep = shared_deployment
    before = fresh_state(dep)
    dumps_before = dumps(dep)
    extra: dict[str, Any] = {"ringhub_lock_timeout": "120s"}
    gates: dict[str, Path] = {}
    if point in ("backup", "flush"):
        wrapper, gates = gated_pg_dump(tmp_path / "bin", dep)
        extra["ringhub_pg_dump_path"] = str(wrapper)
    if point == "migrations":
        extra["ringhub_migrations_dir"] = str(gated_migrations(tmp_path / "migrations"))
    run = start_reset(dep, extra)
    try:
        if point == "backup":
            wait_for(gates["dumped"].exists, "pg_dump to have written the backup", timeout=120)
            assert progress_files(dep) and json.loads(progress_files(dep)[0].read_text())["phase"] == "backup"
        elif point == "migrations":
            wait_for(lambda: at_gate(dep), "the migration to wait at the gate", timeout=120)
            assert json.loads(progress_files(dep)[0].read_text())["phase"] == "reset"
        else:
            # The preflight has passed (its Redis check ran): Redis now holds every write until it is unpaused,
            # so the flush that follows the COMMIT waits.
            wait_for(gates["dumped"].exists, "pg_dump to have written the backup", timeout=120)
            with dep.redis_client() as client:
                client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
            gates["go"].touch()
            # The same task flushes Redis right after the COMMIT: wait for the commit, the flush then waits.
            wait_for(lambda: new_database_complete(dep, before), "the reset's COMMIT", timeout=60)
            assert_new_database_complete(dep, before)  # committed; the flush waits for Redis
        below = descendants(run.proc.pid)
        assert below, "the running task has a worker and a module"
        if how == "SIGKILL":
            os.kill(run.proc.pid, signal.SIGKILL)
        else:
            os.killpg(run.proc.pid, signal.SIGHUP)
        rc = run.wait(30)
        assert rc == -signal.Signals[how]
        orphans = [pid for pid in below if alive(pid)]
        assert orphans, "the module's worker was not killed with ansible-playbook"
        if point in ("backup", "migrations"):
            assert reset_sessions(dep), "the module still holds its session"
            assert not reset_lock_free(dep)  # the module still runs: the lock is held
            if point == "backup":
                gates["go"].touch()
            else:
                open_gate(dep)
        else:
            with dep.redis_client() as client:
                client.execute_command("CLIENT", "UNPAUSE")
        wait_for(lambda: not any(alive(pid) for pid in orphans), "the orphaned module to finish", timeout=120)
    finally:
        with contextlib.suppress(Exception):
            open_gate(dep)
        for gate in gates.values():
            gate.touch()
        with contextlib.suppress(Exception), dep.redis_client() as client:
            client.execute_command("CLIENT", "UNPAUSE")
        end_session(run.proc.pid)
    # What the orphaned module did: the whole task it was running, and nothing after it.
    assert reset_lock_free(dep)
    after = assert_new_database_complete(dep, before)
    assert len(dumps(dep)) == len(dumps_before) + 1
    assert after["audit_lines"] == before["audit_lines"]  # the report never ran
    assert redis_keys(dep) == 0  # the flush is part of the same task
    [left] = progress_files(dep)
    report = json.loads(left.read_text())
    assert report["phase"] == "done" and report["check_mode"] is False

    if how == "SIGHUP":
        # The next run reads the same file the same way: the module alone shows it (the playbook's rerun is
        # the SIGKILL cases').
        again = run_module("pg_schema_reset", module_args(dep, left))
        assert not again.failed, again.msg
        previous = again.result["previous_run"]
        assert previous["phase"] == "done" and previous["schema_state"] == "new"
        assert previous["started"] == report["started"] and previous["backup_path"] == report["backup_path"]
        assert_new_database_complete(dep, before)
        assert json.loads(left.read_text())["phase"] == "done"
        left.unlink()
        return
    rerun = reset(dep)
    assert rerun.rc == 0, rerun.output[-3000:]
    found = (
        "the previous reset of schema 'public' of database 'ringhub' (started "
        f"{report['started']}) completed its schema reset at {report['updated']}, but its progress file was left in "
        "place: the playbooks/reset.yml run that started it (which removes the file once its audit line is written) "
        "ended before that"
    )
    assert found in " ".join(rerun.output.split())
    assert "the schema is the new one" in rerun.output
    assert_new_database_complete(dep, before)
    assert redis_keys(dep) == 0
    assert progress_files(dep) == []
    record = audit_lines(dep)[-1]
    assert record["status"] == "succeeded"
    assert record["details"]["steps"]["reset"]["previous_run"]["phase"] == "done"
    assert record["details"]["steps"]["reset"]["previous_run"]["schema_state"] == "new"


def module_args(dep: Deployment, progress: Path, **extra: Any) -> dict[str, Any]:
    """pg_schema_reset's options as the reset role gives them for this deployment."""
    paths = dep.paths
    return {
        "database_url": dep.database_url,
        "migrations_dir": str(paths["migrations_dir"]),
        "expected_environment": "production",
        "backup_dir": str(paths["backup_dir"]),
        "root_ring": {"owner_did": dep.instance_did, "slug": "spool"},
        "progress_file": str(progress),
        **extra,
    }


def before_keys(before: dict[str, Any]) -> int:
    return sum(db["keys"] for db in before["redis"].values())


def assert_names_the_backup(text: str, backup: Path, dep: Deployment) -> None:
    """The failure says which backup to restore from, with the playbook and the exact pg_restore command."""
    db = dep.state["database"]
    flat = " ".join(text.split())
    assert f"The backup taken before the reset is {backup}" in flat
    assert f"ansible-playbook playbooks/restore.yml -l <hosts> -e ringhub_restore_file={backup}" in flat
    assert (
        "pg_restore --clean --if-exists --single-transaction --exit-on-error "
        f"--host={db['host']} --port={db['port']} --username=ringhub --dbname=ringhub {backup}"
    ) in flat
    assert db["role_password"] not in text


# --------------------------------------------------------------------------- PostgreSQL faults


def test_connection_killed_during_the_migrations_leaves_the_old_database(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """pg_terminate_backend of the reset's session from the test's own superuser connection, once the
    progress file says phase ``reset`` and a migration runs."""
    dep = shared_deployment
    before = fresh_state(dep)
    dumps_before = dumps(dep)
    migrations = gated_migrations(tmp_path / "migrations")
    run = start_reset(dep, {"ringhub_migrations_dir": str(migrations), "ringhub_lock_timeout": "120s"})
    try:
        wait_for(lambda: at_gate(dep), "the migration to wait at the gate", timeout=120)
        assert json.loads(progress_files(dep)[0].read_text())["phase"] == "reset"
        conn = dep.connect(superuser=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'ringhub' "
                    "AND application_name = %s",
                    (RESET_APP,),
                )
                assert [r[0] for r in cur.fetchall()] == [True]
        finally:
            conn.close()
        rc = run.wait(240)
    finally:
        open_gate(dep)
        end_session(run.proc.pid)
    assert rc == 2
    assert_old_database_intact(dep, before)
    assert reset_lock_free(dep)
    [backup] = [p for p in dumps(dep) if p not in dumps_before]
    output = run.output
    assert "the connection was lost while applying migration" in " ".join(output.split())
    assert_names_the_backup(output, backup, dep)
    record = audit_lines(dep)[-1]
    assert record["status"] == "failed"
    reset_step = record["details"]["steps"]["reset"]
    assert reset_step["status"] == "failed" and reset_step["restore_hint"]["file"] == str(backup)
    assert record["details"]["backup"]["path"] is None or record["details"]["backup"]["path"] == str(backup)
    assert redis_keys(dep) == before_keys(before)  # the run stopped before the flush
    assert progress_files(dep) == []  # the run ended with its audit line


def module_processes(pid: int) -> list[int]:
    """The module processes below ``pid``: Python run by the ``/bin/sh`` the worker starts for it."""
    out = []
    for child in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")[0]
            if parent.endswith(b"sh") and b"python" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
    return out


@pytest.mark.slow
def test_the_module_process_killed_during_the_migrations_is_a_failure_not_an_abort(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """The data steps' module process itself killed (SIGKILL, as the OOM killer does) while a migration runs:
    the task fails without naming a step; the old database stays (its transaction never commits) and the
    audit line says ``failed`` with the reset step failed, never ``aborted`` (which says nothing was destroyed)."""
    dep = shared_deployment
    before = fresh_state(dep)
    migrations = gated_migrations(tmp_path / "migrations")
    run = start_reset(dep, {"ringhub_migrations_dir": str(migrations), "ringhub_lock_timeout": "120s"})
    try:
        wait_for(lambda: at_gate(dep), "the migration to wait at the gate", timeout=120)
        modules = module_processes(run.proc.pid)
        assert modules, "the data steps' module process"
        for pid in modules:
            os.kill(pid, signal.SIGKILL)
        # The server notices the lost client when the blocked migration returns: the transaction rolls back.
        open_gate(dep)
        rc = run.wait(240)
    finally:
        open_gate(dep)
        end_session(run.proc.pid)
    assert rc == 2, run.output[-3000:]
    wait_for(lambda: reset_lock_free(dep), "the killed module's session to end", timeout=60)
    assert_old_database_intact(dep, before)
    assert redis_keys(dep) == before_keys(before)
    record = audit_lines(dep)[-1]
    assert record["status"] == "failed", record["status"]
    assert record["details"]["steps"]["reset"]["status"] == "failed"
    [failure] = record["details"]["failures"]
    assert failure["task"] == RESET_TASK and failure["step"] is None


def test_a_migration_failing_halfway_leaves_the_old_database(shared_deployment: Deployment, tmp_path: Path) -> None:
    dep = shared_deployment
    before = fresh_state(dep)
    dumps_before = dumps(dep)
    migrations = tmp_path / "migrations"
    shutil.copytree(FIXTURE_MIGRATIONS, migrations)
    files = sorted(migrations.glob("*/migration.sql"))
    middle = files[len(files) // 2]
    middle.write_text(middle.read_text() + "\nSELECT no_such_function_halfway();\n")
    run = reset(dep, {"ringhub_migrations_dir": str(migrations)})
    assert run.rc == 2
    assert_old_database_intact(dep, before)
    assert reset_lock_free(dep)
    flat = " ".join(run.output.split())
    assert f"migration {middle.parent.name} ({middle}) failed at line" in flat
    assert "no_such_function_halfway" in flat and "the transaction was rolled back, nothing was changed" in flat
    [backup] = [p for p in dumps(dep) if p not in dumps_before]
    assert_names_the_backup(run.output, backup, dep)
    assert audit_lines(dep)[-1]["status"] == "failed"
    assert redis_keys(dep) == before_keys(before)
    assert progress_files(dep) == []


def test_the_server_stopped_between_backup_and_reset(sandbox_deployment_factory: Any, tmp_path: Path) -> None:
    dep = sandbox_deployment_factory(hubs=1)
    before = fresh_state(dep)
    wrapper, gates = gated_pg_dump(tmp_path / "bin", dep)
    run = start_reset(dep, {"ringhub_pg_dump_path": str(wrapper)})
    try:
        wait_for(gates["dumped"].exists, "pg_dump to have written the backup", timeout=120)
        assert stop_postgres(dep.state["database"])
        gates["go"].touch()
        rc = run.wait(240)
    finally:
        gates["go"].touch()
        end_session(run.proc.pid)
    assert rc == 2
    start_postgres_again(dep)
    assert_old_database_intact(dep, before)
    assert reset_lock_free(dep)
    [backup] = dumps(dep)
    flat = " ".join(run.output.split())
    assert "was lost after the backup, before the reset's transaction began" in flat or "(connection lost)" in flat
    assert_names_the_backup(run.output, backup, dep)
    record = audit_lines(dep)[-1]
    assert record["status"] == "failed" and record["details"]["steps"]["reset"]["restore_hint"]["file"] == str(backup)
    assert redis_keys(dep) == before_keys(before)


# --------------------------------------------------------------------------- Redis killed during a pattern flush


@pytest.mark.slow
def test_redis_killed_during_a_pattern_flush(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1)
    before = fresh_state(dep)
    many = 400_000
    with dep.redis_client(0) as client:
        pipe = client.pipeline(transaction=False)
        for start in range(0, many, 10_000):
            pipe.mset({f"fault:bulk:{i}": "x" for i in range(start, start + 10_000)})
        pipe.execute()
        total = client.dbsize()
    flush = {
        "ringhub_redis_flush_mode": "pattern",
        "ringhub_redis_flush_db": 0,
        "ringhub_redis_flush_patterns": ["fault:*"],
    }
    run = start_reset(dep, flush)
    redis_pid = dep.state["redis"]["pid"]
    try:
        watcher = dep.redis_client(0)

        def deleting() -> bool:
            try:
                return watcher.dbsize() < total
            except Exception:
                return False

        wait_for(deleting, "the pattern flush to start deleting", timeout=120, interval=0.005)
        os.kill(redis_pid, signal.SIGKILL)
        rc = run.wait(240)
    finally:
        end_session(run.proc.pid)
    assert rc == 2
    flat = " ".join(run.output.split())
    assert f"failed on redis://127.0.0.1:{dep.state['redis']['port']}" in flat, flat[-3000:]
    after = assert_new_database_complete(dep_without_redis(dep), before)
    record = audit_lines(dep)[-1]
    assert record["status"] == "failed" and record["details"]["steps"]["redis_flush"]["status"] == "failed"
    assert [(f["task"], f["step"]) for f in record["details"]["failures"]] == [(RESET_TASK, "redis_flush[0]")]
    assert record["details"]["steps"]["reset"]["status"] == "succeeded" and after["audit_lines"] == 1
    assert reset_lock_free(dep)

    # Redis comes back (no persistence here: empty) and the hub writes again; the rerun finishes the job.
    restart_redis(dep)
    with dep.redis_client(0) as client:
        client.mset({f"fault:again:{i}": "y" for i in range(50)})
    rerun = reset(dep, flush)
    assert rerun.rc == 0, rerun.output[-3000:]
    assert_new_database_complete(dep, before)
    with dep.redis_client(0) as client:
        assert list(client.scan_iter("fault:*")) == []
    assert audit_lines(dep)[-1]["status"] == "succeeded"


def dep_without_redis(dep: Deployment) -> Any:
    """``counts()`` of the database and files only (Redis is down)."""

    class View:
        def counts(self) -> dict[str, Any]:
            conn = dep.connect(superuser=True)
            try:
                with conn.cursor() as cur:
                    from harness.deployment import _database_state

                    out = _database_state(cur)
            finally:
                conn.close()
            out.update(dep._file_state())
            return out

    return View()


def restart_redis(dep: Deployment) -> None:
    from harness.redis_servers import REDIS_SERVER

    conf = Path(dep.state["redis"]["conf_file"])
    proc = subprocess.Popen(
        [REDIS_SERVER, str(conf)],
        cwd=str(conf.parent),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dep.state["redis"]["pid"] = proc.pid
    dep.save()

    def answers() -> bool:
        try:
            with dep.redis_client(0) as client:
                return bool(client.ping())
        except Exception:
            return False

    wait_for(answers, "Redis to answer again")


# --------------------------------------------------------------------------- the hub does not come back


def hub_restart_command(dep: Deployment, action: str = "restart", env_file: Path | None = None) -> str:
    hub = dep.state["hubs"][0]
    paths = dep.paths
    argv = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "tests" / "sandbox_hub" / "ctl.py"), action]
    argv += ["--pid-file", hub["pid_file"]]
    if action != "stop":
        argv += ["--env-file", str(env_file or paths["env_file"]), "--web-root", str(paths["web_root"])]
        argv += ["--log-file", hub["log_file"], "--port", str(hub["port"]), "--no-inherit"]
    return " ".join(argv)


@pytest.mark.parametrize("case", ["nothing-comes-up", "never-ready"])
def test_the_hub_does_not_come_back_after_the_restart(shared_deployment: Deployment, tmp_path: Path, case: str) -> None:
    dep = shared_deployment
    before = fresh_state(dep)
    if case == "nothing-comes-up":
        command = hub_restart_command(dep, "stop")
    else:
        # The hub starts, but its Redis is a port nobody listens on: /health/ready answers 503 not_ready.
        broken = tmp_path / "broken.env"
        closed = socket_port_closed()
        lines = dep.paths["env_file"].read_text().splitlines()
        broken.write_text(
            "\n".join(
                f"REDIS_URL=redis://127.0.0.1:{closed}/0" if line.startswith("REDIS_URL=") else line for line in lines
            )
            + "\n"
        )
        broken.chmod(0o600)
        command = hub_restart_command(dep, "restart", broken)
    try:
        started = time.monotonic()
        run = reset(dep, {"ringhub_restart_command": command, "ringhub_ready_timeout": 2})
        seconds = time.monotonic() - started
        assert run.rc == 2
        assert_new_database_complete(dep, before)
        flat = " ".join(run.output.split())
        url = dep.hub_url + "/health/ready"
        assert f"hub1: {url} did not answer ready within 2 s after the restart. Last answer:" in flat
        record = audit_lines(dep)[-1]
        restart = record["details"]["steps"]["restart"]["hub1"]
        assert record["status"] == "failed" and restart["status"] == "failed"
        if case == "nothing-comes-up":
            assert "Connection refused" in restart["ready_last_answer"], restart
            assert ctl.running_pid(dep.state["hubs"][0]["pid_file"]) is None
        else:
            assert restart["ready_last_answer"].startswith("HTTP 503 "), restart
            assert '"not_ready"' in restart["ready_last_answer"] and '"redis":"unhealthy"' in restart[
                "ready_last_answer"
            ].replace(" ", "")
        assert restart["ready_last_answer"] in flat
        assert seconds < 120
    finally:
        subprocess.run(hub_restart_command(dep).split(), check=True, capture_output=True, timeout=60)
    assert [h["status"] for h in dep.hub_health()] == [200]


def socket_port_closed() -> int:
    from harness.ports import free_port

    return free_port()


# --------------------------------------------------------------------------- two resets at once


def test_two_resets_started_at_once_only_one_proceeds(shared_deployment: Deployment, tmp_path: Path) -> None:
    dep = shared_deployment
    before = fresh_state(dep)
    dumps_before = dumps(dep)
    migrations = gated_migrations(tmp_path / "migrations")
    extra = {"ringhub_migrations_dir": str(migrations), "ringhub_lock_timeout": "120s"}
    runs = [start_reset(dep, extra), start_reset(dep, extra)]
    try:
        wait_for(
            lambda: at_gate(dep) and any(r.proc.poll() is not None for r in runs), "one run at the gate, one ended", 180
        )
        [loser] = [r for r in runs if r.proc.poll() is not None]
        [winner] = [r for r in runs if r is not loser]
        assert loser.proc.returncode == 2
        # Nothing destroyed by the refused run. The winner's open transaction has dropped the schema (its locks
        # keep readers of the tables waiting until it ends), so what every other session still sees is the
        # committed catalog: the old tables, and the winner's backup alone.
        assert len(dumps(dep)) == len(dumps_before) + 1
        conn = dep.connect(superuser=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                assert cur.fetchone()[0] == len(tables(before))
        finally:
            conn.close()
        assert progress_files(dep) and json.loads(progress_files(dep)[0].read_text())["phase"] == "reset"
        open_gate(dep)
        assert winner.wait(240) == 0, winner.output[-3000:]
    finally:
        open_gate(dep)
        for r in runs:
            end_session(r.proc.pid)
    flat = " ".join(loser.output.split())
    assert "another schema reset is running on database 'ringhub' (it holds the reset lock" in flat
    assert "Wait for it to finish" in flat
    assert_new_database_complete(dep, before)
    assert redis_keys(dep) == 0 and reset_lock_free(dep)
    assert progress_files(dep) == []
    statuses = sorted(line["status"] for line in audit_lines(dep)[-2:])
    assert statuses in (["aborted", "succeeded"], ["failed", "succeeded"])
