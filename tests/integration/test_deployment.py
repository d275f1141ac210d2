"""The local Ring Hub deployment (tests/harness/deployment.py) the reset playbook runs against.

Checked from outside: the processes, files, modes, inventory (through
ansible-inventory), the database as its owner sees it, Redis, and the hubs over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import psycopg2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sandbox_hub import ctl
from sandbox_hub.config import decode_private_key
from sandbox_hub.instance import badge_path, http

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519
from harness.deployment import Deployment, DeploymentError, down, new_directory, up
from harness.pg import REPO

DEPLOYMENT = REPO / "tests" / "harness" / "deployment.py"
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
GROUP_VARS = {
    "ringhub_database_url",
    "ringhub_redis_url",
    "ringhub_instance_did",
    "ringhub_hub_url",
    "ringhub_root_slug",
    "ringhub_migrations_dir",
    "ringhub_backup_dir",
    "ringhub_key_path",
    "ringhub_env_file",
    "ringhub_web_root",
    "ringhub_environment",
    "ringhub_audit_log",
    "ringhub_restart_backend",
    "ringhub_ready_timeout",
}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``deployment.py`` run as the docs say: the venv Python, from the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL", "REDIS_URL")}
    proc = subprocess.run(
        [PYTHON, str(DEPLOYMENT), *args],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def processes(dep: Deployment) -> dict[str, int]:
    """Every process the deployment runs: hubs, redis-server, the postmaster."""
    pids = {hub["name"]: ctl.read_pid(hub["pid_file"]) for hub in dep.state["hubs"]}
    pids["redis"] = dep.state["redis"]["pid"]
    pids["postgres"] = int((Path(dep.state["database"]["data_dir"]) / "postmaster.pid").read_text().split()[0])
    return pids


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                if text in entry.joinpath("cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def secret_file(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is {oct(path.stat().st_mode)}"


def published_key(url: str, did: str) -> Ed25519PublicKey:
    answer = http("GET", url + "/.well-known/did.json")
    assert answer.status == 200
    doc = _did.parse_document(answer.body)
    assert doc["id"] == did
    return Ed25519PublicKey.from_public_bytes(_did.document_public_key(doc, f"{did}#key-1"))


@pytest.fixture
def two_hubs() -> Any:
    """``deployment.py up --hubs 2 --demo-data`` through the CLI; ``down`` through the CLI."""
    directory = new_directory()
    try:
        run = cli("up", "--dir", str(directory), "--hubs", "2", "--demo-data")
        yield Deployment.load(directory), run.stdout
    finally:
        cli("down", "--dir", str(directory), check=False)
        down(directory)
        directory.parent.rmdir()


def test_two_hubs_one_database_and_everything_a_reset_needs(two_hubs: Any) -> None:
    dep, printed = two_hubs
    d = dep.directory
    # Both hubs ready, same root ring from the one database.
    assert len(dep.hub_urls) == 2 and dep.hub_urls[0] != dep.hub_urls[1]
    rings = []
    for url in dep.hub_urls:
        ready = http("GET", url + "/health/ready")
        assert (ready.status, ready.json["checks"]) == (200, {"database": "ok", "redis": "ok"})
        rings.append(http("GET", url + "/trp/rings/spool").json)
    assert rings[0] == rings[1] and rings[0]["name"] == "The Spool" and rings[0]["ownerDid"] == "did:web:127.0.0.1"
    assert dep.hub_url == dep.hub_urls[0] and dep.instance_did == "did:web:127.0.0.1"

    # The database: owned by a password login role that is no superuser; migrations recorded as Prisma does.
    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            assert cur.fetchone() == ("ringhub", False, False, False)
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
            assert cur.fetchone() == ("ringhub",)
            cur.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            assert cur.fetchall() == [("ringhub",)]
            cur.execute('SELECT migration_name, checksum, finished_at IS NOT NULL FROM "_prisma_migrations" ORDER BY 1')
            recorded = cur.fetchall()
            cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'ringhub'")
            assert cur.fetchone() == ("ringhub.environment=production",)
    finally:
        conn.close()
    migrations = sorted(Path(dep.state["paths"]["migrations_dir"]).glob("*/migration.sql"))
    import hashlib

    assert recorded == [(m.parent.name, hashlib.sha256(m.read_bytes()).hexdigest(), True) for m in migrations]
    with pytest.raises(psycopg2.OperationalError):  # the password is required over TCP
        psycopg2.connect(host="127.0.0.1", port=dep.state["database"]["port"], user="ringhub", dbname="ringhub")

    # Redis has a password.
    import redis

    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=dep.state["redis"]["port"]).ping()

    # The key: 0600 PEM, and RING_HUB_PRIVATE_KEY in deploy/.env is base64 of that PEM text.
    key_path, env_file = d / "keys" / "ring-hub.pem", d / "deploy" / ".env"
    secret_file(key_path)
    secret_file(env_file)
    file_key = _ed25519.load_private_key(key_path.read_bytes(), None, source="test")
    env = {}
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _eq, value = line.partition("=")
            env[name] = value
    assert base64.b64decode(env["RING_HUB_PRIVATE_KEY"]) == key_path.read_bytes()
    hub_key = decode_private_key(env["RING_HUB_PRIVATE_KEY"])  # as hub-api decodes it
    assert hub_key is not None and _ed25519.same_key(hub_key, file_key)
    assert env["NODE_ENV"] == "production" and env["RING_HUB_URL"] == dep.hub_urls[0]
    assert env["DATABASE_URL"].endswith("/ringhub?schema=public&connection_limit=5")
    assert env["DATABASE_URL"] == dep.database_url and env["REDIS_URL"] == dep.redis_url
    # The instance DID document is published with that key; backups empty; the audit file not created.
    assert _ed25519.same_key(published_key(dep.hub_urls[1], dep.instance_did), file_key)
    assert (d / "backups").is_dir() and not any((d / "backups").iterdir())
    assert not (d / "audit" / "ringhub-audit.jsonl").exists()
    for name in ("deployment.json", "inventory.yml"):
        secret_file(d / name)

    # Nothing printed or written outside the 0600 files holds a password or the key.
    secrets = [dep.state["database"]["role_password"], dep.state["redis"]["password"], env["RING_HUB_PRIVATE_KEY"]]
    secrets.append(dep.state["database"]["superuser_password"])
    for text in (printed, *(p.read_text(errors="replace") for p in d.rglob("*.log"))):
        for secret in secrets:
            assert secret not in text


def test_inventory_holds_the_playbooks_contract(two_hubs: Any) -> None:
    dep, _printed = two_hubs
    proc = subprocess.run(
        [str(Path(PYTHON).parent / "ansible-inventory"), "-i", str(dep.inventory), "--list"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        check=True,
    )
    listing = json.loads(proc.stdout)
    assert listing["production"]["hosts"] == ["hub1", "hub2"]
    hostvars = listing["_meta"]["hostvars"]
    for index, name in enumerate(("hub1", "hub2")):
        hv = hostvars[name]
        assert GROUP_VARS <= set(hv)
        assert hv["ansible_connection"] == "local" and hv["ansible_python_interpreter"] == PYTHON
        assert hv["ringhub_api_url"] == dep.hub_urls[index]
        assert hv["ringhub_environment"] == "production" and hv["ringhub_root_slug"] == "spool"
        assert hv["ringhub_restart_backend"] == "command" and hv["ringhub_ready_timeout"] == 30
        assert hv["ringhub_database_url"] == dep.database_url and hv["ringhub_redis_url"] == dep.redis_url
        assert hv["ringhub_hub_url"] == dep.hub_urls[0] and hv["ringhub_instance_did"] == "did:web:127.0.0.1"
        for var in ("ringhub_backup_dir", "ringhub_key_path", "ringhub_env_file", "ringhub_web_root"):
            assert Path(hv[var]).is_absolute() and Path(hv[var]).is_relative_to(dep.directory)
        assert Path(hv["ringhub_migrations_dir"], "migration_lock.toml").is_file()
        assert hv["ringhub_audit_log"] == str(dep.directory / "audit" / "ringhub-audit.jsonl")

    # The restart command, run as ansible.builtin.command runs it (split, no shell), restarts that hub only.
    import shlex

    before = processes(dep)
    command = shlex.split(hostvars["hub2"]["ringhub_restart_command"])
    assert command[0] == PYTHON and command[2] == "restart" and "--no-inherit" in command
    subprocess.run(command, check=True, capture_output=True, timeout=60, cwd="/")
    after = processes(dep)
    assert after["hub2"] != before["hub2"] and not alive(before["hub2"]) and alive(after["hub2"])
    assert after["hub1"] == before["hub1"]
    assert http("GET", dep.hub_urls[1] + "/health/ready").status == 200


def test_demo_data_and_a_join_on_hub2_that_verifies(two_hubs: Any) -> None:
    dep, printed = two_hubs
    counts = dep.counts()
    rows = {name: t["rows"] for name, t in counts["tables"].items()}
    for table in ("Ring", "RingRole", "Membership", "Badge", "PostRef", "AuditLog", "Actor", "HttpSignature"):
        assert rows[table] > 0, table
    assert rows["Ring"] >= 5 and rows["Badge"] >= 10 and rows["RingRole"] == 3 * rows["Ring"]
    assert counts["root_roles"] == ["member", "moderator", "owner"]
    assert counts["redis"]["0"]["keys"] >= 10 and counts["redis"]["1"]["keys"] >= 2
    assert counts["env_key"] == {"present": True, "matches_key_file": True}
    assert "rings (6)" in printed and "redis db1" in printed

    # The demo badges are real: each stored one verifies with the published key.
    key = published_key(dep.hub_urls[0], dep.instance_did)
    conn = dep.connect()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT "badgeData" FROM "Badge" WHERE "revokedAt" IS NULL')
            stored = [r[0] for r in cur.fetchall()]
            cur.execute('SELECT count(*) FROM "Badge" WHERE "revokedAt" IS NOT NULL')
            assert cur.fetchone()[0] >= 1  # a member left: a revoked badge
    finally:
        conn.close()
    for badge in stored:
        jwt.decode(badge["proof"]["jws"], key=key, algorithms=["EdDSA"])

    # A new member joins through hub2; the badge verifies against the DID document, and on hub1.
    actor = dep.new_actor(hub=2)
    answer = dep.join(actor, "spool", hub=2)
    assert answer.status == 201, answer.json
    badge_id = answer.json["badge"]["id"]
    assert badge_id.startswith(dep.hub_url + "/badges/")  # issued under the public URL (hub1's)
    badge = http("GET", dep.hub_urls[0] + badge_path(badge_id)).json["badge"]
    payload = jwt.decode(
        badge["proof"]["jws"], key=published_key(dep.hub_urls[1], dep.instance_did), algorithms=["EdDSA"]
    )
    assert payload["sub"] == actor.did and payload["iss"] == "did:web:127.0.0.1"
    verify = http("POST", dep.hub_urls[0] + badge_path(badge_id) + "/verify")
    assert verify.json["isValid"] is True

    after = dep.counts()
    assert after != counts and after["tables"]["Badge"]["rows"] == counts["tables"]["Badge"]["rows"] + 1


def test_counts_are_exact_and_describe_holds_no_secret(sandbox_deployment: Deployment) -> None:
    dep = sandbox_deployment
    first, second = dep.counts(), dep.counts()
    assert first == second  # stable: nothing changes between two reads
    assert first["rings"] == ["spool"] and first["total_rows"] == 4 + len(first["migrations"])
    conn = dep.connect()
    try:
        with conn.cursor() as cur:  # one character of one row: counts() sees it
            cur.execute("UPDATE \"Ring\" SET description = description || '.' WHERE slug = 'spool'")
    finally:
        conn.close()
    changed = dep.counts()
    assert changed["tables"]["Ring"]["rows"] == first["tables"]["Ring"]["rows"]
    assert changed["tables"]["Ring"]["digest"] != first["tables"]["Ring"]["digest"]
    with dep.redis_client(3) as client:
        client.set("x", "1")
    assert dep.counts()["redis"]["3"]["keys"] == 1
    description = dep.describe()
    text = json.dumps(description)
    for secret in (dep.state["database"]["role_password"], dep.state["redis"]["password"]):
        assert secret not in text
    assert base64.b64encode(dep.paths["key"].read_bytes()).decode() not in text
    assert [h["status"] for h in description["hubs"]] == [200]
    assert description["key_fingerprint"] == _ed25519.fingerprint(
        _ed25519.load_private_key(dep.paths["key"].read_bytes(), None, source="test")
    )


def test_no_key_and_no_marker(sandbox_deployment_factory: Callable[..., Deployment]) -> None:
    dep = sandbox_deployment_factory(key=False, mark="none")
    counts = dep.counts()
    assert counts["environment_marker"] is None
    assert counts["key_file_sha256"] is None and counts["env_key"] == {"present": False, "matches_key_file": None}
    assert counts["did_document_sha256"] is None
    assert "RING_HUB_PRIVATE_KEY" not in dep.paths["env_file"].read_text()
    answer = dep.join(dep.new_actor())  # production without a persistent key: no badge, as the hub does
    assert answer.status == 201 and answer.json["badge"] is None
    staging = sandbox_deployment_factory(mark="staging")
    assert staging.counts()["environment_marker"] == "staging"


def test_down_removes_every_process_and_the_directory(sandbox_deployment_factory: Callable[..., Deployment]) -> None:
    dep = sandbox_deployment_factory(hubs=2)
    pids = processes(dep)
    assert all(alive(pid) for pid in pids.values()), pids
    directory = dep.directory
    assert cli("down", "--dir", str(directory)).stdout.startswith("removed")
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not pids_mentioning(str(directory))
    assert not directory.exists()
    again = cli("down", "--dir", str(directory))  # safe twice
    assert "nothing to remove" in again.stdout


def test_up_cleans_up_after_itself_and_refuses_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "migrations"
    (broken / "20250101000000_bad").mkdir(parents=True)
    (broken / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (broken / "20250101000000_bad" / "migration.sql").write_text("CREATE TABLE nope (;\n")
    directory = new_directory()
    with pytest.raises(DeploymentError, match="applying the migrations .* failed"):
        up(directory, migrations=broken)
    assert not directory.exists()  # PostgreSQL and Redis were started, then removed
    assert not pids_mentioning(str(directory))
    directory.parent.rmdir()

    elsewhere = new_directory()
    with pytest.raises(DeploymentError, match="not a Prisma migrations directory"):
        up(elsewhere, migrations=tmp_path)
    assert not elsewhere.exists()
    elsewhere.parent.rmdir()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("keep me")
    with pytest.raises(DeploymentError, match="not an empty directory"):
        up(occupied)
    with pytest.raises(DeploymentError, match="not a deployment"):
        down(occupied)
    assert (occupied / "precious.txt").read_text() == "keep me"
    refused = cli("up", "--dir", str(occupied), check=False)
    assert refused.returncode == 1 and "not an empty directory" in refused.stderr
