"""Throwaway PostgreSQL clusters for tests, benchmarks and demos.

``PgServer`` runs ``initdb`` + ``pg_ctl`` in a temporary directory, listening on a
free 127.0.0.1 port (never 5432) with its Unix socket in the same directory,
fsync off. When the tests run as root, the server runs as an unprivileged
system user (``postgres`` if it exists, else ``nobody``) because initdb refuses
root. Password authentication (scram-sha-256) is required over TCP; the Unix
socket trusts local users, so tests can also exercise socket connections.

Loaded as a pytest plugin (``-p harness.pg``); fixtures:

- ``pg_server``: one cluster per test session.
- ``pg_db``: a fresh, empty database on that cluster per test, dropped afterwards.
- ``pg_server_factory``: start extra clusters (for tests that stop or break them).
- ``pg_standby_factory``: ``pg_standby_factory(primary)`` starts a streaming replica of a
  cluster (``PgStandby``: ``pg_basebackup -R`` from it, its own port and directory).
- ``fixture_migrations`` / ``reference_migrations``: migration directories.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest

from harness.ports import free_port

REPO = Path(__file__).resolve().parents[2]
FIXTURE_MIGRATIONS = REPO / "tests" / "fixtures" / "prisma" / "migrations"
REFERENCE_PRISMA = REPO.parent / "shared" / "ringhub-reference" / "prisma"
MIN_PG_MAJOR = 14
SUPERUSER = "postgres"


_LIVE: set[PgServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Stop and remove every cluster this process started and did not clean up."""
    for server in list(_LIVE):
        server.cleanup()


def reference_migrations_dir() -> Path | None:
    """The hub's real migrations beside the project (``../shared``), or None when absent.

    ``RINGHUB_REFERENCE_PRISMA`` (a ``prisma`` directory) overrides the location.
    """
    base = Path(os.environ.get("RINGHUB_REFERENCE_PRISMA", REFERENCE_PRISMA))
    migrations = base / "migrations"
    return migrations if migrations.is_dir() else None


