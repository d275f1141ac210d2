# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait until PostgreSQL standbys have replayed past a WAL position (private to the collection).

``wait_for_replicas(params, check_mode, secrets)`` is the pg_replica_wait module. The
target is ``lsn`` (pg_schema_reset's ``commit_lsn``), else the primary's WAL insert
position read now (``primary_url``), else there is none and the module only checks
that every replica answers and is a standby. Each replica is polled with
``pg_last_wal_replay_lsn()`` until it has reached the target, under one deadline for
all of them; a replica still behind at the deadline fails the task with its lag in
bytes (the target minus what it has replayed), what it has received, and whether its
replay is paused. The module reads only: ``changed`` is always false.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    NothingChanged,
    Outcome,
    RingHubError,
    failing_with,
    url_secrets,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    PSYCOPG2,
    ConnSpec,
    connect,
    parse_database_url,
    pg_error_text,
    psycopg2,
)

DEFAULT_TIMEOUT = 60.0
DEFAULT_INTERVAL = 0.2
DEFAULT_CONNECT_TIMEOUT = 10
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_STATE_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text, "
    "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END"
)


def argument_spec() -> dict[str, Any]:
    """The options of pg_replica_wait."""
    return dict(
        replicas=dict(type="list", elements="str", required=True, no_log=True),
        lsn=dict(type="str"),
        primary_url=dict(type="str", no_log=True),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        interval=dict(type="float", default=DEFAULT_INTERVAL),
        connect_timeout=dict(type="int", default=DEFAULT_CONNECT_TIMEOUT),
    )


MODULE_OPTIONS: dict[str, Any] = dict(libraries=[PSYCOPG2])


def parse_lsn(text: str) -> int:
    """A ``pg_lsn`` text (``16/B374D848``) as the byte position it names."""
    match = _LSN_RE.match(str(text).strip())
    if not match:
        raise RingHubError(f"{text!r} is not a WAL position (pg_lsn, for example 0/3A1B2C8)")
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


@dataclass
class Replica:
    """One standby being watched; its connection is reopened when it is lost."""

    spec: ConnSpec
    url: str  # masked
    conn: Any = None
    replay: int | None = None
    receive: int | None = None
    paused: bool = False
    caught_up: bool = False
    seconds: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self, target: int | None) -> dict[str, Any]:
        return {
            "url": self.url,
            "host": self.spec.host,
            "port": self.spec.port,
            "replay_lsn": format_lsn(self.replay) if self.replay is not None else None,
            "receive_lsn": format_lsn(self.receive) if self.receive is not None else None,
            "lag_bytes": lag(target, self.replay),
            "replay_paused": self.paused,
            "caught_up": self.caught_up if target is not None else None,
            "seconds": self.seconds,
            "error": self.error,
        }


def lag(target: int | None, replay: int | None) -> int | None:
    """Bytes the replica still has to replay to reach ``target`` (0 once it has), None when unknown."""
    if target is None or replay is None:
        return None
    return max(0, target - replay)


def _read_state(replica: Replica, connect_fn: Callable[[ConnSpec], Any]) -> bool:
    """Read the replica's recovery state and positions; False (with ``error`` set) when it cannot be read."""
    try:
        if replica.conn is None or replica.conn.closed:
            replica.conn = connect_fn(replica.spec)
        with replica.conn.cursor() as cur:
            cur.execute(_STATE_SQL)
            in_recovery, replay, receive, paused = cur.fetchone()
    except RingHubError as exc:
        replica.error = exc.msg
        replica.conn = None
        return False
    except psycopg2.Error as exc:
        replica.error = f"lost the connection to {replica.url}: {pg_error_text(exc, replica.spec)}"
        try:
            replica.conn.close()
        except Exception:
            pass
        replica.conn = None
        return False
    if not in_recovery:
        raise RingHubError(
            f"{replica.url} is not a standby (pg_is_in_recovery() is false): it is a primary; list only streaming "
            "replicas (ringhub_pg_replicas)",
            replica=replica.url,
        )
    replica.error = None
    replica.replay = parse_lsn(replay) if replay else None
    replica.receive = parse_lsn(receive) if receive else None
    replica.paused = bool(paused)
    return True


