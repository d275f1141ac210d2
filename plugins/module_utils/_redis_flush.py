# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flush Redis (standalone or cluster) without stalling it (private to the collection).

The flow, for every mode, is: find the nodes (the primaries of a cluster,
never its replicas), count the keys per node and database, make sure every
command the flush needs is allowed on every node (renamed commands and ACL
denials are found before anything is deleted), then delete, then count again.

- ``all``: ``FLUSHALL ASYNC`` on each primary that holds keys.
- ``db``: ``FLUSHDB ASYNC`` of one database.
- ``pattern``: ``SCAN MATCH <glob> COUNT <batch>`` and ``UNLINK`` in pipelined
  batches; memory stays bounded by the batch size whatever the key count.

Permissions are probed inside ``MULTI`` ... ``DISCARD``: Redis checks that a
command exists and that the user may run it when the command is queued, and
``DISCARD`` drops the queue, so the probe never runs anything.

``flush_redis(params, check_mode)`` is the module's work: it returns an
``Outcome``; a failure before the first deleting command is ``NothingChanged``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    PhaseTimer,
    failing_with,
    nothing_changed_on_failure,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._redis import (
    HAS_REDIS,
    REDIS,
    REDIS_MUTUALLY_EXCLUSIVE,
    REDIS_REQUIRED_TOGETHER,
    RedisConnection,
    redis_argument_spec,
    resolve_connection,
)

if HAS_REDIS:
    import redis.exceptions
    from redis.crc import key_slot

    _REDIRECTIONS: tuple[type[Exception], ...] = (
        redis.exceptions.AskError,
        redis.exceptions.MovedError,
        redis.exceptions.TryAgainError,
        redis.exceptions.ClusterCrossSlotError,
        redis.exceptions.ClusterDownError,
    )

MODES = ("all", "db", "pattern")
DEFAULT_MODE = "all"
DEFAULT_BATCH_SIZE = 1000
ASYNC_MIN_VERSION = (4, 0)  # FLUSHALL/FLUSHDB ASYNC and UNLINK
MAX_PROBED_DBS = 1024
_PERMITTED_PROBE_ERRORS = ("MOVED", "ASK", "CROSSSLOT", "TRYAGAIN", "CLUSTERDOWN")


def argument_spec() -> dict[str, Any]:
    """The options of redis_flush: the Redis connection plus what to delete and how."""
    spec = redis_argument_spec()
    spec.update(
        mode=dict(type="str", default=DEFAULT_MODE, choices=list(MODES)),
        patterns=dict(type="list", elements="str", aliases=["pattern"]),
        asynchronous=dict(type="bool", default=True),
        batch_size=dict(type="int", default=DEFAULT_BATCH_SIZE),
    )
    return spec


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[REDIS],
    mutually_exclusive=REDIS_MUTUALLY_EXCLUSIVE,
    required_together=REDIS_REQUIRED_TOGETHER,
    required_if=[("mode", "pattern", ("patterns",))],
)


def flusher_for(params: dict[str, Any], check_mode: bool) -> RedisFlusher:
    """What redis_flush refuses before it connects (the mode and its patterns, the batch size, the URL),
    then the flusher of these options. Connects to nothing."""
    if params.get("patterns") and params["mode"] != "pattern":
        raise NothingChanged(f"patterns only apply to mode: pattern, not mode: {params['mode']}")
    with nothing_changed_on_failure():
        conn = resolve_connection(params)
    return RedisFlusher(
        conn,
        params["mode"],
        patterns=params.get("patterns") or (),
        asynchronous=params["asynchronous"],
        batch_size=params["batch_size"],
        check_mode=check_mode,
        db_source="db" if params.get("db") is not None else "redis_url",
    )


def flush_redis(params: dict[str, Any], check_mode: bool) -> Outcome:
    """The redis_flush module: resolve the connection, flush (or count, in check mode), report."""
    flusher = flusher_for(params, check_mode)
    result = flusher.run()
    diff = {"before": {"keys": result["keys_before"]}, "after": {"keys": result["keys_after"]}}
    return Outcome(changed=result["deleted"] > 0, result=result, warnings=flusher.warnings, diff=diff)


