"""Redis connection options: URL parsing, precedence of discrete options, secrets kept out of errors."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._redis import (
    RedisConnection,
    parse_redis_url,
    redis_argument_spec,
    resolve_connection,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", {"host": "localhost", "tls": False}),
        ("redis://h:7000/3", {"host": "h", "port": 7000, "db": 3, "tls": False}),
        ("rediss://u:p%40ss@h:6380/0",
         {"host": "h", "port": 6380, "db": 0, "tls": True, "username": "u", "password": "p@ss"}),
        ("redis://:only-pw@h", {"host": "h", "password": "only-pw", "tls": False}),
        ("unix:///run/redis.sock?db=2", {"unix_socket": "/run/redis.sock", "db": 2}),
        ("unix://app:pw@/run/redis.sock", {"unix_socket": "/run/redis.sock", "username": "app", "password": "pw"}),
        ("rediss://h?ssl_cert_reqs=none", {"host": "h", "tls": True, "validate_certs": False}),
        ("redis://[::1]:7001", {"host": "::1", "port": 7001, "tls": False}),
    ],
)  # fmt: skip
def test_parse_redis_url(url: str, expected: dict) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://h", "must start with redis://"),
        ("redis://h/abc", "must be a number"),
        ("redis://h:notaport", "not a valid URL"),
        ("redis://h?foo=1", "unsupported query parameter 'foo'"),
        ("unix://", "needs a socket path"),
    ],
)
def test_parse_redis_url_rejects(url: str, fragment: str) -> None:
    with pytest.raises(RingHubError, match=fragment):
        parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:TopSecret@h:badport/0",
        "redis://u:Top/Secret@h:6379/0",  # '/' ends the host part: "Top" would be read as the port
        "redis://:12/TopSecret@h",  # ... or "TopSecret@h" as the database
        "redis://u:Top?Secret@h",
        "redis://u:Top#Secret@h",
        "unix://u:Top/Secret@/run/redis.sock",
        "redis://h/TopSecret",
    ],
)
def test_invalid_url_error_never_shows_any_piece_of_the_password(url: str) -> None:
    with pytest.raises(RingHubError) as err:
        parse_redis_url(url)
    for piece in ("Top", "Secret"):
        assert piece not in err.value.msg and piece not in str(err.value.details)
    assert err.value.__context__ is None or err.value.__suppress_context__  # no chained ValueError text


def test_unencoded_at_sign_in_the_password_still_parses() -> None:
    assert parse_redis_url("redis://u:p@ss@h:1/2")["password"] == "p@ss"


def test_discrete_options_override_the_url() -> None:
    conn = resolve_connection(
        {"redis_url": "redis://u:urlpw@urlhost:7000/1", "password": "vaultpw", "db": 4, "timeout": 5.0}
    )
    assert (conn.host, conn.port, conn.username, conn.password, conn.db, conn.timeout) == (
        "urlhost", 7000, "u", "vaultpw", 4, 5.0,
    )  # fmt: skip
    assert resolve_connection({"redis_url": "unix:///s.sock", "host": "h"}).unix_socket is None
    assert resolve_connection({"redis_url": "redis://h", "unix_socket": "/s"}).unix_socket == "/s"


def test_defaults_without_url() -> None:
    conn = resolve_connection({})
    assert (conn.host, conn.port, conn.db, conn.tls, conn.validate_certs) == ("localhost", 6379, 0, False, True)
    assert conn.cluster_mode == "auto"


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"unix_socket": "/s", "tls": True}, "not available over a Unix socket"),
        ({"ca_cert": "/ca.pem"}, "need tls=true"),
        ({"db": -1}, "0 or more"),
        ({"timeout": 0}, "more than 0"),
    ],
)
def test_inconsistent_options_are_refused(params: dict, fragment: str) -> None:
    with pytest.raises(RingHubError, match=fragment):
        resolve_connection(params)


def test_endpoint_names_user_and_address_never_the_password() -> None:
    conn = RedisConnection(host="h", port=1, username="app", password="s3cret", tls=True)
    assert conn.endpoint == "rediss://app@h:1" and str(conn) == conn.endpoint
    assert RedisConnection(unix_socket="/run/r.sock").endpoint == "unix:///run/r.sock"
    assert RedisConnection(host="::1").endpoint == "redis://[::1]:6379"
    err = conn.error("cannot connect to", "WRONGPASS s3cret rejected")
    assert err.msg == "cannot connect to rediss://app@h:1: WRONGPASS ******** rejected"
    assert err.details == {"endpoint": "rediss://app@h:1"}


def test_redis_kwargs_tls_and_socket() -> None:
    conn = RedisConnection(host="h", port=2, tls=True, ca_cert="/ca", client_cert="/c", client_key="/k")
    kwargs = conn.redis_kwargs(db=3)
    assert kwargs["ssl"] and kwargs["ssl_ca_certs"] == "/ca" and kwargs["ssl_certfile"] == "/c"
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True and kwargs["db"] == 3
    insecure = RedisConnection(tls=True, validate_certs=False).redis_kwargs()
    assert insecure["ssl_cert_reqs"] == "none" and insecure["ssl_check_hostname"] is False
    sock = RedisConnection(unix_socket="/s").redis_kwargs()
    assert sock["unix_socket_path"] == "/s" and "host" not in sock and "ssl" not in sock
    node = conn.for_node("10.0.0.2", 7001)
    assert (node.host, node.port, node.client_cert) == ("10.0.0.2", 7001, "/c")


def _doc_options(text: str) -> dict:
    return yaml.safe_load(text)["options"]


def test_doc_fragment_matches_the_argument_spec() -> None:
    """What validate-modules checks: every option documented with the same type, default and choices."""
    fragment = importlib.import_module("ansible_collections.threadring.ringhub.plugins.doc_fragments.redis")
    docs = _doc_options(fragment.ModuleDocFragment.DOCUMENTATION)
    spec = redis_argument_spec()
    assert set(docs) == set(spec)
    for name, option in spec.items():
        doc = docs[name]
        assert doc["type"] == option["type"], name
        assert doc.get("default") == option.get("default"), name
        assert doc.get("choices") == option.get("choices"), name
        assert doc["version_added"] == "0.1.0", name


def test_module_documentation_matches_its_argument_spec() -> None:
    module = importlib.import_module("ansible_collections.threadring.ringhub.plugins.modules.redis_flush")
    docs = _doc_options(module.DOCUMENTATION)
    assert set(docs) == {"mode", "patterns", "asynchronous", "batch_size"}
    assert docs["mode"]["choices"] == ["all", "db", "pattern"] and docs["mode"]["default"] == "all"
    assert docs["asynchronous"]["default"] is True and docs["batch_size"]["default"] == 1000
    assert yaml.safe_load(module.DOCUMENTATION)["extends_documentation_fragment"] == ["threadring.ringhub.redis"]
    returned = yaml.safe_load(module.RETURN)
    for key in ("mode", "nodes", "keys_before", "keys_after", "deleted", "seconds", "commands"):
        assert key in returned
    yaml.safe_load(module.EXAMPLES)
