"""A plain checkout resolves threadring.ringhub.* through ansible.cfg, with no galaxy install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from harness.ansible import COLLECTION_LINK, REPO


def test_playbook_from_checkout_uses_ansible_cfg_collections_path(tmp_path) -> None:
    # Nothing from the harness: only the ansible.cfg found in the working directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(tmp_path)  # no ~/.ansible.cfg, no ~/.ansible/collections
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
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


def test_runtime_action_groups_name_existing_modules() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    modules = {p.stem for p in (REPO / "plugins" / "modules").glob("*.py")}
    listed = {m for group in runtime["action_groups"].values() for m in group}
    assert listed == modules
    assert runtime["requires_ansible"].startswith(">=")
