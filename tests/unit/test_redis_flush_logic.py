"""Pure logic of redis_flush: glob matching, probe messages, CLUSTER NODES and version parsing."""

from __future__ import annotations

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._redis import RedisConnection
from ansible_collections.threadring.ringhub.plugins.module_utils._redis_flush import (
    RedisFlusher,
    by_label,
    classify_probe_error,
    flush_redis,
    glob_to_regex,
    parse_cluster_nodes,
    parse_keyspace,
    parse_version,
    sample_key,
    supports_async,
)

# (pattern, keys that match, keys that do not), as Redis stringmatchlen() decides
GLOBS = [
    (b"ratelimit:*", [b"ratelimit:", b"ratelimit:a:b"], [b"xratelimit:a", b"ratelimit"]),
    (b"h?llo", [b"hello", b"hallo"], [b"hllo", b"heello"]),
    (b"h[ae]llo", [b"hello", b"hallo"], [b"hillo"]),
    (b"h[^e]llo", [b"hallo", b"hbllo"], [b"hello"]),
    (b"h[a-c]llo", [b"hbllo"], [b"hdllo"]),
    (b"c\\?t", [b"c?t"], [b"cat"]),
    (b"a.b*", [b"a.bc"], [b"axbc"]),
    (b"*", [b"", b"any\nthing"], []),
    (b"cache:ring:[s]pool", [b"cache:ring:spool"], [b"cache:ring:xpool"]),
]


@pytest.mark.parametrize(("pattern", "hits", "misses"), GLOBS)
def test_glob_to_regex(pattern: bytes, hits: list[bytes], misses: list[bytes]) -> None:
    regex = glob_to_regex(pattern)
    for key in hits:
        assert regex.match(key), key
    for key in misses:
        assert not regex.match(key), key


@pytest.mark.parametrize(("pattern", "_hits", "_misses"), GLOBS)
def test_sample_key_matches_its_pattern(pattern: bytes, _hits: list[bytes], _misses: list[bytes]) -> None:
    assert glob_to_regex(pattern).match(sample_key(pattern))


def test_parse_version_and_async_support() -> None:
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version(None) is None and parse_version("") is None
    assert supports_async((7, 0, 15)) is True
    assert supports_async((4, 0, 0)) is True
    assert supports_async((3, 2, 12)) is False  # FLUSHALL ASYNC / UNLINK arrived in 4.0
    assert supports_async(None) is None


def test_old_server_falls_back_to_synchronous_commands_with_a_warning() -> None:
    flusher = RedisFlusher(RedisConnection(), "pattern", patterns=["a*"])
    warnings = flusher.warnings

    class Node:
        name = "10.0.0.1:6379"
        version = (3, 2, 12)
        async_ok = None

    assert flusher._commands(Node()) == [["SCAN", "0", "COUNT", "1"], ["DEL", b"a"]]
    assert warnings and "older than 4.0" in warnings[0] and "synchronous" in warnings[0]
    flusher.mode = "all"
    assert flusher._commands(Node()) == [["FLUSHALL"]]
    Node.version = (7, 0, 0)
    assert flusher._commands(Node()) == [["FLUSHALL", "ASYNC"]]


def test_refusals_of_a_pre4_server_mean_synchronous_not_denied() -> None:
    unknown = RedisFlusher._async_unknown
    assert unknown(["FLUSHALL", "ASYNC"], "wrong number of arguments for 'flushall' command")
    assert unknown(["FLUSHDB", "ASYNC"], "ERR syntax error")
    assert unknown(["UNLINK", b"a"], "unknown command 'unlink'")
    assert not unknown(["FLUSHALL", "ASYNC"], "unknown command 'FLUSHALL'")  # renamed: an error, not a fallback
    assert not unknown(["FLUSHALL", "ASYNC"], "NOPERM no permissions to run flushall")
    assert not unknown(["FLUSHALL"], "wrong number of arguments for 'flushall' command")
    assert not unknown(["UNLINK", b"a"], "NOPERM no permissions to access a key")
    assert RedisFlusher._sync_form(["UNLINK", b"a"]) == ["DEL", b"a"]
    assert RedisFlusher._sync_form(["FLUSHDB", "ASYNC"]) == ["FLUSHDB"]


def test_parse_keyspace() -> None:
    info = {"db0": {"keys": 12, "expires": 0, "avg_ttl": 0}, "db3": {"keys": 1, "expires": 1}, "other": 5}
    assert parse_keyspace(info) == {0: 12, 3: 1}
    assert by_label({3: 1, 0: 12}) == {"db0": 12, "db3": 1}


CLUSTER_NODES = """\
07c3 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
67ed 10.0.0.2:7001@17001,host2 master - 0 1426238316232 2 connected 5461-10922
292f 10.0.0.3:7002@17002 master - 0 1426238318243 3 connected 10923-16383
6ec2 10.0.0.4:7003@17003 slave 07c3 0 1426238316232 1 connected
824f :7004@17004 slave,fail 67ed 0 1426238317741 2 disconnected
"""


def test_parse_cluster_nodes() -> None:
    nodes = parse_cluster_nodes(CLUSTER_NODES, "seed")
    primaries = [n.name for n in nodes if n.is_primary]
    assert primaries == ["10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"]
    replicas = [n for n in nodes if not n.is_primary]
    assert [n.name for n in replicas] == ["10.0.0.4:7003", "seed:7004"]
    assert replicas[0].primary_id == "07c3" and replicas[1].failing
    assert nodes[0].slots == ("0-5460",) and not nodes[0].failing


def test_probe_messages() -> None:
    renamed = classify_probe_error("FLUSHALL", "unknown command 'FLUSHALL'", "default", "h:1", "all")
    assert renamed and "renamed or disabled" in renamed and "mode: pattern" in renamed
    denied = classify_probe_error("FLUSHALL", "NOPERM no permissions to run flushall", "app", "h:1", "all")
    assert denied and "'app' may not run FLUSHALL on h:1" in denied and "ACL" in denied and "mode: pattern" in denied
    in_pattern = classify_probe_error("UNLINK", "NOPERM no permissions to access a key", "app", "h:1", "pattern")
    assert in_pattern and "+unlink" in in_pattern
    assert classify_probe_error("UNLINK", "MOVED 3999 10.0.0.2:7001", "app", "h:1", "pattern") is None


def test_flusher_validates_its_arguments() -> None:
    conn = RedisConnection()
    with pytest.raises(NothingChanged, match="at least one pattern"):
        RedisFlusher(conn, "pattern")
    with pytest.raises(RingHubError, match="must not be empty"):
        RedisFlusher(conn, "pattern", patterns=[""])
    with pytest.raises(RingHubError, match="mode must be one of"):
        RedisFlusher(conn, "keys")
    with pytest.raises(RingHubError, match="batch_size"):
        RedisFlusher(conn, "all", batch_size=0)


def test_patterns_outside_pattern_mode_and_a_bad_connection_change_nothing() -> None:
    params = {"mode": "all", "patterns": ["x*"], "asynchronous": True, "batch_size": 10}
    with pytest.raises(NothingChanged, match="only apply to mode: pattern"):
        flush_redis(params, check_mode=False)
    with pytest.raises(NothingChanged, match="need tls=true") as err:
        flush_redis(dict(params, patterns=None, ca_cert="/ca.pem"), check_mode=False)
    assert err.value.operator_message.endswith("; nothing was changed")
