"""Configuration of the sandbox hub (test and demo tool): .env parsing, Prisma URL, signing key.

Pure logic, no servers: the hub variables are read the way hub-api and Compose read them.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from sandbox_hub.config import (
    ConfigError,
    decode_private_key,
    load_env,
    parse_env_text,
    parse_prisma_url,
    settings_from_env,
)
from sandbox_hub.instance import env_line, key_env_value

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519

BASE = {"DATABASE_URL": "postgresql://u:p@127.0.0.1:5999/hub", "REDIS_URL": "redis://127.0.0.1:6999/0"}


def test_env_text_compose_style() -> None:
    text = """
# comment
export NODE_ENV=production
PORT=3999   # inline comment
RING_HUB_URL="https://hub.example.org"
SINGLE='literal ${PORT} and # hash'
DOUBLE="line1\\nline2 ${PORT}"
DEFAULTED=${MISSING:-fallback}
FROM_ENV=$OUTER
MULTI="a
b"
EMPTY=
"""
    values = parse_env_text(text, environ={"OUTER": "outside"})
    assert values["NODE_ENV"] == "production"
    assert values["PORT"] == "3999"
    assert values["RING_HUB_URL"] == "https://hub.example.org"
    assert values["SINGLE"] == "literal ${PORT} and # hash"
    assert values["DOUBLE"] == "line1\nline2 3999"
    assert values["DEFAULTED"] == "fallback"
    assert values["FROM_ENV"] == "outside"
    assert values["MULTI"] == "a\nb"
    assert values["EMPTY"] == ""


@pytest.mark.parametrize("text", ["NOT A LINE", 'KEY="unterminated', "REQ=${NEED:?must be set}"])
def test_env_text_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_env_text(text, environ={})


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
            {"host": "/var/run/postgresql", "user": "u", "dbname": "hub", "sslmode": "disable"},
            "public",
        ),
    ],
)
def test_prisma_url(url: str, kwargs: dict, schema: str) -> None:
    parsed, parsed_schema = parse_prisma_url(url)
    parsed.pop("connect_timeout")
    assert parsed == kwargs
    assert parsed_schema == schema


def test_prisma_url_refuses_other_schemes() -> None:
    with pytest.raises(ConfigError):
        parse_prisma_url("mysql://u:p@h/db")


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


@pytest.mark.parametrize(
    ("value", "line"),
    [("plain-value", "K=plain-value"), ("has space", "K='has space'"), ("it's $x", 'K="it\'s \\$x"')],
)
def test_env_line_round_trips(value: str, line: str) -> None:
    assert env_line("K", value) == line
    assert parse_env_text(line, environ={})["K"] == value


def test_env_parsing_agrees_with_the_collections_env_file_code() -> None:
    """What the collection writes into .env, the sandbox reads back the same way."""
    from ansible_collections.threadring.ringhub.plugins.module_utils import _envfile

    key_value = key_env_value(Ed25519PrivateKey.generate())
    text = _envfile.set_var(
        "# hub\nNODE_ENV=production  # prod\nQ='a # b'\nD=\"x\\ny\"\n", "RING_HUB_PRIVATE_KEY", key_value
    )
    ours = parse_env_text(text, environ={})
    theirs = {e["name"]: e["value"] for e in _envfile.parse_entries(text)}
    assert ours == theirs
    assert decode_private_key(ours["RING_HUB_PRIVATE_KEY"]) is not None
