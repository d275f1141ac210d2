"""The bad-input catalogue of playbooks/reset.yml: one test per row, against one local deployment.

Every row gives the playbook one bad input (a phrase, a setting, a file, a server that does not
answer as it should) and checks three things: the message the operator sees (quoted as the test
asserts it), that it came before anything was destroyed (every table's rows and a digest of their
content, every Redis database's keys and a digest of them, the key file's and the env file's bytes
and modes, the DID document, the backups: all equal before and after), and that no secret (the
database and Redis passwords, the key) is in the output.

``CATALOGUE`` is the table of docs/bad_inputs.md: ``test_the_docs_list_exactly_these_rows`` checks
that the document holds the table ``render_table()`` makes from it, and
``python tests/integration/test_bad_inputs.py`` writes it there.

Placeholders in the expected texts (``<pg_port>``, ``<env_file>`` ...) are the deployment's own
values; ``<...>`` alone stands for text that changes from run to run (a pid, a byte offset).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:  # run as a script (to write the docs table)
    sys.path.insert(0, str(TESTS_DIR))

from harness.ansible import REPO, AnsibleRun, run_playbook

PLAYBOOK = REPO / "playbooks" / "reset.yml"
DOC = REPO / "docs" / "bad_inputs.md"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}
PHRASE_LIST = [PHRASES[f"ringhub_confirm_{i}"] for i in (1, 2, 3)]
AWX_JOB = {"awx_job_id": 917, "awx_job_template_name": "Ring Hub reset", "awx_user_name": "alice"}
# A wrong password given in a row: it must not show up either.
WRONG_PASSWORD = "not-the-pw-5d81c2"
AT_PASSWORD = "pw@rd-93be0a"
RESET_LOCK_KEY_PLACEHOLDER = "<lock_key>"

pytestmark = pytest.mark.slow

# Which task stops each kind of row: the earlier, the better.
CONFIRM = "Check the phrases given as variables"
TARGET = "Check the target database name"
SETTINGS = "Check the settings of every host"
# The preflight's checks and the reset's data steps each run in one task (reset_steps): "task / step".
CHECKS = "Check the PostgreSQL reset, the Redis flush and the badge key (check mode)"
PG_CHECK = f"{CHECKS} / pg_schema_reset"
REDIS_CHECK = f"{CHECKS} / redis_flush[0]"
KEYS_CHECK = f"{CHECKS} / did_keys"
DATA_STEPS = "Back up, then reset the schema and seed the root ring in one transaction; empty Redis; keep the badge key"
BACKUP = f"{DATA_STEPS} / pg_schema_reset"
SUMMARY = "Summary of what the reset will do"


# --------------------------------------------------------------------------- the rows


@dataclass
class Ctx:
    """What a row's setup may use and change: the deployment and a scratch directory."""

    dep: Any
    work: Path
    values: dict[str, str] = field(default_factory=dict)  # placeholder -> value, for this row

    def url(self, password: str | None = None, host: str = "127.0.0.1", db: str = "ringhub") -> str:
        state = self.dep.state["database"]
        secret = state["role_password"] if password is None else password
        return f"postgresql://ringhub:{secret}@{host}:{state['port']}/{db}?schema=public"

    def redis_url(self, password: str | None = None, port: int | None = None, db: int = 0) -> str:
        state = self.dep.state["redis"]
        secret = state["password"] if password is None else password
        return f"redis://:{secret}@127.0.0.1:{port or state['port']}/{db}"


