"""Configuration of the sandbox hub (test and demo tool), read the way hub-api reads it.

Variables: ``DATABASE_URL`` (Prisma form), ``REDIS_URL``, ``RING_HUB_URL``,
``RING_HUB_PRIVATE_KEY`` (base64 of the PEM text of a PKCS#8 Ed25519 key),
``NODE_ENV``, ``PORT``, ``HOST``, ``ROOT_RING_SLUG``; sandbox-only:
``SANDBOX_DID_CACHE_TTL`` (seconds a resolved DID document stays in Redis, default
3600 as in the hub), ``SANDBOX_HTTP_TIMEOUT`` (DID fetch timeout, default 5).

They come from a compose-style ``.env`` file and/or the process environment: when a
file is given its values win, variables it does not set come from the environment.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

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
)
ALLOWED_HOSTS = ("127.0.0.1", "localhost")
BIND_ADDRESS = "127.0.0.1"

# libpq accepts these from a Prisma URL's query string; every other Prisma
# parameter (schema=, connection_limit=, pool_timeout=, pgbouncer=...) is Prisma's own.
_LIBPQ_PARAMS = {
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslpassword",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "options",
}


class ConfigError(ValueError):
    """The configuration cannot run a sandbox hub (message is free of secrets)."""


# -- compose-style .env files ---------------------------------------------------------

_LINE_RE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<rest>.*)$", re.S)
_VAR_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def _substitute(match: re.Match[str], scope: Mapping[str, str]) -> str:
    name = match.group("braced") or match.group("bare")
    op = match.group("op") or ""
    arg = match.group("arg") or ""
    current = scope.get(name)
    if op == ":-":
        return current if current else arg
    if op == "-":
        return current if current is not None else arg
    if op == ":+":
        return arg if current else ""
    if op == "+":
        return arg if current is not None else ""
    if op in (":?", "?"):
        if current is None or (op == ":?" and not current):
            raise ConfigError(f"required variable {name} is not set: {arg}")
        return current
    return current or ""


def _expand(raw: str, scope: Mapping[str, str], escapes: bool) -> str:
    """Interpolate ``$VAR`` / ``${VAR...}``; with ``escapes`` also process backslash escapes
    (``\\$`` is a literal dollar), in one pass so substituted values are left as they are."""
    out: list[str] = []
    j = 0
    while j < len(raw):
        char = raw[j]
        if escapes and char == "\\" and j + 1 < len(raw) and raw[j + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[j + 1]])
            j += 2
            continue
        if char == "$":
            match = _VAR_RE.match(raw, j)
            if match:
                out.append(_substitute(match, scope))
                j = match.end()
                continue
        out.append(char)
        j += 1
    return "".join(out)


def parse_env_text(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse a compose-style ``.env`` text into a dict.

    ``KEY=value`` lines (an ``export`` prefix is allowed), ``#`` comments, blank
    lines; unquoted values lose a trailing `` # comment`` and surrounding spaces;
    ``'single'`` quotes are literal; ``"double"`` quotes process ``\\n \\t \\\\ \\"``
    escapes; both quoted forms may span lines. ``${VAR}``, ``${VAR:-default}`` and
    ``$VAR`` are interpolated (not in single quotes) from earlier keys, then ``environ``.
    """
    environ = os.environ if environ is None else environ
    result: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise ConfigError(f"line {i}: not a KEY=value line")
        key, rest = match.group("key"), match.group("rest").lstrip()
        scope = {**environ, **result}
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            start_line = i
            while True:
                end = _closing_quote(body, quote)
                if end >= 0:
                    break
                if i >= len(lines):
                    raise ConfigError(f"line {start_line}: unterminated {quote} quote")
                body += "\n" + lines[i]
                i += 1
            raw = body[:end]
            if quote == "'":
                value = raw
            else:
                value = _expand(raw, scope, escapes=True)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
            value = _expand(value, scope, escapes=False)
        result[key] = value
    return result


def _closing_quote(body: str, quote: str) -> int:
    j = 0
    while j < len(body):
        char = body[j]
        if quote == '"' and char == "\\":
            j += 2
            continue
        if char == quote:
            return j
        j += 1
    return -1


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
        parsed = parse_env_text(text, environ)
        values.update({k: v for k, v in parsed.items() if k in HUB_VARIABLES})
    return values


# -- Prisma DATABASE_URL ----------------------------------------------------------------


def parse_prisma_url(url: str) -> tuple[dict[str, Any], str]:
    """Return ``(psycopg2 connect kwargs, schema)`` for a Prisma PostgreSQL URL.

    ``schema=`` names the Postgres schema (default ``public``); ``host=`` in the query
    is a Unix socket directory; Prisma-only parameters are dropped.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL does not parse: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("DATABASE_URL must start with postgresql:// or postgres://")
    kwargs: dict[str, Any] = {}
    if parts.hostname:
        kwargs["host"] = unquote(parts.hostname)
    if port:
        kwargs["port"] = port
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password is not None:
        kwargs["password"] = unquote(parts.password)
    dbname = unquote(parts.path.lstrip("/"))
    if dbname:
        kwargs["dbname"] = dbname
    schema = "public"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value or "public"
        elif key == "host":
            kwargs["host"] = value
        elif key in _LIBPQ_PARAMS:
            kwargs[key] = value
    kwargs.setdefault("connect_timeout", "5")
    return kwargs, schema


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
    parse_prisma_url(database_url)
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
        private_key_value=values.get("RING_HUB_PRIVATE_KEY") or None,
    )


def issuer_did(ring_hub_url: str) -> str:
    """``did:web:<hostname of RING_HUB_URL>`` (hostname only, no port), as the hub issues."""
    hostname = urlsplit(ring_hub_url).hostname
    if not hostname:
        raise ConfigError("RING_HUB_URL has no hostname")
    return f"did:web:{hostname}"
