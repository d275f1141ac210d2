"""hub_probe run as Ansible runs it, against a real sandbox hub process (PostgreSQL, Redis, HTTP).

Every check looks at the hub's own state afterwards: its rows (Actor, Membership, Badge), its
log (which headers each signed request carried) and the files in its web root.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_hub.instance import SandboxHub

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from harness.ansible import run_module

BEFORE = ["health", "root_ring", "instance_document", "actor", "join", "badge"]


def probe_args(hub: SandboxHub, key_file: Path, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "api_url": hub.url,
        "hub_url": hub.url,
        "key_path": str(key_file),
        "web_root": str(hub.web_root),
        "checks": BEFORE,
        "use_proxy": False,
    }
    args.update(overrides)
    return args


@pytest.fixture
def key_file(sandbox_hub: SandboxHub, tmp_path: Path) -> Path:
    path = tmp_path / "ring-hub.pem"
    path.write_bytes(_ed25519.private_pem(sandbox_hub.private_key))
    path.chmod(0o600)
    return path


def checks_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["checks"]}


def test_a_real_badge_verifies_before_and_after_a_restart_and_the_actor_is_removed(
    sandbox_hub: SandboxHub, key_file: Path
) -> None:
    hub = sandbox_hub
    before = run_module("hub_probe", probe_args(hub, key_file), verbosity=3)
    assert not before.failed, before.msg
    assert before.changed and before.result["passed"]
    assert {c["status"] for c in before.result["checks"]} == {"passed"}
    actor, badge = before.result["actor"], before.result["badge"]
    key = Path(actor["key_file"])
    assert key.stat().st_mode & 0o777 == 0o600 and (key.parent.stat().st_mode & 0o777) == 0o700
    assert Path(actor["document_path"]).is_file()
    # The hub's rows: the actor is an active member whose badge is stored under the (full-URL) id the probe verified.
    rows = hub.db.query(
        'SELECT m.status, r.name, b.id, m."profileUrl" FROM "Membership" m JOIN "RingRole" r ON r.id = m."roleId" '
        'JOIN "Badge" b ON b."membershipId" = m.id WHERE m."actorDid" = %s',
        (actor["did"],),
    )
    assert rows == [("ACTIVE", "member", badge["id"], actor["profile_url"])]
    assert actor["profile_url"].startswith("http://localhost:")  # an endpoint the hub accepts

    hub.restart()
    after = run_module(
        "hub_probe",
        probe_args(
            hub, key_file, checks=["health", "actor_badges", "cleanup"], actor_key=str(key), badge_id=badge["id"]
        ),
    )
    assert not after.failed, after.msg
    checks = checks_of(after.result)
    assert checks["actor_badges"]["badge_ids"] == [badge["id"]] and checks["actor_badges"]["id_changed"] is False
    assert checks["cleanup"]["left"] is True
    assert sorted(checks["cleanup"]["removed"]) == sorted([actor["document_path"], actor["key_file"]])
    assert not Path(actor["document_path"]).exists() and not key.parent.exists()
    assert hub.db.query('SELECT status FROM "Membership" WHERE "actorDid" = %s', (actor["did"],)) == [("REVOKED",)]
    assert hub.db.query('SELECT "revokedAt" IS NOT NULL FROM "Badge" WHERE id = %s', (badge["id"],)) == [(True,)]

    # Every signed request of the collection carried Date and Digest, and the signature covered both.
    signed = [line for line in hub.log_text().splitlines() if f"keyId={actor['key_id']}" in line]
    assert [line.split("signed ", 1)[1].split(":", 1)[0] for line in signed] == ["POST /trp/join", "POST /trp/leave"]
    assert all("headers='(request-target) host date digest' Date sent Digest sent -> valid" in line for line in signed)
    # No private key in anything Ansible printed at -vvv (the hub's, the actor's).
    assert "PRIVATE KEY" not in before.output + after.output
    hub_pem_body = "".join(_ed25519.private_pem(hub.private_key).decode().splitlines()[1:-1])
    assert hub_pem_body not in before.output


def test_check_mode_only_reads(sandbox_hub: SandboxHub, key_file: Path) -> None:
    hub = sandbox_hub
    actors_before = hub.db.query('SELECT count(*) FROM "Actor"')
    res = run_module("hub_probe", probe_args(hub, key_file), check=True)
    assert not res.failed, res.msg
    assert not res.changed
    statuses = {c["name"]: c["status"] for c in res.result["checks"]}
    assert statuses == {
        "health": "passed",
        "root_ring": "passed",
        "instance_document": "passed",
        "actor": "skipped",
        "join": "skipped",
        "badge": "skipped",
    }
    assert hub.db.query('SELECT count(*) FROM "Actor"') == actors_before
    assert not (hub.web_root / "users").exists()
    assert "POST " not in hub.log_text()


def test_a_hub_that_accepts_connections_but_never_answers_fails_at_the_deadline(
    sandbox_hub: SandboxHub, key_file: Path
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the backlog; nothing is ever read or answered
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        started = time.monotonic()
        res = run_module(
            "hub_probe", probe_args(sandbox_hub, key_file, api_url=url, timeout=3, request_timeout=1, checks=["health"])
        )
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert res.failed and res.result["nothing_changed"] is True
    health = checks_of(res.result)["health"]
    assert health["msg"].startswith(f"the hub does not answer at {url}")
    assert "(timed out)" in health["msg"] and "Fix: start the hub" in health["msg"]
    assert res.result["seconds"] <= 3.5  # the module's own deadline
    assert elapsed < 15  # and the task as a whole (Ansible's start included) did not hang


def test_answers_429_are_waited_out_and_never_count_as_failures(sandbox_hub_factory: Any, tmp_path: Path) -> None:
    hub = sandbox_hub_factory(extra_env={"SANDBOX_RATE_LIMIT": "4", "SANDBOX_RATE_LIMIT_WINDOW": "1"})
    key_file = tmp_path / "ring-hub.pem"
    key_file.write_bytes(_ed25519.private_pem(hub.private_key))
    res = run_module("hub_probe", probe_args(hub, key_file, checks=[*BEFORE, "cleanup"], timeout=30))
    assert not res.failed, res.msg
    assert res.result["rate_limited"]["answers"] >= 1 and res.result["rate_limited"]["seconds_waited"] > 0
    assert {c["status"] for c in res.result["checks"]} == {"passed"}
    assert "rate limit:" in hub.log_text()  # the hub did refuse some of them


def test_a_hub_restarted_without_its_key_is_caught_after_the_restart(sandbox_hub: SandboxHub, key_file: Path) -> None:
    hub = sandbox_hub
    before = run_module("hub_probe", probe_args(hub, key_file))
    assert not before.failed, before.msg
    hub.configure(private_key=None, node_env="development")  # the .env lost RING_HUB_PRIVATE_KEY
    hub.restart()
    after = run_module(
        "hub_probe",
        probe_args(
            hub, key_file, checks=["health", "actor_badges", "cleanup"], actor_key=before.result["actor"]["key_file"]
        ),
    )
    assert after.failed and not after.result.get("nothing_changed")
    checks = checks_of(after.result)
    assert checks["actor_badges"]["status"] == "failed"
    assert checks["actor_badges"]["msg"].startswith("after the restart the hub's own verification rejects the badge")
    assert "'Invalid signature'" in checks["actor_badges"]["msg"]
    assert checks["cleanup"]["status"] == "passed" and checks["cleanup"]["left"] is True
    assert "actor_badges: after the restart" in after.msg


def test_concurrent_probes_each_use_their_own_actor(sandbox_hub: SandboxHub, key_file: Path) -> None:
    results: list[Any] = []

    def run() -> None:
        results.append(run_module("hub_probe", probe_args(sandbox_hub, key_file, checks=[*BEFORE, "cleanup"])))

    threads = [threading.Thread(target=run), threading.Thread(target=run)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not r.failed for r in results), [r.msg for r in results]
    assert len({r.result["actor"]["did"] for r in results}) == 2
    assert sandbox_hub.db.query("SELECT count(*) FROM \"Membership\" WHERE status = 'REVOKED'") == [(2,)]