Setup = Callable[[Ctx], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class Row:
    id: str
    given: str  # the input, as the table says it
    expect: tuple[str, ...]  # what the user sees: every fragment, in the failing task's message or the summary
    stops_at: str | None  # the task that fails (None: nothing fails, the row is a warning in --check)
    extra_vars: Callable[[Ctx], dict[str, Any]] = lambda ctx: dict(PHRASES)
    setup: Setup | None = None
    check: bool = False  # run with --check (rows whose answer is a warning, not a refusal)
    not_echoed: tuple[str, ...] = ()  # what the operator typed or gave, never repeated back
    secrets: tuple[str, ...] = ()  # more secrets of the row (a wrong password)
    verbosity: int = 0  # -vvv for the rows that hand a password to a module: its whole output is scanned

    @property
    def audit_line(self) -> bool:
        """A run that passed the confirmations writes its audit line (aborted), also when it was refused."""
        return self.stops_at not in (None, CONFIRM, TARGET)


def with_vars(**changes: Any) -> Callable[[Ctx], dict[str, Any]]:
    def make(ctx: Ctx) -> dict[str, Any]:
        out = dict(PHRASES)
        for name, value in changes.items():
            out[name] = value(ctx) if callable(value) else value
        return {k: v for k, v in out.items() if v is not None}

    return make


def _phrase_rows() -> list[Row]:
    rows = []
    wrong = ["DELETE ALL DATUM", "I UNDERSTAND THIS IS REVERSIBLE", "RESET STAGING NOW"]
    for index, phrase in enumerate(PHRASE_LIST, 1):
        name = f"ringhub_confirm_{index}"
        variants = [
            ("wrong", wrong[index - 1], "it is another text", f"`{wrong[index - 1]}`"),
            ("empty", "", "the answer was empty", "`''` (empty)"),
            ("trailing-space", phrase + " ", "it has spaces before or after it", f"`'{phrase} '`"),
            ("lower-case", phrase.lower(), "it differs in capital letters", f"`{phrase.lower()}`"),
        ]
        for kind, value, why, shown in variants:
            rows.append(
                Row(
                    id=f"phrase-{index}-{kind}",
                    given=f"{name}={shown}",
                    expect=(
                        f"Confirmation {index} of 3 ({name}) does not match: {why}. It must be exactly '{phrase}' "
                        "(capital letters, single spaces, nothing before or after). The reset was aborted; "
                        "nothing was changed.",
                    ),
                    stops_at=CONFIRM,
                    extra_vars=with_vars(**{name: value}),
                    not_echoed=(value,) if kind in ("wrong", "lower-case") else (),
                )
            )
    return rows


# -- setups ---------------------------------------------------------------------------------------


def _restore_file(path: Path) -> Callable[[], None]:
    data, mode = path.read_bytes(), stat.S_IMODE(path.stat().st_mode)

    def restore() -> None:
        path.write_bytes(data)
        os.chmod(path, mode)

    return restore


def env_without(*names: str) -> Setup:
    """The hub's .env without the lines assigning ``names`` (restored after the row)."""

    @contextlib.contextmanager
    def setup(ctx: Ctx) -> Iterator[None]:
        env = ctx.dep.paths["env_file"]
        restore = _restore_file(env)
        lines = env.read_text().splitlines(keepends=True)
        env.write_text("".join(line for line in lines if not line.startswith(tuple(f"{n}=" for n in names))))
        try:
            yield
        finally:
            restore()

    return setup


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """``path`` (a directory) read-only for the module, root included: a read-only bind mount as root,
    else mode 0500. Yields how."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
            yield "read-only bind mount"
        finally:
            subprocess.run(["umount", str(path)], check=True, capture_output=True)
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    os.chmod(path, 0o500)
    try:
        yield "mode 0500"
    finally:
        os.chmod(path, mode)


def _why_unwritable() -> str:
    return (
        "it is on a read-only file system" if os.geteuid() == 0 else "the user running the module may not write there"
    )


@contextlib.contextmanager
def env_file_unwritable(ctx: Ctx) -> Iterator[None]:
    """The env file lacks RING_HUB_PRIVATE_KEY (so the key step must write it) and its directory is read-only."""
    with env_without("RING_HUB_PRIVATE_KEY")(ctx), read_only(ctx.dep.paths["env_file"].parent):
        yield


@contextlib.contextmanager
def backup_dir_unwritable(ctx: Ctx) -> Iterator[None]:
    with read_only(ctx.dep.paths["backup_dir"]):
        yield


@contextlib.contextmanager
def backup_dir_full(ctx: Ctx) -> Iterator[None]:
    """ringhub_backup_dir on an 8 KiB tmpfs: the write probe of the preflight fits, the dump does not."""
    if os.geteuid() != 0:
        pytest.skip("a full backup directory is made with a tiny tmpfs, which needs root to mount")
    target = ctx.work / "tiny-backups"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(target)], check=True)
    try:
        yield
        assert not list(target.iterdir()), "a failed backup must leave no file"
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


def migrations_copy(change: Callable[[Path], None]) -> Setup:
    """ringhub_migrations_dir: a copy of the deployment's migrations changed by ``change``."""

    @contextlib.contextmanager
    def setup(ctx: Ctx) -> Iterator[None]:
        target = ctx.work / "migrations"
        shutil.copytree(ctx.dep.paths["migrations_dir"], target)
        change(target)
        yield

    return setup


def _non_utf8(directory: Path) -> None:
    first = sorted(p for p in directory.iterdir() if p.is_dir())[0] / "migration.sql"
    first.write_bytes(first.read_bytes() + b"\n-- caf\xe9\n")


def _concurrently(directory: Path) -> None:
    extra = directory / "29990101000000_ring_name_index"
    extra.mkdir()
    (extra / "migration.sql").write_text('CREATE INDEX CONCURRENTLY "Ring_name_idx" ON "Ring"("name");\n')


@contextlib.contextmanager
def empty_migrations(ctx: Ctx) -> Iterator[None]:
    (ctx.work / "migrations").mkdir()
    yield


@contextlib.contextmanager
def lock_file_only(ctx: Ctx) -> Iterator[None]:
    (ctx.work / "migrations").mkdir()
    (ctx.work / "migrations" / "migration_lock.toml").write_text('provider = "postgresql"\n')
    yield


def key_file(content: Callable[[], bytes]) -> Setup:
    """The badge key file replaced by ``content`` (restored after the row)."""

    @contextlib.contextmanager
    def setup(ctx: Ctx) -> Iterator[None]:
        path = ctx.dep.paths["key"]
        restore = _restore_file(path)
        path.write_bytes(content())
        try:
            yield
        finally:
            restore()

    return setup


def _rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _corrupt_pem(ctx_key: Path) -> Callable[[], bytes]:
    def make() -> bytes:
        lines = ctx_key.read_bytes().splitlines(keepends=True)
        return lines[0] + lines[1][:20] + b"\n" + lines[-1]  # a PEM whose body is cut short

    return make


@contextlib.contextmanager
def key_readable_by_others(ctx: Ctx) -> Iterator[None]:
    path = ctx.dep.paths["key"]
    mode = stat.S_IMODE(path.stat().st_mode)
    os.chmod(path, 0o644)
    try:
        yield
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, "check mode changed the key file's mode"
    finally:
        os.chmod(path, mode)


@contextlib.contextmanager
def reset_lock_held(ctx: Ctx) -> Iterator[None]:
    """Another reset holds the reset lock: a session of the test takes it as pg_schema_reset does
    (``pg_try_advisory_lock(RESET_LOCK_KEY)`` at session level, on the target database)."""
    import psycopg2

    from ansible_collections.threadring.ringhub.plugins.module_utils._pg import parse_database_url
    from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import RESET_LOCK_KEY

    kwargs = parse_database_url(ctx.dep.database_url).libpq_kwargs()
    conn = psycopg2.connect(**kwargs, application_name="threadring.ringhub.pg_schema_reset")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (RESET_LOCK_KEY,))
            taken, pid = cur.fetchone()
        assert taken
        ctx.values.update({"<lock_key>": str(RESET_LOCK_KEY), "<pid>": str(pid)})
        yield
    finally:
        conn.close()


