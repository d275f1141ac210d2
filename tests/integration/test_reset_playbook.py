"""playbooks/reset.yml end to end against local deployments (tests/harness/deployment.py).

Real PostgreSQL, Redis and sandbox hubs; the playbook runs as an operator runs it (its own
ansible-playbook process, the project's ansible.cfg, ``-l production``). Prompts are typed
through a pseudo-terminal (pexpect); AWX runs go through ansible-runner with ``env/extravars``.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pexpect
import pytest
from sandbox_hub import ctl

from harness.ansible import REPO, AnsibleRun, _base_env, run_playbook

PLAYBOOK = REPO / "playbooks" / "reset.yml"
# The preflight's three checks and the reset's data steps, each one reset_steps task.
CHECKS_TASK = "Check the PostgreSQL reset, the Redis flush and the badge key (check mode)"
DATA_TASK = "Back up, then reset the schema and seed the root ring in one transaction; empty Redis; keep the badge key"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}
ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")

pytestmark = pytest.mark.slow


def reset(dep: Any, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> AnsibleRun:
    return run_playbook(PLAYBOOK, extra_vars, inventory=dep.inventory, limit="production", timeout=300, **kwargs)


def hosts_of(run: AnsibleRun, task: str, status: str = "ok") -> list[str]:
    return sorted(r["host"] for r in run.results if r["task"] == task and r["status"] == status)


def assert_reset_done(dep: Any, before: dict[str, Any]) -> dict[str, Any]:
    after = dep.counts()
    assert before["total_rows"] > 50
    assert after["rings"] == ["spool"] and after["root_roles"] == ["member", "moderator", "owner"]
    assert {name: t["rows"] for name, t in after["tables"].items() if t["rows"]} == {
        "Ring": 1,
        "RingRole": 3,
        "_prisma_migrations": len(before["migrations"]),
    }
    assert after["migrations"] == before["migrations"]
    assert after["environment_marker"] == "production"
    assert sum(db["keys"] for db in after["redis"].values()) == 0
    assert after["key_file_sha256"] == before["key_file_sha256"]
    assert after["env_key"] == {"present": True, "matches_key_file": True}
    assert after["did_document_sha256"] == before["did_document_sha256"]
    assert len(after["backups"]) == len(before["backups"]) + 1
    assert after["audit_lines"] == before["audit_lines"] + 1
    return after


def last_audit(dep: Any) -> dict[str, Any]:
    return json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])


# --------------------------------------------------------------------------- prompts at a terminal


def spawn_reset(dep: Any, *args: str) -> pexpect.spawn:
    env = _base_env(os.devnull, None)
    for name in ("ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_CALLBACK_PLUGINS", "RINGHUB_TEST_RESULTS"):
        env.pop(name, None)
    argv = ["-i", str(dep.inventory), str(PLAYBOOK), "-l", "production", *args]
    return pexpect.spawn(ANSIBLE_PLAYBOOK, argv, env=env, cwd=str(REPO), encoding="utf-8", timeout=120)


def answer(child: pexpect.spawn, pattern: str, text: str) -> None:
    child.expect(pattern)
    child.sendline(text)


def prompt_text(child: pexpect.spawn, header: str, end: str) -> str:
    """What the operator sees of one pause prompt: the lines after the task header ``[<header>]``
    up to and including ``end``, as the terminal shows them (no escapes)."""
    child.expect_exact(f"[threadring.ringhub.confirm : {header}]\r\n")
    child.expect_exact(end)
    return (child.before + child.after).replace("\r\n", "\n")


def test_the_three_phrases_and_the_target_typed_at_a_terminal_reset(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    before = dep.counts()
    db = dep.state["database"]
    child = spawn_reset(dep)
    try:
        seen = prompt_text(child, "Type confirmation 1", "(confirmation 1 of 3):")
        assert seen == (
            "This PERMANENTLY DELETES ALL DATA of the Ring Hub of hub1: every ring, member, badge, post and audit"
            " row in PostgreSQL, and every key in Redis.\n"
            "Type exactly 'DELETE ALL DATA' (confirmation 1 of 3):"
        )
        child.sendline("DELETE ALL DATA")
        seen = prompt_text(child, "Type confirmation 2", "(confirmation 2 of 3):")
        assert seen == (
            "There is no undo but the backup this run takes first.\n"
            "Type exactly 'I UNDERSTAND THIS IS IRREVERSIBLE' (confirmation 2 of 3):"
        )
        child.sendline("I UNDERSTAND THIS IS IRREVERSIBLE")
        seen = prompt_text(child, "Type confirmation 3", "(confirmation 3 of 3):")
        assert seen == (
            "Last chance. The reset starts after this answer and the name of the database.\n"
            "Type exactly 'RESET PRODUCTION NOW' (confirmation 3 of 3):"
        )
        child.sendline("RESET PRODUCTION NOW")
        seen = prompt_text(child, "Type the name of the target database", "the one you mean:")
        assert seen == (
            f"Fourth check: the database to reset is '{db['name']}' on 127.0.0.1:{db['port']} (schema public).\n"
            "Type its name to confirm it is the one you mean:"
        )
        child.sendline("ringhub")
        child.expect(r"Ring Hub reset SUCCEEDED", timeout=240)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert_reset_done(dep, before)
    assert last_audit(dep)["details"]["awx_job_id"] is None


def test_a_typo_in_the_third_phrase_aborts_and_changes_nothing(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    before = dep.counts()
    child = spawn_reset(dep)
    try:
        answer(child, r"confirmation\s+1 of 3\):", "DELETE ALL DATA")
        answer(child, r"confirmation\s+2 of 3\):", "I UNDERSTAND THIS IS IRREVERSIBLE")
        answer(child, r"confirmation\s+3 of 3\):", "RESET PRODUKTION NOW")
        child.expect(pexpect.EOF, timeout=60)
        output = child.before
    finally:
        child.close()
    assert child.exitstatus != 0
    assert "Confirmation 3 of 3 (ringhub_confirm_3) does not match: it is another text" in output
    error = [line for line in output.splitlines() if "does not match" in line]
    assert error and all("PRODUKTION" not in line for line in error)  # what was typed is never echoed back
    assert "Type its name" not in output and "Preflight" not in output
    assert dep.counts() == before


# --------------------------------------------------------------------------- AWX / ansible-runner


def runner_job(dep: Any, tmp_path: Path, extravars: dict[str, Any], timeout: int = 180) -> tuple[Any, float]:
    import ansible_runner

    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    # What AWX writes: the survey answers and the job's own variables, in env/extravars.
    (private / "env" / "extravars").write_text(json.dumps(extravars))
    (private / "env" / "envvars").write_text(
        json.dumps(
            {
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
                "ANSIBLE_NOCOLOR": "1",
                "PATH": str(REPO / ".venv" / "bin") + os.pathsep + os.environ.get("PATH", ""),
            }
        )
    )
    (private / "env" / "settings").write_text(json.dumps({"job_timeout": timeout, "idle_timeout": timeout}))
    start = time.monotonic()
    result = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(REPO),
        playbook=str(PLAYBOOK),
        inventory=str(dep.inventory),
        limit="production",
        quiet=True,
    )
    return result, time.monotonic() - start


AWX_JOB = {
    "awx_job_id": 917,
    "awx_job_template_name": "Ring Hub reset",
    "awx_user_name": "alice",
    "awx_user_id": 3,
    "awx_inventory_name": "production",
    "tower_job_id": 917,
    "tower_user_name": "alice",
}


def test_ansible_runner_with_awx_survey_answers_completes_without_a_prompt(
    sandbox_deployment_factory: Any, tmp_path: Path
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    before = dep.counts()
    result, _seconds = runner_job(dep, tmp_path, {**PHRASES, **AWX_JOB})
    stdout = result.stdout.read()
    assert result.status == "successful", stdout[-3000:]
    assert "Type exactly" not in stdout and "Ask the phrase" in stdout  # the pause tasks were skipped
    assert_reset_done(dep, before)
    record = last_audit(dep)
    assert record["operator"] == "alice" and record["details"]["awx_job_id"] == 917
    assert record["details"]["awx_job_template"] == "Ring Hub reset"


@pytest.mark.parametrize("job_vars", [AWX_JOB, {}], ids=["awx-job", "plain-runner"])
def test_ansible_runner_without_the_answers_fails_within_seconds(
    sandbox_deployment_factory: Any, tmp_path: Path, job_vars: dict[str, Any]
) -> None:
    """ansible-runner gives the playbook a pseudo-terminal nobody types into: a pause there would
    hang until the job timeout (ansible/awx#1897). It must fail at once instead."""
    dep = sandbox_deployment_factory(hubs=1, demo_data=False)
    before = dep.counts()
    result, seconds = runner_job(dep, tmp_path, dict(job_vars), timeout=90)
    stdout = result.stdout.read()
    assert result.status == "failed", (result.status, stdout[-2000:])
    assert seconds < 45, seconds
    why = "this is AWX / Automation Controller job 917" if job_vars else "this run is under ansible-runner"
    assert why in stdout and "are not set" in stdout
    assert "Type exactly" not in stdout
    assert dep.counts() == before


# --------------------------------------------------------------------------- the hub keeps serving


class Poller(threading.Thread):
    """GET <url> every ``interval`` seconds until stopped; counts statuses and ring ids.

    Each request comes from another client, as public traffic reaches the hub through the
    reverse proxy (``X-Forwarded-For``): 50 requests a second are far past what one client
    may send (500 a minute), and the playbook's own requests keep their budget."""

    def __init__(self, base_url: str, path: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        host, port = base_url.split("://", 1)[1].split(":")
        self.host, self.port, self.path, self.interval = host, int(port), path, interval
        self.statuses: Counter[int | str] = Counter()
        self.ids: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                client = f"198.51.100.{sum(self.statuses.values()) % 250 + 1}"
                conn.request("GET", self.path, headers={"X-Forwarded-For": client})
                resp = conn.getresponse()
                body = resp.read()
                self.statuses[resp.status] += 1
                if resp.status == 200:
                    ring_id = json.loads(body)["id"]
                    if not self.ids or self.ids[-1] != ring_id:
                        self.ids.append(ring_id)
            except OSError:
                self.statuses["connection error"] += 1
            finally:
                conn.close()
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))


