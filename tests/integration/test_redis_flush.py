"""redis_flush run as Ansible runs it, against real redis-server processes started by the harness."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest

from harness.ansible import run_module
from harness.redis_servers import ACL_USERS, RedisServer

# Keys per database of the standard data set; db 0 mixes keys that the patterns hit and miss.
DATA: dict[int, list[str]] = {
    0: ["ratelimit:a", "ratelimit:b", "cache:ring:spool", "cache:ring:x", "session:1", "keep:ratelimit:a", "c?t"],
    1: ["ratelimit:a", "other:1"],
    2: ["cache:ring:spool", "two:1", "two:2"],
}


def fill(server: RedisServer, data: dict[int, list[str]] | None = None) -> None:
    for db, keys in (DATA if data is None else data).items():
        server.fill(keys, db=db)


def state(server: RedisServer) -> dict[int, set[str]]:
    """Every key of every non-empty database, read with redis-py."""
    return {db: server.keys(db) for db in server.dbsizes()}


def flush(server: RedisServer, args: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return run_module("redis_flush", {"redis_url": server.url(), **(args or {})}, **kwargs)


def ok(res: Any) -> dict[str, Any]:
    assert res.rc == 0 and not res.failed, res.output
    return res.result


# -- each mode on a standalone server ----------------------------------------------------------


def test_mode_all_empties_every_database(redis_server) -> None:
    fill(redis_server)
    result = ok(flush(redis_server, {"mode": "all"}, diff=True))
    assert result["changed"] is True and result["mode"] == "all"
    assert result["deleted"] == 12
    assert isinstance(result["seconds"], float) and 0 <= result["seconds"] < 600
    node = f"127.0.0.1:{redis_server.port}"
    assert result["nodes"] == [node]
    assert result["keys_before"] == {node: {"db0": 7, "db1": 2, "db2": 3}}
    assert result["keys_after"] == {node: {}}
    assert result["commands"] == [f"{node}: FLUSHALL ASYNC"]
    assert result["diff"]["before"] == {"keys": result["keys_before"]}
    for db in range(3):
        assert redis_server.cli("DBSIZE", db=db) == "0"


def test_mode_db_empties_one_database_only(redis_server) -> None:
    fill(redis_server)
    result = ok(flush(redis_server, {"mode": "db", "db": 2}))
    assert result["changed"] is True and result["deleted"] == 3 and result["db"] == 2
    assert state(redis_server) == {0: set(DATA[0]), 1: set(DATA[1])}
    assert redis_server.cli("DBSIZE", db=2) == "0"


def test_mode_db_takes_the_database_from_the_url(redis_server) -> None:
    fill(redis_server)
    res = run_module("redis_flush", {"redis_url": redis_server.url(db=1), "mode": "db"})
    assert ok(res)["deleted"] == 2
    assert state(redis_server) == {0: set(DATA[0]), 2: set(DATA[2])}


def test_mode_pattern_deletes_exactly_the_matching_keys(redis_server) -> None:
    fill(redis_server)
    extra = [f"ratelimit:bulk:{i}" for i in range(2500)]  # several SCAN/UNLINK batches
    redis_server.fill(extra)
    args = {"mode": "pattern", "patterns": ["ratelimit:*", "cache:ring:?pool", "c\\?t"], "batch_size": 100}
    result = ok(flush(redis_server, args))
    assert result["changed"] is True
    assert result["deleted"] == result["matched"] == 2 + 2500 + 1 + 1
    assert result["db"] == 0
    assert state(redis_server) == {
        0: {"cache:ring:x", "session:1", "keep:ratelimit:a"},
        1: set(DATA[1]),  # same names in other databases stay
        2: set(DATA[2]),
    }


def test_mode_pattern_in_another_database(redis_server) -> None:
    fill(redis_server)
    redis_server.fill([f"cache:bulk:{i}" for i in range(50)], db=2)
    args = {"redis_url": redis_server.url(db=2), "mode": "pattern", "patterns": ["cache:*"], "batch_size": 7}
    result = ok(run_module("redis_flush", args))
    assert result["db"] == 2 and result["deleted"] == 51
    assert state(redis_server) == {0: set(DATA[0]), 1: set(DATA[1]), 2: {"two:1", "two:2"}}


def test_mode_pattern_without_patterns_is_refused(redis_server) -> None:
    fill(redis_server)
    res = flush(redis_server, {"mode": "pattern"})
    assert res.failed and "patterns" in res.msg
    res = flush(redis_server, {"mode": "all", "patterns": ["x*"]})
    assert res.failed and "only apply to mode: pattern" in res.msg
    assert state(redis_server) == {db: set(keys) for db, keys in DATA.items()}


def test_synchronous_flush(redis_server) -> None:
    fill(redis_server)
    result = ok(flush(redis_server, {"mode": "all", "asynchronous": False}))
    assert result["commands"] == [f"127.0.0.1:{redis_server.port}: FLUSHALL"]
    assert result["asynchronous"] is False
    assert redis_server.dbsizes() == {}


# -- servers older than Redis 4.0 (no FLUSHALL ASYNC, no UNLINK) ----------------------------------------
# The only redis-server here is 7.x, so a front (harness.redis_servers.Pre4RedisFront) answers what
# Redis 3.2 answers to the commands it lacks and relays everything else to the real server.


def test_pre4_server_with_known_version_gets_synchronous_commands(redis_server, redis_pre4_front) -> None:
    front = redis_pre4_front()
    fill(redis_server)
    node = f"127.0.0.1:{front.port}"
    res = run_module("redis_flush", {"redis_url": front.url(), "mode": "pattern", "patterns": ["ratelimit:*"]})
    result = ok(res)
    assert result["deleted"] == 2 and result["asynchronous"] is False
    assert result["commands"] == [f"{node}: SCAN MATCH ratelimit:* + DEL (db 0)"]
    assert any("older than 4.0" in w for w in result["warnings"])
    assert state(redis_server) == {0: set(DATA[0]) - {"ratelimit:a", "ratelimit:b"}, 1: set(DATA[1]), 2: set(DATA[2])}
    result = ok(run_module("redis_flush", {"redis_url": front.url(), "mode": "all"}))
    assert result["commands"] == [f"{node}: FLUSHALL"] and result["deleted"] == 10
    assert any("older than 4.0" in w for w in result["warnings"])
    assert redis_server.dbsizes() == {}
    assert "UNLINK" not in front.seen and "FLUSHALL ASYNC" not in front.seen  # never even tried
    assert not any(command.startswith("KEYS") for command in front.seen)


def test_pre4_server_with_unknown_version_falls_back_with_a_warning(redis_server, redis_pre4_front) -> None:
    """INFO refused and no HELLO: the version is unknown, so ASYNC is tried, refused, and the sync form used."""
    front = redis_pre4_front(hide_version=True)
    fill(redis_server)
    node = f"127.0.0.1:{front.port}"
    args = {"redis_url": front.url(db=2), "mode": "db"}
    check = ok(run_module("redis_flush", args, check=True))
    assert check["deleted"] == 3 and check["keys_before"] == {node: {"db0": 7, "db1": 2, "db2": 3}}
    assert redis_server.dbsizes() == {0: 7, 1: 2, 2: 3}
    result = ok(run_module("redis_flush", args))
    assert result["deleted"] == 3 and result["commands"] == [f"{node}: FLUSHDB (db 2)"]
    assert result["asynchronous"] is False
    assert any("does not know FLUSHDB ASYNC" in w and "synchronous" in w for w in result["warnings"])
    assert state(redis_server) == {0: set(DATA[0]), 1: set(DATA[1])}
    args = {"redis_url": front.url(db=0), "mode": "pattern", "patterns": ["cache:*", "session:*"]}
    result = ok(run_module("redis_flush", args))
    assert result["deleted"] == 3 and result["commands"] == [f"{node}: SCAN MATCH cache:*, session:* + DEL (db 0)"]
    assert any("does not know UNLINK" in w for w in result["warnings"])
    assert state(redis_server) == {0: {"ratelimit:a", "ratelimit:b", "keep:ratelimit:a", "c?t"}, 1: set(DATA[1])}
    result = ok(run_module("redis_flush", {"redis_url": front.url(), "mode": "all"}))
    assert result["commands"] == [f"{node}: FLUSHALL"] and result["deleted"] == 6
    assert redis_server.dbsizes() == {}


# -- check mode and idempotence ------------------------------------------------------------------


def test_check_mode_counts_and_changes_nothing(redis_server) -> None:
    fill(redis_server)
    node = f"127.0.0.1:{redis_server.port}"
    before = state(redis_server)
    expectations = [
        ({"mode": "all"}, 12, {node: {"db0": 7, "db1": 2, "db2": 3}}),
        ({"mode": "db", "db": 1}, 2, {node: {"db1": 2}}),
        ({"mode": "pattern", "patterns": ["ratelimit:*", "*:a"]}, 3, {node: {"db0": 3}}),
    ]
    for args, count, by_node in expectations:
        result = ok(flush(redis_server, args, check=True, diff=True))
        assert result["changed"] is True, args
        assert result["deleted"] == count, args
        assert result["deleted_by_node"] == by_node, args
        assert result["commands"] == []
        assert state(redis_server) == before


def test_four_step_idempotence(redis_server) -> None:
    fill(redis_server)
    args = {"mode": "pattern", "patterns": ["cache:*"]}
    first = ok(flush(redis_server, args, check=True))
    assert first["changed"] is True and first["deleted"] == 2
    second = ok(flush(redis_server, args))
    assert second["changed"] is True and second["deleted"] == 2
    third = ok(flush(redis_server, args, check=True))
    assert third["changed"] is False and third["deleted"] == 0
    fourth = ok(flush(redis_server, args))
    assert fourth["changed"] is False and fourth["commands"] == []
    assert redis_server.cli("--scan", "--pattern", "cache:*") == ""
    assert redis_server.cli("DBSIZE") == "5"
    assert redis_server.keys(2) == set(DATA[2])


def test_mode_all_on_an_empty_server_is_not_a_change(redis_server) -> None:
    result = ok(flush(redis_server, {"mode": "all"}))
    assert result["changed"] is False and result["deleted"] == 0 and result["commands"] == []


# -- credentials, ACL, renamed commands -----------------------------------------------------------


def test_acl_user_with_discrete_password_never_shows_it(redis_acl_server) -> None:
    server = redis_acl_server
    fill(server)
    password = ACL_USERS["ringhub"][0]
    args = {"host": "127.0.0.1", "port": server.port, "username": "ringhub", "password": password, "mode": "all"}
    res = run_module("redis_flush", args, verbosity=3)
    result = ok(res)
    assert result["deleted"] == 12 and result["endpoint"] == f"redis://ringhub@127.0.0.1:{server.port}"
    assert server.dbsizes() == {}
    assert password not in res.output


def test_password_in_redis_url_env_fallback(redis_acl_server) -> None:
    server = redis_acl_server
    fill(server)
    # (at -vvv Ansible itself echoes a task's environment: in its EXEC line, so no verbosity here)
    res = run_module("redis_flush", {"mode": "db", "db": 2}, task_env={"REDIS_URL": server.url()})
    assert ok(res)["deleted"] == 3
    assert server.dbsizes() == {0: 7, 1: 2}
    assert server.password not in res.output
    assert server.password not in str(res.result)


def test_redis_url_from_the_process_environment_at_vvv(redis_acl_server) -> None:
    """REDIS_URL in the environment of the host (not a task's environment:) stays out of -vvv output."""
    server = redis_acl_server
    fill(server)
    res = run_module("redis_flush", {"mode": "db", "db": 1}, verbosity=3, env={"REDIS_URL": server.url()})
    assert ok(res)["deleted"] == 2 and server.dbsizes() == {0: 7, 2: 3}
    assert server.password not in res.output


def test_percent_encoded_password_with_reserved_characters(redis_acl_server) -> None:
    server = redis_acl_server
    fill(server)
    password = "p@ss:w/rd?#%Zq-" + server.password[-8:]
    with server.admin() as client:
        client.execute_command("ACL", "SETUSER", "odd", "on", f">{password}", "~*", "&*", "+@all")
    encoded = quote(password, safe="")
    url = f"redis://odd:{encoded}@127.0.0.1:{server.port}/2"
    res = run_module("redis_flush", {"redis_url": url, "mode": "db"}, verbosity=3)
    assert ok(res)["deleted"] == 3 and ok(res)["endpoint"] == f"redis://odd@127.0.0.1:{server.port}"
    assert server.dbsizes() == {0: 7, 1: 2}
    for shown in (password, encoded):
        assert shown not in res.output
    # the same password unencoded cuts the URL short: the error must not show any piece of it
    res = run_module("redis_flush", {"redis_url": f"redis://odd:{password}@127.0.0.1:{server.port}/0"}, verbosity=3)
    assert res.failed and "percent-encode" in res.msg
    for piece in ("p@ss", "w/rd", "rd?", "#%Zq", server.password[-8:]):
        assert piece not in res.output, piece
    assert server.dbsizes() == {0: 7, 1: 2}


def test_wrong_password_names_the_endpoint_not_the_password(redis_acl_server) -> None:
    server = redis_acl_server
    fill(server)
    secret = "Wr0ng-" + server.password
    res = run_module("redis_flush", {"redis_url": f"redis://ringhub:{secret}@127.0.0.1:{server.port}/0"}, verbosity=3)
    assert res.failed
    assert f"redis://ringhub@127.0.0.1:{server.port}" in res.msg and "authentication failed" in res.msg
    assert secret not in res.output
    assert server.dbsizes() == {0: 7, 1: 2, 2: 3}


def test_unreachable_server_names_the_endpoint(redis_server) -> None:
    port = redis_server.port
    redis_server.stop()
    res = run_module("redis_flush", {"host": "127.0.0.1", "port": port, "password": "s3cret-pw", "timeout": 5})
    assert res.failed and f"cannot connect to redis://127.0.0.1:{port}" in res.msg
    assert "s3cret-pw" not in res.output


def test_user_without_flush_permission_fails_before_deleting(redis_acl_server) -> None:
    server = redis_acl_server
    fill(server)
    url = server.url(username="noflush", password=ACL_USERS["noflush"][0])
    for check in (True, False):
        res = run_module("redis_flush", {"redis_url": url, "mode": "all"}, check=check)
        assert res.failed
        assert "may not run FLUSHALL" in res.msg and "ACL" in res.msg and "mode: pattern" in res.msg
        assert "noflush" in res.msg
    assert state(server) == {db: set(keys) for db, keys in DATA.items()}
    # the pattern mode it points to works for that user
    res = run_module("redis_flush", {"redis_url": url, "mode": "pattern", "patterns": ["ratelimit:*"]})
    assert ok(res)["deleted"] == 2


def test_user_without_dangerous_commands_can_use_pattern_mode(redis_acl_server) -> None:
    """INFO is a @dangerous command: the counts then come from DBSIZE per database."""
    server = redis_acl_server
    fill(server)
    url = server.url(username="app", password=ACL_USERS["app"][0])
    res = run_module("redis_flush", {"redis_url": url, "mode": "pattern", "patterns": ["*ratelimit*"]})
    result = ok(res)
    node = f"127.0.0.1:{server.port}"
    assert result["keys_before"] == {node: {"db0": 7, "db1": 2, "db2": 3}}
    assert result["deleted"] == 3 and result["keys_after"] == {node: {"db0": 4, "db1": 2, "db2": 3}}
    assert server.keys(1) == set(DATA[1])


def test_renamed_flushall_is_detected_before_deleting(redis_server_factory) -> None:
    server = redis_server_factory(config={"rename-command": "FLUSHALL RINGHUB_RENAMED_FLUSHALL"})
    fill(server)
    res = flush(server, {"mode": "all"})
    assert res.failed
    assert "renamed or disabled" in res.msg and "rename-command" in res.msg and "mode: pattern" in res.msg
    assert state(server) == {db: set(keys) for db, keys in DATA.items()}
    assert ok(flush(server, {"mode": "db", "db": 1}))["deleted"] == 2  # FLUSHDB is still there


# -- TLS and Unix socket ---------------------------------------------------------------------------


def test_tls_with_client_certificate(redis_tls_server, redis_tls_certs) -> None:
    server = redis_tls_server
    fill(server)
    tls_files = {
        "ca_cert": str(redis_tls_certs.ca_cert),
        "client_cert": str(redis_tls_certs.client_cert),
        "client_key": str(redis_tls_certs.client_key),
    }
    result = ok(flush(server, {"mode": "db", "db": 0, **tls_files}))
    assert result["endpoint"].startswith("rediss://127.0.0.1:") and result["deleted"] == 7
    assert server.dbsizes() == {1: 2, 2: 3}
    # discrete options instead of a URL; no CA but validate_certs off
    args = {"host": "127.0.0.1", "port": server.port, "tls": True, "validate_certs": False, "mode": "all"}
    args.update(client_cert=tls_files["client_cert"], client_key=tls_files["client_key"])
    assert ok(run_module("redis_flush", args))["deleted"] == 5
    assert server.dbsizes() == {}


def test_tls_certificate_is_verified_unless_validate_certs_is_false(redis_tls_server, redis_tls_certs) -> None:
    server = redis_tls_server
    fill(server)
    client_files = {"client_cert": str(redis_tls_certs.client_cert), "client_key": str(redis_tls_certs.client_key)}
    args = {"host": "127.0.0.1", "port": server.port, "tls": True, "mode": "all", "timeout": 5, **client_files}
    res = run_module("redis_flush", args)  # no ca_cert: the test CA is not among the system CAs
    assert res.failed and f"cannot connect to rediss://127.0.0.1:{server.port}" in res.msg
    assert "certificate verify failed" in res.msg
    assert server.dbsizes() == {0: 7, 1: 2, 2: 3}
    url = f"rediss://127.0.0.1:{server.port}/1?ssl_cert_reqs=none"
    result = ok(run_module("redis_flush", {"redis_url": url, "mode": "db", **client_files}))
    assert result["deleted"] == 2 and server.dbsizes() == {0: 7, 2: 3}


def test_tls_without_client_certificate_fails_cleanly(redis_tls_server, redis_tls_certs) -> None:
    server = redis_tls_server
    fill(server)
    res = flush(server, {"ca_cert": str(redis_tls_certs.ca_cert), "timeout": 5})
    assert res.failed and f"rediss://127.0.0.1:{server.port}" in res.msg
    assert server.dbsizes() == {0: 7, 1: 2, 2: 3}


def test_unix_socket(redis_unix_server) -> None:
    server = redis_unix_server
    fill(server)
    sock = str(server.socket_path)
    result = ok(run_module("redis_flush", {"unix_socket": sock, "db": 2, "mode": "db"}))
    assert result["nodes"] == [sock] and result["deleted"] == 3
    res = run_module("redis_flush", {"mode": "pattern", "patterns": ["*:*"]}, task_env={"REDIS_URL": server.url(db=1)})
    assert ok(res)["deleted"] == 2 and ok(res)["endpoint"] == f"unix://{sock}"
    assert state(server) == {0: set(DATA[0])}


def test_replica_of_a_standalone_primary_is_refused(redis_server, redis_server_factory) -> None:
    fill(redis_server)
    replica = redis_server_factory(config={"replicaof": f"127.0.0.1 {redis_server.port}"})
    deadline = time.monotonic() + 30
    while replica.info("replication").get("master_link_status") != "up" and time.monotonic() < deadline:
        time.sleep(0.1)
    res = flush(replica, {"mode": "all"})
    assert res.failed and "replica" in res.msg
    assert redis_server.dbsizes() == {0: 7, 1: 2, 2: 3}


# -- cluster -------------------------------------------------------------------------------------------


def _fill_cluster(cluster: Any, n: int = 3000) -> None:
    cluster.flushall()
    with cluster.client() as client:
        pipe = client.pipeline()
        for i in range(n):
            pipe.set(f"ringhub:{i}", i)
            if i % 10 == 0:
                pipe.set(f"keep:{i}", i)
        pipe.execute()
    assert all(node.dbsize() > 0 for node in cluster.primaries)  # every slot range holds keys


def _wait_replicas_empty(cluster: Any) -> None:
    deadline = time.monotonic() + 30
    while any(r.dbsize() for r in cluster.replicas) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.cluster
def test_cluster_mode_all_flushes_every_primary_and_never_touches_replicas(redis_cluster_replicas) -> None:
    cluster = redis_cluster_replicas
    _fill_cluster(cluster)
    primaries = sorted(f"127.0.0.1:{p.port}" for p in cluster.primaries)
    replica_servers = cluster.replicas
    replicas = sorted(f"127.0.0.1:{r.port}" for r in replica_servers)
    url = cluster.url()
    connections = {r.port: r.info("stats")["total_connections_received"] for r in replica_servers}

    result = ok(run_module("redis_flush", {"redis_url": url, "mode": "all"}))

    after = {r.port: r.info("stats")["total_connections_received"] for r in replica_servers}
    # the only new connection to each replica is the INFO call just above
    assert after == {port: n + 1 for port, n in connections.items()}
    assert result["cluster"] is True
    assert result["nodes"] == primaries and result["replicas_skipped"] == replicas
    assert result["deleted"] == 3300
    assert cluster.dbsize() == 0
    _wait_replicas_empty(cluster)
    assert [r.dbsize() for r in cluster.replicas] == [0, 0, 0]


@pytest.mark.cluster
def test_cluster_pattern_mode_scans_every_primary(redis_cluster_replicas) -> None:
    cluster = redis_cluster_replicas
    _fill_cluster(cluster)
    args = {"redis_url": cluster.url(), "mode": "pattern", "patterns": ["ringhub:*"], "batch_size": 200}
    check = ok(run_module("redis_flush", args, check=True))
    assert check["deleted"] == 3000 and cluster.dbsize() == 3300
    per_node = {f"127.0.0.1:{p.port}": {"db0": len(p.keys(match="ringhub:*"))} for p in cluster.primaries}
    assert check["deleted_by_node"] == per_node
    assert check["keys_before"] == {f"127.0.0.1:{p.port}": {"db0": p.dbsize()} for p in cluster.primaries}
    result = ok(run_module("redis_flush", args))
    assert result["deleted"] == 3000 and len(result["deleted_by_node"]) == 3
    with cluster.client() as client:
        assert sorted(client.scan_iter(match="*", count=1000)) == sorted(f"keep:{i}" for i in range(0, 3000, 10))
    again = ok(run_module("redis_flush", args))
    assert again["changed"] is False


@pytest.mark.cluster
def test_cluster_where_one_primary_denies_flushall_loses_no_key(redis_cluster_replicas) -> None:
    """The last primary in the module's order denies FLUSHALL: the check must stop before the first one."""
    cluster = redis_cluster_replicas
    _fill_cluster(cluster)
    primaries = sorted(cluster.primaries, key=lambda p: f"127.0.0.1:{p.port}")
    before = {p.port: p.dbsize() for p in primaries}
    denying = primaries[-1]
    with denying.admin() as client:
        client.execute_command("ACL", "SETUSER", "default", "-flushall")
    try:
        for check in (True, False):
            res = run_module("redis_flush", {"redis_url": cluster.url(), "mode": "all"}, check=check)
            assert res.failed
            assert f"may not run FLUSHALL on 127.0.0.1:{denying.port}" in res.msg and "mode: pattern" in res.msg
            assert res.result["node"] == f"127.0.0.1:{denying.port}"
            assert {p.port: p.dbsize() for p in primaries} == before
        # pattern mode works on that cluster
        args = {"redis_url": cluster.url(), "mode": "pattern", "patterns": ["keep:*"]}
        assert ok(run_module("redis_flush", args))["deleted"] == 300
        assert cluster.dbsize() == 3000
    finally:
        with denying.admin() as client:
            client.execute_command("ACL", "SETUSER", "default", "+flushall")


@pytest.mark.cluster
def test_cluster_options_are_checked(redis_cluster_replicas, redis_server) -> None:
    res = run_module("redis_flush", {"redis_url": redis_cluster_replicas.url(), "mode": "db", "db": 1})
    assert res.failed and "only database 0" in res.msg
    res = run_module("redis_flush", {"redis_url": redis_server.url(), "cluster_mode": "cluster"})
    assert res.failed and "cluster support is disabled" in res.msg
    _fill_cluster(redis_cluster_replicas, 300)
    seed = redis_cluster_replicas.seed
    args = {"redis_url": seed.url(), "cluster_mode": "standalone", "mode": "all"}
    result = ok(run_module("redis_flush", args, check=True))
    assert result["cluster"] is False and result["nodes"] == [f"127.0.0.1:{seed.port}"]
    assert result["deleted"] == seed.dbsize() < redis_cluster_replicas.dbsize() == 330
    # forced on, on a real cluster: every primary
    args = {"redis_url": seed.url(), "cluster_mode": "cluster", "mode": "all"}
    result = ok(run_module("redis_flush", args, check=True))
    assert result["cluster"] is True and len(result["nodes"]) == 3 and result["deleted"] == 330
    assert redis_cluster_replicas.dbsize() == 330


# -- a database the server does not have, and what FLUSHALL takes beyond the URL's database ----------


@pytest.mark.parametrize("mode", ["all", "db", "pattern"])
def test_a_database_the_server_does_not_have_is_refused_in_every_mode(redis_server, mode: str) -> None:
    """redis://.../99 on a server with 16 databases: the hub could not use it either, and FLUSHALL
    would empty every database. Refused, naming the number and the server's setting."""
    fill(redis_server)
    args: dict[str, Any] = {"redis_url": redis_server.url(db=99), "mode": mode}
    if mode == "pattern":
        args["patterns"] = ["*"]
    for check in (True, False):
        res = run_module("redis_flush", args, check=check)
        assert res.failed and res.result.get("nothing_changed") is True, res.output
        assert res.msg == (
            f"redis_url names Redis database 99, which the server at redis://127.0.0.1:{redis_server.port} does "
            "not have: its 'databases' setting is 16 (databases 0 to 15). Correct the database number at the end "
            "of REDIS_URL (redis://host:port/N, the database the hub uses); nothing was changed"
        )
    assert state(redis_server) == {db: set(keys) for db, keys in DATA.items()}


def test_the_databases_setting_is_found_without_config(redis_acl_server) -> None:
    """A user without @dangerous (no CONFIG, no INFO) still learns the server's number of databases."""
    server = redis_acl_server
    fill(server)
    user, (password, _rules) = "app", ACL_USERS["app"]
    url = f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{server.port}/40"
    res = run_module("redis_flush", {"redis_url": url, "mode": "pattern", "patterns": ["ratelimit:*"]})
    assert res.failed and "its 'databases' setting is 16 (databases 0 to 15)" in res.msg, res.msg
    assert "names Redis database 40" in res.msg and password not in res.output
    res = run_module("redis_flush", {"redis_url": server.url(), "db": 16, "mode": "db"})
    assert res.failed and res.msg.startswith("db names Redis database 16") and "Correct the db option" in res.msg
    assert server.dbsizes() == {0: 7, 1: 2, 2: 3}


def test_flushall_reports_and_warns_what_it_takes_beyond_the_urls_database(redis_server) -> None:
    fill(redis_server)
    node = f"127.0.0.1:{redis_server.port}"
    check = ok(run_module("redis_flush", {"redis_url": redis_server.url(db=1), "mode": "all"}, check=True))
    assert check["db"] == 1 and check["beyond_db"] == {node: {"db0": 7, "db2": 3}} and check["beyond_db_keys"] == 10
    assert check["warnings"] == [
        f"FLUSHALL would delete every database of {node}, not only database 1 that the URL names: also 10 keys in "
        "other databases (db0 7, db2 3). To delete database 1 alone, use mode: db with db: 1"
    ]
    assert redis_server.dbsizes() == {0: 7, 1: 2, 2: 3}
    done = ok(run_module("redis_flush", {"redis_url": redis_server.url(db=1), "mode": "all"}))
    assert done["beyond_db_keys"] == 10 and done["deleted"] == 12 and "FLUSHALL deletes every" in done["warnings"][0]
    assert redis_server.dbsizes() == {}
    # Only the URL's own database holds keys: nothing to warn about.
    redis_server.fill(["a", "b"], db=0)
    quiet = ok(run_module("redis_flush", {"redis_url": redis_server.url(), "mode": "all"}, check=True))
    assert quiet["beyond_db"] == {} and quiet["beyond_db_keys"] == 0 and not quiet.get("warnings")