# -- the catalogue --------------------------------------------------------------------------------

ABORTED = "The reset aborted (nothing was destroyed): "
NO_PHRASES = (
    "so nothing is asked, and ringhub_confirm_1, ringhub_confirm_2, ringhub_confirm_3 are not set. Give "
    "ringhub_confirm_1, ringhub_confirm_2 and ringhub_confirm_3 (the three phrases, in order) as variables: an AWX "
    "survey, -e, or Ansible Vault. Nothing was changed."
)
CONNECT = "cannot connect to PostgreSQL at host 127.0.0.1 port <pg_port> database 'ringhub' as user ringhub: "

CATALOGUE: list[Row] = [
    *_phrase_rows(),
    Row(
        id="target-name-wrong",
        given="`ringhub_confirm_target=ringhub_staging`",
        expect=(
            "The target database name does not match: the name typed is another one. This run resets database "
            "'ringhub' on 127.0.0.1:<pg_port>; set ringhub_confirm_target to exactly that name. Nothing was changed.",
        ),
        stops_at=TARGET,
        extra_vars=with_vars(ringhub_confirm_target="ringhub_staging"),
        not_echoed=("ringhub_staging",),
    ),
    Row(
        id="no-terminal-no-phrases",
        given="no phrase variables, standard input `/dev/null` (cron, CI, a pipe)",
        expect=("The reset is not confirmed: the controller cannot prompt: ", NO_PHRASES),
        stops_at=CONFIRM,
        extra_vars=lambda ctx: {},
    ),
    Row(
        id="awx-no-phrases",
        given="`awx_job_id=917` (an AWX job) without the survey answers",
        expect=("The reset is not confirmed: this is AWX / Automation Controller job 917, " + NO_PHRASES,),
        stops_at=CONFIRM,
        extra_vars=lambda ctx: dict(AWX_JOB),
    ),
    Row(
        id="database-url-missing",
        given="`ringhub_database_url` unset and no `DATABASE_URL` in the hub's `.env`",
        expect=(
            "The target database name cannot be confirmed: the database URL of hub1 is not set (ringhub_database_url "
            "(DATABASE_URL) is not set). Set ringhub_database_url, or DATABASE_URL in <env_file>. Nothing was changed.",
        ),
        stops_at=TARGET,
        extra_vars=with_vars(ringhub_database_url=""),
        setup=env_without("DATABASE_URL"),
    ),
    Row(
        id="database-url-malformed",
        given="`postgresql://ringhub:…@127.0.0.1:notaport/ringhub` (a port that is not a number)",
        expect=(
            "The target database name cannot be confirmed: the database URL of hub1 (variable ringhub_database_url) "
            "does not parse (ringhub_database_url: invalid port in database_url "
            "postgresql://ringhub:********@127.0.0.1:notaport/ringhub (if the user name or password contains any of "
            ": / ? # @ % [ ], percent-encode them (%3A %2F %3F %23 %40 %25 %5B %5D), as Prisma requires)).",
        ),
        stops_at=TARGET,
        extra_vars=with_vars(
            ringhub_database_url=lambda ctx: (
                ctx.url().replace(f":{ctx.dep.state['database']['port']}/", ":notaport/").split("?")[0]
            )
        ),
    ),
    Row(
        id="database-url-wrong-password",
        given="`postgresql://ringhub:<wrong>@127.0.0.1:<pg_port>/ringhub`",
        expect=(
            CONNECT + 'connection to server at "127.0.0.1", port <pg_port> failed: FATAL: password '
            'authentication failed for user "ringhub"; nothing was changed',
        ),  # fmt: skip
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_database_url=lambda ctx: ctx.url(WRONG_PASSWORD)),
        verbosity=3,
        secrets=(WRONG_PASSWORD,),
    ),
    Row(
        id="database-url-unknown-host",
        given="`postgresql://ringhub:…@no-such-host.invalid:<pg_port>/ringhub`",
        expect=(
            "cannot connect to PostgreSQL at host no-such-host.invalid port <pg_port> database 'ringhub' as user "
            'ringhub: could not translate host name "no-such-host.invalid" to address',
        ),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_database_url=lambda ctx: ctx.url(host="no-such-host.invalid")),
    ),
    Row(
        id="database-url-wrong-database",
        given="`postgresql://ringhub:…@127.0.0.1:<pg_port>/ringhub_old` (and `ringhub_confirm_target=ringhub_old`)",
        expect=(
            "cannot connect to PostgreSQL at host 127.0.0.1 port <pg_port> database 'ringhub_old' as user ringhub: "
            'connection to server at "127.0.0.1", port <pg_port> failed: FATAL: database "ringhub_old" does not exist',
        ),
        stops_at=PG_CHECK,
        extra_vars=with_vars(
            ringhub_database_url=lambda ctx: ctx.url(db="ringhub_old"), ringhub_confirm_target="ringhub_old"
        ),
    ),
    Row(
        id="database-url-mysql",
        given="`mysql://ringhub:…@127.0.0.1:<pg_port>/ringhub`",
        expect=(
            "(variable ringhub_database_url) does not parse (ringhub_database_url: database_url must start with "
            "postgresql:// or postgres://, got mysql://ringhub:********@127.0.0.1:<pg_port>/ringhub).",
        ),
        stops_at=TARGET,
        extra_vars=with_vars(ringhub_database_url=lambda ctx: "mysql" + ctx.url().split("?")[0][len("postgresql") :]),
    ),
    Row(
        id="database-url-unencoded-at",
        given=f"`postgresql://ringhub:{AT_PASSWORD}@127.0.0.1:<pg_port>/ringhub` (an `@` not written `%40`, in a "
        "password that is not the role's)",
        expect=(
            CONNECT + 'connection to server at "127.0.0.1", port <pg_port> failed: FATAL: password '
            'authentication failed for user "ringhub"; nothing was changed',
        ),  # fmt: skip
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_database_url=lambda ctx: ctx.url(AT_PASSWORD)),
        verbosity=3,
        secrets=(AT_PASSWORD, AT_PASSWORD.split("@")[1] + "@127.0.0.1"),
    ),
    Row(
        id="redis-url-malformed",
        given="`redis://:…@127.0.0.1:notaport/0`",
        expect=(
            "Preflight of hub1 (primary host) failed: ringhub_redis_url redis://:********@127.0.0.1:notaport/0 does "
            "not parse as a URL: its port is not a number from 0 to 65535 (or a '[' has no ']'); percent-encode "
            "/ ? # @ : [ ] in a password. Nothing was changed.",
        ),
        stops_at=SETTINGS,
        extra_vars=with_vars(
            ringhub_redis_url=lambda ctx: ctx.redis_url().replace(f":{ctx.dep.state['redis']['port']}/", ":notaport/")
        ),
    ),
    Row(
        id="redis-url-wrong-password",
        given="`redis://:<wrong>@127.0.0.1:<redis_port>/0`",
        expect=(
            ABORTED + "cannot connect to redis://127.0.0.1:<redis_port>: authentication failed (invalid "
            "username-password pair or user is disabled.); nothing was changed",
        ),
        stops_at=REDIS_CHECK,
        extra_vars=with_vars(ringhub_redis_url=lambda ctx: ctx.redis_url(WRONG_PASSWORD)),
        verbosity=3,
        secrets=(WRONG_PASSWORD,),
    ),
    Row(
        id="redis-url-unreachable",
        given="`redis://:…@127.0.0.1:<free_port>/0` (nothing listens there)",
        expect=(
            ABORTED + "cannot connect to redis://127.0.0.1:<free_port>: Error 111 connecting to 127.0.0.1:<free_port>. "
            "Connection refused; nothing was changed",
        ),
        stops_at=REDIS_CHECK,
        extra_vars=with_vars(ringhub_redis_url=lambda ctx: ctx.redis_url(port=int(ctx.values["<free_port>"]))),
    ),
    Row(
        id="redis-url-database-99",
        given="`redis://:…@127.0.0.1:<redis_port>/99` (the server has 16 databases), `ringhub_redis_flush_mode: all`",
        expect=(
            ABORTED + "redis_url names Redis database 99, which the server at redis://127.0.0.1:<redis_port> does not "
            "have: its 'databases' setting is 16 (databases 0 to 15). Correct the database number at the end of "
            "REDIS_URL (redis://host:port/N, the database the hub uses); nothing was changed",
        ),
        stops_at=REDIS_CHECK,
        extra_vars=with_vars(ringhub_redis_url=lambda ctx: ctx.redis_url(db=99)),
    ),
    Row(
        id="redis-flushall-beyond-the-hub-database",
        given="`redis://:…@127.0.0.1:<redis_port>/0` while db1 holds 3 keys, `ringhub_redis_flush_mode: all` "
        "(`--check`)",
        expect=(
            "WARNING: FLUSHALL (ringhub_redis_flush_mode: all) deletes every database of the server, not only db0 "
            "that REDIS_URL names: 3 keys beyond the hub's own database (127.0.0.1:<redis_port>: db1 3). To delete "
            "db0 alone, set ringhub_redis_flush_mode: db and ringhub_redis_flush_db: 0.",
        ),
        stops_at=None,
        check=True,
    ),
    Row(
        id="instance-did-not-a-did",
        given="`ringhub_instance_did=hub.example.org`",
        expect=(
            "Preflight of hub1 (primary host) failed: ringhub_instance_did (INSTANCE_DID) must be a DID like "
            "did:web:hub.example.org, got 'hub.example.org'. Nothing was changed.",
        ),
        stops_at=SETTINGS,
        extra_vars=with_vars(ringhub_instance_did="hub.example.org"),
    ),
    Row(
        id="hub-url-not-http",
        given="`ringhub_hub_url=ftp://hub.example.org`",
        expect=(
            "Preflight of hub1 (primary host) failed: ringhub_hub_url (RING_HUB_URL) must be an http:// or https:// "
            "URL with a host, got 'ftp://hub.example.org'. Nothing was changed.",
        ),
        stops_at=SETTINGS,
        extra_vars=with_vars(ringhub_hub_url="ftp://hub.example.org"),
    ),
    Row(
        id="root-slug-invalid",
        given="`ringhub_root_slug='Spool Ring'`",
        expect=(
            "Preflight of hub1 (primary host) failed: ringhub_root_slug (ROOT_RING_SLUG) must be lower-case letters, "
            "digits and '-' (1-100 characters), got 'Spool Ring'. Nothing was changed.",
        ),
        stops_at=SETTINGS,
        extra_vars=with_vars(ringhub_root_slug="Spool Ring"),
    ),
    Row(
        id="migrations-dir-missing",
        given="`ringhub_migrations_dir=<work>/no-such-migrations`",
        expect=(ABORTED + "migrations_dir <work>/no-such-migrations does not exist; nothing was changed",),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_migrations_dir=lambda ctx: str(ctx.work / "no-such-migrations")),
    ),
    Row(
        id="migrations-dir-empty",
        given="`ringhub_migrations_dir` an empty directory",
        expect=(
            ABORTED + "<work>/migrations/migration_lock.toml is missing: <work>/migrations is not a Prisma migrations "
            "directory; nothing was changed",
        ),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_migrations_dir=lambda ctx: str(ctx.work / "migrations")),
        setup=empty_migrations,
    ),
    Row(
        id="migrations-dir-no-migrations",
        given="`ringhub_migrations_dir` holding `migration_lock.toml` only",
        expect=(ABORTED + "migrations_dir <work>/migrations holds no <name>/migration.sql; nothing was changed",),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_migrations_dir=lambda ctx: str(ctx.work / "migrations")),
        setup=lock_file_only,
    ),
    Row(
        id="migrations-not-utf8",
        given="a `migration.sql` with a Latin-1 byte (`caf\\xe9`)",
        expect=(
            ABORTED + "migration file <work>/migrations/",
            "/migration.sql is not valid UTF-8 (byte ",
            ": invalid continuation byte); nothing was changed",
        ),  # fmt: skip
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_migrations_dir=lambda ctx: str(ctx.work / "migrations")),
        setup=migrations_copy(_non_utf8),
    ),
    Row(
        id="migrations-create-index-concurrently",
        given='a migration `CREATE INDEX CONCURRENTLY "Ring_name_idx" ON "Ring"("name");`',
        expect=(
            ABORTED + "migrations contain statements that cannot run in the one reset transaction: "
            "<work>/migrations/29990101000000_ring_name_index/migration.sql line 1: CREATE INDEX CONCURRENTLY cannot "
            "run inside a transaction; nothing was changed",
        ),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_migrations_dir=lambda ctx: str(ctx.work / "migrations")),
        setup=migrations_copy(_concurrently),
    ),
    Row(
        id="signing-key-rsa",
        given="an RSA private key (PKCS#8 PEM) in `ringhub_key_path`",
        expect=(
            ABORTED + "key file <key_file> holds a private key of the wrong type (RSA 2048); the badge key must be "
            "Ed25519; " + "the file is left as it is: put the hub's Ed25519 key (PKCS#8 PEM) back in its place, or set "
            "regenerate=always to replace it with a new key after a backup; nothing was changed",
        ),
        stops_at=KEYS_CHECK,
        setup=key_file(_rsa_pem),
    ),
    Row(
        id="signing-key-corrupt",
        given="a PEM whose body is cut short in `ringhub_key_path`",
        expect=(
            ABORTED
            + "key file <key_file> is corrupt: its PEM data does not parse as a private key; "
            + "the file is left as it is: put the hub's Ed25519 key (PKCS#8 PEM) back in its place, or set "
            "regenerate=always to replace it with a new key after a backup; nothing was changed",
        ),
        stops_at=KEYS_CHECK,
        setup=lambda ctx: key_file(_corrupt_pem(ctx.dep.paths["key"]))(ctx),
    ),
    Row(
        id="signing-key-readable-by-others",
        given="the key file mode 0644 (`--check`)",
        expect=(
            "WARNING: the badge key <key_file> can be read by its group and all other users (mode 0644): the reset "
            "sets it to 0600, but the private key may already have been read by someone else: rotate it (did_keys "
            "with regenerate: always writes a new key, its RING_HUB_PRIVATE_KEY value and the DID document).",
        ),
        stops_at=None,
        check=True,
        setup=key_readable_by_others,
    ),
    Row(
        id="env-file-unwritable",
        given="`.env` without `RING_HUB_PRIVATE_KEY` (the key step must write it) in a read-only directory",
        expect=(
            ABORTED + "env file <env_file> must be written but cannot be: <why_unwritable> (directory <env_dir>); "
            "make it writable (or fix the file by hand) and run again; nothing was changed",
        ),
        stops_at=KEYS_CHECK,
        setup=env_file_unwritable,
    ),
    Row(
        id="backup-dir-unwritable",
        given="`ringhub_backup_dir` read-only",
        expect=(ABORTED + "backup_dir <backup_dir> is not writable: <os_error>; nothing was changed",),
        stops_at=PG_CHECK,
        setup=backup_dir_unwritable,
    ),
    Row(
        id="backup-dir-full",
        given="`ringhub_backup_dir` on an 8 KiB tmpfs (room for the preflight's write probe, not for the dump)",
        expect=(
            "Backup first: pg_dump custom format into <work>/tiny-backups (8.00 KB free)",
            "The reset failed: pg_dump of database 'ringhub' failed (exit 1): pg_dump: error: could not write to "
            "output file: No space left on device; nothing was changed",
        ),
        stops_at=BACKUP,
        extra_vars=with_vars(ringhub_backup_dir=lambda ctx: str(ctx.work / "tiny-backups")),
        setup=backup_dir_full,
    ),
    Row(
        id="environment-marker-mismatch",
        given="`ringhub_environment=staging` for a database marked `production`",
        expect=(
            ABORTED + "preflight failed: database 'ringhub' is marked as environment 'production' "
            "(ringhub.environment), not 'staging': the connection settings most likely point at another "
            "environment's database; check them and the inventory group; nothing was changed",
        ),
        stops_at=PG_CHECK,
        extra_vars=with_vars(ringhub_environment="staging"),
    ),
    Row(
        id="second-reset-while-one-runs",
        given="another session holds the reset lock (`pg_try_advisory_lock(<lock_key>)`, application "
        "`threadring.ringhub.pg_schema_reset`)",
        expect=(
            ABORTED + "another schema reset is running on database 'ringhub' (it holds the reset lock, advisory key "
            "<lock_key>: pid <pid>, application 'threadring.ringhub.pg_schema_reset', user 'ringhub', connected since ",
            "Wait for it to finish; if that session is left over from an interrupted run, end it with SELECT "
            "pg_terminate_backend(<pid>) and run it again; nothing was changed",
        ),
        stops_at=PG_CHECK,
        setup=reset_lock_held,
    ),
]


