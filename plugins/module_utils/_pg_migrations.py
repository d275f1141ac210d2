# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prisma migrations on disk: loading, checksums, and the statements that cannot run in one transaction.

A Prisma Migrate directory holds ``<timestamp>_<name>/migration.sql`` entries
applied in lexical order and a ``migration_lock.toml`` naming the provider. The
checksum Prisma records is the lowercase hex SHA-256 of the file bytes.

``scan_sql()`` blanks out comments, string literals, dollar-quoted bodies and
quoted identifiers before it looks at statements, so a keyword inside a comment,
a string or a function body is never mistaken for a statement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field

from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, RingHubError

MIGRATION_FILE = "migration.sql"
LOCK_FILE = "migration_lock.toml"
_PROVIDER_RE = re.compile(r'^\s*provider\s*=\s*"([^"]*)"\s*(?:#.*)?$', re.M)
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass
class Migration:
    name: str
    path: str
    checksum: str
    sql: str = field(repr=False)
    size: int = 0

    def summary(self) -> dict[str, object]:
        return {"name": self.name, "checksum": self.checksum, "path": self.path, "size": self.size}


@dataclass
class Statement:
    line: int
    words: list[str]
    start: int = 0
    end: int = 0


def _read(path: str) -> tuple[bytes, str]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise RingHubError(f"cannot read migration file {path}: {exc.strerror}", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RingHubError(
            f"migration file {path} is not valid UTF-8 (byte {exc.start}: {exc.reason})", path=path
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        raise RingHubError(f"migration file {path} contains a NUL byte", path=path)
    return data, text


def _migration(name: str, path: str) -> Migration:
    data, text = _read(path)
    return Migration(name=name, path=path, checksum=hashlib.sha256(data).hexdigest(), sql=text, size=len(data))


def load_migrations_dir(directory: str) -> list[Migration]:
    """Every ``<dir>/<name>/migration.sql`` in lexical order of ``<name>``, checked."""
    if not os.path.exists(directory):
        raise RingHubError(f"migrations_dir {directory} does not exist", path=directory)
    if not os.path.isdir(directory):
        raise RingHubError(f"migrations_dir {directory} is not a directory", path=directory)
    lock = os.path.join(directory, LOCK_FILE)
    if not os.path.isfile(lock):
        raise RingHubError(f"{lock} is missing: {directory} is not a Prisma migrations directory", path=directory)
    lock_text = _read(lock)[1]
    match = _PROVIDER_RE.search(lock_text)
    provider = match.group(1) if match else None
    if provider != "postgresql":
        raise RingHubError(f"{lock} names provider {provider!r}; these migrations are not for PostgreSQL", path=lock)
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise RingHubError(f"cannot list migrations_dir {directory}: {exc.strerror}", path=directory) from None
    migrations: list[Migration] = []
    for entry in entries:
        full = os.path.join(directory, entry)
        if entry.startswith(".") or not os.path.isdir(full):
            continue
        sql_path = os.path.join(full, MIGRATION_FILE)
        if not os.path.isfile(sql_path):
            raise RingHubError(f"migration directory {full} has no {MIGRATION_FILE}", path=full)
        migrations.append(_migration(entry, sql_path))
    if not migrations:
        raise RingHubError(f"migrations_dir {directory} holds no <name>/{MIGRATION_FILE}", path=directory)
    return migrations


def load_sql_files(paths: list[str]) -> list[Migration]:
    """SQL files in the order given; a ``.../<name>/migration.sql`` is named ``<name>``, others by file stem."""
    if not paths:
        raise RingHubError("sql_files is empty")
    migrations: list[Migration] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.isfile(path):
            raise RingHubError(f"sql file {path} does not exist or is not a file", path=path)
        base = os.path.basename(path)
        if base == MIGRATION_FILE:
            name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        else:
            name = base[:-4] if base.endswith(".sql") else base
        if name in seen:
            raise RingHubError(f"two sql_files share the migration name {name!r}", path=path)
        seen.add(name)
        migrations.append(_migration(name, path))
    return migrations


def blank_sql(sql: str) -> str:
    """``sql`` with comments, literals, dollar-quoted bodies and quoted identifiers blanked.

    Newlines are kept (line numbers stay right); a blanked region becomes spaces,
    a quoted identifier becomes ``"_"`` padding so it stays one word-ish token.
    """
    out: list[str] = []
    i, n = 0, len(sql)

    def blank(segment: str) -> str:
        return "".join("\n" if c == "\n" else " " for c in segment)

    while i < n:
        c = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if c == "-" and nxt == "-":
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(blank(sql[i:end]))
            i = end
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(sql[i:j]))
            i = j
        elif c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            j = i + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            j = min(j + 1, n)
            out.append(blank(sql[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n:
                if sql[j] == '"':
                    if j + 1 < n and sql[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            j = min(j + 1, n)
            segment = sql[i:j]
            out.append("".join("\n" if ch == "\n" else "_" for ch in segment))
            i = j
        elif c == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
            match = _DOLLAR_TAG_RE.match(sql, i)
            if match:
                tag = match.group(0)
                end = sql.find(tag, match.end())
                end = n if end < 0 else end + len(tag)
                out.append(blank(sql[i:end]))
                i = end
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_statements(sql: str) -> list[Statement]:
    """Statements of ``sql`` (after blanking) with the line each starts on and its upper-case words.

    psql meta-commands (a line starting with a backslash) come back as one-word
    statements such as ``\\connect``.
    """
    code = blank_sql(sql)
    statements: list[Statement] = []
    line, last = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, last
        line += code.count("\n", last, pos)
        last = pos
        return line

    words: list[str] = []
    start_line = start_pos = 0
    for match in re.finditer(r"(?m)^[ \t]*\\([A-Za-z!?]+)[^\n]*|[A-Za-z_][A-Za-z0-9_$]*|;", code):
        token = match.group(0)
        if match.group(1):
            statements.append(
                Statement(
                    line=line_at(match.start()), words=["\\" + match.group(1)], start=match.start(), end=match.end()
                )
            )
        elif token == ";":
            # SQL-standard bodies (BEGIN ATOMIC ... END) contain semicolons.
            if "BEGIN" in words and "ATOMIC" in words and words[-1] != "END":
                continue
            if words:
                statements.append(Statement(line=start_line, words=words, start=start_pos, end=match.end()))
            words = []
        else:
            if not words:
                start_line, start_pos = line_at(match.start()), match.start()
            words.append(token.upper())
    if words:
        statements.append(Statement(line=start_line, words=words, start=start_pos, end=len(code)))
    return sorted(statements, key=lambda s: s.line)


def _problem(words: list[str]) -> str | None:
    """Why a statement cannot run inside the reset transaction, or None."""
    if not words:
        return None
    first = words[0]
    head = " ".join(words[:3])
    if first.startswith("\\"):
        return f"psql meta-command {first} (not SQL)"
    if first in ("BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT") or head.startswith("START TRANSACTION"):
        return f"transaction control statement {first} (the reset applies every migration in one transaction)"
    if head.startswith("PREPARE TRANSACTION"):
        return "PREPARE TRANSACTION"
    if first in ("CREATE", "DROP") and "INDEX" in words[1:3] and "CONCURRENTLY" in words[2:4]:
        return f"{first} INDEX CONCURRENTLY"
    if first == "REINDEX" and "CONCURRENTLY" in words:
        return "REINDEX CONCURRENTLY"
    if first == "ALTER" and words[1:2] == ["TABLE"] and "DETACH" in words and "CONCURRENTLY" in words:
        return "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
    if first in ("CREATE", "DROP") and words[1:2] and words[1] in ("DATABASE", "TABLESPACE", "SUBSCRIPTION"):
        return f"{first} {words[1]}"
    if first == "ALTER" and words[1:2] == ["SUBSCRIPTION"]:
        return "ALTER SUBSCRIPTION"
    if first == "ALTER" and words[1:2] == ["DATABASE"] and "TABLESPACE" in words:
        return "ALTER DATABASE ... SET TABLESPACE"
    if first == "ALTER" and words[1:2] == ["SYSTEM"]:
        return "ALTER SYSTEM"
    if first == "VACUUM":
        return "VACUUM"
    if first == "CLUSTER" and len(words) == 1:
        return "CLUSTER without a table"
    if first == "COPY" and ("STDIN" in words or "STDOUT" in words):
        return "COPY FROM STDIN / TO STDOUT (needs a client copy stream)"
    return None


# Plain transaction brackets (Prisma writes BEGIN; ... COMMIT; around enum changes). Inside the
# one reset transaction they are redundant: everything is atomic already.
TRANSACTION_BRACKETS = frozenset(
    {
        ("BEGIN",),
        ("BEGIN", "TRANSACTION"),
        ("BEGIN", "WORK"),
        ("START", "TRANSACTION"),
        ("COMMIT",),
        ("COMMIT", "TRANSACTION"),
        ("COMMIT", "WORK"),
        ("END",),
        ("END", "TRANSACTION"),
        ("END", "WORK"),
    }
)


def check_migration(migration: Migration, strip_transaction_control: bool = False) -> list[str]:
    """Problems of one migration, each naming file and line."""
    problems = []
    for statement in split_statements(migration.sql):
        if strip_transaction_control and tuple(statement.words) in TRANSACTION_BRACKETS:
            continue
        reason = _problem(statement.words)
        if reason:
            problems.append(f"{migration.path} line {statement.line}: {reason} cannot run inside a transaction")
    return problems


def strip_transaction_brackets(migration: Migration) -> tuple[Migration, list[int]]:
    """``migration`` with its plain ``BEGIN;``/``COMMIT;`` statements blanked (lines kept), and their line numbers.

    A new ``Migration`` is returned (the given one is left as it is); its
    checksum stays the one of the file bytes.
    """
    sql = migration.sql
    removed = [st for st in split_statements(sql) if tuple(st.words) in TRANSACTION_BRACKETS]
    for st in reversed(removed):
        segment = sql[st.start : st.end]
        sql = sql[: st.start] + "".join("\n" if c == "\n" else " " for c in segment) + sql[st.end :]
    return dataclasses.replace(migration, sql=sql), [st.line for st in removed]


def prepare_migrations(
    migrations: list[Migration], strip_transaction_control: bool = False
) -> tuple[list[Migration], dict[str, list[int]]]:
    """The migrations as they run in the reset transaction, and the lines blanked per migration name.

    With ``strip_transaction_control`` plain transaction brackets are blanked
    (``strip_transaction_brackets``); otherwise the migrations come back as they are.
    """
    if not strip_transaction_control:
        return list(migrations), {}
    prepared: list[Migration] = []
    stripped: dict[str, list[int]] = {}
    for migration in migrations:
        migration, lines = strip_transaction_brackets(migration)
        prepared.append(migration)
        if lines:
            stripped[migration.name] = lines
    return prepared, stripped


def check_migrations(migrations: list[Migration], strip_transaction_control: bool = False) -> None:
    """Raise ``RingHubError`` listing every statement that cannot run in the reset transaction."""
    problems = [p for m in migrations for p in check_migration(m, strip_transaction_control)]
    if problems:
        hint = ""
        if any("transaction control statement" in p for p in problems) and not strip_transaction_control:
            hint = (
                " (plain BEGIN;/COMMIT; brackets, as Prisma writes around enum changes, can run inside the reset "
                "transaction with strip_transaction_control: true)"
            )
        raise NothingChanged(
            "migrations contain statements that cannot run in the one reset transaction: " + "; ".join(problems) + hint,
            problems=problems,
        )
