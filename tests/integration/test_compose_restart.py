"""compose_restart and the docker_compose restart backend on a real engine and a real Compose project.

The engine is the harness's private Podman answering the Docker API (``container_engine``), the
project a Ring Hub of the real shape (``redis`` + ``hub-api``, the sandbox hub) driven by the real
Compose CLI (``compose_hub``). Which key the running hub holds is read from its container
(``Config.Env``) and proven by the hub itself: a badge it signs now is checked with PyJWT against
the key of the DID document it serves. The tests skip only where no engine can start (see
docs/engine_harness.md), with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sandbox_hub.instance import key_env_value

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._compose import WORKING_DIR_LABEL
from harness.ansible import REPO, AnsibleRun, run_module, run_playbook
from harness.engine import HUB_SERVICE, PROJECT_LABEL, REDIS_SERVICE, SERVICE_LABEL, ComposeHub, PodmanEngine
from harness.pg import FIXTURE_MIGRATIONS

pytestmark = pytest.mark.slow

PLAYBOOK = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
}


# -- helpers ------------------------------------------------------------------------------------------


def restart(engine: PodmanEngine, hub: ComposeHub, *, check: bool = False, diff: bool = False,
            task_env: dict[str, str] | None = None, verbosity: int = 0, **args: Any) -> AnsibleRun:  # fmt: skip
    """compose_restart on ``hub``'s project, the engine given as DOCKER_HOST (as docker's own clients take it)."""
    return run_module(
        "compose_restart",
        {"project_dir": str(hub.directory), **args},
        check=check,
        diff=diff,
        env={"DOCKER_HOST": engine.docker_host},
        task_env=task_env,
        verbosity=verbosity,
    )


def write_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(_ed25519.private_pem(key))
    path.chmod(0o600)
    return path


def held_key(hub: ComposeHub) -> str | None:
    return hub.container_env(HUB_SERVICE).get("RING_HUB_PRIVATE_KEY")


def state(hub: ComposeHub) -> dict[str, tuple[str, str]]:
    """Per service: the container id and when it started (what a restart or recreation changes)."""
    return {service: (s["id"], s["started_at"]) for service, s in hub.compose.state().items()}


def new_badge(hub: ComposeHub) -> dict[str, Any]:
    """A badge the running hub signs now, for a fresh actor (a signed join to the root ring)."""
    answer = hub.join(hub.new_actor())
    assert answer.status == 201, answer.json
    got = hub.badge(answer.json["badge"]["id"])
    assert got.status == 200, got.json
    return got.json["badge"]


def verifies_with_did_document(hub: ComposeHub, badge: dict[str, Any]) -> bytes:
    """Check the badge's JWS against ``#key-1`` of the DID document the hub serves; that key's raw bytes."""
    raw = _did.document_public_key(hub.instance_document())
    jwt.decode(badge["proof"]["jws"], key=Ed25519PublicKey.from_public_bytes(raw), algorithms=["EdDSA"])
    return raw


def assert_no_secret(hub: ComposeHub, run: AnsibleRun, *keys: Ed25519PrivateKey) -> None:
    for key in [hub.private_key, *keys]:
        if key is not None:
            assert key_env_value(key) not in run.output
            assert _ed25519.private_pem(key).decode().splitlines()[1] not in run.output
    assert hub.db.server.password not in run.output


def by_service(run: AnsibleRun) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in run.result["services"]}


# -- the module ---------------------------------------------------------------------------------------


def test_a_restart_keeps_the_key_and_goes_through_the_api(
    container_engine: PodmanEngine, compose_hub: Any, tmp_path: Path
) -> None:
    hub = compose_hub()
    key_file = write_key(tmp_path / "badge.pem", hub.private_key)
    before = state(hub)
    key_before = held_key(hub)

    checked = restart(container_engine, hub, check=True, diff=True, key_path=str(key_file))
    assert not checked.failed, checked.msg
    assert checked.changed
    assert [(s["service"], s["action"]) for s in checked.result["services"]] == [
        (REDIS_SERVICE, "restart"),
        (HUB_SERVICE, "restart"),  # the key service last
    ]
    assert checked.result["commands"] == []
    assert checked.result["key"]["matches"] is True
    assert state(hub) == before  # check mode restarted nothing

    run = restart(container_engine, hub, diff=True, key_path=str(key_file), verbosity=3)
    assert not run.failed, run.msg
    services = by_service(run)
    assert services[REDIS_SERVICE]["action"] == services[HUB_SERVICE]["action"] == "restart"
    assert services[HUB_SERVICE]["health"] == "healthy"
    assert services[REDIS_SERVICE]["health"] is None  # no healthcheck: running is enough
    assert run.result["commands"] == []
    assert run.result["project"] == hub.name
    assert run.result["engine"]["name"] == "Podman Engine"
    after = state(hub)
    for service in (REDIS_SERVICE, HUB_SERVICE):
        assert after[service][0] == before[service][0]  # the same containers...
        assert after[service][1] != before[service][1]  # ...started again
    assert held_key(hub) == key_before
    assert run.result["key"]["matches"] is True
    assert run.result["key"]["containers"][0]["fingerprint"] == _ed25519.fingerprint(hub.private_key)
    assert run.result["diff"]["before"][HUB_SERVICE]["ids"] == run.result["diff"]["after"][HUB_SERVICE]["ids"]
    # The hub signs with the same key after the restart.
    assert verifies_with_did_document(hub, new_badge(hub)) == _ed25519.raw_public_key(hub.private_key)
    assert_no_secret(hub, run)
    assert_no_secret(hub, checked)


def test_a_key_changed_in_the_env_is_picked_up_by_recreation(
    container_engine: PodmanEngine, compose_hub: Any, tmp_path: Path
) -> None:
    hub = compose_hub()
    old_key = hub.private_key
    new_key = Ed25519PrivateKey.generate()
    # What did_keys does: the key file, RING_HUB_PRIVATE_KEY in the .env, the DID document.
    key_file = write_key(tmp_path / "badge.pem", new_key)
    hub.configure(private_key=new_key)
    hub.publish_instance_document(new_key)
    before = state(hub)

    checked = restart(container_engine, hub, check=True, diff=True, key_path=str(key_file))
    assert not checked.failed, checked.msg
    plan = by_service(checked)
    assert plan[REDIS_SERVICE]["action"] == "restart"
    assert plan[HUB_SERVICE]["action"] == "recreate"
    assert any("RING_HUB_PRIVATE_KEY in the .env holds another key" in r for r in plan[HUB_SERVICE]["reasons"])
    assert any("compose config hash" in r for r in plan[HUB_SERVICE]["reasons"])
    assert checked.result["commands"] == [
        " ".join([*container_engine.compose.argv, "--project-directory", str(hub.directory), "-p", hub.name,
                  "--env-file", str(hub.env_file), "up", "-d", "--no-deps", "--force-recreate", HUB_SERVICE])
    ]  # fmt: skip
    assert checked.result["key"]["after"][0]["fingerprint"] == _ed25519.fingerprint(new_key)
    assert checked.result["diff"]["after"][HUB_SERVICE]["ids"] == ["(new)"]
    # Check mode changed nothing: same containers, same start, the old key still running.
    assert state(hub) == before
    assert held_key(hub) == key_env_value(old_key)

    run = restart(container_engine, hub, diff=True, key_path=str(key_file))
    assert not run.failed, run.msg
    services = by_service(run)
    assert services[HUB_SERVICE]["action"] == "recreate"
    assert services[HUB_SERVICE]["command"] == checked.result["commands"][0]
    assert run.result["commands"] == checked.result["commands"]
    assert run.result["compose"]["command"] == list(container_engine.compose.argv)
    after = state(hub)
    assert after[HUB_SERVICE][0] != before[HUB_SERVICE][0]  # a new container...
    assert after[REDIS_SERVICE][0] == before[REDIS_SERVICE][0]  # ...redis restarted in place
    assert held_key(hub) == key_env_value(new_key)
    assert run.result["key"] == {**run.result["key"], "matches": True, "expected_source": f"the key file {key_file}"}
    # The DID document and a badge signed now agree with the new key.
    badge = new_badge(hub)
    assert verifies_with_did_document(hub, badge) == _ed25519.raw_public_key(new_key)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(badge["proof"]["jws"], key=old_key.public_key(), algorithms=["EdDSA"])
    assert_no_secret(hub, run, old_key, new_key)

    # The configuration is the running one now: the next restart needs no recreation.
    again = restart(container_engine, hub, key_path=str(key_file))
    assert not again.failed, again.msg
    assert [s["action"] for s in again.result["services"]] == ["restart", "restart"]
    assert state(hub)[HUB_SERVICE][0] == after[HUB_SERVICE][0]


def test_a_stale_container_is_detected_and_named(
    container_engine: PodmanEngine, compose_hub: Any, tmp_path: Path
) -> None:
    hub = compose_hub()
    persistent = Ed25519PrivateKey.generate()
    key_file = write_key(tmp_path / "badge.pem", persistent)  # the .env (and so the hub) still hold another key
    container = hub.hub_container().name

    run = restart(container_engine, hub, key_path=str(key_file))

    assert run.failed
    assert run.result.get("nothing_changed") is None  # the services were restarted
    assert run.result["stale_containers"] == [container]
    assert f"the hub-api container {container} holds another key" in run.msg
    assert _ed25519.fingerprint(persistent)[:16] in run.msg
    assert f"{hub.env_file} holds another key" in run.msg and "threadring.ringhub.did_keys" in run.msg
    assert "up -d --no-deps --force-recreate hub-api" in run.msg
    assert [s["service"] for s in run.result["services_done"]] == [REDIS_SERVICE, HUB_SERVICE]
    assert_no_secret(hub, run, persistent)


def test_a_key_from_the_calling_environment_never_reaches_the_hub(
    container_engine: PodmanEngine, compose_hub: Any, tmp_path: Path
) -> None:
    hub = compose_hub()
    key_file = write_key(tmp_path / "badge.pem", hub.private_key)
    intruder = Ed25519PrivateKey.generate()
    # Compose takes a variable of its environment before the .env: a hub recreated from a shell that
    # had RING_HUB_PRIVATE_KEY set runs with that key, not the .env's.
    env = {**container_engine.client_env(), "RING_HUB_PRIVATE_KEY": key_env_value(intruder)}
    subprocess.run(
        hub.compose.command("up", "-d", "--no-deps", "--force-recreate", HUB_SERVICE),
        env=env, cwd=str(hub.directory), check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    hub.wait_ready()
    assert held_key(hub) == key_env_value(intruder)

    run = restart(
        container_engine, hub, key_path=str(key_file), task_env={"RING_HUB_PRIVATE_KEY": key_env_value(intruder)}
    )

    assert not run.failed, run.msg
    assert by_service(run)[HUB_SERVICE]["action"] == "recreate"
    assert held_key(hub) == key_env_value(hub.private_key)
    assert "RING_HUB_PRIVATE_KEY set in the task's environment" in " ".join(run.output.split())
    assert verifies_with_did_document(hub, new_badge(hub)) == _ed25519.raw_public_key(hub.private_key)


def test_a_missing_service_an_unknown_project_and_no_engine_are_clear_errors_before_any_restart(
    container_engine: PodmanEngine, compose_hub: Any
) -> None:
    hub = compose_hub()
    before = state(hub)

    run = restart(container_engine, hub, services=[HUB_SERVICE, REDIS_SERVICE, "worker"])
    assert run.failed and run.result["nothing_changed"] is True
    assert f"service worker of the Compose project {hub.name} has no container" in run.msg
    assert "services with containers: hub-api, redis" in run.msg
    assert run.result["missing_services"] == ["worker"]

    run = restart(container_engine, hub, project="no-such-project")
    assert run.failed and run.result["nothing_changed"] is True
    assert "no container of the Compose project 'no-such-project'" in run.msg and hub.name in run.msg

    # A second project started from the same directory: which one is meant must be said.
    client = container_engine.client()
    other = client.containers.create(
        container_engine.image,
        ["/bin/true"],
        labels={PROJECT_LABEL: f"{hub.name}-old", SERVICE_LABEL: HUB_SERVICE, WORKING_DIR_LABEL: str(hub.directory)},
    )  # fmt: skip
    try:
        run = restart(container_engine, hub)
        assert run.failed and run.result["nothing_changed"] is True
        assert f"several Compose projects match {hub.directory}: {hub.name}, {hub.name}-old" in run.msg
        named = restart(container_engine, hub, check=True, project=hub.name)
        assert not named.failed, named.msg
    finally:
        other.remove(force=True)

    run = run_module("compose_restart", {"project_dir": str(hub.directory), "docker_host": "unix:///nonexistent.sock"})
    assert run.failed and run.result["nothing_changed"] is True
    assert "cannot reach the Docker Engine API at unix:///nonexistent.sock" in run.msg
    assert state(hub) == before  # nothing was restarted by any of them


def test_a_hub_that_exits_after_its_recreation_fails_with_its_log(
    container_engine: PodmanEngine, compose_hub: Any
) -> None:
    hub = compose_hub()
    hub.configure(extra_env={"PORT": str(hub.redis_port)})  # the port redis holds: the hub cannot listen
    run = restart(container_engine, hub, health_timeout=30)
    assert run.failed
    assert run.result.get("nothing_changed") is None
    assert f"the hub-api container {hub.name}" in run.msg and "after the recreate" in run.msg
    assert "is exited" in run.msg or "is not healthy" in run.msg
    assert "its last log lines" in run.msg
    assert [s["service"] for s in run.result["services_done"]] == [REDIS_SERVICE]
    assert_no_secret(hub, run)


# -- the reset playbook with the docker_compose backend ------------------------------------------------------


def compose_inventory(hub: ComposeHub, engine: PodmanEngine, tmp_path: Path, **extra: Any) -> Path:
    """A reset inventory for the Compose deployment: everything the .env holds is read from it."""
    group_vars = {
        "ringhub_env_file": str(hub.env_file),
        "ringhub_migrations_dir": str(FIXTURE_MIGRATIONS),
        "ringhub_backup": False,
        "ringhub_key_path": str(tmp_path / "badge.pem"),
        "ringhub_web_root": str(hub.web_root),
        "ringhub_environment": "production",
        "ringhub_audit_log": str(tmp_path / "audit.jsonl"),
        "ringhub_restart_backend": "docker_compose",
        "ringhub_docker_host": engine.docker_host,
        "ringhub_ready_timeout": 30,
        **extra,
    }
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ringhub_api_url": hub.url}
    inventory = {"all": {"children": {"production": {"hosts": {"hub1": host}, "vars": group_vars}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def reset(hub: ComposeHub, inventory: Path, *, check: bool = False) -> AnsibleRun:
    extra = {**PHRASES, "ringhub_confirm_target": hub.db.name}
    return run_playbook(PLAYBOOK, extra, inventory=inventory, limit="production", check=check, timeout=400)


def test_the_reset_playbook_recreates_hub_api_with_the_key_it_keeps_and_waits_for_the_replica(
    container_engine: PodmanEngine, compose_hub: Any, pg_standby_factory: Any, tmp_path: Path
) -> None:
    """The seed's failure: a hub started without a key, the key written into .env by the reset, then a
    plain `docker-compose restart` would keep the hub keyless. The playbook recreates hub-api."""
    hub = compose_hub(private_key=None)
    standby = pg_standby_factory(hub.db.server)
    inventory = compose_inventory(hub, container_engine, tmp_path, ringhub_pg_replicas=[standby.url(hub.db.name)])
    before = state(hub)
    env_before = hub.env_file.read_text()

    checked = reset(hub, inventory, check=True)
    assert checked.rc == 0, checked.output[-3000:]
    assert "hub-api: would be restarted through the API" in " ".join(checked.output.split())
    assert state(hub) == before and hub.env_file.read_text() == env_before
    assert not (tmp_path / "badge.pem").exists() and not (tmp_path / "audit.jsonl").exists()

    run = reset(hub, inventory)
    assert run.rc == 0, run.output[-4000:]
    key = _ed25519.load_private_key((tmp_path / "badge.pem").read_bytes())
    result = run.task("Restart the Compose services, recreating those whose configuration changed")
    assert {s["service"]: s["action"] for s in result["services"]} == {
        REDIS_SERVICE: "restart",
        HUB_SERVICE: "recreate",
    }
    assert result["key"]["matches"] is True and result["key"]["expected_source"] == "key_fingerprint"
    assert state(hub)[HUB_SERVICE][0] != before[HUB_SERVICE][0]
    assert held_key(hub) == key_env_value(key)
    assert verifies_with_did_document(hub, new_badge(hub)) == _ed25519.raw_public_key(key)
    # The replica had replayed the reset's commit before the restart began.
    replica = run.task("Wait until every replica has replayed the reset's commit")
    reset_result = run.task(
        "Back up, then reset the schema and seed the root ring in one transaction; empty Redis; keep the badge key"
    )["steps"]["pg_schema_reset"]
    assert replica["lsn"] == reset_result["commit_lsn"] and replica["caught_up"] is True
    names = [r["task"] for r in run.results]
    assert names.index("Wait until every replica has replayed the reset's commit") < names.index(
        "Restart the Compose services, recreating those whose configuration changed"
    )
    audit = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["status"] == "succeeded"
    assert audit["details"]["steps"]["restart"]["hub1"]["backend"] == "docker_compose"
    assert audit["details"]["steps"]["restart"]["hub1"]["status"] == "succeeded"
    assert key_env_value(key) not in run.output and hub.db.server.password not in run.output


def test_a_lagging_replica_fails_the_reset_before_hub_api_restarts(
    container_engine: PodmanEngine, compose_hub: Any, pg_standby_factory: Any, tmp_path: Path
) -> None:
    hub = compose_hub()
    write_key(tmp_path / "badge.pem", hub.private_key)
    standby = pg_standby_factory(hub.db.server)
    inventory = compose_inventory(
        hub, container_engine, tmp_path, ringhub_pg_replicas=[standby.url(hub.db.name)],
        ringhub_pg_replica_timeout=1, ringhub_verify_after_reset=False,
    )  # fmt: skip
    standby.pause_replay()
    before = state(hub)

    run = reset(hub, inventory)

    assert run.rc != 0
    flat = " ".join(run.output.split())
    assert re.search(r"is \d+ bytes( \([^)]*\))? behind WAL position", flat) and "WAL replay is paused" in flat
    assert "hub1 is not restarted" not in flat  # the primary itself failed at the wait
    assert state(hub) == before  # neither redis nor hub-api was touched
    audit = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["status"] == "failed"
    assert audit["details"]["steps"]["restart"]["hub1"]["status"] == "not run"
    assert any("behind WAL position" in f["msg"] for f in audit["details"]["failures"])
    assert standby.password not in run.output