# --------------------------------------------------------------------------- the docs table

TABLE_START = "<!-- catalogue: generated from tests/integration/test_bad_inputs.py -->"
TABLE_END = "<!-- end of catalogue -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def proof(row: Row) -> str:
    """What proves nothing was lost, as the test checks it."""
    parts = ["tables, Redis databases, key file, `.env`, DID document, backups: equal before and after"]
    if row.check:
        parts.append("`--check`: no audit line")
    elif row.audit_line:
        parts.append(
            "one audit line, `aborted`"
            if row.stops_at != BACKUP
            else "one audit line, `failed` (the backup comes before the drop)"
        )
    else:
        parts.append("stopped before any host is contacted for data: no audit line")
    if row.stops_at == BACKUP:
        parts.append("no file left in the backup directory")
    if row.verbosity:
        parts.append(f"no secret in the whole `-{'v' * row.verbosity}` output")
    return "; ".join(parts)


def render_table() -> str:
    lines = [
        TABLE_START,
        "| id | input | what the user sees | stopped by | what proves nothing was lost |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in CATALOGUE:
        seen = " … ".join(f"`{_cell(part)}`" for part in row.expect)
        where = f"`{row.stops_at}`" if row.stops_at else "the preflight summary (a warning, nothing fails)"
        lines.append(f"| `{row.id}` | {_cell(row.given)} | {seen} | {where} | {_cell(proof(row))} |")
    lines.append(TABLE_END)
    return "\n".join(lines)


def write_docs() -> None:
    text = DOC.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    DOC.write_text(text[:start] + render_table() + text[end:])


def test_the_docs_list_exactly_these_rows() -> None:
    text = DOC.read_text()
    assert render_table() in text, "docs/bad_inputs.md is out of date: run python tests/integration/test_bad_inputs.py"
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M)
    assert ids == [row.id for row in CATALOGUE]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert ".venv/bin/pytest tests/integration/test_bad_inputs.py" in text


