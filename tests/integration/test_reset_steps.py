"""reset_steps run as Ansible runs it: pg_schema_reset, redis_flush and did_keys in one module run.

Against the session's PostgreSQL server (a fresh database per test, filled with the fixture schema and
data) and one Redis server for the whole module (password on the default user plus the ACL users of
``harness.redis_servers.ACL_USERS``), emptied and filled again before each test. Every test checks the
state itself: rows per table, keys per Redis database, the files on disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _envfile
from harness.ansible import AnsibleRun, run_module
from harness.datagen import seed_hub_data
from harness.pg import PgDatabase, apply_migrations_with_psql, schema_dump
from harness.ports import free_port
from harness.redis_servers import ACL_USERS, RedisServer
from harness.secret_forms import SecretForm, assert_no_secret, key_forms, password_forms

HUB_URL = "https://hub.example.test"
ROOT_RING = {"slug": "spool", "name": "The Spool", "owner_did": "did:web:hub.example.test"}
REDIS_DATA: dict[int, list[str]] = {
    0: ["ratelimit:a", "ratelimit:b", "cache:ring:spool", "session:1"],
    1: ["ratelimit:a", "other:1"],
    3: ["cache:ring:x", "three:1", "three:2"],
}
REDIS_KEYS = sum(len(keys) for keys in REDIS_DATA.values())
REDIS_USER = "ringhub"
LABELS = ["pg_schema_reset", "redis_flush[0]", "did_keys"]


# -- servers, data, paths ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_shared() -> Iterator[RedisServer]:
    """One Redis server for every test of this module: requirepass plus the ACL users."""
    with RedisServer(password="default-" + secrets.token_hex(8), acl_users=ACL_USERS) as server:
        yield server


@pytest.fixture
def redis(redis_shared: RedisServer) -> RedisServer:
    """The shared server holding exactly ``REDIS_DATA``."""
    with redis_shared.admin() as client:
        client.flushall()
    for db, keys in REDIS_DATA.items():
        redis_shared.fill(keys, db=db)
    assert redis_shared.dbsizes() == {db: len(keys) for db, keys in REDIS_DATA.items()}
    return redis_shared


def redis_url(server: RedisServer, db: int = 0) -> str:
    """The URL of the ACL user that may flush (its password inside)."""
    return server.url(db, username=REDIS_USER, password=ACL_USERS[REDIS_USER][0])


def unreachable_redis_url() -> str:
    return f"redis://{REDIS_USER}:{ACL_USERS[REDIS_USER][0]}@127.0.0.1:{free_port()}/0"


@dataclass
class Hub:
    """A filled database, the Redis with keys and the paths of the key step (none of its files exist yet)."""

    db: PgDatabase
    redis: RedisServer
    migrations: Path
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "keys" / "ring-hub.pem"

    @property
    def env(self) -> Path:
        return self.root / "srv" / ".env"

    @property
    def document(self) -> Path:
        return self.root / "web" / ".well-known" / "did.json"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def database_url(self) -> str:
        return self.db.url(params="schema=public")

    def pg_options(self, **extra: Any) -> dict[str, Any]:
        options = {
            "migrations_dir": str(self.migrations),
            "expected_environment": "production",
            "backup": True,
            "backup_dir": str(self.backups),
            "root_ring": dict(ROOT_RING),
        }
        return {**options, **extra}

    def keys_options(self, **extra: Any) -> dict[str, Any]:
        options = {
            "path": str(self.key),
            "env_file": str(self.env),
            "hub_url": HUB_URL,
            "instance_document": str(self.document),
        }
        return {**options, **extra}

    def args(self, *, redis_urls: list[str] | None = None, **steps: Any) -> dict[str, Any]:
        """reset_steps' options: the three steps as the reset runs them, unless ``steps`` says otherwise
        (a step given as None is left out)."""
        args: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_urls": [redis_url(self.redis)] if redis_urls is None else redis_urls,
            "pg_schema_reset": self.pg_options(),
            "redis_flush": {"mode": "all"},
            "did_keys": self.keys_options(),
        }
        args.update(steps)
        return {name: value for name, value in args.items() if value is not None}

    def files(self) -> list[str]:
        """Every file under the hub's directory (the key, the .env, the DID document, backups)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def state(self) -> dict[str, Any]:
        comment = self.db.query(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (self.db.name,)
        )[0][0]
        return {
            "rows": self.db.row_counts(),
            "schema": schema_dump(self.db),
            "comment": comment,
            "redis": self.redis.dbsizes(),
            "files": self.files(),
        }


