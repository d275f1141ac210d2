"""A local Ring Hub deployment for the reset playbook: its tests, Molecule scenarios and ``make demo``.

TEST AND DEMO TOOL. Everything a reset touches, in one directory, started from
the test harness and the sandbox hub::

    python tests/harness/deployment.py up   --dir DIR [--hubs N] [--demo-data] [--migrations PATH]
                                             [--no-key] [--mark ENV|none]
    python tests/harness/deployment.py show --dir DIR [--json]
    python tests/harness/deployment.py down --dir DIR

``up`` creates under DIR:

- ``postgres/``: a PostgreSQL cluster of its own (``harness.pg.PgServer``: free
  127.0.0.1 port, fsync off, an unprivileged server account when run as root) with
  a database ``ringhub`` owned by the login role ``ringhub`` (password, not a
  superuser, as the hub's role is); the migrations applied as that role and recorded
  in ``_prisma_migrations`` as ``prisma migrate deploy`` records them; the root ring
  ``spool`` and its roles written by the collection's ring_seed code (owner the
  instance DID); the environment marker line ``ringhub.environment=<ENV>`` in the
  database comment, as pg_schema_reset writes it (``--mark none``: unmarked);
- ``redis/``: a Redis server with a password;
- ``keys/ring-hub.pem`` (0600): the persistent Ed25519 badge key (``--no-key``: none);
- ``deploy/.env`` (0600): the Compose env file (DATABASE_URL as a Prisma URL,
  REDIS_URL, RING_HUB_URL, RING_HUB_PRIVATE_KEY = base64 of the key's PEM text,
  NODE_ENV=production, INSTANCE_DID, ...);
- ``web/.well-known/did.json``: the instance DID document (the collection's DID code);
- ``backups/`` (empty) and the audit path ``audit/ringhub-audit.jsonl`` (not created);
- ``hub1/`` .. ``hubN/``: N sandbox hubs on free ports sharing the database, Redis,
  env file and web root (``ctl.py --port``); RING_HUB_URL is hub1's URL;
- ``deployment.json`` (0600): every port, URL, pid file, log file and path;
- ``inventory.yml`` (0600): the Ansible inventory of the reset playbook (group
  ``production``, hosts ``hub1..hubN``).

``--demo-data`` adds rings, members with real badges (signed joins through the
hubs), post refs, audit rows and Redis keys in db 0 and db 1.

``down`` stops the hubs, Redis and PostgreSQL and removes DIR; it is safe to run
twice and after a partial ``up`` (``up`` records each part as soon as it runs, and
removes everything itself when it fails). It only ever signals processes whose
command line shows they belong to DIR.

From Python: ``up(...)`` returns a ``Deployment``; ``Deployment.load(DIR)``,
``.counts()`` (exact state to compare before/after), ``.describe()``, ``.down()``.
As a pytest plugin (``-p harness.deployment``): fixtures ``sandbox_deployment`` and
``sandbox_deployment_factory(hubs=2, demo_data=True, ...)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

TESTS_DIR = Path(__file__).resolve().parents[1]
# Run as a script, Python puts tests/harness/ first on the path, where harness/ansible.py
# would shadow the ansible package: take it off, and make tests/ importable instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import psycopg2
import psycopg2.errors
import pytest
import redis
import yaml
from sandbox_hub import ctl  # first: the package links .collections/ and puts it on sys.path
from sandbox_hub.instance import SandboxActor, env_line

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    marked_comment,
    parse_database_url,
    parse_marker,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_migrations import load_migrations_dir
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_transaction import (
    INSERT_MIGRATION_SQL,
    PRISMA_MIGRATIONS_DDL,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    DEFAULT_ROLES,
    RingSeeder,
    RootRing,
)
from harness import pg as harness_pg
from harness.pg import FIXTURE_MIGRATIONS, REPO, PgServer
from harness.ports import free_port
from harness.redis_servers import REDIS_SERVER, RedisServer

STATE_FILE = "deployment.json"
INVENTORY_FILE = "inventory.yml"
DB_NAME = "ringhub"
DB_ROLE = "ringhub"
ROOT_SLUG = "spool"
GROUP = "production"
CTL = TESTS_DIR / "sandbox_hub" / "ctl.py"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SECRET_MODE = 0o600


class DeploymentError(RuntimeError):
    """A deployment could not be brought up, read or removed (message free of secrets)."""


# -- small helpers ---------------------------------------------------------------------------


def _python() -> str:
    """The interpreter for Ansible and the restart command: the project's venv when present."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, SECRET_MODE)
    tmp.replace(path)


def _now() -> datetime:
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _alive(pid: int | None) -> bool:
    """True when ``pid`` runs (a zombie is reaped when it is ours, and counts as gone)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return [p.decode(errors="replace") for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]
    except OSError:
        return []


def _server_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as (as PgServer picks it), None when not root."""
    return harness_pg._run_user()


