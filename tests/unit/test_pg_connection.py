"""Prisma DATABASE_URL parsing, option precedence and password masking (no server)."""

from __future__ import annotations

import re

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    ConnSpec,
    marked_comment,
    mask_database_url,
    parse_database_url,
    parse_marker,
    spec_from_params,
)

SECRET = "s3cr:et@/?#%"
ENC = "s3cr%3Aet%40%2F%3F%23%25"


def params(**kw):
    base = dict(
        database_url=None, login_host=None, login_unix_socket=None, port=None, login_user=None,
        login_password=None, db=None, ssl_mode=None, ca_cert=None, connect_timeout=10, schema=None,
    )  # fmt: skip
    base.update(kw)
    return base


def test_prisma_params_are_removed_and_schema_becomes_the_target() -> None:
    spec = parse_database_url(
        f"postgresql://hub:{ENC}@db.internal:6543/ringhub?schema=hub&connection_limit=5&pool_timeout=10"
        "&pgbouncer=true&socket_timeout=3&statement_cache_size=0&sslaccept=strict&sslmode=require"
        "&application_name=reset"
    )
    assert (spec.host, spec.port, spec.user, spec.password, spec.dbname) == (
        "db.internal", 6543, "hub", SECRET, "ringhub",
    )  # fmt: skip
    assert spec.schema == "hub"
    assert spec.params == {"sslmode": "require", "application_name": "reset"}
    assert sorted(spec.dropped_params) == sorted(
        ["schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size",
         "sslaccept"]
    )  # fmt: skip
    kwargs = spec.libpq_kwargs()
    assert "schema" not in kwargs and kwargs["password"] == SECRET and kwargs["dbname"] == "ringhub"


def test_defaults_socket_host_and_ipv6() -> None:
    spec = parse_database_url("postgres://u@localhost/db")
    assert (spec.port, spec.schema, spec.password) == (5432, "public", None)
    sock = parse_database_url("postgresql://u:p@localhost:5433/db?host=%2Fvar%2Frun%2FPostgres")
    assert sock.host == "/var/run/Postgres" and sock.port == 5433  # case of the socket path kept
    v6 = parse_database_url("postgresql://u:p@[::1]:5434/db")
    assert v6.host == "::1" and v6.port == 5434


def test_unknown_parameter_is_dropped_with_a_warning() -> None:
    spec = parse_database_url("postgresql://u:p@h/db?frobnicate=1")
    assert "frobnicate" not in spec.libpq_kwargs() and "frobnicate" in spec.warnings[0]


@pytest.mark.parametrize(
    "url, text",
    [
        ("mysql://u:pw-XYZ@h/db", "must start with postgresql://"),
        ("postgresql://u:pw-XYZ@h:notaport/db", "invalid port"),
        ("postgresql://u:pw-XYZ@h:5432/", "names no database"),
    ],
)
def test_bad_urls_fail_with_the_password_masked(url, text) -> None:
    with pytest.raises(RingHubError) as err:
        parse_database_url(url)
    assert text in err.value.msg and "pw-XYZ" not in err.value.msg


def test_mask_database_url() -> None:
    url = f"postgresql://hub:{ENC}@db:5432/ringhub?schema=public&password=other"
    masked = mask_database_url(url)
    assert masked == "postgresql://hub:********@db:5432/ringhub?schema=public&password=********"
    assert mask_database_url("postgresql://db/ringhub") == "postgresql://db/ringhub"


def test_explicit_schema_wins_over_the_url() -> None:
    spec = spec_from_params(params(database_url="postgresql://u:p@h/db?schema=hub", schema="other"), environ={})
    assert spec.schema == "other"


def test_discrete_options_and_environment_fallback() -> None:
    spec = spec_from_params(
        params(login_unix_socket="/run/pg", login_host="ignored", port=5433, login_user="hub", login_password="pw",
               db="ringhub", ssl_mode="verify-full", ca_cert="/etc/ca.pem"),
        environ={"DATABASE_URL": "postgresql://x:y@z/w"},
    )  # fmt: skip
    assert (spec.host, spec.port, spec.user, spec.dbname, spec.schema) == ("/run/pg", 5433, "hub", "ringhub", "public")
    assert spec.params["sslmode"] == "verify-full" and spec.params["sslrootcert"] == "/etc/ca.pem"
    env = spec.libpq_env()
    assert env["PGHOST"] == "/run/pg" and env["PGPASSWORD"] == "pw" and env["PGSSLMODE"] == "verify-full"

    from_env = spec_from_params(params(), environ={"DATABASE_URL": "postgresql://a:b@h:1/envdb?schema=s"})
    assert from_env.dbname == "envdb" and from_env.schema == "s" and from_env.source.startswith("DATABASE_URL")
    with pytest.raises(RingHubError, match="no database to connect to"):
        spec_from_params(params(), environ={})
    with pytest.raises(RingHubError, match="login_user given without db"):
        spec_from_params(params(login_user="x"), environ={"DATABASE_URL": "postgresql://a:b@h/d"})


def test_describe_and_redact_never_show_the_password() -> None:
    spec = parse_database_url(f"postgresql://hub:{ENC}@db/ringhub")
    assert SECRET not in repr(spec) and SECRET not in str(spec.describe())
    assert spec.redact(f"failed for {SECRET} at postgresql://hub:zzz@db/x") == (
        "failed for ******** at postgresql://hub:********@db/x"
    )
    assert ConnSpec().describe()["host"] == "(libpq default)"


def test_environment_marker_in_the_database_comment() -> None:
    assert parse_marker(None) is None and parse_marker("just a comment") is None
    assert parse_marker("Ring Hub\nringhub.environment=production") == "production"
    assert marked_comment(None, "staging") == "ringhub.environment=staging"
    assert (
        marked_comment("Ring Hub\nringhub.environment=old\nmore", "prod") == "Ring Hub\nmore\nringhub.environment=prod"
    )


@pytest.mark.parametrize(
    "password",
    ["pa#ss-XYZ", "pa/ss-XYZ", "pa?ss-XYZ", "1234?XYZ", "1234/XYZ", "a?b/c#XYZ", "p@ss:w0rd-XYZ"],
)
def test_unencoded_reserved_characters_in_the_password_never_show(password) -> None:
    url = f"postgresql://hub:{password}@db.internal:5432/ringhub?schema=public"
    masked = mask_database_url(url)
    assert masked == "postgresql://hub:********@db.internal:5432/ringhub?schema=public"
    fragments = [part for part in re.split(r"[#/?@:]", password) if len(part) >= 3]
    try:
        spec = parse_database_url(url)
    except RingHubError as err:
        assert "percent-encode" in err.msg
        text = err.msg
    else:  # only an unencoded '@' or ':' still parses (the last '@' ends the userinfo)
        assert spec.password == password and spec.host == "db.internal"
        text = str(spec.describe())
    assert all(fragment not in text for fragment in fragments), text


def test_an_at_sign_in_the_query_is_not_taken_for_a_password() -> None:
    url = "postgresql://db.internal:5432/ringhub?application_name=reset@ops"
    assert mask_database_url(url) == url
    assert parse_database_url(url).params["application_name"] == "reset@ops"
