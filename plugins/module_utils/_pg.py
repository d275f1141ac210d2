# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection spec shared by every PostgreSQL module of the collection.

- ``pg_argument_spec()`` is the argument spec that pairs with the
  ``threadring.ringhub.postgresql`` doc fragment.
- ``parse_database_url()`` turns a Prisma ``DATABASE_URL`` into libpq keyword
  arguments: Prisma-only query parameters (``schema``, ``connection_limit``, ...)
  are taken out, ``schema=`` becomes the default target schema, and libpq's own
  URI parser (``psycopg2.extensions.parse_dsn``) reads the rest.
- ``connect()`` opens a psycopg2 connection; every error names host, port,
  database, user and the reason, with the password masked.
- Identifiers go into SQL as ``psycopg2.sql.Identifier`` (``sql`` is exported).

The password never leaves this module except inside the keyword arguments
given to libpq (and the ``PGPASSWORD`` environment of client tools).
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    Library,
    RingHubError,
    mask_url,
    redact,
    split_url,
    userinfo_outside_netloc,
)

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.sql

    sql = psycopg2.sql  # identifiers and composed SQL for every PostgreSQL module
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR: str | None = None
except ImportError:  # pragma: no cover - exercised only without the library
    psycopg2 = sql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

PSYCOPG2 = Library("psycopg2", HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR)
# The environment variable a PostgreSQL module falls back to (its password is registered as a secret).
URL_ENV = "DATABASE_URL"

DEFAULT_SCHEMA = "public"
DEFAULT_PORT = 5432
DEFAULT_CONNECT_TIMEOUT = 10

# Query parameters Prisma understands but libpq rejects (or reads differently).
PRISMA_ONLY_PARAMS = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "pgbouncer",
        "socket_timeout",
        "statement_cache_size",
        "sslaccept",
        "sslidentity",
        "max_connection_lifetime",
        "max_idle_connection_lifetime",
        "single_use_connections",
    }
)
# Query parameters passed on to libpq as connection keywords.
LIBPQ_PARAMS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslpassword",
        "sslcrl",
        "application_name",
        "options",
        "connect_timeout",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "gssencmode",
        "krbsrvname",
        "channel_binding",
    }
)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SCHEMA_NAME_RE = re.compile(r"^[^\x00]{1,63}$")

# Discrete options that cannot be combined with database_url.
DISCRETE_OPTIONS = ("login_host", "login_unix_socket", "port", "login_user", "login_password", "db")


def pg_argument_spec() -> dict[str, dict[str, Any]]:
    """Connection options of every PostgreSQL module (see the postgresql doc fragment)."""
    return dict(
        database_url=dict(type="str", no_log=True),
        login_host=dict(type="str", aliases=["host"]),
        login_unix_socket=dict(type="str", aliases=["unix_socket"]),
        port=dict(type="int", aliases=["login_port"]),
        login_user=dict(type="str", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        db=dict(type="str", aliases=["login_db", "database"]),
        ssl_mode=dict(type="str", choices=list(SSL_MODES)),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=DEFAULT_CONNECT_TIMEOUT),
        schema=dict(type="str"),
    )


def pg_mutually_exclusive() -> list[list[str]]:
    return [["database_url", name] for name in DISCRETE_OPTIONS]


@dataclass
class ConnSpec:
    """Where and how to connect; neither ``repr()`` nor ``describe()`` shows a password.

    ``params`` (libpq keywords from the URL and options) may hold ``sslpassword``:
    it is left out of ``repr()`` like ``password``.
    """

    host: str | None = None
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    schema: str = DEFAULT_SCHEMA
    params: dict[str, str] = field(default_factory=dict, repr=False)
    source: str = "options"
    masked_url: str | None = None
    dropped_params: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def libpq_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(self.params)
        if self.host:
            kwargs["host"] = self.host
        kwargs["port"] = self.port
        if self.user:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.dbname:
            kwargs["dbname"] = self.dbname
        return kwargs

    def libpq_env(self) -> dict[str, str]:
        """Environment variables for libpq client tools (pg_dump, pg_restore)."""
        mapping = {
            "sslmode": "PGSSLMODE",
            "sslcert": "PGSSLCERT",
            "sslkey": "PGSSLKEY",
            "sslrootcert": "PGSSLROOTCERT",
            "sslcrl": "PGSSLCRL",
            "connect_timeout": "PGCONNECT_TIMEOUT",
            "options": "PGOPTIONS",
            "target_session_attrs": "PGTARGETSESSIONATTRS",
            "gssencmode": "PGGSSENCMODE",
            "channel_binding": "PGCHANNELBINDING",
        }
        env = {env_name: str(self.params[key]) for key, env_name in mapping.items() if key in self.params}
        if self.host:
            env["PGHOST"] = self.host
        env["PGPORT"] = str(self.port)
        if self.user:
            env["PGUSER"] = self.user
        if self.dbname:
            env["PGDATABASE"] = self.dbname
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if "sslpassword" in self.params:
            env["PGSSLPASSWORD"] = str(self.params["sslpassword"])
        return env

    def describe(self) -> dict[str, Any]:
        """Connection facts safe to return (no password)."""
        out: dict[str, Any] = {
            "host": self.host or "(libpq default)",
            "port": self.port,
            "database": self.dbname,
            "user": self.user,
            "schema": self.schema,
            "source": self.source,
        }
        if self.masked_url:
            out["url"] = self.masked_url
        if self.dropped_params:
            out["prisma_params_removed"] = sorted(self.dropped_params)
        return out

    @property
    def secrets(self) -> list[str]:
        out = [self.password] if self.password else []
        if self.params.get("sslpassword"):
            out.append(self.params["sslpassword"])
        return out

    def redact(self, text: object) -> str:
        return redact(str(text), self.secrets)


