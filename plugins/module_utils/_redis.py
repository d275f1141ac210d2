# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis connection options of the collection (private to the collection).

``redis_argument_spec()`` is the argument spec that pairs with the
``threadring.ringhub.redis`` doc fragment. ``resolve_connection()`` turns module
parameters (a ``redis_url`` and/or discrete options) into a ``RedisConnection``
that names its endpoint without the password and opens redis-py clients to the
endpoint or to any other node of the same deployment (cluster primaries).
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.threadring.ringhub.plugins.module_utils._common import Library, RingHubError, redact

REDIS_IMP_ERR: str | None = None
try:
    import redis
    import redis.backoff
    import redis.connection
    import redis.exceptions
    import redis.retry

    HAS_REDIS = True
except ImportError:  # pragma: no cover - exercised only without redis-py
    REDIS_IMP_ERR = traceback.format_exc()
    HAS_REDIS = False

REDIS = Library("redis", HAS_REDIS, REDIS_IMP_ERR)

DEFAULT_PORT = 6379
DEFAULT_TIMEOUT = 30.0
URL_SCHEMES = ("redis", "rediss", "unix")
URL_QUERY_PARAMS = ("db", "password", "ssl_cert_reqs")
CLUSTER_MODES = ("auto", "cluster", "standalone")
_ENCODE_HINT = "or leave it out of the URL and give it with the password option"


