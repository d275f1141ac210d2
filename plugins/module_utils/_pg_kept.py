# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kept schemas: the undo window of pg_schema_reset and pg_schema_undo (private to the collection).

A reset with ``keep_previous`` does not drop the hub's schema: it renames it to
``<schema>_before_reset_<YYYYMMDD>_<HHMMSS>_utc`` in the reset transaction, and
an undo renames the schema it replaces to ``<schema>_before_undo_<...>_utc``.
A kept schema is unreachable: every privilege on it is revoked, its owner's own
included (``nspacl`` is the empty ACL ``{}``), so no role but a superuser can
resolve a name in it, and the hub never reads stale data from it. Its owner may
still rename and drop it (that needs ownership, not privileges).

Each kept schema is recorded in the database comment, beside the environment
marker, as one line ``ringhub.kept=<JSON>``: ``name``, ``schema`` (the hub
schema it was), ``by`` (``reset`` or ``undo``), ``kept_at`` and ``until`` (ISO
UTC, the server's clock), ``rows`` (table: rows) and ``total_rows``. The
comment is the record of truth: a schema that only looks like a kept one is
never touched, and a record whose schema is gone is cleaned up by the next
reset or purge.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import sql

KEPT_KEY = "ringhub.kept"
DEFAULT_KEEP_FOR = "7d"
KEEP_REASONS = ("reset", "undo")
MAX_IDENTIFIER = 63
_KEPT_LINE_RE = re.compile(r"^ringhub\.kept=(.*)$", re.M)
_RETENTION_PART_RE = re.compile(r"(\d+)\s*(w|d|h|min|m|s)")
_RETENTION_RE = re.compile(r"^\s*(?:\d+\s*(?:w|d|h|min|m|s)\s*)+$")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}


def parse_retention(text: str, option: str = "keep_previous_for") -> datetime.timedelta:
    """``7d``, ``36h``, ``1d12h``, ``2w``, ``90min``/``90m``, ``3600s`` as a positive ``timedelta``."""
    value = str(text or "")
    if not _RETENTION_RE.match(value):
        raise RingHubError(
            f"{option} {text!r} must be a duration such as 7d, 36h, 1d12h, 2w, 90m or 3600s "
            "(w weeks, d days, h hours, m or min minutes, s seconds)"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _RETENTION_PART_RE.findall(value))
    if seconds <= 0:
        raise RingHubError(f"{option} {text!r} must be longer than zero")
    return datetime.timedelta(seconds=seconds)


def kept_name(schema: str, reason: str, when: datetime.datetime, taken: set[str] | None = None) -> str:
    """``<schema>_before_<reason>_<YYYYMMDD>_<HHMMSS>_utc``, with ``_2``, ``_3``... when ``taken`` has it.

    All lower case: the name can be typed in psql without quotes.
    """
    base = f"{schema}_before_{reason}_{when.astimezone(datetime.UTC):%Y%m%d_%H%M%S}_utc"
    name, n = base, 1
    while taken and name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def kept_name_problem(schema: str) -> str | None:
    """Why ``schema`` cannot be kept under a kept name (None when it can)."""
    longest = kept_name(schema, "reset", datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)) + "_99"
    if len(longest.encode()) > MAX_IDENTIFIER:
        return (
            f"schema {schema!r} is too long to be kept: its kept name {longest!r} would pass PostgreSQL's "
            f"{MAX_IDENTIFIER}-byte limit of names"
        )
    return None


def iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.UTC)


