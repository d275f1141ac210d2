"""Configuration of the sandbox hub (test and demo tool), read the way hub-api reads it.

Variables: ``DATABASE_URL`` (Prisma form), ``REDIS_URL``, ``RING_HUB_URL``,
``RING_HUB_PRIVATE_KEY`` (base64 of the PEM text of a PKCS#8 Ed25519 key),
``NODE_ENV``, ``PORT``, ``HOST``, ``ROOT_RING_SLUG``; sandbox-only:
``SANDBOX_DID_CACHE_TTL`` (seconds a resolved DID document stays in Redis, default
3600 as in the hub), ``SANDBOX_HTTP_TIMEOUT`` (DID fetch timeout, default 5),
``SANDBOX_RATE_LIMIT`` (requests a client may make per window, default 500 as the
hub's ``@fastify/rate-limit`` setting; ``0`` turns the limit off, for load tests) and
``SANDBOX_RATE_LIMIT_WINDOW`` (the window in seconds, default 60: the hub's "1 minute").

They come from a compose-style ``.env`` file and/or the process environment: when a
file is given its values win, variables it does not set come from the environment.

The parsers are the collection's own, so the sandbox reads a deployment exactly as
the collection does: ``.env`` lines by ``_envfile.parse_entries`` (what did_keys reads
and writes), the Prisma URL by ``_pg.parse_database_url``; the issuer DID is
``_did.instance_did``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec, parse_database_url

HUB_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "RING_HUB_URL",
    "RING_HUB_PRIVATE_KEY",
    "NODE_ENV",
    "PORT",
    "HOST",
    "ROOT_RING_SLUG",
    "SANDBOX_DID_CACHE_TTL",
    "SANDBOX_HTTP_TIMEOUT",
    "SANDBOX_RATE_LIMIT",
    "SANDBOX_RATE_LIMIT_WINDOW",
)
RATE_LIMIT_MAX = 500  # hub-api registers @fastify/rate-limit with max 500, timeWindow '1 minute'
RATE_LIMIT_WINDOW = 60.0
ALLOWED_HOSTS = ("127.0.0.1", "localhost")
BIND_ADDRESS = "127.0.0.1"


class ConfigError(ValueError):
    """The configuration cannot run a sandbox hub (message is free of secrets)."""


# -- compose-style .env files ---------------------------------------------------------
# Values are literal, as the collection reads them (no ``${VAR}`` interpolation). The
# sandbox adds the strictness a server start needs: a line that is not an assignment,
# or a quote that never closes, is an error instead of being skipped or swallowed.


def _quote_closes(rest: str) -> bool:
    """True when the quoted value that ``rest`` starts with has its closing quote."""
    quote, body = rest[0], rest[1:]
    j = 0
    while j < len(body):
        if quote == '"' and body[j] == "\\":
            j += 2
            continue
        if body[j] == quote:
            return True
        j += 1
    return False


def parse_env_text(text: str) -> dict[str, str]:
    """Parse a compose-style ``.env`` text into a dict (the last assignment of a name wins).

    ``KEY=value`` lines (an ``export`` prefix is allowed), ``#`` comments, blank
    lines; unquoted values lose a trailing `` # comment`` and surrounding spaces;
    ``'single'`` quotes are literal; ``"double"`` quotes process ``\\n \\t \\\\ \\"``
    escapes; both quoted forms may span lines.
    """
    lines = text.splitlines(True)
    covered: set[int] = set()
    result: dict[str, str] = {}
    for entry in _envfile.parse_entries(text):
        covered.update(range(entry["first"], entry["last"] + 1))
        if entry["quoted"]:
            block = "".join(lines[entry["first"] : entry["last"] + 1])
            if not _quote_closes(block.split("=", 1)[1].lstrip(" \t")):
                raise ConfigError(f"line {entry['first'] + 1}: unterminated {entry['quoted']} quote")
        result[entry["name"]] = entry["value"]
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index not in covered and stripped and not stripped.startswith("#"):
            raise ConfigError(f"line {index + 1}: not a KEY=value line")
    return result


def load_env(env_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The hub variables: from ``env_file`` when given (its values win), else the environment."""
    environ = dict(os.environ if environ is None else environ)
    values = {k: environ[k] for k in HUB_VARIABLES if k in environ}
    if env_file is not None:
        path = Path(env_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
        parsed = parse_env_text(text)
        values.update({k: v for k, v in parsed.items() if k in HUB_VARIABLES})
    return values


# -- Prisma DATABASE_URL ----------------------------------------------------------------


def database_spec(url: str) -> ConnSpec:
    """The connection of a Prisma ``DATABASE_URL``, parsed by the collection's
    ``parse_database_url``: ``schema=`` kept, Prisma-only parameters dropped, a socket
    directory in ``host=``. Its errors never quote the password."""
    try:
        return parse_database_url(url)
    except RingHubError as exc:
        raise ConfigError(f"DATABASE_URL refused: {exc.msg}") from None


# -- the badge signing key ----------------------------------------------------------------


def decode_private_key(value: str | None) -> Ed25519PrivateKey | None:
    """The key from ``RING_HUB_PRIVATE_KEY`` as hub-api decodes it, or None.

    hub-api does ``createPrivateKey(Buffer.from(value, 'base64'))``: base64 decoding
    that skips characters outside the alphabet, then PEM parsing. Raw PEM text,
    a non-Ed25519 key or garbage therefore give None (the hub's ephemeral-key path).
    The PEM step is the collection's own ``_ed25519.load_private_key``.
    """
    if not value:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9+/=_-]", "", value).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        pem = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, binascii.Error):
        return None
    try:
        key = _ed25519.load_private_key(pem, None, source="RING_HUB_PRIVATE_KEY")
    except RingHubError:
        return None
    return key if isinstance(key, Ed25519PrivateKey) else None


