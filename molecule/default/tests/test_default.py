"""pytest-testinfra checks of the state a full reset leaves (molecule scenario ``default``).

The deployment (tests/harness/deployment.py) was brought up by the prepare playbook, its state
before the reset saved as ``before.json`` in the scenario's ephemeral directory, and converge
ran ``playbooks/reset.yml`` with ``-vvv``, its output kept as ``reset.log``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from harness.secret_forms import assert_no_secret, deployment_secret_forms

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
ROOT_ROLES = {
    "owner": [
        "manage_ring",
        "manage_members",
        "manage_roles",
        "manage_posts",
        "moderate_content",
        "invite_members",
        "block_users",
        "delete_ring",
    ],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}


def _state() -> dict[str, Any]:
    pointer = EPHEMERAL / "deployment-dir"
    if not pointer.exists():
        pytest.skip("no deployment: run the scenario with molecule (prepare brings it up)")
    directory = Path(pointer.read_text().strip())
    return json.loads((directory / "deployment.json").read_text())


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return _state()


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    return json.loads((EPHEMERAL / "before.json").read_text())


@pytest.fixture(scope="module")
def reset_log() -> str:
    return (EPHEMERAL / "reset.log").read_text()


def psql(host: Any, state: dict[str, Any], sql: str, dbname: str = "ringhub") -> str:
    db = state["database"]
    cmd = (
        f"PGPASSWORD={shlex.quote(db['superuser_password'])} {db['bindir']}/psql -X -A -t -v ON_ERROR_STOP=1 "
        f"-h {db['host']} -p {db['port']} -U {db['superuser']} -d {dbname} -c {shlex.quote(sql)}"
    )
    return host.check_output(cmd)


def redis_cli(host: Any, state: dict[str, Any], *args: str) -> str:
    redis = state["redis"]
    cmd = f"REDISCLI_AUTH={shlex.quote(redis['password'])} redis-cli -h 127.0.0.1 -p {redis['port']} " + " ".join(
        shlex.quote(a) for a in args
    )
    return host.check_output(cmd)


# The verification that ends the reset leaves the trace of its test actor (did:web:...:users:verify-<hash>),
# who joined the root ring and left it again: its Actor, Membership, Badge, HttpSignature and AuditLog rows.
TEST_ACTOR = "%:users:verify-%"


def test_every_row_of_the_old_data_is_gone(host: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    tables = before["counts"]["tables"]
    assert sum(t["rows"] for name, t in tables.items() if name not in ("_prisma_migrations",)) > 50
    for name in tables:
        if name in ("Ring", "RingRole", "_prisma_migrations"):
            continue
        others = f"SELECT count(*) FROM \"{name}\" t WHERE row_to_json(t)::text NOT LIKE '{TEST_ACTOR}'"
        assert psql(host, state, others) == "0", name


def test_one_root_ring_with_its_three_roles(host: Any, state: dict[str, Any]) -> None:
    rings = json.loads(
        psql(
            host,
            state,
            "SELECT json_agg(json_build_object('slug', slug, 'name', name, 'owner', \"ownerDid\", "
            "'parent', \"parentId\", 'visibility', visibility, 'join', \"joinPolicy\", 'post', \"postPolicy\", "
            "'meta', metadata)) FROM \"Ring\"",
        )
    )
    assert len(rings) == 1
    ring = rings[0]
    assert ring["slug"] == "spool" and ring["name"] == "The Spool"
    assert ring["owner"] == state["instance_did"] and ring["parent"] is None
    assert (ring["visibility"], ring["join"], ring["post"]) == ("PUBLIC", "OPEN", "OPEN")
    assert ring["meta"]["isRoot"] is True and ring["meta"]["createdBy"] == "system" and ring["meta"]["resetAt"]
    roles = json.loads(
        psql(
            host,
            state,
            'SELECT json_object_agg(r.name, r.permissions) FROM "RingRole" r JOIN "Ring" g ON g.id = r."ringId"',
        )
    )
    assert roles == ROOT_ROLES


def test_prisma_history_records_every_migration(host: Any, state: dict[str, Any]) -> None:
    migrations_dir = Path(state["paths"]["migrations_dir"])
    expected = {
        d.name: hashlib.sha256((d / "migration.sql").read_bytes()).hexdigest()
        for d in sorted(migrations_dir.iterdir())
        if (d / "migration.sql").is_file()
    }
    rows = psql(
        host,
        state,
        "SELECT migration_name || ' ' || checksum || ' ' || (finished_at IS NOT NULL)::text "
        "|| ' ' || applied_steps_count FROM _prisma_migrations ORDER BY migration_name",
    ).splitlines()
    assert rows == [f"{name} {checksum} true 1" for name, checksum in expected.items()]


def test_redis_is_empty(host: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    assert sum(db["keys"] for db in before["counts"]["redis"].values()) > 0
    # Only the hub's cached DID document of the verification's test actor, written after the flush.
    keyspace = redis_cli(host, state, "INFO", "keyspace").strip().splitlines()[1:]
    assert [line.split(":", 1)[0] for line in keyspace] == ["db0"]
    keys = redis_cli(host, state, "-n", "0", "--scan").split()
    assert len(keys) == 1 and keys[0].startswith("did:did:web:") and ":users:verify-" in keys[0]


def test_the_reset_ended_with_the_verification(host: Any, state: dict[str, Any], reset_log: str) -> None:
    assert "Ring Hub verification PASSED in " in reset_log
    names = ["health", "root ring", "instance DID document", "test actor", "join", "badge", "after restart", "cleanup"]
    for number, name in enumerate(names, 1):
        assert f"{number} {name}: PASSED - " in reset_log, name
    # The test actor joined and left: its membership and badge are revoked, its DID document and key are gone.
    rows = psql(
        host,
        state,
        'SELECT m."actorDid" || \' \' || m.status || \' \' || (b."revokedAt" IS NOT NULL)::text FROM "Membership" m '
        'JOIN "Badge" b ON b."membershipId" = m.id',
    ).splitlines()
    assert len(rows) == 1 and ":users:verify-" in rows[0] and rows[0].endswith(" REVOKED true")
    actor_did = rows[0].split(" ", 1)[0]
    user_id = actor_did.rsplit(":", 1)[1]
    assert not host.file(f"{state['paths']['web_root']}/users/{user_id}").exists
    words = (word.strip("\"',") for word in reset_log.split())
    key_files = {word for word in words if word.startswith("/") and word.endswith("/actor.pem")}
    assert key_files and not any(host.file(path).exists for path in key_files)
    # The hubs were restarted by the verification too, and answer ready with the root ring.
    for hub in state["hubs"]:
        assert f"restarted {hub['name']} (command, ready after " in reset_log


def test_key_file_and_env_value_persisted(host: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    key = host.file(state["paths"]["key"])
    assert key.exists and key.mode == 0o600
    assert hashlib.sha256(key.content).hexdigest() == before["counts"]["key_file_sha256"]
    env = host.file(state["paths"]["env_file"]).content_string
    values = [line.split("=", 1)[1] for line in env.splitlines() if line.startswith("RING_HUB_PRIVATE_KEY=")]
    assert values == [base64.b64encode(key.content).decode()]


def test_instance_did_document_is_served_with_the_key(host: Any, state: dict[str, Any]) -> None:
    served = json.loads(host.check_output(f"curl -sf --noproxy '*' {state['hub_url']}/.well-known/did.json"))
    assert served["id"] == state["instance_did"]
    method = served["verificationMethod"][0]
    assert method["id"] == state["instance_did"] + "#key-1"
    pub = host.check_output(
        f"openssl pkey -in {shlex.quote(state['paths']['key'])} -pubout -outform DER | tail -c 32 | base64 -w0"
    )
    assert base64.b64decode(pub) == _multibase_raw(method["publicKeyMultibase"])


def _multibase_raw(value: str) -> bytes:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = 0
    for char in value[1:]:
        number = number * 58 + alphabet.index(char)
    data = number.to_bytes((number.bit_length() + 7) // 8, "big")
    assert data[:2] == b"\xed\x01"
    return data[2:]


def test_every_hub_answers_ready_and_serves_the_root_ring(host: Any, state: dict[str, Any]) -> None:
    for hub in state["hubs"]:
        ready = json.loads(host.check_output(f"curl -sf --noproxy '*' {hub['url']}/health/ready"))
        assert ready["status"] == "ready"
        ring = json.loads(host.check_output(f"curl -sf --noproxy '*' {hub['url']}/trp/rings/spool"))
        assert ring["slug"] == "spool"


def test_audit_line(host: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    audit = host.file(state["paths"]["audit_log"])
    assert audit.exists and audit.mode == 0o600
    lines = audit.content_string.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "reset" and record["status"] == "succeeded"
    details = record["details"]
    assert details["status"] == "succeeded" and details["hosts"] == [h["name"] for h in state["hubs"]]
    assert details["operator"] and details["started"] and details["run_id"]
    backup = Path(details["backup"]["path"])
    assert backup.parent == Path(state["paths"]["backup_dir"])
    assert hashlib.sha256(host.file(str(backup)).content).hexdigest() == details["backup"]["sha256"]
    steps = details["steps"]
    for step in ("preflight", "reset", "redis_flush"):
        assert steps[step]["status"] == "succeeded", step
    # The key, its env value and the DID document were there: the preflight's check found them in place.
    assert steps["did_keys"]["status"] == "in place (checked by the preflight)"
    assert steps["did_keys"]["changes"] == dict.fromkeys(("key_file", "env_file", "instance_document"), "unchanged")
    assert steps["reset"]["seconds"] > 0 and steps["reset"]["phases"]["backup"] >= 0
    assert steps["preflight"]["seconds"] > 0 and steps["redis_flush"]["seconds"] >= 0
    assert steps["did_keys"]["seconds"] == 0  # not run: nothing to do
    # The key is named by its public-key fingerprint (SHA-256 of the DER SubjectPublicKeyInfo).
    assert (
        steps["did_keys"]["public_key_sha256"] == before["key_fingerprint"] and "fingerprint" not in steps["did_keys"]
    )
    assert {h: r["status"] for h, r in steps["restart"].items()} == {h["name"]: "succeeded" for h in state["hubs"]}
    assert details["check_mode"] is False


def test_backup_restores_the_old_data(host: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    record = json.loads(host.file(state["paths"]["audit_log"]).content_string.splitlines()[-1])
    backup = record["details"]["backup"]["path"]
    db = state["database"]
    psql(host, state, "DROP DATABASE IF EXISTS restore_check", dbname="postgres")
    psql(host, state, "CREATE DATABASE restore_check", dbname="postgres")
    try:
        host.check_output(
            f"PGPASSWORD={shlex.quote(db['superuser_password'])} {db['bindir']}/pg_restore --no-owner "
            f"-h {db['host']} -p {db['port']} -U {db['superuser']} -d restore_check {shlex.quote(backup)}"
        )
        for name, table in before["counts"]["tables"].items():
            assert psql(host, state, f'SELECT count(*) FROM "{name}"', dbname="restore_check") == str(table["rows"]), (
                name
            )
    finally:
        psql(host, state, "DROP DATABASE IF EXISTS restore_check", dbname="postgres")


def test_no_form_of_any_secret_in_what_the_reset_printed_wrote_or_left(
    host: Any, state: dict[str, Any], reset_log: str
) -> None:
    """The -vvv output, the audit file, the backup directory's names, the rows, Redis keys and web root files the
    verification's test actor left: none holds the database or Redis password or the badge key in any form (PEM,
    base64 of the PEM as RING_HUB_PRIVATE_KEY holds it, the raw private bytes in base64 or hex)."""
    assert "ESTABLISH LOCAL CONNECTION" in reset_log  # it is the -vvv output
    assert "Ring Hub verification PASSED in " in reset_log  # with the hub_probe path
    forms = deployment_secret_forms(state)
    assert any(f.what.startswith("badge key: ") for f in forms) and any(f.what == "Redis password" for f in forms)
    paths = state["paths"]
    tables = psql(host, state, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
    dumped = "\n".join(
        psql(host, state, f"SELECT coalesce(string_agg(row_to_json(t)::text, chr(10)), '') FROM \"{t}\" t")
        for t in tables
    )
    redis = "\n".join(
        f"db0 {name} " + redis_cli(host, state, "--no-raw", "-n", "0", "DUMP", name)
        for name in redis_cli(host, state, "-n", "0", "--scan").split()
    )
    sources = {
        "the -vvv output of the reset": reset_log,
        "audit file": host.file(paths["audit_log"]).content_string,
        "backup directory listing": "\n".join(host.file(paths["backup_dir"]).listdir()),
        "rows left in the database": dumped,
        "Redis keys left": redis,
    }
    for path in Path(paths["web_root"]).rglob("*"):
        if path.is_file():
            sources[f"web root file {path}"] = path.read_bytes()
    assert "verify-" in dumped and "verify-" in redis  # the test actor's trace is among the sources
    assert_no_secret(sources, forms)


def test_file_modes(host: Any, state: dict[str, Any]) -> None:
    """The audit file 0600, the backup directory and its dump not readable by others, the key file and the .env
    holding its value 0600."""
    paths = state["paths"]
    assert host.file(paths["audit_log"]).mode == 0o600
    backups = host.file(paths["backup_dir"])
    assert backups.is_directory and backups.mode & 0o077 == 0
    dumps = [name for name in backups.listdir() if name.endswith(".dump")]
    assert dumps and all(host.file(f"{paths['backup_dir']}/{name}").mode == 0o600 for name in dumps)
    assert host.file(paths["key"]).mode == 0o600
    env = host.file(paths["env_file"])
    assert "RING_HUB_PRIVATE_KEY=" in env.content_string and env.mode == 0o600