# --------------------------------------------------------------------------- running a row


def _state(dep: Any) -> dict[str, Any]:
    """What ``Deployment.counts()`` compares (every table's rows and content digest, the environment marker,
    every Redis database's keys and digest, the DID document, the backups, the audit lines), with the exact
    bytes and modes of the key file and the env file instead of loading the key (a row may put a key there
    that does not load)."""
    from harness.deployment import _database_state

    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            out = _database_state(cur)
    finally:
        conn.close()
    out["redis"] = dep._redis_state()
    paths = dep.paths
    did_doc = paths["web_root"] / ".well-known" / "did.json"
    for name, path in (("key", paths["key"]), ("env_file", paths["env_file"]), ("did_document", did_doc)):
        out[f"{name}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        out[f"{name}_mode"] = oct(stat.S_IMODE(path.stat().st_mode)) if path.exists() else None
    out["backups"] = sorted(p.name for p in paths["backup_dir"].iterdir())
    audit = paths["audit_log"]
    out["audit_lines"] = len(audit.read_text().splitlines()) if audit.exists() else 0
    return out


def _messages(run: AnsibleRun) -> list[str]:
    """Every message the operator sees in the task results: failures (loop items too), the summaries."""
    out: list[str] = []
    for entry in run.results:
        result = entry["result"]
        if entry["status"] == "failed" or entry["task"] in (SUMMARY, "Summary of the run"):
            msg = result.get("msg")
            out.extend(msg if isinstance(msg, list) else [str(msg or "")])
            for item in result.get("results") or []:
                if isinstance(item, dict) and item.get("failed"):
                    out.append(str(item.get("msg", "")))
    return [" ".join(m.split()) for m in out]


def _first_failure(run: AnsibleRun) -> str | None:
    """The task that failed first, with the step that failed when it ran several (``task / step``)."""
    failed = next((r for r in run.results if r["status"] in ("failed", "unreachable")), None)
    if failed is None:
        return None
    step = failed["result"].get("failed_step")
    return f"{failed['task']} / {step}" if step else failed["task"]


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(key, value)
    return text


@pytest.fixture(scope="module")
def deployment() -> Iterator[Any]:
    """One deployment (one hub, demo data: rows in every table, keys in Redis db0 and db1) for every row."""
    from harness.deployment import down, new_directory, up

    directory = new_directory()
    try:
        yield up(directory, hubs=1, demo_data=True)
    finally:
        with contextlib.suppress(Exception):
            down(directory)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


@pytest.mark.parametrize("row", CATALOGUE, ids=[row.id for row in CATALOGUE])
def test_bad_input(deployment: Any, row: Row) -> None:
    from harness.ports import free_port

    dep = deployment
    work = Path(tempfile.mkdtemp(prefix=f"ringhub-bad-{row.id}-"))
    ctx = Ctx(dep, work)
    ctx.values.update(
        {
            "<pg_port>": str(dep.state["database"]["port"]),
            "<redis_port>": str(dep.state["redis"]["port"]),
            "<env_file>": str(dep.paths["env_file"]),
            "<env_dir>": str(dep.paths["env_file"].parent),
            "<key_file>": str(dep.paths["key"]),
            "<backup_dir>": str(dep.paths["backup_dir"]),
            "<work>": str(work),
            "<free_port>": str(free_port()),
            "<why_unwritable>": _why_unwritable(),
            "<os_error>": "Read-only file system" if os.geteuid() == 0 else "Permission denied",
        }
    )
    try:
        with row.setup(ctx) if row.setup else contextlib.nullcontext():
            before = _state(dep)
            run = run_playbook(
                PLAYBOOK,
                row.extra_vars(ctx),
                inventory=dep.inventory,
                limit="production",
                check=row.check,
                verbosity=row.verbosity,
                timeout=300,
            )
            after = _state(dep)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # What the operator sees: the message that names the problem and what to fix.
    seen = "\n".join(_messages(run))
    print(f"--- what the user sees ({row.id}):\n{seen}")
    for part in row.expect:
        assert _fill(part, ctx.values) in seen, f"{row.id}: expected {part!r} in:\n{seen}"
    assert _first_failure(run) == row.stops_at, (row.id, _first_failure(run), run.output[-3000:])
    assert (run.rc == 0) == (row.stops_at is None), (run.rc, run.output[-2000:])
    for typed in row.not_echoed:
        failure = [m for m in _messages(run) if "does not match" in m]
        assert failure and all(typed not in m for m in failure), f"{row.id}: what was given is echoed back"

    # Nothing was lost: every table, every Redis database, the key and env files, the DID document, the backups.
    audit_before, audit_after = before.pop("audit_lines"), after.pop("audit_lines")
    assert after == before
    assert before["total_rows"] > 100 and sum(db["keys"] for db in before["redis"].values()) > 20
    assert audit_after == audit_before + (1 if row.audit_line and not row.check else 0)
    if audit_after > audit_before:
        record = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
        # A failure of the backup and reset task counts as "failed" (the destructive task had started), though
        # the backup comes before the drop and the module says nothing was changed.
        assert record["status"] == ("failed" if row.stops_at == BACKUP else "aborted"), record["status"]

    # No secret in the whole output.
    key_lines = dep.paths["key"].read_text().splitlines()
    env_value = next(
        line.split("=", 1)[1]
        for line in dep.paths["env_file"].read_text().splitlines()
        if line.startswith("RING_HUB_PRIVATE_KEY=")
    )
    secrets = {
        "database password": dep.state["database"]["role_password"],
        "superuser password": dep.state["database"]["superuser_password"],
        "Redis password": dep.state["redis"]["password"],
        "key PEM": key_lines[1],
        "key env value": env_value[10:70],
        **{f"row secret {i}": s for i, s in enumerate(row.secrets)},
    }
    for what, secret in secrets.items():
        assert secret not in run.output, f"{row.id}: the {what} is in the output"


if __name__ == "__main__":
    write_docs()
    print(f"wrote the catalogue ({len(CATALOGUE)} rows) into {DOC}")