@dataclass
class NodeState:
    """One node to flush: its name (``host:port`` or socket path), client and what we know of it."""

    name: str
    client: Any
    version: tuple[int, ...] | None = None
    async_ok: bool | None = None  # False once the node turned out not to know ASYNC / UNLINK
    keys_before: dict[int, int] = field(default_factory=dict)
    keys_after: dict[int, int] = field(default_factory=dict)
    deleted: dict[int, int] = field(default_factory=dict)


# -- pure helpers (unit-tested) ------------------------------------------------------------


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"7.0.15"`` -> ``(7, 0, 15)``; None when unknown."""
    if not text:
        return None
    nums = re.findall(r"\d+", str(text))
    return tuple(int(n) for n in nums[:3]) if nums else None


def supports_async(version: tuple[int, ...] | None) -> bool | None:
    """FLUSHALL ASYNC / UNLINK exist from Redis 4.0; None when the version is unknown."""
    if version is None:
        return None
    return version[:2] >= ASYNC_MIN_VERSION


def parse_keyspace(info: dict[str, Any]) -> dict[int, int]:
    """Keys per database from ``INFO keyspace`` as parsed by redis-py (``db0: {keys: N, ...}``)."""
    out: dict[int, int] = {}
    for name, value in info.items():
        name = name.decode() if isinstance(name, bytes) else str(name)
        if re.fullmatch(r"db\d+", name) and isinstance(value, dict):
            out[int(name[2:])] = int(value.get("keys", 0))
    return out


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    host: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})


def parse_cluster_nodes(text: str, seed_host: str) -> list[ClusterNode]:
    """Parse ``CLUSTER NODES``; an empty announced IP (a node that never met another) is the seed host."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        addr = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, port = addr.rsplit(":", 1)
        host = host.strip("[]") or seed_host
        flags = frozenset(fields[2].split(","))
        nodes.append(
            ClusterNode(
                node_id=fields[0],
                host=host,
                port=int(port),
                flags=flags,
                primary_id=None if fields[3] == "-" else fields[3],
                slots=tuple(fields[8:]),
            )
        )
    return nodes


def glob_to_regex(pattern: bytes) -> re.Pattern[bytes]:
    """Redis glob (``*``, ``?``, ``[...]``, ``[^...]``, ``\\`` escapes) as a compiled regex."""
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < n:
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == b"[":
            j = i + 1
            negate = j < n and pattern[j : j + 1] == b"^"
            if negate:
                j += 1
            members = bytearray()
            while j < n and pattern[j : j + 1] != b"]":
                if pattern[j : j + 1] == b"\\" and j + 1 < n:
                    j += 1
                    members += re.escape(pattern[j : j + 1])
                elif pattern[j : j + 1] == b"-" and members and j + 1 < n and pattern[j + 1 : j + 2] != b"]":
                    members += b"-"
                else:
                    members += re.escape(pattern[j : j + 1])
                j += 1
            if j >= n:  # no closing bracket: Redis matches up to the end; treat '[' literally
                out += re.escape(c)
            else:
                out += b"[" + (b"^" if negate else b"") + bytes(members) + b"]"
                i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(b"(?s)" + bytes(out) + b"\\Z")