# The collection has one URL masker (``_common.mask_url``); this name is kept for its callers.
mask_database_url = mask_url

ENCODE_HINT = (
    "if the user name or password contains any of : / ? # @ % [ ], percent-encode them "
    "(%3A %2F %3F %23 %40 %25 %5B %5D), as Prisma requires"
)


def _port(value: str, masked: str) -> int:
    try:
        port = int(value)
    except ValueError:
        # The text is not echoed: with an unencoded password it would be part of the password.
        raise RingHubError(f"invalid port in database_url {masked} ({ENCODE_HINT})") from None
    if not 0 < port < 65536:
        raise RingHubError(f"invalid port {port} in database_url {masked}")
    return port


def parse_database_url(url: str, schema: str | None = None) -> ConnSpec:
    """Parse a Prisma ``postgresql://`` / ``postgres://`` URL into a ``ConnSpec``.

    ``schema`` (an explicit option) wins over the URL's ``schema=`` parameter.
    Prisma-only and unknown query parameters are taken out (unknown ones with a
    warning), the user information is percent-encoded again (an unencoded ``@``
    or ``:`` in the password is read up to the last ``@``, as Prisma reads it),
    then libpq parses the URI. No error quotes a piece of the URL but its masked form.
    """
    if not HAS_PSYCOPG2:
        require_psycopg2()
    text = url.strip()
    masked = mask_url(text)
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise RingHubError(f"database_url is not a valid URL ({redact(str(exc))}): {masked}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise RingHubError(f"database_url must start with postgresql:// or postgres://, got {masked}")
    userinfo = split_url(text)
    if userinfo_outside_netloc(parts) or (userinfo is not None and userinfo.cut_short):
        raise RingHubError(f"database_url {masked} does not parse: {ENCODE_HINT}")
    spec = ConnSpec(source="database_url", masked_url=masked)
    url_schema: str | None = None
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            url_schema = value
        if key in LIBPQ_PARAMS:
            kept.append((key, value))
            continue
        spec.dropped_params.append(key)
        if key not in PRISMA_ONLY_PARAMS:
            spec.warnings.append(f"database_url query parameter {key!r} is unknown to libpq; it was ignored")
    authority = parts.netloc.rpartition("@")[2]
    if userinfo is not None and "@" in parts.netloc:
        credentials = quote(unquote(userinfo.user), safe="")
        if userinfo.password is not None:
            credentials += ":" + quote(unquote(userinfo.password), safe="")
        authority = f"{credentials}@{authority}"
    query = urlencode(kept, quote_via=quote)
    try:
        dsn = psycopg2.extensions.parse_dsn(f"postgresql://{authority}{parts.path}" + (f"?{query}" if query else ""))
    except psycopg2.Error:
        # libpq's message quotes the URI (and so the password): it is not passed on.
        raise RingHubError(f"database_url {masked} does not parse as a PostgreSQL URI ({ENCODE_HINT})") from None
    spec.host = dsn.pop("host", None) or None
    port = dsn.pop("port", None)
    spec.port = _port(port, masked) if port else DEFAULT_PORT
    spec.user = dsn.pop("user", None) or None
    spec.password = dsn.pop("password", None)
    spec.dbname = dsn.pop("dbname", None) or None
    spec.params = dsn
    if not spec.dbname:
        raise RingHubError(f"database_url names no database (path /<database>): {masked}")
    spec.schema = schema or url_schema or DEFAULT_SCHEMA
    return spec


def spec_from_params(params: dict[str, Any], environ: dict[str, str] | None = None) -> ConnSpec:
    """Build the connection spec from module parameters.

    ``database_url`` wins; else the discrete options when ``db`` is set; else the
    ``DATABASE_URL`` environment variable of the module process.
    """
    environ = os.environ if environ is None else environ
    url = params.get("database_url")
    if not url and not params.get("db"):
        discrete = [name for name in DISCRETE_OPTIONS if params.get(name) not in (None, "")]
        if environ.get("DATABASE_URL"):
            if discrete:
                raise RingHubError(
                    f"{', '.join(discrete)} given without db: set db to use discrete connection options "
                    "(DATABASE_URL from the environment is only used when neither database_url nor db is set)"
                )
            url = environ["DATABASE_URL"]
        else:
            raise RingHubError("no database to connect to: set database_url, db, or DATABASE_URL in the environment")
    if url:
        spec = parse_database_url(url, params.get("schema"))
        if params.get("database_url") is None:
            spec.source = "DATABASE_URL environment variable"
    else:
        spec = ConnSpec(
            host=params.get("login_unix_socket") or params.get("login_host"),
            port=params.get("port") or DEFAULT_PORT,
            user=params.get("login_user"),
            password=params.get("login_password"),
            dbname=params.get("db"),
            schema=params.get("schema") or DEFAULT_SCHEMA,
        )
    if params.get("ssl_mode"):
        spec.params["sslmode"] = params["ssl_mode"]
    if params.get("ca_cert"):
        spec.params["sslrootcert"] = params["ca_cert"]
    if params.get("connect_timeout") is not None and "connect_timeout" not in spec.params:
        spec.params["connect_timeout"] = str(params["connect_timeout"])
    if not SCHEMA_NAME_RE.match(spec.schema):
        raise RingHubError(f"invalid schema name {spec.schema!r} (1 to 63 characters)")
    return spec


def require_psycopg2() -> None:
    if not HAS_PSYCOPG2:
        raise RingHubError(
            "the psycopg2 Python library is required on the host that runs this module (pip install psycopg2-binary)",
            exception_text=PSYCOPG2_IMPORT_ERROR,
        )


def where(spec: ConnSpec) -> str:
    host = spec.host or "(libpq default host)"
    return f"host {host} port {spec.port} database {spec.dbname!r} as user {spec.user or '(default)'}"


def pg_error_text(exc: BaseException, spec: ConnSpec | None = None) -> str:
    """One-line reason of a psycopg2 error, with secrets masked."""
    text = getattr(exc, "pgerror", None) or str(exc) or exc.__class__.__name__
    text = " ".join(str(text).split())
    return spec.redact(text) if spec else redact(text)


def connect(spec: ConnSpec, application_name: str = "threadring.ringhub", autocommit: bool = True) -> Any:
    """Open a connection with the session in UTC; raise ``RingHubError`` on failure."""
    require_psycopg2()
    kwargs = spec.libpq_kwargs()
    kwargs.setdefault("application_name", application_name)
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise RingHubError(
            f"cannot connect to PostgreSQL at {where(spec)}: {pg_error_text(exc, spec)}",
            connection=spec.describe(),
        ) from None
    conn.autocommit = autocommit
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def rollback_quietly(conn: Any) -> None:
    """Roll back ``conn``'s transaction if the connection is still open; a failure to do so is ignored."""
    if conn is not None and not conn.closed:
        try:
            conn.rollback()
        except psycopg2.Error:
            pass


# -- the environment marker ------------------------------------------------------------
# A line ``ringhub.environment=<name>`` in the database's comment (COMMENT ON DATABASE).
# It lives in the shared catalog pg_shdescription: it survives DROP SCHEMA, is part of
# no schema (Prisma never sees it), and the database owner may write it without
# superuser rights. Other lines of the comment are kept.
MARKER_KEY = "ringhub.environment"
_MARKER_LINE_RE = re.compile(r"^ringhub\.environment=(.*)$", re.M)
_COMMENT_SQL = "SELECT shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE d.datname = current_database()"


def parse_marker(comment: str | None) -> str | None:
    """The environment named by a database comment, or None when unmarked."""
    if not comment:
        return None
    found = _MARKER_LINE_RE.findall(comment)
    return found[-1].strip() if found else None


def marked_comment(comment: str | None, environment: str) -> str:
    """``comment`` with its marker line set to ``environment`` (other lines kept)."""
    lines = [line for line in (comment or "").splitlines() if not _MARKER_LINE_RE.match(line)]
    return "\n".join([*lines, f"{MARKER_KEY}={environment}"])


def read_database_comment(cur: Any) -> str | None:
    cur.execute(_COMMENT_SQL)
    row = cur.fetchone()
    return row[0] if row else None


def read_environment_marker(cur: Any) -> str | None:
    """The environment marker of the connected database (None when unmarked)."""
    return parse_marker(read_database_comment(cur))
