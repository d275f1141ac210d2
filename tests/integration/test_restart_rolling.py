"""Rolling restarts of playbooks/reset.yml: ``ringhub_restart_serial`` across real API hosts.

Three sandbox hubs of one local deployment (shared PostgreSQL, Redis, .env), restarted by the
``command`` backend: the order of the task results (as Ansible reported them) shows that each batch
was restarted and ready before the next batch started; a batch that fails stops the later ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from sandbox_hub import ctl

from harness.ansible import REPO, AnsibleRun, run_playbook

pytestmark = pytest.mark.slow

PLAYBOOK = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
    "ringhub_verify_after_reset": False,
}
RESTART = "Run the restart command"
READY = "The hub answered ready"


def reset(dep: Any, extra: dict[str, Any], inventory: Any = None) -> AnsibleRun:
    return run_playbook(PLAYBOOK, {**PHRASES, **extra}, inventory=inventory or dep.inventory, limit="production",
                        timeout=400)  # fmt: skip


def events(run: AnsibleRun) -> list[tuple[str, str]]:
    """(task, host) of every restart and readiness result, in the order Ansible reported them."""
    return [(r["task"], r["host"]) for r in run.results if r["task"] in (RESTART, READY) and r["status"] == "ok"]


def pids(dep: Any) -> dict[str, int | None]:
    return {hub["name"]: ctl.running_pid(hub["pid_file"]) for hub in dep.state["hubs"]}


def test_one_host_at_a_time_each_ready_before_the_next(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=3)
    before = pids(dep)

    run = reset(dep, {"ringhub_restart_serial": 1})

    assert run.rc == 0, run.output[-3000:]
    assert events(run) == [
        (RESTART, "hub1"), (READY, "hub1"),
        (RESTART, "hub2"), (READY, "hub2"),
        (RESTART, "hub3"), (READY, "hub3"),
    ]  # fmt: skip
    after = pids(dep)
    assert all(after[h] is not None and after[h] != before[h] for h in before)
    flat = " ".join(run.output.split())
    for host in ("hub1", "hub2", "hub3"):
        assert f"Restarted {host}: {host} ready after" in flat
        assert f"restart {host}: succeeded (command)" in flat  # the final summary: each host's time to ready
    audit = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
    restarts = audit["details"]["steps"]["restart"]
    assert {h: r["status"] for h, r in restarts.items()} == dict.fromkeys(["hub1", "hub2", "hub3"], "succeeded")
    assert all(isinstance(r["ready_seconds"], (int, float, str)) for r in restarts.values())


def test_batches_by_percentage_and_a_failed_batch_stops_the_later_ones(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=3)
    inventory = yaml.safe_load(dep.inventory.read_text())
    hosts = inventory["all"]["children"]["production"]["hosts"]
    hosts["hub2"]["ringhub_restart_command"] = "/bin/false"
    broken = dep.directory / "broken-inventory.yml"
    broken.write_text(yaml.safe_dump(inventory))
    broken.chmod(0o600)
    before = pids(dep)

    # 34% of 3 hosts: batches of one (hub1), then (hub2), then (hub3).
    run = reset(dep, {"ringhub_restart_serial": "34%"}, inventory=broken)

    assert run.rc != 0
    assert events(run) == [(RESTART, "hub1"), (READY, "hub1")], run.output[-4000:]
    assert [(r["task"], r["host"], r["status"]) for r in run.results if r["task"] == RESTART] == [
        (RESTART, "hub1", "ok"),
        (RESTART, "hub2", "failed"),
    ]
    after = pids(dep)
    assert after["hub1"] != before["hub1"]
    assert after["hub3"] == before["hub3"]  # never restarted: the batch before it failed
    flat = " ".join(run.output.split())
    assert "hub3 is not restarted: the restart of hub2 in an earlier batch failed" in flat
    audit = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
    assert audit["status"] == "failed"
    steps = audit["details"]["steps"]["restart"]
    assert (steps["hub1"]["status"], steps["hub2"]["status"], steps["hub3"]["status"]) == (
        "succeeded", "failed", "not run",
    )  # fmt: skip
    assert {f["host"] for f in audit["details"]["failures"]} == {"hub2", "hub3"}


def test_a_malformed_serial_is_refused_before_anything_is_destroyed(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1)
    before = dep.counts()
    run = reset(dep, {"ringhub_restart_serial": "half"})
    assert run.rc != 0
    assert 'ringhub_restart_serial must be a number of hosts, a percentage ("30%") or a list of them' in " ".join(
        run.output.split()
    )
    after = dep.counts()
    assert {k: v for k, v in after.items() if k != "audit_lines"} == {
        k: v for k, v in before.items() if k != "audit_lines"
    }
    assert json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])["status"] == "aborted"