def sample_key(pattern: bytes) -> bytes:
    """A key name matched by ``pattern``, to probe key permissions (ACL ``~pattern``) without a real key."""
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            pass
        elif c == b"?":
            out += b"x"
        elif c == b"\\" and i + 1 < n:
            i += 1
            out += pattern[i : i + 1]
        elif c == b"[" and b"]" in pattern[i + 1 :]:
            end = pattern.index(b"]", i + 2) if pattern[i + 1 : i + 2] in (b"]", b"^") else pattern.index(b"]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith(b"^"):
                excluded = set(body[1:])
                out += bytes([next(b for b in b"xyz0123456789_" if b not in excluded)])
            else:
                out += body[:1] if body[:1] != b"\\" else body[1:2]
            i = end
        else:
            out += c
        i += 1
    return bytes(out)


def _out_of_range(exc: BaseException) -> bool:
    """A SELECT refused because the server has no such database."""
    text = str(exc).lower()
    return "out of range" in text or "invalid db" in text


def db_label(db: int) -> str:
    return f"db{db}"


def by_label(counts: dict[int, int]) -> dict[str, int]:
    return {db_label(db): n for db, n in sorted(counts.items())}


def classify_probe_error(command: str, message: str, user: str, node: str, mode: str) -> str | None:
    """The operator message for a refused probe, or None when the refusal still means "allowed"."""
    if message.startswith(_PERMITTED_PROBE_ERRORS):
        return None
    lowered = message.lower()
    if lowered.startswith("noperm") or "no permissions" in lowered:
        message = message[7:] if message.startswith("NOPERM ") else message
        hint = (
            " Use mode: pattern (SCAN + UNLINK), which this user may be allowed to run, or grant the command."
            if mode in ("all", "db")
            else " Grant the user SCAN and UNLINK on the keys, e.g. ACL SETUSER <user> +scan +unlink ~<pattern>."
        )
        return f"user {user!r} may not run {command} on {node} (ACL: {message}).{hint}"
    if "unknown command" in lowered:
        hint = (
            " Production servers often rename or disable FLUSHALL/FLUSHDB (rename-command);"
            " use mode: pattern, which deletes with SCAN and UNLINK."
            if mode in ("all", "db")
            else " The server renamed or disabled it (rename-command); pattern mode needs SCAN and UNLINK."
        )
        return f"{command} is renamed or disabled on {node} ({message}).{hint}"
    return f"{command} is refused on {node} ({message})"


# -- the flush --------------------------------------------------------------------------


class RedisFlusher:
    """Runs one flush; ``run()`` returns the result and ``warnings`` holds what to warn about.

    Everything before the first deleting command (discovery, counting, the
    permission probe) changes nothing; so does the whole run in check mode.
    """

    def __init__(
        self,
        conn: RedisConnection,
        mode: str,
        *,
        patterns: Iterable[str] = (),
        asynchronous: bool = True,
        batch_size: int = 1000,
        check_mode: bool = False,
        db_source: str = "redis_url",
    ) -> None:
        if mode not in MODES:
            raise NothingChanged(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.conn = conn
        self.mode = mode
        self.patterns = [p.encode("utf-8") if isinstance(p, str) else p for p in patterns]
        if mode == "pattern" and not self.patterns:
            raise NothingChanged("mode: pattern needs at least one pattern in patterns")
        if mode == "pattern" and any(not p for p in self.patterns):
            raise NothingChanged("patterns must not be empty strings")
        if batch_size < 1:
            raise NothingChanged("batch_size must be 1 or more")
        self.asynchronous = asynchronous
        self.batch_size = batch_size
        self.check_mode = check_mode
        self.db_source = db_source
        self.warnings: list[str] = []
        self.timer = PhaseTimer()
        self.cluster = False
        self.nodes: list[NodeState] = []
        self.replicas: list[str] = []
        self.commands: list[str] = []
        self._seed: Any = None

    # -- plumbing -----------------------------------------------------------------
    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _node_conn(self, node: NodeState) -> RedisConnection:
        if not self.cluster:
            return self.conn
        host, port = node.name.rsplit(":", 1)
        return self.conn.for_node(host, int(port))

    def _call(self, node: NodeState, action: str, *args: Any) -> Any:
        try:
            return node.client.execute_command(*args)
        except redis.exceptions.RedisError as exc:
            raise self._node_conn(node).error(f"{action} failed on", exc, node=node.name) from exc

    def close(self) -> None:
        for client in {id(n.client): n.client for n in self.nodes}.values():
            client.close()
        if self._seed is not None:
            self._seed.close()
        self._seed = None

    # -- discovery ----------------------------------------------------------------
    def _info(self, client: Any, section: str | None = None) -> dict[str, Any] | None:
        """``INFO`` or None when the user may not run it (INFO is in @dangerous) or it is renamed."""
        try:
            return client.info(section) if section else client.info()
        except redis.exceptions.ResponseError:
            return None

    def _version(self, client: Any, info: dict[str, Any] | None) -> tuple[int, ...] | None:
        if info and info.get("redis_version"):
            return parse_version(str(info["redis_version"]))
        try:
            hello = client.execute_command("HELLO")  # Redis 6+; usually allowed (@connection)
        except redis.exceptions.ResponseError:
            return None
        if isinstance(hello, list):
            hello = dict(zip(hello[::2], hello[1::2], strict=False))
        version = hello.get(b"version") or hello.get("version") if isinstance(hello, dict) else None
        return parse_version(version.decode() if isinstance(version, bytes) else version)

    def discover(self) -> None:
        conn = self.conn
        seed = self._seed = conn.connect(db=0)
        info = self._info(seed)
        enabled = self._cluster_enabled(seed, info)
        if conn.cluster_mode == "cluster" and not enabled:
            raise conn.error("cluster_mode is cluster but cluster support is disabled on", "not a cluster node")
        self.cluster = enabled and conn.cluster_mode != "standalone"
        if self.cluster and conn.db != 0:
            raise conn.error("a Redis Cluster has only database 0; cannot use db", f"db={conn.db} requested")
        if not self.cluster:
            role = str((info or {}).get("role", "master"))
            if role not in ("master", "primary"):
                raise conn.error(
                    "refusing to write to a replica:",
                    "the server is a read-only replica; point the module at its primary",
                )
            name = conn.unix_socket or f"{conn.host}:{conn.port}"
            self._check_database_index(seed)
            self.nodes = [NodeState(name, seed, self._version(seed, info))]
            return
        try:
            text = seed.execute_command("CLUSTER", "NODES")
        except redis.exceptions.RedisError as exc:
            raise conn.error("cannot list the cluster nodes (CLUSTER NODES) of", exc) from exc
        text = text.decode() if isinstance(text, bytes) else str(text)
        all_nodes = parse_cluster_nodes(text, conn.host)
        primaries = [n for n in all_nodes if n.is_primary and n.slots]
        failing = [n.name for n in all_nodes if n.is_primary and n.slots and n.failing]
        if failing:
            raise conn.error(
                "the cluster is not healthy; failing primaries seen from",
                f"{', '.join(failing)}",
                failing=failing,
            )
        if not primaries:
            raise conn.error("no primary with slots found in the cluster of", "CLUSTER NODES lists none")
        self.replicas = sorted(n.name for n in all_nodes if not (n.is_primary and n.slots))
        for node in sorted(primaries, key=lambda n: n.name):
            client = conn.for_node(node.host, node.port).connect(db=0)
            self.nodes.append(NodeState(node.name, client, self._version(client, self._info(client, "server"))))

    def _check_database_index(self, seed: Any) -> None:
        """Refuse a database number the server does not have, in every mode, before anything is deleted.

        The hub cannot use such a database either, so the URL is wrong; a FLUSHALL "for" it would
        empty every database of the server without a word.
        """
        db = self.conn.db
        if db == 0:
            return
        try:
            seed.execute_command("SELECT", db)
            seed.execute_command("SELECT", 0)
        except redis.exceptions.ResponseError as exc:
            if not _out_of_range(exc):
                raise self.conn.error(f"SELECT {db} failed on", exc) from exc
            count = self._databases_setting(seed, db)
            have = (
                f"its 'databases' setting is {count} (databases 0 to {count - 1})"
                if count
                else "its 'databases' setting could not be read"
            )
            fix = (
                "Correct the database number at the end of REDIS_URL (redis://host:port/N, the database the hub uses)"
                if self.db_source == "redis_url"
                else "Correct the db option"
            )
            raise NothingChanged(
                f"{self.db_source} names Redis database {db}, which the server at {self.conn.endpoint} does not "
                f"have: {have}. {fix}",
                endpoint=self.conn.endpoint,
                db=db,
                databases=count,
            ) from None
        except redis.exceptions.RedisError as exc:
            raise self.conn.error(f"SELECT {db} failed on", exc) from exc

    @staticmethod
    def _databases_setting(seed: Any, db: int) -> int | None:
        """The server's ``databases`` setting: ``CONFIG GET databases``, else found with SELECT (below ``db``)."""
        try:
            reply = seed.execute_command("CONFIG", "GET", "databases")
            values = dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else dict(reply)
            value = values.get(b"databases", values.get("databases"))
            if value is not None:
                return int(value)
        except (redis.exceptions.RedisError, ValueError, TypeError):
            pass
        low, high = 0, db  # SELECT low works, SELECT high does not
        try:
            while high - low > 1:
                middle = (low + high) // 2
                try:
                    seed.execute_command("SELECT", middle)
                    low = middle
                except redis.exceptions.ResponseError as exc:
                    if not _out_of_range(exc):
                        return None
                    high = middle
            seed.execute_command("SELECT", 0)
        except redis.exceptions.RedisError:
            return None
        return high

    def _cluster_enabled(self, seed: Any, info: dict[str, Any] | None) -> bool:
        if self.conn.cluster_mode == "standalone":
            return bool(info and info.get("cluster_enabled"))
        if info is not None:
            return bool(info.get("cluster_enabled"))
        try:
            seed.execute_command("CLUSTER", "MYID")
        except redis.exceptions.ResponseError as exc:
            if "cluster support disabled" in str(exc).lower() or "unknown" in str(exc).lower():
                return False
            if self.conn.cluster_mode == "cluster":
                return True
            self.warn(f"cannot tell whether {self.conn.endpoint} is a cluster node ({exc}); treating it as standalone")
            return False
        return True

    # -- counting -------------------------------------------------------------------
    def _select(self, node: NodeState, db: int) -> None:
        if self.cluster:
            return
        self._call(node, f"SELECT {db}", "SELECT", db)

    def count_keys(self, node: NodeState) -> dict[int, int]:
        """Keys per non-empty database: ``INFO keyspace``, else ``DBSIZE`` per database."""
        info = self._info(node.client, "keyspace")
        if info is not None:
            counts = parse_keyspace(info)
        else:
            counts = {}
            dbs: Iterable[int] = [0] if self.cluster else range(MAX_PROBED_DBS)
            for db in dbs:
                try:
                    if not self.cluster:
                        node.client.execute_command("SELECT", db)
                    size = int(node.client.execute_command("DBSIZE"))
                except redis.exceptions.ResponseError as exc:
                    if _out_of_range(exc):
                        break
                    raise self._node_conn(node).error("cannot count keys (INFO keyspace, DBSIZE) on", exc) from exc
                if size:
                    counts[db] = size
            self._select(node, self.conn.db)
        return counts

    # -- permission probe -----------------------------------------------------------
    def _commands(self, node: NodeState) -> list[list[Any]]:
        use_async = self._use_async(node)
        tail = ["ASYNC"] if use_async else []
        if self.mode == "all":
            return [["FLUSHALL", *tail]]
        if self.mode == "db":
            return [["FLUSHDB", *tail]]
        delete = "UNLINK" if use_async else "DEL"
        cmds: list[list[Any]] = [["SCAN", "0", "COUNT", "1"]]
        cmds += [[delete, sample_key(p)] for p in self.patterns]
        return cmds

    def _node_async(self, node: NodeState) -> bool:
        """Whether ``node`` gets the asynchronous commands (no warning)."""
        return self.asynchronous and node.async_ok is not False and supports_async(node.version) is not False

    def _use_async(self, node: NodeState) -> bool:
        if not self.asynchronous or node.async_ok is False:
            return False
        ok = supports_async(node.version)
        if ok is False:
            version = ".".join(map(str, node.version or ()))
            what = "UNLINK" if self.mode == "pattern" else "FLUSHALL/FLUSHDB ASYNC"
            self.warn(f"{node.name} runs Redis {version}, older than 4.0 without {what}; using the synchronous form")
            return False
        return True

    @staticmethod
    def _async_unknown(cmd: list[Any], message: str) -> bool:
        """A refusal that means "this server predates ASYNC / UNLINK" (Redis < 4.0), not a denial.

        Before 4.0, FLUSHALL and FLUSHDB take no argument (arity 1: "wrong number of arguments",
        checked when the command is queued) and UNLINK does not exist ("unknown command").
        """
        lowered = message.lower()
        if cmd[0] in ("FLUSHALL", "FLUSHDB") and cmd[-1] == "ASYNC":
            return "wrong number of arguments" in lowered or "syntax error" in lowered
        return cmd[0] == "UNLINK" and "unknown command" in lowered

    @staticmethod
    def _sync_form(cmd: list[Any]) -> list[Any]:
        return ["DEL", *cmd[1:]] if cmd[0] == "UNLINK" else [c for c in cmd if c != "ASYNC"]

    def _probe_one(self, client: Any, cmd: list[Any]) -> str | None:
        """Queue ``cmd`` (inside MULTI); the refusal message, or None when it was accepted."""
        try:
            self._raw(client, *cmd)
        except _REDIRECTIONS:
            return None  # the command passed the existence and ACL checks; the key lives elsewhere
        except redis.exceptions.ResponseError as exc:
            message = str(exc)
            if isinstance(exc, redis.exceptions.NoPermissionError) and not message.startswith("NOPERM"):
                message = f"NOPERM {message}"
            return message
        return None

    @staticmethod
    def _raw(client: Any, *args: Any) -> Any:
        """Send one command on the client's own connection and return the raw reply (no parsing)."""
        connection = client.connection
        connection.send_command(*args)
        return connection.read_response()

    def probe(self, node: NodeState) -> None:
        """Fail before any deletion if a command we need is renamed or denied on ``node``."""
        client = node.client
        if self.mode in ("db", "pattern"):
            self._select(node, self.conn.db)
        try:
            self._raw(client, "MULTI")
        except redis.exceptions.ResponseError as exc:
            self.warn(f"cannot check the permissions on {node.name} in advance (MULTI refused: {exc})")
            return
        except redis.exceptions.RedisError as exc:
            raise self._node_conn(node).error("lost the connection to", exc) from exc
        problem: str | None = None
        try:
            for cmd in self._commands(node):
                message = self._probe_one(client, cmd)
                if message and self._async_unknown(cmd, message):
                    node.async_ok = False
                    what = "UNLINK" if cmd[0] == "UNLINK" else f"{cmd[0]} ASYNC"
                    self.warn(f"{node.name} does not know {what} ({message}); using the synchronous form")
                    cmd = self._sync_form(cmd)
                    message = self._probe_one(client, cmd)
                if message:
                    problem = classify_probe_error(str(cmd[0]), message, self.conn.user, node.name, self.mode)
                    if problem:
                        break
        finally:
            try:
                self._raw(client, "DISCARD")
            except redis.exceptions.RedisError as exc:  # nothing was queued that could run
                self.warn(f"DISCARD after the permission check failed on {node.name}: {exc}")
        if problem:
            raise NothingChanged(problem, endpoint=self.conn.endpoint, node=node.name)

    # -- deleting ---------------------------------------------------------------------
    def _flush_command(self, node: NodeState, base: str) -> None:
        use_async = self._use_async(node)
        args = [base, "ASYNC"] if use_async else [base]
        try:
            node.client.execute_command(*args)
        except redis.exceptions.ResponseError as exc:
            if use_async and self._async_unknown(args, str(exc)):
                node.async_ok = False
                self.warn(f"{node.name} does not know {base} ASYNC ({exc}); used the synchronous {base}")
                args = [base]
                self._call(node, base, base)
            else:
                raise self._node_conn(node).error(f"{base} failed on", exc, node=node.name) from exc
        except redis.exceptions.RedisError as exc:
            raise self._node_conn(node).error(f"{base} failed on", exc, node=node.name) from exc
        self.commands.append(f"{node.name}: {' '.join(args)}" + (f" (db {self.conn.db})" if base == "FLUSHDB" else ""))

    def scan(self, node: NodeState, pattern: bytes) -> Iterator[list[bytes]]:
        """Batches of keys matching ``pattern`` on ``node`` (SCAN MATCH ... COUNT batch_size)."""
        cursor: Any = 0
        pending: list[bytes] = []
        while True:
            try:
                cursor, keys = node.client.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", self.batch_size)
            except redis.exceptions.RedisError as exc:
                raise self._node_conn(node).error("SCAN failed on", exc, node=node.name) from exc
            pending.extend(keys)
            if len(pending) >= self.batch_size:
                yield pending
                pending = []
            if int(cursor) == 0:
                break
        if pending:
            yield pending

    def _delete_batch(self, node: NodeState, command: str, keys: list[bytes]) -> int:
        groups: dict[int, list[bytes]] = {}
        if self.cluster:
            for key in keys:
                groups.setdefault(key_slot(key), []).append(key)
        else:
            groups[0] = keys
        # Pipelined on the node's own connection: a redis-py pipeline would take another
        # connection from the pool, which is not on the SELECTed database.
        connection = node.client.connection
        commands = [(command, *group) for group in groups.values()]
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            return sum(int(connection.read_response()) for _command in commands)
        except redis.exceptions.RedisError as exc:
            raise self._node_conn(node).error(f"{command} failed on", exc, node=node.name) from exc

    def pattern_node(self, node: NodeState) -> int:
        """Delete (or count, in check mode) the matching keys of ``node``; returns the number."""
        command = "UNLINK" if self._use_async(node) else "DEL"
        self._select(node, self.conn.db)
        earlier: list[re.Pattern[bytes]] = []
        total = 0
        for pattern in self.patterns:
            for batch in self.scan(node, pattern):
                if self.check_mode:
                    total += sum(1 for k in batch if not any(r.match(k) for r in earlier))
                else:
                    total += self._delete_batch(node, command, batch)
            earlier.append(glob_to_regex(pattern))
        if total and not self.check_mode:
            shown = ", ".join(p.decode("utf-8", "replace") for p in self.patterns)
            self.commands.append(f"{node.name}: SCAN MATCH {shown} + {command} (db {self.conn.db})")
        return total

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Inspect and probe every node, then delete (not in check mode), then count again."""
        try:
            with failing_with(self.warnings):
                with nothing_changed_on_failure(), self.timer.phase("inspect"):
                    self.discover()
                    for node in self.nodes:
                        node.keys_before = self.count_keys(node)
                    for node in self.nodes:  # every node is checked before any deletes
                        self.probe(node)
                    self._warn_beyond()
                with nothing_changed_on_failure() if self.check_mode else contextlib.nullcontext():
                    with self.timer.phase("flush"):
                        for node in self.nodes:
                            self._flush_node(node)
                    with self.timer.phase("verify"):
                        for node in self.nodes:
                            node.keys_after = self._keys_after(node)
        finally:
            self.close()
        return self.result()

    def beyond(self) -> dict[str, dict[int, int]]:
        """With mode ``all``: the keys per node in the databases other than the connection's own, which
        FLUSHALL deletes too (empty in the other modes)."""
        if self.mode != "all":
            return {}
        out = {}
        for node in self.nodes:
            other = {db: n for db, n in sorted(node.keys_before.items()) if db != self.conn.db and n}
            if other:
                out[node.name] = other
        return out

    def _warn_beyond(self) -> None:
        db = self.conn.db
        for name, other in self.beyond().items():
            listed = ", ".join(f"{db_label(d)} {n}" for d, n in other.items())
            self.warn(
                f"FLUSHALL {'would delete' if self.check_mode else 'deletes'} every database of {name}, not only "
                f"database {db} that the URL names: also {sum(other.values())} keys in other databases ({listed}). "
                f"To delete database {db} alone, use mode: db with db: {db}"
            )

    def _keys_after(self, node: NodeState) -> dict[int, int]:
        if not self.check_mode:
            return self.count_keys(node)
        remaining = {db: n - node.deleted.get(db, 0) for db, n in node.keys_before.items()}
        return {db: n for db, n in remaining.items() if n}

    def _flush_node(self, node: NodeState) -> None:
        db = self.conn.db
        if self.mode == "all":
            node.deleted = {d: n for d, n in node.keys_before.items() if n}
            if node.deleted and not self.check_mode:
                self._flush_command(node, "FLUSHALL")
        elif self.mode == "db":
            if node.keys_before.get(db):
                node.deleted = {db: node.keys_before[db]}
                if not self.check_mode:
                    self._select(node, db)
                    self._flush_command(node, "FLUSHDB")
        elif node.keys_before.get(db):
            count = self.pattern_node(node)
            if count:
                node.deleted = {db: count}

    def result(self) -> dict[str, Any]:
        deleted = sum(sum(n.deleted.values()) for n in self.nodes)
        out: dict[str, Any] = {
            "mode": self.mode,
            "endpoint": self.conn.endpoint,
            "cluster": self.cluster,
            "nodes": [n.name for n in self.nodes],
            "replicas_skipped": self.replicas,
            "keys_before": {n.name: by_label(n.keys_before) for n in self.nodes},
            "keys_after": {n.name: by_label(n.keys_after) for n in self.nodes},
            "deleted_by_node": {n.name: by_label(n.deleted) for n in self.nodes if n.deleted},
            "deleted": deleted,
            "asynchronous": all(self._node_async(n) for n in self.nodes),
            "commands": self.commands,
            "seconds": self.timer.total,
        }
        if self.mode == "all":
            beyond = self.beyond()
            out["db"] = self.conn.db
            out["beyond_db"] = {name: by_label(other) for name, other in beyond.items()}
            out["beyond_db_keys"] = sum(sum(other.values()) for other in beyond.values())
        if self.mode in ("db", "pattern"):
            out["db"] = self.conn.db
        if self.mode == "pattern":
            out["patterns"] = [p.decode("utf-8", "replace") for p in self.patterns]
            out["matched"] = deleted
        return out
