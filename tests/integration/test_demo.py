"""``make demo``: the real reset playbook against a local deployment, as a user runs it.

The non-interactive form (``scripts/demo.py --non-interactive``, what ``make demo
DEMO_CONFIRM=yes`` runs) is run in a subprocess without a terminal; the test checks
what it printed and, with ``--keep``, the deployment it left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.deployment import Deployment, down, new_directory
from harness.pg import REPO
from harness.secret_forms import assert_no_secret, deployment_secret_forms

DEMO = REPO / "scripts" / "demo.py"
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
PLAYBOOK = REPO / "playbooks" / "reset.yml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="playbooks/reset.yml is not there yet"),
]


def run_demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH")}
    return subprocess.run(
        [PYTHON, str(DEMO), *args],
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def section(output: str, title: str) -> str:
    """The text of one ``== title ==`` section of the demo's output."""
    match = re.search(rf"^== {re.escape(title)} =+$\n(.*?)(?=^== |\Z)", output, re.M | re.S)
    assert match, f"no section {title!r} in:\n{output[-3000:]}"
    return match.group(1)


@pytest.fixture
def kept() -> Path:
    directory = new_directory()
    yield directory
    down(directory)
    directory.parent.rmdir()


def test_demo_resets_the_deployment_and_leaves_what_it_promises(kept: Path) -> None:
    run = run_demo("--non-interactive", "--keep", str(kept))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]

    before, after, checks = section(out, "Before the reset"), section(out, "After the reset"), section(out, "Checks")
    assert "rings (6):" in before and "Redis db0:" in before and "Redis db1:" in before
    assert re.search(r"badges (\d+)", before) and int(re.search(r"badges (\d+)", before).group(1)) > 0
    assert "rings (1):" in after and "spool" in after
    assert "root ring roles: member, moderator, owner" in after
    assert "FAILED" not in checks and checks.count("[ok]") >= 15
    assert "The reset did what it promises." in out
    assert "PLAY RECAP" in out and "ansible-playbook" in out and "-l production" in out
    assert "-e ringhub_verify_after_reset=true" in out  # the command shown runs the verification

    # The verification's summary: its eight checks, each passed, the test actor and its badge named.
    verification = [line.strip() for line in section(out, "The verification").strip().splitlines()]
    assert verification[0].startswith("Ring Hub verification PASSED in ")
    names = ["health", "root ring", "instance DID document", "test actor", "join", "badge", "after restart", "cleanup"]
    assert [line.split(" - ", 1)[0] for line in verification[1:9]] == [
        f"{n} {name}: PASSED" for n, name in enumerate(names, 1)
    ]
    actor = re.match(r"4 test actor: PASSED - (did:web:\S+:users:verify-[0-9a-f]+):", verification[4]).group(1)
    badge = re.search(r"badge (http://127\.0\.0\.1:\d+/badges/\S+)$", verification[5]).group(1)
    assert "verified with did:web:127.0.0.1#key-1" in verification[6]
    restarted = r"7 after restart: PASSED - restarted hub1 \(command, ready after [0-9.]+ s\), hub2 "
    assert re.match(restarted, verification[7]), verification[7]
    assert "[ok] the verification PASSED: 8 of 8 checks passed" in checks
    assert (
        f"[ok] a badge issued after the reset verified against the published key: {badge} "
        "(its JWS checked with did:web:127.0.0.1#key-1 of the served DID document, and again after the restart)"
    ) in checks
    # What the test actor left is allowed, and named as such; nothing else is.
    assert "[ok] no other rows" in checks
    left = [line for line in checks.splitlines() if "left by the verification's test actor: " in line]
    assert len(left) == 2, checks
    assert (
        left[0].startswith(
            "  [ok] left by the verification's test actor: "
            "Actor 1, AuditLog 2, Badge 1, HttpSignature 1, Membership 1 rows"
        )
        and f"({actor}: membership REVOKED, badge revoked; AuditLog: the hub's own record" in left[0]
    )
    assert (
        left[1] == "  [ok] left by the verification's test actor: Redis db0 1 key (the hub's cache of its DID document)"
    )
    assert "[ok] Redis is empty otherwise" in checks
    assert "Redis db0: 1 keys (did:*)" in after and "members 1, actors 1, badges 1 (0 active)" in after
    key_before = re.search(r"file sha256\s+([0-9a-f]{64})", before).group(1)
    key_after = re.search(r"file sha256\s+([0-9a-f]{64})", after).group(1)
    assert key_before == key_after

    # The real state of the kept deployment, read independently of the demo's own checks.
    dep = Deployment.load(kept)
    counts = dep.counts()
    assert counts["rings"] == ["spool"]
    assert counts["root_roles"] == ["member", "moderator", "owner"]
    # Besides the root ring, only the test actor's trace: it joined (one badge) and left (the badge revoked).
    assert {n: t["rows"] for n, t in counts["tables"].items() if t["rows"] and n != "_prisma_migrations"} == {
        "Ring": 1,
        "RingRole": 3,
        "Actor": 1,
        "Membership": 1,
        "Badge": 1,
        "HttpSignature": 1,
        "AuditLog": 2,
    }
    with dep.connect() as conn, conn.cursor() as cur:
        cur.execute(
            'SELECT m."actorDid", m.status::text, b."revokedAt" IS NOT NULL, b.id FROM "Membership" m '
            'JOIN "Badge" b ON b."membershipId" = m.id'
        )
        assert cur.fetchall() == [(actor, "REVOKED", True, badge)]
        cur.execute('SELECT count(*) FROM "AuditLog" WHERE "actorDid" <> %s', (actor,))
        assert cur.fetchone() == (0,)
    assert list(counts["redis"]) == ["0"] and counts["redis"]["0"]["keys"] == 1
    assert list(dep.redis_client(0).scan_iter()) == [f"did:{actor}"]
    assert not list(dep.paths["web_root"].glob("users/verify-*"))  # its DID document was removed
    assert counts["environment_marker"] == "production"
    assert hashlib.sha256(dep.paths["key"].read_bytes()).hexdigest() == key_after == counts["key_file_sha256"]
    assert counts["env_key"] == {"present": True, "matches_key_file": True}
    assert len(counts["backups"]) == 1 and counts["backups"][0].endswith(".dump")
    backup = dep.paths["backup_dir"] / counts["backups"][0]
    assert backup.stat().st_size > 1000 and backup.read_bytes()[:5] == b"PGDMP"  # pg_dump custom format
    audit = [json.loads(line) for line in dep.paths["audit_log"].read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["event"] == "reset" and audit[0]["status"] == "succeeded"
    assert all(h["status"] == 200 for h in dep.hub_health())
    # No secret, in any of its forms, in what the demo printed or in the playbook's log it kept.
    log = dep.directory / "reset.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and "Ring Hub verification PASSED" in log.read_text()
    assert_no_secret({"demo output": out, "playbook log": log.read_bytes()}, deployment_secret_forms(dep.state))


def test_a_wrong_confirmation_destroys_nothing_and_the_demo_cleans_up() -> None:
    directory = new_directory()
    try:
        run = run_demo("--non-interactive", "--confirm-target", "not-this-one", "--hubs", "1", "--keep", str(directory))
        out = run.stdout + run.stderr
        assert run.returncode == 1, out[-4000:]
        assert "nothing was destroyed: every row, key and file is as it was" in out
        assert "target database name does not match" in out
        assert "the verification did not run" in section(out, "The verification")
        assert section(out, "After the reset").count("members") >= 2  # the demo data is all there
        counts = Deployment.load(directory).counts()
        assert len(counts["rings"]) == 6 and counts["redis"]["0"]["keys"] > 0 and counts["backups"] == []
    finally:
        down(directory)
        directory.parent.rmdir()

    # Without --keep the demo removes its deployment on the way out, also when the reset failed.
    run = run_demo("--non-interactive", "--confirm-1", "delete all data", "--hubs", "1")
    assert run.returncode == 1
    removed = re.search(r"^Removed (/\S+)$", run.stdout, re.M)
    assert removed, run.stdout[-3000:]
    assert not Path(removed.group(1)).exists() and not Path(removed.group(1)).parent.exists()


def test_demo_refuses_to_prompt_without_a_terminal() -> None:
    run = run_demo()
    assert run.returncode == 1
    assert "make demo DEMO_CONFIRM=yes" in run.stdout and "Nothing was started" in run.stdout


def test_make_demo_runs_the_script_in_both_forms() -> None:
    """``make -n`` shows the commands without running them (nor setup's installs)."""
    for extra, flag in (([], False), (["DEMO_CONFIRM=yes"], True)):
        proc = subprocess.run(
            ["make", "-n", "demo", *extra], cwd=str(REPO), capture_output=True, text=True, check=True, timeout=60
        )
        line = [ln for ln in proc.stdout.splitlines() if "scripts/demo.py" in ln]
        assert len(line) == 1, proc.stdout
        assert ("--non-interactive" in line[0]) is flag
