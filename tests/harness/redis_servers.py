"""Throwaway Redis servers for tests, benchmarks and demos.

Every server is a real ``redis-server`` process listening on a free 127.0.0.1
port (never 6379) or on a Unix socket, with its configuration, log and socket
in a temporary directory that is removed when the server is cleaned up.
Persistence is off (``save ""``, no AOF). The process is killed at the end of
the fixture that started it, even when the test fails, and again at
interpreter exit (``atexit``) or when the parent dies (``PR_SET_PDEATHSIG``).

Plain Python API (usable from benchmarks and scripts)::

    with RedisServer() as server:              # or server = RedisServer().start(); server.cleanup()
        server.client().set("k", "v")          # redis-py client (decode_responses=True)
        server.url(db=2)                       # redis://127.0.0.1:<port>/2
        server.cli("DBSIZE")                   # redis-cli with the right flags

    RedisServer(password="pw", acl_users={"app": "on >secret ~* &* +@all"})
    RedisServer(tls=make_tls_certificates(tmpdir))          # TLS only, client cert required
    RedisServer(unix_socket=True)                           # Unix socket only
    with RedisCluster(primaries=3, replicas=1) as cluster:  # redis-cli --cluster create
        cluster.client()                                    # redis.cluster.RedisCluster

Loaded as a pytest plugin (``-p harness.redis_servers``); fixtures:

- ``redis_server``: a fresh plain server per test.
- ``redis_acl_server``: ``requirepass`` on the default user plus the ACL users of
  ``ACL_USERS`` (``ringhub`` may do everything, ``noflush`` may not FLUSHALL/FLUSHDB,
  ``app`` has no ``@dangerous`` command: no INFO, KEYS, FLUSHALL, FLUSHDB, CONFIG).
- ``redis_tls_certs`` (session) and ``redis_tls_server``: TLS with a test CA,
  server and client certificates made with ``cryptography``.
- ``redis_unix_server``: Unix socket only (``port 0``).
- ``redis_cluster`` (module scope): 3 primaries, no replicas.
- ``redis_cluster_replicas`` (module scope): 3 primaries with one replica each.
- ``redis_server_factory``: ``redis_server_factory(**RedisServer kwargs)`` for any
  other variant; every server it started is removed after the test.
- ``redis_pre4_front``: ``redis_pre4_front(hide_version=False)`` puts a front that answers
  like Redis 3.2 (no ``FLUSHALL ASYNC``, no ``UNLINK``) before the test's ``redis_server``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.ports import free_port

REDIS_SERVER = os.environ.get("RINGHUB_REDIS_SERVER", "redis-server")
REDIS_CLI = os.environ.get("RINGHUB_REDIS_CLI", "redis-cli")
CLUSTER_MAX_PORT = 45535  # the cluster bus listens on port + 10000, which must stay <= 55535

#: ACL users of ``redis_acl_server``: name -> (password, ACL rules).
ACL_USERS: dict[str, tuple[str, str]] = {
    "ringhub": ("ringhub-" + secrets.token_hex(8), "~* &* +@all"),
    "noflush": ("noflush-" + secrets.token_hex(8), "~* &* +@all -flushall -flushdb"),
    "app": ("app-" + secrets.token_hex(8), "~* &* +@all -@dangerous"),
}

_LIVE: set[subprocess.Popen] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(timeout=5)
        _LIVE.discard(proc)


atexit.register(_kill_leftovers)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL the server when the process that started it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# -- TLS material ------------------------------------------------------------------


@dataclass(frozen=True)
class TlsCertificates:
    """PEM files of a throwaway CA, a server certificate (127.0.0.1, localhost) and a client certificate."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_certificates(directory: str | Path, client_cn: str = "ringhub-client") -> TlsCertificates:
    """Generate a CA, a server and a client certificate (EC P-256, valid for two days) in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(key_path, 0o600)
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("ringhub test CA"))
        .issuer_name(name("ringhub test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf(client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    ca_paths = write("ca", ca_cert, ca_key)
    server_paths = write("server", server_cert, server_key)
    client_paths = write("client", client_cert, client_key)
    return TlsCertificates(directory, *ca_paths, *server_paths, *client_paths)


# -- one server ----------------------------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server``; use as a context manager or call ``start()`` / ``cleanup()``.

    :param port: TCP port (a free one by default; ``0`` with ``unix_socket=True`` means socket only).
    :param password: ``requirepass`` of the default user.
    :param acl_users: ``{name: (password, rules)}``, written as ``user name on >password rules``.
    :param tls: certificates; the server then listens only on its TLS port.
    :param tls_auth_clients: ``yes`` (client certificate required), ``optional`` or ``no``.
    :param unix_socket: listen on ``<dir>/redis.sock`` (and on no TCP port unless ``port`` is given).
    :param cluster: ``cluster-enabled yes`` (the port then leaves room for the bus at port + 10000).
    :param config: extra ``redis.conf`` directives, e.g. ``{"enable-debug-command": "yes"}``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        acl_users: dict[str, tuple[str, str]] | None = None,
        tls: TlsCertificates | None = None,
        tls_auth_clients: str = "yes",
        unix_socket: bool = False,
        cluster: bool = False,
        config: dict[str, str] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="ringhub-redis-", dir=base_dir))
        self.host = "127.0.0.1"
        self.password = password
        self.acl_users = dict(acl_users or {})
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.cluster = cluster
        self.extra_config = dict(config or {})
        self.socket_path: Path | None = self.base_dir / "redis.sock" if unix_socket else None
        self._fixed_port = port
        if port is None and unix_socket:
            port = 0
        self.port: int = port if port is not None else self._pick_port()
        self.log_file = self.base_dir / "redis.log"
        self.conf_file = self.base_dir / "redis.conf"
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ----------------------------------------------------------------
    def _pick_port(self) -> int:
        if self.cluster:
            return free_port(high=CLUSTER_MAX_PORT, also_free=(10000,))
        return free_port()

    def _config_lines(self) -> list[str]:
        lines = [
            f"bind {self.host}",
            "protected-mode no",
            "daemonize no",
            f'dir "{self.base_dir}"',
            f'logfile "{self.log_file}"',
            "loglevel notice",
            'save ""',
            "appendonly no",
            "databases 16",
            "repl-diskless-sync-delay 0",  # replicas sync at once, not after 5 s
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.tls.server_cert}"',
                f'tls-key-file "{self.tls.server_key}"',
                f'tls-ca-cert-file "{self.tls.ca_cert}"',
                f"tls-auth-clients {self.tls_auth_clients}",
            ]
        else:
            lines.append(f"port {self.port}")
        if self.socket_path:
            lines += [f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        for user, (pw, rules) in self.acl_users.items():
            lines.append(f"user {user} on >{pw} {rules}")
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                f'cluster-config-file "{self.base_dir / "nodes.conf"}"',
                "cluster-node-timeout 5000",
            ]
            if self.password:
                lines.append(f'masterauth "{self.password}"')
        lines += [f"{key} {value}" for key, value in self.extra_config.items()]
        return lines

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start the server and wait until it answers PING; retries on a port taken meanwhile."""
        for attempt in range(3):
            self.conf_file.write_text("\n".join(self._config_lines()) + "\n")
            self.proc = subprocess.Popen(
                [REDIS_SERVER, str(self.conf_file)],
                cwd=str(self.base_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            _LIVE.add(self.proc)
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                log = self._log_tail()
                self.stop()
                if "Address already in use" in log and self._fixed_port is None and attempt < 2 and self.port:
                    self.port = self._pick_port()
                    continue
                raise
        raise AssertionError("unreachable")

    def _log_tail(self, size: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-size:] if self.log_file.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                with self.client(socket_timeout=2) as client:
                    if client.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"redis-server {self.endpoint} not ready after {timeout}s: {last}\n{self._log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); the directory stays."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)

    def cleanup(self) -> None:
        """Stop the process and remove its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- addresses -------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``host:port`` or the socket path (no credentials)."""
        if self.socket_path and not self.port:
            return str(self.socket_path)
        return f"{self.host}:{self.port}"

    def url(self, db: int = 0, *, username: str | None = None, password: str | None = None) -> str:
        """A ``redis://``, ``rediss://`` or ``unix://`` URL; the default user's password unless told otherwise."""
        if password is None and username is None:
            password = self.password
        auth = ""
        if username or password:
            auth = quote(username or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
        if self.socket_path and not self.port:
            return f"unix://{auth}{self.socket_path}?db={db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{db}"

    def client_kwargs(self, *, username: str | None = None, password: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` (TLS files included)."""
        if password is None and username is None:
            password = self.password
        kwargs: dict[str, Any] = {"username": username, "password": password}
        if self.socket_path and not self.port:
            kwargs["unix_socket_path"] = str(self.socket_path)
        else:
            kwargs.update(host=self.host, port=self.port)
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=str(self.tls.ca_cert),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        return kwargs

    def client(self, db: int = 0, *, username: str | None = None, password: str | None = None, **kw: Any) -> Any:
        """A redis-py client (``decode_responses=True``, no retries) for database ``db``."""
        kwargs = self.client_kwargs(username=username, password=password)
        kwargs.update(db=db, decode_responses=True, retry=Retry(NoBackoff(), 0))
        kwargs.update(kw)
        return redis.Redis(**kwargs)

    def cli_args(self, *, username: str | None = None, password: str | None = None) -> list[str]:
        """``redis-cli`` connection flags (password passed with ``REDISCLI_AUTH`` by ``cli``)."""
        args = [REDIS_CLI]
        if self.socket_path and not self.port:
            args += ["-s", str(self.socket_path)]
        else:
            args += ["-h", self.host, "-p", str(self.port)]
        if self.tls:
            args += ["--tls", "--cacert", str(self.tls.ca_cert)]
            args += ["--cert", str(self.tls.client_cert), "--key", str(self.tls.client_key)]
        if username:
            args += ["--user", username]
        return args

    def cli_env(self, *, username: str | None = None, password: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if password is None and username is None:
            password = self.password
        if password:
            env["REDISCLI_AUTH"] = password
        return env

    def cli(
        self,
        *args: str,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        check: bool = True,
        input: str | None = None,
    ) -> str:
        """Run ``redis-cli -n db args...`` and return its stdout (stripped)."""
        cmd = self.cli_args(username=username, password=password) + ["-n", str(db), *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=self.cli_env(username=username, password=password),
            check=False,
            timeout=120,
        )
        if check and (proc.returncode != 0 or proc.stdout.startswith(("ERR", "NOPERM", "WRONGPASS"))):
            raise RuntimeError(f"redis-cli {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    # -- data helpers ----------------------------------------------------------------
    def admin(self, db: int = 0) -> Any:
        """A client with full rights (the default user)."""
        return self.client(db)

    def info(self, section: str = "default") -> dict[str, Any]:
        with self.admin() as client:
            return client.info(section)

    def cluster_info(self) -> dict[str, Any]:
        with self.admin() as client:
            text = client.execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def dbsize(self, db: int = 0) -> int:
        with self.client(db) as client:
            return int(client.dbsize())

    def dbsizes(self) -> dict[int, int]:
        """Keys per non-empty database, from ``INFO keyspace``."""
        return {int(name[2:]): int(v["keys"]) for name, v in self.info("keyspace").items() if name.startswith("db")}

    def keys(self, db: int = 0, match: str = "*") -> set[str]:
        with self.client(db) as client:
            return set(client.scan_iter(match=match, count=1000))

    def fill(self, keys: dict[str, str] | list[str], db: int = 0) -> None:
        """SET every key (a list gets the value ``v``) in one pipeline."""
        items = keys.items() if isinstance(keys, dict) else ((k, "v") for k in keys)
        with self.client(db) as client:
            pipe = client.pipeline(transaction=False)
            for key, value in items:
                pipe.set(key, value)
            pipe.execute()


# -- cluster ------------------------------------------------------------------------------


class RedisCluster:
    """A Redis Cluster of ``primaries`` primaries (at least 3) and ``replicas`` replicas each.

    Created with ``redis-cli --cluster create ... --cluster-replicas N --cluster-yes``;
    ``start()`` returns once every node reports ``cluster_state:ok``, every replica
    has synchronised with its primary and every node's ``CLUSTER NODES`` shows the
    whole topology (so a client sees the same primaries and replicas from any node).
    """

    def __init__(self, primaries: int = 3, replicas: int = 0, *, password: str | None = None, **kwargs: Any) -> None:
        if primaries < 3:
            raise ValueError("Redis Cluster needs at least 3 primaries")
        self.nodes = [
            RedisServer(cluster=True, password=password, **kwargs) for _node in range(primaries * (1 + replicas))
        ]
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.password = password

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            first = self.nodes[0]
            addrs = [f"{n.host}:{n.port}" for n in self.nodes]
            cmd = [
                REDIS_CLI,
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                str(self.n_replicas),
                "--cluster-yes",
            ]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=first.cli_env(), timeout=timeout, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {proc.stdout}{proc.stderr}")
            self._wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            try:
                state = [n.cluster_info().get("cluster_state") for n in self.nodes]
                if all(s == "ok" for s in state) and len(self.primaries) == self.n_primaries:
                    replicas = self.replicas
                    if (
                        len(replicas) == self.n_primaries * self.n_replicas
                        and all(r.info("replication").get("master_link_status") == "up" for r in replicas)
                        and all(self._sees_everyone(n) for n in self.nodes)
                    ):
                        return
            except redis.RedisError as exc:
                state = exc
            time.sleep(0.2)
        raise RuntimeError(f"cluster not ready after {timeout}s: {state}")

    def _sees_everyone(self, node: RedisServer) -> bool:
        """``CLUSTER NODES`` of ``node`` lists every primary with slots and every replica as such."""
        with node.admin() as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        lines = [line.split() for line in text.splitlines() if line.strip()]
        primaries = [f for f in lines if "master" in f[2] and len(f) > 8]
        replicas = [f for f in lines if "slave" in f[2]]
        return len(primaries) == self.n_primaries and len(replicas) == self.n_primaries * self.n_replicas

    def _role(self, node: RedisServer) -> str:
        return str(node.info("replication").get("role"))

    @property
    def primaries(self) -> list[RedisServer]:
        return [n for n in self.nodes if self._role(n) == "master"]

    @property
    def replicas(self) -> list[RedisServer]:
        return [n for n in self.nodes if self._role(n) == "slave"]

    @property
    def seed(self) -> RedisServer:
        """A primary to point clients at."""
        return self.primaries[0]

    def url(self, **kwargs: Any) -> str:
        return self.seed.url(**kwargs)

    def client(self, **kw: Any) -> Any:
        """A ``redis.cluster.RedisCluster`` client (``decode_responses=True``)."""
        seed = self.seed
        return redis.cluster.RedisCluster(
            host=seed.host, port=seed.port, password=self.password, decode_responses=True, **kw
        )

    def dbsize(self) -> int:
        """Keys on all primaries together."""
        return sum(n.dbsize() for n in self.primaries)

    def flushall(self) -> None:
        """Empty every primary (test set-up; the replicas follow)."""
        for node in self.primaries:
            with node.admin() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# -- a Redis older than 4.0, in front of a real server ------------------------------------


def _read_line(reader: Any) -> bytes:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    return line


def _read_reply(reader: Any) -> bytes:
    """One whole RESP2 reply, as raw bytes."""
    line = _read_line(reader)
    kind = line[:1]
    if kind == b"$":
        size = int(line[1:])
        return line + (reader.read(size + 2) if size >= 0 else b"")
    if kind == b"*":
        count = int(line[1:])
        return line + b"".join(_read_reply(reader) for _item in range(max(count, 0)))
    return line  # +simple, -error, :integer


def _read_command(reader: Any) -> tuple[list[bytes], bytes]:
    """One client command (a RESP array of bulk strings): its arguments and its raw bytes."""
    head = _read_line(reader)
    if head[:1] != b"*":
        raise ConnectionError(f"unexpected inline command {head!r}")
    raw, args = [head], []
    for _arg in range(int(head[1:])):
        size_line = _read_line(reader)
        data = reader.read(int(size_line[1:]) + 2)
        raw += [size_line, data]
        args.append(data[:-2])
    return args, b"".join(raw)


class Pre4RedisFront:
    """A TCP front that makes a real ``redis-server`` answer like Redis 3.2 (before ASYNC and UNLINK).

    Every command is forwarded to ``server`` and its reply relayed, except what Redis 3.2
    refuses: ``FLUSHALL``/``FLUSHDB`` with an argument ("wrong number of arguments", also
    when queued in ``MULTI``), ``UNLINK`` and ``HELLO`` ("unknown command"), ``CLIENT SETINFO``.
    ``INFO`` reports ``redis_version:<version>``, or is refused as unknown with
    ``hide_version=True`` (a server with INFO renamed, whose version a client cannot read).
    ``seen`` lists every command name received, in order (upper case, with ``ASYNC`` when given).
    """

    def __init__(self, server: RedisServer, version: str = "3.2.12", *, hide_version: bool = False) -> None:
        self.server = server
        self.version = version
        self.hide_version = hide_version
        self.host = "127.0.0.1"
        self.seen: list[str] = []
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _refusal(self, args: list[bytes]) -> bytes | None:
        name = args[0].upper()
        if name in (b"UNLINK", b"HELLO") or (name == b"INFO" and self.hide_version):
            return b"-ERR unknown command '" + args[0].lower() + b"'\r\n"
        if name in (b"FLUSHALL", b"FLUSHDB") and len(args) > 1:
            return b"-ERR wrong number of arguments for '" + name.lower() + b"' command\r\n"
        if name == b"CLIENT" and len(args) > 1 and args[1].upper() == b"SETINFO":
            return b"-ERR Syntax error, try CLIENT (LIST | KILL | GETNAME | SETNAME | PAUSE | REPLY)\r\n"
        return None

    def _serve(self, client: Any) -> None:
        upstream = socket.create_connection((self.server.host, self.server.port))
        c_reader, s_reader = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                args, raw = _read_command(c_reader)
                if not args:
                    continue
                self.seen.append(" ".join(a.decode("utf-8", "replace").upper() for a in args[:2] if a))
                reply = self._refusal(args)
                if reply is None:
                    upstream.sendall(raw)
                    reply = _read_reply(s_reader)
                    if args[0].upper() == b"INFO" and reply[:1] == b"$":
                        body = reply.split(b"\r\n", 1)[1][:-2]
                        body = re.sub(rb"redis_version:[^\r]*", b"redis_version:" + self.version.encode(), body)
                        reply = b"$%d\r\n%s\r\n" % (len(body), body)
                client.sendall(reply)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            for closable in (c_reader, s_reader, client, upstream):
                with contextlib.suppress(OSError):
                    closable.close()

    def close(self) -> None:
        self._listener.close()


# -- pytest fixtures --------------------------------------------------------------------


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """``redis_server_factory(**RedisServer kwargs)`` starts a server; all are removed after the test."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A fresh plain Redis server (no password) for one test."""
    return redis_server_factory()


@pytest.fixture
def redis_acl_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """``requirepass`` on the default user plus the users of ``ACL_USERS``."""
    return redis_server_factory(password="default-" + secrets.token_hex(8), acl_users=ACL_USERS)


@pytest.fixture(scope="session")
def redis_tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificates:
    """CA, server and client certificates for TLS servers (one set per session)."""
    return make_tls_certificates(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture
def redis_tls_server(redis_server_factory: Callable[..., RedisServer], redis_tls_certs: TlsCertificates) -> RedisServer:
    """A TLS-only server that requires a client certificate signed by the test CA."""
    return redis_server_factory(tls=redis_tls_certs, tls_auth_clients="yes")


@pytest.fixture
def redis_unix_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server listening only on a Unix socket (``server.socket_path``)."""
    return redis_server_factory(unix_socket=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-primary cluster without replicas, shared by the tests of one module."""
    with RedisCluster(primaries=3, replicas=0) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_cluster_replicas() -> Iterator[RedisCluster]:
    """A 3-primary cluster with one replica per primary, shared by the tests of one module."""
    with RedisCluster(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def redis_pre4_front(redis_server: RedisServer) -> Iterator[Callable[..., Pre4RedisFront]]:
    """``redis_pre4_front(hide_version=False)``: a Redis-3.2-like front for the test's ``redis_server``."""
    fronts: list[Pre4RedisFront] = []

    def make(**kwargs: Any) -> Pre4RedisFront:
        front = Pre4RedisFront(redis_server, **kwargs)
        fronts.append(front)
        return front

    try:
        yield make
    finally:
        for front in fronts:
            front.close()