def _unreachable_ancestor(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory above ``path`` the server account cannot enter, or None."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            continue
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == account.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return directory
    return None


# -- Redis that outlives the process that started it --------------------------------------------


class DeploymentRedis(RedisServer):
    """A ``RedisServer`` (harness config, password) in its own session with a pid file, so it
    keeps running after ``up`` returns; stopped by pid (checked to be this server)."""

    def __init__(self, base_dir: Path, password: str) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(password=password, base_dir=base_dir)
        self.pid_file = self.base_dir / "redis.pid"

    def _config_lines(self) -> list[str]:
        return [*super()._config_lines(), f'pidfile "{self.pid_file}"']

    def start(self, timeout: float = 30.0) -> DeploymentRedis:
        for attempt in range(3):
            _write_secret(self.conf_file, "\n".join(self._config_lines()) + "\n")  # requirepass inside
            self.proc = subprocess.Popen(
                [REDIS_SERVER, str(self.conf_file)],
                cwd=str(self.base_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                log = self._log_tail()
                stop_redis(self.proc.pid, self.conf_file)
                if "Address already in use" in log and attempt < 2:
                    self.port = free_port()
                    continue
                raise
        raise AssertionError("unreachable")


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return ""


def _redis_of(pid: int, base_dir: Path) -> bool:
    """True when ``pid`` is a redis-server started in ``base_dir`` (redis rewrites its command
    line to ``redis-server host:port``, so its working directory tells whose it is)."""
    cmd = _cmdline(pid)
    if not cmd or "redis-server" not in cmd[0]:
        return False
    return Path(_cwd(pid)) == base_dir


def stop_redis(pid: int | None, conf_file: str | Path, timeout: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL) the redis-server ``pid`` started beside ``conf_file``; False when not running."""
    if not _alive(pid):
        return False
    assert pid is not None
    if not _redis_of(pid, Path(conf_file).parent):
        return False  # another process now has that pid: never signal it
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if not _alive(pid):
            return True
    return not _alive(pid)


def stop_postgres(state: dict[str, Any], timeout: float = 30.0) -> bool:
    """``pg_ctl stop -m fast`` the cluster of ``state`` (as its server account); False when not running."""
    data_dir = Path(state["data_dir"])
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    cmd = _cmdline(pid)
    if not _alive(pid) or not cmd or "postgres" not in Path(cmd[0]).name or str(data_dir) not in cmd:
        return False  # not the postmaster of this data directory: never signal it
    account = _server_account()
    extra: dict[str, Any] = {}
    if account is not None:
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run(
        [
            str(Path(state["bindir"]) / "pg_ctl"),
            "-D",
            str(data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(data_dir.parent),
        check=False,
        **extra,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):  # pg_ctl failed: the postmaster of this data directory gets SIGQUIT (immediate)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
    return not _alive(pid)


# -- the deployment ---------------------------------------------------------------------------------


@dataclass
class Deployment:
    """A deployment directory and its recorded state (``deployment.json``)."""

    directory: Path
    state: dict[str, Any]

    # -- files and addresses -------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> Deployment:
        directory = Path(directory).resolve()
        path = directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except OSError as exc:
            raise DeploymentError(f"{path} cannot be read ({exc.strerror}): is {directory} a deployment?") from None
        return cls(directory, state)

    def save(self) -> None:
        _write_secret(self.directory / STATE_FILE, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    @property
    def database_url(self) -> str:
        return self.state["database"]["url"]

    @property
    def redis_url(self) -> str:
        return self.state["redis"]["url"]

    @property
    def hub_urls(self) -> list[str]:
        return [hub["url"] for hub in self.state.get("hubs", [])]

    @property
    def hub_url(self) -> str:
        """The public URL (RING_HUB_URL): hub1's."""
        return self.state["hub_url"]

    @property
    def instance_did(self) -> str:
        return self.state["instance_did"]

    @property
    def paths(self) -> dict[str, Path]:
        return {name: Path(value) for name, value in self.state["paths"].items()}

    @property
    def inventory(self) -> Path:
        return self.directory / INVENTORY_FILE

    def connect(self, superuser: bool = False) -> Any:
        """A psycopg2 connection (autocommit) as the hub's role, or as the cluster's superuser."""
        if superuser:
            db = self.state["database"]
            conn = psycopg2.connect(
                host=db["host"],
                port=db["port"],
                user=db["superuser"],
                password=db["superuser_password"],
                dbname=DB_NAME,
            )
        else:
            conn = psycopg2.connect(**parse_database_url(self.database_url).libpq_kwargs())
        conn.autocommit = True
        return conn

    def redis_client(self, db: int = 0, decode: bool = True) -> Any:
        """A client of database ``db`` (the URL's own ``/0`` would win over a ``db=`` argument)."""
        url = urlunsplit(urlsplit(self.redis_url)._replace(path=f"/{db}"))
        return redis.Redis.from_url(url, decode_responses=decode, socket_timeout=5)

    # -- state --------------------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """The exact state a reset changes, cheap to read and to compare (``==``) before/after:
        tables (rows and a digest of their content), rings, root roles, the environment marker,
        the Prisma history, Redis keys per database (with a digest of names and values), the key
        file's sha256, the env value's presence and agreement, the DID document's sha256,
        the backups and the audit lines."""
        out: dict[str, Any] = {}
        conn = self.connect(superuser=True)
        try:
            with conn.cursor() as cur:
                out.update(_database_state(cur))
        finally:
            conn.close()
        out["redis"] = self._redis_state()
        out.update(self._file_state())
        return out

    def _redis_state(self) -> dict[str, Any]:
        client = self.redis_client()
        try:
            keyspace = client.info("keyspace")
            result: dict[str, Any] = {}
            for name in sorted(keyspace):
                if not name.startswith("db"):
                    continue
                db = int(name[2:])
                with self.redis_client(db, decode=False) as dbc:
                    keys = sorted(dbc.scan_iter(count=1000))
                    digest = hashlib.sha256()
                    for key in keys:
                        digest.update(key + b"\0" + (dbc.dump(key) or b"") + b"\0")
                result[str(db)] = {"keys": len(keys), "digest": digest.hexdigest()[:16]}
            return result
        finally:
            client.close()

    def _file_state(self) -> dict[str, Any]:
        paths = self.paths
        key_path, env_file, did_doc = paths["key"], paths["env_file"], paths["web_root"] / ".well-known" / "did.json"
        key_sha = hashlib.sha256(key_path.read_bytes()).hexdigest() if key_path.exists() else None
        env_value = _env_key_value(env_file)
        env_state: dict[str, Any] = {"present": bool(env_value), "matches_key_file": None}
        if env_value and key_path.exists():
            cls = _envfile.classify_value(env_value)
            file_key = _ed25519.load_private_key(key_path.read_bytes(), None, source="key file")
            env_state["matches_key_file"] = bool(cls["key"] is not None and _ed25519.same_key(cls["key"], file_key))
        backups = sorted(p.name for p in paths["backup_dir"].iterdir()) if paths["backup_dir"].is_dir() else []
        audit = paths["audit_log"]
        audit_lines = len(audit.read_text().splitlines()) if audit.exists() else 0
        return {
            "key_file_sha256": key_sha,
            "env_key": env_state,
            "did_document_sha256": hashlib.sha256(did_doc.read_bytes()).hexdigest() if did_doc.exists() else None,
            "backups": backups,
            "audit_lines": audit_lines,
        }

    def hub_health(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """``GET /health/ready`` of every hub: ``{name, url, pid, running, status, checks}``."""
        out = []
        for hub in self.state.get("hubs", []):
            entry: dict[str, Any] = {"name": hub["name"], "url": hub["url"], "pid": ctl.running_pid(hub["pid_file"])}
            entry["running"] = entry["pid"] is not None
            try:
                answer = _get(hub["url"] + "/health/ready", timeout)
                entry.update(status=answer[0], checks=(answer[1] or {}).get("checks"))
            except OSError as exc:
                entry.update(status=None, error=type(exc).__name__)
            out.append(entry)
        return out

    def describe(self) -> dict[str, Any]:
        """``counts()`` plus where everything is, the rings with their members, the Redis key
        names, the key's public fingerprint and each hub's health. Never a password or the key."""
        counts = self.counts()
        conn = self.connect(superuser=True)
        try:
            with conn.cursor() as cur:
                rings = _ring_listing(cur)
                badges = _scalar(cur, 'SELECT count(*) FROM "Badge" WHERE "revokedAt" IS NULL', 0)
        finally:
            conn.close()
        redis_keys: dict[str, list[str]] = {}
        for db in counts["redis"]:
            with self.redis_client(int(db)) as client:
                redis_keys[db] = sorted(client.scan_iter(count=1000))
        key_path = self.paths["key"]
        fingerprint = None
        if key_path.exists():
            fingerprint = _ed25519.fingerprint(_ed25519.load_private_key(key_path.read_bytes(), None, source="key"))
        return {
            "directory": str(self.directory),
            "database": {k: v for k, v in self.state["database"].items() if "password" not in k and k != "url"}
            | {"url": parse_database_url(self.database_url).masked_url},
            "redis": {"endpoint": self.state["redis"]["endpoint"], "pid": self.state["redis"].get("pid")},
            "instance_did": self.instance_did,
            "hub_url": self.hub_url,
            "paths": {k: str(v) for k, v in self.paths.items()},
            "key_fingerprint": fingerprint,
            "rings": rings,
            "active_badges": badges,
            "redis_keys": redis_keys,
            "hubs": self.hub_health(),
            "counts": counts,
        }

    # -- members ------------------------------------------------------------------------------------
    def new_actor(self, hub: int = 1, **kwargs: Any) -> SandboxActor:
        """A member-to-be whose DID document is served by hub ``hub`` (1-based) from the web root."""
        return SandboxActor.create(self.paths["web_root"], self.hub_urls[hub - 1], **kwargs)

    def join(self, actor: SandboxActor, ring: str = ROOT_SLUG, hub: int = 1) -> Any:
        """A signed ``POST /trp/join`` through hub ``hub``; the ``HttpAnswer``."""
        return actor.post(self.hub_urls[hub - 1] + "/trp/join", {"ringSlug": ring})

    # -- removal ------------------------------------------------------------------------------------
    def down(self) -> None:
        down(self.directory)


def _get(url: str, timeout: float) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None


def _scalar(cur: Any, sql: str, default: Any = None) -> Any:
    """One value (autocommit connection), ``default`` when the table is not there."""
    try:
        cur.execute(sql)
    except psycopg2.errors.UndefinedTable:
        return default
    row = cur.fetchone()
    return row[0] if row else default


def _database_state(cur: Any) -> dict[str, Any]:
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    tables = [r[0] for r in cur.fetchall()]
    rows: dict[str, dict[str, Any]] = {}
    for table in tables:
        ident = '"' + table.replace('"', '""') + '"'
        # _prisma_migrations: its timestamps change with every run; names and checksums are its content.
        content = "migration_name || checksum" if table == "_prisma_migrations" else "t::text"
        cur.execute(
            f"SELECT count(*), md5(coalesce(string_agg({content}, E'\\n' ORDER BY {content}), '')) FROM {ident} t"
        )
        count, digest = cur.fetchone()
        rows[table] = {"rows": int(count), "digest": digest[:16]}
    rings = []
    if "Ring" in tables:
        cur.execute('SELECT slug FROM "Ring" ORDER BY slug')
        rings = [r[0] for r in cur.fetchall()]
    roles: list[str] = []
    if "Ring" in tables and "RingRole" in tables:
        cur.execute(
            'SELECT rr.name FROM "RingRole" rr JOIN "Ring" r ON r.id = rr."ringId" WHERE r.slug = %s ORDER BY rr.name',
            (ROOT_SLUG,),
        )
        roles = [r[0] for r in cur.fetchall()]
    migrations: list[str] = []
    if "_prisma_migrations" in tables:
        cur.execute('SELECT migration_name FROM "_prisma_migrations" ORDER BY migration_name')
        migrations = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()")
    comment = cur.fetchone()[0]
    return {
        "tables": rows,
        "total_rows": sum(t["rows"] for t in rows.values()),
        "rings": rings,
        "root_roles": roles,
        "migrations": migrations,
        "environment_marker": parse_marker(comment),
    }


def _ring_listing(cur: Any) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT to_regclass('public.\"Ring\"') IS NOT NULL AND to_regclass('public.\"Membership\"') IS NOT NULL"
    )
    if not cur.fetchone()[0]:
        return []
    cur.execute(
        'SELECT r.slug, r.name, r."joinPolicy"::text, r.visibility::text, r."parentId" IS NULL, '
        '(SELECT count(*) FROM "Membership" m WHERE m."ringId" = r.id AND m.status = \'ACTIVE\'), '
        '(SELECT count(*) FROM "RingRole" rr WHERE rr."ringId" = r.id) '
        'FROM "Ring" r ORDER BY r."parentId" IS NOT NULL, r.slug'
    )
    return [
        {"slug": s, "name": n, "join_policy": j, "visibility": v, "root": root, "members": m, "roles": ro}
        for s, n, j, v, root, m, ro in cur.fetchall()
    ]


def _env_key_value(env_file: Path) -> str | None:
    if not env_file.exists():
        return None
    entries = _envfile.find_var(env_file.read_text(encoding="utf-8"))
    return entries[-1]["value"] if entries and entries[-1]["value"] else None


# -- up ------------------------------------------------------------------------------------------------


def up(
    directory: str | Path,
    *,
    hubs: int = 1,
    demo_data: bool = False,
    migrations: str | Path = FIXTURE_MIGRATIONS,
    key: bool = True,
    mark: str | None = "production",
    timings: dict[str, float] | None = None,
) -> Deployment:
    """Bring a deployment up in ``directory`` (created; must not exist or be empty).

    ``mark`` None (or ``"none"``) leaves the database unmarked. On any failure everything
    started so far is stopped and the directory removed, then the error is raised.
    """
    if hubs < 1:
        raise DeploymentError("--hubs must be at least 1")
    if mark == "none":
        mark = None
    migrations = Path(migrations).resolve()
    directory = Path(directory).absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DeploymentError(f"{directory} exists and is not an empty directory; choose a new one (or run down)")
    try:
        load_migrations_dir(str(migrations))
    except Exception as exc:  # a RingHubError with a clear message
        raise DeploymentError(f"--migrations: {getattr(exc, 'msg', exc)}") from None
    directory.mkdir(parents=True, exist_ok=True)
    account = _server_account()
    if account is not None:
        os.chmod(directory, 0o711)  # the PostgreSQL account enters, lists nothing
        blocked = _unreachable_ancestor(directory, account)
        if blocked is not None:
            directory.rmdir()
            raise DeploymentError(
                f"PostgreSQL runs as {account.pw_name!r} (initdb refuses root) and cannot enter {blocked}: "
                "choose a --dir it can reach (for example under /tmp)"
            )
    else:
        os.chmod(directory, 0o700)
    deployment = Deployment(directory, _initial_state(directory, hubs, migrations, key))
    deployment.save()
    timings = timings if timings is not None else {}
    try:
        _bring_up(
            deployment, hubs=hubs, demo_data=demo_data, migrations=migrations, key=key, mark=mark, timings=timings
        )
    except BaseException:
        with contextlib.suppress(Exception):
            down(directory)
        raise
    return deployment


def _initial_state(directory: Path, hubs: int, migrations: Path, key: bool) -> dict[str, Any]:
    paths = {
        "env_file": directory / "deploy" / ".env",
        "key": directory / "keys" / "ring-hub.pem",
        "web_root": directory / "web",
        "backup_dir": directory / "backups",
        "audit_log": directory / "audit" / "ringhub-audit.jsonl",
        "migrations_dir": migrations,
        "inventory": directory / INVENTORY_FILE,
    }
    return {
        "version": 1,
        "status": "starting",
        "created_at": _now().isoformat() + "Z",
        "hub_count": hubs,
        "key": key,
        "paths": {k: str(v) for k, v in paths.items()},
        "hubs": [],
    }


def _phase(timings: dict[str, float], name: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def timer() -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(time.perf_counter() - start, 3)

    return timer()


def _bring_up(
    dep: Deployment,
    *,
    hubs: int,
    demo_data: bool,
    migrations: Path,
    key: bool,
    mark: str | None,
    timings: dict[str, float],
) -> None:
    directory = dep.directory
    paths = dep.paths
    ports = []
    while len(ports) < hubs:
        port = free_port()
        if port not in ports:
            ports.append(port)
    hub_url = f"http://127.0.0.1:{ports[0]}"
    instance_did = _did.instance_did(hub_url)
    dep.state.update(hub_url=hub_url, instance_did=instance_did)

    def start_postgres() -> None:
        with _phase(timings, "postgres"):
            (directory / "postgres").mkdir(mode=0o755)
            server = PgServer(base_dir=directory / "postgres")
            harness_pg._LIVE.discard(server)
            # Recorded before it starts, so down finds it even if the start fails half-way.
            dep.state["database"] = {
                "host": server.host,
                "port": server.port,
                "bindir": str(server.bindir),
                "base_dir": str(server.base_dir),
                "data_dir": str(server.data_dir),
                "log_file": str(server.log_file),
                "socket_dir": str(server.socket_dir),
                "superuser": server.superuser,
                "superuser_password": server.password,
                "name": DB_NAME,
                "role": DB_ROLE,
            }
            server.start()
            harness_pg._LIVE.discard(server)  # it outlives this process: down stops it
            role_password = "rh-" + secrets.token_hex(16)
            server.create_role(DB_ROLE, role_password)  # LOGIN, not a superuser, creates nothing
            server.execute(f'CREATE DATABASE "{DB_NAME}" OWNER "{DB_ROLE}"')
            params = "schema=public&connection_limit=5"
            url = (
                f"postgresql://{DB_ROLE}:{quote(role_password, safe='')}@{server.host}:{server.port}/{DB_NAME}?{params}"
            )
            dep.state["database"].update(url=url, role_password=role_password)
        with _phase(timings, "migrations"):
            _apply_migrations(dep, migrations)
        with _phase(timings, "root_ring"):
            RingSeeder(parse_database_url(url), RootRing(owner_did=instance_did)).run()
            if mark is not None:
                conn = dep.connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'COMMENT ON DATABASE "{DB_NAME}" IS %s', (marked_comment(None, mark),))
                finally:
                    conn.close()
            dep.state["database"]["marker"] = mark

    def start_redis() -> None:
        with _phase(timings, "redis"):
            server = DeploymentRedis(directory / "redis", password="rd-" + secrets.token_hex(16))
            dep.state["redis"] = {"conf_file": str(server.conf_file), "pid_file": str(server.pid_file)}
            server.start()
            dep.state["redis"].update(
                pid=server.proc.pid if server.proc else None,
                port=server.port,
                endpoint=server.endpoint,
                url=server.url(0),
                password=server.password,
                log_file=str(server.log_file),
            )

    # PostgreSQL (initdb is the slow part) and Redis start side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start_postgres), pool.submit(start_redis)]
        errors = [f.exception() for f in futures]
    dep.save()
    for error in errors:
        if error is not None:
            raise error

    with _phase(timings, "files"):
        for name in ("backup_dir",):
            paths[name].mkdir(mode=0o700)
        paths["web_root"].mkdir(mode=0o755)
        private_key = None
        if key:
            private_key = _ed25519.generate_private_key()
            paths["key"].parent.mkdir(mode=0o700)
            fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_ed25519.private_pem(private_key))
            doc = _did.build_document(instance_did, _ed25519.raw_public_key(private_key))
            well_known = paths["web_root"] / ".well-known"
            well_known.mkdir(parents=True)
            (well_known / "did.json").write_bytes(_did.render_document(doc))
        else:
            paths["key"].parent.mkdir(mode=0o700)
        _write_env_file(dep, private_key, ports[0])
        for index, port in enumerate(ports, start=1):
            name = f"hub{index}"
            hub_dir = directory / name
            hub_dir.mkdir(mode=0o700)
            dep.state["hubs"].append(
                {
                    "name": name,
                    "port": port,
                    "url": f"http://127.0.0.1:{port}",
                    "pid_file": str(hub_dir / "hub.pid"),
                    "log_file": str(hub_dir / "hub.log"),
                }
            )
        dep.save()

    with _phase(timings, "hubs"):
        _start_hubs(dep)
    if demo_data:
        with _phase(timings, "demo_data"):
            dep.state["demo_data"] = seed_demo_data(dep)
    with _phase(timings, "inventory"):
        write_inventory(dep)
    dep.state["status"] = "up"
    dep.state["timings"] = timings
    dep.save()


def _apply_migrations(dep: Deployment, migrations_dir: Path) -> None:
    """Each migration in its own transaction, as the hub's role, recorded in ``_prisma_migrations``
    the way ``prisma migrate deploy`` records it (checksum = sha256 of migration.sql)."""
    migrations = load_migrations_dir(str(migrations_dir))
    conn = dep.connect()
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(PRISMA_MIGRATIONS_DDL)
        conn.commit()
        for migration in migrations:
            with conn.cursor() as cur:
                cur.execute("SELECT clock_timestamp()")
                started = cur.fetchone()[0]
                if migration.sql.strip():
                    cur.execute(migration.sql)
                cur.execute("SELECT clock_timestamp()")
                finished = cur.fetchone()[0]
                cur.execute(
                    INSERT_MIGRATION_SQL, (str(uuid.uuid4()), migration.checksum, finished, migration.name, started)
                )
            conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise DeploymentError(f"applying the migrations of {migrations_dir} failed: {exc.pgerror or exc}") from None
    finally:
        conn.close()
    dep.state["database"]["migrations"] = [m.name for m in migrations]


def _write_env_file(dep: Deployment, private_key: Any, port: int) -> None:
    """The Compose ``.env`` next to docker-compose.yml, as a hub deployment keeps it (0600)."""
    db = dep.state["database"]
    values = {
        "NODE_ENV": "production",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RING_HUB_URL": dep.hub_url,
        "INSTANCE_DID": dep.instance_did,
        "ROOT_RING_SLUG": ROOT_SLUG,
        "DATABASE_URL": db["url"],
        "POSTGRES_USER": DB_ROLE,
        "POSTGRES_PASSWORD": db["role_password"],
        "POSTGRES_DB": DB_NAME,
        "REDIS_URL": dep.redis_url,
        "JWT_SECRET": secrets.token_urlsafe(48),
    }
    lines = ["# Ring Hub deployment (local sandbox): read by docker compose and by the hub", ""]
    lines += [env_line(name, value) for name, value in values.items()]
    if private_key is not None:
        lines += ["", "# base64 of the PEM text of the badge-signing key (keys/ring-hub.pem)"]
        lines.append(f"{_envfile.DEFAULT_VAR}={_envfile.encode_key_value(private_key)}")
    _write_secret(dep.paths["env_file"], "\n".join(lines) + "\n")


def restart_command(dep: Deployment, hub: dict[str, Any]) -> str:
    """The ``ctl.py restart`` command line of one hub (absolute paths, the venv Python)."""
    paths = dep.paths
    return shlex.join(
        [
            _python(),
            str(CTL),
            "restart",
            "--env-file",
            str(paths["env_file"]),
            "--web-root",
            str(paths["web_root"]),
            "--pid-file",
            hub["pid_file"],
            "--log-file",
            hub["log_file"],
            "--port",
            str(hub["port"]),
            "--no-inherit",
        ]
    )


def _start_hubs(dep: Deployment) -> None:
    paths = dep.paths

    def start(hub: dict[str, Any]) -> int:
        return ctl.start(
            paths["env_file"],
            paths["web_root"],
            hub["pid_file"],
            hub["log_file"],
            timeout=30,
            inherit=False,
            port=hub["port"],
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(dep.state["hubs"])) as pool:
        pids = list(pool.map(start, dep.state["hubs"]))
    for hub, pid in zip(dep.state["hubs"], pids, strict=True):
        hub["pid"] = pid
        hub["restart_command"] = restart_command(dep, hub)


def write_inventory(dep: Deployment) -> Path:
    """``inventory.yml``: group ``production`` with hosts hub1..hubN, the playbook's variables (0600)."""
    paths = dep.paths
    hosts = {
        hub["name"]: {
            "ansible_connection": "local",
            "ansible_python_interpreter": _python(),
            "ringhub_api_url": hub["url"],
            "ringhub_restart_command": hub["restart_command"],
        }
        for hub in dep.state["hubs"]
    }
    group_vars = {
        "ringhub_database_url": dep.database_url,
        "ringhub_redis_url": dep.redis_url,
        "ringhub_instance_did": dep.instance_did,
        "ringhub_hub_url": dep.hub_url,
        "ringhub_root_slug": ROOT_SLUG,
        "ringhub_migrations_dir": str(paths["migrations_dir"]),
        "ringhub_backup_dir": str(paths["backup_dir"]),
        "ringhub_key_path": str(paths["key"]),
        "ringhub_env_file": str(paths["env_file"]),
        "ringhub_web_root": str(paths["web_root"]),
        "ringhub_environment": GROUP,
        "ringhub_audit_log": str(paths["audit_log"]),
        "ringhub_restart_backend": "command",
        "ringhub_ready_timeout": 30,
        # The reset's own tests compare the exact state a reset leaves; the verification that ends a reset (a test
        # actor joins and leaves) is switched on where it is tested: -e ringhub_verify_after_reset=true.
        "ringhub_verify_after_reset": False,
    }
    inventory = {"all": {"children": {GROUP: {"hosts": hosts, "vars": group_vars}}}}
    text = "# Ring Hub deployment (local sandbox) for playbooks/reset.yml: -i this file -l production\n"
    text += yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False, width=1000)
    _write_secret(dep.inventory, text)
    return dep.inventory


# -- demo data -------------------------------------------------------------------------------------------

# Keys expire (as sessions, caches and rate limits do), but not while a test or a demo compares
# the state before and after a run: a day.
DEMO_TTL = 86400
DEMO_ACTORS = ["ada", "basil", "cleo", "dmitri", "edda", "farah", "gus", "hana"]
DEMO_RINGS = [
    # slug, name, description, join policy, visibility
    ("zine-makers", "Zine Makers", "Cut, paste, fold, share", "OPEN", "PUBLIC"),
    ("pixel-garden", "Pixel Garden", "Small pictures, tended daily", "OPEN", "PUBLIC"),
    ("slow-web", "The Slow Web", "Hand-made homepages", "OPEN", "PUBLIC"),
    ("night-owls", "Night Owls", "Posts after midnight only", "APPLICATION", "PUBLIC"),
    ("back-room", "The Back Room", "Unlisted ring for regulars", "OPEN", "UNLISTED"),
]
# Which actors join which rings (the root ring: everyone).
DEMO_JOINS = {
    "zine-makers": ["ada", "basil", "cleo", "edda"],
    "pixel-garden": ["cleo", "dmitri", "farah"],
    "slow-web": ["ada", "gus", "hana", "farah", "basil"],
    "night-owls": ["dmitri", "hana"],
    "back-room": ["edda", "gus"],
}


def seed_demo_data(dep: Deployment) -> dict[str, Any]:
    """Rings, members with real badges (signed joins spread over the hubs), a leave (a revoked
    badge), post refs, ring-creation audit rows, and Redis keys in db 0 (sessions, cache, rate
    limits, plus the DID documents the hubs cached) and db 1 (job queue)."""
    hubs = len(dep.hub_urls)
    actors = {name: dep.new_actor(hub=1 + i % hubs, user_id=name) for i, name in enumerate(DEMO_ACTORS)}
    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT id FROM "Ring" WHERE slug = %s', (ROOT_SLUG,))
            root_id = cur.fetchone()[0]
            now = _now()
            for i, (slug, name, description, policy, visibility) in enumerate(DEMO_RINGS):
                ring_id = str(uuid.uuid4())
                owner = actors[DEMO_JOINS[slug][0]].did
                cur.execute(
                    'INSERT INTO "Ring" ("id", "slug", "name", "description", "createdAt", "updatedAt", "visibility", '
                    '"joinPolicy", "postPolicy", "ownerDid", "parentId", "metadata") VALUES (%s, %s, %s, %s, %s, %s, '
                    '%s::"RingVisibility", %s::"JoinPolicy", \'OPEN\'::"PostPolicy", %s, %s, %s::jsonb)',
                    (ring_id, slug, name, description, now - timedelta(days=30 - i), now, visibility, policy, owner,
                     root_id, json.dumps({"topic": slug.split("-")[0]})),
                )  # fmt: skip
                for role, permissions in DEFAULT_ROLES.items():
                    cur.execute(
                        'INSERT INTO "RingRole" ("id", "ringId", "name", "permissions") VALUES (%s, %s, %s, %s::jsonb)',
                        (str(uuid.uuid4()), ring_id, role, json.dumps(permissions)),
                    )
                cur.execute(
                    'INSERT INTO "AuditLog" ("id", "ringId", "action", "actorDid", "metadata", "timestamp") '
                    "VALUES (%s, %s, 'ring.created', %s, %s::jsonb, %s)",
                    (str(uuid.uuid4()), ring_id, owner, json.dumps({"slug": slug, "parent": ROOT_SLUG}), now),
                )
    finally:
        conn.close()

    joins = [(name, ROOT_SLUG) for name in DEMO_ACTORS]
    joins += [(name, slug) for slug, names in DEMO_JOINS.items() for name in names]
    badges = 0
    for n, (name, slug) in enumerate(joins):
        answer = dep.join(actors[name], slug, hub=1 + n % hubs)
        if answer.status != 201:
            raise DeploymentError(f"demo join of {name} to {slug} answered {answer.status}: {answer.body[:300]!r}")
        badges += 1 if (answer.json or {}).get("badge") else 0
    leave = actors["gus"].post(dep.hub_urls[0] + "/trp/leave", {"ringSlug": "back-room", "reason": "moved on"})
    if leave.status != 200:
        raise DeploymentError(f"demo leave answered {leave.status}: {leave.body[:300]!r}")

    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                'SELECT m."ringId", m."actorDid", r.slug FROM "Membership" m JOIN "Ring" r ON r.id = m."ringId" '
                "WHERE m.status = 'ACTIVE' ORDER BY r.slug, m.\"actorDid\""
            )
            posts = 0
            for k, (ring_id, did, slug) in enumerate(cur.fetchall()):
                for p in range(1 + k % 3):
                    user = did.rsplit(":", 1)[-1]
                    cur.execute(
                        'INSERT INTO "PostRef" ("id", "ringId", "actorDid", "uri", "digest", "submittedBy", "status") '
                        "VALUES (%s, %s, %s, %s, %s, %s, %s::\"PostStatus\")",
                        (str(uuid.uuid4()), ring_id, did, f"https://{user}.example.test/{slug}/post-{p + 1}",
                         "sha256-" + hashlib.sha256(f"{did}{slug}{p}".encode()).hexdigest(), did,
                         "PENDING" if p == 2 else "ACCEPTED"),
                    )  # fmt: skip
                    posts += 1
    finally:
        conn.close()

    sessions = rate_limits = 0
    with dep.redis_client(0) as r0:
        pipe = r0.pipeline(transaction=False)
        for name, actor in actors.items():
            token = secrets.token_hex(16)
            pipe.hset(f"sess:{token}", mapping={"did": actor.did, "handle": name, "createdAt": _now().isoformat()})
            pipe.expire(f"sess:{token}", DEMO_TTL)
            sessions += 1
        for slug, *_rest in DEMO_RINGS:
            pipe.set(f"cache:ring:{slug}", json.dumps({"slug": slug, "cachedAt": _now().isoformat()}), ex=DEMO_TTL)
        pipe.set(f"cache:ring:{ROOT_SLUG}", json.dumps({"slug": ROOT_SLUG}), ex=DEMO_TTL)
        for octet in range(10, 16):
            pipe.set(f"ratelimit:203.0.113.{octet}", 7 * octet % 50, ex=DEMO_TTL)
            rate_limits += 1
        pipe.execute()
    with dep.redis_client(1) as r1:
        pipe = r1.pipeline(transaction=False)
        pipe.rpush("queue:federation:outbox", *[json.dumps({"job": i, "type": "announce"}) for i in range(4)])
        pipe.hset("queue:federation:meta", mapping={"processed": 112, "failed": 3})
        pipe.set("queue:federation:lock", "worker-1", ex=DEMO_TTL)
        pipe.execute()
    return {
        "actors": len(actors),
        "rings": 1 + len(DEMO_RINGS),
        "joins": len(joins),
        "badges_issued": badges,
        "posts": posts,
        "sessions": sessions,
        "rate_limits": rate_limits,
    }


# -- down ---------------------------------------------------------------------------------------------------


def down(directory: str | Path) -> bool:
    """Stop the hubs, Redis and PostgreSQL of ``directory`` and remove it; False when there was none.

    Refuses a directory that holds files but no ``deployment.json`` (not a deployment).
    """
    directory = Path(directory).absolute()
    if not directory.exists():
        return False
    state_file = directory / STATE_FILE
    if not state_file.exists():
        if any(directory.iterdir()):
            raise DeploymentError(f"{directory} has no {STATE_FILE}: not a deployment, left as it is")
        directory.rmdir()
        return False
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"{state_file} cannot be read: {exc}") from None
    problems = []
    for hub in state.get("hubs", []):
        try:
            ctl.stop(hub["pid_file"])
        except Exception as exc:  # keep going: everything else must still stop
            problems.append(f"{hub['name']}: {exc}")
    # A hub whose pid file was lost (start interrupted) is found by its command line.
    for pid in _hub_pids_of(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    redis_state = state.get("redis") or {}
    if redis_state.get("conf_file"):
        pid = redis_state.get("pid")
        with contextlib.suppress(OSError, ValueError):
            pid = pid or int(Path(redis_state["pid_file"]).read_text().strip())
        stop_redis(pid, redis_state["conf_file"])
        for other in _pids_in(Path(redis_state["conf_file"]).parent):  # a start interrupted before its pid was kept
            stop_redis(other, redis_state["conf_file"])
    db_state = state.get("database") or {}
    if db_state.get("data_dir"):
        stop_postgres(db_state)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _hub_pids_of(directory):
        time.sleep(0.05)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        problems.append(f"{directory} could not be removed completely")
    if problems:
        raise DeploymentError("down finished with problems: " + "; ".join(problems))
    return True


def _pids_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``."""
    return [
        int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and Path(_cwd(int(e.name))) == directory
        and _alive(int(e.name))
    ]  # fmt: skip


def _hub_pids_of(directory: Path) -> list[int]:
    """Sandbox hub processes started with this deployment's env file."""
    env_file = str(directory / "deploy" / ".env")
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and ctl.SERVER_MODULE in _cmdline(int(e.name)) and env_file in _cmdline(int(e.name))
        and _alive(int(e.name))
    ]  # fmt: skip