@pytest.fixture
def hub(pg_db: PgDatabase, redis: RedisServer, fixture_migrations: Path, tmp_path: Path) -> Hub:
    apply_migrations_with_psql(pg_db, fixture_migrations)
    seed_hub_data(pg_db, rings=4, members_per_ring=3)
    hub = Hub(pg_db, redis, fixture_migrations, tmp_path / "hub")
    for directory in ("keys", "srv", "backups"):
        (hub.root / directory).mkdir(parents=True)
    assert hub.files() == []
    assert sum(pg_db.row_counts().values()) > 0
    return hub


def new_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def fingerprint_of(pem: bytes | str) -> str:
    """SHA-256 of the DER public key, as did_keys reports it."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def run_steps(args: dict[str, Any], **kwargs: Any) -> AnsibleRun:
    return run_module("reset_steps", args, **kwargs)


def ok(res: AnsibleRun) -> dict[str, Any]:
    assert res.rc == 0 and not res.failed, res.msg or res.output[-3000:]
    return res.result


# What differs between two runs of the same thing a moment apart: durations, clock times, free disk space.
VOLATILE = ("seconds", "resetAt", "free_bytes")


def without_timing(value: Any) -> Any:
    """A result without what differs between two runs of the same thing (``VOLATILE``, the summary's time)."""
    if isinstance(value, dict):
        out = {k: without_timing(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(out.get("summary"), str):
            out["summary"] = re.sub(r", [0-9.]+ s$", "", out["summary"])
        return out
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def same_result(combined: dict[str, Any], alone: dict[str, Any]) -> None:
    """A step's result in reset_steps equals the module's own result for the same options."""
    noise = ("invocation", "warnings", "deprecations", "failed", "_ansible_no_log")  # Ansible's, not the module's
    alone = {k: v for k, v in alone.items() if k not in noise}
    assert set(combined) == set(alone)
    assert without_timing(combined) == without_timing(alone)


# -- check mode: the preflight ------------------------------------------------------------------------


def test_check_mode_changes_nothing_and_returns_what_each_module_alone_returns(hub: Hub) -> None:
    before = hub.state()
    res = run_steps(hub.args(), check=True)
    result = ok(res)
    assert hub.state() == before  # rows, schema, marker, every Redis database, no key/.env/DID/backup file

    assert result["changed"] is True  # every step would change something
    assert result["ran"] == LABELS
    assert set(result["seconds"]) == {*LABELS, "total"}
    assert all(isinstance(s, float) and s >= 0 for s in result["seconds"].values())
    assert result["seconds"]["total"] >= max(result["seconds"][label] for label in LABELS)
    assert "diff" not in result  # no --diff
    steps = result["steps"]
    assert list(steps) == ["pg_schema_reset", "redis_flush", "did_keys"]

    pg = steps["pg_schema_reset"]
    assert {t["name"]: t["rows"] for t in pg["dropped"]["tables"]} == before["rows"]
    assert pg["dropped"]["total_rows"] == sum(before["rows"].values())
    assert pg["applied"] == [] and pg["backup"]["skipped"] is True
    assert pg["environment"]["would_mark"] is True
    (flush,) = steps["redis_flush"]
    assert flush["changed"] is True and flush["deleted"] == REDIS_KEYS
    node = f"127.0.0.1:{hub.redis.port}"
    assert flush["keys_before"] == {node: {f"db{db}": len(keys) for db, keys in REDIS_DATA.items()}}
    keys = steps["did_keys"]
    assert keys["changes"] == {"key_file": "created", "env_file": "created", "instance_document": "created"}
    assert keys["fingerprint"] is None and keys["written"] == []

    # Each module alone, in check mode, with the same options.
    pg_alone = run_module("pg_schema_reset", {"database_url": hub.database_url, **hub.pg_options()}, check=True)
    same_result(pg, ok(pg_alone))
    flush_alone = run_module("redis_flush", {"redis_url": redis_url(hub.redis), "mode": "all"}, check=True)
    same_result(flush, ok(flush_alone))
    keys_alone = run_module("did_keys", hub.keys_options(), check=True)
    same_result(keys, ok(keys_alone))
    # And the warnings of each module (the database not marked yet, the other Redis databases...) come along.
    alone_warnings = [w for run in (pg_alone, flush_alone, keys_alone) for w in run.result.get("warnings", [])]
    assert alone_warnings and set(alone_warnings) <= set(result["warnings"])
    assert hub.state() == before


# -- a real run ------------------------------------------------------------------------------------------


def env_key_pem(env: Path) -> bytes:
    (entry,) = _envfile.find_var(env.read_text())
    return base64.b64decode(entry["value"], validate=True)


def test_real_run_resets_the_database_empties_redis_and_keeps_the_key(hub: Hub) -> None:
    before = hub.state()
    res = run_steps(hub.args())
    result = ok(res)
    assert result["changed"] is True and result["ran"] == LABELS
    assert set(result["seconds"]) == {*LABELS, "total"}
    pg, (flush,), keys = (result["steps"][name] for name in ("pg_schema_reset", "redis_flush", "did_keys"))

    # The database: the old rows gone, the schema of the migrations, the root ring and its roles, the marker.
    names = sorted(p.name for p in hub.migrations.iterdir() if (p / "migration.sql").is_file())
    assert pg["changed"] is True
    assert [a["name"] for a in pg["applied"]] == names
    history = hub.db.query("SELECT migration_name, checksum FROM _prisma_migrations ORDER BY started_at")
    assert [(a["name"], a["checksum"]) for a in pg["applied"]] == history
    assert {table: n for table, n in hub.db.row_counts().items() if n} == {
        "_prisma_migrations": len(names),
        "Ring": 1,
        "RingRole": 3,
    }
    assert hub.db.query('SELECT slug, name, "ownerDid" FROM "Ring"') == [
        (ROOT_RING["slug"], ROOT_RING["name"], ROOT_RING["owner_did"])
    ]
    assert sorted(r[0] for r in hub.db.query('SELECT name FROM "RingRole"')) == ["member", "moderator", "owner"]
    assert {t["name"]: t["rows"] for t in pg["dropped"]["tables"]} == before["rows"]
    assert "ringhub.environment=production" in hub.state()["comment"]
    # The backup before the drop: a private file whose size and sha256 are the ones returned.
    backup = Path(pg["backup"]["path"])
    assert backup.parent == hub.backups and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert pg["backup"]["size"] == backup.stat().st_size
    assert pg["backup"]["sha256"] == hashlib.sha256(backup.read_bytes()).hexdigest()
    assert pg["backup"]["rows"] == before["rows"]

    # Redis: every database empty, as the step says.
    assert hub.redis.dbsizes() == {}
    node = f"127.0.0.1:{hub.redis.port}"
    assert flush["changed"] is True and flush["deleted"] == REDIS_KEYS
    assert flush["keys_after"] == {node: {}} and flush["commands"] == [f"{node}: FLUSHALL ASYNC"]

    # The key, its .env value and the instance DID document: one new key in all three.
    pem = hub.key.read_bytes()
    assert stat.S_IMODE(hub.key.stat().st_mode) == 0o600 and stat.S_IMODE(hub.env.stat().st_mode) == 0o600
    assert keys["changed"] is True and keys["key_source"] == "generated"
    assert keys["changes"] == {"key_file": "created", "env_file": "created", "instance_document": "created"}
    assert keys["written"] == [str(hub.key), str(hub.env), str(hub.document)]
    assert keys["fingerprint"] == fingerprint_of(pem) == fingerprint_of(env_key_pem(hub.env))
    document = json.loads(hub.document.read_bytes())
    assert document["id"] == keys["did"] == "did:web:hub.example.test"
    (method,) = document["verificationMethod"]
    assert _did.raw_from_multibase(method["publicKeyMultibase"]) == base64.b64decode(keys["public_key"]["base64"])
    assert sorted(hub.files()) == sorted(
        ["keys/ring-hub.pem", "srv/.env", "web/.well-known/did.json", str(backup.relative_to(hub.root))]
    )

    # did_keys alone finds all of it in place, with the same key.
    again = ok(run_module("did_keys", hub.keys_options(), check=True))
    assert again["changed"] is False and again["fingerprint"] == keys["fingerprint"]
    assert_no_secret({"ansible output": res.output}, password_forms("database password", hub.db.server.password))
    assert_no_secret({"ansible output": res.output, "results": json.dumps(res.results)}, key_forms(pem))


# -- every option is checked before the first step runs ----------------------------------------------------

BAD_LATER_STEPS = {
    "did_keys hub_url not http(s)": (
        lambda hub: {"did_keys": hub.keys_options(hub_url="ftp://x")},
        "did_keys",
        "did_keys: hub_url must be an http(s) URL with a host, got 'ftp://x'",
    ),
    "did_keys unknown option": (
        lambda hub: {"did_keys": hub.keys_options(hub_urll=HUB_URL)},
        "did_keys",
        "did_keys: Unsupported parameters",
    ),
    "redis_flush mode bogus": (lambda hub: {"redis_flush": {"mode": "bogus"}}, "redis_flush[0]", "bogus"),
    "redis_flush patterns with mode all": (
        lambda hub: {"redis_flush": {"mode": "all", "patterns": ["cache:*"]}},
        "redis_flush[0]",
        "redis_flush[0]: patterns only apply to mode: pattern, not mode: all",
    ),
    "redis_flush second URL not Redis": (
        lambda hub: {"redis_urls": [redis_url(hub.redis), "http://127.0.0.1:1/"]},
        "redis_flush[1]",
        "redis_flush[1]: ",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LATER_STEPS))
def test_a_bad_later_step_fails_before_the_database_is_touched(case: str, hub: Hub) -> None:
    make, label, text = BAD_LATER_STEPS[case]
    before = hub.state()
    res = run_steps(hub.args(**make(hub)))
    assert res.failed
    result = res.result
    assert result["failed_step"] == label and result["nothing_changed"] is True
    assert text in res.msg and res.msg.endswith("; nothing was changed"), res.msg
    assert result["steps"] == {} and "ran" not in result
    assert hub.state() == before  # rows, schema, marker, Redis, no key/.env/DID/backup file


def test_a_key_file_holding_another_key_fails_before_the_database_is_touched(hub: Hub) -> None:
    on_disk = new_key_pem()
    hub.key.write_text(on_disk)
    hub.key.chmod(0o600)
    stamp = (hub.key.read_bytes(), hub.key.stat().st_mtime_ns)
    before = hub.state()
    res = run_steps(hub.args(private_key_content=new_key_pem()), verbosity=3)
    assert res.failed
    assert res.result["failed_step"] == "did_keys" and res.result["nothing_changed"] is True
    assert "holds a different key" in res.msg and f"sha256:{fingerprint_of(on_disk)}" in res.msg
    assert hub.state() == before and (hub.key.read_bytes(), hub.key.stat().st_mtime_ns) == stamp
    assert_no_secret({"ansible output": res.output}, key_forms(on_disk))


def secret_inside(hub: Hub, where: str) -> tuple[dict[str, Any], str, list[SecretForm]]:
    """reset_steps' options with a secret inside a step's dictionary (not given at the top as well)."""
    if where == "pg_schema_reset":
        password = "Pg-" + secrets.token_hex(12)
        url = hub.db.url(password=password, params="schema=public")
        forms = [SecretForm("database URL", url), *password_forms("database password", password)]
        return hub.args(database_url=None, pg_schema_reset=hub.pg_options(database_url=url)), "database_url", forms
    if where == "redis_flush":
        password = "Rd-" + secrets.token_hex(12)
        return hub.args(redis_flush={"mode": "all", "password": password}), "password", password_forms("pw", password)
    pem = new_key_pem()
    return hub.args(did_keys=hub.keys_options(private_key_content=pem)), "private_key_content", key_forms(pem)


@pytest.mark.parametrize("where", ["pg_schema_reset", "redis_flush", "did_keys"])
def test_a_secret_inside_a_step_is_refused_and_never_shown(where: str, hub: Hub) -> None:
    args, option, forms = secret_inside(hub, where)
    before = hub.state()
    res = run_steps(args, verbosity=3)
    assert res.failed
    assert res.result["failed_step"] == where and res.result["nothing_changed"] is True
    assert res.msg.startswith(f"{where}: {option} must not be inside the {where} options of reset_steps"), res.msg
    assert hub.state() == before
    assert "module_args:" in res.output  # -vvv shows the invocation: the refused value is masked there too
    assert_no_secret({"ansible output": res.output, "results": json.dumps(res.results)}, forms)


# -- the first failure stops the run -----------------------------------------------------------------------


def redis_secret_forms(url: str) -> list[SecretForm]:
    return [SecretForm("Redis URL", url), *password_forms("Redis password", ACL_USERS[REDIS_USER][0])]


def test_an_unreachable_redis_stops_the_run_after_the_committed_database_reset(hub: Hub) -> None:
    before = hub.state()
    unreachable = unreachable_redis_url()
    res = run_steps(hub.args(redis_urls=[unreachable]), verbosity=3)
    assert res.failed
    result = res.result
    assert result["failed_step"] == "redis_flush[0]"
    # The database step ran and committed: its result is there, and so is the new database.
    pg = result["steps"]["pg_schema_reset"]
    assert pg["changed"] is True and {t["name"]: t["rows"] for t in pg["dropped"]["tables"]} == before["rows"]
    history = hub.db.query("SELECT migration_name FROM _prisma_migrations ORDER BY started_at")
    assert [a["name"] for a in pg["applied"]] == [name for (name,) in history] and history
    assert hub.db.query('SELECT slug FROM "Ring"') == [(ROOT_RING["slug"],)]
    assert Path(pg["backup"]["path"]).is_file()
    # So the failure does not say "nothing was changed": it says what the step before did.
    assert result.get("nothing_changed") is not True and result["changed"] is True
    assert not res.msg.endswith("nothing was changed")
    assert res.msg.endswith(
        "; redis_flush[0] changed nothing, but the steps before it did: pg_schema_reset (their results are in steps)"
    ), res.msg
    assert set(result["seconds"]) == {"pg_schema_reset", "redis_flush[0]", "total"}
    # Nothing after the failure ran: the shared Redis still has its keys, no key file was written.
    assert list(result["steps"]) == ["pg_schema_reset"]
    assert hub.redis.dbsizes() == before["redis"]
    assert not hub.key.exists() and not hub.env.exists() and not hub.document.exists()
    assert_no_secret(
        {"ansible output": res.output, "results": json.dumps(res.results)}, redis_secret_forms(unreachable)
    )


def test_in_check_mode_a_failure_after_the_database_check_is_nothing_changed(hub: Hub) -> None:
    """The preflight: the database check would change things, but in check mode nothing was changed."""
    before = hub.state()
    res = run_steps(hub.args(redis_urls=[unreachable_redis_url()]), check=True)
    assert res.failed
    result = res.result
    assert result["failed_step"] == "redis_flush[0]" and result["nothing_changed"] is True
    assert result["changed"] is False and res.msg.endswith("; nothing was changed"), res.msg
    assert "steps before it" not in res.msg
    assert result["steps"]["pg_schema_reset"]["changed"] is True  # it would change: the check says what it found
    assert hub.state() == before


def test_the_second_redis_unreachable_after_the_first_was_flushed(hub: Hub) -> None:
    before = hub.state()
    unreachable = unreachable_redis_url()
    args = hub.args(database_url=None, pg_schema_reset=None, redis_urls=[redis_url(hub.redis), unreachable])
    res = run_steps(args)
    assert res.failed
    result = res.result
    assert result["failed_step"] == "redis_flush[1]"
    (first,) = result["steps"]["redis_flush"]
    assert first["changed"] is True and first["deleted"] == REDIS_KEYS
    assert hub.redis.dbsizes() == {}  # the first was flushed
    assert "redis_flush[1] changed nothing, but the steps before it did: redis_flush[0]" in res.msg
    assert result.get("nothing_changed") is not True
    assert "did_keys" not in result["steps"] and not hub.key.exists()
    assert {k: v for k, v in hub.state().items() if k != "redis"} == {k: v for k, v in before.items() if k != "redis"}
    assert_no_secret({"ansible output": res.output}, redis_secret_forms(unreachable))


# -- a failure of the first step -------------------------------------------------------------------------------


def mark(db: PgDatabase, environment: str) -> None:
    db.execute(f'COMMENT ON DATABASE "{db.name}" IS %s', (f"ringhub.environment={environment}",))


@pytest.mark.parametrize("fault", ["environment marker", "no migrations dir"])
def test_a_database_step_refusal_comes_with_its_own_details_and_redis_untouched(fault: str, hub: Hub) -> None:
    if fault == "environment marker":
        mark(hub.db, "production")
        options, text = hub.pg_options(expected_environment="staging"), "marked as environment 'production'"
    else:
        missing = hub.root / "no-such-migrations"
        options, text = hub.pg_options(migrations_dir=str(missing)), str(missing)
    before = hub.state()
    res = run_steps(hub.args(pg_schema_reset=options))
    assert res.failed
    result = res.result
    assert result["failed_step"] == "pg_schema_reset" and result["nothing_changed"] is True
    assert text in res.msg and res.msg.endswith("nothing was changed"), res.msg
    assert result["steps"] == {} and result["changed"] is False
    assert hub.state() == before  # the database, its marker, Redis, no file
    # pg_schema_reset's own failure, as the module alone gives it, is at the top of the result.
    alone = run_module("pg_schema_reset", {"database_url": hub.database_url, **options})
    assert alone.failed and alone.msg == res.msg
    own = {k: v for k, v in alone.result.items() if k not in ("invocation", "exception", "_ansible_no_log")}
    assert without_timing({k: result[k] for k in own}) == without_timing(own)
    assert result["connection"]["database"] == hub.db.name and "********" in result["connection"]["url"]


# -- secrets at -vvv ---------------------------------------------------------------------------------------------


def test_no_secret_shows_at_vvv_in_check_mode_or_in_a_real_run(hub: Hub) -> None:
    pem = new_key_pem()
    database_url = hub.database_url
    url = redis_url(hub.redis)
    args = hub.args(private_key_content=pem)
    assert args["database_url"] == database_url and args["redis_urls"] == [url]
    forms = [
        *password_forms("database password", hub.db.server.password),
        SecretForm("database URL", database_url),
        *redis_secret_forms(url),
        *key_forms(pem),
    ]
    check = run_steps(args, check=True, verbosity=3)
    ok(check)
    real = run_steps(args, verbosity=3)
    result = ok(real)
    # The run used them: the database was reset, Redis emptied, the given key written.
    assert hub.db.query('SELECT slug FROM "Ring"') == [(ROOT_RING["slug"],)] and hub.redis.dbsizes() == {}
    assert result["steps"]["did_keys"]["key_source"] == "content"
    assert fingerprint_of(hub.key.read_bytes()) == fingerprint_of(pem) == result["steps"]["did_keys"]["fingerprint"]
    for run in (check, real):
        # -vvv shows the module's invocation (its module_args): the secrets are masked there as everywhere.
        assert "module_args:" in run.output and "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run.output
        assert_no_secret({"ansible output": run.output, "results": json.dumps(run.results)}, forms)


# -- --diff ------------------------------------------------------------------------------------------------------


def test_diff_mode_shows_the_key_step_diff_among_the_diffs(hub: Hub) -> None:
    pem = new_key_pem()
    before = hub.state()
    res = run_steps(hub.args(database_url=None, pg_schema_reset=None, private_key_content=pem), check=True, diff=True)
    result = ok(res)
    assert hub.state() == before
    diffs = result["diff"]
    assert isinstance(diffs, list) and [d["before_header"] for d in diffs] == ["redis_flush[0]", "did_keys"]
    assert [d["after_header"] for d in diffs] == ["redis_flush[0]", "did_keys"]
    keys = diffs[1]
    fingerprint = fingerprint_of(pem)
    assert keys["before"]["key_file"] == "absent" and keys["after"]["key_file"] == f"sha256:{fingerprint}"
    assert keys["before"]["instance_document"] == "absent"
    assert keys["after"]["instance_document"] == result["steps"]["did_keys"]["public_key"]["multibase"]
    assert keys["after"]["env RING_HUB_PRIVATE_KEY"] == f"base64_pem sha256:{fingerprint}"
    node = f"127.0.0.1:{hub.redis.port}"
    assert diffs[0]["before"]["keys"] == {node: {f"db{db}": len(k) for db, k in REDIS_DATA.items()}}
    # The callback prints both, each under its step's name.
    assert "--- before: did_keys" in res.output and "+++ after: did_keys" in res.output
    assert f"sha256:{fingerprint}" in res.output
    assert_no_secret({"ansible output": res.output}, key_forms(pem))
