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
4. Shows and checks what is left: one root ring with its three roles, nothing else, an empty
   Redis, the verified backup, the audit line, and the same signing key as before.
5. Removes the deployment, also on Ctrl-C and on failure (``--keep DIR``: build it in DIR and
   leave it running, for inspection; remove it with ``deployment.py down --dir DIR``).

Exit status: 0 when the reset ran and every check holds; 1 when it did not run (a confirmation
refused: the demo then shows that nothing was destroyed) or a check failed; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
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

from harness.deployment import Deployment, DeploymentError, down, up

PHRASES = ("DELETE ALL DATA", "I UNDERSTAND THIS IS IRREVERSIBLE", "RESET PRODUCTION NOW")
TARGET = "ringhub"
PLAYBOOK = REPO / "playbooks" / "reset.yml"
BIN = REPO / ".venv" / "bin"


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
    if confirm is not None:
        vars_file = dep.directory / "confirm-vars.json"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(confirm, fh)
        cmd += ["-e", f"@{vars_file}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RING_HUB_PRIVATE_KEY")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
    )
    return cmd, env


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


def check_after(before: dict[str, Any], after: dict[str, Any], dep: Deployment) -> list[tuple[bool, str]]:
    """What a reset must leave: (ok, line) for each promise."""
    b, a = before["counts"], after["counts"]
    checks: list[tuple[bool, str]] = []
    rows = {name: t["rows"] for name, t in a["tables"].items()}
    checks.append((a["rings"] == ["spool"], f"one root ring: {', '.join(a['rings']) or 'none'}"))
    checks.append((a["root_roles"] == ["member", "moderator", "owner"], f"its roles: {', '.join(a['root_roles'])}"))
    others = {n: r for n, r in rows.items() if n not in ("Ring", "RingRole", "_prisma_migrations") and r}
    checks.append((not others, "no other rows" if not others else f"rows left: {others}"))
    checks.append((a["migrations"] == b["migrations"], f"Prisma history: {len(a['migrations'])} migrations recorded"))
    redis_left = {db: e["keys"] for db, e in a["redis"].items()}
    checks.append((not redis_left, "Redis is empty" if not redis_left else f"Redis keys left: {redis_left}"))
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
        say()
        rc, interrupted = run_playbook(cmd, env)
        if interrupted:
            say("\ndemo: interrupted; removing the deployment")
            status = 130
            return status

        after = show_state(dep, "After the reset")
        if rc != 0:
            kept = comparable(after["counts"]) == comparable(before["counts"])
            heading("Result")
            say(f"  the playbook exited with {rc}")
            say("  nothing was destroyed: every row, key and file is as it was" if kept else "  THE STATE CHANGED")
            return status
        heading("Checks")
        checks = check_after(before, after, dep)
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