# -- settings ------------------------------------------------------------------------------


@dataclass
class Settings:
    """Everything the sandbox needs, parsed and validated (``repr`` hides secrets)."""

    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    ring_hub_url: str
    node_env: str
    port: int
    host: str
    root_ring_slug: str
    did_cache_ttl: int
    http_timeout: float
    rate_limit: int = RATE_LIMIT_MAX
    rate_limit_window: float = RATE_LIMIT_WINDOW
    private_key_value: str | None = field(default=None, repr=False)

    @property
    def bind_address(self) -> str:
        return BIND_ADDRESS

    @property
    def local_url(self) -> str:
        return f"http://{BIND_ADDRESS}:{self.port}"

    @property
    def production(self) -> bool:
        return self.node_env == "production"


def settings_from_env(values: Mapping[str, str]) -> Settings:
    """Validate the hub variables; raises ConfigError with a message free of secrets."""
    host = values.get("HOST", "").strip()
    if host and host not in ALLOWED_HOSTS:
        raise ConfigError(
            f"HOST={host!r} refused: the sandbox hub binds 127.0.0.1 only (set HOST to 127.0.0.1 or leave it unset)"
        )
    try:
        port = int(values.get("PORT", "3000") or "3000")
    except ValueError:
        raise ConfigError("PORT must be an integer") from None
    if not 0 < port < 65536:
        raise ConfigError("PORT must be between 1 and 65535")
    database_url = values.get("DATABASE_URL", "")
    if not database_url:
        raise ConfigError("DATABASE_URL is not set")
    database_spec(database_url)
    redis_url = values.get("REDIS_URL", "") or "redis://localhost:6379"
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    ring_hub_url = values.get("RING_HUB_URL", "") or f"http://{BIND_ADDRESS}:{port}"
    hub_parts = urlsplit(ring_hub_url)
    if hub_parts.scheme not in ("http", "https") or not hub_parts.hostname:
        raise ConfigError("RING_HUB_URL must be an absolute http(s) URL")
    try:
        ttl = int(values.get("SANDBOX_DID_CACHE_TTL", "3600") or "3600")
        timeout = float(values.get("SANDBOX_HTTP_TIMEOUT", "5") or "5")
    except ValueError:
        raise ConfigError("SANDBOX_DID_CACHE_TTL and SANDBOX_HTTP_TIMEOUT must be numbers") from None
    rate_limit, rate_window = _rate_limit(values)
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        ring_hub_url=ring_hub_url,
        node_env=values.get("NODE_ENV", "") or "development",
        port=port,
        host=host or BIND_ADDRESS,
        root_ring_slug=values.get("ROOT_RING_SLUG", "") or "spool",
        did_cache_ttl=ttl,
        http_timeout=timeout,
        rate_limit=rate_limit,
        rate_limit_window=rate_window,
        private_key_value=values.get("RING_HUB_PRIVATE_KEY") or None,
    )


def _rate_limit(values: Mapping[str, str]) -> tuple[int, float]:
    """``SANDBOX_RATE_LIMIT`` (a whole number >= 0; 0: off) and ``SANDBOX_RATE_LIMIT_WINDOW`` (seconds > 0)."""
    raw_max = (values.get("SANDBOX_RATE_LIMIT", "") or str(RATE_LIMIT_MAX)).strip()
    raw_window = (values.get("SANDBOX_RATE_LIMIT_WINDOW", "") or str(RATE_LIMIT_WINDOW)).strip()
    try:
        limit = int(raw_max)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ConfigError(
            f"SANDBOX_RATE_LIMIT must be a whole number of requests per window (0 turns the limit off), got {raw_max!r}"
        )
    try:
        window = float(raw_window)
    except ValueError:
        window = -1.0
    if not 0 < window < 86400 * 365:
        raise ConfigError(f"SANDBOX_RATE_LIMIT_WINDOW must be a number of seconds above 0, got {raw_window!r}")
    return limit, window
