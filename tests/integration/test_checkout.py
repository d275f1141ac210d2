"""A plain checkout works as the README says: ``make setup``, then the playbooks with the project's own
``ansible.cfg`` (collections path, default inventory), with no galaxy install and no ``-i``.

The fresh checkout is a copy of what the repository is made of, as ``scripts/sanity.sh`` makes it:
the tracked files and the new ones that are not ignored, as they are in the working tree (so
uncommitted changes are tested too), without ``.venv``, ``.collections`` or anything else ignored.
``make setup`` would install the venv again, which takes minutes: the copy links the checkout's venv
instead and runs ``make link``, the part of the setup that belongs to the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.ansible import COLLECTION_LINK, REPO

PHRASES = [
    "-e",
    "ringhub_confirm_1='DELETE ALL DATA'",
    "-e",
    "ringhub_confirm_2='I UNDERSTAND THIS IS IRREVERSIBLE'",
    "-e",
    "ringhub_confirm_3='RESET PRODUCTION NOW'",
    "-e",
    "ringhub_confirm_target=ringhub",
]
EXAMPLE = REPO / "inventories" / "example"


def _clean_env(home: Path) -> dict[str, str]:
    """Nothing from the harness or the caller: only the ansible.cfg found in the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "DATABASE_URL", "REDIS_URL", "PG"))}
    env["PATH"] = str(REPO / ".venv" / "bin") + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(home)  # no ~/.ansible.cfg, no ~/.ansible/collections
    return env


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files in a new directory, its venv linked, ``make link`` run there."""
    root = tmp_path_factory.mktemp("checkout")
    dest = root / "ringhub"
    dest.mkdir()
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(os.fsdecode(raw))
        if rel.parts[0] in (".venv", ".collections"):  # made by make setup, never part of a checkout
            continue
        src = REPO / rel
        if not src.exists() and not src.is_symlink():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    assert not (dest / ".venv").exists() and not (dest / ".collections").exists()
    (dest / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)
    home = root / "home"
    home.mkdir()
    subprocess.run(["make", "--no-print-directory", "link"], cwd=dest, env=_clean_env(home), check=True)
    link = dest / ".collections" / "ansible_collections" / "threadring" / "ringhub"
    assert link.is_symlink() and link.resolve() == dest.resolve()
    return dest


def _run(checkout: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    home = checkout.parent / "home"
    return subprocess.run(
        [str(checkout / ".venv" / "bin" / "ansible-playbook"), *args],
        cwd=str(checkout),
        env=_clean_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _example_hosts() -> list[str]:
    inventory = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    return sorted(inventory["production"]["hosts"])


def _task_lines(output: str, task: str) -> str:
    """The lines a task printed (from its TASK banner to the next banner)."""
    match = re.search(rf"^TASK \[[^\]]*{re.escape(task)}\] \**$\n(.*?)(?=^TASK |^PLAY RECAP|\Z)", output, re.M | re.S)
    assert match, f"no task {task!r} in:\n{output[-3000:]}"
    return match.group(1)


def test_playbook_from_checkout_uses_ansible_cfg_collections_path(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "playbooks/audit.yml",
            "-l",
            "localhost",
            "-e",
            f"ringhub_audit_log={audit}",
            "-e",
            "ringhub_audit_event=checkout",
        ],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(audit.read_text())
    assert record["event"] == "checkout"
    assert COLLECTION_LINK.resolve() == REPO


def test_the_readme_audit_command_works_in_a_fresh_checkout(fresh_checkout: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = _run(
        fresh_checkout,
        "playbooks/audit.yml",
        "-l",
        "localhost",
        "-e",
        f"ringhub_audit_log={audit}",
        "-e",
        "ringhub_audit_event=maintenance",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(audit.read_text())["event"] == "maintenance"
    assert "hub-api" not in proc.stdout  # -l localhost: the example hosts are left alone


def test_the_reset_command_lists_the_example_production_hosts(fresh_checkout: Path) -> None:
    proc = _run(fresh_checkout, "playbooks/reset.yml", "-l", "production", "--list-hosts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = re.search(r"hosts \((\d+)\):\n((?:[ \t]+\S+\n?)+)", proc.stdout)  # the first play
    assert listed, proc.stdout
    assert sorted(listed.group(2).split()) == _example_hosts() and int(listed.group(1)) == len(_example_hosts())
    assert "vault" not in (proc.stdout + proc.stderr).lower()  # the inventory loads without the vault password


def test_the_reset_command_without_a_terminal_or_phrases_names_the_missing_variables(fresh_checkout: Path) -> None:
    """The verbatim command of the README, from a fresh checkout: stdin is not a terminal, no phrase is
    given, so it must stop at the confirm role, before any host is contacted or any secret is decrypted."""
    proc = _run(fresh_checkout, "playbooks/reset.yml", "-l", "production", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "The reset is not confirmed: the controller cannot prompt: stdin is not a terminal" in out
    assert "ringhub_confirm_1, ringhub_confirm_2, ringhub_confirm_3 are not set" in out
    assert "Nothing was changed" in out
    for wrong in ("vault", "no hosts matched", "Could not match supplied host pattern", "UNREACHABLE", "Traceback"):
        assert wrong not in out, wrong
    assert "Reach the host" not in out and "Preflight" not in out


def test_the_reset_command_without_the_vault_password_fails_where_a_secret_is_needed(fresh_checkout: Path) -> None:
    proc = _run(fresh_checkout, "playbooks/reset.yml", "-l", "production", *PHRASES, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    # The phrases passed; the first use of the vaulted database password is the fourth check's database name.
    assert "Attempting to decrypt but no vault secrets found" in out
    assert "inventories/example/group_vars/production/vault.yml" in out
    assert "change-me-example" not in out and "UNREACHABLE" not in out and "Traceback" not in out


def test_the_reset_command_with_the_phrases_and_the_example_vault_stops_at_the_first_contact(
    fresh_checkout: Path,
) -> None:
    """With the phrases and the example's vault password the run gets past the confirmations (the
    target name is checked against the vaulted database URL) and stops, unreachable, at its first
    contact with the example hosts: the preflight's read of the hub's .env, whose reason is shown."""
    proc = _run(
        fresh_checkout,
        "playbooks/reset.yml",
        "-l",
        "production",
        *PHRASES,
        "--vault-password-file",
        "inventories/example/vault-password.example",
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # ansible-playbook: hosts unreachable
    assert "skipping" in _task_lines(out, "confirm : Check the phrases given as variables")
    assert "skipping" in _task_lines(out, "confirm : Check the target database name")
    reach = _task_lines(out, "config : Reach the host")
    for host in _example_hosts():
        assert f"fatal: [{host}]: UNREACHABLE!" in reach
    assert "Failed to connect to the host via ssh" in reach and "censored" not in reach
    assert "Read the hub's own variables" not in out and "Check the PostgreSQL reset" not in out
    for wrong in ("change-me-example", "vault secrets", "Traceback"):
        assert wrong not in out, wrong


# --------------------------------------------------------------------------- the roles' variables


def _role_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for spec_file in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        role = spec_file.parent.parent.name
        specs[role] = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"].get("options", {})
    return specs


def test_every_ringhub_variable_the_reset_reads_is_in_an_argument_spec() -> None:
    specs = _role_specs()
    documented = {name for options in specs.values() for name in options}
    read: set[str] = set()
    sources = [*(REPO / "roles").rglob("*.yml"), *(REPO / "roles").rglob("*.j2"), REPO / "playbooks" / "reset.yml"]
    for path in sources:
        if "meta" in path.parts:
            continue
        read |= set(re.findall(r"(?<![\w.])ringhub_[a-z0-9_]+", path.read_text()))
    # Names that are not variables: the collection's name in FQCNs, the play's host pattern.
    read = {name for name in read if not name.endswith("_")} - {"ringhub_hosts"}
    missing = sorted(name for name in read if name not in documented and not name.startswith("ringhub_confirm_"))
    assert missing == [], f"read by the roles but in no meta/argument_specs.yml: {missing}"
    confirm = {name for name in read if name.startswith("ringhub_confirm_")}
    assert confirm <= set(specs["confirm"]), confirm - set(specs["confirm"])
    interface = (
        "ringhub_confirm_1 ringhub_confirm_2 ringhub_confirm_3 ringhub_confirm_target ringhub_database_url "
        "ringhub_redis_url ringhub_instance_did ringhub_hub_url ringhub_root_slug ringhub_migrations_dir "
        "ringhub_backup_dir ringhub_key_path ringhub_env_file ringhub_web_root ringhub_environment ringhub_audit_log "
        "ringhub_restart_backend ringhub_restart_command ringhub_ready_timeout"
    ).split()
    assert [name for name in interface if name not in documented] == []


def test_role_defaults_mirror_their_argument_specs() -> None:
    for role, options in _role_specs().items():
        defaults_file = REPO / "roles" / role / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text()) or {}
        assert sorted(defaults) == sorted(options), role
        for name, option in options.items():
            value = defaults[name]
            if isinstance(value, str) and "{{" in value:
                continue  # a computed default, described in the spec
            assert value == option.get("default"), (role, name, value, option.get("default"))
            assert name.startswith("ringhub_"), (role, name)


def test_the_example_inventory_shows_every_variable_of_the_roles() -> None:
    shown = (EXAMPLE / "group_vars" / "production" / "main.yml").read_text() + (EXAMPLE / "hosts.yml").read_text()
    every = {name for options in _role_specs().values() for name in options}
    assert sorted(name for name in every if not re.search(rf"^#? ?{name}:|^\s+{name}:", shown, re.M)) == []


def test_runtime_action_groups_name_existing_modules() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    modules = {p.stem for p in (REPO / "plugins" / "modules").glob("*.py")}
    listed = {m for group in runtime["action_groups"].values() for m in group}
    assert listed == modules
    assert runtime["requires_ansible"].startswith(">=")