@dataclass
class KeptRecord:
    """One ``ringhub.kept=`` line of the database comment."""

    name: str
    schema: str
    by: str
    kept_at: str
    until: str
    rows: dict[str, int | None] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(n or 0 for n in self.rows.values())

    def expired(self, now: datetime.datetime) -> bool:
        return parse_iso(self.until) <= now

    def line(self) -> str:
        data = {"name": self.name, "schema": self.schema, "by": self.by, "kept_at": self.kept_at,
                "until": self.until, "total_rows": self.total_rows, "rows": self.rows}  # fmt: skip
        return f"{KEPT_KEY}={json.dumps(data, separators=(',', ':'), sort_keys=False)}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.schema, "by": self.by, "kept_at": self.kept_at,
                "until": self.until, "rows": dict(self.rows), "total_rows": self.total_rows}  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> KeptRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        record = cls(
            name=str(data["name"]),
            schema=str(data["schema"]),
            by=str(data.get("by", "reset")),
            kept_at=str(data["kept_at"]),
            until=str(data["until"]),
            rows={str(k): (None if v is None else int(v)) for k, v in dict(data.get("rows") or {}).items()},
        )
        parse_iso(record.kept_at)
        parse_iso(record.until)
        return record


def parse_kept(comment: str | None) -> tuple[list[KeptRecord], list[str]]:
    """The kept-schema records of a database comment, and a warning for each line that does not parse."""
    records: list[KeptRecord] = []
    warnings: list[str] = []
    for text in _KEPT_LINE_RE.findall(comment or ""):
        try:
            records.append(KeptRecord.from_json(text))
        except (ValueError, KeyError, TypeError) as exc:
            warnings.append(f"a {KEPT_KEY} line of the database comment does not parse ({exc}); it was ignored")
    return records, warnings


def comment_with_kept(
    comment: str | None, add: Iterable[KeptRecord] = (), remove: Collection[str] = frozenset()
) -> str:
    """``comment`` with the records named in ``remove`` taken out and ``add`` appended (other lines kept)."""
    out: list[str] = []
    for line in (comment or "").splitlines():
        match = _KEPT_LINE_RE.match(line)
        if match:
            try:
                if KeptRecord.from_json(match.group(1)).name in remove:
                    continue
            except (ValueError, KeyError, TypeError):
                pass
        out.append(line)
    out += [record.line() for record in add]
    return "\n".join(out)


# -- the catalog -------------------------------------------------------------------------------

_SCHEMAS_SQL = """
SELECT n.nspname, pg_get_userbyid(n.nspowner),
       coalesce((SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
                 WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'S', 'p')), 0)::bigint,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p'))::int,
       n.nspacl IS NOT NULL AND cardinality(n.nspacl) = 0
FROM pg_namespace n WHERE n.nspname = ANY(%s)
"""
_FULL_ACL_SQL = """
SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END, g.privilege_type, g.is_grantable
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) g
WHERE n.nspname = %s
ORDER BY 1, 2
"""


def schema_sizes(cur: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {owner, size_bytes, tables, unreachable}}`` of the schemas of ``names`` that exist."""
    if not names:
        return {}
    cur.execute(_SCHEMAS_SQL, (list(names),))
    return {
        r[0]: {"owner": r[1], "size_bytes": int(r[2]), "tables": int(r[3]), "unreachable": bool(r[4])}
        for r in cur.fetchall()
    }


def kept_listing(
    cur: Any, records: list[KeptRecord], now: datetime.datetime, schema: str | None = None
) -> list[dict[str, Any]]:
    """Every record (of ``schema``, when given), newest first, with ``exists``, ``size_bytes``,
    ``expired`` and ``unreachable`` as the catalog has them now."""
    chosen = [r for r in records if schema is None or r.schema == schema]
    found = schema_sizes(cur, [r.name for r in chosen])
    out = []
    for record in sorted(chosen, key=lambda r: r.kept_at, reverse=True):
        info = found.get(record.name)
        out.append(
            dict(
                record.describe(),
                exists=info is not None,
                size_bytes=info["size_bytes"] if info else 0,
                tables=info["tables"] if info else 0,
                unreachable=info["unreachable"] if info else None,
                expired=record.expired(now),
            )
        )
    return out


def server_now(cur: Any) -> datetime.datetime:
    """The server's transaction time (``now()``), in UTC."""
    cur.execute("SELECT now()")
    return cur.fetchone()[0].astimezone(datetime.UTC)


