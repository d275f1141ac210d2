"""Configuration of the sandbox hub (test and demo tool): .env parsing, Prisma URL, signing key.

Pure logic, no servers: the hub variables are read the way hub-api and Compose read them.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from sandbox_hub.config import (
    ConfigError,
    database_spec,
    decode_private_key,
    load_env,
    parse_env_text,
    settings_from_env,
)
from sandbox_hub.instance import env_line, key_env_value

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile

BASE = {"DATABASE_URL": "postgresql://u:p@127.0.0.1:5999/hub", "REDIS_URL": "redis://127.0.0.1:6999/0"}


def test_env_text_compose_style() -> None:
    text = """
# comment
export NODE_ENV=production
PORT=3999   # inline comment
RING_HUB_URL="https://hub.example.org"
SINGLE='literal ${PORT} and # hash'
DOUBLE="line1\\nline2"
LITERAL=${NOT_INTERPOLATED}
MULTI="a
b"
EMPTY=
"""
    values = parse_env_text(text)
    assert values["NODE_ENV"] == "production"
    assert values["PORT"] == "3999"
    assert values["RING_HUB_URL"] == "https://hub.example.org"
    assert values["SINGLE"] == "literal ${PORT} and # hash"
    assert values["DOUBLE"] == "line1\nline2"
    assert values["LITERAL"] == "${NOT_INTERPOLATED}"  # literal, as the collection reads .env
    assert values["MULTI"] == "a\nb"
    assert values["EMPTY"] == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOT A LINE", "line 1: not a KEY=value line"),
        ('A=1\nKEY="unterminated\nB=2', 'line 2: unterminated " quote'),
        ("A='open", "line 1: unterminated ' quote"),
    ],
)
def test_env_text_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_env_text(text)


def test_env_text_is_the_collections_parser() -> None:
    """The sandbox has no .env parser of its own: it reads what _envfile.parse_entries reads."""
    from sandbox_hub import config

    text = 'A=1\nexport B=\'x # y\'\nC="q\\"r"  # c\nA=2\n'
    theirs = {e["name"]: e["value"] for e in _envfile.parse_entries(text)}
    assert parse_env_text(text) == theirs == {"A": "2", "B": "x # y", "C": 'q"r'}
    assert not any(hasattr(config, name) for name in ("_LINE_RE", "_VAR_RE", "_expand", "parse_prisma_url"))
    assert not hasattr(config, "issuer_did")


def test_env_file_wins_over_environment_and_ignores_other_names(tmp_path: pytest.TempPathFactory) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("NODE_ENV=production\nPOSTGRES_PASSWORD=secret\n")
    values = load_env(env_file, {"NODE_ENV": "development", "PORT": "4000", "HOME": "/root"})
    assert values == {"NODE_ENV": "production", "PORT": "4000"}
    with pytest.raises(ConfigError, match="cannot read env file"):
        load_env(tmp_path / "missing.env", {})


@pytest.mark.parametrize(
    ("url", "kwargs", "schema"),
    [
        (
            "postgresql://ring%40hub:p%3Aw@db.example:6543/hub?schema=ringhub&connection_limit=5&pgbouncer=true",
            {"host": "db.example", "port": 6543, "user": "ring@hub", "password": "p:w", "dbname": "hub"},
            "ringhub",
        ),
        (
            "postgres://u@localhost/hub?host=%2Fvar%2Frun%2Fpostgresql&sslmode=disable&socket_timeout=3",
            {"host": "/var/run/postgresql", "port": 5432, "user": "u", "dbname": "hub", "sslmode": "disable"},
            "public",
        ),
    ],
)
def test_prisma_url(url: str, kwargs: dict, schema: str) -> None:
    spec = database_spec(url)
    assert spec.libpq_kwargs() == kwargs
    assert spec.schema == schema
    assert "connection_limit" in spec.dropped_params or "socket_timeout" in spec.dropped_params


def test_prisma_url_refuses_other_schemes() -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        database_spec("mysql://u:p@h/db")


# Passwords a user might paste into DATABASE_URL without percent-encoding them.
UNENCODED_PASSWORDS = ["se:cr3t/pa?ss#wd", "p@ss:w0rd@x", "abc/def", "se#cret:99", "sec?ret=1&x"]


def _fragments(password: str) -> set[str]:
    """Every piece of ``password`` between URL delimiters, 3+ characters long, plus the whole."""
    import re

    pieces = {p for p in re.split(r"[:/?#@&=]", password) if len(p) >= 3}
    return pieces | {password}


@pytest.mark.parametrize("password", UNENCODED_PASSWORDS)
def test_url_errors_quote_no_fragment_of_the_password(password: str) -> None:
    url = f"postgresql://ringhub:{password}@127.0.0.1:5999/ringhub?schema=public"
    messages = []
    for candidate in (url, url.replace("5999", "59x9"), url.replace("postgresql", "mysql")):
        try:
            database_spec(candidate)
            settings_from_env({**BASE, "DATABASE_URL": candidate})
        except ConfigError as exc:
            messages.append(str(exc))
    assert messages, "an unencoded password must be refused"
    for message in messages:
        for fragment in _fragments(password):
            assert fragment not in message, (fragment, message)


def test_private_key_is_base64_of_pem_as_the_hub_decodes_it() -> None:
    key = Ed25519PrivateKey.generate()
    pem = _ed25519.private_pem(key)
    value = key_env_value(key)
    assert base64.b64decode(value) == pem
    decoded = decode_private_key(value)
    assert decoded is not None and _ed25519.same_key(decoded, key)
    # Line breaks inside the base64 (as `base64` wraps it) are skipped, as Node does.
    wrapped = "\n".join(value[i : i + 76] for i in range(0, len(value), 76))
    assert decode_private_key(wrapped) is not None
    assert decode_private_key(pem.decode()) is None  # raw PEM is not what the hub expects
    assert decode_private_key("not a key") is None
    assert decode_private_key(None) is None
    rsa = generate_private_key(public_exponent=65537, key_size=1024)
    rsa_value = base64.b64encode(
        rsa.private_bytes(
            _ed25519.serialization.Encoding.PEM,
            _ed25519.serialization.PrivateFormat.PKCS8,
            _ed25519.serialization.NoEncryption(),
        )
    ).decode()
    assert decode_private_key(rsa_value) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "hub.example.org"])
def test_only_loopback_binding_is_accepted(host: str) -> None:
    with pytest.raises(ConfigError, match="127.0.0.1 only"):
        settings_from_env({**BASE, "HOST": host})


def test_settings_defaults_and_validation() -> None:
    settings = settings_from_env(BASE)
    assert (settings.port, settings.node_env, settings.root_ring_slug) == (3000, "development", "spool")
    assert settings.ring_hub_url == "http://127.0.0.1:3000" and settings.bind_address == "127.0.0.1"
    assert "p@" not in repr(settings) and "DATABASE" not in repr(settings)
    for bad in (
        {"PORT": "x"},
        {"PORT": "70000"},
        {"DATABASE_URL": ""},
        {"REDIS_URL": "http://x"},
        {"RING_HUB_URL": "ftp://h"},
    ):
        with pytest.raises(ConfigError):
            settings_from_env({**BASE, **bad})


def test_rate_limit_defaults_to_the_hubs_and_is_validated() -> None:
    settings = settings_from_env(BASE)
    assert (settings.rate_limit, settings.rate_limit_window) == (500, 60.0)  # @fastify/rate-limit max 500, 1 minute
    off = settings_from_env({**BASE, "SANDBOX_RATE_LIMIT": "0", "SANDBOX_RATE_LIMIT_WINDOW": "2.5"})
    assert (off.rate_limit, off.rate_limit_window) == (0, 2.5)
    for bad, words in (
        ({"SANDBOX_RATE_LIMIT": "-1"}, "SANDBOX_RATE_LIMIT must be a whole number"),
        ({"SANDBOX_RATE_LIMIT": "many"}, "got 'many'"),
        ({"SANDBOX_RATE_LIMIT": "1.5"}, "SANDBOX_RATE_LIMIT must be a whole number"),
        ({"SANDBOX_RATE_LIMIT_WINDOW": "0"}, "SANDBOX_RATE_LIMIT_WINDOW must be a number of seconds above 0"),
        ({"SANDBOX_RATE_LIMIT_WINDOW": "nan"}, "got 'nan'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            settings_from_env({**BASE, **bad})


def test_rate_limit_variables_come_from_the_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("SANDBOX_RATE_LIMIT=7\nSANDBOX_RATE_LIMIT_WINDOW=5\n")
    values = load_env(env, {"SANDBOX_RATE_LIMIT": "9", **BASE})
    assert (values["SANDBOX_RATE_LIMIT"], values["SANDBOX_RATE_LIMIT_WINDOW"]) == ("7", "5")
    assert settings_from_env(values).rate_limit == 7


@pytest.mark.parametrize(
    ("value", "line"),
    [("plain-value", "K=plain-value"), ("has space", "K='has space'"), ("it's $x", 'K="it\'s \\$x"')],
)
def test_env_line_round_trips(value: str, line: str) -> None:
    assert env_line("K", value) == line
    assert parse_env_text(line)["K"] == value


def test_env_parsing_agrees_with_the_collections_env_file_code() -> None:
    """What the collection writes into .env, the sandbox reads back the same way."""
    key_value = key_env_value(Ed25519PrivateKey.generate())
    text = _envfile.set_var(
        "# hub\nNODE_ENV=production  # prod\nQ='a # b'\nD=\"x\\ny\"\n", "RING_HUB_PRIVATE_KEY", key_value
    )
    ours = parse_env_text(text)
    theirs = {e["name"]: e["value"] for e in _envfile.parse_entries(text)}
    assert ours == theirs
    assert decode_private_key(ours["RING_HUB_PRIVATE_KEY"]) is not None