def redis_argument_spec() -> dict[str, Any]:
    """Connection options shared by every Redis module (doc fragment ``threadring.ringhub.redis``)."""
    return dict(
        redis_url=dict(type="str", no_log=True, fallback=(env_fallback, ["REDIS_URL"])),
        host=dict(type="str"),
        port=dict(type="int"),
        unix_socket=dict(type="path"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        db=dict(type="int"),
        tls=dict(type="bool"),
        ca_cert=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        cluster_mode=dict(type="str", default="auto", choices=list(CLUSTER_MODES)),
    )


REDIS_MUTUALLY_EXCLUSIVE = [("host", "unix_socket")]
REDIS_REQUIRED_TOGETHER = [("client_cert", "client_key")]


@dataclass(frozen=True)
class RedisConnection:
    """Where and how to connect; ``repr()``, ``str()`` and ``endpoint`` never show the password."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    validate_certs: bool = True
    timeout: float = DEFAULT_TIMEOUT
    cluster_mode: str = "auto"

    @property
    def endpoint(self) -> str:
        """``redis://user@host:port``, ``rediss://...`` or ``unix:///path``: where, as whom, no secret."""
        user = f"{self.username}@" if self.username else ""
        if self.unix_socket:
            return f"unix://{user}{self.unix_socket}"
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    @property
    def user(self) -> str:
        return self.username or "default"

    def __str__(self) -> str:
        return self.endpoint

    def for_node(self, host: str, port: int) -> RedisConnection:
        """The same credentials and TLS settings for another node (a cluster primary)."""
        return replace(self, host=host, port=port, unix_socket=None)

    def redis_kwargs(self, db: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis``."""
        kwargs: dict[str, Any] = {
            "db": self.db if db is None else db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "protocol": 2,
            "decode_responses": False,
            # fail fast: a refused connection or a wrong password does not heal in a second
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        }
        if self.unix_socket:
            kwargs["unix_socket_path"] = self.unix_socket
        else:
            kwargs.update(host=self.host, port=self.port)
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=self.ca_cert,
                ssl_certfile=self.client_cert,
                ssl_keyfile=self.client_key,
                ssl_cert_reqs="required" if self.validate_certs else "none",
                ssl_check_hostname=self.validate_certs,
            )
        return kwargs

    def connect(self, db: int | None = None) -> Any:
        """A single-connection redis-py client, already checked with PING."""
        client = None
        try:
            # a single-connection client connects in its constructor
            client = redis.Redis(single_connection_client=True, **self.redis_kwargs(db))
            client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            if client is not None:
                client.close()
            raise self.error("cannot connect to", exc) from exc
        return client

    def error(self, action: str, exc: BaseException | str, **details: Any) -> RingHubError:
        """A ``RingHubError`` naming the endpoint and the reason, with the password removed."""
        reason = redact(_reason(exc), [self.password])
        details.setdefault("endpoint", self.endpoint)
        return RingHubError(f"{action} {self.endpoint}: {reason}", **details)


def _reason(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    text = str(exc).strip() or type(exc).__name__
    if HAS_REDIS and isinstance(exc, redis.exceptions.AuthenticationError):
        return f"authentication failed ({text})"
    if HAS_REDIS and isinstance(exc, redis.exceptions.TimeoutError):
        return f"timed out ({text})"
    return text


def parse_redis_url(url: str) -> dict[str, Any]:
    """Parse ``redis://``, ``rediss://`` and ``unix://`` URLs into ``RedisConnection`` fields.

    ``redis://[user[:password]@]host[:port][/db]``, ``rediss://`` likewise with TLS,
    ``unix://[user[:password]@]/path/to/redis.sock[?db=N]``. Query parameters
    ``db``, ``password`` and ``ssl_cert_reqs=none`` are understood; others are rejected.
    The checks come first and quote nothing of the URL; redis-py's own parser
    (``redis.connection.parse_url``) then reads it.
    """
    # Nothing of the URL is echoed in these errors: a password with an unencoded / ? # ends the
    # host part early, and pieces of it would show up as a "port", a "database" or a path.
    authority = url.split("://", 1)[1] if "://" in url else ""
    if "@" in re.split(r"[/?#]", authority, maxsplit=1)[-1] and re.search(r"[/?#]", authority):
        raise RingHubError(
            "redis_url is not a valid URL: an '@' follows a '/', '?' or '#', so the user name or password"
            f" holds one of them unencoded; percent-encode it ({_ENCODE_HINT})"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise RingHubError(
            "redis_url is not a valid URL: the port is not a number from 0 to 65535"
            f" (a password with / ? # @ : must be percent-encoded, {_ENCODE_HINT})"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise RingHubError(f"redis_url must start with redis://, rediss:// or unix://, not {scheme or '(none)'}://")
    query = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    for name, value in query.items():
        if name not in URL_QUERY_PARAMS:
            raise RingHubError(f"redis_url has an unsupported query parameter {name!r} (supported: db, ssl_cert_reqs)")
        if name == "db":
            _db_number(value)
        elif name == "ssl_cert_reqs" and value.lower() not in ("none", "optional", "required"):
            raise RingHubError("redis_url ssl_cert_reqs must be none, optional or required")
    if scheme == "unix" and not parts.path:
        raise RingHubError("redis_url unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
    if scheme != "unix" and parts.path.strip("/"):
        _db_number(parts.path.strip("/"))
    parsed = redis.connection.parse_url(url[: len(parts.scheme)].lower() + url[len(parts.scheme) :])
    out: dict[str, Any] = {key: parsed[key] for key in ("username", "password", "host", "port", "db") if key in parsed}
    if "password" in query:
        out["password"] = query["password"]  # the query's password wins over the user information's
    if scheme == "unix":
        out["unix_socket"] = parsed["path"]
    else:
        out["tls"] = scheme == "rediss"
    if "ssl_cert_reqs" in query:
        out["validate_certs"] = query["ssl_cert_reqs"].lower() != "none"
    return out


def _db_number(text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        # the text is not shown: it may be the tail of a password with an unencoded '/'
        raise RingHubError("the Redis database in redis_url must be a number (redis://host:port/N or ?db=N)") from None
    if db < 0:
        raise RingHubError("the Redis database number must be 0 or more")
    return db


def resolve_connection(params: dict[str, Any]) -> RedisConnection:
    """Build the connection from module parameters.

    ``redis_url`` (or ``REDIS_URL``) gives the base; every discrete option that is
    set overrides the matching part of it. ``host`` selects TCP and ``unix_socket``
    a socket even when the URL says otherwise.
    """
    fields: dict[str, Any] = {}
    if params.get("redis_url"):
        fields.update(parse_redis_url(params["redis_url"]))
    for name in ("port", "username", "password", "db", "tls", "ca_cert", "client_cert", "client_key"):
        if params.get(name) is not None:
            fields[name] = params[name]
    if params.get("host"):
        fields["host"] = params["host"]
        fields.pop("unix_socket", None)
    if params.get("unix_socket"):
        fields["unix_socket"] = params["unix_socket"]
    if params.get("validate_certs") is False:
        fields["validate_certs"] = False
    if params.get("timeout") is not None:
        if params["timeout"] <= 0:
            raise RingHubError("timeout must be more than 0 seconds")
        fields["timeout"] = float(params["timeout"])
    if params.get("cluster_mode"):
        fields["cluster_mode"] = params["cluster_mode"]
    if fields.get("db", 0) < 0:
        raise RingHubError("db must be 0 or more")
    if fields.get("unix_socket") and fields.get("tls"):
        raise RingHubError("tls is not available over a Unix socket (unix_socket with tls=true or rediss://)")
    if fields.get("client_cert") or fields.get("ca_cert"):
        if not fields.get("tls"):
            raise RingHubError("ca_cert, client_cert and client_key need tls=true (or a rediss:// URL)")
    return RedisConnection(**fields)
