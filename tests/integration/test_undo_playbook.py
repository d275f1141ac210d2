"""playbooks/undo.yml end to end: a reset with the undo window, then the undo, against a local deployment.

Real PostgreSQL with the hub's real migrations, Redis and a sandbox hub
(tests/harness/deployment.py); the playbooks run as an operator runs them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.ansible import REPO, AnsibleRun, run_playbook

pytestmark = pytest.mark.slow

PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}


def play(name: str, dep: Any, extra: dict[str, Any] | None = None, **kwargs: Any) -> AnsibleRun:
    return run_playbook(
        REPO / "playbooks" / name, PHRASES | (extra or {}), inventory=dep.inventory, limit="production", timeout=400,
        **kwargs,
    )  # fmt: skip


def ring_status(dep: Any, slug: str) -> tuple[int, Any]:
    """``GET /trp/rings/<slug>`` of hub1, as any client asks it."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{dep.hub_urls[0]}/trp/rings/{slug}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def audit_lines(dep: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in dep.paths["audit_log"].read_text().splitlines()]


def summary_of(run: AnsibleRun, task: str) -> list[str]:
    return run.task(task)["msg"]


def test_reset_with_the_undo_window_then_undo_brings_back_every_row_and_the_hub_serves_the_old_rings(
    sandbox_deployment_factory: Any, reference_migrations: Any
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True, migrations=reference_migrations)
    before = dep.counts()
    old_rings = [slug for slug in before["rings"] if slug != "spool"]
    assert len(old_rings) >= 4 and before["total_rows"] > 100
    served = {slug: ring_status(dep, slug) for slug in old_rings}
    assert all(status == 200 for status, _body in served.values())

    reset = play("reset.yml", dep, {"ringhub_keep_previous": True, "ringhub_verify_after_reset": False})
    assert reset.rc == 0, reset.stdout[-3000:]
    preflight = "\n".join(summary_of(reset, "Summary of what the reset will do"))
    assert "WARNING: UNDO WINDOW: schema public is not dropped but kept as public_before_reset_" in preflight
    after_reset = dep.counts()
    assert after_reset["rings"] == ["spool"]
    assert all(ring_status(dep, slug)[0] == 404 for slug in old_rings)
    kept = audit_lines(dep)[-1]["details"]["steps"]["reset"]["kept_schema"]
    assert kept["name"].startswith("public_before_reset_") and kept["name"] in reset.output
    assert kept["total_rows"] == before["total_rows"] and kept["until"]

    # Check mode lists the kept schema with its size and changes nothing.
    check = play("undo.yml", dep, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    listed = "\n".join(summary_of(check, "Summary of what the undo or purge will do"))
    assert "CHECK MODE: nothing was changed" in listed
    assert "BROUGHT BACK as schema public: public_before_reset_" in listed
    assert "Kept schemas of schema public: 1, " in listed and " on disk" in listed
    assert dep.counts() == after_reset

    undo = play("undo.yml", dep, {"ringhub_verify_after_undo": False})
    assert undo.rc == 0, undo.stdout[-3000:]
    after = dep.counts()
    # Every row of every table back (row counts and digests), the Prisma history and the marker too.
    assert after["tables"] == before["tables"]
    assert after["rings"] == before["rings"] and after["root_roles"] == before["root_roles"]
    assert after["migrations"] == before["migrations"] and after["environment_marker"] == "production"
    assert all(db["keys"] == 0 for db in after["redis"].values())
    # The restarted hub serves the old rings again, as they were.
    assert {slug: ring_status(dep, slug) for slug in old_rings} == served
    record = audit_lines(dep)[-1]
    assert record["event"] == "undo" and record["status"] == "succeeded"
    assert record["details"]["restored"]["name"].startswith("public_before_reset_")
    assert record["details"]["set_aside"]["name"].startswith("public_before_undo_")
    assert record["details"]["restart"] == {"hub1": "succeeded"}
    assert dep.state["database"]["role_password"] not in undo.output


def test_undo_without_a_kept_schema_is_refused_and_recorded_as_aborted(
    sandbox_deployment_factory: Any, fixture_migrations: Any
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=False, migrations=fixture_migrations)
    before = dep.counts()
    undo = play("undo.yml", dep)
    assert undo.rc != 0
    assert "there is no kept schema of schema 'public' in database 'ringhub'" in undo.output
    record = audit_lines(dep)[-1]
    assert record["event"] == "undo" and record["status"] == "aborted"
    after = dep.counts()
    assert after["tables"] == before["tables"] and after["redis"] == before["redis"]
    assert after["audit_lines"] == before["audit_lines"] + 1


def test_purge_in_check_mode_lists_the_kept_schemas_with_their_size_then_drops_the_expired(
    sandbox_deployment_factory: Any, fixture_migrations: Any
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=False, migrations=fixture_migrations)
    reset = play("reset.yml", dep, {"ringhub_keep_previous": True, "ringhub_keep_previous_for": "1d",
                                    "ringhub_verify_after_reset": False})  # fmt: skip
    assert reset.rc == 0, reset.stdout[-3000:]
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'ringhub'")
            comment = cur.fetchone()[0]
            lines = []
            for line in comment.splitlines():
                if line.startswith("ringhub.kept="):
                    kept = json.loads(line.split("=", 1)[1])
                    kept["until"] = "2000-01-01T00:00:00Z"
                    line = "ringhub.kept=" + json.dumps(kept)
                lines.append(line)
            cur.execute("COMMENT ON DATABASE ringhub IS %s", ("\n".join(lines),))
    finally:
        conn.close()
    before = dep.counts()
    check = play("undo.yml", dep, {"ringhub_undo_action": "purge"}, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    listed = "\n".join(summary_of(check, "Summary of what the undo or purge will do"))
    assert f"{kept['name']}: kept by the reset of {kept['kept_at']}, PAST its retention" in listed
    assert f"DROPPED: {kept['name']} (" in listed
    assert dep.counts() == before
    purge = play("undo.yml", dep, {"ringhub_undo_action": "purge"})
    assert purge.rc == 0, purge.stdout[-3000:]
    record = audit_lines(dep)[-1]
    assert record["event"] == "purge" and record["details"]["purged"] == [kept["name"]]
    conn = dep.connect(superuser=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'public_before_%'")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    after = dep.counts()
    assert after["tables"] == before["tables"] and after["redis"] == before["redis"]


def test_at_a_terminal_the_undo_asks_the_three_phrases_with_its_own_words(
    sandbox_deployment_factory: Any, fixture_migrations: Any
) -> None:
    import pexpect
    from test_reset_playbook import ANSIBLE_PLAYBOOK, prompt_text

    from harness.ansible import _base_env

    dep = sandbox_deployment_factory(hubs=1, demo_data=False, migrations=fixture_migrations)
    before = dep.counts()
    env = _base_env("/dev/null", None)
    for name in ("ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_CALLBACK_PLUGINS", "RINGHUB_TEST_RESULTS"):
        env.pop(name, None)
    argv = ["-i", str(dep.inventory), str(REPO / "playbooks" / "undo.yml"), "-l", "production", "--check",
            "-e", "ringhub_undo_action=purge"]  # fmt: skip
    child = pexpect.spawn(ANSIBLE_PLAYBOOK, argv, env=env, cwd=str(REPO), encoding="utf-8", timeout=120)
    try:
        seen = prompt_text(child, "Type confirmation 1", "(confirmation 1 of 3):")
        assert seen.startswith("This PERMANENTLY DROPS the kept schemas of the Ring Hub of hub1")
        assert "Type exactly 'DELETE ALL DATA'" in seen
        child.sendline("DELETE ALL DATA")
        assert "There is no undo of a purge." in prompt_text(child, "Type confirmation 2", "(confirmation 2 of 3):")
        child.sendline("I UNDERSTAND THIS IS IRREVERSIBLE")
        assert "Last chance. The purge starts after this answer and the name of the database." in prompt_text(
            child, "Type confirmation 3", "(confirmation 3 of 3):"
        )
        child.sendline("RESET PRODUCTION NOW")
        child.expect("Type its name to confirm")
        child.sendline("ringhub")
        child.expect(r"Ring Hub purge SUCCEEDED \(check mode: nothing was changed\)", timeout=240)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert dep.counts() == before