def existing_schemas(cur: Any) -> set[str]:
    cur.execute("SELECT nspname FROM pg_namespace")
    return {r[0] for r in cur.fetchall()}


def full_acl(cur: Any, schema: str) -> list[tuple[str, str, bool]]:
    """``(grantee, privilege, grantable)`` of every privilege on ``schema``, its owner's own included."""
    cur.execute(_FULL_ACL_SQL, (schema,))
    return [(r[0], r[1], bool(r[2])) for r in cur.fetchall()]


def _role(name: str) -> Any:
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def make_unreachable(cur: Any, schema: str) -> list[str]:
    """Revoke every privilege on ``schema`` (PUBLIC, every grantee, the owner's own); the roles revoked from.

    The schema's ACL is then the empty ``{}``; anything else raises.
    """
    cur.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (schema,))
    owner = cur.fetchone()[0]
    grantees = sorted({g for g, _p, _o in full_acl(cur, schema)} | {"PUBLIC", owner})
    cur.execute(
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM {} CASCADE").format(
            sql.Identifier(schema), sql.SQL(", ").join(_role(g) for g in grantees)
        )
    )
    left = full_acl(cur, schema)
    if left:
        raise RingHubError(f"privileges on the kept schema {schema!r} are left after revoking them all: {left}")
    return grantees


def grant_acl(cur: Any, schema: str, acl: list[tuple[str, str, bool]]) -> None:
    """Grant ``acl`` (``full_acl()`` of another schema) on ``schema``, then check it is exactly that."""
    for grantee, privilege, grantable in acl:
        if privilege not in ("USAGE", "CREATE"):
            raise RingHubError(f"unexpected schema privilege {privilege!r}")
        cur.execute(
            sql.SQL("GRANT {} ON SCHEMA {} TO {}{}").format(
                sql.SQL(privilege), sql.Identifier(schema), _role(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )  # fmt: skip
    now = full_acl(cur, schema)
    if sorted(now) != sorted(acl):
        raise RingHubError(f"the privileges of schema {schema!r} are {now} after granting {acl}")


def outside_dependents(cur: Any, schema: str) -> list[str]:
    """Objects in other schemas that ``DROP SCHEMA <schema> CASCADE`` would drop or alter."""
    from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import _OUTSIDE_SQL

    cur.execute(_OUTSIDE_SQL, {"s": schema})
    return [r[0] for r in cur.fetchall()]


def purge_expired(
    cur: Any, records: list[KeptRecord], schema: str, now: datetime.datetime, names: set[str] | None = None
) -> tuple[list[dict[str, Any]], set[str], list[str]]:
    """Drop the kept schemas of ``schema`` past their retention (or those named in ``names``, whatever
    their retention); the ones dropped, the record names to remove from the comment, warnings.

    A record whose schema no longer exists is removed; a kept schema that objects of other schemas
    depend on is left (with a warning), never dropped with them.
    """
    dropped: list[dict[str, Any]] = []
    remove: set[str] = set()
    warnings: list[str] = []
    chosen = [r for r in records if r.schema == schema and (r.name in names if names is not None else r.expired(now))]
    sizes = schema_sizes(cur, [r.name for r in chosen])
    for record in chosen:
        if record.name not in sizes:
            remove.add(record.name)
            warnings.append(f"kept schema {record.name!r} no longer exists; its record was removed")
            continue
        outside = outside_dependents(cur, record.name)
        if outside:
            warnings.append(
                f"kept schema {record.name!r} was not dropped: objects in other schemas depend on it "
                f"({', '.join(outside)})"
            )
            continue
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(record.name)))
        remove.add(record.name)
        dropped.append(dict(record.describe(), size_bytes=sizes[record.name]["size_bytes"]))
    return dropped, remove, warnings
