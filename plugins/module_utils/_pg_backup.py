# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_schema_reset's verified backup: the client tools, the backup directory, ``pg_dump`` and its read-back.

``find_tools()`` picks ``pg_dump`` and ``pg_restore`` and refuses a ``pg_dump``
older than the server; ``check_backup_dir()`` creates and removes a probe file
(a real write test, root included); ``make_backup()`` runs ``pg_dump
--format=custom`` of the whole database into a new 0600 file (optionally in an
exported snapshot), reads it back with ``pg_restore --list`` and requires the
data of every table of the schema in it. A failed backup leaves no file.

Both formats are compressed with ``pg_dump --compress=<backup_compress>`` (default ``1``, zlib's
fastest level); ``parse_compress()`` checks the value and ``check_compress_supported()`` refuses a
method (``lz4``, ``zstd:3`` ...) that the ``pg_dump`` found, older than 16, does not know.

``fmt="directory"`` makes a directory-format dump instead (``pg_dump --format=directory
--jobs=N``: one file per table, written by N parallel connections in the same snapshot)
into a new 0700 directory ``<name>.dir`` whose files are 0600, verified the same way.
``backup_sha256()`` is the SHA-256 of a file, or for a directory the SHA-256 of its
manifest: one ``<sha256 of the file>  <name>`` line per file, names in byte order,
as ``cd DIR && LC_ALL=C sha256sum $(LC_ALL=C ls) | sha256sum`` prints it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import (
    ConnSpec,
    connect,
    pg_error_text,
    psycopg2,
    sql,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import count_rows
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_progress import PROGRESS_INTERVAL, Progress


@dataclass
class Tools:
    pg_dump: str
    pg_restore: str
    pg_dump_version: str
    pg_dump_major: int


def tool_version(path: str) -> tuple[str, int]:
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise RingHubError(f"cannot run {path}: {exc.strerror}", path=path) from None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RingHubError(f"{path} --version gave no PostgreSQL version: {(proc.stdout + proc.stderr).strip()!r}")
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return version, int(match.group(1))


def _resolve_tool(name: str, option: str, given: str | None, near: str | None = None) -> str:
    if given:
        path = os.path.join(given, name) if os.path.isdir(given) else given
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RingHubError(f"{option} {given}: no executable {name} there", path=given)
        return path
    if near:
        sibling = os.path.join(os.path.dirname(near), name)
        if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
            return sibling
    found = shutil.which(name)
    if not found:
        raise RingHubError(
            f"{name} not found on PATH ({os.environ.get('PATH', '')}); install the PostgreSQL client "
            f"(same major version as the server or newer) or set {option}"
        )
    return found


def find_tools(
    pg_dump_path: str | None, pg_restore_path: str | None, server_version_num: int, server_version: str
) -> Tools:
    """The ``pg_dump`` and ``pg_restore`` to use (options, else beside each other, else on PATH), versions checked."""
    pg_dump = _resolve_tool("pg_dump", "pg_dump_path", pg_dump_path)
    pg_restore = _resolve_tool("pg_restore", "pg_restore_path", pg_restore_path, near=pg_dump)
    version, major = tool_version(pg_dump)
    server_major = server_version_num // 10000
    if major < server_major:
        raise RingHubError(
            f"{pg_dump} is version {version}, older than the server ({server_version}); pg_dump must be the "
            f"server's major version ({server_major}) or newer: install it or set pg_dump_path",
            pg_dump=pg_dump,
        )
    restore_major = tool_version(pg_restore)[1]
    if restore_major < major:
        raise RingHubError(f"{pg_restore} is older than {pg_dump} ({version}): it cannot read the backup")
    return Tools(pg_dump=pg_dump, pg_restore=pg_restore, pg_dump_version=version, pg_dump_major=major)


def check_backup_dir(path: str) -> dict[str, Any]:
    """The backup directory exists and a file can be created in it (a real probe, root included)."""
    if not os.path.exists(path):
        raise RingHubError(
            f"backup_dir {path} does not exist: create it (mode 0700, owned by the user running the module) "
            "or set backup_dir to an existing directory",
            path=path,
        )
    if not os.path.isdir(path):
        raise RingHubError(f"backup_dir {path} is not a directory", path=path)
    probe = os.path.join(path, f".ringhub-write-probe-{uuid.uuid4().hex}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RingHubError(f"backup_dir {path} is not writable: {exc.strerror}", path=path) from None
    usage = shutil.disk_usage(path)
    return {"path": path, "free_bytes": usage.free}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "db"


def _client_env(spec: ConnSpec, application_name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(spec.libpq_env())
    env["PGAPPNAME"] = application_name
    env["LC_ALL"] = "C"
    return env


def run_polled(
    cmd: list[str],
    env: dict[str, str],
    tick: Callable[[], None] | None = None,
    interval: float = PROGRESS_INTERVAL,
    during: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, env=env)``, calling ``during()`` once as soon
    as the process runs (work that overlaps it) and ``tick()`` every ``interval`` seconds while it runs
    (no polling without ``tick``). An exception of either kills the process."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            if during is not None:
                during()
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=interval if tick else None)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick()
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


BACKUP_FORMATS = ("custom", "directory")
DIRECTORY_SUFFIX = ".dir"

# pg_dump --compress: an integer level (every pg_dump; 0 is none, 1-9 zlib), or since pg_dump 16 a method
# with an optional level, within the range pg_dump 16 accepts for it.
DEFAULT_COMPRESS = "1"
COMPRESS_METHODS: dict[str, tuple[int, int]] = {"gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 22)}
COMPRESS_METHOD_MIN_PG_DUMP = 16
COMPRESS_ACCEPTED = (
    "an integer 0-9 (0: no compression, 1-9: zlib level; any pg_dump), or a method gzip, lz4 or zstd, alone or "
    f"with a level as gzip:1-9, lz4:1-12, zstd:1-22 (pg_dump {COMPRESS_METHOD_MIN_PG_DUMP} or later)"
)
_COMPRESS_RE = re.compile(r"^(?:(?P<level>\d+)|(?P<method>[a-z0-9]+)(?::(?P<detail>.*))?)$")


@dataclass(frozen=True)
class Compression:
    """A checked ``backup_compress``: ``value`` is what ``pg_dump --compress=`` gets."""

    value: str
    method: str  # none, gzip, lz4 or zstd
    level: int | None  # None: the method's default level
    min_pg_dump: int  # the oldest pg_dump major version that accepts ``value``


def parse_compress(value: Any) -> Compression:
    """``backup_compress`` checked: ``0``-``9``, or ``gzip``/``lz4``/``zstd`` with an optional ``:<level>``.

    Surrounding blanks and the case of a method name are forgiven; anything else raises a
    ``RingHubError`` that names the option, the value and what is accepted.
    """
    text = str(value).strip().lower() if value is not None else ""
    match = _COMPRESS_RE.match(text)

    def refuse(why: str) -> RingHubError:
        return RingHubError(f"backup_compress {value!r} {why}: give {COMPRESS_ACCEPTED}", option="backup_compress")

    if not match:
        raise refuse("is not a pg_dump compression")
    if match.group("level") is not None:
        level = int(match.group("level"))
        if level > 9:
            raise refuse("is not a compression level 0-9")
        return Compression(value=str(level), method="gzip" if level else "none", level=level, min_pg_dump=0)
    method, detail = match.group("method"), match.group("detail")
    if method not in COMPRESS_METHODS:
        raise refuse("names no compression method pg_dump knows")
    low, high = COMPRESS_METHODS[method]
    if detail is None:
        return Compression(value=method, method=method, level=None, min_pg_dump=COMPRESS_METHOD_MIN_PG_DUMP)
    if not re.fullmatch(r"\d+", detail) or not low <= int(detail) <= high:
        raise refuse(f"has no {method} level {low}-{high} after the colon")
    level = int(detail)
    return Compression(value=f"{method}:{level}", method=method, level=level, min_pg_dump=COMPRESS_METHOD_MIN_PG_DUMP)


def check_compress_supported(compression: Compression, tools: Tools) -> None:
    """Refuse a compression the ``pg_dump`` found does not understand (a method before pg_dump 16)."""
    if tools.pg_dump_major < compression.min_pg_dump:
        raise RingHubError(
            f"backup_compress {compression.value!r} is a compression method, which pg_dump accepts from version "
            f"{compression.min_pg_dump} on; {tools.pg_dump} is version {tools.pg_dump_version}, which accepts only "
            "an integer 0-9 (0: no compression, 1-9: zlib level): set backup_compress to one of those, or "
            f"pg_dump_path to a pg_dump {compression.min_pg_dump} or later",
            option="backup_compress",
            pg_dump=tools.pg_dump,
            pg_dump_version=tools.pg_dump_version,
        )


def file_sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def directory_files(path: str) -> list[str]:
    """The names of the files of a directory-format backup, in byte order; anything but regular files refused."""
    names = sorted(os.listdir(path), key=os.fsencode)
    for name in names:
        st = os.lstat(os.path.join(path, name))
        if not stat.S_ISREG(st.st_mode):
            raise RingHubError(f"backup directory {path} holds {name!r}, which is not a regular file", path=path)
    if "toc.dat" not in names:
        raise RingHubError(f"backup directory {path} has no toc.dat: it is not a pg_dump directory-format backup")
    return names


def backup_sha256(path: str) -> str:
    """SHA-256 of a backup file, or of a directory backup's manifest (see the module's docstring)."""
    if not os.path.isdir(path):
        return file_sha256(path)
    manifest = "".join(f"{file_sha256(os.path.join(path, name))}  {name}\n" for name in directory_files(path))
    return hashlib.sha256(manifest.encode()).hexdigest()


def backup_size(path: str) -> int:
    """Bytes of a backup file, or the sum of a directory backup's files."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def _tree_size(path: str) -> int:
    if not os.path.isdir(path):
        return _file_size(path)
    try:
        return sum(_file_size(os.path.join(path, name)) for name in os.listdir(path))
    except OSError:
        return 0


def _remove_backup(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _fsync_backup(path: str) -> None:
    """Flush the backup (a file, or a directory's files and the directory itself) to disk."""
    names = [os.path.join(path, n) for n in os.listdir(path)] + [path] if os.path.isdir(path) else [path]
    for name in names:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_target(backup_dir: str, base: str, fmt: str) -> str:
    """A new, empty backup file (0600) or directory (0700): never an existing one."""
    suffix = DIRECTORY_SUFFIX if fmt == "directory" else ".dump"
    path = os.path.join(backup_dir, base + suffix)
    n = 1
    while True:
        try:
            if fmt == "directory":
                os.mkdir(path, 0o700)
                os.chmod(path, 0o700)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                os.chmod(path, 0o600)
            return path
        except FileExistsError:
            n += 1
            path = os.path.join(backup_dir, f"{base}-{n}{suffix}")
        except OSError as exc:
            raise RingHubError(f"cannot create backup {path}: {exc.strerror}", path=path) from None


def make_backup(
    spec: ConnSpec,
    tools: Tools,
    backup_dir: str,
    schema: str,
    tables: list[str],
    snapshot: str | None = None,
    progress: Progress | None = None,
    application_name: str = "threadring.ringhub.backup",
    exclude_schemas: list[str] | None = None,
    fmt: str = "custom",
    jobs: int = 1,
    during: Callable[[], None] | None = None,
    compress: str = DEFAULT_COMPRESS,
) -> dict[str, Any]:
    """``pg_dump -Fc`` of the whole database, mode 0600, read back with ``pg_restore --list``.

    ``compress`` (``backup_compress``, see ``parse_compress``) is ``pg_dump --compress=``, in either format.

    ``fmt="directory"``: ``pg_dump -Fd --jobs=<jobs>`` into a new 0700 directory (its files 0600).
    ``during()`` runs once while ``pg_dump`` runs (for example the row counts of the snapshot, on the
    connection that exported it, which is idle meanwhile); if it fails, the dump is stopped and removed.

    With ``snapshot`` (from ``pg_export_snapshot()``) the dump sees exactly that snapshot.
    ``exclude_schemas`` (the kept schemas of the undo window, which no role but a superuser
    may read) are left out of it.
    With an enabled ``progress`` the running pg_dump is polled and the file's size reported.
    """
    if fmt not in BACKUP_FORMATS:
        raise RingHubError(f"backup_format {fmt!r} is not one of {', '.join(BACKUP_FORMATS)}")
    if jobs < 1 or (jobs > 1 and fmt != "directory"):
        raise RingHubError(f"backup_jobs {jobs}: more than one job needs backup_format directory")
    compression = parse_compress(compress)
    check_compress_supported(compression, tools)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{_safe_name(spec.dbname or 'db')}-{_safe_name(schema)}-{stamp}"
    path = _create_target(backup_dir, base, fmt)
    env = _client_env(spec, application_name)
    tick = None
    if progress is not None and progress.enabled:
        progress.dump_started(path)

        def tick() -> None:
            progress.dump_size(_tree_size(path))

    try:
        proc = run_polled(
            [tools.pg_dump, f"--format={fmt}", f"--compress={compression.value}", "--no-password", "--file", path]
            + ([f"--jobs={jobs}"] if jobs > 1 else [])
            + ([f"--snapshot={snapshot}"] if snapshot else [])
            + [f"--exclude-schema={quote_pattern(name)}" for name in exclude_schemas or []],
            env,
            tick,
            during=during,
        )
        if proc.returncode != 0:
            raise RingHubError(
                f"pg_dump of database {spec.dbname!r} failed (exit {proc.returncode}): "
                + spec.redact(proc.stderr.strip()[-2000:]),
                pg_dump=tools.pg_dump,
            )
        if fmt == "directory":
            for name in directory_files(path):
                os.chmod(os.path.join(path, name), 0o600)
        _fsync_backup(path)
        if progress is not None and progress.enabled:
            progress.dump_size(_tree_size(path))
            progress.phase("verify_backup")
        listing = subprocess.run(
            [tools.pg_restore, "--list", path], capture_output=True, text=True, env=env, check=False
        )
        if listing.returncode != 0:
            raise RingHubError(
                f"pg_restore --list cannot read the backup {path}: " + spec.redact(listing.stderr.strip()[-2000:]),
                path=path,
            )
        entries = [line for line in listing.stdout.splitlines() if re.match(r"^\d+;", line)]
        data_entries = {line.split(" TABLE DATA ", 1)[1] for line in entries if " TABLE DATA " in line}
        missing = [t for t in tables if not any(e.startswith(f"{schema} {t} ") for e in data_entries)]
        if missing:
            raise RingHubError(
                f"the backup {path} lists no data for tables {missing} of schema {schema!r}",
                path=path,
            )
        digest = backup_sha256(path)
    except BaseException:
        _remove_backup(path)
        raise
    info = {
        "path": path,
        "format": fmt,
        "compress": compression.value,
        "size": backup_size(path),
        "sha256": digest,
        "toc_entries": len(entries),
        "mode": "0700" if fmt == "directory" else "0600",
        "pg_dump": tools.pg_dump,
        "pg_dump_version": tools.pg_dump_version,
        "excluded_schemas": list(exclude_schemas or []),
    }
    if fmt == "directory":
        info.update(jobs=jobs, files=len(os.listdir(path)), file_mode="0600")
    return info


def quote_pattern(name: str) -> str:
    """A pg_dump/pg_restore name pattern that matches exactly ``name`` (``*``, ``?``, ``.`` and case kept)."""
    return '"' + name.replace('"', '""') + '"'


def dump_tables(listing: str, schema: str) -> list[str]:
    """The tables of ``schema`` whose data a ``pg_restore --list`` output holds."""
    out = []
    for line in listing.splitlines():
        if re.match(r"^\d+;", line) and " TABLE DATA " in line:
            rest = line.split(" TABLE DATA ", 1)[1]
            if rest.startswith(f"{schema} "):
                out.append(rest[len(schema) + 1 :].rsplit(" ", 1)[0])
    return out


def drill_database_name(dbname: str) -> str:
    """``<database>_restore_drill_<8 hex>``, within PostgreSQL's 63 bytes."""
    suffix = f"_restore_drill_{uuid.uuid4().hex[:8]}"
    return _safe_name(dbname)[: 63 - len(suffix)] + suffix


def restore_drill(
    conn: Any,
    spec: ConnSpec,
    tools: Tools,
    path: str,
    schema: str,
    rows: dict[str, int | None],
    application_name: str = "threadring.ringhub.restore_drill",
) -> dict[str, Any]:
    """Restore the backup's ``schema`` into a new scratch database, count its rows, drop it.

    ``conn`` (autocommit, on the target database) creates and drops the scratch
    database (``CREATE DATABASE ... TEMPLATE template0``: the role needs CREATEDB).
    The restore is ``pg_restore --single-transaction --exit-on-error --schema=<schema>``,
    owners and privileges included. Returns ``database``, ``tables`` (name, backup and
    restored rows), ``differences`` (table: [backup rows, restored rows]) and ``warnings``
    (a scratch database that could not be dropped); the scratch database is dropped whatever happens.
    """
    scratch = drill_database_name(spec.dbname or "db")
    scratch_spec = dataclasses.replace(spec, dbname=scratch)
    created = False
    left: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch)))
            created = True
        env = _client_env(scratch_spec, application_name)
        proc = subprocess.run(
            [tools.pg_restore, "--single-transaction", "--exit-on-error", "--no-password",
             f"--schema={schema}", "--dbname", scratch, path],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RingHubError(
                f"the restore drill cannot restore the backup {path} into a scratch database: "
                + spec.redact(proc.stderr.strip()[-2000:]),
                path=path,
            )
        check = connect(scratch_spec, application_name)
        try:
            with check.cursor() as cur:
                restored = {t["name"]: t["rows"] for t in count_rows(cur, schema, sorted(rows))}
        finally:
            check.close()
    except psycopg2.Error as exc:
        raise RingHubError(f"the restore drill failed: {pg_error_text(exc, spec)}") from None
    finally:
        if created:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
            except psycopg2.Error as exc:
                left.append(
                    f"the scratch database {scratch!r} of the restore drill could not be dropped "
                    f"({pg_error_text(exc, spec)}): drop it by hand"
                )
    tables = [{"name": name, "backup_rows": rows[name], "restored_rows": restored.get(name)} for name in sorted(rows)]
    differences = {t["name"]: [t["backup_rows"], t["restored_rows"]] for t in tables
                   if t["backup_rows"] != t["restored_rows"]}  # fmt: skip
    return {"database": scratch, "tables": tables, "differences": differences, "warnings": left}
