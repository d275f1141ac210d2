"""Pytest plugin of the sandbox hub (test and demo tool): ``-p sandbox_hub.fixtures``.

Fixtures:

- ``sandbox_hub``: a running sandbox hub on a fresh PostgreSQL database (the
  project's fixture schema applied, the root ring ``spool`` and its roles seeded)
  and a fresh Redis server; ``NODE_ENV=production`` with a persistent badge key
  whose DID document is published at ``/.well-known/did.json``. Stopped and removed
  after the test.
- ``sandbox_hub_factory``: ``sandbox_hub_factory(migrations=..., node_env=...,
  private_key=None, schema=..., seed_root=..., start=..., extra_env=...)`` for other
  set-ups (the hub's real migrations, an unset key, a non-public schema, a small rate
  limit with ``extra_env={"SANDBOX_RATE_LIMIT": "3"}`` or none with ``"0"``...).

Helpers on the returned ``SandboxHub``: ``new_actor()`` (key + did:web document
served by the sandbox at ``/users/<hash>/did.json``), ``join(actor)`` (a signed
``POST /trp/join``), ``leave``, ``badge``, ``verify``, ``actor_badges``,
``restart()``, ``configure(...)``, ``add_ring(...)``, ``instance_document()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pg import FIXTURE_MIGRATIONS, PgServer, apply_migrations_with_psql
from harness.ports import free_port
from harness.redis_servers import RedisServer
from sandbox_hub import ctl
from sandbox_hub.instance import SandboxActor, SandboxHub

__all__ = ["SandboxActor", "SandboxHub"]

_GENERATE = object()


@pytest.fixture
def sandbox_hub_factory(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SandboxHub]]:
    """Make sandbox hubs; everything they started is removed after the test."""
    made: list[SandboxHub] = []

    def make(
        *,
        migrations: str | Path = FIXTURE_MIGRATIONS,
        node_env: str = "production",
        private_key: Any = _GENERATE,
        schema: str = "public",
        seed_root: bool = True,
        start: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> SandboxHub:
        db = pg_server.create_database()
        redis = None
        try:
            if schema != "public":
                db.execute(f'CREATE SCHEMA "{schema}"')
                db.execute(f'ALTER DATABASE "{db.name}" SET search_path TO "{schema}"')
            apply_migrations_with_psql(db, Path(migrations), schema)
            redis = RedisServer().start()
            kwargs: dict[str, Any] = {}
            if private_key is not _GENERATE:
                kwargs["private_key"] = private_key
            hub = SandboxHub(
                directory=tmp_path_factory.mktemp("sandbox-hub"),
                port=free_port(),
                database_url=db.url(params=f"schema={schema}&connection_limit=5&pool_timeout=10"),
                redis_url=redis.url(),
                db=db,
                redis=redis,
                node_env=node_env,
                extra_env=dict(extra_env or {}),
                die_with_parent=True,
                **kwargs,
            )
        except BaseException:
            if redis is not None:
                redis.cleanup()
            pg_server.drop_database(db.name)
            raise
        made.append(hub)
        if seed_root:
            hub.seed_root_ring()
        if start:
            for attempt in range(3):
                try:
                    hub.start()
                    break
                except ctl.CtlError as exc:  # another process took the free port meanwhile
                    if attempt == 2 or not ("in use" in str(exc) or "cannot listen" in str(exc)):
                        raise
                    hub.configure(port=free_port())
        return hub

    try:
        yield make
    finally:
        for hub in made:
            with contextlib.suppress(Exception):
                hub.stop()
            if hub.redis is not None:
                hub.redis.cleanup()
            if hub.db is not None:
                pg_server.drop_database(hub.db.name)


@pytest.fixture
def sandbox_hub(sandbox_hub_factory: Callable[..., SandboxHub]) -> SandboxHub:
    """A running sandbox hub on fresh PostgreSQL + Redis, root ring seeded, persistent key."""
    return sandbox_hub_factory()