def find_pg_bindir(min_major: int = MIN_PG_MAJOR) -> Path:
    """Directory of the newest PostgreSQL server binaries (initdb, pg_ctl, postgres)."""
    candidates: list[tuple[int, Path]] = []
    env_dir = os.environ.get("RINGHUB_PG_BINDIR")
    if env_dir:
        return Path(env_dir)
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        if match and Path(path, "initdb").exists():
            candidates.append((int(match.group(1)), Path(path)))
    initdb = shutil.which("initdb")
    if initdb:
        out = subprocess.run([initdb, "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"(\d+)", out)
        if match:
            candidates.append((int(match.group(1)), Path(initdb).resolve().parent))
    candidates = [c for c in candidates if c[0] >= min_major]
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL server binaries >= {min_major} not found (initdb, pg_ctl). "
            "Install them: apt-get install postgresql (or run `make deps` as root)."
        )
    return max(candidates)[1]


def _run_user() -> pwd.struct_passwd | None:
    """The unprivileged account that runs the server when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root but neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PgDatabase:
    """One database on a ``PgServer``: connection helpers for tests."""

    server: PgServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def url(self, **kwargs: Any) -> str:
        return self.server.url(self.name, **kwargs)

    def connect(self, **kwargs: Any) -> Any:
        return self.server.connect(self.name, **kwargs)

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        return self.server.query(sql, params, dbname=self.name)

    def execute(self, sql: str, params: Any = None) -> None:
        self.server.execute(sql, params, dbname=self.name)

    def psql(self, *args: str, sql: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.server.psql(*args, sql=sql, dbname=self.name, check=check)

    def row_counts(self, schema: str = "public") -> dict[str, int]:
        """Row count of every table in ``schema`` (exact counts)."""
        tables = [
            r[0]
            for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,))
        ]
        counts: dict[str, int] = {}
        for table in tables:
            counts[table] = self.query(f'SELECT count(*) FROM "{schema}"."{table}"')[0][0]
        return counts


class PgServer:
    """A throwaway PostgreSQL cluster; use as a context manager or call start()/stop()."""

    def __init__(self, base_dir: str | Path | None = None, port: int | None = None) -> None:
        self.bindir = find_pg_bindir()
        self.base_dir = Path(tempfile.mkdtemp(prefix="ringhub-pg-", dir=base_dir))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.superuser = SUPERUSER
        self.password = "pg-" + secrets.token_hex(12)
        self._user = _run_user()
        self.started = False

    # -- lifecycle -----------------------------------------------------------
    def _as_server_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._user is not None:
            env["HOME"] = str(self.base_dir)
            env["USER"] = self._user.pw_name
        return env

    def start(self) -> PgServer:
        self.socket_dir.mkdir()
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(self.base_dir, 0o755)
        if self._user is not None:
            for path in (self.base_dir, self.socket_dir, pwfile):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run_server_tool(
            "initdb",
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--pwfile", str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %d '",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# threadring.ringhub test harness\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
        self.started = True
        _LIVE.add(self)
        self._wait_ready()
        return self

    def _run_server_tool(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            env=self._server_env(),
            cwd=str(self.base_dir),
            check=False,
            **self._as_server_user(),
        )
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{log}")

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.connect("postgres").close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on port {self.port} not ready after {timeout}s: {last}")

    def stop(self, mode: str = "immediate") -> None:
        if self.started:
            with contextlib.suppress(RuntimeError):
                self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
            self.started = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- connections -----------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        password = self.password if password is None and user == self.superuser else password
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        if password:
            parts.append(f"password={password}")
        return " ".join(parts)

    def url(
        self,
        dbname: str = "postgres",
        *,
        user: str | None = None,
        password: str | None = None,
        params: str = "",
        socket: bool = False,
    ) -> str:
        """A Prisma-style DATABASE_URL; ``params`` is appended as the query string."""
        user = user or self.superuser
        password = self.password if password is None and user == self.superuser else password
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        if socket:
            query = f"host={quote(str(self.socket_dir), safe='')}" + (f"&{params}" if params else "")
            return f"postgresql://{auth}@localhost:{self.port}/{dbname}?{query}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}" + (f"?{params}" if params else "")

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs: Any) -> Any:
        conn = psycopg2.connect(self.dsn(dbname, kwargs.pop("user", None), kwargs.pop("password", None)), **kwargs)
        conn.autocommit = autocommit
        return conn

    def query(self, sql: str, params: Any = None, dbname: str = "postgres") -> list[tuple]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def execute(self, sql: str, params: Any = None, dbname: str = "postgres") -> None:
        self.query(sql, params, dbname)

    def create_database(self, name: str | None = None, owner: str | None = None) -> PgDatabase:
        name = name or "t_" + secrets.token_hex(6)
        self.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        return PgDatabase(self, name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_role(self, name: str, password: str | None = None, *options: str) -> str:
        """Create a login role; ``options`` are SQL role options such as ``CREATEDB``."""
        sql = f'CREATE ROLE "{name}" LOGIN ' + " ".join(options)
        if password:
            self.execute(sql + " PASSWORD %s", (password,))
        else:
            self.execute(sql)
        return name

    def tool(self, name: str) -> str:
        """Path of a client tool (psql, pg_dump, pg_restore) matching the server version."""
        return str(self.bindir / name)

    def psql(
        self, *args: str, sql: str | None = None, dbname: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.password
        cmd = [self.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port)]
        cmd += ["-U", self.superuser, "-d", dbname, *args]
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env, check=check)

    @property
    def major_version(self) -> int:
        return int(self.query("SHOW server_version_num")[0][0]) // 10000


class PgStandby(PgServer):
    """A streaming replica of a ``PgServer``: ``pg_basebackup -R`` from it, then its own port and socket.

    The roles (and so the superuser's password) are the primary's. As root the standby runs as the
    same unprivileged account as the primary. ``pause_replay()``/``resume_replay()`` hold its WAL
    replay back (the WAL keeps streaming in), so a test can make it lag on purpose.
    """

    def __init__(self, primary: PgServer, base_dir: str | Path | None = None, port: int | None = None) -> None:
        super().__init__(base_dir, port)
        self.primary = primary
        self.password = primary.password
        self.bindir = primary.bindir

    def start(self) -> PgStandby:
        self.socket_dir.mkdir()
        os.chmod(self.base_dir, 0o755)
        if self._user is not None:
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        env = self._server_env()
        env["PGPASSWORD"] = self.primary.password
        proc = subprocess.run(
            [
                str(self.bindir / "pg_basebackup"),
                "-D", str(self.data_dir),
                "-h", self.primary.host,
                "-p", str(self.primary.port),
                "-U", self.primary.superuser,
                "-R",  # standby.signal + primary_conninfo
                "-X", "stream",
                "-c", "fast",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(self.base_dir),
            check=False,
            **self._as_server_user(),
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# threadring.ringhub test harness: the standby's own address\n")
            fh.write(f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\nhot_standby = on\n")
        self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
        self.started = True
        _LIVE.add(self)
        self._wait_ready()
        return self

    def replay_lsn(self) -> str:
        return self.query("SELECT pg_last_wal_replay_lsn()::text")[0][0]

    def pause_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")

    def wait_replayed(self, lsn: str, timeout: float = 30.0) -> float:
        """Poll until the standby has replayed ``lsn``; the seconds it took."""
        begin = time.monotonic()
        while time.monotonic() - begin < timeout:
            if self.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0]:
                return time.monotonic() - begin
            time.sleep(0.02)
        raise RuntimeError(f"standby on port {self.port} has not replayed {lsn} after {timeout}s")


def apply_migrations_with_psql(db: PgDatabase, migrations_dir: Path, schema: str = "public") -> list[str]:
    """Apply every ``<dir>/migration.sql`` in lexical order with psql, as a reference build."""
    names = sorted(p.parent.name for p in Path(migrations_dir).glob("*/migration.sql"))
    for name in names:
        sql = (Path(migrations_dir) / name / "migration.sql").read_text()
        db.psql("-1", sql=f'SET search_path TO "{schema}";\n{sql}')
    return names


def schema_dump(db: PgDatabase, schema: str = "public", exclude_tables: tuple[str, ...] = ()) -> str:
    """``pg_dump --schema-only`` of one schema, with comments and SET lines removed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = db.server.password
    cmd = [
        db.server.tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", "-n", schema,
        "-h", db.server.host, "-p", str(db.server.port), "-U", db.server.superuser, "-d", db.name,
    ]  # fmt: skip
    for table in exclude_tables:
        cmd += ["-T", f'{schema}."{table}"']
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    lines = [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not line.startswith("SET ")
        and not line.startswith("SELECT pg_catalog.set_config")
        and not line.startswith("\\")
    ]
    return "\n".join(lines)


# -- pytest fixtures -------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the whole test session."""
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh empty database for one test; dropped afterwards."""
    db = pg_server.create_database()
    try:
        yield db
    finally:
        pg_server.drop_database(db.name)


@pytest.fixture
def pg_server_factory() -> Iterator[Any]:
    """Start extra clusters: ``server = pg_server_factory()``; all removed after the test."""
    servers: list[PgServer] = []

    def make() -> PgServer:
        server = PgServer().start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture
def pg_standby_factory() -> Iterator[Any]:
    """Start streaming replicas: ``standby = pg_standby_factory(primary)``; all removed after the test."""
    standbys: list[PgStandby] = []

    def make(primary: PgServer) -> PgStandby:
        standby = PgStandby(primary)
        standbys.append(standby)
        return standby.start()

    try:
        yield make
    finally:
        for standby in standbys:
            standby.cleanup()


@pytest.fixture(scope="session")
def fixture_migrations() -> Path:
    """The project's own fixture schema (Prisma migrations layout)."""
    return FIXTURE_MIGRATIONS


@pytest.fixture(scope="session")
def reference_migrations() -> Path:
    """The hub's real migrations from ../shared; the test is skipped when absent."""
    path = reference_migrations_dir()
    if path is None:
        pytest.skip("../shared/ringhub-reference/prisma/migrations not present")
    return path


@pytest.fixture(params=["fixture", "reference"])
def any_migrations(request: pytest.FixtureRequest) -> Path:
    """Parametrised over the fixture schema and (when present) the hub's real migrations."""
    if request.param == "fixture":
        return FIXTURE_MIGRATIONS
    path = reference_migrations_dir()
    if path is None:
        pytest.skip("../shared/ringhub-reference/prisma/migrations not present")
    return path