def _target(params: dict[str, Any], connect_fn: Callable[[ConnSpec], Any]) -> tuple[int | None, str | None]:
    if params.get("lsn"):
        return parse_lsn(params["lsn"]), "lsn"
    if not params.get("primary_url"):
        return None, None
    spec = parse_database_url(params["primary_url"])
    spec.params.setdefault("connect_timeout", str(params["connect_timeout"]))
    conn = connect_fn(spec)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), pg_current_wal_insert_lsn()::text")
            in_recovery, position = cur.fetchone()
    except psycopg2.Error as exc:
        raise RingHubError(f"cannot read the WAL position of the primary: {pg_error_text(exc, spec)}") from None
    finally:
        conn.close()
    if in_recovery:
        raise RingHubError(f"primary_url {spec.masked_url} is a standby, not the primary")
    return parse_lsn(position), f"the primary's WAL insert position ({spec.masked_url})"


def _lag_message(replica: Replica, target: int, waited: float) -> str:
    if replica.replay is None:
        behind = f"it could not be read ({replica.error})" if replica.error else "it has replayed nothing yet"
        return f"{replica.url} has not replayed WAL position {format_lsn(target)} within {waited:.1f} s: {behind}"
    missing = lag(target, replica.replay) or 0
    text = (
        f"{replica.url} is {missing} bytes{f' ({human_bytes(missing)})' if missing >= 1024 else ''} behind WAL "
        f"position {format_lsn(target)} after "
        f"{waited:.1f} s: replayed up to {format_lsn(replica.replay)}"
    )
    if replica.receive is not None:
        text += f", received up to {format_lsn(replica.receive)}"
        if replica.receive < target:
            text += f" ({target - replica.receive} bytes not even received: is it streaming from this primary?)"
    if replica.paused:
        text += "; its WAL replay is paused: run SELECT pg_wal_replay_resume() on it"
    if replica.error:
        text += f"; last error: {replica.error}"
    return text


def wait_for_replicas(
    params: dict[str, Any],
    check_mode: bool,
    secrets: set[str] | None = None,
    connect_fn: Callable[[ConnSpec], Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """The pg_replica_wait module (check mode reads each replica once and does not wait)."""
    warnings: list[str] = []
    secrets = set() if secrets is None else secrets
    for url in [*(params.get("replicas") or []), params.get("primary_url")]:
        secrets.update(url_secrets(url))

    def open_connection(spec: ConnSpec) -> Any:
        return connect(spec, application_name="threadring.ringhub pg_replica_wait")

    connect_fn = connect_fn or open_connection
    replicas: list[Replica] = []
    begin = clock()
    try:
        with failing_with(warnings):
            for url in params["replicas"]:
                spec = parse_database_url(url)
                spec.params.setdefault("connect_timeout", str(params["connect_timeout"]))
                warnings.extend(spec.warnings)
                replicas.append(Replica(spec, spec.masked_url or "replica"))
            if not replicas:
                raise RingHubError("replicas is empty: give the connection URL of every standby")
            target, source = _target(params, connect_fn)
            deadline = begin + float(params["timeout"])
            interval = max(0.01, float(params["interval"]))
            while True:
                for replica in replicas:
                    if replica.caught_up:
                        continue
                    if not _read_state(replica, connect_fn) and (check_mode or target is None):
                        raise RingHubError(replica.error or f"cannot read {replica.url}", replica=replica.url)
                    if target is None or (replica.replay is not None and replica.replay >= target):
                        replica.caught_up = replica.error is None
                        replica.seconds = round(clock() - begin, 3)
                if check_mode or all(r.caught_up for r in replicas):
                    break
                if clock() >= deadline:
                    behind = [r for r in replicas if not r.caught_up]
                    raise RingHubError(
                        "; ".join(_lag_message(r, target, clock() - begin) for r in behind),
                        replicas=[r.describe(target) for r in replicas],
                        lsn=format_lsn(target),
                        lag_bytes={r.url: lag(target, r.replay) for r in behind},
                    )
                sleep(interval)
    except RingHubError as exc:
        if check_mode:
            raise NothingChanged.from_error(exc) from None
        raise
    finally:
        for replica in replicas:
            if replica.conn is not None:
                try:
                    replica.conn.close()
                except Exception:
                    pass
    result = {
        "lsn": format_lsn(target) if target is not None else None,
        "lsn_source": source,
        "replicas": [r.describe(target) for r in replicas],
        "caught_up": target is not None and all(r.caught_up for r in replicas),
        "seconds": round(clock() - begin, 3),
    }
    return Outcome(changed=False, result=result, warnings=warnings, diff=None)