# -- show ------------------------------------------------------------------------------------------------------


def render(description: dict[str, Any]) -> str:
    """A human summary of ``describe()`` (what ``show`` prints)."""
    c = description["counts"]
    lines = [f"Ring Hub deployment in {description['directory']}"]
    lines.append(f"  hub URL {description['hub_url']}, instance DID {description['instance_did']}")
    lines.append(f"  database {description['database']['url']} (marker: {c['environment_marker'] or 'none'})")
    for hub in description["hubs"]:
        state = f"ready ({hub['status']})" if hub.get("status") == 200 else f"NOT ready ({hub.get('status')})"
        lines.append(f"  {hub['name']}: {hub['url']} pid {hub['pid'] or '-'} {state}")
    lines.append(f"  rings ({len(description['rings'])}):")
    for ring in description["rings"]:
        tag = " [root]" if ring["root"] else ""
        lines.append(
            f"    {ring['slug']:<14} {ring['members']:>3} members  {ring['roles']} roles  "
            f"{ring['join_policy'].lower()}, {ring['visibility'].lower()}{tag}"
        )
    lines.append(f"  root ring roles: {', '.join(c['root_roles']) or '-'}")
    table_text = ", ".join(f"{name} {t['rows']}" for name, t in c["tables"].items() if not name.startswith("_"))
    lines.append(f"  rows: {table_text} (total {c['total_rows']})")
    lines.append(f"  active badges: {description['active_badges']}")
    if c["redis"]:
        for db, info in c["redis"].items():
            names = description["redis_keys"].get(db, [])
            kinds = sorted({n.split(":", 1)[0] for n in names})
            lines.append(f"  redis db{db}: {info['keys']} keys ({', '.join(kinds)})")
    else:
        lines.append("  redis: empty")
    key = c["env_key"]
    lines.append(
        f"  signing key: {description['paths']['key']} sha256 {c['key_file_sha256'] or '(none)'}; "
        f"public fingerprint {description['key_fingerprint'] or '-'}; RING_HUB_PRIVATE_KEY "
        + ("set" if key["present"] else "not set")
        + ("" if key["matches_key_file"] is None else (", same key" if key["matches_key_file"] else ", ANOTHER key"))
    )
    lines.append(f"  backups: {', '.join(c['backups']) or 'none'}")
    lines.append(f"  audit lines: {c['audit_lines']}")
    return "\n".join(lines)