def test_the_root_ring_never_answers_404_or_5xx_during_a_whole_reset(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    before = dep.counts()
    poller = Poller(dep.hub_url, "/trp/rings/spool")
    poller.start()
    try:
        run = reset(dep, PHRASES)
    finally:
        poller.stop_event.set()
        poller.join(10)
    assert run.rc == 0, run.output[-3000:]
    assert_reset_done(dep, before)
    statuses = poller.statuses
    assert statuses[404] == 0 and not [s for s in statuses if isinstance(s, int) and s >= 500], statuses
    assert statuses[200] > 100, statuses
    assert len(poller.ids) >= 2, "the polls did not see the ring change: they did not cover the reset"


# --------------------------------------------------------------------------- several API hosts


def test_several_api_hosts_data_steps_once_restart_and_readiness_on_each(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=3, demo_data=True)
    before = dep.counts()
    pids = {hub["name"]: ctl.running_pid(hub["pid_file"]) for hub in dep.state["hubs"]}
    run = reset(dep, {**PHRASES, "ringhub_primary_host": "hub2"})
    assert run.rc == 0, run.output[-3000:]
    assert_reset_done(dep, before)
    once = [
        CHECKS_TASK,
        DATA_TASK,
        "Write the audit line",
    ]
    for task in once:
        assert hosts_of(run, task) == ["hub2"], task
        assert hosts_of(run, task, "skipped") == ["hub1", "hub3"], task
    # The key, env value and DID document were in place (the preflight checked them): no second run.
    ran = {
        r["task"]: r["result"]["ran"]
        for r in run.results
        if r["task"] in (CHECKS_TASK, DATA_TASK) and "ran" in r["result"]
    }
    assert ran == {
        CHECKS_TASK: ["pg_schema_reset", "redis_flush[0]", "did_keys"],
        DATA_TASK: ["pg_schema_reset", "redis_flush[0]"],
    }
    for task in ("Run the restart command", "Poll /health/ready until it answers ready", "The hub answered ready"):
        assert hosts_of(run, task) == ["hub1", "hub2", "hub3"], task
    for hub in dep.state["hubs"]:
        new_pid = ctl.running_pid(hub["pid_file"])
        assert new_pid is not None and new_pid != pids[hub["name"]], hub["name"]
    assert [h["status"] for h in dep.hub_health()] == [200, 200, 200]
    details = last_audit(dep)["details"]
    assert details["primary_host"] == "hub2" and details["hosts"] == ["hub1", "hub2", "hub3"]
    assert {h: r["status"] for h, r in details["steps"]["restart"].items()} == dict.fromkeys(
        ["hub1", "hub2", "hub3"], "succeeded"
    )


def test_a_host_that_fails_the_preflight_stops_the_reset_everywhere(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=2, demo_data=True)
    before = dep.counts()
    inventory = dep.inventory.read_text().replace("ringhub_restart_command: ", "ringhub_restart_command_unused: ", 1)
    broken = dep.directory / "broken-inventory.yml"
    broken.write_text(inventory)
    run = run_playbook(PLAYBOOK, PHRASES, inventory=broken, limit="production", timeout=300)
    assert run.rc != 0
    assert "Preflight of hub1 (primary host) failed: ringhub_restart_command is not set" in run.output
    assert "The preflight did not pass on hub1: the reset does not start" in run.output
    assert hosts_of(run, DATA_TASK) == []
    after = dep.counts()
    assert after["audit_lines"] == before["audit_lines"] + 1
    assert {k: v for k, v in after.items() if k != "audit_lines"} == {
        k: v for k, v in before.items() if k != "audit_lines"
    }
    assert last_audit(dep)["status"] == "aborted"


# --------------------------------------------------------------------------- secrets and settings


def test_no_secret_in_vvv_output_of_a_run_failing_after_reading_the_env_file(sandbox_deployment_factory: Any) -> None:
    """Settings taken from the hub's .env (no URL variables), then a refused marker: the whole
    -vvv output holds neither password nor the key, and the summary names the sources."""
    dep = sandbox_deployment_factory(hubs=1, demo_data=False)
    before = dep.counts()
    inventory = "\n".join(
        line
        for line in dep.inventory.read_text().splitlines()
        if not line.strip().startswith(("ringhub_database_url:", "ringhub_redis_url:", "ringhub_instance_did:"))
    )
    from_env = dep.directory / "env-inventory.yml"
    from_env.write_text(inventory + "\n")
    run = run_playbook(
        PLAYBOOK,
        {**PHRASES, "ringhub_environment": "staging"},
        inventory=from_env,
        limit="production",
        verbosity=3,
        timeout=300,
    )
    assert run.rc != 0
    assert "is marked as environment 'production'" in run.output
    assert f"database_url: postgresql://ringhub:********@127.0.0.1:{dep.state['database']['port']}" in run.output
    assert f"(DATABASE_URL in {dep.paths['env_file']})" in run.output
    assert f"(REDIS_URL in {dep.paths['env_file']})" in run.output
    key_pem = dep.paths["key"].read_text()
    env_lines = dep.paths["env_file"].read_text().splitlines()
    env_value = next(line.split("=", 1)[1] for line in env_lines if line.startswith("RING_HUB_PRIVATE_KEY="))
    for what, secret in {
        "database password": dep.state["database"]["role_password"],
        "superuser password": dep.state["database"]["superuser_password"],
        "Redis password": dep.state["redis"]["password"],
        "key PEM": key_pem.splitlines()[1],
        "key env value": env_value[10:70],
    }.items():
        assert secret not in run.output, what
    after = dep.counts()
    assert {k: v for k, v in after.items() if k != "audit_lines"} == {
        k: v for k, v in before.items() if k != "audit_lines"
    }


def test_the_backup_progress_is_printed_while_the_reset_runs(sandbox_deployment_factory: Any) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    before = dep.counts()
    run = reset(dep, {**PHRASES, "ringhub_progress_min_size": 0, "ringhub_progress_interval": 0.2})
    assert run.rc == 0, run.output[-3000:]
    assert_reset_done(dep, before)
    lines = [line for line in run.output.splitlines() if "(item=" in line and "elapsed" in line]
    assert lines and "done, backup " in lines[-1] and " written (database " in lines[-1], lines
    progress = run.task("Backup and reset progress")["results"]
    assert json.loads(progress[-1]["stdout"])["finished"] is True
    assert not list(dep.paths["backup_dir"].glob(".ringhub-reset-progress-*"))
    # The backup and reset ran in the background; the data steps task ran the Redis flush alone.
    assert run.task(DATA_TASK)["ran"] == ["redis_flush[0]"]


def test_a_missing_key_env_value_and_did_document_are_made_before_the_restart(sandbox_deployment_factory: Any) -> None:
    """The old checklist's first item, now part of the reset: a hub without a persistent key gets
    one, its RING_HUB_PRIVATE_KEY value and its DID document before it is restarted."""
    dep = sandbox_deployment_factory(hubs=1, demo_data=False, key=False)
    before = dep.counts()
    assert before["key_file_sha256"] is None and before["env_key"]["present"] is False
    run = reset(dep, PHRASES)
    assert run.rc == 0, run.output[-3000:]
    assert "Badge key " in run.output and ": created (generated" in run.output  # the preflight said so
    after = dep.counts()
    assert after["key_file_sha256"] and after["env_key"] == {"present": True, "matches_key_file": True}
    assert after["did_document_sha256"]
    assert oct(dep.paths["key"].stat().st_mode & 0o777) == "0o600"
    keys = run.task(DATA_TASK)["steps"]["did_keys"]
    assert keys["changes"]["key_file"] == "created" and keys["changes"]["instance_document"] == "created"
    # The restarted hub serves the document of the new key and holds that key.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    answer = json.loads(opener.open(dep.hub_url + "/.well-known/did.json", timeout=5).read())
    assert answer["verificationMethod"][0]["publicKeyMultibase"] == keys["public_key"]["multibase"]
    steps = last_audit(dep)["details"]["steps"]
    assert steps["did_keys"]["status"] == "succeeded" and steps["did_keys"]["changes"]["env_file"] == "set"
    assert steps["did_keys"]["seconds"] > 0
    # The key is named by what it is: the SHA-256 of its DER public key (openssl pkey -pubout -outform DER).
    assert steps["did_keys"]["public_key_sha256"] == keys["fingerprint"]
    summary = "\n".join(run.task("Summary of the run")["msg"])
    assert f"public key fingerprint (SHA-256 of the DER public key) {keys['fingerprint']})" in summary
    assert "key sha256" not in run.output


def test_mode_db_flushes_the_database_the_redis_url_names(sandbox_deployment_factory: Any) -> None:
    """``ringhub_redis_flush_mode: db`` with a Redis URL naming database 2 empties database 2 and leaves
    the others alone (``ringhub_redis_flush_db`` unset: the URL's database, never database 0 by default)."""
    dep = sandbox_deployment_factory(hubs=1)
    db2_url = dep.redis_url.rsplit("/", 1)[0] + "/2"
    dep.redis_client(2).mset({f"hub:cache:{i}": "x" for i in range(25)})
    dep.redis_client(0).set("other:keep-me", "1")

    run = reset(dep, {**PHRASES, "ringhub_redis_url": db2_url, "ringhub_redis_flush_mode": "db"})

    assert run.rc == 0, run.output[-3000:]
    assert dep.redis_client(2).dbsize() == 0
    assert dep.redis_client(0).get("other:keep-me") == "1"
