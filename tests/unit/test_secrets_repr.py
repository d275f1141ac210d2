"""No secret in a repr() or str(): connection specs, Redis connections, keys, errors."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

from ansible_collections.threadring.ringhub.plugins import module_utils
from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._audit import SECRET_KEY_RE
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import parse_database_url, spec_from_params
from ansible_collections.threadring.ringhub.plugins.module_utils._redis import RedisConnection, resolve_connection

PG_PASSWORD = "Pg-S3cret/pw"
SSL_PASSWORD = "Ssl-K3y-pass"
REDIS_PASSWORD = "Redis-S3cret"
SEED = bytes(range(32))
PEM_BODY = "".join(_ed25519.private_pem(_ed25519.private_key_from_seed(SEED)).decode().splitlines()[1:-1])


def texts(obj: object) -> str:
    return repr(obj) + "\n" + str(obj)


def all_connection_and_key_objects() -> list[object]:
    url = f"postgresql://hub:Pg-S3cret%2Fpw@db:5432/hub?sslpassword={SSL_PASSWORD}&schema=public"
    key = _ed25519.private_key_from_seed(SEED)
    return [
        parse_database_url(url),
        spec_from_params({"db": "hub", "login_user": "hub", "login_password": PG_PASSWORD}, environ={}),
        RedisConnection(host="h", username="app", password=REDIS_PASSWORD, tls=True),
        resolve_connection({"redis_url": f"rediss://app:{REDIS_PASSWORD}@h:6380/1"}),
        resolve_connection({"redis_url": "redis://h"}).for_node("10.0.0.2", 7001),
        key,
        key.public_key(),
    ]


@pytest.mark.parametrize("obj", all_connection_and_key_objects(), ids=lambda obj: type(obj).__name__)
def test_repr_and_str_carry_no_secret(obj: object) -> None:
    shown = texts(obj)
    for secret in (PG_PASSWORD, "Pg-S3cret", SSL_PASSWORD, REDIS_PASSWORD):
        assert secret not in shown
    if isinstance(obj, RedisConnection) and obj.password:
        assert obj.password == REDIS_PASSWORD  # still there for the client, only not shown
    assert PEM_BODY not in shown and SEED.hex() not in shown


def test_every_dataclass_field_named_like_a_secret_is_left_out_of_repr() -> None:
    """A new dataclass with a ``password`` / ``passphrase`` / ``token`` field must say ``field(repr=False)``."""
    checked = []
    for info in pkgutil.iter_modules(module_utils.__path__):
        module = importlib.import_module(f"{module_utils.__name__}.{info.name}")
        for value in vars(module).values():
            if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module.__name__:
                for field in dataclasses.fields(value):
                    if SECRET_KEY_RE.search(field.name) or field.name == "params":
                        checked.append(f"{value.__name__}.{field.name}")
                        assert field.repr is False, f"{value.__name__}.{field.name} is shown by repr()"
    assert {"ConnSpec.password", "ConnSpec.params", "RedisConnection.password"} <= set(checked)
