# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection spec shared by every PostgreSQL module of the collection.

- ``pg_argument_spec()`` is the argument spec that pairs with the
  ``threadring.ringhub.postgresql`` doc fragment.
- ``parse_database_url()`` turns a Prisma ``DATABASE_URL`` into libpq keyword
  arguments: Prisma-only query parameters (``schema``, ``connection_limit``, ...)
  are removed, ``schema=`` becomes the default target schema.
- ``connect()`` opens a psycopg2 connection; every error names host, port,
  database, user and the reason, with the password masked.

The password never leaves this module except inside the keyword arguments
given to libpq (and the ``PGPASSWORD`` environment of client tools).
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ansible_collections.threadring.ringhub.plugins.module_utils._common import MASK, RingHubError, redact

try:
    import psycopg2

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR: str | None = None
except ImportError:  # pragma: no cover - exercised only without the library
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

DEFAULT_SCHEMA = "public"
DEFAULT_PORT = 5432

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
SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
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
        ssl_mode=dict(type="str", choices=SSL_MODES),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=10),
        schema=dict(type="str"),
    )


def pg_mutually_exclusive() -> list[list[str]]:
    return [["database_url", name] for name in DISCRETE_OPTIONS]


@dataclass
class ConnSpec:
    """Where and how to connect; ``password`` is never rendered by ``describe()``/``masked_url``."""

    host: str | None = None
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    schema: str = DEFAULT_SCHEMA
    params: dict[str, str] = field(default_factory=dict)
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


def _userinfo_outside_netloc(parts: SplitResult) -> bool:
    """True when an unencoded ``/``, ``?`` or ``#`` in the password pushed the ``@`` out of the authority.

    A real URL names a database (``/<db>``) before its query, so an ``@`` in the
    query after an empty path, or in the path or fragment, belongs to the userinfo.
    """
    if "@" in parts.netloc:
        return False
    return "@" in parts.path + parts.fragment or ("@" in parts.query and not parts.path)


def mask_database_url(url: str) -> str:
    """``url`` with its password (userinfo and ``password=`` parameters) replaced by ``MASK``.

    A password with an unencoded ``/``, ``?`` or ``#`` makes the URL parse with the
    ``@`` outside the authority; the whole text up to the last ``@`` is then taken as
    user information and masked (a display may over-mask, it never shows a password).
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return redact(url)
    out = url
    scheme, sep, rest = url.partition("://")
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            out = out.replace(netloc, f"{user}:{MASK}@{hostinfo}", 1)
    elif sep and _userinfo_outside_netloc(parts):
        userinfo, _at, tail = rest.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            out = f"{scheme}://{user}:{MASK}@{tail}"
    return re.sub(r"([?&](?:password|sslpassword)=)[^&#]*", rf"\g<1>{MASK}", out)


ENCODE_HINT = (
    "if the user name or password contains any of : / ? # @ % [ ], percent-encode them "
    "(%3A %2F %3F %23 %40 %25 %5B %5D), as Prisma requires"
)


def _int(value: str, what: str, masked: str) -> int:
    try:
        number = int(value)
    except ValueError:
        # The text is not echoed: with an unencoded password it would be part of the password.
        raise RingHubError(f"invalid {what} in database_url {masked} ({ENCODE_HINT})") from None
    return number


def parse_database_url(url: str, schema: str | None = None) -> ConnSpec:
    """Parse a Prisma ``postgresql://`` / ``postgres://`` URL into a ``ConnSpec``.

    ``schema`` (an explicit option) wins over the URL's ``schema=`` parameter.
    """
    masked = mask_database_url(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise RingHubError(f"database_url is not a valid URL ({redact(str(exc))}): {masked}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise RingHubError(f"database_url must start with postgresql:// or postgres://, got {masked}")
    if _userinfo_outside_netloc(parts):
        raise RingHubError(f"database_url {masked} does not parse: {ENCODE_HINT}")
    spec = ConnSpec(source="database_url", masked_url=masked)
    userinfo, _at, hostinfo = parts.netloc.rpartition("@")
    if userinfo:
        user, sep, password = userinfo.partition(":")
        spec.user = unquote(user) or None
        if sep:
            spec.password = unquote(password)
    port_text = ""
    if hostinfo.startswith("["):
        host, _bracket, rest = hostinfo[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _colon, port_text = hostinfo.partition(":")
    spec.host = unquote(host) or None
    spec.port = _int(port_text, "port", masked) if port_text else DEFAULT_PORT
    if not 0 < spec.port < 65536:
        raise RingHubError(f"invalid port {spec.port} in database_url {masked}")
    path = parts.path.lstrip("/")
    if path:
        spec.dbname = unquote(path)
    url_schema: str | None = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            url_schema = value
        if key in PRISMA_ONLY_PARAMS:
            spec.dropped_params.append(key)
            continue
        if key not in LIBPQ_PARAMS:
            spec.dropped_params.append(key)
            spec.warnings.append(f"database_url query parameter {key!r} is unknown to libpq; it was ignored")
            continue
        if key == "host":
            spec.host = value  # a Unix socket directory, as Prisma and libpq read it
        elif key == "port":
            spec.port = _int(value, "port", masked)
        elif key == "user":
            spec.user = value
        elif key == "password":
            spec.password = value
        elif key == "dbname":
            spec.dbname = value
        else:
            spec.params[key] = value
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


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (always quoted, so case and symbols are kept)."""
    if "\x00" in name:
        raise RingHubError(f"invalid identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def server_version_num(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW server_version_num")
        return int(cur.fetchone()[0])


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
