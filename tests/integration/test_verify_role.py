"""The verify role (playbooks/verify.yml, and the last step of playbooks/reset.yml) against local deployments.

Real PostgreSQL, Redis and sandbox hubs (tests/harness/deployment.py); the playbooks run as an operator
runs them (their own ansible-playbook process, ``-l production``). Each failure the role must catch is
made for real (a stale or missing DID document, a missing ring or roles, a hub without its key, a hub
restarted with an ephemeral key, a hub that is down) and must come back with its own message.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_hub import ctl

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile
from harness.ansible import REPO, AnsibleRun, run_playbook

VERIFY = REPO / "playbooks" / "verify.yml"
RESET = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}
NAMES = ["health", "root ring", "instance DID document", "test actor", "join", "badge", "after restart", "cleanup"]

pytestmark = pytest.mark.slow


def verify(dep: Any, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> AnsibleRun:
    return run_playbook(VERIFY, extra_vars, inventory=dep.inventory, limit="production", timeout=300, **kwargs)


def record(run: AnsibleRun) -> dict[str, Any]:
    for entry in run.results:
        if entry["task"].endswith("Collect the checks"):
            return entry["result"]["ansible_facts"]["_ringhub_verify_record"]
    raise AssertionError(f"no verification record; rc {run.rc}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}")


def checks(run: AnsibleRun) -> dict[int, dict[str, Any]]:
    out = {c["number"]: c for c in record(run)["checks"]}
    assert [out[n]["name"] for n in sorted(out)] == NAMES
    return out


def statuses(run: AnsibleRun) -> list[str]:
    found = checks(run)
    return [found[n]["status"] for n in sorted(found)]


def summary(run: AnsibleRun) -> list[str]:
    for entry in run.results:
        if entry["task"].endswith("Summary of the verification"):
            return entry["result"]["msg"]
    raise AssertionError("no summary")


def probe_results(run: AnsibleRun) -> list[dict[str, Any]]:
    return [r["result"] for r in run.results if r["action"] in ("threadring.ringhub.hub_probe", "hub_probe")]


def assert_explained(msg: str) -> None:
    assert ". Expected: " in msg and ". Got: " in msg and ". Fix: " in msg, msg


def actor_rows(dep: Any) -> list[tuple]:
    with dep.connect() as conn, conn.cursor() as cur:
        cur.execute('SELECT m."actorDid", m.status FROM "Membership" m ORDER BY m."actorDid"')
        return cur.fetchall()


def assert_no_actor_left(dep: Any, run: AnsibleRun) -> None:
    users = dep.paths["web_root"] / "users"
    assert not users.exists() or [p.name for p in users.iterdir() if p.name.startswith("verify-")] == []
    for result in probe_results(run):
        actor = result.get("actor") or {}
        if actor.get("key_file"):
            assert not Path(actor["key_file"]).parent.exists()


# -- the whole role --------------------------------------------------------------------------


def test_a_reset_ends_with_the_verification_and_every_check_passes(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    run = run_playbook(
        RESET,
        {**PHRASES, "ringhub_verify_after_reset": True},
        inventory=dep.inventory,
        limit="production",
        timeout=300,
        verbosity=3,
    )
    assert run.rc == 0, run.stdout[-6000:]
    assert statuses(run) == ["passed"] * 8, summary(run)
    lines = summary(run)
    assert lines[0].startswith("Ring Hub verification PASSED in ")
    assert [line.split(":", 1)[0] for line in lines[1:9]] == [f"{n} {name}" for n, name in enumerate(NAMES, 1)]
    assert all(": PASSED - " in line for line in lines[1:9])
    assert "Ring Hub reset SUCCEEDED" in run.stdout
    found = checks(run)
    assert found[3]["msg"].startswith(
        f"{dep.hub_url}/.well-known/did.json: did:web:127.0.0.1#key-1 is the public key of"
    )
    assert found[7]["msg"].startswith("restarted hub1 (command, ready after ")

    # The reset's data: the root ring, and of all members only the test actor, who has left again.
    rec = record(run)
    assert actor_rows(dep) == [(rec["actor"], "REVOKED")]
    assert rec["actor"].startswith(f"did:web:127.0.0.1%3A{dep.state['hubs'][0]['port']}:users:verify-")
    counts = dep.counts()
    assert counts["rings"] == ["spool"] and counts["root_roles"] == ["member", "moderator", "owner"]
    assert_no_actor_left(dep, run)

    # The audit line describes the reset's own restart, not the verification's second one.
    audit = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
    assert audit["status"] == "succeeded" and audit["details"]["failures"] == []
    ready = [
        r["result"]["ansible_facts"]["_ringhub_ready_seconds"]
        for r in run.results
        if r["task"].endswith("Record how long the hub took to be ready")
    ]
    assert len(ready) == 2
    assert float(audit["details"]["steps"]["restart"]["hub1"]["ready_seconds"]) == float(ready[0])

    # Nothing secret in the -vvv output: passwords, the key's .env value, any private key.
    env_value = _envfile.find_var(dep.paths["env_file"].read_text(), "RING_HUB_PRIVATE_KEY")[-1]["value"]
    for secret in (dep.state["database"]["role_password"], dep.state["redis"]["password"], env_value):
        assert secret not in run.output
    assert "PRIVATE KEY" not in run.output


def test_a_failed_verification_fails_the_reset(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory()
    env_file = dep.paths["env_file"]
    no_key = env_file.with_name(".env.without-key")
    no_key.write_text("".join(line for line in env_file.read_text().splitlines(True) if "PRIVATE_KEY" not in line))
    no_key.chmod(0o600)
    command = dep.state["hubs"][0]["restart_command"].replace(shlex.quote(str(env_file)), shlex.quote(str(no_key)))
    run = run_playbook(
        RESET,
        {**PHRASES, "ringhub_verify_after_reset": True, "ringhub_restart_command": command},
        inventory=dep.inventory,
        limit="production",
        timeout=300,
    )
    assert run.rc != 0
    assert statuses(run) == ["passed"] * 4 + ["failed", "skipped", "skipped", "passed"]
    assert "Ring Hub reset FAILED" in run.stdout
    audit = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
    assert audit["status"] == "failed"
    [failure] = audit["details"]["failures"]
    assert failure["host"] == "hub1" and failure["msg"].startswith("The verification failed: 5 join: failed - ")
    assert "issued no badge" in failure["msg"]
    assert_no_actor_left(dep, run)


def test_check_mode_then_a_real_run_on_two_api_hosts(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=2)
    before = dep.counts()
    pids = [hub["pid"] for hub in dep.state["hubs"]]
    dry = verify(dep, check=True)
    assert dry.rc == 0, dry.stdout[-4000:]
    assert statuses(dry) == ["passed"] * 3 + ["skipped"] * 5
    assert checks(dry)[7]["msg"] == "check mode: the hub is not restarted"
    assert summary(dry)[0].startswith("Ring Hub verification PASSED (check mode: read-only probes only)")
    assert dep.counts() == before  # no row, key or file changed
    assert [ctl.running_pid(hub["pid_file"]) for hub in dep.state["hubs"]] == pids  # nothing restarted

    run = verify(dep)
    assert run.rc == 0, run.stdout[-4000:]
    assert statuses(run) == ["passed"] * 8
    found = checks(run)
    assert [h["host"] for h in found[1]["hosts"]] == ["hub1", "hub2"]
    assert all(h["status"] == "passed" for h in found[1]["hosts"])
    assert (
        found[1]["msg"].startswith(f"hub1: {dep.hub_urls[0]}: /health ok")
        and f"hub2: {dep.hub_urls[1]}" in found[1]["msg"]
    )
    assert "restarted hub1 (command, ready after" in found[7]["msg"] and "hub2 (command" in found[7]["msg"]
    new_pids = [ctl.running_pid(hub["pid_file"]) for hub in dep.state["hubs"]]
    assert all(new != old for new, old in zip(new_pids, pids, strict=True))  # both hubs were restarted
    assert [status for _did_, status in actor_rows(dep)] == ["REVOKED"]
    assert_no_actor_left(dep, run)

    # Rolling restarts: check 7 restarts the primary host only, the other one keeps serving.
    rolling = verify(dep, {"ringhub_restart_serial": 1})
    assert rolling.rc == 0, rolling.stdout[-4000:]
    assert statuses(rolling) == ["passed"] * 8
    msg = checks(rolling)[7]["msg"]
    assert msg.startswith("restarted hub1 (command, ready after ") and "hub2" not in msg.split(";", 1)[0]
    assert "(ringhub_restart_serial is set: the primary host only, the others kept serving)" in msg
    after_rolling = [ctl.running_pid(hub["pid_file"]) for hub in dep.state["hubs"]]
    assert after_rolling[0] != new_pids[0] and after_rolling[1] == new_pids[1]


# -- each failure with its own message -------------------------------------------------------


def test_a_hub_restarted_with_an_ephemeral_key(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory()
    env_file = dep.paths["env_file"]
    no_key = env_file.with_name(".env.without-key")
    no_key.write_text("".join(line for line in env_file.read_text().splitlines(True) if "PRIVATE_KEY" not in line))
    no_key.chmod(0o600)
    command = dep.state["hubs"][0]["restart_command"].replace(shlex.quote(str(env_file)), shlex.quote(str(no_key)))
    assert command != dep.state["hubs"][0]["restart_command"]
    run = verify(dep, {"ringhub_restart_command": command})
    assert run.rc != 0
    assert statuses(run) == ["passed"] * 6 + ["failed", "passed"]
    msg = checks(run)[7]["msg"]
    assert_explained(msg)
    assert "after the restart the hub's own verification rejects the badge" in msg
    assert "the hub restarted with another signing key (an ephemeral one when RING_HUB_PRIVATE_KEY is missing" in msg
    assert "The verification failed: 7 after restart: failed - restarted hub1" in run.output
    assert "EPHEMERAL" in Path(dep.state["hubs"][0]["log_file"]).read_text()
    assert_no_actor_left(dep, run)


def test_did_document_stale_missing_and_no_web_root(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory()
    document = dep.paths["web_root"] / ".well-known" / "did.json"
    original = document.read_bytes()
    other = _ed25519.raw_public_key(_ed25519.generate_private_key())
    document.write_bytes(_did.render_document(_did.build_document(dep.instance_did, other)))

    stale = verify(dep)
    assert stale.rc != 0
    assert statuses(stale) == ["passed", "passed", "failed", "passed", "passed", "skipped", "skipped", "passed"]
    msg = checks(stale)[3]["msg"]
    assert_explained(msg)
    assert msg.startswith(
        "the DID document's key differs from the signing key on disk: the hub restarted with another key, "
        "or the document is stale"
    )
    assert _did.multibase_from_raw(other) in msg and str(dep.paths["key"]) in msg
    assert checks(stale)[6]["msg"] == "instance_document failed"
    assert checks(stale)[7]["msg"] == "badge was skipped: the hub was not restarted"
    assert "left spool" in checks(stale)[8]["msg"]  # the actor had joined: it left again
    assert_no_actor_left(dep, stale)

    document.unlink()
    missing = verify(dep, {"ringhub_verify_restart": False})
    assert missing.rc != 0
    msg = checks(missing)[3]["msg"]
    assert_explained(msg)
    assert msg.startswith(f"no instance DID document is served at {dep.hub_url}/.well-known/did.json")
    assert f"instance_document: {dep.paths['web_root']}/.well-known/did.json" in msg

    document.write_bytes(original)
    no_web_root = verify(dep, {"ringhub_web_root": ""})
    assert no_web_root.rc == 0, no_web_root.stdout[-3000:]
    assert statuses(no_web_root) == ["passed"] * 3 + ["skipped"] * 5
    assert checks(no_web_root)[4]["msg"].startswith("no web root (ringhub_web_root is unset): checks 4 to 8 need")

    required = verify(dep, {"ringhub_web_root": "", "ringhub_verify_require_badges": True})
    assert required.rc != 0
    assert statuses(required) == ["passed"] * 3 + ["failed"] * 5
    assert "and ringhub_verify_require_badges is true" in checks(required)[4]["msg"]


def test_a_root_ring_without_roles_then_no_root_ring(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory()
    with dep.connect() as conn, conn.cursor() as cur:
        cur.execute('DELETE FROM "RingRole"')
    no_roles = verify(dep)
    assert no_roles.rc != 0
    assert statuses(no_roles) == ["passed"] * 4 + ["failed", "skipped", "skipped", "passed"]
    msg = checks(no_roles)[5]["msg"]
    assert_explained(msg)
    assert msg.startswith(
        "the hub failed to make the test actor a member of spool (HTTP 500): the root ring has no roles"
    )
    assert "threadring.ringhub.ring_seed" in msg
    assert "was not a member" in checks(no_roles)[8]["msg"]

    with dep.connect() as conn, conn.cursor() as cur:
        cur.execute('DELETE FROM "Ring"')
    no_ring = verify(dep)
    assert no_ring.rc != 0
    assert statuses(no_ring) == ["passed", "failed", "passed", "passed", "skipped", "skipped", "skipped", "passed"]
    msg = checks(no_ring)[2]["msg"]
    assert_explained(msg)
    assert msg.startswith(
        "the root ring spool is missing. Expected: HTTP 200 with the descriptor of the root ring spool"
    )
    assert checks(no_ring)[5]["msg"] == "root_ring failed"
    assert_no_actor_left(dep, no_ring)


def test_a_hub_without_its_key_then_a_hub_that_is_down(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory()
    env_file = dep.paths["env_file"]
    env_file.write_text("".join(line for line in env_file.read_text().splitlines(True) if "PRIVATE_KEY" not in line))
    hub = dep.state["hubs"][0]
    ctl.restart(env_file, dep.paths["web_root"], hub["pid_file"], hub["log_file"], port=hub["port"], inherit=False)

    no_badge = verify(dep)
    assert no_badge.rc != 0
    assert statuses(no_badge) == ["passed"] * 4 + ["failed", "skipped", "skipped", "passed"]
    msg = checks(no_badge)[5]["msg"]
    assert_explained(msg)
    assert msg.startswith(
        "the hub made the test actor a member but issued no badge: it runs with NODE_ENV=production and an "
        "ephemeral signing key"
    )
    assert '"badge":null' in msg  # what the hub answered, as it sent it
    assert "left spool" in checks(no_badge)[8]["msg"]  # it was a member (without a badge): it left

    ctl.stop(hub["pid_file"])
    started = time.monotonic()
    down = verify(dep, {"ringhub_verify_timeout": 3, "ringhub_verify_request_timeout": 1})
    elapsed = time.monotonic() - started
    assert down.rc != 0
    assert statuses(down) == ["failed"] + ["skipped"] * 7
    assert checks(down)[3]["msg"] == "the deadline of the probe (timeout 3 s) passed before this check"
    msg = checks(down)[1]["msg"]
    assert_explained(msg)
    assert msg.startswith(f"the hub does not answer at {dep.hub_url}") and "connection refused" in msg
    probe = probe_results(down)[0]
    assert probe["checks"][0]["seconds"] <= 3.5  # health polled until its deadline, not beyond
    assert elapsed < 40  # the whole playbook (its start and the other probes included) did not hang
