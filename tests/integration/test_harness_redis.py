"""The Redis harness itself: every variant starts, stores data, reads it back, and is removed."""

from __future__ import annotations

import os

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.redis_servers import ACL_USERS, RedisServer


def test_plain_server_writes_reads_and_is_removed() -> None:
    server = RedisServer().start()
    base, proc = server.base_dir, server.proc
    try:
        assert server.port not in (0, 6379)
        with server.client(db=3) as client:
            client.set("ringhub:k", "v1")
            assert client.get("ringhub:k") == "v1"
        assert server.cli("GET", "ringhub:k", db=3) == "v1"
        assert server.dbsizes() == {3: 1}
        assert server.info("server")["redis_version"].startswith("7.")
        assert server.cli("CONFIG", "GET", "bind").splitlines()[1] == "127.0.0.1"
    finally:
        server.cleanup()
    assert proc is not None and proc.poll() is not None
    assert not base.exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2).ping()


def test_fixture_server_is_fresh(redis_server) -> None:
    assert redis_server.dbsizes() == {}
    redis_server.fill({"a": "1", "b": "2"}, db=1)
    assert redis_server.keys(1) == {"a", "b"}
    assert redis_server.url(db=1) == f"redis://127.0.0.1:{redis_server.port}/1"


def test_acl_server_password_and_users(redis_acl_server) -> None:
    server = redis_acl_server
    with pytest.raises(redis.AuthenticationError):
        server.client(password="wrong").ping()
    server.fill(["k1", "k2"])
    pw = ACL_USERS["ringhub"][0]
    assert server.cli("DBSIZE", username="ringhub", password=pw) == "2"
    with server.client(username="noflush", password=ACL_USERS["noflush"][0]) as client:
        assert client.get("k1") == "v"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    with server.client(username="app", password=ACL_USERS["app"][0]) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.info()
        assert client.dbsize() == 2
    assert server.dbsizes() == {0: 2}


def test_tls_server_requires_the_client_certificate(redis_tls_server, redis_tls_certs) -> None:
    server = redis_tls_server
    assert server.url().startswith("rediss://127.0.0.1:")
    with server.client() as client:
        client.set("secure", "yes")
    assert server.cli("GET", "secure") == "yes"
    no_retry = Retry(NoBackoff(), 0)
    no_cert = redis.Redis(
        host=server.host, port=server.port, ssl=True, ssl_ca_certs=str(redis_tls_certs.ca_cert), retry=no_retry
    )
    with pytest.raises(redis.ConnectionError):
        no_cert.ping()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):  # plain text on the TLS port
        redis.Redis(host=server.host, port=server.port, socket_timeout=2, retry=no_retry).ping()


def test_unix_socket_server(redis_unix_server) -> None:
    server = redis_unix_server
    assert server.port == 0 and server.socket_path and server.socket_path.is_socket()
    assert server.url(db=2) == f"unix://{server.socket_path}?db=2"
    server.fill(["x"], db=2)
    with redis.Redis.from_url(server.url(db=2), decode_responses=True) as client:
        assert client.get("x") == "v"


def test_factory_applies_extra_config(redis_server_factory) -> None:
    server = redis_server_factory(config={"rename-command": "FLUSHALL RINGHUB_FLUSHALL_OFF"})
    with pytest.raises(redis.ResponseError, match="unknown command"):
        server.client().flushall()
    assert os.path.isdir(server.base_dir)


def test_pre4_front_answers_like_redis_3_2(redis_server, redis_pre4_front) -> None:
    front = redis_pre4_front()
    redis_server.fill(["a", "b"], db=1)
    no_retry = {"retry": Retry(NoBackoff(), 0), "protocol": 2}  # Redis 3.2 speaks RESP2 only
    with redis.Redis(host=front.host, port=front.port, db=1, **no_retry) as client:
        assert client.info("server")["redis_version"] == "3.2.12"
        assert client.dbsize() == 2 and client.get("a") == b"v"
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            client.flushdb(asynchronous=True)
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.unlink("a")
        pipe = client.pipeline(transaction=False)
        pipe.delete("a").delete("b").delete("a")
        assert pipe.execute() == [1, 1, 0]
    assert redis_server.dbsizes() == {}
    assert front.seen[-3:] == ["DEL A", "DEL B", "DEL A"]
    hidden = redis_pre4_front(hide_version=True)
    with redis.Redis(host=hidden.host, port=hidden.port, **no_retry) as client:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.info()


@pytest.mark.cluster
def test_cluster_spreads_keys_over_three_primaries(redis_cluster) -> None:
    cluster = redis_cluster
    cluster.flushall()
    assert len(cluster.primaries) == 3 and cluster.replicas == []
    for node in cluster.nodes:
        assert node.port <= 45535 and node.port != 6379
        assert node.cluster_info()["cluster_state"] == "ok"
    with cluster.client() as client:
        for i in range(300):
            client.set(f"spread:{i}", i)
        assert client.get("spread:299") == "299"
    assert all(node.dbsize() > 0 for node in cluster.primaries)
    assert cluster.dbsize() == 300


@pytest.mark.cluster
def test_cluster_with_replicas_replicates(redis_cluster_replicas) -> None:
    cluster = redis_cluster_replicas
    assert len(cluster.primaries) == 3 and len(cluster.replicas) == 3
    for replica in cluster.replicas:
        assert replica.info("replication")["master_link_status"] == "up"
        assert replica.info("replication")["master_port"] in {p.port for p in cluster.primaries}