# -- pytest plugin ------------------------------------------------------------------------------------------------


def new_directory() -> Path:
    """A fresh directory name under the system temp dir (reachable by the PostgreSQL account)."""
    parent = Path(tempfile.mkdtemp(prefix="ringhub-deploy-"))
    os.chmod(parent, 0o711)  # the PostgreSQL account (as root: postgres) must pass through
    return parent / "deployment"


@pytest.fixture
def sandbox_deployment_factory() -> Iterator[Callable[..., Deployment]]:
    """``sandbox_deployment_factory(hubs=2, demo_data=True, migrations=..., key=True, mark="production")``:
    a running deployment (see ``up``); every one is brought down after the test."""
    made: list[Path] = []

    def make(**kwargs: Any) -> Deployment:
        directory = new_directory()
        made.append(directory)
        return up(directory, **kwargs)

    try:
        yield make
    finally:
        for directory in made:
            with contextlib.suppress(Exception):
                down(directory)
            with contextlib.suppress(OSError):
                directory.parent.rmdir()


@pytest.fixture
def sandbox_deployment(sandbox_deployment_factory: Callable[..., Deployment]) -> Deployment:
    """One hub, no demo data, a persistent key, the database marked production."""
    return sandbox_deployment_factory()


# -- CLI ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deployment.py",
        description="A local Ring Hub deployment (PostgreSQL, Redis, key, env file, sandbox hubs) for the reset "
        "playbook's tests and demo. Test and demo tool only.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="create and start a deployment in --dir")
    p_up.add_argument("--dir", required=True, help="directory to create (must not exist or be empty)")
    p_up.add_argument("--hubs", type=int, default=1, help="number of sandbox hubs (default 1)")
    p_up.add_argument("--demo-data", action="store_true", help="rings, members, badges, posts, audit rows, Redis keys")
    p_up.add_argument("--migrations", default=str(FIXTURE_MIGRATIONS), help="Prisma migrations directory")
    p_up.add_argument("--no-key", action="store_true", help="no signing key, env value or instance DID document")
    p_up.add_argument("--mark", default="production", help="environment marker of the database ('none': unmarked)")
    p_show = sub.add_parser("show", help="describe a deployment")
    p_show.add_argument("--dir", required=True)
    p_show.add_argument("--json", action="store_true", help="machine-readable (describe())")
    p_down = sub.add_parser("down", help="stop everything and remove --dir (safe to repeat)")
    p_down.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            timings: dict[str, float] = {}
            start = time.perf_counter()
            dep = up(
                args.dir,
                hubs=args.hubs,
                demo_data=args.demo_data,
                migrations=args.migrations,
                key=not args.no_key,
                mark=args.mark,
                timings=timings,
            )
            print(render(dep.describe()))
            print(f"  inventory: {dep.inventory}")
            print(
                f"up in {time.perf_counter() - start:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in timings.items())})"
            )
            return 0
        if args.action == "show":
            description = Deployment.load(args.dir).describe()
            print(json.dumps(description, indent=2) if args.json else render(description))
            return 0
        removed = down(args.dir)
        print(f"removed {args.dir}" if removed else f"nothing to remove at {args.dir}")
        return 0
    except (DeploymentError, ctl.CtlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
