"""The main job, end to end, on this machine: reset a local Ring Hub deployment with the real playbook.

    make demo                      # you type the confirmations at the playbook's own prompts
    make demo DEMO_CONFIRM=yes     # for scripts: the phrases are passed as extra vars
    .venv/bin/python scripts/demo.py [--non-interactive] [--keep DIR] [--hubs N]

1. Starts a deployment with demo data in a temporary directory (tests/harness/deployment.py):
   PostgreSQL, Redis, the signing key, the compose .env, the instance DID document and
   sandbox hubs standing in for hub-api, plus rings, members, badges, posts and Redis keys.
2. Shows what is there.
3. Runs ``ansible-playbook playbooks/reset.yml -i DIR/inventory.yml -l production`` with the
   terminal attached: the playbook asks for DELETE ALL DATA, I UNDERSTAND THIS IS IRREVERSIBLE,
   RESET PRODUCTION NOW and the target database name (ringhub). With ``--non-interactive`` they
   are given as ``ringhub_confirm_1/2/3`` and ``ringhub_confirm_target`` extra vars instead.
   It runs with ``-e ringhub_verify_after_reset=true``: the reset ends with the verification (a test
   actor's signed join, its badge verified against the published key, before and after a restart).
4. Shows the verification's summary and checks what is left: one root ring with its three roles,
   nothing else but the rows and the cache entry the verification's test actor left (named as
   such), an empty Redis otherwise, the verified backup, the audit line, the same signing key as
   before, and a badge issued after the reset that verified against the published key.
5. Removes the deployment, also on Ctrl-C and on failure (``--keep DIR``: build it in DIR and
   leave it running, for inspection; remove it with ``deployment.py down --dir DIR``).

Exit status: 0 when the reset ran and every check holds; 1 when it did not run (a confirmation
refused: the demo then shows that nothing was destroyed) or a check failed; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml

from harness.deployment import Deployment, DeploymentError, down, up

PHRASES = ("DELETE ALL DATA", "I UNDERSTAND THIS IS IRREVERSIBLE", "RESET PRODUCTION NOW")
TARGET = "ringhub"
PLAYBOOK = REPO / "playbooks" / "reset.yml"
BIN = REPO / ".venv" / "bin"
LOG_NAME = "reset.log"  # the playbook's log (ANSIBLE_LOG_PATH) in the deployment directory, 0600
ROOT_TABLES = ("Ring", "RingRole", "_prisma_migrations")
# One record of Ansible's log file: "2026-12-01 12:37:16,242 p=1 u=root n=ansible INFO| <text>".
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ p=\d+ u=\S* n=\S+ \w+\| ", re.M)
CHECK_LINE = re.compile(r"^(?P<number>\d+) (?P<name>[^:]+): (?P<status>[A-Z]+) - (?P<msg>.*)$", re.S)


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text} ".ljust(78, "="))


def kib(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KiB"


def show_state(dep: Deployment, title: str) -> dict[str, Any]:
    """Print rings, members, badges, Redis keys and the key fingerprint; return ``describe()``."""
    info = dep.describe()
    counts = info["counts"]
    heading(title)
    rows = {name: t["rows"] for name, t in counts["tables"].items()}
    say(f"  rings ({len(info['rings'])}):")
    for ring in info["rings"]:
        root = "  [root]" if ring["root"] else ""
        say(f"    {ring['slug']:<14} {ring['members']:>2} members, {ring['roles']} roles{root}")
    say(f"  root ring roles: {', '.join(counts['root_roles']) or 'none'}")
    say(
        f"  members {rows.get('Membership', 0)}, actors {rows.get('Actor', 0)}, badges {rows.get('Badge', 0)} "
        f"({info['active_badges']} active), posts {rows.get('PostRef', 0)}, audit rows {rows.get('AuditLog', 0)}"
    )
    if counts["redis"]:
        for db, entry in counts["redis"].items():
            kinds = sorted({name.split(":", 1)[0] + ":*" for name in info["redis_keys"][db]})
            say(f"  Redis db{db}: {entry['keys']} keys ({', '.join(kinds)})")
    else:
        say("  Redis: no keys in any database")
    key = counts["env_key"]
    say(f"  signing key {info['paths']['key']}")
    say(f"    file sha256       {counts['key_file_sha256']}")
    say(f"    public fingerprint {info['key_fingerprint']}")
    say(
        "    RING_HUB_PRIVATE_KEY in the .env: "
        + ("holds this key" if key["matches_key_file"] else ("ANOTHER key" if key["present"] else "not set"))
    )
    say(f"  backups: {', '.join(counts['backups']) or 'none'}; audit lines: {counts['audit_lines']}")
    say(
        "  hubs: "
        + ", ".join(f"{h['name']} {h['url']} {'ready' if h['status'] == 200 else 'NOT READY'}" for h in info["hubs"])
    )
    return info


def playbook_command(dep: Deployment, confirm: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    cmd = [str(BIN / "ansible-playbook") if (BIN / "ansible-playbook").exists() else "ansible-playbook"]
    cmd += [str(PLAYBOOK), "-i", str(dep.inventory), "-l", "production"]
    # The inventory leaves the verification out (the reset tests switch it on where they test it);
    # proving that badges verify after the reset is the point of the demo.
    cmd += ["-e", "ringhub_verify_after_reset=true"]
    if confirm is not None:
        vars_file = dep.directory / "confirm-vars.json"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(confirm, fh)
        cmd += ["-e", f"@{vars_file}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RING_HUB_PRIVATE_KEY")}
    log = dep.directory / LOG_NAME
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # private before Ansible opens it
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
        ANSIBLE_LOG_PATH=str(log),
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
    )
    return cmd, env


def verification_summary(log_text: str) -> list[str]:
    """The lines of the verification's summary (the debug task of the verify role) in Ansible's log;
    empty when the verification did not run."""
    records = [r for r in LOG_RECORD.split(log_text) if r]
    for index, record in enumerate(records):
        if not record.startswith("TASK [threadring.ringhub.verify : Summary of the verification]"):
            continue
        for later in records[index + 1 :]:
            if later.startswith("TASK ["):
                break
            match = re.match(r"ok: \[[^\]]+\] =>[ ]?\n?(.*)", later, re.S)
            if match:
                try:
                    msg = (yaml.safe_load(match.group(1)) or {}).get("msg")
                except yaml.YAMLError:
                    return []
                return [str(line) for line in msg] if isinstance(msg, list) else []
    return []


def parse_verification(lines: list[str]) -> dict[str, Any]:
    """``{"status", "checks": {name: (status, msg)}, "actor", "badge"}`` from the summary lines."""
    result: dict[str, Any] = {"status": None, "checks": {}, "actor": None, "badge": None}
    if lines:
        match = re.match(r"Ring Hub verification (\w+)", lines[0])
        result["status"] = match.group(1) if match else None
    for line in lines[1:]:
        match = CHECK_LINE.match(line)
        if match:
            result["checks"][match.group("name")] = (match.group("status"), match.group("msg"))
    actor = re.match(r"(did:\S+):\s", result["checks"].get("test actor", ("", ""))[1])
    result["actor"] = actor.group(1) if actor else None
    badge = re.search(r"badge (\S+)$", result["checks"].get("join", ("", ""))[1])
    result["badge"] = badge.group(1) if badge else None
    return result


def actor_rows(dep: Deployment, actor: str | None) -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
    """Rows outside the root ring's tables: (the test actor's per table, any other per table, the state of
    the actor's membership and badge). A row is the actor's when its JSON names the actor's DID."""
    mine: dict[str, int] = {}
    others: dict[str, int] = {}
    state: dict[str, Any] = {"memberships": [], "badges_revoked": []}
    with contextlib.closing(dep.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        for (table,) in cur.fetchall():
            if table in ROOT_TABLES:
                continue
            cur.execute(
                f'SELECT count(*) FILTER (WHERE strpos(row_to_json(t)::text, %s) > 0), count(*) FROM "{table}" t',
                (actor or "\x01no test actor",),  # a string no row holds when the verification named no actor
            )
            theirs, total = cur.fetchone()
            if theirs:
                mine[table] = theirs
            if total - theirs:
                others[table] = total - theirs
        if actor:
            cur.execute('SELECT status::text FROM "Membership" WHERE "actorDid" = %s ORDER BY 1', (actor,))
            state["memberships"] = [row[0] for row in cur.fetchall()]
            cur.execute(
                'SELECT b."revokedAt" IS NOT NULL FROM "Badge" b JOIN "Membership" m ON m.id = b."membershipId" '
                'WHERE m."actorDid" = %s',
                (actor,),
            )
            state["badges_revoked"] = [row[0] for row in cur.fetchall()]
    return mine, others, state


def run_playbook(cmd: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run the playbook in the foreground; Ctrl-C goes to it (ansible stops cleanly), not to us."""
    interrupted = False

    def note(_signum: int, _frame: Any) -> None:
        nonlocal interrupted
        interrupted = True

    previous = signal.signal(signal.SIGINT, note)  # a handler, not SIG_IGN: the child gets the default
    try:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env)
        while True:
            try:
                return proc.wait(), interrupted
            except KeyboardInterrupt:  # pragma: no cover - the handler above takes SIGINT
                interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)


def check_after(
    before: dict[str, Any], after: dict[str, Any], dep: Deployment, verification: dict[str, Any]
) -> list[tuple[bool, str]]:
    """What a reset must leave: (ok, line) for each promise. ``verification``: ``parse_verification``."""
    b, a = before["counts"], after["counts"]
    checks: list[tuple[bool, str]] = []
    checks.append((a["rings"] == ["spool"], f"one root ring: {', '.join(a['rings']) or 'none'}"))
    checks.append((a["root_roles"] == ["member", "moderator", "owner"], f"its roles: {', '.join(a['root_roles'])}"))
    actor = verification["actor"]
    mine, others, actor_state = actor_rows(dep, actor)
    checks.append((not others, "no other rows" if not others else f"rows left: {others}"))
    if mine:
        # The test actor joined and left: its membership must be over and its badge revoked.
        left = bool(actor_state["memberships"]) and "ACTIVE" not in actor_state["memberships"]
        revoked = bool(actor_state["badges_revoked"]) and all(actor_state["badges_revoked"])
        listed = ", ".join(f"{table} {count}" for table, count in sorted(mine.items()))
        checks.append(
            (
                left and revoked,
                f"left by the verification's test actor: {listed} rows ({actor}: membership "
                f"{'/'.join(actor_state['memberships']) or 'none'}, badge {'revoked' if revoked else 'NOT revoked'}"
                + ("; AuditLog: the hub's own record of its join and leave)" if "AuditLog" in mine else ")"),
            )
        )
    checks.append((a["migrations"] == b["migrations"], f"Prisma history: {len(a['migrations'])} migrations recorded"))
    # The hub caches the DID documents it resolves: the test actor's, written after the flush, may be there.
    actor_keys = {
        db: len([k for k in keys if actor and actor in k]) for db, keys in after.get("redis_keys", {}).items()
    }
    redis_left = {db: e["keys"] - actor_keys.get(db, 0) for db, e in a["redis"].items()}
    redis_left = {db: n for db, n in redis_left.items() if n}
    empty = "Redis is empty" + (" otherwise" if any(actor_keys.values()) else "")
    checks.append((not redis_left, empty if not redis_left else f"Redis keys left: {redis_left}"))
    if any(actor_keys.values()):
        listed = ", ".join(f"db{db} {n} key" for db, n in sorted(actor_keys.items()) if n)
        checks.append(
            (True, f"left by the verification's test actor: Redis {listed} (the hub's cache of its DID document)")
        )
    new_backups = [name for name in a["backups"] if name not in b["backups"]]
    backup_dir = dep.paths["backup_dir"]
    checks.append(
        (
            len(new_backups) == 1,
            "backup: " + (", ".join(f"{backup_dir / n} ({kib(backup_dir / n)})" for n in new_backups) or "none"),
        )
    )
    audit = dep.paths["audit_log"]
    last = {}
    if audit.exists() and a["audit_lines"]:
        last = json.loads(audit.read_text().splitlines()[-1])
    summary = ", ".join(f"{k}={last[k]}" for k in ("event", "status", "operator", "time") if k in last)
    checks.append(
        (a["audit_lines"] == b["audit_lines"] + 1 and last.get("status") == "succeeded", f"audit line: {summary}")
    )
    same_key = a["key_file_sha256"] == b["key_file_sha256"] and a["key_file_sha256"] is not None
    checks.append((same_key, f"the same signing key: sha256 {a['key_file_sha256']}"))
    checks.append((bool(a["env_key"]["matches_key_file"]), "RING_HUB_PRIVATE_KEY still holds it"))
    published = published_key_matches(dep)
    checks.append((published, "the instance DID document served at /.well-known/did.json publishes it"))
    ready = [h["name"] for h in after["hubs"] if h["status"] == 200]
    checks.append((len(ready) == len(after["hubs"]), f"hubs ready after the restart: {', '.join(ready) or 'none'}"))
    results = verification["checks"]
    passed = [name for name, (status, _msg) in results.items() if status == "PASSED"]
    checks.append(
        (
            verification["status"] == "PASSED" and len(passed) == len(results) == 8,
            f"the verification {verification['status'] or 'did not run'}: "
            f"{len(passed)} of {len(results)} checks passed",
        )
    )
    badge_ok = results.get("badge", ("",))[0] == "PASSED" and results.get("after restart", ("",))[0] == "PASSED"
    checks.append(
        (
            badge_ok,
            "a badge issued after the reset verified against the published key"
            + (
                f": {verification['badge']} (its JWS checked with {dep.instance_did}#key-1 of the served DID document, "
                "and again after the restart)"
                if badge_ok
                else f": NOT proven (6 badge {results.get('badge', ('not run',))[0]}, "
                f"7 after restart {results.get('after restart', ('not run',))[0]})"
            ),
        )
    )
    return checks


def published_key_matches(dep: Deployment) -> bool:
    """The ``#key-1`` of the DID document the hub serves is the key in the key file."""
    # Importable once harness.deployment has linked .collections/ (so not at the top).
    from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519

    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            dep.hub_url + "/.well-known/did.json", timeout=10
        ) as resp:
            doc = _did.parse_document(resp.read())
        key = _ed25519.load_private_key(dep.paths["key"].read_bytes(), None, source="the key file")
    except Exception:  # any failure to read either side: not proven
        return False
    return _did.document_public_key(doc, f"{dep.instance_did}#key-1") == _ed25519.raw_public_key(key)


def comparable(counts: dict[str, Any]) -> dict[str, Any]:
    """``counts()`` without the audit file, which a refused run appends to as well."""
    return {k: v for k, v in counts.items() if k != "audit_lines"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--non-interactive", action="store_true", help="pass the confirmations as extra vars")
    parser.add_argument("--keep", metavar="DIR", help="build the deployment in DIR (must not exist) and leave it up")
    parser.add_argument("--hubs", type=int, default=2, help="sandbox hubs (hosts of the production group), default 2")
    for index in (1, 2, 3):
        parser.add_argument(f"--confirm-{index}", default=PHRASES[index - 1], help=argparse.SUPPRESS)
    parser.add_argument("--confirm-target", default=TARGET, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not PLAYBOOK.exists():
        say(f"demo: {PLAYBOOK.relative_to(REPO)} is missing; nothing was started")
        return 1
    if not args.non_interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        say(
            "demo: no terminal to type the confirmations at; use `make demo DEMO_CONFIRM=yes` "
            "(or scripts/demo.py --non-interactive). Nothing was started."
        )
        return 1
    if args.keep:
        directory = Path(args.keep).absolute()
        temp_parent = None
    else:
        temp_parent = Path(tempfile.mkdtemp(prefix="ringhub-demo-"))
        os.chmod(temp_parent, 0o711)  # as root, PostgreSQL runs as an unprivileged account that must pass
        directory = temp_parent / "deployment"

    status = 1
    try:
        heading("Ring Hub reset demo")
        say(f"Starting a local deployment in {directory}")
        say(f"  PostgreSQL, Redis, signing key, compose .env, DID document, {args.hubs} sandbox hubs, demo data")
        started = time.perf_counter()
        dep = up(directory, hubs=args.hubs, demo_data=True)
        say(f"  up in {time.perf_counter() - started:.1f} s; inventory {dep.inventory}")
        before = show_state(dep, "Before the reset")

        confirm = None
        if args.non_interactive:
            confirm = {
                "ringhub_confirm_1": args.confirm_1,
                "ringhub_confirm_2": args.confirm_2,
                "ringhub_confirm_3": args.confirm_3,
                "ringhub_confirm_target": args.confirm_target,
            }
        cmd, env = playbook_command(dep, confirm)
        heading("The reset")
        say("$ " + shlex.join(c if not c.startswith("@") else "@confirm-vars.json" for c in cmd))
        if confirm is None:
            say("The playbook asks four times. Type, each followed by Enter:")
            for phrase in (*PHRASES, TARGET):
                say(f"    {phrase}")
            say("(anything else aborts the reset, with nothing destroyed)")
        else:
            say("The confirmations are given as extra vars (ringhub_confirm_1/2/3, ringhub_confirm_target).")
        say("The reset ends with the verification (ringhub_verify_after_reset=true): a test actor joins the root")
        say("ring, its badge is verified against the published key before and after a restart, then it leaves.")
        say()
        rc, interrupted = run_playbook(cmd, env)
        if interrupted:
            say("\ndemo: interrupted; removing the deployment")
            status = 130
            return status

        log = dep.directory / LOG_NAME
        summary = verification_summary(log.read_text(errors="replace")) if log.exists() else []
        heading("The verification")
        for line in summary or ["the verification did not run (see the playbook's output above)"]:
            say(f"  {line}")
        verification = parse_verification(summary)
        after = show_state(dep, "After the reset")
        if rc != 0:
            kept = comparable(after["counts"]) == comparable(before["counts"])
            heading("Result")
            say(f"  the playbook exited with {rc}")
            say("  nothing was destroyed: every row, key and file is as it was" if kept else "  THE STATE CHANGED")
            return status
        heading("Checks")
        checks = check_after(before, after, dep, verification)
        for ok, line in checks:
            say(f"  [{'ok' if ok else 'FAILED'}] {line}")
        status = 0 if all(ok for ok, _line in checks) else 1
        say()
        say("The reset did what it promises." if status == 0 else "Some checks failed (see above).")
        return status
    except KeyboardInterrupt:
        say("\ndemo: interrupted; removing the deployment")
        status = 130
        return status
    except DeploymentError as exc:
        say(f"demo: {exc}")
        return 1
    finally:
        if args.keep and status != 130:
            if (directory / "deployment.json").exists():
                say(f"\nThe deployment is kept in {directory}; remove it with:")
                say(f"  {BIN / 'python'} tests/harness/deployment.py down --dir {directory}")
        else:
            try:
                down(directory)
                say(f"Removed {directory}")
            except DeploymentError as exc:
                say(f"demo: cleanup: {exc}")
            if temp_parent is not None:
                try:
                    temp_parent.rmdir()
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
